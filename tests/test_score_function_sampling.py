"""score_function(sampling="antithetic"|"qmc"): unbiased at first and second order.

Exact answers in closed form for f = sin 2x + 0.3 x³ under N(μ, σ²);
z-tests at a false-failure rate of 1e-6 per assertion.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg

MU, SIGMA = 0.4, 1.3
PARAMS = jnp.array([MU, SIGMA])
F = lambda x: jnp.sin(2.0 * x) + 0.3 * x**3
DIST_FN = lambda p: sg.dists.Normal(p[0], p[1])


def _mean(p):
  mu, sigma = p[0], p[1]
  return jnp.sin(2 * mu) * jnp.exp(-2 * sigma**2) + 0.3 * (mu**3 + 3 * mu * sigma**2)


def _grads(est, num_keys=3000, seed=0):
  def one(k):
    return est.estimate(k, F, DIST_FN, PARAMS, est.init(PARAMS)).grad

  return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), num_keys))


@pytest.mark.parametrize("sampling", ["antithetic", "qmc"])
def test_unbiased(sampling):
  est = sg.score_function(num_samples=8, sampling=sampling)
  sg.testing.assert_unbiased(_grads(est), jax.grad(_mean)(PARAMS), false_failure_rate=1e-6)


def test_hessian_of_value_unbiased_with_antithetic_pairs():
  est = sg.score_function(num_samples=8, sampling="antithetic")

  def value(p, k):
    return est.estimate(k, F, DIST_FN, p, est.init(p)).value

  keys = jax.random.split(jax.random.key(1), 4000)
  h = jax.jit(jax.vmap(jax.hessian(value), in_axes=(None, 0)))(PARAMS, keys)
  sg.testing.assert_unbiased(h, jax.hessian(_mean)(PARAMS), false_failure_rate=1e-6)


def test_antithetic_cancels_the_even_part_in_the_location_score():
  # f(x) = x + 5: the pair mean of f·∂μ log p is ε² (variance 2), against
  # ((μ + 5)²/σ² + 2)/2 = 9.6 for two independent samples: ratio 0.21.
  f = lambda x: x + 5.0
  keys = jax.random.split(jax.random.key(2), 4000)
  var = {}
  for sampling in ("iid", "antithetic"):
    est = sg.score_function(num_samples=2, sampling=sampling)
    g = jax.jit(jax.vmap(lambda k: est.estimate(k, f, DIST_FN, PARAMS, est.init(PARAMS)).grad))(
      keys
    )
    var[sampling] = float(np.var(np.asarray(g)[:, 0], ddof=1))
  assert var["antithetic"] / var["iid"] < 0.4, var


def test_chunked_antithetic_is_the_keyword():
  a = sg.chunked(sg.score_function(num_samples=16, sampling="antithetic"), 4)
  b = sg.score_function(num_samples=16, sampling="antithetic", chunk_size=4)
  ka = a.estimate(jax.random.key(3), F, DIST_FN, PARAMS, a.init(PARAMS))
  kb = b.estimate(jax.random.key(3), F, DIST_FN, PARAMS, b.init(PARAMS))
  np.testing.assert_allclose(ka.grad, kb.grad, rtol=1e-6)


def test_refusals():
  with pytest.raises(ValueError, match=r"leave_one_out.*sampling='antithetic'.*bias"):
    sg.score_function(num_samples=8, sampling="antithetic", baseline=sg.baselines.leave_one_out())
  with pytest.raises(ValueError, match=r"num_samples` must be even"):
    sg.score_function(num_samples=7, sampling="antithetic")
  with pytest.raises(ValueError, match=r"`sampling` must be one of"):
    sg.score_function(num_samples=8, sampling="sobol")
  with pytest.raises(ValueError, match=r"chunk_size must be even"):
    sg.score_function(num_samples=8, sampling="antithetic", chunk_size=1)
  with pytest.raises(ValueError, match=r"different point set"):
    sg.chunked(sg.score_function(num_samples=8, sampling="qmc"), 4)
  est = sg.score_function(num_samples=8, sampling="antithetic")
  logits = jnp.zeros(2)
  with pytest.raises(ValueError, match=r"antithetic"):
    est.estimate(
      jax.random.key(0), jnp.sum, lambda l: sg.dists.Bernoulli(logits=l), logits, est.init(logits)
    )
