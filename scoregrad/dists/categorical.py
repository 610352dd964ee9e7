"""Categorical distribution parameterised by logits."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from scoregrad.dists._base import (
  Distribution,
  _as_float_array,
  foreign_full_shape,
  foreign_parameter,
)
from scoregrad.dists._weak import replace_eval

__all__ = ("Categorical",)


@dataclasses.dataclass(frozen=True, init=False)
class Categorical(Distribution):
  """Independent categorical variables over the last axis of ``logits``.

  ``logits`` has shape ``event_shape + (K,)``; samples are int32 indices with
  shape ``sample_shape + event_shape``.
  """

  logits: jax.Array
  reparameterized = False
  plate_extra_dims = 1  # logits (..., K) for a value (...): scoregrad.plate

  foreign_names = ("Categorical", "CategoricalLogits", "CategoricalProbs")

  @classmethod
  def from_foreign(cls, dist):
    """A NumPyro/distrax/TFP Categorical as this family (None if it cannot be)."""
    shape = foreign_full_shape(dist)
    if shape is None or tuple(dist.event_shape):
      return None
    logits = None
    if type(dist).__name__ != "CategoricalProbs":
      logits = foreign_parameter(dist, "logits")
    if logits is None:
      probs = foreign_parameter(dist, "probs")
      if probs is None:
        return None
      logits = jnp.log(probs)
    if logits.ndim < 1:
      return None
    return cls(logits=jnp.broadcast_to(logits, shape + logits.shape[-1:]))

  def __init__(self, logits):
    logits = _as_float_array("logits", logits)
    if logits.ndim < 1:
      raise ValueError(
        "Categorical `logits` needs a last axis over the K categories; got a "
        f"scalar {logits!r}. Use shape (K,), e.g. logits=jnp.zeros(3)."
      )
    object.__setattr__(self, "logits", logits)

  @property
  def probs(self) -> jax.Array:
    return jax.nn.softmax(self.logits, axis=-1)

  @property
  def num_categories(self) -> int:
    return self.logits.shape[-1]

  @property
  def event_shape(self):
    return jnp.shape(self.logits)[:-1]

  @property
  def dtype(self):
    return jnp.int32

  def _sample(self, key, shape):
    return jax.random.categorical(
      key, jax.lax.stop_gradient(self.logits), axis=-1, shape=shape
    ).astype(jnp.int32)

  def log_prob(self, x):
    x = jnp.asarray(x)
    logp = jax.nn.log_softmax(self.logits, axis=-1)
    logp = jnp.broadcast_to(logp, x.shape + (self.num_categories,))
    lp = jnp.take_along_axis(logp, x[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return self._sum_event(lp)

  # -- family facts (see scoregrad.dists._base) ------------------------------

  weak_derivative_fixed = ()
  weak_derivative_description = "Categorical (logits)"

  def weak_derivative_params(self):
    return {"logits": self.logits}

  def weak_derivative(self, key, fn, base, fbase, active, coupling):
    """logits ℓ_k: exact, ∂ℓ_k E[f] = π_k (f(x with x_j = k) − E_π[f]); the
    E_π[f] point is the base sample itself (coupled) or a fresh draw."""
    if not active[0]:
      return [None]
    k = self.num_categories
    logits = self.logits.reshape(-1, k)
    probs = jax.nn.softmax(logits, axis=-1)
    event_shape = tuple(self.event_shape)
    n, dim = base.shape
    pos = jax.vmap(
      lambda m: replace_eval(fn, base, jnp.full_like(base, m), event_shape), out_axes=2
    )(jnp.arange(k))  # (n, d, K, M)
    if coupling:
      neg = fbase[:, None, None, :]
    else:
      y = jax.random.categorical(key, logits, axis=-1, shape=(n, dim))
      neg = replace_eval(fn, base, y, event_shape)[:, :, None, :]
    return [(pos - neg) * probs[None, :, :, None]]

  # The logits structure used by the discrete estimators. Samples are
  # z = ℓ + Gumbel noise, b = one-hot(argmax z) for the relaxed estimators
  # (which give f one-hot floats) and argmax z as indices for the others.

  @staticmethod
  def probs_of(logits):
    return jax.nn.softmax(logits, axis=-1)

  @staticmethod
  def logits_of_probs(probs):
    """Logits with ``probs_of(logits) == probs`` (rows on the simplex): log π (ReinMax)."""
    return jnp.log(probs)

  @staticmethod
  def score_logits(logits, x):
    """∂ log p(x) / ∂ logits for one sample x of indices: onehot(x) − softmax(ℓ)."""
    k = logits.shape[-1]
    return jax.nn.one_hot(x, k, dtype=logits.dtype) - jax.nn.softmax(logits, axis=-1)

  @staticmethod
  def perturb(logits, u):
    """z = ℓ − log(−log u) (Gumbel noise): the sample is ``hard(z)``."""
    return logits - jnp.log(-jnp.log(u))

  @staticmethod
  def hard(z):
    """The sample as the relaxed estimators give it to f: one-hot floats."""
    return jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=z.dtype)

  @staticmethod
  def soft(z, temperature):
    """The relaxed sample softmax(z/λ)."""
    return jax.nn.softmax(z / temperature, axis=-1)

  @staticmethod
  def conditional_noise(logits, v, b):
    """z̃ ~ p(z | hard(z) = b), reparameterised by v ~ U(0, 1).

    The maximum M = logsumexp(ℓ) − log(−log v_b) is independent of the
    argmax, and the other coordinates are Gumbels truncated below M:
    z̃_k = −log(e^{−ℓ_k}(−log v_k) + e^{−M}).
    """
    log_neg_log_v = jnp.log(-jnp.log(v))
    top = jax.nn.logsumexp(logits, axis=-1, keepdims=True) - jnp.sum(
      b * log_neg_log_v, axis=-1, keepdims=True
    )
    others = -jnp.logaddexp(log_neg_log_v - logits, -top)
    return jnp.where(b > 0.5, top, others)

  # The stick-breaking binary representation used by ARM/DisARM (Dong, Mnih &
  # Tucker 2021): bit c (c = 0..K−2) of a variable is "x = c, given x ≥ c",
  # independent Bernoulli(σ(η_c)) with η_c = ℓ_c − logsumexp(ℓ_{c+1:}), and x
  # is the first bit that is 1 (K − 1 if none): P(x = c) = σ(η_c) Π_{m<c} σ(−η_m)
  # = softmax(ℓ)_c.

  @staticmethod
  def binary_logits(logits):
    """Stick-breaking logits η, shape ``event_shape + (K − 1,)``.

    η_c = α_c − log Σ_{k>c} exp α_k. A −∞ logit (an impossible category) is
    replaced, for this computation only, by a finite floor at least 1000
    below every finite logit of its variable, where exp underflows to an
    exact 0 in float32 and float64: the probabilities are unchanged, η_c is
    then finite or ±∞-like (σ(η_c) exactly 0 or 1), and the derivative with
    respect to an impossible category is 0, as exact enumeration gives. (With
    the −∞ themselves, two of them at the end of the categories give
    η = (−∞) − (−∞) = NaN, and anywhere the derivative of cumlogsumexp is NaN.)
    """
    finite = jnp.isfinite(logits)
    lowest = jnp.min(jnp.where(finite, logits, jnp.inf), axis=-1, keepdims=True)
    floor = jax.lax.stop_gradient(lowest - 1000.0 - jnp.abs(lowest))
    safe = jnp.where(jnp.isneginf(logits), floor, logits)
    tail = jax.lax.cumlogsumexp(safe, axis=safe.ndim - 1, reverse=True)
    return safe[..., :-1] - tail[..., 1:]

  @staticmethod
  def from_binary(bits):
    """Indices (int32, ``event_shape``) from stick-breaking bits: the first 1."""
    padded = jnp.concatenate([bits, jnp.ones_like(bits[..., :1])], axis=-1)
    return jnp.argmax(padded, axis=-1).astype(jnp.int32)

  @staticmethod
  def binary_reached(bits):
    """1 where stage c is reached (all earlier bits 0): x depends only on those bits."""
    before = jnp.cumprod(1 - bits, axis=-1)
    return jnp.concatenate([jnp.ones_like(bits[..., :1]), before[..., :-1]], axis=-1)

  @staticmethod
  def per_variable_log_probs(logits):
    """log p_v(k) for every variable v (flattened event) and category k: (V, K)."""
    return jnp.reshape(jax.nn.log_softmax(logits, axis=-1), (-1, logits.shape[-1]))

  @staticmethod
  def num_configurations(logits_shape):
    return logits_shape[-1] ** math.prod(logits_shape[:-1])

  @staticmethod
  def describe_configurations(logits_shape):
    k, v = logits_shape[-1], math.prod(logits_shape[:-1])
    return (
      f"{k}^{v} = {k**v:,} configurations of a Categorical with "
      f"{v} variable(s) of {k} categories (logits shape {tuple(logits_shape)})"
    )

  @staticmethod
  def enumerate_configurations(logits_shape, dtype):
    """All K^V configurations as int32 indices ``(N, *event_shape)``, row i the base-K digits of i."""
    del dtype
    event_shape, base = tuple(logits_shape[:-1]), logits_shape[-1]
    v = math.prod(event_shape)
    n = base**v
    idx = np.arange(n, dtype=np.int64)[:, None]
    powers = base ** np.arange(v - 1, -1, -1, dtype=np.int64)[None, :]
    digits = (idx // powers) % base
    return jnp.asarray(digits.reshape((n,) + event_shape), jnp.int32)

  @staticmethod
  def from_values(logits, values):
    """(..., V) int32 values -> samples as f receives them (indices)."""
    return values.reshape(values.shape[:-1] + logits.shape[:-1])
