"""Poisson distribution."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from scoregrad.dists._base import Distribution, _as_float_array


@dataclasses.dataclass(frozen=True, init=False)
class Poisson(Distribution):
  """Independent Poisson counts with mean ``rate``; samples are floats (counts).

  log p(x) = x log λ − λ − log x!. Not reparameterized.
  """

  rate: jax.Array
  reparameterized = False

  def __init__(self, rate):
    object.__setattr__(self, "rate", _as_float_array("rate", rate))

  @property
  def event_shape(self):
    return jnp.shape(self.rate)

  def _sample(self, key, shape):
    rate = jax.lax.stop_gradient(self.rate)
    return jax.random.poisson(key, rate, shape).astype(self.rate.dtype)

  def log_prob(self, x):
    x = jnp.asarray(x, self.rate.dtype)
    lp = x * jnp.log(self.rate) - self.rate - jax.scipy.special.gammaln(x + 1)
    return self._sum_event(lp)
