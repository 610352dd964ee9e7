"""Bernoulli distribution parameterised by logits."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from scoregrad.dists._base import (
  Distribution,
  _as_float_array,
  foreign_binary_logits,
  foreign_full_shape,
)
from scoregrad.dists._weak import flat_params, replace_eval

__all__ = ("Bernoulli",)


def _logit(u):
  """log u − log(1 − u), accurate near 0 and 1."""
  return jnp.log(u) - jnp.log1p(-u)


@dataclasses.dataclass(frozen=True, init=False)
class Bernoulli(Distribution):
  """Independent Bernoulli variables with P(x = 1) = sigmoid(logits).

  Samples are floats in {0., 1.} (same dtype as ``logits``) so costs can use
  them directly. Not reparameterized: ``jax.grad`` through
  ``jax.random.bernoulli`` is silently zero, which is why ``pathwise`` refuses
  this distribution.
  """

  logits: jax.Array
  reparameterized = False

  foreign_names = ("Bernoulli", "BernoulliLogits", "BernoulliProbs")

  @classmethod
  def from_foreign(cls, dist):
    """A NumPyro/distrax/TFP Bernoulli as this family (None if it cannot be)."""
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
    u = jax.random.uniform(key, shape, dtype=self.logits.dtype)
    return (u < jax.lax.stop_gradient(self.probs)).astype(self.logits.dtype)

  def log_prob(self, x):
    x = jnp.asarray(x, self.logits.dtype)
    # x log σ(l) + (1 − x) log σ(−l), with 0·log 0 = 0 so that ±inf logits
    # (probabilities exactly 0 or 1) give 0 or −inf, never NaN.
    l = self.logits
    lp = jnp.where(x == 0, 0.0, x * jax.nn.log_sigmoid(l)) + jnp.where(
      x == 1, 0.0, (1 - x) * jax.nn.log_sigmoid(-l)
    )
    return self._sum_event(lp)

  # -- family facts (see scoregrad.dists._base) ------------------------------

  def mean(self):
    return self.probs

  def covariance(self):
    p = jnp.reshape(self.probs, (-1,))
    return jnp.diag(p * (1 - p))

  weak_derivative_fixed = ()
  weak_derivative_description = "Bernoulli (logits)"

  def weak_derivative_params(self):
    return {"logits": self.logits}

  def weak_derivative(self, key, fn, base, fbase, active, coupling):
    """logits ℓ: exact, ∂ℓ E[f] = p(1 − p) (f(x with x_j = 1) − f(x with x_j = 0))."""
    del key, fbase, coupling
    if not active[0]:
      return [None]
    (logits,) = flat_params(self)
    p = jax.nn.sigmoid(logits)
    event_shape = tuple(self.event_shape)
    diff = replace_eval(fn, base, jnp.ones_like(base), event_shape) - replace_eval(
      fn, base, jnp.zeros_like(base), event_shape
    )
    return [diff * (p * (1 - p))[None, :, None]]

  # The logits structure used by the discrete estimators. Samples are
  # z = ℓ + logit(u), u ~ U(0, 1) (logistic noise), b = 1[z > 0].

  @staticmethod
  def probs_of(logits):
    return jax.nn.sigmoid(logits)

  @staticmethod
  def logits_of_probs(probs):
    """The inverse of ``probs_of``: logit(π) = log π − log(1 − π) (ReinMax)."""
    return jnp.log(probs) - jnp.log1p(-probs)

  @staticmethod
  def score_logits(logits, x):
    """∂ log p(x) / ∂ logits for one sample x (elementwise): x − σ(ℓ)."""
    return x.astype(logits.dtype) - jax.nn.sigmoid(logits)

  @staticmethod
  def perturb(logits, u):
    """z = ℓ + logit(u): the sample is ``hard(z)``."""
    return logits + _logit(u)

  @staticmethod
  def hard(z):
    """The sample as f receives it: floats in {0, 1}."""
    return (z > 0).astype(z.dtype)

  @staticmethod
  def soft(z, temperature):
    """The relaxed sample σ(z/λ)."""
    return jax.nn.sigmoid(z / temperature)

  @staticmethod
  def conditional_noise(logits, v, b):
    """z̃ ~ p(z | hard(z) = b), reparameterised by v ~ U(0, 1).

    Given b = 1, u is uniform on (1 − σ(ℓ), 1) and z̃ = softplus(logit(v) +
    softplus(ℓ)); given b = 0, u is uniform on (0, 1 − σ(ℓ)) and
    z̃ = −softplus(logit(v) + softplus(−ℓ)).
    """
    t = _logit(v)
    return jnp.where(
      b > 0.5,
      jax.nn.softplus(t + jax.nn.softplus(logits)),
      -jax.nn.softplus(t + jax.nn.softplus(-logits)),
    )

  @staticmethod
  def antithetic_pair(u, logits):
    """b = 1[u < σ(ℓ)] and its antithetic b̃ = 1[1 − u < σ(ℓ)] (ARM, DisARM)."""
    p = jax.nn.sigmoid(logits)
    return (u < p).astype(logits.dtype), (1.0 - u < p).astype(logits.dtype)

  @staticmethod
  def score_variance(logits):
    """E[(x − σ(ℓ))²] = σ(ℓ)(1 − σ(ℓ)): the (diagonal) covariance of the logits score."""
    p = jax.nn.sigmoid(logits)
    return p * (1.0 - p)

  @staticmethod
  def gibbs_flips(logits, x):
    """The single-coordinate moves of the Gibbs sampler from x (double CV, RODEO).

    Returns ``(step, rate)`` shaped like ``x``: neighbour i of x is x + step_i
    e_i (coordinate i flipped, step = 1 − 2x), reached with probability
    rate_i = q_i(1 − x_i) (σ(ℓ_i) from 0, σ(−ℓ_i) from 1) when coordinate i
    is resampled from its marginal.
    """
    x = x.astype(logits.dtype)
    return 1.0 - 2.0 * x, jax.nn.sigmoid(jnp.where(x > 0.5, -logits, logits))

  # The binary representation used by ARM/DisARM (Categorical: stick-breaking).

  @staticmethod
  def binary_logits(logits):
    """Logits of the independent bits that represent a sample: the logits themselves."""
    return logits

  @staticmethod
  def from_binary(bits):
    """The sample, as f receives it, from its bits: the bits themselves."""
    return bits

  @staticmethod
  def binary_reached(bits):
    """Which bits the sample depends on: all of them."""
    return jnp.ones_like(bits)

  @staticmethod
  def per_variable_log_probs(logits):
    """log p_v(k), k ∈ {0, 1}, for every variable v of the flattened event: (V, 2)."""
    flat = jnp.reshape(logits, (-1,))
    return jnp.stack([-jax.nn.softplus(flat), -jax.nn.softplus(-flat)], axis=-1)

  @staticmethod
  def num_configurations(logits_shape):
    return 2 ** math.prod(logits_shape)

  @staticmethod
  def describe_configurations(logits_shape):
    d = math.prod(logits_shape)
    return f"2^{d} = {2**d:,} configurations of a Bernoulli with event shape {tuple(logits_shape)}"

  @staticmethod
  def enumerate_configurations(logits_shape, dtype):
    """All 2^D configurations ``(N, *event_shape)``, row i the bits of i (first most significant)."""
    v = math.prod(logits_shape)
    idx = np.arange(2**v, dtype=np.int64)[:, None]
    digits = (idx >> np.arange(v - 1, -1, -1, dtype=np.int64)[None, :]) & 1
    return jnp.asarray(digits.reshape((2**v,) + tuple(logits_shape)), dtype)

  @staticmethod
  def from_values(logits, values):
    """(..., V) int32 values in {0, 1} -> samples as f receives them."""
    return values.reshape(values.shape[:-1] + logits.shape).astype(logits.dtype)
