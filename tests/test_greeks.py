"""Option Greeks under Black–Scholes (issue 26): the mixed estimator's gamma of a
call, the likelihood-ratio delta and vega of a digital, against closed forms.

S_T = S₀ exp((r − σ²/2)T + σ√T Z) is ``LogNormal(log S₀ + (r − σ²/2)T, σ√T)``.
Each statistical test replicates the estimator over R independent keys
(vmap) and compares the replicates' mean with the closed form within
z·SE, SE the replicates' standard deviation / √R. With R = 100 the
statistic is Student-t with 99 degrees of freedom: z = 4.5 gives a
false-failure rate of about 2e-5 per comparison (Bonferroni over the
comparisons of a test, stated in each).
"""

import jax
import jax.numpy as jnp
from jax.scipy.stats import norm
import numpy as np
import pytest

import scoregrad as sg
from scoregrad._src.smoothness import DiscontinuousCostError

R, SIGMA, T, K, S0 = 0.05, 0.2, 1.0, 100.0, 100.0
Z = 4.5
REPS = 100


def terminal(s0, sigma):
  return sg.dists.LogNormal(jnp.log(s0) + (R - sigma**2 / 2) * T, sigma * jnp.sqrt(T))


def call(s):
  return jnp.exp(-R * T) * jnp.maximum(s - K, 0.0)


def digital(s):
  return jnp.exp(-R * T) * (s > K).astype(s.dtype)


def d12(s0, sigma):
  d1 = (jnp.log(s0 / K) + (R + sigma**2 / 2) * T) / (sigma * jnp.sqrt(T))
  return d1, d1 - sigma * jnp.sqrt(T)


def call_closed_form(s0, sigma):
  d1, d2 = d12(s0, sigma)
  return s0 * norm.cdf(d1) - K * jnp.exp(-R * T) * norm.cdf(d2)


def digital_closed_form(s0, sigma):
  _, d2 = d12(s0, sigma)
  return jnp.exp(-R * T) * norm.cdf(d2)


def within(draws, exact, z=Z):
  draws = np.asarray(draws, np.float64)
  mean = draws.mean(axis=0)
  se = draws.std(axis=0, ddof=1) / np.sqrt(draws.shape[0])
  err = np.abs(mean - np.asarray(exact, np.float64))
  assert np.all(err <= z * se), f"mean {mean}, exact {exact}, |z| {err / se}"
  return se


def test_closed_forms_are_the_textbook_greeks():
  # The references themselves: jax derivatives of the price formulas equal
  # the textbook expressions (gamma φ(d1)/(S σ √T), digital delta
  # e^{−rT} φ(d2)/(S σ √T), digital vega −e^{−rT} φ(d2) d1/σ).
  d1, d2 = d12(S0, SIGMA)
  gamma = jax.grad(jax.grad(call_closed_form))(S0, SIGMA)
  np.testing.assert_allclose(gamma, norm.pdf(d1) / (S0 * SIGMA * np.sqrt(T)), rtol=1e-5)
  ddelta, dvega = jax.grad(digital_closed_form, argnums=(0, 1))(S0, SIGMA)
  disc = np.exp(-R * T)
  np.testing.assert_allclose(ddelta, disc * norm.pdf(d2) / (S0 * SIGMA * np.sqrt(T)), rtol=1e-5)
  np.testing.assert_allclose(dvega, -disc * norm.pdf(d2) * d1 / SIGMA, rtol=1e-5)


def _replicated_hessian(estimator, payoff, n_reps=REPS):
  def price(theta, key):
    return sg.expectation(payoff, terminal(theta[0], theta[1]), key, estimator=estimator)

  keys = jax.random.split(jax.random.key(26), n_reps)
  hess = jax.jit(jax.vmap(jax.hessian(price), in_axes=(None, 0)))
  return np.asarray(hess(jnp.array([S0, SIGMA]), keys))


def test_mixed_gamma_vanna_volga_of_the_call_are_unbiased():
  # Four comparisons (gamma, vanna both ways, volga), z = 4.5 each: ~8e-5 in all.
  draws = _replicated_hessian(sg.mixed(num_samples=2000), call)
  exact = np.asarray(jax.hessian(lambda t: call_closed_form(t[0], t[1]))(jnp.array([S0, SIGMA])))
  se = within(draws.reshape(REPS, 4), exact.reshape(4))
  # And it is the precise one: the likelihood-ratio gamma on the same
  # budget has several times the standard error (≈ 13× the variance).
  lr = _replicated_hessian(sg.score_function(num_samples=2000), call)
  assert lr[:, 0, 0].std() > 2.0 * se[0] * np.sqrt(REPS)


def test_mixed_gradient_is_the_pathwise_one_on_the_same_noise():
  est = sg.mixed(num_samples=64, per_sample=True)
  params = {"loc": jnp.array(4.6), "scale": jnp.array(0.2)}
  dist_fn = lambda p: sg.dists.LogNormal(p["loc"], p["scale"])
  out = est.estimate(jax.random.key(3), call, dist_fn, params, est.init(params))
  eps = jax.random.normal(jax.random.key(3), (64,))
  x = jnp.exp(params["loc"] + params["scale"] * eps)
  slope = jnp.exp(-R * T) * (x > K)
  np.testing.assert_allclose(out.per_sample["loc"], slope * x, rtol=1e-5)
  np.testing.assert_allclose(out.per_sample["scale"], slope * x * eps, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out.value, jnp.mean(call(x)), rtol=1e-6)
  np.testing.assert_allclose(
    jax.grad(lambda p: est.estimate(jax.random.key(3), call, dist_fn, p, ()).value)(params)["loc"],
    out.grad["loc"],
    rtol=1e-5,
  )


def test_mixed_differentiates_what_the_payoff_closes_over():
  # ∂C/∂K = −e^{−rT} N(d2) through the strike f closes over (first order,
  # one comparison, ~2e-5); a second derivative in K would need f twice
  # differentiable in K, and the kinked call is refused at trace time.
  est = sg.mixed(num_samples=2000)

  def price(strike, key):
    payoff = lambda s: jnp.exp(-R * T) * jnp.maximum(s - strike, 0.0)
    return sg.expectation(payoff, terminal(S0, SIGMA), key, estimator=est)

  keys = jax.random.split(jax.random.key(7), REPS)
  draws = jax.jit(jax.vmap(jax.grad(price), in_axes=(None, 0)))(jnp.array(K), keys)
  _, d2 = d12(S0, SIGMA)
  within(draws, -np.exp(-R * T) * norm.cdf(d2))
  with pytest.raises(NotImplementedError, match="differentiable once but not twice"):
    jax.hessian(price)(jnp.array(K), jax.random.key(0))


def _lr_draws(payoff, baseline, n=4000):
  est = sg.score_function(num_samples=n, baseline=baseline)
  params = {"s0": jnp.array(S0), "sigma": jnp.array(SIGMA)}
  dist_fn = lambda p: terminal(p["s0"], p["sigma"])

  def one(key):
    return est.estimate(key, payoff, dist_fn, params, est.init(params)).grad

  grads = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(11), REPS))
  return np.stack([np.asarray(grads["s0"]), np.asarray(grads["sigma"])], axis=1)


@pytest.mark.parametrize("baseline", [None, sg.baselines.leave_one_out()], ids=["plain", "loo"])
def test_likelihood_ratio_delta_and_vega_of_the_digital_are_unbiased(baseline):
  # Two comparisons per case (delta, vega), z = 4.5: ~4e-5 per case.
  exact = jax.grad(digital_closed_form, argnums=(0, 1))(S0, SIGMA)
  draws = _lr_draws(digital, baseline)
  within(draws, np.asarray(exact))


def test_likelihood_ratio_gamma_of_the_digital_is_unbiased():
  # DiCE's second derivative through expectation (one comparison, ~2e-5).
  draws = _replicated_hessian(
    sg.score_function(num_samples=4000, baseline=sg.baselines.leave_one_out()), digital
  )
  exact = jax.grad(jax.grad(digital_closed_form))(S0, SIGMA)
  within(draws[:, 0, 0], exact)


def test_mixed_refuses_a_digital_and_families_without_a_noise_map():
  est = sg.mixed(num_samples=8)
  with pytest.raises(DiscontinuousCostError, match="jump"):
    sg.expectation(digital, terminal(S0, SIGMA), jax.random.key(0), estimator=est)
  with pytest.raises(sg.NotApplicableError, match="to_normal_noise.*Gamma"):
    sg.expectation(lambda x: x, sg.dists.Gamma(2.0, 1.0), jax.random.key(0), estimator=est)
  with pytest.raises(ValueError, match="num_samples.*0"):
    sg.mixed(num_samples=0)


def test_mixed_nan_in_nan_out_and_float64():
  est = sg.mixed(num_samples=16)
  params = {"loc": jnp.array(4.6), "scale": jnp.array(0.2)}
  dist_fn = lambda p: sg.dists.LogNormal(p["loc"], p["scale"])
  out = est.estimate(jax.random.key(0), lambda s: s * jnp.nan, dist_fn, params, ())
  assert np.isnan(out.value) and np.isnan(out.grad["loc"])
  with jax.enable_x64(True):
    p64 = {"loc": jnp.array(4.6, jnp.float64), "scale": jnp.array(0.2, jnp.float64)}
    out = est.estimate(jax.random.key(0), call, dist_fn, p64, ())
    assert out.value.dtype == jnp.float64 and out.grad["scale"].dtype == jnp.float64


def test_mixed_qmc_and_chunked_stay_unbiased():
  # Randomised QMC and chunking change the noise, not the mean: gamma within
  # z·SE over replicates (two comparisons, ~4e-5).
  exact = jax.grad(jax.grad(call_closed_form))(S0, SIGMA)
  for est in (
    sg.mixed(num_samples=1024, sampling="qmc"),
    sg.chunked(sg.mixed(num_samples=2000), 500),
  ):
    within(_replicated_hessian(est, call)[:, 0, 0], exact)
