"""Geometric distribution (failures before the first success), parameterised by logits."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from scoregrad.dists._base import (
  Distribution,
  _as_float_array,
  foreign_binary_logits,
  foreign_full_shape,
)
from scoregrad.dists._weak import flat_params, replace_eval

__all__ = ("Geometric",)


@dataclasses.dataclass(frozen=True, init=False)
class Geometric(Distribution):
  r"""Independent Geometric counts: failures before the first success, k = 0, 1, 2, …

  With success probability p = sigmoid(logits), P(k) = (1 − p)^k p, mean
  (1 − p)/p = e^{−ℓ}, variance (1 − p)/p² (NumPyro's convention; note that
  ``jax.random.geometric`` counts trials, from 1). Samples are floats,
  k = ⌊log U / log(1 − p)⌋ with U ~ Uniform(0, 1]. Not reparameterized: use
  the score function, or ``measure_valued`` with the decomposition (from
  k p (1 − p)^{k−1} = P_{NB(2, p)}(k − 1)/p)

      ∂ℓ p = (1 − p) (Geometric(p) − (1 + NegativeBinomial(2, p))),

  coupled by taking the base sample K for p⁺ and K + 1 + K' (K' a fresh
  Geometric) for p⁻.

  Example:
    >>> import jax, scoregrad as sg
    >>> sg.dists.Geometric(logits=0.0).sample(jax.random.key(0), (3,)).shape
    (3,)
  """

  logits: jax.Array
  reparameterized = False

  foreign_names = ("Geometric", "GeometricLogits", "GeometricProbs")

  @classmethod
  def from_foreign(cls, dist):
    """A NumPyro/distrax/TFP Geometric (failures before the first success) as this family."""
    shape = foreign_full_shape(dist)
    logits = foreign_binary_logits(dist)
    if shape is None or logits is None or tuple(dist.event_shape):
      return None
    return cls(logits=jnp.broadcast_to(logits, shape))

  def __init__(self, logits):
    object.__setattr__(self, "logits", _as_float_array("logits", logits))

  @property
  def probs(self) -> jax.Array:
    return jax.nn.sigmoid(self.logits)

  @property
  def event_shape(self):
    return jnp.shape(self.logits)

  def _sample(self, key, shape):
    logits = jax.lax.stop_gradient(jnp.broadcast_to(self.logits, shape))
    return _geometric(key, logits, shape, self.dtype)

  def log_prob(self, x):
    l = self.logits
    k = jnp.asarray(x, self.dtype)
    lp = jnp.where(k == 0, 0.0, k * jax.nn.log_sigmoid(-l)) + jax.nn.log_sigmoid(l)
    inside = (k >= 0) & (k == jnp.floor(k))
    lp = jnp.where(inside | jnp.isnan(k), lp, -jnp.inf)
    return self._sum_event(lp)

  # -- family facts (see scoregrad.dists._base) ------------------------------

  def mean(self):
    return jnp.exp(-self.logits)

  def covariance(self):
    odds = jnp.exp(-self.logits)  # (1 − p)/p
    return jnp.diag(jnp.reshape(odds * (1 + odds), (-1,)))

  weak_derivative_fixed = ()
  weak_derivative_description = "Geometric (logits)"

  def weak_derivative_params(self):
    return {"logits": self.logits}

  def weak_derivative(self, key, fn, base, fbase, active, coupling):
    """logits ℓ: c = 1 − p, p⁺ = Geometric(p), p⁻ = 1 + K + K' (K, K' ~ Geometric(p))."""
    if not active[0]:
      return [None]
    (logits,) = flat_params(self)
    event_shape = tuple(self.event_shape)
    n, dim = base.shape
    grid = jnp.broadcast_to(logits, (n, dim))
    k_pos, k_one, k_two = jax.random.split(key, 3)
    extra = _geometric(k_two, grid, (n, dim), base.dtype)
    if coupling:
      f_pos = fbase[:, None, :]
      f_neg = replace_eval(fn, base, base + 1 + extra, event_shape)
    else:
      pos = _geometric(k_pos, grid, (n, dim), base.dtype)
      neg = 1 + _geometric(k_one, grid, (n, dim), base.dtype) + extra
      f_pos = replace_eval(fn, base, pos, event_shape)
      f_neg = replace_eval(fn, base, neg, event_shape)
    return [(f_pos - f_neg) * (1 - jax.nn.sigmoid(logits))[None, :, None]]


def _geometric(key, logits, shape, dtype):
  """⌊log U / log(1 − p)⌋, U ~ Uniform(0, 1]: failures before the first success."""
  work = jnp.promote_types(dtype, jnp.float32)
  u = 1 - jax.random.uniform(key, shape, work)
  return jnp.floor(jnp.log(u) / jax.nn.log_sigmoid(-logits.astype(work))).astype(dtype)
