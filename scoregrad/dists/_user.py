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
  ``log_prob`` accepts one sample or a batch (leading dimensions), inferring
  the event shape from ``sample_fn``.
  """

  def __init__(self, log_prob_fn, sample_fn, params, reparameterized: bool):
    self._log_prob_fn = log_prob_fn
    self._sample_fn = sample_fn
    self.params = params
    self.reparameterized = reparameterized

  def _event_ndims(self) -> int:
    out = jax.eval_shape(self._sample_fn, self.params, jax.random.key(0))
    return len(out.shape)

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
      return xs[0]
    return xs.reshape(sample_shape + xs.shape[1:])

  def log_prob(self, x):
    x = jnp.asarray(x)
    batch_ndims = x.ndim - self._event_ndims()
    fn = lambda xi: jnp.asarray(self._log_prob_fn(self.params, xi))
    for _ in range(batch_ndims):
      fn = jax.vmap(fn)
    out = fn(x)
    if out.shape != x.shape[:batch_ndims]:
      raise ValueError(
          "`log_prob_fn(params, x)` must return a scalar log-density for one "
          f"sample x; for x of shape {x.shape[batch_ndims:]} it returned shape "
          f"{out.shape[batch_ndims:]}. Sum over the event, e.g. return "
          "jnp.sum(elementwise_log_probs).")
    return out


jax.tree_util.register_pytree_node(
    UserDistribution,
    lambda d: ((d.params,), (d._log_prob_fn, d._sample_fn, d.reparameterized)),
    lambda aux, children: UserDistribution(aux[0], aux[1], children[0], aux[2]))


def from_log_prob(
    log_prob_fn: Callable[[Any, jax.Array], jax.Array],
    sample_fn: Callable[[Any, jax.Array], jax.Array],
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
    sample_fn: ``sample_fn(params, key) -> x``, one sample.
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
