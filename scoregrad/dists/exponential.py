"""Exponential distribution (rate parameterisation)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from scoregrad.dists._base import (
  Distribution,
  _as_float_array,
  foreign_full_shape,
  foreign_parameter,
)
from scoregrad.dists._weak import flat_params, replace_eval

__all__ = ("Exponential",)


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
  positive = ("rate",)

  foreign_names = ("Exponential",)

  @classmethod
  def from_foreign(cls, dist):
    """A NumPyro/distrax/TFP Exponential as this family (None if it cannot be)."""
    shape = foreign_full_shape(dist)
    rate = foreign_parameter(dist, "rate")
    if shape is None or rate is None or tuple(dist.event_shape):
      return None
    return cls(jnp.broadcast_to(rate, shape))

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

  # -- family facts (see scoregrad.dists._base) ------------------------------

  def mean(self):
    return 1.0 / self.rate

  def covariance(self):
    return jnp.diag(jnp.reshape(1.0 / self.rate**2, (-1,)))

  weak_derivative_fixed = ()
  weak_derivative_description = "Exponential (rate)"

  def weak_derivative_params(self):
    return {"rate": self.rate}

  def weak_derivative(self, key, fn, base, fbase, active, coupling):
    """rate λ: c = 1/λ, p⁺ = Exponential(λ), p⁻ = Gamma(2, λ) (coupled: the base
    sample is the p⁺ draw and base + Exponential(λ) the p⁻ draw)."""
    if not active[0]:
      return [None]
    (rate,) = flat_params(self)
    event_shape = tuple(self.event_shape)
    n, dim = base.shape
    dtype = rate.dtype
    k_pos, k_neg = jax.random.split(key)
    if coupling:
      extra = jax.random.exponential(k_neg, (n, dim), dtype) / rate
      diff = fbase[:, None, :] - replace_eval(fn, base, base + extra, event_shape)
    else:
      x_pos = jax.random.exponential(k_pos, (n, dim), dtype) / rate
      x_neg = jax.random.gamma(k_neg, jnp.full((n, dim), 2.0, dtype), dtype=dtype) / rate
      diff = replace_eval(fn, base, x_pos, event_shape) - replace_eval(fn, base, x_neg, event_shape)
    return [diff / rate[None, :, None]]
