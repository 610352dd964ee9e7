"""Dirichlet distribution, reparameterized through Gamma variables."""

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

__all__ = ("Dirichlet",)


@dataclasses.dataclass(frozen=True, init=False)
class Dirichlet(Distribution):
  r"""Dirichlet(concentration α) on the simplex over the last axis of α.

  p(x) = Γ(α₀) / Π_k Γ(α_k) · Π_k x_k^{α_k − 1}, α₀ = Σ_k α_k; mean α/α₀,
  covariance (α₀ diag(α) − α αᵀ) / (α₀² (α₀ + 1)).

  ``concentration`` has shape (..., K) with K ≥ 2: the last axis is the
  simplex, and, following the event convention of :mod:`scoregrad.dists`,
  leading axes are independent Dirichlets in the same event (``log_prob``
  sums over them; ``covariance`` is block diagonal over the flattened event).

  Reparameterized by implicit reparameterization (Figurnov, Mohamed & Mnih
  2018): x = softmax(log G) with log G_k ~ log Gamma(α_k, 1) drawn by
  ``jax.random.loggamma``, which carries the implicit gradient of the Gamma
  CDF, so ``pathwise`` applies.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> sg.dists.Dirichlet(jnp.array([1.0, 2.0, 3.0])).sample(jax.random.key(0), (4,)).shape
    (4, 3)

  References:
    Figurnov, Mohamed & Mnih, "Implicit Reparameterization Gradients",
    NeurIPS 2018.
  """

  concentration: jax.Array
  reparameterized = True
  plate_event_ndim = 1  # the last axis is one simplex (scoregrad.plate)

  foreign_names = ("Dirichlet",)

  @classmethod
  def from_foreign(cls, dist):
    """A NumPyro/distrax/TFP Dirichlet as this family (None if it cannot be)."""
    shape = foreign_full_shape(dist)
    concentration = foreign_parameter(dist, "concentration")
    if shape is None or concentration is None or len(tuple(dist.event_shape)) != 1:
      return None
    return cls(jnp.broadcast_to(concentration, shape))

  positive = ("concentration",)

  def __init__(self, concentration):
    concentration = _as_float_array("concentration", concentration)
    if concentration.ndim < 1 or concentration.shape[-1] < 2:
      raise ValueError(
        "Dirichlet needs `concentration` of shape (..., K) with K >= 2 categories on "
        f"the last axis; got shape {concentration.shape}. For K = 2 you may also "
        "use scoregrad.dists.Beta(concentration1, concentration0)."
      )
    object.__setattr__(self, "concentration", concentration)

  @property
  def event_shape(self):
    return jnp.shape(self.concentration)

  def _sample(self, key, shape):
    alpha = jnp.broadcast_to(self.concentration, shape)
    log_g = jax.random.loggamma(key, alpha, shape, dtype=self.dtype)
    return jax.nn.softmax(log_g, axis=-1)

  def log_prob(self, x):
    alpha = self.concentration
    x = jnp.asarray(x, self.dtype)
    gammaln = jax.scipy.special.gammaln
    norm = gammaln(jnp.sum(alpha, -1)) - jnp.sum(gammaln(alpha), -1)
    inside = jnp.all(x > 0, axis=-1)
    safe = jnp.where(x > 0, x, 1.0)
    lp = jnp.sum((alpha - 1) * jnp.log(safe), -1) + norm
    lp = jnp.where(inside | jnp.any(jnp.isnan(x), -1), lp + 0 * jnp.sum(x, -1), -jnp.inf)
    n = len(self.event_shape) - 1  # leading (independent) axes of the event
    return jnp.sum(lp, axis=tuple(range(lp.ndim - n, lp.ndim))) if n else lp

  # -- family facts (see scoregrad.dists._base) ------------------------------

  def mean(self):
    alpha = self.concentration
    return alpha / jnp.sum(alpha, -1, keepdims=True)

  def covariance(self):
    k = self.event_shape[-1]
    alpha = jnp.reshape(self.concentration, (-1, k))
    total = jnp.sum(alpha, -1)[:, None, None]
    outer = alpha[:, :, None] * alpha[:, None, :]
    diag = jax.vmap(jnp.diag)(alpha)
    blocks = (total * diag - outer) / (total**2 * (total + 1))  # (m, K, K)
    m = blocks.shape[0]
    eye = jnp.eye(m, dtype=blocks.dtype)
    return (eye[:, None, :, None] * blocks[:, :, None, :]).reshape(m * k, m * k)
