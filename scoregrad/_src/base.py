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

from scoregrad import dists as _dists
from scoregrad._src.validation import check_callable
from scoregrad._src.validation import check_key

PyTree = Any
Cost = Callable[[Any], jax.Array]
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
  """

  value: jax.Array
  grad: PyTree
  state: PyTree
  per_sample: Optional[PyTree] = None


class InitFn(Protocol):
  """``init(params) -> state``: the estimator's initial state for ``params``."""

  def __call__(self, params: PyTree) -> PyTree:
    ...


class EstimateFn(Protocol):
  """``estimate(key, f, dist_fn, params, state) -> Estimate``.

  ``key`` is a PRNG key; ``f(x)`` the scalar cost of ONE sample (vmapped
  inside); ``dist_fn(params)`` returns a distribution; ``state`` is what
  ``init`` (or the previous ``Estimate.state``) returned.
  """

  def __call__(self, key: jax.Array, f: Cost, dist_fn: DistFn, params: PyTree,
               state: PyTree) -> "Estimate":
    ...


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
        "return a distribution.")
    raise
  return _dists.as_distribution(dist, name="dist_fn(params)")


def check_cost(f: Callable, example: Any, *, where: str = "", floating: bool = False) -> None:
  """THE cost check: ``f(example)`` must be a scalar (and a float if ``floating``).

  Checked on shapes and dtypes only (``jax.eval_shape``), so it costs nothing
  and works under ``jit``. ``example`` is one sample (arrays or
  ``ShapeDtypeStruct``s, any pytree). ``where`` says, for the message, how
  the estimator calls f. ``floating`` is for estimators that differentiate f.
  """
  check_callable("f", f, "f(x) -> scalar cost of one sample")
  out = jax.eval_shape(f, example)
  shape = getattr(out, "shape", None)
  context = f" ({where})" if where else ""
  if shape != ():
    raise ValueError(
        f"The cost `f(x)` must return a scalar for one sample x{context}; it "
        f"returned {shape if shape is not None else type(out).__name__}"
        f"{' with dtype ' + str(out.dtype) if shape is not None else ''}. Reduce it "
        "to a scalar, e.g. `lambda x: jnp.sum(cost(x))`.")
  if floating and not jnp.issubdtype(out.dtype, jnp.floating):
    raise TypeError(
        f"The cost `f(x)` must return a floating-point scalar{context}, because "
        f"it is differentiated; it returned dtype {out.dtype}. Cast it, e.g. "
        "`lambda x: jnp.asarray(cost(x), jnp.float32)`.")


def one_sample(samples: PyTree) -> PyTree:
  """The shape of one sample of a batch with a leading sample axis (for ``check_cost``)."""
  return jax.tree_util.tree_map(
      lambda s: jax.ShapeDtypeStruct(jnp.shape(s)[1:], jnp.result_type(s)), samples)


def evaluate_costs(f: Callable, samples: PyTree, num_samples: Optional[int] = None,
                   *, dtype=None, where: str = "") -> jax.Array:
  """``vmap(f)`` over samples with a leading axis, after :func:`check_cost`.

  Non-float costs (e.g. a bool ``x > 0`` under the score function, which does
  not differentiate f) are cast to ``dtype`` (default: JAX's default float).
  """
  del num_samples  # The leading axis of `samples` is the sample axis.
  check_cost(f, one_sample(samples), where=where or "it is vmapped over the samples")
  costs = jnp.asarray(jax.vmap(f)(samples))
  if dtype is not None:
    return costs.astype(dtype)
  if not jnp.issubdtype(costs.dtype, jnp.floating):
    costs = costs.astype(jnp.result_type(float))
  return costs


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
          "integer constants inside `dist_fn`.")
