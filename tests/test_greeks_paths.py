"""Path-dependent Greeks on an 8-step GBM (issue 26): the likelihood-ratio weight
accumulated over the steps (``sg.score_function`` on the path distribution
``benchmarks.greeks.gbm_path``, whose log-density is the sum of the transition
densities) against exact or high-precision references.

* the geometric Asian call: delta and vega against the closed form (exact);
* the arithmetic Asian call: against pathwise with the geometric control
  variate on 400 000 paths (another estimator);
* the discretely monitored up-and-out call: against the one-step-survival
  pathwise estimator on 400 000 paths (another estimator, smooth in θ).

Each estimate is the mean of R = 100 replicates; z = (mean − reference) /
√(SE² + SE_ref²) with SE from the replicates' spread (Student-t, 99 dof);
|z| ≤ 4.5 has a false-failure rate of about 2e-5 per comparison, so about
4e-5 per test (two comparisons: delta, vega).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

import scoregrad as sg

from benchmarks import greeks as gk

STEPS, T, REPS, N = 8, 1.0, 100, 2000
Z = 4.5
PARAMS = {"s0": jnp.asarray(gk.SPOT), "sigma": jnp.asarray(gk.SIGMA)}


def _lr_draws(payoff, estimator):
  dist_fn = gk.gbm_path(T, STEPS)

  def one(key):
    out = estimator.estimate(key, payoff, dist_fn, PARAMS, estimator.init(PARAMS))
    return jnp.stack([out.grad["s0"], out.grad["sigma"]])

  keys = jax.random.split(jax.random.key(26), REPS)
  return np.asarray(jax.jit(lambda ks: jax.lax.map(one, ks))(keys), np.float64)


def _check(draws, reference, reference_se):
  mean = draws.mean(axis=0)
  se = draws.std(axis=0, ddof=1) / math.sqrt(draws.shape[0])
  z = (mean - np.asarray(reference)) / np.hypot(se, np.asarray(reference_se))
  assert np.all(np.abs(z) <= Z), f"mean {mean}, reference {reference}, z {z}"


def _reference(per_path_fn, n=400_000):
  values, delta, vega = per_path_fn(jax.random.key(99), n)
  d = np.stack([np.asarray(delta, np.float64), np.asarray(vega, np.float64)], axis=1)
  return d.mean(axis=0), d.std(axis=0, ddof=1) / math.sqrt(n)


def test_the_path_density_is_the_sum_of_the_transition_densities():
  # log p of a path against a direct computation in float64 numpy.
  dist = gk.gbm_path(T, STEPS)(PARAMS)
  s = np.asarray(dist.sample(jax.random.key(1)), np.float64)
  dt = T / STEPS
  y = np.log(s)
  prev = np.concatenate([[np.log(gk.SPOT)], y[:-1]])
  mu, sd = (gk.RATE - gk.SIGMA**2 / 2) * dt, gk.SIGMA * math.sqrt(dt)
  expect = np.sum(-0.5 * ((y - prev - mu) / sd) ** 2 - np.log(sd * math.sqrt(2 * np.pi)) - y)
  np.testing.assert_allclose(float(dist.log_prob(jnp.asarray(s, jnp.float32))), expect, rtol=1e-4)


def test_lr_greeks_of_the_geometric_asian_match_the_closed_form():
  est = sg.score_function(num_samples=N, baseline=sg.baselines.leave_one_out())
  draws = _lr_draws(gk.geometric_payoff(T), est)
  exact = jax.grad(lambda th: gk.geometric_asian_price(th[0], th[1], T, STEPS))(
    jnp.array([gk.SPOT, gk.SIGMA])
  )
  _check(draws, np.asarray(exact), 0.0)


def test_lr_greeks_of_the_arithmetic_asian_match_a_pathwise_reference():
  est = sg.score_function(num_samples=N, baseline=sg.baselines.leave_one_out())
  draws = _lr_draws(gk.asian_payoff(T), est)
  ref, ref_se = _reference(lambda k, n: gk.asian_reference(gk.SPOT, gk.SIGMA, T, STEPS, k, n))
  _check(draws, ref, ref_se)


def test_lr_greeks_of_the_barrier_match_the_one_step_survival_reference():
  est = sg.score_function(num_samples=N, baseline=sg.baselines.leave_one_out())
  draws = _lr_draws(gk.barrier_payoff(T), est)

  def oss(key, n):
    per = lambda th: gk.oss_barrier(th[0], th[1], T, STEPS, key, n)
    theta = jnp.array([gk.SPOT, gk.SIGMA])
    jac = jax.jacfwd(per)(theta)
    return per(theta), jac[:, 0], jac[:, 1]

  ref, ref_se = _reference(oss)
  _check(draws, ref, ref_se)


def test_one_step_survival_price_matches_plain_simulation():
  # The reference itself: its price equals the plain Monte Carlo price of the
  # discretely monitored barrier option (one comparison, ~2e-5 at |z| ≤ 4.5).
  n = 400_000
  oss = np.asarray(gk.oss_barrier(gk.SPOT, gk.SIGMA, T, STEPS, jax.random.key(5), n), np.float64)
  s, _ = gk._paths_exact(gk.SPOT, gk.SIGMA, T, STEPS, jax.random.key(6), n)
  plain = np.asarray(jax.vmap(gk.barrier_payoff(T))(s), np.float64)
  diff = oss.mean() - plain.mean()
  se = math.hypot(oss.std(ddof=1), plain.std(ddof=1)) / math.sqrt(n)
  assert abs(diff) <= Z * se, (oss.mean(), plain.mean(), diff / se)
