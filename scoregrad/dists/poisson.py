"""Poisson distribution."""

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

__all__ = ("Poisson",)


@dataclasses.dataclass(frozen=True, init=False)
class Poisson(Distribution):
  """Independent Poisson counts with mean ``rate``; samples are floats (counts).

  log p(x) = x log λ − λ − log x!. Not reparameterized.
  """

  rate: jax.Array
  reparameterized = False
  positive = ("rate",)

  foreign_names = ("Poisson",)

  @classmethod
  def from_foreign(cls, dist):
    """A NumPyro/distrax/TFP Poisson as this family (None if it cannot be)."""
    shape = foreign_full_shape(dist)
    rate = foreign_parameter(dist, "rate")
    if shape is None or rate is None or tuple(dist.event_shape):
      return None
    if getattr(dist, "is_sparse", False) or type(dist).__name__ == "ZeroInflatedPoisson":
      return None
    return cls(jnp.broadcast_to(rate, shape))

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

  # -- family facts (see scoregrad.dists._base) ------------------------------

  def mean(self):
    return self.rate

  def covariance(self):
    return jnp.diag(jnp.reshape(self.rate, (-1,)))

  weak_derivative_fixed = ()
  weak_derivative_description = "Poisson (rate)"

  def weak_derivative_params(self):
    return {"rate": self.rate}

  def weak_derivative(self, key, fn, base, fbase, active, coupling):
    """rate λ: c = 1, p⁺ = 1 + Poisson(λ), p⁻ = Poisson(λ) (coupled: the base
    sample is the p⁻ draw and base + 1 the p⁺ draw)."""
    if not active[0]:
      return [None]
    (rate,) = flat_params(self)
    event_shape = tuple(self.event_shape)
    n, dim = base.shape
    if coupling:
      return [replace_eval(fn, base, base + 1, event_shape) - fbase[:, None, :]]
    k_pos, k_neg = jax.random.split(key)
    y_pos = jax.random.poisson(k_pos, rate, (n, dim)).astype(base.dtype)
    y_neg = jax.random.poisson(k_neg, rate, (n, dim)).astype(base.dtype)
    return [
      replace_eval(fn, base, y_pos + 1, event_shape) - replace_eval(fn, base, y_neg, event_shape)
    ]
