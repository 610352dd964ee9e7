r"""Variance-reduced sampling for pathwise estimation of Gaussians.

The pathwise estimator averages ∇θ f(g(ε_i; θ)) over noise ε_i ~ N(0, I).
Any set of ε_i whose members are each marginally N(0, I) keeps that average
unbiased; dependence between them can lower its variance:

* **antithetic** (``sampling="antithetic"``): ε_{n/2+i} = −ε_i. Each ε_i is
  N(0, I) by symmetry. The pair average has variance ½ Var(g)(1 + ρ), ρ the
  correlation of g(ε) and g(−ε): a gain when the per-sample gradient is close
  to an odd function of ε (e.g. the mean gradient of a smooth f), a loss when
  it is even.
* **randomised quasi-Monte Carlo** (``sampling="qmc"``): a rank-1 lattice
  u_i = frac(i z / n) ∈ [0, 1)^d (Korobov generating vector z_j = a^j mod n,
  a chosen by a small search on the P₂ figure of merit), shifted by one
  uniform random vector Δ modulo 1 (Cranley–Patterson rotation), then
  ε_i = Φ⁻¹(u_i). Each u_i is exactly uniform, so each ε_i is exactly
  N(0, I) and the estimate is unbiased. With a coprime to n every coordinate
  of the point set is the full grid {0, 1/n, …, (n−1)/n}, so additive
  integrands gain in any dimension; for smooth integrands in low dimension the
  variance falls faster than 1/n. Interactions between many coordinates gain
  less. (A Halton set is also provided, :func:`halton_points`, but its
  coordinates in prime bases larger than n cover only [0, n/p): used in high
  dimension with few points it does worse than i.i.d. sampling.)

In both cases the ``num_samples`` per-sample gradients of one estimate are
dependent: their spread does not measure the estimate's variance. Measure
that across independent keys (independent shifts / antithetic sets).

References:
  Owen, "Monte Carlo theory, methods and examples", 2013, Chapters 8.2
  (antithetic sampling) and 17 (randomised QMC).
  Cranley & Patterson, "Randomization of number theoretic methods for
  multiple integration", SIAM J. Numer. Anal. 1976.
  Korobov, "The approximate computation of multiple integrals", Dokl. Akad.
  Nauk SSSR 1959; Sloan & Joe, "Lattice Methods for Multiple Integration",
  Oxford 1994 (P_α figure of merit).
  Buchholz, Wenzel & Mandt, "Quasi-Monte Carlo Variational Inference",
  ICML 2018.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from scoregrad._src.validation import NotApplicableError
from scoregrad.dists._base import families_with

SAMPLING_METHODS = ("iid", "antithetic", "qmc")


def check_sampling(sampling, num_samples: int) -> str:
  """Validates the ``sampling`` factory argument."""
  if sampling not in SAMPLING_METHODS:
    raise ValueError(f"`sampling` must be one of {SAMPLING_METHODS}; got sampling={sampling!r}.")
  if sampling == "antithetic" and num_samples % 2:
    raise ValueError(
      f"sampling='antithetic' draws samples in pairs (ε, −ε), so `num_samples` "
      f"must be even; got num_samples={num_samples}. Use "
      f"num_samples={num_samples + 1}."
    )
  return sampling


def check_chunk(sampling: str, chunk_size: int) -> None:
  """What ``sampling`` allows of a chunk size (for :func:`scoregrad.chunked`)."""
  if sampling == "qmc":
    raise ValueError(
      f"`chunk_size={chunk_size}` with sampling='qmc': a chunked lattice is a "
      "different point set; use sampling='iid' or 'antithetic', or drop chunk_size."
    )
  if sampling == "antithetic" and chunk_size % 2:
    raise ValueError(
      f"`chunk_size={chunk_size}` with sampling='antithetic': antithetic pairs stay "
      f"within a chunk, so chunk_size must be even; use chunk_size={chunk_size + 1}."
    )


def _primes(count: int) -> np.ndarray:
  """The first ``count`` primes."""
  if count <= 0:
    return np.zeros(0, np.int64)
  limit = max(16, int(count * (math.log(count + 1) + math.log(math.log(count + 3)))) + 10)
  while True:
    sieve = np.ones(limit + 1, bool)
    sieve[:2] = False
    for p in range(2, int(limit**0.5) + 1):
      if sieve[p]:
        sieve[p * p :: p] = False
    primes = np.flatnonzero(sieve)
    if primes.size >= count:
      return primes[:count]
    limit *= 2


@functools.lru_cache(maxsize=32)
def _halton_cached(num_points: int, dim: int) -> np.ndarray:
  points = np.empty((num_points, dim), np.float64)
  index = np.arange(num_points, dtype=np.int64)
  for j, base in enumerate(_primes(dim)):
    value = np.zeros(num_points)
    factor = 1.0 / base
    i = index.copy()
    while np.any(i > 0):
      value += (i % base) * factor
      i //= base
      factor /= base
    points[:, j] = value
  points.setflags(write=False)
  return points


def halton_points(num_points: int, dim: int) -> np.ndarray:
  """The first ``num_points`` points of the ``dim``-dimensional Halton sequence.

  Point i has coordinate j equal to the radical inverse of i in the j-th
  prime base (van der Corput), starting at i = 0. Computed in NumPy float64
  (at trace time when used inside an estimator), cached.

  Example:
    >>> import scoregrad as sg
    >>> sg.sampling.halton_points(4, 2).tolist()
    [[0.0, 0.0], [0.5, 0.3333333333333333], [0.25, 0.6666666666666666], [0.75, 0.1111111111111111]]

  References:
    Halton, "On the efficiency of certain quasi-random sequences of points in
    evaluating multi-dimensional integrals", Numer. Math. 1960.
  """
  if num_points < 1 or dim < 1:
    raise ValueError(f"`num_points` and `dim` must be >= 1; got {num_points}, {dim}.")
  return _halton_cached(int(num_points), int(dim))


def _p2_criterion(num_points: int, generator: np.ndarray) -> float:
  """Sloan–Joe P₂ with product weights γ_j = 1/(j+1)² (smaller is better)."""
  i = np.arange(num_points, dtype=np.int64)[:, None]
  x = (i * generator[None, :] % num_points) / num_points
  b2 = x * x - x + 1.0 / 6.0
  weights = 1.0 / (np.arange(generator.size) + 1.0) ** 2
  return float(np.mean(np.prod(1.0 + weights * 2 * math.pi**2 * b2, axis=1)) - 1.0)


@functools.lru_cache(maxsize=64)
def korobov_generator(num_points: int, dim: int) -> int:
  """A Korobov multiplier a (coprime with n) for an n-point lattice in d dimensions.

  Searches up to 64 candidates coprime with n (evenly spread, plus the
  golden-ratio choice round(n/φ), which is near-optimal in 2-D), scoring the
  first min(d, 8) coordinates of z = (1, a, a², …) mod n by P₂.
  """
  n = int(num_points)
  if n <= 2 or dim <= 1:
    return 1
  coprime = [a for a in range(1, n) if math.gcd(a, n) == 1]
  golden = round(n / ((1 + math.sqrt(5)) / 2))
  step = max(1, len(coprime) // 64)
  candidates = set(coprime[::step][:64])
  for g in (golden, golden + 1, golden - 1):
    if 0 < g < n and math.gcd(g, n) == 1:
      candidates.add(g)
  m = min(dim, 8)
  best, best_score = 1, math.inf
  for a in sorted(candidates):
    z = np.array([pow(a, j, n) for j in range(m)], dtype=np.int64)
    score = _p2_criterion(n, z)
    if score < best_score:
      best, best_score = a, score
  return best


@functools.lru_cache(maxsize=32)
def _lattice_cached(num_points: int, dim: int) -> np.ndarray:
  a = korobov_generator(num_points, dim)
  z = np.array([pow(a, j, num_points) for j in range(dim)], dtype=np.int64)
  i = np.arange(num_points, dtype=np.int64)[:, None]
  points = (i * z[None, :] % num_points) / num_points
  points.setflags(write=False)
  return points


def lattice_points(num_points: int, dim: int) -> np.ndarray:
  """The rank-1 lattice frac(i z / n), i < n, with Korobov z = (1, a, a², …) mod n.

  Every coordinate is a permutation of {0, 1/n, …, (n−1)/n} (a is coprime
  with n). Computed exactly in integer arithmetic, in NumPy (at trace time
  inside an estimator), cached.

  Example:
    >>> import scoregrad as sg
    >>> sg.sampling.lattice_points(5, 2).tolist()   # z = (1, 2)
    [[0.0, 0.0], [0.2, 0.4], [0.4, 0.8], [0.6, 0.2], [0.8, 0.6]]
  """
  if num_points < 1 or dim < 1:
    raise ValueError(f"`num_points` and `dim` must be >= 1; got {num_points}, {dim}.")
  return _lattice_cached(int(num_points), int(dim))


def antithetic_normal(key, num_samples: int, event_shape, dtype) -> jax.Array:
  """Standard normal noise in antithetic pairs: rows i and n/2 + i are ε and −ε."""
  half = jax.random.normal(key, (num_samples // 2,) + tuple(event_shape), dtype)
  return jnp.concatenate([half, -half], axis=0)


def randomized_qmc_normal(key, num_samples: int, event_shape, dtype) -> jax.Array:
  """Randomly shifted lattice points pushed through Φ⁻¹: each row is exactly N(0, I).

  u_i = frac(p_i + Δ) for the :func:`lattice_points` p_i and Δ ~ U[0, 1)^d,
  ε_i = Φ⁻¹(u_i). u_i is clipped to
  the open interval (tiny, 1 − ε_machine/2) of the dtype so Φ⁻¹ stays finite;
  this moves a probability mass below 1e-7 (float32) and is otherwise exact.

  For dtypes narrower than float32 (bfloat16, float16, which Φ⁻¹ does not
  accept and whose 8 or 11 significant bits would round the lattice itself)
  the points, the shift and Φ⁻¹ are computed in float32 and only ε is
  rounded to ``dtype``, as any sample drawn in that dtype is.
  """
  event_shape = tuple(event_shape)
  dim = max(1, math.prod(event_shape))
  work = _working_dtype(dtype)
  points = jnp.asarray(lattice_points(num_samples, dim), work)
  shift = jax.random.uniform(key, (dim,), work)
  u = points + shift
  u = u - jnp.floor(u)
  info = jnp.finfo(work)
  u = jnp.clip(u, info.tiny, 1.0 - info.eps / 2)
  eps = jax.scipy.special.ndtri(u).astype(dtype)
  return eps.reshape((num_samples,) + event_shape)


def _working_dtype(dtype):
  """``dtype``, or float32 for floating dtypes narrower than float32."""
  dtype = jnp.dtype(dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
      f"Quasi-Monte Carlo noise needs a floating dtype; got dtype={dtype} (the "
      "dtype of the distribution's parameters). Pass float parameters, e.g. "
      "jnp.asarray(params, jnp.float32)."
    )
  return jnp.dtype(jnp.float32) if jnp.finfo(dtype).bits < 32 else dtype


def check_gaussian(dist, sampling: str, name: str = "dist_fn(params)") -> None:
  """Raises unless ``dist``'s family maps standard normal noise to samples."""
  if not callable(getattr(dist, "from_standard_normal", None)):
    inner = getattr(dist, "dist", dist)
    families = "scoregrad.dists." + " and ".join(families_with("from_standard_normal"))
    raise NotApplicableError(
      f"sampling={sampling!r} draws Gaussian noise ε and maps it through "
      f"x = loc + scale·ε, so it supports {families}; `{name}` is "
      f"{type(inner).__name__}. Use sampling='iid' for other distributions."
    )


def standard_normal_noise(key, sampling: str, num_samples: int, event_shape, dtype):
  """Noise ε of shape (num_samples, *event_shape) for ``sampling``."""
  if sampling == "antithetic":
    return antithetic_normal(key, num_samples, event_shape, dtype)
  if sampling == "qmc":
    return randomized_qmc_normal(key, num_samples, event_shape, dtype)
  return jax.random.normal(key, (num_samples,) + tuple(event_shape), dtype)
