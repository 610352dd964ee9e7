"""Specification of variance-reduced sampling for pathwise estimation
(scoregrad.sampling, ``pathwise(sampling=...)``).

Antithetic and randomised-QMC samples are dependent within one estimate, so
every statistical check here runs many independent estimates (one key each)
and compares their mean and variance with exact values derived by
quadrature. Each assertion has false-failure rate 1e-6 (Bonferroni over
coordinates), fewer than 15 assertions in the file.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

import scoregrad as sg
from scoregrad.testing import assert_unbiased, assert_variance

RATE = 1e-6
MU, SIGMA = 0.6, 1.3
NORMAL = lambda p: sg.dists.Normal(p["loc"], p["scale"])
EXACT_COS = {
  "loc": -math.sin(MU) * math.exp(-(SIGMA**2) / 2),
  "scale": -SIGMA * math.cos(MU) * math.exp(-(SIGMA**2) / 2),
}
# Per-sample pathwise terms for f = cos at x = μ + σz: (f'(x), f'(x) z).
TERMS = {"loc": lambda z: -np.sin(MU + SIGMA * z), "scale": lambda z: -np.sin(MU + SIGMA * z) * z}


def _replicates(est, f, dist_fn, params, count, key=0):
  keys = jax.random.split(jax.random.key(key), count)
  return jax.jit(jax.vmap(lambda k: est.estimate(k, f, dist_fn, params, est.init(params)).grad))(
    keys
  )


def _std_normal(h):
  return integrate.quad(
    lambda z: h(z) * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-13, epsrel=1e-12, limit=400
  )[0]


def test_halton_points_are_radical_inverses():
  """Checked against an independent digit-string computation (np.base_repr)."""

  def radical_inverse(i, base):
    digits = np.base_repr(i, base)[::-1]
    return sum(int(d, base) / base ** (k + 1) for k, d in enumerate(digits))

  pts = sg.sampling.halton_points(50, 4)
  for i in range(50):
    for j, base in enumerate([2, 3, 5, 7]):
      assert abs(pts[i, j] - radical_inverse(i, base)) < 1e-15
  # The first 2^k points of the base-2 column stratify [0, 1) exactly.
  first = np.sort(sg.sampling.halton_points(64, 1)[:, 0])
  np.testing.assert_allclose(first, np.arange(64) / 64)
  assert sg.sampling.halton_points(3000, 30).shape == (3000, 30)


def test_lattice_points():
  """frac(i z / n) with z = (1, a, a², …) mod n, a coprime with n: every
  coordinate is a permutation of the grid {j/n}."""
  for n, d in [(16, 3), (30, 5), (1000, 40)]:
    pts = sg.sampling.lattice_points(n, d)
    a = sg.sampling.korobov_generator(n, d)
    assert math.gcd(a, n) == 1
    z = np.array([pow(a, j, n) for j in range(d)])
    np.testing.assert_allclose(pts, np.mod(np.arange(n)[:, None] * z[None, :], n) / n)
    for j in range(d):
      np.testing.assert_allclose(np.sort(pts[:, j]), np.arange(n) / n)


def test_randomized_qmc_rows_are_exactly_standard_normal():
  """Row i over independent shifts: mean of ε, ε², ε³, ε⁴ is 0, 1, 0, 3 with
  variances 1, 2, 15, 96 (normal moments E ε^{2k} = (2k − 1)!!)."""
  keys = jax.random.split(jax.random.key(1), 20_000)
  eps = jax.jit(jax.vmap(lambda k: sg.sampling.randomized_qmc_normal(k, 16, (3,), jnp.float32)))(
    keys
  )
  assert eps.shape == (20_000, 16, 3)
  row = np.asarray(eps[:, 5, :], np.float64)  # one point of the set, 3 coordinates
  draws = np.stack([row, row**2, row**3, row**4], axis=1)
  assert_unbiased(
    draws,
    np.array([0.0, 1.0, 0.0, 3.0])[:, None] * np.ones(3),
    false_failure_rate=RATE,
    exact_variance=np.array([1.0, 2.0, 15.0, 96.0])[:, None] * np.ones(3),
  )


def test_antithetic_pairs():
  eps = sg.sampling.antithetic_normal(jax.random.key(0), 6, (2,), jnp.float32)
  np.testing.assert_array_equal(eps[:3], -eps[3:])


def test_antithetic_unbiased_with_exact_variance():
  """ĝ_n averages n/2 independent pair means q(z) = (g(z) + g(−z))/2, so
  Var ĝ_n = Var q / (n/2), with Var q by quadrature. It beats i.i.d.
  sampling (Var g / n) for ∂μ, whose term −sin(μ + σz) is nearly odd in z
  around the mode, and loses for ∂σ, whose term −sin(μ + σz)·z is nearly
  even: antithetic sampling is not a free lunch."""
  n = 8
  var_anti, var_iid = {}, {}
  for p, g in TERMS.items():
    q = lambda z, g=g: 0.5 * (g(z) + g(-z))
    var_anti[p] = (_std_normal(lambda z: q(z) ** 2) - EXACT_COS[p] ** 2) / (n / 2)
    var_iid[p] = (_std_normal(lambda z: g(z) ** 2) - EXACT_COS[p] ** 2) / n
  assert var_anti["loc"] < 0.5 * var_iid["loc"] and var_anti["scale"] > var_iid["scale"]
  params = {"loc": jnp.asarray(MU), "scale": jnp.asarray(SIGMA)}
  est = sg.pathwise(num_samples=n, sampling="antithetic")
  grads = _replicates(est, jnp.cos, NORMAL, params, 40_000)
  assert_unbiased(grads, EXACT_COS, false_failure_rate=RATE, exact_variance=var_anti)
  assert_variance(grads, var_anti, false_failure_rate=RATE)


def test_qmc_unbiased_with_exact_variance(x64):
  """With one shift Δ ~ U[0, 1), ĝ(Δ) = (1/n) Σ_i G(frac(p_i + Δ)), G(u) =
  g(Φ⁻¹(u)) and p_i the lattice points (in 1-D the grid {i/n}); E ĝ = ∫G =
  the gradient and Var ĝ = ∫₀¹ ĝ(Δ)² dΔ − (∫G)², integrated piecewise
  between the jumps Δ = 1 − p_i. At n = 16 it is 130× below the i.i.d. variance Var g / n for
  ∂μ (bounded smooth integrand) and 4× below for ∂σ (its integrand grows
  like Φ⁻¹(u) at the ends of the cube, where QMC gains least)."""
  n = 16
  pts = sg.sampling.lattice_points(n, 1)[:, 0]
  edges = np.unique(np.concatenate([[0.0, 1.0], 1.0 - pts[pts > 0]]))
  var_qmc, var_iid = {}, {}
  for p, g in TERMS.items():
    est_at = lambda d, g=g: np.mean(g(special.ndtri(np.mod(pts + d, 1.0))))
    second = sum(
      integrate.quad(lambda d: est_at(d) ** 2, a, b, epsabs=1e-13, epsrel=1e-10, limit=200)[0]
      for a, b in zip(edges[:-1], edges[1:])
    )
    var_qmc[p] = second - EXACT_COS[p] ** 2
    var_iid[p] = (_std_normal(lambda z: g(z) ** 2) - EXACT_COS[p] ** 2) / n
  assert var_qmc["loc"] < 0.01 * var_iid["loc"] and var_qmc["scale"] < 0.5 * var_iid["scale"]
  params = {"loc": jnp.asarray(MU, jnp.float64), "scale": jnp.asarray(SIGMA, jnp.float64)}
  est = sg.pathwise(num_samples=n, sampling="qmc")
  grads = _replicates(est, jnp.cos, NORMAL, params, 20_000, key=2)
  assert grads["loc"].dtype == jnp.float64
  assert_unbiased(grads, EXACT_COS, false_failure_rate=RATE, exact_variance=var_qmc)
  assert_variance(grads, var_qmc, false_failure_rate=RATE)


@pytest.mark.parametrize("sampling", ["antithetic", "qmc"])
def test_multivariate_normal_unbiased(sampling):
  """f = ||x||²: ∇μ = 2μ, ∇L = 2L (lower triangle). With antithetic pairs the
  per-pair μ-gradient 2(μ + Lε) + 2(μ − Lε) is exactly 4μ: zero variance."""
  mu = jnp.array([0.5, -1.0, 2.0])
  L = jnp.array([[1.0, 0.0, 0.0], [0.3, 0.8, 0.0], [-0.2, 0.1, 1.5]])
  params = {"loc": mu, "scale_tril": L}
  dist_fn = lambda p: sg.dists.MultivariateNormalTriL(p["loc"], p["scale_tril"])
  est = sg.pathwise(num_samples=8, sampling=sampling)
  grads = _replicates(est, lambda x: jnp.sum(x**2), dist_fn, params, 20_000, key=3)
  exact = {"loc": 2 * np.asarray(mu), "scale_tril": 2 * np.asarray(L)}
  if sampling == "antithetic":
    np.testing.assert_allclose(grads["loc"], np.broadcast_to(exact["loc"], (20_000, 3)), rtol=1e-5)
    grads = {"scale_tril": grads["scale_tril"]}
    exact = {"scale_tril": exact["scale_tril"]}
  # Upper-triangle entries are exactly zero; test the lower triangle.
  lower = np.tril_indices(3)
  assert_unbiased(
    np.asarray(grads["scale_tril"])[:, lower[0], lower[1]],
    exact["scale_tril"][lower],
    false_failure_rate=RATE,
  )


def test_no_recompilation_and_per_sample_shape():
  est = sg.pathwise(num_samples=16, sampling="qmc", per_sample=True)
  traces = []

  @jax.jit
  def step(key, params):
    traces.append(1)
    return est.estimate(key, jnp.cos, NORMAL, params, est.init(params))

  out = step(jax.random.key(0), {"loc": jnp.asarray(0.1), "scale": jnp.asarray(1.0)})
  step(jax.random.key(1), {"loc": jnp.asarray(0.7), "scale": jnp.asarray(2.0)})
  assert len(traces) == 1
  assert out.per_sample["loc"].shape == (16,)
  np.testing.assert_allclose(out.grad["loc"], jnp.mean(out.per_sample["loc"]), rtol=1e-5)


def test_bad_sampling_settings():
  with pytest.raises(ValueError, match=r"sampling` must be one of .*'sobol'"):
    sg.pathwise(num_samples=4, sampling="sobol")
  with pytest.raises(ValueError, match="must be even; got num_samples=5. Use num_samples=6"):
    sg.pathwise(num_samples=5, sampling="antithetic")
  est = sg.pathwise(num_samples=4, sampling="qmc")
  gamma = lambda p: sg.dists.Gamma(p, 1.0)
  with pytest.raises(
    ValueError, match="supports scoregrad.dists.Normal and MultivariateNormalTriL.*Gamma"
  ):
    est.estimate(jax.random.key(0), lambda x: x, gamma, jnp.asarray(2.0), est.init(None))
  with pytest.raises(ValueError, match="num_points"):
    sg.sampling.halton_points(0, 2)
  with pytest.raises(ValueError, match="num_points"):
    sg.sampling.lattice_points(3, 0)
