"""Gamma distribution (shape/rate parameterisation)."""

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

__all__ = ("Gamma",)


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
  positive = ("concentration", "rate")

  foreign_names = ("Gamma",)

  @classmethod
  def from_foreign(cls, dist):
    """A NumPyro/distrax/TFP Gamma as this family (None if it cannot be)."""
    shape = foreign_full_shape(dist)
    concentration = foreign_parameter(dist, "concentration")
    rate = foreign_parameter(dist, "rate")
    if shape is None or concentration is None or rate is None or tuple(dist.event_shape):
      return None
    return cls(jnp.broadcast_to(concentration, shape), jnp.broadcast_to(rate, shape))

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

  # -- family facts (see scoregrad.dists._base) ------------------------------

  def mean(self):
    return jnp.broadcast_to(self.concentration / self.rate, self.event_shape)

  def covariance(self):
    var = jnp.broadcast_to(self.concentration / self.rate**2, self.event_shape)
    return jnp.diag(jnp.reshape(var, (-1,)))

  weak_derivative_fixed = ("concentration",)
  weak_derivative_description = "Gamma (rate only; concentration held constant)"

  def weak_derivative_params(self):
    shape = self.event_shape
    return {
      "concentration": jnp.broadcast_to(self.concentration, shape),
      "rate": jnp.broadcast_to(self.rate, shape),
    }

  def weak_derivative(self, key, fn, base, fbase, active, coupling):
    """rate β: c = α/β, p⁺ = Gamma(α, β), p⁻ = Gamma(α + 1, β) (coupled: the
    base sample is the p⁺ draw and base + Exponential(β) the p⁻ draw)."""
    if not active[1]:
      return [None, None]
    conc, rate = flat_params(self)
    event_shape = tuple(self.event_shape)
    n, dim = base.shape
    dtype = rate.dtype
    k_pos, k_neg = jax.random.split(key)
    if coupling:
      extra = jax.random.exponential(k_neg, (n, dim), dtype) / rate
      diff = fbase[:, None, :] - replace_eval(fn, base, base + extra, event_shape)
    else:
      x_pos = jax.random.gamma(k_pos, jnp.broadcast_to(conc, (n, dim)), dtype=dtype) / rate
      x_neg = jax.random.gamma(k_neg, jnp.broadcast_to(conc + 1, (n, dim)), dtype=dtype) / rate
      diff = replace_eval(fn, base, x_pos, event_shape) - replace_eval(fn, base, x_neg, event_shape)
    return [None, diff * (conc / rate)[None, :, None]]
