"""Gamma distribution (shape/rate parameterisation)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from scoregrad.dists._base import Distribution, _as_float_array


@dataclasses.dataclass(frozen=True, init=False)
class Gamma(Distribution):
  """Independent Gamma(concentration α, rate β) variables, mean α/β.

  Reparameterized: ``jax.random.gamma`` differentiates its samples with respect
  to α by implicit reparameterization (Figurnov et al. 2018), and x = g / β
  with g ~ Gamma(α, 1) carries the rate.
  """

  concentration: jax.Array
  rate: jax.Array
  reparameterized = True

  def __init__(self, concentration, rate):
    concentration = _as_float_array("concentration", concentration)
    rate = _as_float_array("rate", rate)
    dtype = jnp.result_type(concentration, rate)
    object.__setattr__(self, "concentration", concentration.astype(dtype))
    object.__setattr__(self, "rate", rate.astype(dtype))

  @property
  def event_shape(self):
    return jnp.broadcast_shapes(jnp.shape(self.concentration), jnp.shape(self.rate))

  def _sample(self, key, shape):
    alpha = jnp.broadcast_to(self.concentration, shape)
    return jax.random.gamma(key, alpha, shape, dtype=self.dtype) / self.rate

  def log_prob(self, x):
    a, b = self.concentration, self.rate
    x = jnp.asarray(x, self.dtype)
    lp = a * jnp.log(b) + (a - 1) * jnp.log(x) - b * x - jax.scipy.special.gammaln(a)
    return self._sum_event(jnp.broadcast_to(lp, jnp.broadcast_shapes(lp.shape, self.event_shape)))
