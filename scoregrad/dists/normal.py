"""Normal distribution (diagonal, all dimensions in the event)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from scoregrad.dists._base import Distribution, _as_float_array


@dataclasses.dataclass(frozen=True, init=False)
class Normal(Distribution):
  """Independent Gaussians N(loc, scale²), reparameterized as loc + scale·ε.

  ``log_prob`` sums over all dimensions of ``broadcast(loc, scale)``.

  Example:
    >>> import jax, scoregrad as sg
    >>> sg.dists.Normal(0.0, 1.0).sample(jax.random.key(0), (3,)).shape
    (3,)
  """

  loc: jax.Array
  scale: jax.Array
  reparameterized = True

  def __init__(self, loc, scale):
    loc = _as_float_array("loc", loc)
    scale = _as_float_array("scale", scale)
    dtype = jnp.result_type(loc, scale)
    object.__setattr__(self, "loc", loc.astype(dtype))
    object.__setattr__(self, "scale", scale.astype(dtype))

  @property
  def event_shape(self):
    return jnp.broadcast_shapes(jnp.shape(self.loc), jnp.shape(self.scale))

  def _sample(self, key, shape):
    eps = jax.random.normal(key, shape, dtype=self.dtype)
    return self.loc + self.scale * eps

  def log_prob(self, x):
    z = (x - self.loc) / self.scale
    lp = -0.5 * z**2 - jnp.log(self.scale) - 0.5 * math.log(2 * math.pi)
    return self._sum_event(jnp.broadcast_to(lp, jnp.broadcast_shapes(lp.shape, self.event_shape)))
