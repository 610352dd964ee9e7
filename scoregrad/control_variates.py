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
families for which the closed form holds and the coefficient β. Plug it into
``score_function``, ``pathwise`` or ``measure_valued`` with the
``control_variate=`` keyword.

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

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp

from scoregrad import dists as _dists
from scoregrad.base import call_dist_fn

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
    update: ``update(state, f, dist, samples, costs) -> state`` after a step.
    families: the distribution classes for which ``expectation`` is exact;
      other distributions are refused.
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
  update: Callable[[Any, Callable, Any, jax.Array, jax.Array], Any]
  families: tuple
  coefficient: Union[float, str] = 1.0
  name: str = "control_variate"
  value_depends_on_params: bool = True
  stateful: bool = False


def _check_coefficient(coefficient) -> Union[float, str]:
  if isinstance(coefficient, str):
    if coefficient not in ESTIMATED_COEFFICIENTS:
      raise ValueError(
          f"`coefficient` must be a float or one of {ESTIMATED_COEFFICIENTS}; got "
          f"coefficient={coefficient!r}.")
    return coefficient
  if isinstance(coefficient, bool):
    raise TypeError(f"`coefficient` must be a float or one of {ESTIMATED_COEFFICIENTS}; "
                    f"got coefficient={coefficient!r}.")
  try:
    value = float(coefficient)
  except (TypeError, ValueError):
    raise TypeError(
        f"`coefficient` must be a Python float (a fixed β) or one of "
        f"{ESTIMATED_COEFFICIENTS} (estimated); got {coefficient!r} of type "
        f"{type(coefficient).__name__}. A traced array would make β depend on "
        "the samples: use 'per_leaf' to estimate it without bias.") from None
  if not jnp.isfinite(value):
    raise ValueError(f"`coefficient` must be finite; got coefficient={coefficient!r}.")
  return value


def _no_update(state, f, dist, samples, costs):
  del f, dist, samples, costs
  return state


# ---------------------------------------------------------------------------
# Moments of the supported continuous families (flattened over the event).


def _moments(dist):
  """(mean (d,), kind, second) with kind "diag" (variances (d,)) or "tril" (L)."""
  if isinstance(dist, _dists.Normal):
    shape = dist.event_shape
    return (jnp.broadcast_to(dist.loc, shape).reshape(-1), "diag",
            jnp.broadcast_to(dist.scale**2, shape).reshape(-1))
  if isinstance(dist, _dists.MultivariateNormalTriL):
    return dist.loc, "tril", dist.scale_tril
  if isinstance(dist, _dists.Gamma):
    shape = dist.event_shape
    a = jnp.broadcast_to(dist.concentration, shape).reshape(-1)
    b = jnp.broadcast_to(dist.rate, shape).reshape(-1)
    return a / b, "diag", a / b**2
  if isinstance(dist, _dists.Exponential):
    rate = dist.rate.reshape(-1)
    return 1.0 / rate, "diag", 1.0 / rate**2
  raise AssertionError("unreachable: family checked before")  # pragma: no cover


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

  Requirements: f twice differentiable in x; the distribution's mean and
  covariance known: Normal, MultivariateNormalTriL, Gamma, Exponential. Costs
  one Hessian of f (d forward-over-reverse passes) and O(d²) per sample.

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
    mean, _, _ = _moments(jax.lax.stop_gradient(dist))
    x = jnp.asarray(x)
    f0, g, h = _taylor(f, mean, x.shape, mean.dtype)
    z = x.reshape(-1).astype(mean.dtype) - mean
    return f0 + g @ z + 0.5 * z @ (h @ z)

  def expectation(f, dist, state):
    del state
    mean, kind, second = _moments(dist)
    anchor = jax.lax.stop_gradient(mean)
    event_shape = tuple(getattr(dist, "event_shape", mean.shape))
    f0, g, h = _taylor(f, anchor, event_shape, mean.dtype)
    shift = mean - anchor   # zero, but carries ∂μ/∂θ
    if kind == "diag":
      trace = jnp.sum(jnp.diag(h) * second)
    else:
      trace = jnp.sum((h @ second) * second)
    return f0 + g @ shift + 0.5 * (shift @ (h @ shift) + trace)

  return ControlVariate(
      init=lambda: (), value=value, expectation=expectation, update=_no_update,
      families=(_dists.Normal, _dists.MultivariateNormalTriL, _dists.Gamma,
                _dists.Exponential),
      coefficient=coefficient, name=f"delta_method(coefficient={coefficient!r})",
      value_depends_on_params=False)


def from_functions(
    value: Callable[[Callable, Any, jax.Array, Any], jax.Array],
    expectation: Callable[[Callable, Any, Any], jax.Array],
    *,
    families: tuple,
    init: Callable[[], Any] | None = None,
    update: Callable | None = None,
    coefficient: Union[float, str] = 1.0,
    name: str = "from_functions",
) -> ControlVariate:
  """A control variate from your own value and closed-form expectation.

  Args:
    value: ``value(f, dist, x, state) -> scalar``, h at one sample.
    expectation: ``expectation(f, dist, state) -> scalar``, E_{x~dist}[h(x)]
      exactly, differentiable in ``dist``'s parameters.
    families: the distribution classes (e.g. ``(scoregrad.dists.Normal,)``)
      for which ``expectation`` is exact; estimators refuse others.
    init: ``init() -> state`` (default: no state).
    update: ``update(state, f, dist, samples, costs) -> state`` (default: none).
    coefficient: a float β, ``"per_leaf"`` or ``"per_coordinate"``.
    name: for messages.

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
        f"`expectation` must be a callable expectation(f, dist, state); got {expectation!r}.")
  if isinstance(families, type):
    families = (families,)
  if (not isinstance(families, tuple) or not families
      or not all(isinstance(c, type) for c in families)):
    raise TypeError(
        "`families` must be a non-empty tuple of distribution classes for which "
        f"`expectation` is exact, e.g. (scoregrad.dists.Normal,); got {families!r}.")
  return ControlVariate(
      init=init or (lambda: ()), value=value, expectation=expectation,
      update=update or _no_update, families=families,
      coefficient=_check_coefficient(coefficient), name=name,
      stateful=init is not None)


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
        f"{control_variate!r}.{hint}")
  _check_coefficient(control_variate.coefficient)
  return control_variate


def is_estimated(cv: ControlVariate) -> bool:
  return isinstance(cv.coefficient, str)


def check_num_samples(cv: ControlVariate, num_samples: int) -> None:
  if is_estimated(cv) and num_samples < 3:
    raise ValueError(
        f"`control_variate={cv.name}` estimates its coefficient leave-one-out, "
        f"which needs num_samples >= 3; got num_samples={num_samples}. Use more "
        "samples or a fixed float coefficient.")


def check_family(cv: ControlVariate, dist) -> None:
  """Raises unless ``cv``'s closed-form expectation holds for ``dist``'s family."""
  if not isinstance(dist, cv.families):
    inner = getattr(dist, "dist", dist)
    names = ", ".join(c.__name__ for c in cv.families)
    raise ValueError(
        f"`control_variate={cv.name}` has a closed-form expectation only for "
        f"{names}, but `dist_fn(params)` returned {type(inner).__name__}: its "
        "expectation would not match the samples and the gradient would be "
        "biased. Use a control variate built for this family "
        "(scoregrad.control_variates.from_functions(..., families=...)) or none.")


def expectation_grad(cv, f, dist_fn, params, state):
  """∇params E_{dist_fn(params)}[h] from the closed form."""
  return jax.grad(lambda p: jnp.asarray(
      cv.expectation(f, call_dist_fn(dist_fn, p), state)).astype(
          jnp.result_type(float)))(params)


def value_param_grad(cv, f, dist_fn, params, samples, state, *, per_sample: bool):
  """∇params h(x; params) with the samples held fixed (mean, or per sample)."""
  if not cv.value_depends_on_params:
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    if per_sample:
      n = jax.tree_util.tree_leaves(samples)[0].shape[0]
      return jax.tree_util.tree_map(
          lambda z: jnp.zeros((n,) + z.shape, z.dtype), zeros)
    return zeros

  def one(p, x):
    return jnp.asarray(cv.value(f, call_dist_fn(dist_fn, p), x, state))

  if per_sample:
    return jax.vmap(jax.grad(one), in_axes=(None, 0))(params, samples)
  return jax.grad(lambda p: jnp.mean(jax.vmap(one, in_axes=(None, 0))(p, samples)))(params)


def _safe_divide(num, den):
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def leave_one_out_coefficients(per_f: PyTree, per_h: PyTree, *,
                               mode: str = "per_leaf") -> PyTree:
  """Variance-minimising coefficients β_{−i}, each from all samples but i.

  For sample i and coordinate k, with a_j = g_{f,j,k} and b_j = g_{h,j,k}
  over j ≠ i, β_{−i,k} = Ĉov(a, b) / V̂ar(b) (sample covariance and variance
  of the other n − 1 samples). ``"per_leaf"`` sums Ĉov and V̂ar over the
  leaf's coordinates first (one β per leaf and sample). β is 0 where V̂ar is 0.
  β_{−i} does not depend on sample i, so subtracting β_{−i}(g_{h,i} − E[g_h])
  keeps an estimator unbiased.

  Args:
    per_f: per-sample gradient estimates for f, leaves (n, *shape).
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
    beta = _safe_divide(cov, var)
    return jnp.broadcast_to(beta, a2.shape).reshape(a.shape)

  return jax.tree_util.tree_map(leaf, per_f, per_h)


def apply(cv: ControlVariate, per_f: PyTree, per_h_centred: PyTree,
          per_f_for_coefficients: PyTree) -> PyTree:
  """Per-sample corrected estimates g_f − β (g_h − E[g_h]).

  ``per_h_centred`` is g_h − ∇E[h] (zero mean); with an estimated coefficient
  β_{−i} is fitted on ``per_f_for_coefficients`` (terms that depend on sample
  j only) against ``per_h_centred``.
  """
  if is_estimated(cv):
    beta = leave_one_out_coefficients(per_f_for_coefficients, per_h_centred,
                                      mode=cv.coefficient)
    return jax.tree_util.tree_map(lambda g, b, h: g - b * h, per_f, beta, per_h_centred)
  beta = float(cv.coefficient)
  return jax.tree_util.tree_map(lambda g, h: g - beta * h, per_f, per_h_centred)
