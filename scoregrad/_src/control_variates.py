r"""Control variates: variance reduction with a function of known expectation.

A control variate is a function h(x) whose expectation E_{p(x;θ)}[h] is known
in closed form. For any coefficient β,

    ∇θ E_p[f] = ∇θ E_p[f − β h] + β ∇θ E_p[h],

so an estimator applied to f − β h, plus β times the exact gradient of the
closed form, is unbiased; its variance is lower when h tracks f. If h itself
depends on θ (through the distribution it was built from), the estimators
here add the pathwise term −β E[∇θ h(x; θ)] (x held fixed), so the identity
above still holds exactly.

A :class:`ControlVariate` is a NamedTuple of pure functions — the value at a
sample, the closed-form expectation, a state update — plus the distribution
families for which the closed form holds and the coefficient β. Wrap any
estimator with it, ``scoregrad.with_control_variate(estimator, cv)`` (see
:mod:`scoregrad._src.variance_reduction`), or use the ``control_variate=``
keyword of ``score_function``, ``pathwise`` and ``measure_valued``.

Coefficients: a fixed float β (1.0 by default), or ``"per_leaf"`` /
``"per_coordinate"``: the variance-minimising β* = Cov(g_f, g_h) / Var(g_h)
(Cov and Var summed over each parameter leaf, or per coordinate), where g_f
and g_h are one sample's gradient estimates for f and for h. Estimating β
from the same samples would bias the estimator, so sample i uses β estimated
from the other samples only (leave-one-out), which is independent of sample
i: E[β_{−i} (g_{h,i} − ∇E[h])] = E[β_{−i}] · 0. The fitted β is itself noisy:
with few samples and heavy-tailed per-sample gradients it can raise the
variance above that of a fixed β (measured in tests/test_control_variates.py).

References:
  Paisley, Blei & Jordan, "Variational Bayesian Inference with Stochastic
  Search", ICML 2012 (the delta-method control variate).
  Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in
  Machine Learning", JMLR 2020, Section 7.4.
  Owen, "Monte Carlo theory, methods and examples", 2013, Chapter 8.9.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple, Optional, Union
import warnings

import jax
import jax.numpy as jnp

from scoregrad._src import base as _base
from scoregrad._src.validation import NotApplicableError, safe_divide
from scoregrad.dists._base import families_with

PyTree = Any
ESTIMATED_COEFFICIENTS = ("per_leaf", "per_coordinate")


class ControlVariate(NamedTuple):
  """A control variate h as pure functions.

  Attributes:
    init: ``init() -> state``.
    value: ``value(f, dist, x, state) -> scalar``, h at ONE sample x (vmapped
      inside). ``dist`` is the distribution at the current parameters; if h
      depends on it differentiably, the estimators include that dependence.
    expectation: ``expectation(f, dist, state) -> scalar``, E_{x~dist}[h(x)]
      in closed form, differentiable in ``dist``'s parameters.
    update: ``update(state, f, dist, value) -> state`` after a step, where
      ``value`` is the step's estimate of E[f].
    families: the distribution classes for which ``expectation`` is exact
      (other distributions are refused), or ``None`` for "every family that
      defines ``mean()`` and ``covariance()``" (the delta method).
    coefficient: a float β, or ``"per_leaf"`` / ``"per_coordinate"`` for the
      variance-minimising β estimated leave-one-out.
    name: for messages.
    value_depends_on_params: ``False`` if ``value`` holds ``dist`` constant
      (stop_gradient), which saves computing ∇θ h.
    stateful: whether ``state`` changes across steps.
  """

  init: Callable[[], Any]
  value: Callable[[Callable, Any, jax.Array, Any], jax.Array]
  expectation: Callable[[Callable, Any, Any], jax.Array]
  update: Callable[[Any, Callable, Any, jax.Array], Any]
  families: Optional[tuple]
  coefficient: Union[float, str] = 1.0
  name: str = "control_variate"
  value_depends_on_params: bool = True
  stateful: bool = False


class ControlVariateState(NamedTuple):
  """State of an estimator wrapped by :func:`scoregrad.with_control_variate`.

  Attributes:
    estimator: the wrapped estimator's state.
    control_variate: the control variate's state (``()`` if it keeps none).
  """

  estimator: Any
  control_variate: Any = ()


def check_state(state, cv: ControlVariate) -> ControlVariateState:
  return _base.check_state(
    state, ControlVariateState, f"an estimator with `control_variate={cv.name}`"
  )


def _check_coefficient(coefficient) -> Union[float, str]:
  if isinstance(coefficient, str):
    if coefficient not in ESTIMATED_COEFFICIENTS:
      raise ValueError(
        f"`coefficient` must be a float or one of {ESTIMATED_COEFFICIENTS}; got "
        f"coefficient={coefficient!r}."
      )
    return coefficient
  if isinstance(coefficient, bool):
    raise TypeError(
      f"`coefficient` must be a float or one of {ESTIMATED_COEFFICIENTS}; "
      f"got coefficient={coefficient!r}."
    )
  try:
    value = float(coefficient)
  except (TypeError, ValueError):
    raise TypeError(
      f"`coefficient` must be a Python float (a fixed β) or one of "
      f"{ESTIMATED_COEFFICIENTS} (estimated); got {coefficient!r} of type "
      f"{type(coefficient).__name__}. A traced array would make β depend on "
      "the samples: use 'per_leaf' to estimate it without bias."
    ) from None
  if not jnp.isfinite(value):
    raise ValueError(f"`coefficient` must be finite; got coefficient={coefficient!r}.")
  return value


def _no_update(state, f, dist, value):
  del f, dist, value
  return state


def _moments(dist):
  """(mean (d,), covariance (d, d)) over the flattened event, from the family."""
  return jnp.reshape(dist.mean(), (-1,)), dist.covariance()


def _taylor(f, mean, event_shape, dtype):
  """f, ∇f, ∇²f at ``mean`` (held constant), over the flattened event."""
  flat_f = lambda z: jnp.asarray(f(z.reshape(event_shape)), dtype)
  return flat_f(mean), jax.grad(flat_f)(mean), jax.hessian(flat_f)(mean)


def delta_method(*, coefficient: Union[float, str] = 1.0) -> ControlVariate:
  r"""The delta-method control variate: f's second-order Taylor expansion at the mean.

  With μ̄ the distribution's mean (held constant), g = ∇f(μ̄), H = ∇²f(μ̄),

      h(x) = f(μ̄) + gᵀ(x − μ̄) + ½ (x − μ̄)ᵀ H (x − μ̄),
      E_{p(x;θ)}[h] = f(μ̄) + gᵀ(μ − μ̄) + ½ [(μ − μ̄)ᵀ H (μ − μ̄) + tr(H Σ)],

  with μ = μ(θ), Σ = Σ(θ) the mean and covariance (the gradient flows through
  μ and Σ only). For quadratic f, h = f exactly, so with β = 1 the corrected
  estimator returns ∇θ E[f] with zero variance.

  Requirements: f twice differentiable in x (at float x, also for discrete
  families such as Bernoulli); the distribution's family defines ``mean()``
  and ``covariance()`` (Normal, MultivariateNormalTriL, Gamma, Exponential, Laplace,
  Bernoulli, Poisson, and any family you add with them). Costs one Hessian of
  f (d forward-over-reverse passes) and O(d²) per sample.

  Args:
    coefficient: β as a float (default 1.0), or ``"per_leaf"`` /
      ``"per_coordinate"`` to estimate the variance-minimising β without bias
      (leave-one-out; needs ``num_samples >= 3``).

  Returns:
    A :class:`ControlVariate`.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.score_function(
    ...     num_samples=100, control_variate=sg.control_variates.delta_method())
    >>> params = jnp.array([0.5, 1.0])
    >>> dist_fn = lambda p: sg.dists.Normal(p[0], p[1])
    >>> out = est.estimate(jax.random.key(0), lambda x: (x - 1.0) ** 2, dist_fn,
    ...                    params, est.init(params))
    >>> # out.grad == [2(μ − 1), 2σ] = [-1, 2] up to rounding: zero variance.

  References:
    Paisley, Blei & Jordan, "Variational Bayesian Inference with Stochastic
    Search", ICML 2012.
  """
  coefficient = _check_coefficient(coefficient)

  def value(f, dist, x, state):
    del state
    mean, _ = _moments(jax.lax.stop_gradient(dist))
    x = jnp.asarray(x)
    f0, g, h = _taylor(f, mean, x.shape, mean.dtype)
    z = x.reshape(-1).astype(mean.dtype) - mean
    return f0 + g @ z + 0.5 * z @ (h @ z)

  def expectation(f, dist, state):
    del state
    mean, covariance = _moments(dist)
    anchor = jax.lax.stop_gradient(mean)
    event_shape = tuple(getattr(dist, "event_shape", mean.shape))
    f0, g, h = _taylor(f, anchor, event_shape, mean.dtype)
    shift = mean - anchor  # zero, but carries ∂μ/∂θ
    trace = jnp.sum(h * covariance)  # tr(H Σ), H symmetric
    return f0 + g @ shift + 0.5 * (shift @ (h @ shift) + trace)

  return ControlVariate(
    init=lambda: (),
    value=value,
    expectation=expectation,
    update=_no_update,
    families=None,
    coefficient=coefficient,
    name=f"delta_method(coefficient={coefficient!r})",
    value_depends_on_params=False,
  )


def from_functions(
  value: Callable[[Callable, Any, jax.Array, Any], jax.Array],
  expectation: Callable[[Callable, Any, Any], jax.Array],
  *,
  families: tuple,
  init: Callable[[], Any] | None = None,
  update: Callable | None = None,
  coefficient: Union[float, str] = 1.0,
  name: str = "from_functions",
  value_depends_on_params: bool = True,
) -> ControlVariate:
  """A control variate from your own value and closed-form expectation.

  Args:
    value: ``value(f, dist, x, state) -> scalar``, h at one sample.
    expectation: ``expectation(f, dist, state) -> scalar``, E_{x~dist}[h(x)]
      exactly, differentiable in ``dist``'s parameters.
    families: the distribution classes (e.g. ``(scoregrad.dists.Normal,)``)
      for which ``expectation`` is exact; estimators refuse others.
    init: ``init() -> state`` (default: no state).
    update: ``update(state, f, dist, value) -> state`` after each step, with
      ``value`` the step's estimate of E[f] (default: none). The 0.1
      signature ``update(state, f, dist, samples, costs)`` still works for
      one release, with a ``DeprecationWarning``: it receives
      ``samples=None`` and ``costs=value[None]`` (the layer that applies
      control variates to any estimator does not see the samples).
    coefficient: a float β, ``"per_leaf"`` or ``"per_coordinate"``.
    name: for messages.
    value_depends_on_params: whether ``value`` depends differentiably on
      ``dist``'s parameters (default True: its pathwise term −β E[∇θ h] is
      then estimated, which needs per-sample rows; pass False if ``value``
      holds ``dist`` constant).

  Example:
    >>> import jax.numpy as jnp, scoregrad as sg
    >>> # h(x) = x with E[h] = loc, for Normal distributions.
    >>> cv = sg.control_variates.from_functions(
    ...     lambda f, d, x, s: jnp.sum(x), lambda f, d, s: jnp.sum(d.loc * jnp.ones(d.event_shape)),
    ...     families=(sg.dists.Normal,))
  """
  if not callable(value):
    raise TypeError(f"`value` must be a callable value(f, dist, x, state); got {value!r}.")
  if not callable(expectation):
    raise TypeError(
      f"`expectation` must be a callable expectation(f, dist, state); got {expectation!r}."
    )
  if isinstance(families, type):
    families = (families,)
  if (
    not isinstance(families, tuple)
    or not families
    or not all(isinstance(c, type) for c in families)
  ):
    raise TypeError(
      "`families` must be a non-empty tuple of distribution classes for which "
      f"`expectation` is exact, e.g. (scoregrad.dists.Normal,); got {families!r}."
    )
  if update is not None:
    update = _current_update_protocol(update, name)
  if not isinstance(value_depends_on_params, bool):
    raise TypeError(
      "`value_depends_on_params` must be a bool; got "
      f"value_depends_on_params={value_depends_on_params!r}."
    )
  return ControlVariate(
    init=init or (lambda: ()),
    value=value,
    expectation=expectation,
    update=update or _no_update,
    families=families,
    coefficient=_check_coefficient(coefficient),
    name=name,
    value_depends_on_params=value_depends_on_params,
    stateful=init is not None,
  )


def _current_update_protocol(update: Callable, name: str) -> Callable:
  """Adapts a 0.1 ``update(state, f, dist, samples, costs)`` (deprecated)."""
  if not callable(update):
    raise TypeError(f"`update` must be a callable update(state, f, dist, value); got {update!r}.")
  try:
    params = [
      p
      for p in inspect.signature(update).parameters.values()
      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
  except (TypeError, ValueError):
    return update
  if len(params) != 5:
    return update
  warnings.warn(
    f"from_functions(name={name!r}): `update(state, f, dist, samples, costs)` is "
    "deprecated; write `update(state, f, dist, value)` with `value` the step's "
    "estimate of E[f]. Until then it is called with samples=None and "
    "costs=value[None].",
    DeprecationWarning,
    stacklevel=3,
  )

  def adapted(state, f, dist, value):
    return update(state, f, dist, None, jnp.reshape(value, (1,)))

  return adapted


# ---------------------------------------------------------------------------
# Plumbing used by the estimators.


def resolve(control_variate):
  """``None`` passes through; anything else must be a :class:`ControlVariate`."""
  if control_variate is None:
    return None
  if not isinstance(control_variate, ControlVariate):
    hint = ""
    if callable(control_variate) and getattr(control_variate, "__module__", "") == __name__:
      hint = f" Call the factory: control_variate={control_variate.__name__}()."
    raise TypeError(
      "`control_variate` must be a scoregrad.control_variates.ControlVariate "
      "such as delta_method() or from_functions(...); got "
      f"{control_variate!r}.{hint}"
    )
  _check_coefficient(control_variate.coefficient)
  return control_variate


def is_estimated(cv: ControlVariate) -> bool:
  return isinstance(cv.coefficient, str)


def check_num_samples(cv: ControlVariate, num_samples: int) -> None:
  if is_estimated(cv) and num_samples < 3:
    raise ValueError(
      f"`control_variate={cv.name}` estimates its coefficient leave-one-out, "
      f"which needs num_samples >= 3; got num_samples={num_samples}. Use more "
      "samples or a fixed float coefficient."
    )


def check_family(cv: ControlVariate, dist) -> None:
  """Raises unless ``cv``'s closed-form expectation holds for ``dist``'s family."""
  if cv.families is None:
    if callable(getattr(dist, "mean", None)) and callable(getattr(dist, "covariance", None)):
      return
    names = ", ".join(families_with("covariance"))
    detail = "defines mean() and covariance()"
  else:
    if isinstance(dist, cv.families):
      return
    names = ", ".join(c.__name__ for c in cv.families)
    detail = "is listed in its `families`"
  inner = getattr(dist, "dist", dist)
  raise NotApplicableError(
    f"`control_variate={cv.name}` has a closed-form expectation only for "
    f"{names} (a family that {detail}), but `dist_fn(params)` returned "
    f"{type(inner).__name__}: its expectation would not match the samples and "
    "the gradient would be biased. Use a control variate built for this family "
    "(scoregrad.control_variates.from_functions(..., families=...)) or none."
  )


def leave_one_out_coefficients(per_f: PyTree, per_h: PyTree, *, mode: str = "per_leaf") -> PyTree:
  """Variance-minimising coefficients β_{−i}, each from all samples but i.

  For sample i and coordinate k, with a_j = g_{f,j,k} and b_j = g_{h,j,k}
  over j ≠ i, β_{−i,k} = Ĉov(a, b) / V̂ar(b) (sample covariance and variance
  of the other n − 1 samples). ``"per_leaf"`` sums Ĉov and V̂ar over the
  leaf's coordinates first (one β per leaf and sample). β is 0 where V̂ar is 0.
  β_{−i} does not depend on sample i, so subtracting β_{−i}(g_{h,i} − E[g_h])
  keeps an estimator unbiased.

  Args:
    per_f: per-sample gradient estimates for f, leaves ``(n, *shape)``.
    per_h: per-sample gradient estimates for h, same structure.
    mode: ``"per_leaf"`` or ``"per_coordinate"``.

  Returns:
    A pytree like ``per_f`` holding β_{−i} (broadcast over each leaf).
  """
  if mode not in ESTIMATED_COEFFICIENTS:
    raise ValueError(f"`mode` must be one of {ESTIMATED_COEFFICIENTS}; got mode={mode!r}.")

  def leaf(a, b):
    n = a.shape[0]
    a2 = a.reshape(n, -1)
    b2 = b.reshape(n, -1)
    # Cov and Var are shift-invariant: centre once for accuracy.
    a2 = a2 - jnp.mean(a2, axis=0)
    b2 = b2 - jnp.mean(b2, axis=0)
    m = n - 1
    sa, sb = jnp.sum(a2, 0) - a2, jnp.sum(b2, 0) - b2
    sab = jnp.sum(a2 * b2, 0) - a2 * b2
    sbb = jnp.sum(b2 * b2, 0) - b2 * b2
    cov = sab - sa * sb / m
    var = sbb - sb * sb / m
    if mode == "per_leaf":
      cov = jnp.sum(cov, axis=1, keepdims=True)
      var = jnp.sum(var, axis=1, keepdims=True)
    beta = safe_divide(cov, var)
    return jnp.broadcast_to(beta, a2.shape).reshape(a.shape)

  return jax.tree_util.tree_map(leaf, per_f, per_h)
