"""Gumbel-softmax and straight-through: biased by design — the bias is
measured, not hidden.

Each test checks that the estimator's per-sample draws have the mean and
variance *derived for that estimator* (its own exact expectation: by
enumeration for straight-through, whose estimate depends on the discrete
sample only; by Gauss-Legendre quadrature over the uniforms for
Gumbel-softmax, converged to < 1e-8 by doubling the nodes), and that this mean
differs from the true gradient ∇E[f] (enumeration) by the documented bias,
which is far larger than the Monte Carlo error. False-failure rate 1e-6 per
assertion (Bonferroni over coordinates).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased, assert_variance

import discrete_oracles as oracles

RATE = 1e-6
N = 100_000
B = oracles.BERNOULLI_PROBLEMS


def _run(est, f, dist_fn, params, seed=1):
  return jax.jit(lambda k, p: est.estimate(k, f, dist_fn, p, est.init(p)))(
    jax.random.key(seed), params
  )


def _assert_biased(mean, exact, var):
  """The bias mean − exact is at least 20 Monte Carlo standard errors in some
  coordinate: the estimator's expectation is provably not the gradient."""
  se = np.sqrt(var / N)
  assert np.max(np.abs(mean - exact) / se) > 20, (mean, exact)


@pytest.mark.parametrize("problem", sorted(B))
@pytest.mark.parametrize("straight", [False, True])
def test_gumbel_softmax_bernoulli_expectation_and_bias(problem, straight, dtype):
  prob = B[problem]
  mean, var = oracles.gumbel_softmax_moments_bernoulli(prob, 0.5, straight, nodes=24)
  est = sg.gumbel_softmax(
    num_samples=N, temperature=0.5, straight_through=straight, per_sample=True
  )
  out = _run(est, prob.f, oracles.bernoulli_dist, jnp.asarray(prob.logits, dtype))
  assert out.per_sample.dtype == dtype
  assert_unbiased(out.per_sample, mean, false_failure_rate=RATE, exact_variance=var)
  assert_variance(out.per_sample, var, false_failure_rate=RATE)
  value, exact = oracles.bernoulli_exact(prob)
  _assert_biased(mean, exact, var)


def test_gumbel_softmax_bias_on_the_rebar_toy_has_the_wrong_sign():
  """Documented example: separable toy, α_2 = −0.7, t = 0.45, λ = 0.5. The true
  ∂E/∂α_2 = +0.0074 but Gumbel-softmax's expectation is −0.0011 (quadrature):
  the relaxed objective's minimum is at a different place."""
  prob = B["separable"]
  mean, _ = oracles.gumbel_softmax_moments_bernoulli(prob, 0.5, False, nodes=24)
  _, exact = oracles.bernoulli_exact(prob)
  np.testing.assert_allclose(exact[1], 0.00739043, rtol=1e-5)
  np.testing.assert_allclose(mean[1], -0.00111706, rtol=1e-4)


def test_gumbel_softmax_value_is_the_hard_sample_mean():
  """Estimate.value averages f at the hard samples: unbiased for E[f(b)]."""
  prob = B["coupled"]
  value, _ = oracles.bernoulli_exact(prob)
  fin = oracles.finite_bernoulli(prob)
  sd = np.sqrt(fin.probs @ fin.costs**2 - value**2)
  est = sg.gumbel_softmax(num_samples=N, temperature=0.5)
  out = _run(est, prob.f, oracles.bernoulli_dist, jnp.asarray(prob.logits, jnp.float32))
  from scoregrad.testing import z_threshold

  assert abs(float(out.value) - value) < z_threshold(RATE) * sd / np.sqrt(N)


def test_gumbel_softmax_categorical_expectation_and_bias():
  """One categorical variable, K = 3, f(y) = (y·a)², λ = 0.5: 3-D quadrature."""
  logits = np.array([0.5, -0.3, 1.0])
  a = jnp.array([1.0, -2.0, 0.5])
  f = lambda y: jnp.dot(y, a) ** 2
  mean, var = oracles.gumbel_softmax_moments_categorical(logits, f, 0.5, nodes=48)
  est = sg.gumbel_softmax(num_samples=N, temperature=0.5, per_sample=True)
  out = _run(est, f, oracles.categorical_dist, jnp.asarray(logits, jnp.float32))
  assert_unbiased(out.per_sample, mean, false_failure_rate=RATE, exact_variance=var)
  assert_variance(out.per_sample, var, false_failure_rate=RATE)
  p = oracles.special.softmax(logits)
  values = np.asarray(a) ** 2
  _assert_biased(mean, p * (values - p @ values), var)


@pytest.mark.parametrize("family", ["bernoulli", "categorical"])
def test_straight_through_expectation_and_bias(family, dtype):
  """ĝ = ∇f(b)·∂p/∂α depends on b only: exact mean and variance by
  enumeration; biased because f is not multilinear (coupled: sin; the
  categorical f is a squared bilinear form)."""
  if family == "bernoulli":
    prob = B["coupled"]
    mean, var = oracles.straight_through_moments_bernoulli(prob)
    exact = oracles.bernoulli_exact(prob)[1]
    f, dist_fn = prob.f, oracles.bernoulli_dist
  else:
    prob = oracles.categorical_problem()
    mean, var = oracles.straight_through_moments_categorical(prob)
    exact = oracles.categorical_exact(prob)[1]
    f, dist_fn = prob.f_onehot, oracles.categorical_dist
  est = sg.straight_through(num_samples=N, per_sample=True)
  out = _run(est, f, dist_fn, jnp.asarray(prob.logits, dtype))
  assert out.per_sample.dtype == dtype
  assert_unbiased(out.per_sample, mean, false_failure_rate=RATE, exact_variance=var)
  assert_variance(out.per_sample, var, false_failure_rate=RATE)
  _assert_biased(mean, exact, var)


def test_straight_through_exact_for_multilinear_cost():
  """For f multilinear in independent variables E[∇f(b)] ∂p/∂α = ∇E[f]: the
  enumerated mean of straight-through equals the gradient (where it is
  unbiased), so the bias above comes from non-linearity."""
  prob = oracles.categorical_problem()
  table = np.array([[1.0, -0.5, 2.0], [0.3, 1.5, -1.0], [2.5, 0.0, 0.7]])
  bilinear = prob._replace(
    table=table, f_onehot=lambda y: y[0] @ jnp.asarray(table, y.dtype) @ y[1]
  )
  mean, _ = oracles.straight_through_moments_categorical(bilinear)
  np.testing.assert_allclose(mean, oracles.categorical_exact(bilinear)[1], rtol=1e-10)
