"""Student's t distribution, reparameterized through Normal and Gamma variables."""

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

__all__ = ("StudentT",)


@dataclasses.dataclass(frozen=True, init=False)
class StudentT(Distribution):
  r"""Independent Student-t(df ν, loc μ, scale σ) variables.

  p(x) = Γ((ν+1)/2) / (Γ(ν/2) √(νπ) σ) · (1 + t²/ν)^{−(ν+1)/2}, t = (x − μ)/σ;
  mean μ for ν > 1 (NaN otherwise), variance σ² ν/(ν − 2) for ν > 2 (inf for
  1 < ν ≤ 2, NaN for ν ≤ 1).

  Reparameterized: x = μ + σ ε √(ν / (2G)) with ε ~ N(0, 1) and
  G ~ Gamma(ν/2, 1) (so 2G ~ χ²_ν), where ``jax.random.gamma`` carries the
  implicit gradient in ν (Figurnov, Mohamed & Mnih 2018). ``pathwise``
  therefore differentiates all three parameters; its variance is finite only
  when the cost's gradient has a finite second moment under the heavy tails
  (for f(x) = x², ν > 4).

  Example:
    >>> import jax, scoregrad as sg
    >>> sg.dists.StudentT(5.0, 0.0, 1.0).sample(jax.random.key(0), (3,)).shape
    (3,)

  References:
    Figurnov, Mohamed & Mnih, "Implicit Reparameterization Gradients",
    NeurIPS 2018.
  """

  df: jax.Array
  loc: jax.Array
  scale: jax.Array
  reparameterized = True

  foreign_names = ("StudentT",)

  @classmethod
  def from_foreign(cls, dist):
    """A NumPyro/distrax/TFP StudentT as this family (None if it cannot be)."""
    shape = foreign_full_shape(dist)
    df = foreign_parameter(dist, "df")
    loc = foreign_parameter(dist, "loc")
    scale = foreign_parameter(dist, "scale")
    if shape is None or df is None or loc is None or scale is None or tuple(dist.event_shape):
      return None
    return cls(
      jnp.broadcast_to(df, shape), jnp.broadcast_to(loc, shape), jnp.broadcast_to(scale, shape)
    )

  positive = ("df", "scale")

  def __init__(self, df, loc, scale):
    df = _as_float_array("df", df)
    loc = _as_float_array("loc", loc)
    scale = _as_float_array("scale", scale)
    dtype = jnp.result_type(df, loc, scale)
    object.__setattr__(self, "df", df.astype(dtype))
    object.__setattr__(self, "loc", loc.astype(dtype))
    object.__setattr__(self, "scale", scale.astype(dtype))

  @property
  def event_shape(self):
    return jnp.broadcast_shapes(jnp.shape(self.df), jnp.shape(self.loc), jnp.shape(self.scale))

  def _sample(self, key, shape):
    k_normal, k_gamma = jax.random.split(key)
    eps = jax.random.normal(k_normal, shape, dtype=self.dtype)
    half_df = jnp.broadcast_to(0.5 * self.df, shape)
    g = jax.random.gamma(k_gamma, half_df, shape, dtype=self.dtype)
    return self.loc + self.scale * eps * jnp.sqrt(half_df / g)

  def log_prob(self, x):
    df, loc, scale = self.df, self.loc, self.scale
    gammaln = jax.scipy.special.gammaln
    t = (jnp.asarray(x, self.dtype) - loc) / scale
    lp = (
      gammaln(0.5 * (df + 1))
      - gammaln(0.5 * df)
      - 0.5 * (jnp.log(df) + math.log(math.pi))
      - jnp.log(scale)
      - 0.5 * (df + 1) * jnp.log1p(t**2 / df)
    )
    return self._sum_event(jnp.broadcast_to(lp, jnp.broadcast_shapes(lp.shape, self.event_shape)))

  # -- family facts (see scoregrad.dists._base) ------------------------------

  def mean(self):
    nan = jnp.full((), jnp.nan, self.dtype)
    return jnp.broadcast_to(jnp.where(self.df > 1, self.loc, nan), self.event_shape)

  def covariance(self):
    df = self.df
    safe = jnp.where(df > 2, df, 3.0)
    var = jnp.where(
      df > 2,
      self.scale**2 * safe / (safe - 2),
      jnp.where(df > 1, jnp.inf, jnp.nan).astype(self.dtype),
    )
    return jnp.diag(jnp.reshape(jnp.broadcast_to(var, self.event_shape), (-1,)))
