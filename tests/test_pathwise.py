"""Specification of the pathwise (reparameterization) estimator.
False-failure rate 1e-6 per statistical assertion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import scoregrad as sg
from scoregrad.testing import assert_unbiased, assert_variance

RATE = 1e-6


def _gauss(h, mu, sigma):
  return integrate.quad(
    lambda x: h(x) * stats.norm.pdf(x, mu, sigma),
    -np.inf,
    np.inf,
    epsabs=1e-11,
    epsrel=1e-11,
    limit=500,
  )[0]


@pytest.mark.parametrize(
  "f_np, df_np, f_jnp",
  [
    (lambda x: (x - 2) ** 2, lambda x: 2 * (x - 2), lambda x: (x - 2) ** 2),
    (np.cos, lambda x: -np.sin(x), jnp.cos),
  ],
  ids=["quadratic", "cos"],
)
def test_gaussian_unbiased_exact_variance(f_np, df_np, f_jnp, dtype):
  """g_μ = f'(x), g_σ = f'(x) ε with ε = (x − μ)/σ; moments by quadrature."""
  mu, sigma = 0.6, 1.3
  g = {
    "loc": _gauss(df_np, mu, sigma),
    "scale": _gauss(lambda x: df_np(x) * (x - mu) / sigma, mu, sigma),
  }
  var = {
    "loc": _gauss(lambda x: df_np(x) ** 2, mu, sigma) - g["loc"] ** 2,
    "scale": _gauss(lambda x: (df_np(x) * (x - mu) / sigma) ** 2, mu, sigma) - g["scale"] ** 2,
  }
  params = {"loc": jnp.asarray(mu, dtype), "scale": jnp.asarray(sigma, dtype)}
  dist_fn = lambda p: sg.dists.Normal(p["loc"], p["scale"])
  est = sg.pathwise(num_samples=100_000, per_sample=True)
  out = jax.jit(lambda k: est.estimate(k, f_jnp, dist_fn, params, est.init(params)))(
    jax.random.key(0)
  )
  assert out.per_sample["loc"].dtype == dtype
  assert_unbiased(out.per_sample, g, false_failure_rate=RATE, exact_variance=var)
  assert_variance(out.per_sample, var, false_failure_rate=RATE)


def test_per_sample_and_batched_paths_agree():
  params = jnp.array([0.3, 0.9])
  dist_fn = lambda p: sg.dists.Normal(p[0], p[1])
  a = sg.pathwise(num_samples=50)
  b = sg.pathwise(num_samples=50, per_sample=True)
  key = jax.random.key(1)
  ga = a.estimate(key, jnp.sin, dist_fn, params, a.init(params))
  gb = b.estimate(key, jnp.sin, dist_fn, params, b.init(params))
  np.testing.assert_allclose(ga.grad, gb.grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ga.value, gb.value, rtol=1e-6)


def test_multivariate_normal_tril():
  """f(x) = ||x||² ⇒ E = ||μ||² + tr(L Lᵀ): ∇μ = 2μ, ∇L = 2L (lower triangle)."""
  mu = jnp.array([0.5, -1.0, 2.0])
  L = jnp.array([[1.0, 0.0, 0.0], [0.3, 0.8, 0.0], [-0.2, 0.1, 1.5]])
  params = {"loc": mu, "scale_tril": L}
  dist_fn = lambda p: sg.dists.MultivariateNormalTriL(p["loc"], p["scale_tril"])
  exact = {"loc": 2 * np.asarray(mu), "scale_tril": 2 * np.asarray(L)}
  for est in [
    sg.pathwise(num_samples=100_000, per_sample=True),
    sg.score_function(num_samples=200_000, per_sample=True),
  ]:
    out = jax.jit(
      lambda k: est.estimate(k, lambda x: jnp.sum(x**2), dist_fn, params, est.init(params))
    )(jax.random.key(2))
    assert_unbiased(out.per_sample, exact, false_failure_rate=RATE)


def test_gamma_implicit_reparameterization():
  """E[x] = α/β ⇒ ∂α = 1/β, ∂β = −α/β²."""
  params = {"concentration": jnp.asarray(2.5), "rate": jnp.asarray(1.5)}
  dist_fn = lambda p: sg.dists.Gamma(p["concentration"], p["rate"])
  exact = {"concentration": 1 / 1.5, "rate": -2.5 / 1.5**2}
  for est in [
    sg.pathwise(num_samples=100_000, per_sample=True),
    sg.score_function(num_samples=200_000, per_sample=True),
  ]:
    out = jax.jit(lambda k: est.estimate(k, lambda x: x, dist_fn, params, est.init(params)))(
      jax.random.key(3)
    )
    assert_unbiased(out.per_sample, exact, false_failure_rate=RATE)


def test_pathwise_variance_far_below_score_function_on_smooth_cost():
  params = jnp.array([1.0, 1.0])
  dist_fn = lambda p: sg.dists.Normal(p[0], p[1])
  f = lambda x: (x - 2.0) ** 2
  outs = {}
  for name, est in [
    ("sf", sg.score_function(num_samples=20_000, per_sample=True)),
    ("pw", sg.pathwise(num_samples=20_000, per_sample=True)),
  ]:
    outs[name] = est.estimate(jax.random.key(4), f, dist_fn, params, est.init(params))
  v = {k: sg.diagnostics.variance(o.per_sample) for k, o in outs.items()}
  assert np.all(v["pw"] < 0.5 * v["sf"])
