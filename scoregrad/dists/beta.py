"""Beta distribution, reparameterized through Gamma variables."""

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

__all__ = ("Beta",)


@dataclasses.dataclass(frozen=True, init=False)
class Beta(Distribution):
  r"""Independent Beta(concentration1 α, concentration0 β) variables on (0, 1).

  p(x) = x^{α−1} (1 − x)^{β−1} / B(α, β), mean α/(α + β), variance
  αβ / ((α + β)² (α + β + 1)).

  Reparameterized by implicit reparameterization (Figurnov, Mohamed & Mnih
  2018): x = G₁/(G₁ + G₀) with G₁ ~ Gamma(α, 1), G₀ ~ Gamma(β, 1) drawn by
  ``jax.random.loggamma``, whose samples carry the implicit gradient
  ∂g/∂α = −(∂F(g; α)/∂α)/p(g; α) of the Gamma CDF F. Working with log G
  (x = sigmoid(log G₁ − log G₀)) keeps small concentrations from
  underflowing to 0/0. So ``pathwise`` applies to both concentrations, and
  ``score_function`` too (log_prob is smooth in them).

  Example:
    >>> import jax, scoregrad as sg
    >>> sg.dists.Beta(2.0, 3.0).sample(jax.random.key(0), (3,)).shape
    (3,)

  References:
    Figurnov, Mohamed & Mnih, "Implicit Reparameterization Gradients",
    NeurIPS 2018.
  """

  concentration1: jax.Array
  concentration0: jax.Array
  reparameterized = True

  foreign_names = ("Beta",)

  @classmethod
  def from_foreign(cls, dist):
    """A NumPyro/distrax/TFP Beta as this family (None if it cannot be)."""
    shape = foreign_full_shape(dist)
    concentration1 = foreign_parameter(dist, "concentration1")
    concentration0 = foreign_parameter(dist, "concentration0")
    if shape is None or concentration1 is None or concentration0 is None or tuple(dist.event_shape):
      return None
    return cls(jnp.broadcast_to(concentration1, shape), jnp.broadcast_to(concentration0, shape))

  positive = ("concentration1", "concentration0")

  def __init__(self, concentration1, concentration0):
    c1 = _as_float_array("concentration1", concentration1)
    c0 = _as_float_array("concentration0", concentration0)
    dtype = jnp.result_type(c1, c0)
    object.__setattr__(self, "concentration1", c1.astype(dtype))
    object.__setattr__(self, "concentration0", c0.astype(dtype))

  @property
  def event_shape(self):
    return jnp.broadcast_shapes(jnp.shape(self.concentration1), jnp.shape(self.concentration0))

  def _sample(self, key, shape):
    k1, k0 = jax.random.split(key)
    a = jnp.broadcast_to(self.concentration1, shape)
    b = jnp.broadcast_to(self.concentration0, shape)
    log_g1 = jax.random.loggamma(k1, a, shape, dtype=self.dtype)
    log_g0 = jax.random.loggamma(k0, b, shape, dtype=self.dtype)
    return jax.nn.sigmoid(log_g1 - log_g0)

  def log_prob(self, x):
    a, b = self.concentration1, self.concentration0
    x = jnp.asarray(x, self.dtype)
    inside = (x > 0) & (x < 1)
    safe = jnp.where(inside, x, 0.5)
    lp = (a - 1) * jnp.log(safe) + (b - 1) * jnp.log1p(-safe) - jax.scipy.special.betaln(a, b)
    lp = jnp.where(inside | jnp.isnan(x), lp + 0 * x, -jnp.inf)
    return self._sum_event(jnp.broadcast_to(lp, jnp.broadcast_shapes(lp.shape, self.event_shape)))

  # -- family facts (see scoregrad.dists._base) ------------------------------

  def mean(self):
    a, b = self.concentration1, self.concentration0
    return jnp.broadcast_to(a / (a + b), self.event_shape)

  def covariance(self):
    a, b = self.concentration1, self.concentration0
    total = a + b
    var = jnp.broadcast_to(a * b / (total**2 * (total + 1)), self.event_shape)
    return jnp.diag(jnp.reshape(var, (-1,)))
