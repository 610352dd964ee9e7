"""Categorical distribution parameterised by logits."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from scoregrad.dists._base import Distribution, _as_float_array


@dataclasses.dataclass(frozen=True, init=False)
class Categorical(Distribution):
  """Independent categorical variables over the last axis of ``logits``.

  ``logits`` has shape ``event_shape + (K,)``; samples are int32 indices with
  shape ``sample_shape + event_shape``.
  """

  logits: jax.Array
  reparameterized = False

  def __init__(self, logits):
    logits = _as_float_array("logits", logits)
    if logits.ndim < 1:
      raise ValueError(
          "Categorical `logits` needs a last axis over the K categories; got a "
          f"scalar {logits!r}. Use shape (K,), e.g. logits=jnp.zeros(3).")
    object.__setattr__(self, "logits", logits)

  @property
  def probs(self) -> jax.Array:
    return jax.nn.softmax(self.logits, axis=-1)

  @property
  def num_categories(self) -> int:
    return self.logits.shape[-1]

  @property
  def event_shape(self):
    return jnp.shape(self.logits)[:-1]

  @property
  def dtype(self):
    return jnp.int32

  def _sample(self, key, shape):
    return jax.random.categorical(
        key, jax.lax.stop_gradient(self.logits), axis=-1, shape=shape).astype(jnp.int32)

  def log_prob(self, x):
    x = jnp.asarray(x)
    logp = jax.nn.log_softmax(self.logits, axis=-1)
    logp = jnp.broadcast_to(logp, x.shape + (self.num_categories,))
    lp = jnp.take_along_axis(logp, x[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return self._sum_event(lp)
