"""Bernoulli distribution parameterised by logits."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from scoregrad.dists._base import Distribution, _as_float_array


@dataclasses.dataclass(frozen=True, init=False)
class Bernoulli(Distribution):
  """Independent Bernoulli variables with P(x = 1) = sigmoid(logits).

  Samples are floats in {0., 1.} (same dtype as ``logits``) so costs can use
  them directly. Not reparameterized: ``jax.grad`` through
  ``jax.random.bernoulli`` is silently zero, which is why ``pathwise`` refuses
  this distribution.
  """

  logits: jax.Array
  reparameterized = False

  def __init__(self, logits):
    object.__setattr__(self, "logits", _as_float_array("logits", logits))

  @property
  def probs(self) -> jax.Array:
    return jax.nn.sigmoid(self.logits)

  @property
  def event_shape(self):
    return jnp.shape(self.logits)

  def _sample(self, key, shape):
    u = jax.random.uniform(key, shape, dtype=self.logits.dtype)
    return (u < jax.lax.stop_gradient(self.probs)).astype(self.logits.dtype)

  def log_prob(self, x):
    x = jnp.asarray(x, self.logits.dtype)
    # x log σ(l) + (1 - x) log σ(-l) = x l - softplus(l)
    lp = x * self.logits - jax.nn.softplus(self.logits)
    return self._sum_event(lp)
