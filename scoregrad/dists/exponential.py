"""Exponential distribution (rate parameterisation)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from scoregrad.dists._base import Distribution, _as_float_array


@dataclasses.dataclass(frozen=True, init=False)
class Exponential(Distribution):
  """Independent Exponential(rate λ) variables: density λ e^{−λx} on x ≥ 0, mean 1/λ.

  Reparameterized as x = e / λ with e ~ Exponential(1), so ``pathwise``
  applies; ``measure_valued`` uses the decomposition
  ∂λ p = (1/λ)(Exponential(λ) − Gamma(2, λ)). ``log_prob`` is −inf for x < 0.

  Example:
    >>> import jax, scoregrad as sg
    >>> sg.dists.Exponential(2.0).sample(jax.random.key(0), (3,)).shape
    (3,)
  """

  rate: jax.Array
  reparameterized = True

  def __init__(self, rate):
    object.__setattr__(self, "rate", _as_float_array("rate", rate))

  @property
  def event_shape(self):
    return jnp.shape(self.rate)

  def _sample(self, key, shape):
    return jax.random.exponential(key, shape, dtype=self.rate.dtype) / self.rate

  def log_prob(self, x):
    x = jnp.asarray(x, self.rate.dtype)
    lp = jnp.log(self.rate) - self.rate * x
    lp = jnp.where(x >= 0, lp, -jnp.inf)
    return self._sum_event(lp)
