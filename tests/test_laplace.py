"""Laplace: the family added end to end as one file (scoregrad/dists/laplace.py).

Nothing outside that file (and the import line in dists/__init__.py) names
Laplace; these tests show every estimator that applies picks it up: the
score function, pathwise, measure-valued (coupled and not) and the
delta-method control variate, against closed forms.

For f(x) = cos(x), E[cos(μ + bℓ)] = cos μ / (1 + b²) (the Laplace
characteristic function is 1/(1 + b²t²)), so
∂μ = −sin μ / (1 + b²) and ∂b = −2b cos μ / (1 + b²)².

Statistical assertions use false-failure rate 1e-6 each; there are 14, so
the file fails by chance with probability below 2e-5 for any seed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import scoregrad as sg
from scoregrad.testing import assert_unbiased, assert_variance

RATE = 1e-6
LOC = np.array([0.4, -1.3])
SCALE = np.array([0.7, 1.6])
PARAMS = {
  "loc": jnp.asarray(LOC, jnp.float32),
  "log_scale": jnp.log(jnp.asarray(SCALE, jnp.float32)),
}
DIST_FN = lambda p: sg.dists.Laplace(p["loc"], jnp.exp(p["log_scale"]))


def f_cos(x):
  return jnp.sum(jnp.cos(x))


def exact_cos_grad():
  """∇ over PARAMS (loc, log_scale) of Σ_j cos μ_j / (1 + b_j²)."""
  d_loc = -np.sin(LOC) / (1 + SCALE**2)
  d_scale = -2 * SCALE * np.cos(LOC) / (1 + SCALE**2) ** 2
  return {"loc": d_loc, "log_scale": d_scale * SCALE}


def test_log_prob_matches_scipy():
  x = np.array([[-2.0, 0.3], [0.4, -1.3], [5.0, 1e-3]])
  d = sg.dists.Laplace(LOC, SCALE)
  expected = stats.laplace(loc=LOC, scale=SCALE).logpdf(x).sum(axis=-1)
  np.testing.assert_allclose(d.log_prob(jnp.asarray(x)), expected, rtol=1e-5)
  assert d.log_prob(jnp.asarray(x[0])).shape == ()


def test_samples_have_the_laplace_moments():
  """Sample mean and variance against μ and 2b² (the family's mean() and
  covariance(), which the delta method uses)."""
  d = sg.dists.Laplace(jnp.asarray(LOC), jnp.asarray(SCALE))
  np.testing.assert_allclose(d.mean(), LOC, rtol=1e-6)
  np.testing.assert_allclose(d.covariance(), np.diag(2 * SCALE**2), rtol=1e-6)
  x = np.asarray(d.sample(jax.random.key(0), (200_000,)))
  # Per-draw variance of x is 2b²; of (x − μ)² it is E(x−μ)⁴ − (2b²)² = 24b⁴ − 4b⁴.
  assert_unbiased(x, LOC, exact_variance=2 * SCALE**2, false_failure_rate=RATE)
  assert_unbiased(
    (x - LOC) ** 2, 2 * SCALE**2, exact_variance=20 * SCALE**4, false_failure_rate=RATE
  )
  assert stats.kstest(x[:, 1], stats.laplace(loc=LOC[1], scale=SCALE[1]).cdf).pvalue > 1e-6


ESTIMATORS = {
  "score_function": lambda: sg.score_function(num_samples=20_000, per_sample=True),
  "score_function+delta_method": lambda: sg.score_function(
    num_samples=20_000, per_sample=True, control_variate=sg.control_variates.delta_method()
  ),
  "pathwise": lambda: sg.pathwise(num_samples=20_000, per_sample=True),
  "measure_valued": lambda: sg.measure_valued(num_samples=20_000, per_sample=True),
  "measure_valued(uncoupled)": lambda: sg.measure_valued(
    num_samples=20_000, per_sample=True, coupling=False
  ),
}


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_unbiased_for_cos(name):
  est = ESTIMATORS[name]()
  out = jax.jit(lambda k: est.estimate(k, f_cos, DIST_FN, PARAMS, est.init(PARAMS)))(
    jax.random.key(1)
  )
  assert_unbiased(out.per_sample, exact_cos_grad(), false_failure_rate=RATE)


def test_measure_valued_exact_variance_for_linear_cost():
  """f(x) = x₀ + x₁. Coupled loc term: (f(μ + bE) − f(μ − bE)) / (2b) = E,
  E ~ Exp(1): mean 1, variance 1. Coupled scale term: ±bE / b: mean 0
  (E[x] does not depend on b), variance E[E²] = 2."""
  est = sg.measure_valued(num_samples=100_000, per_sample=True)
  params = {"loc": jnp.asarray(LOC, jnp.float32), "scale": jnp.asarray(SCALE, jnp.float32)}
  out = jax.jit(
    lambda k: est.estimate(
      k, jnp.sum, lambda p: sg.dists.Laplace(p["loc"], p["scale"]), params, est.init(params)
    )
  )(jax.random.key(2))
  mean = {"loc": np.ones(2), "scale": np.zeros(2)}
  var = {"loc": np.ones(2), "scale": 2 * np.ones(2)}
  assert_unbiased(out.per_sample, mean, exact_variance=var, false_failure_rate=RATE)
  assert_variance(out.per_sample, var, false_failure_rate=RATE)


def test_delta_method_is_exact_for_quadratic_cost():
  """f quadratic ⇒ h = f: every per-sample row is the exact gradient of
  E[Σ x²] = Σ μ² + 2b², i.e. (2μ, 4b²) in (loc, log_scale)."""
  est = sg.score_function(
    num_samples=64, per_sample=True, control_variate=sg.control_variates.delta_method()
  )
  out = est.estimate(jax.random.key(3), lambda x: jnp.sum(x**2), DIST_FN, PARAMS, est.init(PARAMS))
  exact = {"loc": 2 * LOC, "log_scale": 4 * SCALE**2}
  for k in exact:
    np.testing.assert_allclose(
      out.per_sample[k], np.broadcast_to(exact[k], (64, 2)), rtol=2e-4, atol=1e-5
    )


def test_discrete_estimators_refuse_it_by_name():
  est = sg.disarm(num_pairs=4)
  with pytest.raises((TypeError, ValueError), match="Laplace"):
    est.estimate(jax.random.key(0), f_cos, DIST_FN, PARAMS, est.init(PARAMS))


def test_score_function_second_derivatives_refused_pathwise_kept():
  """∂²/∂μ² log p is a point mass for Laplace, so DiCE's Hessian would miss
  it (≈ 0 instead of 2 for E[x²]): the score function refuses; pathwise
  (which differentiates f, not log p) gives the exact Hessian 2 in loc."""
  dist_fn = lambda m: sg.dists.Laplace(m, 1.0)
  sf = sg.score_function(num_samples=8)
  with pytest.raises(NotImplementedError, match="Laplace .*differentiable once only"):
    jax.jacfwd(
      lambda m: sf.estimate(jax.random.key(0), lambda x: x**2, dist_fn, m, sf.init(m)).grad
    )(0.5)
  with pytest.raises(NotImplementedError, match="Laplace"):
    jax.hessian(
      lambda m: sg.expectation(lambda x: x**2, dist_fn(m), jax.random.key(0), num_samples=8)
    )(0.5)
  pw = sg.pathwise(num_samples=8)
  h = jax.hessian(
    lambda m: pw.estimate(jax.random.key(0), lambda x: x**2, dist_fn, m, pw.init(m)).value
  )(0.5)
  np.testing.assert_allclose(h, 2.0, rtol=1e-6)
