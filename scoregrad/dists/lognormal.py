"""Log-normal distribution (diagonal, all dimensions in the event)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from scoregrad.dists._base import (
  Distribution,
  _as_float_array,
  foreign_full_shape,
  foreign_parameter,
)
from scoregrad.dists.normal import Normal

__all__ = ("LogNormal",)


@dataclasses.dataclass(frozen=True, init=False)
class LogNormal(Distribution):
  r"""Independent log-normal variables x = exp(loc + scale·ε), ε ~ N(0, 1).

  Density on x > 0:

      p(x) = exp(−(log x − μ)² / (2σ²)) / (x σ √(2π)),

  mean exp(μ + σ²/2), variance (exp(σ²) − 1) exp(2μ + σ²). ``log_prob`` is
  −inf for x ≤ 0. Reparameterized (``pathwise`` applies); ``measure_valued``
  uses the Normal decompositions of log x (loc: Weibull, scale:
  double-sided Maxwell) pushed through exp. The price of an asset under
  Black–Scholes at maturity T is ``LogNormal(log S₀ + (r − σ²/2)T, σ√T)``.

  Example:
    >>> import jax, scoregrad as sg
    >>> sg.dists.LogNormal(0.0, 0.5).sample(jax.random.key(0), (3,)).shape
    (3,)
  """

  loc: jax.Array
  scale: jax.Array
  reparameterized = True

  foreign_names = ("LogNormal",)

  @classmethod
  def from_foreign(cls, dist):
    """A NumPyro/distrax/TFP LogNormal as this family (None if it cannot be)."""
    shape = foreign_full_shape(dist)
    loc = foreign_parameter(dist, "loc")
    scale = foreign_parameter(dist, "scale")
    if shape is None or loc is None or scale is None or tuple(dist.event_shape):
      return None
    return cls(jnp.broadcast_to(loc, shape), jnp.broadcast_to(scale, shape))

  positive = ("scale",)

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
    return jnp.exp(self.loc + self.scale * eps)

  def log_prob(self, x):
    x = jnp.asarray(x, self.dtype)
    positive = x > 0
    log_x = jnp.log(jnp.where(positive, x, 1.0))  # no NaN in the unused branch's gradient
    z = (log_x - self.loc) / self.scale
    lp = -0.5 * z**2 - jnp.log(self.scale) - log_x - 0.5 * math.log(2 * math.pi)
    lp = jnp.where(positive | jnp.isnan(x), lp + 0 * x, -jnp.inf)
    return self._sum_event(jnp.broadcast_to(lp, jnp.broadcast_shapes(lp.shape, self.event_shape)))

  # -- family facts (see scoregrad.dists._base) ------------------------------

  def mean(self):
    return jnp.broadcast_to(jnp.exp(self.loc + 0.5 * self.scale**2), self.event_shape)

  def covariance(self):
    s2 = self.scale**2
    var = jnp.broadcast_to(jnp.expm1(s2) * jnp.exp(2 * self.loc + s2), self.event_shape)
    return jnp.diag(jnp.reshape(var, (-1,)))

  def from_normal_noise(self, eps):
    """The smooth invertible transport x = T_θ(ε) = exp(loc + scale·ε) of standard normal noise."""
    return jnp.exp(self.loc + self.scale * eps)

  def to_normal_noise(self, x):
    """T_θ⁻¹(x) = (log x − loc) / scale, differentiable in the parameters at fixed x."""
    return (jnp.log(x) - self.loc) / self.scale

  weak_derivative_fixed = ()
  weak_derivative_description = "LogNormal (loc: Weibull; scale: double-sided Maxwell, in log x)"

  def weak_derivative_params(self):
    shape = self.event_shape
    return {"loc": jnp.broadcast_to(self.loc, shape), "scale": jnp.broadcast_to(self.scale, shape)}

  def weak_derivative(self, key, fn, base, fbase, active, coupling):
    """Normal's decomposition of y = log x: f evaluated at exp(y) (see Normal)."""
    del fbase
    normal = Normal(self.loc, self.scale)
    return normal.weak_derivative(
      key, lambda y: fn(jnp.exp(y)), jnp.log(base), None, active, coupling
    )
