"""Core types: ``GradientEstimator``, ``Estimate``, their protocols, and shared plumbing.

Every estimator factory in scoregrad returns a :class:`GradientEstimator`, a
NamedTuple of two pure functions, typed by the :class:`InitFn` and
:class:`EstimateFn` protocols (as optax types ``GradientTransformation`` by
``TransformInitFn``/``TransformUpdateFn``). The helpers below are the ONE place
for each rule that every estimator applies: calling ``dist_fn``, checking and
evaluating the cost, checking the inputs of ``estimate``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional, Protocol

import jax
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
import jax.numpy as jnp
from jax.typing import ArrayLike

from scoregrad import dists as _dists
from scoregrad._src import smoothness as _smoothness
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
  """

  value: jax.Array
  grad: PyTree
  state: PyTree
  per_sample: Optional[PyTree] = None
  moments: Optional[GradientMoments] = None


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
  if per_sample is not None:
    per_sample = jax.tree_util.tree_map(poison, per_sample)
  return Estimate(value, grad, state, per_sample)


# -- THE derivative-order rule -------------------------------------------------
#
# Every derivative of an estimate, of any order, is either unbiased or refused
# with a clear error. Estimators whose gradient is assembled from
# stop-gradient pieces (measure-valued, the discrete estimators, per-coordinate
# baselines) mark it with `first_order_only`; their `.value` gets
# `gradient_carrier`, whose first derivative is the estimator's gradient and
# whose second derivative is refused the same way.
#
# How: the marked gradient's tangent is the output of `_refuse_p`, a
# primitive that raises when it is transposed (reverse mode), differentiated,
# evaluated or compiled. JAX transposes and compiles only what an output
# needs, so `jax.grad(.value)` never touches it, while any derivative of
# `.grad` raises at trace or compile time. (Eager, un-jitted forward mode
# evaluates every tangent op by op, used or not: there `jax.jacfwd` of
# `.value` is refused too; under `jax.jit`, or with `jax.grad`, it works.)


def _refuse(*_, message, **__):
  raise NotImplementedError(message)


_refuse_p = Primitive("scoregrad_first_order_only")
_refuse_p.def_impl(lambda t, *, message: _refuse(message=message))
_refuse_p.def_abstract_eval(lambda t, *, message: t)
mlir.register_lowering(_refuse_p, lambda ctx, t, *, message: _refuse(message=message))
ad.primitive_jvps[_refuse_p] = lambda primals, tangents, *, message: _refuse(message=message)
ad.primitive_transposes[_refuse_p] = lambda ct, t, *, message: _refuse(message=message)
batching.primitive_batchers[_refuse_p] = lambda args, dims, *, message: (
  _refuse_p.bind(args[0], message=message),
  dims[0],
)


def _is_zero(t) -> bool:
  return isinstance(t, SymbolicZero)


def _live_leaves(tree):
  return [t for t in jax.tree_util.tree_leaves(tree, is_leaf=_is_zero) if not _is_zero(t)]


def higher_order_message(estimator: str) -> str:
  return (
    f"{estimator} estimates first derivatives only: its gradient is assembled "
    "from pieces that do not carry their own derivatives, so differentiating "
    "it again (jax.hessian, jax.jacfwd/jacrev or jax.grad of `.grad`, or a "
    "second derivative of `.value`) would be silently wrong, and scoregrad "
    "refuses. For derivatives of any order use "
    "scoregrad.score_function(num_samples=...) with no baseline or "
    "baselines.leave_one_out() (DiCE: unbiased at every order), "
    "scoregrad.pathwise(num_samples=...) for reparameterized families, or "
    "scoregrad.expectation(...). (If this was a first derivative of `.value` "
    "in eager jax.jacfwd, use jax.grad or jax.jit instead.)"
  )


# The primal of `_first_order_only` is `x` passed through `_guard_p`, which
# evaluates to `x` and raises when differentiated in its `anchor` operands.
# JAX's partial evaluation of `lax.scan`/`fori_loop` bodies (a derivative
# taken outside a loop whose body holds an estimate) inlines a custom JVP's
# primal for known inputs, dropping the rule; a plain `return x` would then
# make a second derivative through the loop a silent zero. The guard makes
# it the same clear error as everywhere else.


def _guard_jvp(primals, tangents, *, message):
  if any(type(t) is not ad.Zero for t in tangents[1:]):
    _refuse(message=message)
  return _guard_p.bind(*primals, message=message), ad.instantiate_zeros(tangents[0])


_guard_p = Primitive("scoregrad_first_order_guard")
_guard_p.def_impl(lambda x, *anchor, message: x)
_guard_p.def_abstract_eval(lambda x, *anchor, message: x)
mlir.register_lowering(_guard_p, lambda ctx, x, *anchor, message: [x])
ad.primitive_jvps[_guard_p] = _guard_jvp
batching.primitive_batchers[_guard_p] = lambda args, dims, *, message: (
  _guard_p.bind(*args, message=message),
  dims[0],
)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _first_order_only(message, x, anchor):
  anchors = [
    a for a in jax.tree_util.tree_leaves(anchor) if jnp.issubdtype(jnp.result_type(a), jnp.inexact)
  ]
  return jax.tree_util.tree_map(lambda p: _guard_p.bind(p, *anchors, message=message), x)


def _first_order_only_jvp(message, primals, tangents):
  x, _ = primals
  dx, danchor = tangents
  live = _live_leaves(danchor)
  if not live:  # differentiated in something else (e.g. REBAR's control): pass through
    return x, jax.tree_util.tree_map(
      lambda t, p: jnp.zeros_like(p) if _is_zero(t) else t, dx, x, is_leaf=_is_zero
    )
  # A tangent that depends on the anchor's tangent and refuses to be used.
  seed = sum(jnp.sum(t).real.astype(jnp.float32) for t in live) * 0.0
  return x, jax.tree_util.tree_map(
    lambda p: _refuse_p.bind(jnp.zeros_like(p) + seed.astype(p.dtype), message=message), x
  )


_first_order_only.defjvp(_first_order_only_jvp, symbolic_zeros=True)


def first_order_only(x: PyTree, anchor: PyTree, estimator: str) -> PyTree:
  """``x`` unchanged; using a derivative of it with respect to ``anchor`` raises.

  ``anchor`` holds what the estimate depends on (the distribution's
  parameters as functions of ``params``, the raw costs): a derivative of
  ``x`` that reaches it raises ``NotImplementedError``, naming ``estimator``
  and the alternatives.
  """
  return _first_order_only(higher_order_message(estimator), x, anchor)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _carrier(message, anchor, cotangent):
  del anchor, cotangent
  return jnp.zeros(())


def _carrier_jvp(message, primals, tangents):
  anchor, cotangent = primals
  danchor, _ = tangents
  cotangent = _first_order_only(message, cotangent, anchor)
  out = jnp.zeros(())
  leaves = jax.tree_util.tree_leaves(danchor, is_leaf=_is_zero)
  for d, c in zip(leaves, jax.tree_util.tree_leaves(cotangent)):
    if not _is_zero(d):
      out = out + jnp.vdot(d, c.astype(d.dtype)).real.astype(out.dtype)
  return jnp.zeros(()), out


_carrier.defjvp(_carrier_jvp, symbolic_zeros=True)


def gradient_carrier(anchor: PyTree, cotangent: PyTree, estimator: str, dtype=None) -> jax.Array:
  """A zero whose derivative is ⟨d anchor, cotangent⟩ (and whose second derivative raises).

  Added to ``Estimate.value`` by estimators whose samples do not depend
  differentiably on ``params``, so that ``jax.grad`` of ``.value`` is the
  estimator's own gradient (as DiCE makes it for the score function) and
  never a silent zero: the chain rule through ``anchor = η(params)`` and the
  estimator's per-η gradient ``cotangent`` give exactly ``Estimate.grad``.
  """
  out = _carrier(higher_order_message(estimator), anchor, jax.lax.stop_gradient(cotangent))
  return out if dtype is None else out.astype(dtype)


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
