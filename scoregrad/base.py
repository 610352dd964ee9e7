"""Core types: ``GradientEstimator`` and ``Estimate``, and shared plumbing."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from scoregrad import dists as _dists
from scoregrad._validation import check_callable
from scoregrad._validation import check_key

PyTree = Any


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


class GradientEstimator(NamedTuple):
  """A gradient estimator as a pair of pure functions (like optax's transforms).

  Attributes:
    init: ``init(params) -> state``.
    estimate: ``estimate(key, f, dist_fn, params, state) -> Estimate`` where
      ``f(x) -> scalar`` is the cost of ONE sample and ``dist_fn(params)``
      returns a distribution.
  """

  init: Callable[[PyTree], PyTree]
  estimate: Callable[..., Estimate]


class EmptyState(NamedTuple):
  """State of an estimator that keeps none."""


def stateless_init(params: PyTree) -> EmptyState:
  """``init`` of an estimator that keeps no state."""
  del params
  return EmptyState()


def call_dist_fn(dist_fn: Callable, params: PyTree):
  """Calls ``dist_fn(params)`` and returns a protocol distribution, with a clear error."""
  try:
    dist = dist_fn(params)
  except Exception as e:  # Re-raised with the context users need.
    structure = jax.tree_util.tree_structure(params)
    shapes = jax.tree_util.tree_map(lambda p: getattr(p, "shape", type(p).__name__), params)
    raise type(e)(
        f"`dist_fn(params)` raised {type(e).__name__}: {e}\n"
        f"`params` has structure {structure} with shapes {shapes}. `dist_fn` "
        "must accept exactly the `params` pytree passed to `estimate` (the same "
        "structure given to `init`) and return a distribution.") from e
  return _dists.as_distribution(dist, name="dist_fn(params)")


def evaluate_costs(f: Callable, samples: PyTree, num_samples: int) -> jax.Array:
  """``vmap(f)`` over samples, checking that ``f`` returns a scalar per sample."""
  check_callable("f", f, "f(x) -> scalar cost of one sample")
  costs = jax.vmap(f)(samples)
  if not hasattr(costs, "shape") or jnp.shape(costs) != (num_samples,):
    one = jax.eval_shape(f, jax.tree_util.tree_map(lambda s: s[0], samples))
    raise ValueError(
        "The cost `f(x)` must return a scalar for one sample x (it is vmapped "
        f"over the {num_samples} samples inside the estimator); it returned "
        f"{getattr(one, 'shape', type(one).__name__)} with dtype "
        f"{getattr(one, 'dtype', '?')}. Reduce it to a scalar, e.g. "
        "`lambda x: jnp.sum(cost(x))`.")
  costs = jnp.asarray(costs)
  if not jnp.issubdtype(costs.dtype, jnp.floating):
    costs = costs.astype(jnp.result_type(float))
  return costs


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
