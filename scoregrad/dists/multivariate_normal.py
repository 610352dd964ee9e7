"""Multivariate normal with a lower-triangular scale matrix."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from scoregrad.dists._base import (
  Distribution,
  _as_float_array,
  foreign_parameter,
)

__all__ = ("MultivariateNormalTriL",)


@dataclasses.dataclass(frozen=True, init=False)
class MultivariateNormalTriL(Distribution):
  """N(loc, L Lᵀ) with ``L = scale_tril`` lower triangular, sampled as loc + L ε.

  Only the lower triangle of ``scale_tril`` is used; its diagonal must be
  non-zero.
  """

  loc: jax.Array
  scale_tril: jax.Array
  reparameterized = True
  plate_event_ndim = 1  # the last axis is one correlated vector (scoregrad.plate)

  foreign_names = ("MultivariateNormal", "MultivariateNormalTri", "MultivariateNormalTriL")

  @classmethod
  def from_foreign(cls, dist):
    """A NumPyro/distrax/TFP MultivariateNormal as this family (None if it cannot be)."""
    loc = foreign_parameter(dist, "loc")
    scale_tril = foreign_parameter(dist, "scale_tril")
    if scale_tril is None:  # distrax's MultivariateNormalTri
      scale_tril = foreign_parameter(dist, "scale_tri")
    if loc is None or scale_tril is None or tuple(dist.batch_shape):
      return None  # batches of multivariate normals: the adapter keeps them
    (d,) = tuple(dist.event_shape)
    return cls(jnp.broadcast_to(loc, (d,)), jnp.broadcast_to(scale_tril, (d, d)))

  def __init__(self, loc, scale_tril):
    loc = _as_float_array("loc", loc)
    scale_tril = _as_float_array("scale_tril", scale_tril)
    if loc.ndim != 1 or scale_tril.shape != loc.shape * 2:
      raise ValueError(
        "MultivariateNormalTriL needs `loc` of shape (d,) and `scale_tril` of "
        f"shape (d, d); got loc.shape={loc.shape}, scale_tril.shape="
        f"{scale_tril.shape}. Use jax.vmap for batches of distributions."
      )
    dtype = jnp.result_type(loc, scale_tril)
    object.__setattr__(self, "loc", loc.astype(dtype))
    object.__setattr__(self, "scale_tril", jnp.tril(scale_tril).astype(dtype))

  @property
  def event_shape(self):
    return jnp.shape(self.loc)

  def _parameters_valid(self):
    diag = jnp.diag(self.scale_tril)
    return jnp.all((diag != 0) & ~jnp.isnan(diag))

  def _constraint_description(self):
    return "the diagonal of `scale_tril` must be non-zero"

  def _sample(self, key, shape):
    eps = jax.random.normal(key, shape, dtype=self.dtype)
    return self.loc + eps @ self.scale_tril.T

  def log_prob(self, x):
    d = self.loc.shape[0]
    diff = jnp.asarray(x) - self.loc
    flat = diff.reshape(-1, d)
    z = jax.scipy.linalg.solve_triangular(self.scale_tril, flat.T, lower=True).T
    lp = (
      -0.5 * jnp.sum(z**2, axis=-1)
      - jnp.sum(jnp.log(jnp.abs(jnp.diag(self.scale_tril))))
      - 0.5 * d * math.log(2 * math.pi)
    )
    return lp.reshape(diff.shape[:-1])

  # -- family facts (see scoregrad.dists._base) ------------------------------

  def mean(self):
    return self.loc

  def covariance(self):
    return self.scale_tril @ self.scale_tril.T

  def from_standard_normal(self, eps):
    """x = loc + L ε for standard normal noise ε (one sample or a batch)."""
    return self.loc + eps @ self.scale_tril.T

  def to_standard_normal(self, x):
    """The noise ε with ``from_standard_normal(ε) == x``."""
    diff = jnp.asarray(x) - self.loc
    flat = diff.reshape(-1, self.loc.shape[0])
    z = jax.scipy.linalg.solve_triangular(self.scale_tril, flat.T, lower=True).T
    return z.reshape(diff.shape)

  def from_normal_noise(self, eps):
    """The smooth invertible transport x = T_θ(ε) of standard normal noise (here loc + Lε)."""
    return self.from_standard_normal(eps)

  def to_normal_noise(self, x):
    """T_θ⁻¹(x), differentiable in the parameters at fixed x."""
    return self.to_standard_normal(x)
