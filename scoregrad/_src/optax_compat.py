r"""Drop-in replacement for optax 0.1.8's ``optax.monte_carlo``.

``optax.monte_carlo`` was removed from optax in 0.2.7. Code written against
it works by changing only its import::

    # from optax import monte_carlo
    from scoregrad.compat import optax_monte_carlo as monte_carlo

The functions keep optax 0.1.8's names, signatures, argument order, return
types and shapes, and semantics (documented per function): ``params`` is a
sequence of arrays passed to ``dist_builder(*params)``; jacobians are
per-sample, one array of shape ``(num_samples, *param.shape)`` per parameter,
whose mean over samples is the gradient estimate. Two things differ:

* Per-sample jacobians come from reverse mode, ``vmap(grad)`` over samples,
  instead of optax's ``jax.jacfwd`` over the parameters, whose cost grows
  with the parameter dimension (see ``benchmarks/compat.py``). The numbers
  agree to rounding with the same ``rng`` for Gaussians.
* ``control_variates_jacobians`` evaluates a stateful control variate
  (``moving_avg_baseline``) with the state it was given, and returns the
  state updated on this step's samples. optax 0.1.8 updated the state first
  and used the updated state on the same samples, so the baseline depended
  on the samples it multiplied and the jacobians were biased (at the first
  step with the default settings, by the factor (n − 1)/n). Pass
  ``use_updated_state=True`` to reproduce optax's numbers exactly.
* ``dist_builder`` may return optax's own ``multi_normal`` objects (any
  object with ``sample(sample_shape, seed)``, ``log_prob`` and, for the
  measure-valued and pathwise estimators of Gaussians, ``params == [loc,
  log_scale]`` and ``log_scale``; optax 0.2.x's ``sample(shape, key)`` works
  too), ``scoregrad.dists`` distributions, or distrax/TFP/NumPyro ones.
  ``measure_valued_jacobians`` goes beyond optax: besides the log-scale
  Gaussian it accepts every family of :func:`scoregrad.measure_valued`.

As in optax, ``function`` must not depend on ``params`` (apply the chain rule
outside), and it is called on ONE sample (vmapped inside).

References:
  Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in
  Machine Learning", JMLR 2020.
  Paisley, Blei & Jordan, "Variational Bayesian Inference with Stochastic
  Search", ICML 2012 (``control_delta_method``).
"""

from __future__ import annotations

import inspect
import math
import typing
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from scoregrad._src.base import check_cost
from scoregrad._src.reparameterization import pathwise as _pathwise
from scoregrad._src.score import score_function as _score_function
from scoregrad._src.validation import check_key, check_positive_int
from scoregrad._src.weak_derivative import has_weak_derivative
from scoregrad._src.weak_derivative import measure_valued as _measure_valued
from scoregrad.dists._base import Distribution as _Distribution
from scoregrad.dists._base import all_families
from scoregrad.dists._user import UserDistribution as _UserDistribution
from scoregrad.dists._weak import replace_eval

__all__ = (
  "MultiNormalDiagFromLogScale",
  "control_delta_method",
  "control_variates_jacobians",
  "estimate_control_variate_coefficients",
  "measure_valued_jacobians",
  "moving_avg_baseline",
  "multi_normal",
  "pathwise_jacobians",
  "score_function_jacobians",
)

CvState = Any
ControlVariate = tuple[Callable, Callable, Callable]


# ---------------------------------------------------------------------------
# The distribution builder of optax 0.1.8's tests and examples.


class MultiNormalDiagFromLogScale:
  """N(loc, diag(exp(log_scale))²) exposing its parameters, as optax 0.1.8's.

  ``sample(shape, seed)`` returns ``normal(seed, shape + param_shape) *
  exp(log_scale) + loc``; ``log_prob`` sums over the parameter axes;
  ``params`` is ``[loc, log_scale]``.
  """

  reparameterized = True

  def __init__(self, loc, log_scale):
    self._loc = jnp.asarray(loc)
    self._log_scale = jnp.asarray(log_scale)
    self._scale = jnp.exp(self._log_scale)
    try:
      self._param_shape = jnp.broadcast_shapes(self._loc.shape, self._scale.shape)
    except ValueError:
      raise ValueError(
        f"multi_normal(loc, log_scale), i.e. `params` = [loc, log_scale]: the two "
        f"shapes must broadcast together; got loc of shape {self._loc.shape} and "
        f"log_scale of shape {self._log_scale.shape}. Give log_scale the shape of "
        "loc (e.g. jnp.zeros_like(loc)), or a scalar shared by all coordinates."
      ) from None

  def sample(self, shape: Sequence[int], seed) -> jax.Array:
    full = tuple(shape) + self._param_shape
    return jax.random.normal(seed, full, self._scale.dtype) * self._scale + self._loc

  def log_prob(self, x) -> jax.Array:
    z = (x - self._loc) / self._scale
    lp = -0.5 * z**2 - self._log_scale - 0.5 * math.log(2 * math.pi)
    axes = tuple(range(-len(self._param_shape), 0))
    return jnp.sum(lp, axis=axes)

  @property
  def log_scale(self) -> jax.Array:
    return self._log_scale

  @property
  def params(self) -> list:
    return [self._loc, self._log_scale]


def multi_normal(loc, log_scale) -> MultiNormalDiagFromLogScale:
  """The builder ``multi_normal(loc, log_scale)`` used with optax.monte_carlo."""
  return MultiNormalDiagFromLogScale(loc, log_scale)


# ---------------------------------------------------------------------------
# Validation and the distribution adapter.


_ESTIMATOR_ARGS = "(function, params, dist_builder, rng, num_samples)"
_CV_ARGS = (
  "(function, control_variate_from_function, grad_estimator, params, "
  "dist_builder, rng, num_samples, control_variate_state, ...)"
)


def _short(obj, limit: int = 200) -> str:
  """``repr(obj)``, cut to ``limit`` characters for error messages."""
  text = repr(obj)
  return text if len(text) <= limit else text[: limit - 3] + "..."


def _shapes(params) -> str:
  return "[" + ", ".join(str(jnp.shape(p)) for p in params) + "]"


def _check_function(function, params=None, *, order=_ESTIMATOR_ARGS):
  if not callable(function):
    swapped = ""
    if isinstance(function, (list, tuple)) and callable(params):
      swapped = f" `function` and `params` look swapped: the arguments are {order}."
    raise TypeError(
      f"`function` must be a callable f(x) -> scalar for ONE sample x; got "
      f"{_short(function)} of type {type(function).__name__}.{swapped}"
    )


def _check_params(params, dist_builder=None, *, order=_ESTIMATOR_ARGS):
  if not isinstance(params, (list, tuple)):
    swapped = ""
    if callable(params) and isinstance(dist_builder, (list, tuple)):
      swapped = f" `params` and `dist_builder` look swapped: the arguments are {order}."
    raise TypeError(
      "`params` must be a list or tuple of arrays, passed to the builder as "
      f"`dist_builder(*params)` (optax.monte_carlo's convention); got {_short(params)} of "
      f"type {type(params).__name__}.{swapped} E.g. params = [mean, log_scale]."
    )


def _check_rng_and_num_samples(rng, num_samples, *, order=_ESTIMATOR_ARGS):
  """``(rng, num_samples)`` checked, with a hint when the two are swapped."""
  rng_is_int = isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)
  if rng_is_int and hasattr(num_samples, "dtype") and hasattr(num_samples, "shape"):
    raise TypeError(
      f"`rng` and `num_samples` look swapped: got rng={rng!r} and num_samples, "
      f"an array of dtype {num_samples.dtype} and shape {num_samples.shape}. The "
      f"arguments are {order}: the key comes first, then the number of samples."
    )
  num_samples = check_positive_int("num_samples", num_samples)
  return check_key(rng, "rng"), num_samples


def _check_estimator_args(function, params, dist_builder, rng, num_samples):
  """The checks shared by the three gradient estimators; returns (rng, num_samples)."""
  _check_function(function, params)
  _check_params(params, dist_builder)
  return _check_rng_and_num_samples(rng, num_samples)


def _build(dist_builder, params):
  """``dist_builder(*params)`` with clear errors for bad builders."""
  if not callable(dist_builder):
    raise TypeError(
      f"`dist_builder` must be a callable returning a distribution, called as "
      f"dist_builder(*params); got {dist_builder!r}."
    )
  try:
    dist = dist_builder(*params)
  except TypeError as e:
    raise TypeError(
      f"`dist_builder(*params)` raised TypeError: {e}. The builder is called "
      f"with the entries of `params` as positional arguments; got {len(params)} "
      f"(shapes {_shapes(params)}), e.g. multi_normal takes params = [mean, "
      "log_scale]."
    ) from e
  missing = [m for m in ("sample", "log_prob") if not callable(getattr(dist, m, None))]
  if missing:
    raise TypeError(
      f"`dist_builder(*params)` returned {type(dist).__name__}, which lacks "
      f"{' and '.join(missing)}. The builder must return a distribution with "
      "`sample(sample_shape, seed)` and `log_prob(x)`: optax's "
      "multi_normal, scoregrad.compat.optax_monte_carlo.multi_normal, a "
      "scoregrad.dists distribution, or a distrax/TFP/NumPyro one."
    )
  return dist


_KEY_NAMES = ("key", "rng", "rng_key", "seed", "prng_key")


def _draw(dist, rng, sample_shape):
  """Samples with whichever calling convention ``dist.sample`` has."""
  sample_shape = tuple(sample_shape)
  if isinstance(dist, (_Distribution, _UserDistribution)):
    return dist.sample(rng, sample_shape)
  try:
    names = [
      p.name
      for p in inspect.signature(dist.sample).parameters.values()
      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    kw_only = {
      p.name for p in inspect.signature(dist.sample).parameters.values() if p.kind is p.KEYWORD_ONLY
    }
  except (TypeError, ValueError):
    names, kw_only = [], set()
  if names and names[0] in _KEY_NAMES:  # NumPyro-style sample(key, shape)
    return dist.sample(rng, sample_shape)
  if "seed" in kw_only:  # distrax/TFP: sample(*, seed, sample_shape)
    return dist.sample(seed=rng, sample_shape=sample_shape)
  return dist.sample(sample_shape, rng)  # optax: sample(shape, seed | key)


class _Builder:
  """``dist_builder(*params)`` as a scoregrad distribution: ``sample(key, shape)``
  with the builder's own calling convention (:func:`_draw`), so the public
  estimators draw exactly optax's samples."""

  def __init__(self, dist):
    self.dist = dist
    self.reparameterized = bool(getattr(dist, "reparameterized", True))

  def sample(self, key, sample_shape=()):
    return _draw(self.dist, key, sample_shape)

  def log_prob(self, x):
    return self.dist.log_prob(x)


def _family(dist_builder) -> Callable:
  """``params -> distribution`` for the public estimators (params a list)."""

  def dist_fn(p):
    dist = _build(dist_builder, p)
    if isinstance(dist, _Distribution):
      return dist
    return _Builder(dist)

  return dist_fn


def _like_params(params, leaves):
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), list(leaves))


def _is_log_scale_gaussian(dist) -> bool:
  """optax's MultiNormalDiagFromLogScale, or any object exposing the same."""
  p = getattr(dist, "params", None)
  return (
    hasattr(dist, "log_scale")
    and isinstance(p, (list, tuple))
    and len(p) == 2
    and not isinstance(dist, _Distribution)
  )


# ---------------------------------------------------------------------------
# Gradient estimators.


def score_function_jacobians(
  function: Callable[[jax.Array], float],
  params: Sequence[jax.Array],
  dist_builder: Callable[..., Any],
  rng: jax.Array,
  num_samples: int,
) -> Sequence[jax.Array]:
  r"""Per-sample score-function jacobians, as ``optax.monte_carlo`` 0.1.8.

  With x_i = ``dist_builder(*params).sample((num_samples,), seed=rng)``
  (held constant), jacobian i is f(x_i) ∇params log p(x_i; params):
  unbiased for ∇ E_p[f] by the log-derivative identity. Requires log p
  differentiable in params; nothing on f.

  Args:
    function: f(x) -> scalar for one sample.
    params: list/tuple of arrays, the builder's arguments.
    dist_builder: ``dist_builder(*params) -> distribution``.
    rng: a PRNG key.
    num_samples: number of samples.

  Returns:
    Like ``params`` (same container), each entry of shape
    ``(num_samples, *param.shape)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from scoregrad.compat import optax_monte_carlo as mc
    >>> jac = mc.score_function_jacobians(
    ...     lambda x: jnp.sum(x**2), [jnp.zeros(3), jnp.zeros(3)],
    ...     mc.multi_normal, jax.random.PRNGKey(0), 100)
    >>> [j.shape for j in jac]
    [(100, 3), (100, 3)]
  """
  rng, num_samples = _check_estimator_args(function, params, dist_builder, rng, num_samples)
  est = _score_function(num_samples=num_samples, per_sample=True)
  as_list = list(params)
  out = est.estimate(rng, function, _family(dist_builder), as_list, est.init(as_list))
  return _like_params(params, out.per_sample)


def _reparameterized_draws(dist_builder, params, rng, num_samples):
  """(handles, draw) with draw(p, handle) -> one sample, differentiable in p.

  Gaussians reuse the noise of ``sample((num_samples,), seed=rng)`` (the same
  samples as optax); for other reparameterized families it returns
  ``(None, None)`` and :func:`pathwise_jacobians` uses
  :func:`scoregrad.pathwise` (one key of ``split(rng, num_samples)`` per sample).
  """
  dist = _build(dist_builder, params)
  if getattr(dist, "reparameterized", True) is False:
    raise ValueError(
      f"pathwise_jacobians needs a reparameterized distribution, but "
      f"`dist_builder(*params)` returned {type(dist).__name__}, whose samples "
      "are not differentiable in its parameters (the jacobians would be "
      "silently zero). Use score_function_jacobians or measure_valued_jacobians."
    )
  if _is_log_scale_gaussian(dist):
    samples = jax.lax.stop_gradient(_draw(dist, rng, (num_samples,)))
    loc, log_scale = (jax.lax.stop_gradient(v) for v in dist.params)
    noise = (samples - loc) / jnp.exp(log_scale)

    def draw(p, eps):
      loc_p, log_scale_p = _build(dist_builder, p).params
      return loc_p + jnp.exp(log_scale_p) * eps

    return noise, draw
  if callable(getattr(dist, "to_standard_normal", None)):  # Gaussian families
    samples = jax.lax.stop_gradient(_draw(dist, rng, (num_samples,)))
    noise = jax.lax.stop_gradient(dist).to_standard_normal(samples)

    def draw(p, eps):
      return _build(dist_builder, p).from_standard_normal(eps)

    return noise, draw
  return None, None


def pathwise_jacobians(
  function: Callable[[jax.Array], float],
  params: Sequence[jax.Array],
  dist_builder: Callable[..., Any],
  rng: jax.Array,
  num_samples: int,
) -> Sequence[jax.Array]:
  r"""Per-sample pathwise (reparameterization) jacobians, as optax 0.1.8.

  With x_i = g(ε_i; params), jacobian i is ∇params f(g(ε_i; params)).
  Requires a reparameterized distribution and f differentiable. For
  Gaussians (optax's ``multi_normal``, scoregrad's ``Normal`` and
  ``MultivariateNormalTriL``) the samples are those of
  ``sample((num_samples,), seed=rng)``, as in optax; other reparameterized
  distributions draw sample i with key i of ``split(rng, num_samples)``.

  Args:
    function: f(x) -> scalar for one sample, differentiable.
    params: list/tuple of arrays, the builder's arguments.
    dist_builder: ``dist_builder(*params) -> distribution``.
    rng: a PRNG key.
    num_samples: number of samples.

  Returns:
    Like ``params``, each entry of shape ``(num_samples, *param.shape)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from scoregrad.compat import optax_monte_carlo as mc
    >>> jac = mc.pathwise_jacobians(lambda x: jnp.sum(x**2), [jnp.ones(2), jnp.zeros(2)],
    ...                             mc.multi_normal, jax.random.PRNGKey(0), 10)
  """
  rng, num_samples = _check_estimator_args(function, params, dist_builder, rng, num_samples)
  handles, draw = _reparameterized_draws(dist_builder, params, rng, num_samples)
  as_list = list(params)
  if handles is None:
    est = _pathwise(num_samples=num_samples, per_sample=True)
    out = est.estimate(rng, function, _family(dist_builder), as_list, est.init(as_list))
    return _like_params(params, out.per_sample)
  check_cost(
    function,
    jax.eval_shape(lambda h: draw(as_list, h), handles[0]),
    where="pathwise_jacobians differentiates it",
  )

  def one(p, h):
    return function(draw(p, h))

  jac = jax.vmap(jax.grad(one), in_axes=(None, 0))(as_list, handles)
  return _like_params(params, jac)


def _gaussian_log_scale_mvd(function, dist, rng, num_samples, coupling):
  """Per-sample (mean, log_scale) measure-valued terms of a diagonal Gaussian.

  Weak derivatives (Mohamed et al. 2020, Section 6): mean: c = 1/(σ√(2π)),
  p± = μ ± σ·Weibull(√2, 2); scale: c = 1/σ, p⁺ = μ + σ·dsMaxwell, p⁻ =
  N(μ, σ²) (coupled as U·M); the log-scale term is σ times the scale term.
  Random numbers as in optax 0.1.8: base samples from ``rng``, positive and
  negative draws from ``split(rng)``, the same keys for mean and scale.
  """
  loc, log_scale = (jax.lax.stop_gradient(v) for v in dist.params)
  std = jnp.exp(log_scale)
  base = jax.lax.stop_gradient(_draw(dist, rng, (num_samples,)))
  check_cost(
    function,
    jax.ShapeDtypeStruct(base.shape[1:], base.dtype),
    where="measure_valued_jacobians evaluates it on one sample at a time",
  )
  shape = base.shape
  event_shape = shape[1:]
  flat = base.reshape(num_samples, -1)
  mu = jnp.broadcast_to(loc, event_shape).reshape(-1)
  sd = jnp.broadcast_to(std, event_shape).reshape(-1)
  fn = lambda x: jnp.reshape(function(x), (1,))
  pos_rng, neg_rng = jax.random.split(rng)

  def coordinate_differences(pos_noise, neg_noise):
    pos = replace_eval(fn, flat, mu + sd * pos_noise.reshape(num_samples, -1), event_shape)
    neg = replace_eval(fn, flat, mu + sd * neg_noise.reshape(num_samples, -1), event_shape)
    return (pos - neg)[..., 0]

  w_pos = jax.random.weibull_min(
    pos_rng, scale=math.sqrt(2.0), concentration=2.0, shape=shape, dtype=base.dtype
  )
  w_neg = (
    w_pos
    if coupling
    else jax.random.weibull_min(
      neg_rng, scale=math.sqrt(2.0), concentration=2.0, shape=shape, dtype=base.dtype
    )
  )
  grad_mean = coordinate_differences(w_pos, -w_neg) / (math.sqrt(2 * math.pi) * sd)

  m_pos = jax.random.double_sided_maxwell(
    pos_rng, loc=0.0, scale=1.0, shape=shape, dtype=base.dtype
  )
  if coupling:
    m_neg = jax.random.uniform(neg_rng, shape, base.dtype) * m_pos
  else:
    m_neg = jax.random.normal(neg_rng, shape, base.dtype)
  grad_log_scale = coordinate_differences(m_pos, m_neg)  # (1/σ)·σ: the chain rule
  return (grad_mean.reshape(shape), grad_log_scale.reshape(shape))


def _sum_to_shape(g, shape):
  """Sums per-sample terms g (n, *event) over the axes that ``shape`` broadcasts."""
  lead = g.ndim - 1 - len(shape)
  axes = tuple(range(1, 1 + lead)) + tuple(
    1 + lead + i for i, s in enumerate(shape) if s == 1 and g.shape[1 + lead + i] != 1
  )
  return jnp.sum(g, axis=axes, keepdims=False).reshape((g.shape[0],) + tuple(shape))


def _build_for_measure_valued(dist_builder, params):
  """``dist_builder(*params)`` if measure_valued_jacobians supports it, else ValueError.

  Supported: optax's log-scale Gaussian (:func:`_is_log_scale_gaussian`) and
  scoregrad distributions with a weak-derivative decomposition. Anything else,
  including a builder that cannot be called with ``*params`` (optax 0.1.8
  raised ValueError for every builder but its own ``multi_normal``), is a
  ValueError naming ``dist_builder``, what it gave and what is supported.
  """
  got = cause = None
  if not callable(dist_builder) or getattr(dist_builder, "__name__", "") == "multi_normal":
    # TypeError: not a builder at all, or `params` that multi_normal cannot take.
    dist = _build(dist_builder, params)
  else:
    try:
      dist = dist_builder(*params)
    except TypeError as e:
      got, cause = f"dist_builder(*params) raised TypeError: {e}", e
  if got is None:
    if _is_log_scale_gaussian(dist) or (
      isinstance(dist, _Distribution) and has_weak_derivative(dist)
    ):
      return dist
    got = f"dist_builder(*params) returned {type(dist).__name__}"
  described = dict.fromkeys(
    c.weak_derivative_description
    for c in all_families()
    if callable(getattr(c, "weak_derivative", None))
  )
  supported = "; ".join(
    [
      "optax's multi_normal or scoregrad.compat.optax_monte_carlo.multi_normal "
      "(any builder returning an object with `params == [loc, log_scale]` and "
      "`log_scale`)"
    ]
    + [f"scoregrad.dists.{d}" for d in described]
  )
  raise ValueError(
    "measure_valued_jacobians needs `dist_builder` to be multi_normal or to return "
    "a distribution with a weak-derivative decomposition; got dist_builder="
    f"{_name(dist_builder)}, and {got}. Supported: {supported}. For other "
    "distributions use score_function_jacobians (any distribution with a "
    "log_prob) or pathwise_jacobians (reparameterized ones)."
  ) from cause


def measure_valued_jacobians(
  function: Callable[[jax.Array], float],
  params: Sequence[jax.Array],
  dist_builder: Callable[..., Any],
  rng: jax.Array,
  num_samples: int,
  coupling: bool = True,
) -> Sequence[jax.Array]:
  r"""Per-sample measure-valued jacobians, as optax 0.1.8 (and more families).

  ∂θ E_p[f] = c (E_{p⁺}[f] − E_{p⁻}[f]) per parameter coordinate, with one
  coordinate of a base sample replaced by draws from p⁺ and p⁻ (see
  :mod:`scoregrad.measure_valued`). For optax's ``multi_normal`` builder the
  result is optax's: ``[mean jacobians, log_scale jacobians]`` with the same
  random numbers. Builders returning other objects with ``params == [loc,
  log_scale]`` get the same, chained to ``params`` through ``jax.vjp``;
  scoregrad distributions (Normal, Bernoulli, Categorical, Poisson,
  Exponential, Gamma rate) use :func:`scoregrad.measure_valued`'s
  decompositions, chained the same way. Nothing is required of f.

  Args:
    function: f(x) -> scalar for one sample.
    params: list/tuple of arrays, the builder's arguments.
    dist_builder: ``dist_builder(*params) -> distribution``.
    rng: a PRNG key.
    num_samples: number of samples.
    coupling: draw the positive and negative samples with common random
      numbers (default True, as in optax).

  Returns:
    A list with one ``(num_samples, *param.shape)`` array per parameter.

  Raises:
    ValueError: when ``dist_builder`` is neither ``multi_normal`` (or another
      builder of objects with ``params == [loc, log_scale]``) nor a builder of
      a scoregrad distribution with a weak-derivative decomposition, including
      a builder that cannot be called as ``dist_builder(*params)`` (optax
      0.1.8 raised ValueError for every builder but its ``multi_normal``).
  """
  rng, num_samples = _check_estimator_args(function, params, dist_builder, rng, num_samples)
  if not isinstance(coupling, (bool, np.bool_)):
    raise TypeError(f"`coupling` must be a bool; got coupling={_short(coupling)}.")
  coupling = bool(coupling)
  params = list(params)
  dist = _build_for_measure_valued(dist_builder, params)

  if _is_log_scale_gaussian(dist):
    terms = _gaussian_log_scale_mvd(function, dist, rng, num_samples, coupling)
    canon_fn = lambda p: tuple(_build(dist_builder, p).params)
    # A parameter broadcast over the event gets the sum of its coordinates' terms.
    terms = tuple(_sum_to_shape(g, jnp.shape(c)) for g, c in zip(terms, dist.params))
  else:
    est = _measure_valued(num_samples=num_samples, coupling=coupling, per_sample=True)
    out = est.estimate(rng, function, _family(dist_builder), params, est.init(params))
    return list(typing.cast(Sequence[jax.Array], out.per_sample))  # per_sample=True
  _, vjp_fn = jax.vjp(canon_fn, params)
  jac = jax.vmap(lambda ct: vjp_fn(tuple(ct))[0])(tuple(terms))
  return list(jac)


# ---------------------------------------------------------------------------
# Control variates.


def _gaussian_builder_check(dist, name):
  diagonal_gaussian = callable(getattr(dist, "from_standard_normal", None)) and hasattr(
    dist, "scale"
  )  # loc + scale·ε, e.g. dists.Normal
  if not (_is_log_scale_gaussian(dist) or diagonal_gaussian):
    raise ValueError(
      f"`{name}` has a closed-form expectation only for diagonal Gaussians "
      "with params = (mean, log_scale) (optax's multi_normal, or a builder "
      "returning scoregrad.dists.Normal(mean, exp(log_scale))); "
      f"`dist_builder(*params)` returned {type(dist).__name__}, so the control "
      "variate's expectation would not match its samples and the jacobians "
      "would be biased."
    )


def control_delta_method(function: Callable[[jax.Array], float]) -> ControlVariate:
  r"""The delta-method control variate (Paisley et al. 2012), as optax 0.1.8.

  With μ = params[0] and σ = exp(params[1]) (a diagonal Gaussian in optax's
  ``multi_normal`` parameterisation), h is the second-order Taylor expansion
  of f at μ, h(x) = f(μ) + ∇f(μ)ᵀ(x − μ) + ½ (x − μ)ᵀ ∇²f(μ) (x − μ), and
  E[h] = f(μ) + ½ Σ_j σ_j² ∂²f/∂x_j² (μ). h depends on params through μ.
  Exact (h = f) for quadratic f.

  Args:
    function: f(x) -> scalar for one sample, twice differentiable.

  Returns:
    ``(control_variate, expected_value, update_state)`` with signatures
    ``(params, sample, state) -> h``, ``(params, state) -> E[h]`` and
    ``(params, samples, state) -> state`` (no state: returned unchanged).
  """
  _check_function(function)

  def _flat(mean):
    return lambda z: function(z.reshape(mean.shape))

  def delta(params, sample, state=None):
    del state
    mean = params[0]
    fl = _flat(mean)
    centred = (sample - mean).reshape(-1)
    m = mean.reshape(-1)
    grad = jax.grad(fl)(m)
    hess = jax.hessian(fl)(m)
    return fl(m) + centred @ grad + centred @ (hess @ centred) / 2.0

  def expected_value_delta(params, state):
    del state
    mean = params[0]
    var = jnp.broadcast_to(jnp.exp(params[1]) ** 2, mean.shape).reshape(-1)
    fl = _flat(mean)
    m = mean.reshape(-1)
    hess = jax.hessian(fl)(m)
    return fl(m) + jnp.sum(var * jnp.diag(hess)) / 2.0

  def update_state(params, samples, state=None):
    del params, samples
    return state

  delta._scoregrad_check = _gaussian_builder_check  # type: ignore[attr-defined]
  return delta, expected_value_delta, update_state


def _moving_avg_state(state):
  """``(value, step)`` of a moving-average state, or an error naming the argument."""
  fix = (
    "Start from control_variate_state=(jnp.array(0.), 0) and pass on the state "
    "that control_variates_jacobians returns."
  )
  if not (isinstance(state, (tuple, list)) and len(state) == 2):
    raise TypeError(
      "`control_variate_state` of moving_avg_baseline (the `state` argument of its "
      "three functions) must be a pair (value, step): the running average and the "
      f"number of updates so far; got control_variate_state={_short(state)}. {fix}"
    )
  value, step = state
  if jnp.ndim(value) != 0 or jnp.ndim(step) != 0:
    raise ValueError(
      "`control_variate_state` of moving_avg_baseline must be a pair of scalars "
      f"(value, step); got a value of shape {jnp.shape(value)} and a step of shape "
      f"{jnp.shape(step)} (control_variate_state={_short(state)}). {fix}"
    )
  return value, step


def moving_avg_baseline(
  function: Callable[[jax.Array], float],
  decay: float = 0.99,
  zero_debias: bool = True,
  use_decay_early_training_heuristic=True,
) -> ControlVariate:
  r"""A moving-average baseline as a control variate, as optax 0.1.8.

  The state is ``(value, i)``; h(x) = value and E[h] = value (no dependence
  on params, so it changes only score-function jacobians). The update after
  step i (counting from 0) is, with d = min(decay, (1 + i)/(10 + i)) if
  ``use_decay_early_training_heuristic`` else ``decay``,

      value ← d · value + (1 − d) · mean_j f(x_j),
      value ← value / (1 − d^{i+1})   if ``zero_debias``,
      i ← i + 1,

  exactly as optax 0.1.8 (which stores the debiased value, so the division
  applies to an already-debiased average at later steps). Start from
  ``control_variate_state = (jnp.array(0.), 0)``.

  Args:
    function: f(x) -> scalar for one sample.
    decay: the moving average's decay.
    zero_debias: divide by 1 − d^{i+1} after each update.
    use_decay_early_training_heuristic: use min(decay, (1 + i)/(10 + i)).

  Returns:
    ``(control_variate, expected_value, update_state)``; each raises
    TypeError (or ValueError) naming ``control_variate_state`` when the state
    it is given is not a pair of scalars ``(value, step)``.
  """
  _check_function(function)

  def moving_avg(params, samples, state=None):
    del params, samples
    return _moving_avg_state(state)[0]

  def expected_value_moving_avg(params, state):
    del params
    return _moving_avg_state(state)[0]

  def update_state(params, samples, state=None):
    del params
    value, i = _moving_avg_state(state)
    if use_decay_early_training_heuristic:
      d = jnp.minimum(decay, (1.0 + i) / (10.0 + i))
    else:
      d = decay
    new = d * value + (1 - d) * jnp.mean(jax.vmap(function)(samples))
    if zero_debias:
      new = new / (1.0 - jnp.power(d, i + 1))
    return jax.lax.stop_gradient(new), i + 1

  return moving_avg, expected_value_moving_avg, update_state


_CV_FACTORIES = ("control_delta_method", "moving_avg_baseline")
_GRAD_ESTIMATORS = ("score_function_jacobians", "pathwise_jacobians", "measure_valued_jacobians")


def _name(obj) -> str:
  return getattr(obj, "__name__", None) or _short(obj)


def _check_control_variate(
  control_variate_from_function, grad_estimator, function, params, dist_builder
):
  """Checks the two callables of the control-variate functions; returns the cv triple."""
  cv_name = getattr(control_variate_from_function, "__name__", None)
  ge_name = getattr(grad_estimator, "__name__", None)
  factories = "control_delta_method or moving_avg_baseline"
  estimators = "score_function_jacobians, pathwise_jacobians or measure_valued_jacobians"
  if cv_name in _GRAD_ESTIMATORS and ge_name in _CV_FACTORIES:
    raise TypeError(
      "`control_variate_from_function` and `grad_estimator` look swapped: got "
      f"control_variate_from_function={cv_name} and grad_estimator={ge_name}. The "
      f"arguments are {_CV_ARGS}: the control-variate factory ({factories}) "
      f"comes before the gradient estimator ({estimators})."
    )
  if cv_name in _GRAD_ESTIMATORS:
    raise TypeError(
      f"`control_variate_from_function` must be a control-variate factory such as "
      f"{factories}; got control_variate_from_function={cv_name}, a gradient "
      f"estimator (it belongs in `grad_estimator`). The arguments are {_CV_ARGS}."
    )
  if ge_name in _CV_FACTORIES:
    raise TypeError(
      f"`grad_estimator` must be a gradient estimator such as {estimators}; got "
      f"grad_estimator={ge_name}, a control-variate factory (it belongs in "
      f"`control_variate_from_function`). The arguments are {_CV_ARGS}."
    )
  if not callable(control_variate_from_function):
    raise TypeError(
      "`control_variate_from_function` must be a callable such as "
      f"{factories} (the function, not its result); got "
      f"control_variate_from_function={_short(control_variate_from_function)}."
    )
  if not callable(grad_estimator):
    raise TypeError(
      "`grad_estimator` must be a callable (function, params, dist_builder, "
      f"rng, num_samples) -> jacobians, e.g. score_function_jacobians; got "
      f"grad_estimator={_short(grad_estimator)}."
    )
  try:
    cv = control_variate_from_function(function)
  except TypeError as e:
    raise TypeError(
      f"`control_variate_from_function(function)` raised TypeError: {e}. It is "
      f"called with `function` alone and must return (control_variate, "
      f"expected_value, update_state), as {factories} do; got "
      f"control_variate_from_function={_name(control_variate_from_function)}."
    ) from e
  if not (isinstance(cv, tuple) and len(cv) == 3 and all(callable(c) for c in cv)):
    raise TypeError(
      "`control_variate_from_function(function)` must return a tuple of three "
      "callables (control_variate, expected_value, update_state); got "
      f"{_short(cv)}. Pass control_delta_method, not control_delta_method(function)."
    )
  check = getattr(cv[0], "_scoregrad_check", None)
  if check is not None:
    check(
      _build(dist_builder, params),
      getattr(control_variate_from_function, "__name__", "control_variate_from_function"),
    )
  return cv


def control_variates_jacobians(
  function: Callable[[jax.Array], float],
  control_variate_from_function: Callable[[Callable], ControlVariate],
  grad_estimator: Callable[..., Sequence[jax.Array]],
  params: Sequence[jax.Array],
  dist_builder: Callable[..., Any],
  rng: jax.Array,
  num_samples: int,
  control_variate_state: CvState = None,
  estimate_cv_coeffs: bool = False,
  estimate_cv_coeffs_num_samples: int = 20,
  *,
  use_updated_state: bool = False,
) -> tuple[Sequence[jax.Array], CvState]:
  r"""Per-sample jacobians with a control variate, as optax 0.1.8.

  With h(x; θ) the control variate and β_k one coefficient per parameter
  (1, or estimated by :func:`estimate_control_variate_coefficients` on new
  samples when ``estimate_cv_coeffs``), jacobian i of parameter k is

      J_f,i − β_k J_h,i − β_k · mean_j ∇θ h(x_j; θ) + β_k ∇θ E_p[h],

  where J_f and J_h are ``grad_estimator`` applied to f and to h (with θ held
  constant inside h), on the same samples (same ``rng``). h uses the state
  passed in; the returned state is updated on
  ``dist_builder(*params).sample((num_samples,), seed=rng)``, as in optax.
  Unbiased for any fixed β and any state.

  Args:
    function: f(x) -> scalar for one sample.
    control_variate_from_function: e.g. :func:`control_delta_method` or
      :func:`moving_avg_baseline` (the factory, called with ``function``).
    grad_estimator: e.g. :func:`score_function_jacobians`.
    params: list/tuple of arrays, the builder's arguments.
    dist_builder: ``dist_builder(*params) -> distribution``.
    rng: a PRNG key.
    num_samples: number of samples.
    control_variate_state: the control variate's state (``None`` if none).
    estimate_cv_coeffs: estimate the variance-minimising coefficients.
    estimate_cv_coeffs_num_samples: samples used to estimate them.
    use_updated_state: evaluate h with the state already updated on this
      step's samples, as optax 0.1.8 did (keyword-only; default False).
      Reproduces optax's numbers, but for stateful control variates the
      jacobians are then biased: h depends on the samples it is paired with.

  Returns:
    ``(jacobians, new_state)``: a list with one ``(num_samples,
    *param.shape)`` array per parameter, and the updated state.
  """
  _check_function(function, params, order=_CV_ARGS)
  _check_params(params, dist_builder, order=_CV_ARGS)
  rng, num_samples = _check_rng_and_num_samples(rng, num_samples, order=_CV_ARGS)
  stochastic_cv, expected_value_cv, update_state_cv = _check_control_variate(
    control_variate_from_function, grad_estimator, function, params, dist_builder
  )
  if not (
    isinstance(estimate_cv_coeffs, (bool, np.bool_))
    or (isinstance(estimate_cv_coeffs, int) and estimate_cv_coeffs in (0, 1))
  ):
    raise TypeError(
      f"`estimate_cv_coeffs` must be a bool; got estimate_cv_coeffs="
      f"{_short(estimate_cv_coeffs)} of type {type(estimate_cv_coeffs).__name__}. "
      f"It is a static Python value (under jax.jit, list it in static_argnums); "
      f"the arguments are {_CV_ARGS}."
    )
  if estimate_cv_coeffs:
    coeffs = estimate_control_variate_coefficients(
      function,
      control_variate_from_function,
      grad_estimator,
      params,
      dist_builder,
      rng,
      estimate_cv_coeffs_num_samples,
      control_variate_state,
    )
  else:
    coeffs = [jnp.asarray(1.0)] * len(params)

  if not isinstance(use_updated_state, bool):
    raise TypeError(f"`use_updated_state` must be a bool; got {use_updated_state!r}.")
  function_jacobians = grad_estimator(function, params, dist_builder, rng, num_samples)
  samples = _draw(_build(dist_builder, params), rng, (num_samples,))
  new_state = update_state_cv(params, samples, control_variate_state)
  state = new_state if use_updated_state else control_variate_state

  frozen = jax.lax.stop_gradient(params)

  def cv_of_sample(x):
    return stochastic_cv(frozen, x, state)

  cv_jacobians = grad_estimator(cv_of_sample, params, dist_builder, rng, num_samples)
  held = jax.lax.stop_gradient(samples)
  cv_param_grads = jax.grad(
    lambda p: jnp.mean(jax.vmap(lambda x: stochastic_cv(p, x, state))(held))
  )(params)
  expected_grads = jax.grad(lambda p: expected_value_cv(p, state))(params)

  jacobians = []
  for k, param in enumerate(jax.tree_util.tree_leaves(params)):
    j = function_jacobians[k] - coeffs[k] * cv_jacobians[k]
    j = j - coeffs[k] * cv_param_grads[k] + coeffs[k] * expected_grads[k]
    jacobians.append(jnp.broadcast_to(j, (num_samples,) + jnp.shape(param)))
  return jacobians, new_state


def estimate_control_variate_coefficients(
  function: Callable[[jax.Array], float],
  control_variate_from_function: Callable[[Callable], ControlVariate],
  grad_estimator: Callable[..., Sequence[jax.Array]],
  params: Sequence[jax.Array],
  dist_builder: Callable[..., Any],
  rng: jax.Array,
  num_samples: int,
  control_variate_state: CvState = None,
  eps: float = 1e-3,
) -> Sequence[jax.Array]:
  r"""Variance-minimising control-variate coefficients, as optax 0.1.8.

  For parameter k, with J_f and J_h the per-sample jacobians of f and h from
  ``grad_estimator`` on new samples (key ``split(rng)[0]``, independent of
  the samples drawn with ``rng``):

      β_k = Σ_coords Cov(J_f, J_h) / (Σ_coords Var(J_h) + eps),

  with population (1/n) covariances and variances over the samples, and
  stop_gradient applied. The control variate's state is not updated.

  Returns:
    A list of scalars, one per parameter.
  """
  _check_function(function, params, order=_CV_ARGS)
  _check_params(params, dist_builder, order=_CV_ARGS)
  rng, num_samples = _check_rng_and_num_samples(rng, num_samples, order=_CV_ARGS)
  cv_rng, _ = jax.random.split(rng)
  stochastic_cv, _, _ = _check_control_variate(
    control_variate_from_function, grad_estimator, function, params, dist_builder
  )
  cv_jacobians = grad_estimator(
    lambda x: stochastic_cv(params, x, control_variate_state),
    params,
    dist_builder,
    cv_rng,
    num_samples,
  )
  function_jacobians = grad_estimator(function, params, dist_builder, cv_rng, num_samples)

  def coefficient(cv_jac, f_jac):
    n = f_jac.shape[0]
    a = f_jac.reshape(n, -1)
    b = cv_jac.reshape(n, -1)
    cov = jnp.mean((a - a.mean(0)) * (b - b.mean(0)), axis=0)
    return jax.lax.stop_gradient(jnp.sum(cov) / (jnp.sum(jnp.var(b, axis=0)) + eps))

  return [coefficient(cv_jacobians[k], function_jacobians[k]) for k in range(len(params))]
