"""Binomial distribution parameterised by logits."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from scoregrad.dists._base import (
  Distribution,
  _as_float_array,
  foreign_binary_logits,
  foreign_full_shape,
  foreign_parameter,
)
from scoregrad.dists._weak import flat_params, replace_eval

__all__ = ("Binomial",)


@dataclasses.dataclass(frozen=True, init=False)
class Binomial(Distribution):
  r"""Independent Binomial(total_count n, p = sigmoid(logits)) counts; samples are floats.

  log p(k) = log C(n, k) + k log σ(ℓ) + (n − k) log σ(−ℓ), mean n p, variance
  n p (1 − p). ``total_count`` must be a non-negative whole number (an array
  of them broadcasts against ``logits``). Not reparameterized: use the score
  function, or ``measure_valued`` with the decomposition

      ∂ℓ p = n p (1 − p) (1 + Binomial(n − 1, p) − Binomial(n − 1, p)),

  coupled by removing one of the base sample's n trials at random (which
  leaves a Binomial(n − 1, p) count). ``total_count`` is held constant there.

  Example:
    >>> import jax, scoregrad as sg
    >>> sg.dists.Binomial(10, logits=0.3).sample(jax.random.key(0), (3,)).shape
    (3,)
  """

  total_count: jax.Array
  logits: jax.Array
  reparameterized = False

  foreign_names = ("Binomial", "BinomialLogits", "BinomialProbs")

  @classmethod
  def from_foreign(cls, dist):
    """A NumPyro/distrax/TFP Binomial as this family (None if it cannot be)."""
    shape = foreign_full_shape(dist)
    logits = foreign_binary_logits(dist)
    total_count = foreign_parameter(dist, "total_count")
    if shape is None or logits is None or total_count is None or tuple(dist.event_shape):
      return None
    return cls(jnp.broadcast_to(total_count, shape), logits=jnp.broadcast_to(logits, shape))

  def __init__(self, total_count, logits):
    logits = _as_float_array("logits", logits)
    total_count = _as_float_array("total_count", total_count)
    dtype = jnp.result_type(logits, total_count)
    object.__setattr__(self, "total_count", total_count.astype(dtype))
    object.__setattr__(self, "logits", logits.astype(dtype))

  def _parameters_valid(self):
    n = self.total_count
    return jnp.all((n >= 0) & (n == jnp.floor(n)))

  def _constraint_description(self):
    return "`total_count` must be a non-negative whole number"

  @property
  def probs(self) -> jax.Array:
    return jax.nn.sigmoid(self.logits)

  @property
  def event_shape(self):
    return jnp.broadcast_shapes(jnp.shape(self.total_count), jnp.shape(self.logits))

  def _sample(self, key, shape):
    n = jax.lax.stop_gradient(jnp.broadcast_to(self.total_count, shape))
    p = jax.lax.stop_gradient(jnp.broadcast_to(self.probs, shape))
    work = jnp.promote_types(self.dtype, jnp.float32)
    return jax.random.binomial(key, n.astype(work), p.astype(work), shape, work).astype(self.dtype)

  def log_prob(self, x):
    n, logits = self.total_count, self.logits
    k = jnp.asarray(x, self.dtype)
    gammaln = jax.scipy.special.gammaln
    # 0·log σ = 0, so that ±inf logits give 0 or −inf, never NaN.
    success = jnp.where(k == 0, 0.0, k * jax.nn.log_sigmoid(logits))
    failure = jnp.where(n - k == 0, 0.0, (n - k) * jax.nn.log_sigmoid(-logits))
    lp = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1) + success + failure
    inside = (k >= 0) & (k <= n) & (k == jnp.floor(k))
    lp = jnp.where(inside | jnp.isnan(k), lp, -jnp.inf)
    return self._sum_event(jnp.broadcast_to(lp, jnp.broadcast_shapes(lp.shape, self.event_shape)))

  # -- family facts (see scoregrad.dists._base) ------------------------------

  def mean(self):
    return jnp.broadcast_to(self.total_count * self.probs, self.event_shape)

  def covariance(self):
    p = self.probs
    var = jnp.broadcast_to(self.total_count * p * (1 - p), self.event_shape)
    return jnp.diag(jnp.reshape(var, (-1,)))

  weak_derivative_fixed = ("total_count",)
  weak_derivative_description = "Binomial (logits; total_count held constant)"

  def weak_derivative_params(self):
    shape = self.event_shape
    return {
      "total_count": jnp.broadcast_to(self.total_count, shape),
      "logits": jnp.broadcast_to(self.logits, shape),
    }

  def weak_derivative(self, key, fn, base, fbase, active, coupling):
    """logits ℓ: c = n p (1 − p), p⁺ = 1 + Binomial(n − 1, p), p⁻ = Binomial(n − 1, p)
    (coupled: y = base minus one of its trials chosen uniformly, y ~ Binomial(n − 1, p))."""
    del fbase
    if not active[1]:
      return [None, None]
    total, logits = flat_params(self)
    p = jax.nn.sigmoid(logits)
    event_shape = tuple(self.event_shape)
    n, dim = base.shape
    fewer = jnp.maximum(total - 1, 0)
    if coupling:
      u = jax.random.uniform(key, (n, dim), base.dtype)
      removed = u * jnp.maximum(total, 1) < base  # the removed trial was a success
      y = base - removed.astype(base.dtype)
    else:
      work = jnp.promote_types(base.dtype, jnp.float32)
      y = jax.random.binomial(
        key,
        jnp.broadcast_to(fewer, (n, dim)).astype(work),
        jnp.broadcast_to(p, (n, dim)).astype(work),
        (n, dim),
        work,
      ).astype(base.dtype)
    diff = replace_eval(fn, base, y + 1, event_shape) - replace_eval(fn, base, y, event_shape)
    return [None, diff * (total * p * (1 - p))[None, :, None]]
