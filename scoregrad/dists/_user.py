"""Distributions from a user-supplied log-density and sampler."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from scoregrad._src.validation import check_callable

__all__ = ("UserDistribution", "from_log_prob")


class UserDistribution:
  """A distribution defined by ``log_prob_fn(params, x)`` and ``sample_fn(params, key)``.

  Built by :func:`from_log_prob`; a pytree whose only leaves are ``params``.
  A sample may be one array or a pytree of arrays (a dict, a tuple, ...), as
  ``sample_fn`` returns it. ``sample(key, sample_shape)`` puts
  ``sample_shape`` in front of every leaf; ``log_prob`` accepts one sample or
  a batch (the same leading dimensions on every leaf), inferring each leaf's
  event shape from ``sample_fn``.
  """

  def __init__(self, log_prob_fn, sample_fn, params, reparameterized: bool):
    self._log_prob_fn = log_prob_fn
    self._sample_fn = sample_fn
    self.params = params
    self.reparameterized = reparameterized

  def _one_sample(self):
    """The shapes and dtypes of one sample (a pytree of ``ShapeDtypeStruct``)."""
    return jax.eval_shape(self._sample_fn, self.params, jax.random.key(0))

  def sample(self, key, sample_shape=()):
    if isinstance(sample_shape, int):
      sample_shape = (sample_shape,)
    sample_shape = tuple(sample_shape)
    num = 1
    for s in sample_shape:
      num *= s
    keys = jax.random.split(key, num)
    draw = lambda k: self._sample_fn(self.params, k)
    if not self.reparameterized:
      draw = lambda k: self._sample_fn(jax.lax.stop_gradient(self.params), k)
    xs = jax.vmap(draw)(keys)
    if not sample_shape:
      return jax.tree_util.tree_map(lambda a: a[0], xs)
    return jax.tree_util.tree_map(lambda a: a.reshape(sample_shape + a.shape[1:]), xs)

  def log_prob(self, x):
    one = self._one_sample()
    one_leaves, one_tree = jax.tree_util.tree_flatten(one)
    if jax.tree_util.treedef_is_leaf(one_tree):  # one array: x may be any array-like
      x_leaves, x_tree = [x], one_tree
    else:
      x_leaves, x_tree = jax.tree_util.tree_flatten(x)
    if x_tree != one_tree:
      raise ValueError(
        "`log_prob(x)` of a scoregrad.dists.from_log_prob distribution needs x "
        f"structured like the samples of `sample_fn(params, key)`, {one_tree}; got "
        f"{x_tree}. Pass samples from this distribution's `sample` (a batch puts "
        "the same leading dimensions on every leaf)."
      )
    x_leaves = [jnp.asarray(leaf) for leaf in x_leaves]
    batch_ndims = {leaf.ndim - len(o.shape) for leaf, o in zip(x_leaves, one_leaves)}
    batch_shapes = {leaf.shape[: leaf.ndim - len(o.shape)] for leaf, o in zip(x_leaves, one_leaves)}
    if len(batch_shapes) > 1 or any(n < 0 for n in batch_ndims):
      shown = jax.tree_util.tree_unflatten(x_tree, [leaf.shape for leaf in x_leaves])
      events = jax.tree_util.tree_unflatten(one_tree, [o.shape for o in one_leaves])
      raise ValueError(
        "`log_prob(x)` of a scoregrad.dists.from_log_prob distribution needs the "
        "same leading (batch) dimensions on every leaf of x, followed by the "
        f"leaf's event shape {events} (from `sample_fn`); got leaves of shapes "
        f"{shown}."
      )
    batch_shape = batch_shapes.pop() if batch_shapes else ()
    x = jax.tree_util.tree_unflatten(x_tree, x_leaves)
    fn = lambda xi: jnp.asarray(self._log_prob_fn(self.params, xi))
    for _ in range(len(batch_shape)):
      fn = jax.vmap(fn)
    out = fn(x)
    if out.shape != batch_shape:
      event = jax.tree_util.tree_unflatten(
        x_tree, [leaf.shape[len(batch_shape) :] for leaf in x_leaves]
      )
      raise ValueError(
        "`log_prob_fn(params, x)` must return a scalar log-density for one "
        f"sample x; for x of shape {event} it returned shape "
        f"{out.shape[len(batch_shape) :]}. Sum over the event, e.g. return "
        "jnp.sum(elementwise_log_probs)."
      )
    return out


jax.tree_util.register_pytree_node(
  UserDistribution,
  lambda d: ((d.params,), (d._log_prob_fn, d._sample_fn, d.reparameterized)),
  lambda aux, children: UserDistribution(aux[0], aux[1], children[0], aux[2]),
)


def from_log_prob(
  log_prob_fn: Callable[[Any, Any], jax.Array],
  sample_fn: Callable[[Any, jax.Array], Any],
  *,
  reparameterized: bool = False,
) -> Callable[[Any], UserDistribution]:
  """Turns a log-density and a sampler into a family ``params -> distribution``.

  The score-function estimator needs only ∇θ log p(x; θ), which ``jax.grad``
  takes of ``log_prob_fn``; ``sample_fn`` need not be differentiable (its output
  is held constant), so it may be any sampler — rejection, MCMC, a simulator.

  Args:
    log_prob_fn: ``log_prob_fn(params, x) -> scalar``, the log-density (or mass)
      of ONE sample ``x``, differentiable in ``params``; an unnormalised density
      is wrong unless its normaliser is free of ``params``.
    sample_fn: ``sample_fn(params, key) -> x``, one sample: an array, or a
      pytree of arrays (e.g. ``{"x": ..., "b": ...}`` or a tuple) for a joint
      distribution; f and ``log_prob_fn`` then receive that same pytree.
    reparameterized: set ``True`` only if ``sample_fn`` is a differentiable
      function of ``params`` (enables ``pathwise``); default ``False``.

  Returns:
    ``dist_fn(params) -> distribution``, to pass as ``dist_fn`` to any estimator.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> def log_prob(theta, x):  # exponential distribution with rate exp(theta)
    ...   return theta - jnp.exp(theta) * x
    >>> def sample(theta, key):
    ...   return jax.random.exponential(key) / jnp.exp(theta)
    >>> family = sg.dists.from_log_prob(log_prob, sample)
    >>> est = sg.score_function(num_samples=100)
    >>> out = est.estimate(jax.random.key(0), lambda x: x, family, 0.0, est.init(0.0))
  """
  check_callable("log_prob_fn", log_prob_fn, "log_prob_fn(params, x) -> scalar")
  check_callable("sample_fn", sample_fn, "sample_fn(params, key) -> x")
  if not isinstance(reparameterized, bool):
    raise TypeError(f"`reparameterized` must be a bool; got {reparameterized!r}.")

  def dist_fn(params):
    return UserDistribution(log_prob_fn, sample_fn, params, reparameterized)

  dist_fn.__name__ = f"from_log_prob({getattr(log_prob_fn, '__name__', 'log_prob_fn')})"
  return dist_fn
