"""Core types: ``GradientEstimator``, ``Estimate``, their protocols, and shared plumbing.

Every estimator factory in scoregrad returns a :class:`GradientEstimator`, a
NamedTuple of two pure functions, typed by the :class:`InitFn` and
:class:`EstimateFn` protocols (as optax types ``GradientTransformation`` by
``TransformInitFn``/``TransformUpdateFn``). The helpers below are the ONE place
for each rule that every estimator applies: calling ``dist_fn``, checking and
evaluating the cost, checking the inputs of ``estimate``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Protocol

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from scoregrad import dists as _dists
from scoregrad._src import smoothness as _smoothness
from scoregrad._src.derivative_order import (  # noqa: F401  (re-exported: estimators import them from here)
  first_order_only,
  gradient_carrier,
  higher_order_message,
  unit_box,
)
from scoregrad._src.validation import NonFloatCostError, check_callable, check_key

PyTree = Any
Cost = Callable[[Any], ArrayLike]
DistFn = Callable[[PyTree], Any]


class Estimate(NamedTuple):
  """What an estimator returns.

  Attributes:
    value: Monte Carlo estimate of E[f(x)], a scalar.
    grad: estimate of ∇θ E[f(x)], with the structure of ``params``.
    state: the new estimator state (thread it into the next call).
    per_sample: when the estimator was built with ``per_sample=True``, a pytree
      like ``params`` whose leaves have a leading ``num_samples`` axis holding
      each sample's gradient estimate (their mean is ``grad``); else ``None``.
    moments: when the estimator was built with ``moments=True``, the
      :class:`GradientMoments` of those per-sample gradients, streamed
      without materialising them (``scoregrad.diagnostics.variance``,
      ``snr``, ``total_variance`` accept it); else ``None``.
    per_sample_values: with ``per_sample=True``, each row's contribution to
      ``value`` (the costs f(x_i); for ARM/DisARM the pair means), shape
      ``(rows,)``, whose mean is ``value``; else ``None``.
    value_moments: with ``moments=True``, the :class:`GradientMoments` of
      ``per_sample_values`` (streamed across chunks), so that
      ``scoregrad.diagnostics.standard_error(out.value_moments)`` is the Monte
      Carlo standard error of ``value``; else ``None``.
    samples: when the estimator was built with ``keep_samples=True``, the
      samples x_i of this estimate (a pytree with a leading sample axis, as
      ``dist.sample`` returns them; gradient-free); else ``None``.
    costs: with ``keep_samples=True``, their raw costs f(x_i), shape
      ``(num_samples,)`` (before any fitness shaping; gradient-free), so that
      ``samples[argmin(costs)]`` is the best point evaluated; else ``None``.
  """

  value: jax.Array
  grad: PyTree
  state: PyTree
  per_sample: Optional[PyTree] = None
  moments: Optional[GradientMoments] = None
  per_sample_values: Optional[jax.Array] = None
  value_moments: Optional[GradientMoments] = None
  samples: Optional[PyTree] = None
  costs: Optional[jax.Array] = None


class GradientMoments(NamedTuple):
  """Streamed moments of per-sample gradients (Welford/Chan), without the rows.

  Attributes:
    count: the number of per-sample gradients n (an int32 scalar).
    mean: their mean, a pytree like ``params`` (equal to ``Estimate.grad``
      up to float rounding).
    m2: the sum of squared deviations from that mean, per coordinate, a
      pytree like ``params``: the unbiased variance of one sample's gradient
      is ``m2 / (count - 1)``.
  """

  # A field named like tuple.count shadows that method on instances, by
  # design: Welford's n is called the count.
  count: jax.Array  # type: ignore[assignment]
  mean: PyTree
  m2: PyTree


class InitFn(Protocol):
  """``init(params) -> state``: the estimator's initial state for ``params``."""

  def __call__(self, params: PyTree) -> PyTree: ...


class EstimateFn(Protocol):
  """``estimate(key, f, dist_fn, params, state) -> Estimate``.

  ``key`` is a PRNG key; ``f(x)`` the scalar cost of ONE sample (vmapped
  inside); ``dist_fn(params)`` returns a distribution; ``state`` is what
  ``init`` (or the previous ``Estimate.state``) returned.
  """

  def __call__(
    self, key: jax.Array, f: Cost, dist_fn: DistFn, params: PyTree, state: PyTree
  ) -> Estimate: ...


class GradientEstimator(NamedTuple):
  """A gradient estimator as a pair of pure functions (like optax's transforms).

  Attributes:
    init: ``init(params) -> state`` (:class:`InitFn`).
    estimate: ``estimate(key, f, dist_fn, params, state) -> Estimate``
      (:class:`EstimateFn`), where ``f(x) -> scalar`` is the cost of ONE
      sample and ``dist_fn(params)`` returns a distribution.
  """

  init: InitFn
  estimate: EstimateFn


class Traits(NamedTuple):
  """What an estimator says about itself, so that layers can ask instead of guess.

  The estimator factories attach one to the estimators they return
  (:func:`describe`); :func:`scoregrad.chunked`, :func:`scoregrad.sharded`,
  :func:`scoregrad.with_moments` and :func:`scoregrad.with_control_variate`
  read it. An estimator without traits (a user's own ``GradientEstimator``)
  still works with the layers that need nothing from it, and is refused with
  a clear error by those that do.

  Attributes:
    name: how messages name the estimator, e.g. ``"score_function(num_samples=64)"``.
    num_samples: its sample count (pairs for ``disarm``).
    samples_name: the factory keyword that sets it (``"num_samples"``, ``"num_pairs"``).
    rebuild: ``rebuild(**settings)`` makes the same estimator with some factory
      settings replaced (``num_samples``, ``per_sample``, ``sharding``,
      ``baseline``); ``None`` if it cannot be rebuilt.
    per_sample: whether ``Estimate.per_sample`` is filled.
    sharding: the sharding of the sample axis it was built with.
    rows_coupled_by: ``None`` if each per-sample row depends on its own draw
      only; else what couples the rows (e.g. ``"baseline=leave_one_out()"``,
      ``"sampling='antithetic'"``), for messages.
    fit_rows: ``fit_rows()`` makes an estimator whose per-sample rows are
      independent on the same key (to fit a control-variate coefficient when
      the rows are coupled), or ``None``.
    chunk_plan: ``chunk_plan(chunk_size, rows) -> (build, total_costs)`` says how
      to stream it in chunks (see :func:`scoregrad.chunked`), raising a
      ``ValueError`` that names the setting when it cannot be; ``None``: not
      chunkable.
    chunk_size: set by :func:`scoregrad.chunked`.
    moments: set by :func:`scoregrad.with_moments`.
    shapes_costs: whether ``rebuild(fitness_shaping=...)`` is accepted
      (:func:`scoregrad.with_fitness_shaping` asks).
    fitness_shaping: the :class:`~scoregrad.shaping.FitnessShaping` it was
      built with, or ``None``.
  """

  name: str
  num_samples: int
  samples_name: str = "num_samples"
  rebuild: Optional[Callable[..., Any]] = None
  per_sample: bool = False
  sharding: Any = None
  rows_coupled_by: Optional[str] = None
  fit_rows: Optional[Callable[[], Any]] = None
  chunk_plan: Optional[Callable[..., Any]] = None
  chunk_size: Optional[int] = None
  moments: bool = False
  shapes_costs: bool = False
  fitness_shaping: Any = None


class _DescribedEstimator(GradientEstimator):
  """A :class:`GradientEstimator` that carries its :class:`Traits` (still a pair)."""

  traits: Traits

  def __repr__(self) -> str:
    traits = traits_of(self)
    return f"GradientEstimator({traits.name})" if traits else super().__repr__()

  def _replace(self, **changes) -> GradientEstimator:  # type: ignore[override]
    # New functions may not match the traits: the result is a plain pair.
    return GradientEstimator(**{**self._asdict(), **changes})


def describe(estimator: GradientEstimator, traits: Traits) -> GradientEstimator:
  """``estimator`` (the same pair of functions) carrying ``traits``."""
  out = _DescribedEstimator(estimator.init, estimator.estimate)
  out.traits = traits
  return out


def traits_of(estimator: Any) -> Optional[Traits]:
  """The :class:`Traits` an estimator carries, or ``None`` (e.g. a user's own)."""
  return getattr(estimator, "traits", None)


class EmptyState(NamedTuple):
  """State of an estimator that keeps none."""


def stateless_init(params: PyTree) -> EmptyState:
  """``init`` of an estimator that keeps no state."""
  del params
  return EmptyState()


def check_state(state: Any, expected: type, estimator: str) -> Any:
  """THE state check: ``state`` must be what ``estimator``'s ``init`` returns.

  Raises a TypeError naming the estimator and ``init`` (rather than an
  ``AttributeError`` deep inside) for ``()``, ``None``, or another
  estimator's state.
  """
  if not isinstance(state, expected):
    raise TypeError(
      f"`state` of {estimator} must be the {expected.__name__} returned by its "
      f"`init(params)` (or the previous Estimate.state); got {state!r} of type "
      f"{type(state).__name__}. Call `state = estimator.init(params)` once and "
      "thread `Estimate.state` into the next call."
    )
  return state


def state_like_params(state: PyTree, params: PyTree) -> PyTree:
  """THE state-dtype rule: floating leaves of an initial state take the params' dtype.

  So a ``lax.scan`` carry keeps one dtype whatever the default float (x64 on
  with float32 params, or bf16 params); non-float leaves (step counts) stay.
  """
  leaves = [
    l for l in jax.tree_util.tree_leaves(params) if jnp.issubdtype(jnp.result_type(l), jnp.floating)
  ]
  if not leaves:
    return state
  dtype = jnp.result_type(*leaves)
  return jax.tree_util.tree_map(
    lambda x: (
      jnp.asarray(x).astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x
    ),
    state,
  )


def call_dist_fn(dist_fn: Callable, params: PyTree):
  """Calls ``dist_fn(params)`` and returns a protocol distribution, with a clear error.

  An exception raised inside ``dist_fn`` propagates as itself (same type, so
  JAX's tracer errors stay tracer errors), with a note that shows the
  ``params`` it was called with.
  """
  try:
    dist = dist_fn(params)
  except Exception as e:
    structure = jax.tree_util.tree_structure(params)
    shapes = jax.tree_util.tree_map(lambda p: getattr(p, "shape", type(p).__name__), params)
    e.add_note(
      f"scoregrad: `dist_fn(params)` raised {type(e).__name__}, with `params` of structure "
      f"{structure} and shapes {shapes}. `dist_fn` must accept exactly the "
      "`params` pytree passed to `estimate` (the structure given to `init`) and "
      "return a distribution."
    )
    raise
  return _dists.as_distribution(dist, name="dist_fn(params)")


def check_cost(
  f: Callable,
  example: Any,
  *,
  where: str = "",
  floating: bool = False,
  smooth: Optional[bool] = None,
) -> Callable:
  """THE cost check: ``f(example)`` must be a scalar (and a float if ``floating``).

  Checked on shapes and dtypes only (``jax.eval_shape``, and with ``smooth``
  the jaxprs of f and its derivative), so it costs nothing at run time and
  works under ``jit``. ``example`` is one sample (arrays or
  ``ShapeDtypeStruct``s, any pytree). ``where`` says, for the message, how
  the estimator calls f. ``floating`` is for estimators that differentiate f.
  ``smooth`` (default: ``floating``) is for estimators whose unbiasedness
  rests on ∇x f (pathwise): f with a jump in x is refused with a
  :class:`~scoregrad._src.smoothness.DiscontinuousCostError`, and the
  returned cost is f guarded so that a second derivative through it raises
  when f is only C¹ (kinked: max, abs, relu); see
  :mod:`scoregrad._src.smoothness`.

  Returns:
    The cost to evaluate: ``f`` itself, or ``f`` guarded as above.
  """
  check_callable("f", f, "f(x) -> scalar cost of one sample")
  # Through a lambda: jax.eval_shape(f) jits f itself, which needs a weak
  # reference to it, and builtins and numpy functions (np.sum) have none.
  out = jax.eval_shape(lambda x: f(x), example)
  shape = getattr(out, "shape", None)
  context = f" ({where})" if where else ""
  if shape != ():
    raise ValueError(
      f"The cost `f(x)` must return a scalar for one sample x{context}; it "
      f"returned {shape if shape is not None else type(out).__name__}"
      f"{' with dtype ' + str(out.dtype) if shape is not None else ''}. Reduce it "
      "to a scalar, e.g. `lambda x: jnp.sum(cost(x))`."
    )
  if floating and not jnp.issubdtype(out.dtype, jnp.floating):
    raise NonFloatCostError(
      f"The cost `f(x)` must return a floating-point scalar{context}; it returned "
      f"dtype {out.dtype}, which has no derivative in x, so casting it to float "
      "would give a silent zero gradient. Use an estimator that does not "
      "differentiate f: scoregrad.score_function(num_samples=...) or "
      "scoregrad.measure_valued(num_samples=...), or for discrete variables "
      "scoregrad.disarm / scoregrad.rao_blackwell."
    )
  if floating if smooth is None else smooth:
    return _smoothness.check_cost_smoothness(f, example, where=where)
  return f


def one_sample(samples: PyTree) -> PyTree:
  """The shape of one sample of a batch with a leading sample axis (for ``check_cost``)."""
  return jax.tree_util.tree_map(
    lambda s: jax.ShapeDtypeStruct(jnp.shape(s)[1:], jnp.result_type(s)), samples
  )


def evaluate_costs(
  f: Callable,
  samples: PyTree,
  num_samples: Optional[int] = None,
  *,
  dtype=None,
  where: str = "",
  floating: bool = False,
) -> jax.Array:
  """``vmap(f)`` over samples with a leading axis, after :func:`check_cost`.

  Non-float costs (e.g. a bool ``x > 0`` under the score function, which does
  not differentiate f) are cast to ``dtype`` (default: JAX's default float).
  ``floating=True`` is for estimators that differentiate f through the
  samples (pathwise): the cost must be a float without jumps, and is guarded
  against second derivatives when only C¹ (see :func:`check_cost`).
  """
  del num_samples  # The leading axis of `samples` is the sample axis.
  f = check_cost(
    f, one_sample(samples), where=where or "it is vmapped over the samples", floating=floating
  )
  costs = jnp.asarray(jax.vmap(f)(samples))
  if dtype is not None:
    return costs.astype(dtype)
  if not jnp.issubdtype(costs.dtype, jnp.floating):
    costs = costs.astype(jnp.result_type(float))
  return costs


def finish(
  value: jax.Array,
  grad: PyTree,
  state: PyTree,
  per_sample: Optional[PyTree] = None,
  *,
  costs: Optional[jax.Array] = None,
  per_sample_values: Optional[jax.Array] = None,
) -> Estimate:
  """Builds every estimator's :class:`Estimate`, applying THE NaN rule.

  NaN rule: if the estimate of E[f] is NaN (some cost was NaN), the gradient
  and the per-sample rows are NaN too, in every estimator. Estimators whose
  value is not a mean of the costs pass ``costs`` so that a NaN cost makes
  the value NaN as well. Without it a
  pathwise or measure-valued estimate could pair a NaN value with a finite
  gradient (e.g. ∇ log x at a negative sample is a finite 1/x). Adding a
  stop-gradient 0 or NaN leaves finite gradients bit for bit unchanged.
  """
  nan = jnp.isnan(value)
  if costs is not None:  # for values that are not a mean of the costs (VIMCO's bound)
    nan = nan | jnp.any(jnp.isnan(costs))
    value = jnp.where(nan, jnp.asarray(jnp.nan, jnp.result_type(value)), value)
  nan = jax.lax.stop_gradient(nan)

  def poison(leaf):
    leaf = jnp.asarray(leaf)
    return leaf + jnp.where(nan, jnp.asarray(jnp.nan, leaf.dtype), jnp.zeros((), leaf.dtype))

  grad = jax.tree_util.tree_map(poison, grad)
  if per_sample is None:
    per_sample_values = None  # rows and their values come together
  else:
    per_sample = jax.tree_util.tree_map(poison, per_sample)
    if per_sample_values is not None:
      per_sample_values = jax.lax.stop_gradient(per_sample_values)
  return Estimate(value, grad, state, per_sample, per_sample_values=per_sample_values)


def expand_to(values: jax.Array, like: jax.Array) -> jax.Array:
  """Reshapes per-sample values (n,) to broadcast against ``like`` (n, *shape)."""
  return jnp.reshape(values, values.shape + (1,) * (jnp.ndim(like) - values.ndim))


def tree_mean0(tree: PyTree) -> PyTree:
  return jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), tree)


def check_estimate_inputs(key, f, dist_fn, params) -> jax.Array:
  """The checks every ``estimate(key, f, dist_fn, params, state)`` starts with.

  Returns the validated key; raises with the argument's name otherwise.
  """
  key = check_key(key)
  check_callable("f", f, "f(x) -> scalar cost of one sample")
  check_callable("dist_fn", dist_fn, "dist_fn(params) -> distribution")
  check_params_floating(params)
  return key


def check_params_floating(params: PyTree) -> None:
  for leaf in jax.tree_util.tree_leaves(params):
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.inexact):
      raise TypeError(
        f"Every leaf of `params` must be a floating-point array to be "
        f"differentiated; got a leaf with dtype {dtype} (value {leaf!r}). "
        "Use floats, e.g. jnp.asarray(x, jnp.float32), or close over "
        "integer constants inside `dist_fn`."
      )
