"""The statistical assertions detect real bias and variance errors (so tests
built on them can fail), and pass for correct estimators."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased, assert_variance, z_threshold

from problems import PROBLEMS


def test_z_threshold():
  np.testing.assert_allclose(z_threshold(0.05), 1.959964, rtol=1e-5)
  assert z_threshold(1e-6, 10) > z_threshold(1e-6, 1)


def test_sample_dependent_baseline_bias_is_detected():
  """A baseline that includes the sample's own cost (b = mean of all costs) is
  biased by −g/n; with n = 4 the tests must catch it."""
  prob = PROBLEMS["gaussian_cos"]
  biased_baseline = sg.baselines.Baseline(
    init=lambda: (),
    values=lambda c, s, st: jnp.full_like(c, jnp.mean(c)),
    update=lambda st, c: st,
    name="biased",
  )
  est = sg.score_function(num_samples=4, baseline=biased_baseline)
  keys = jax.random.split(jax.random.key(0), 20_000)
  grads = jax.vmap(
    lambda k: est.estimate(k, prob.f, prob.dist_fn, prob.params, est.init(None)).grad
  )(keys)
  with pytest.raises(AssertionError, match="biased"):
    assert_unbiased(grads, prob.exact_grad, false_failure_rate=1e-6)


def test_wrong_variance_is_detected():
  x = jax.random.normal(jax.random.key(1), (50_000,))
  assert_variance(x, np.float64(1.0), false_failure_rate=1e-6)
  with pytest.raises(AssertionError, match="Variance mismatch"):
    assert_variance(x, np.float64(1.1), false_failure_rate=1e-6)


def test_diagnostics():
  per = {"a": jnp.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])}
  np.testing.assert_allclose(sg.diagnostics.variance(per)["a"], [4.0, 0.0])
  rep = sg.diagnostics.bias(per, {"a": np.array([3.0, 1.0])})
  np.testing.assert_allclose(rep.bias["a"], [0.0, 1.0])
  np.testing.assert_allclose(sg.diagnostics.snr(per)["a"][0], 3.0 / 2.0)
  np.testing.assert_allclose(sg.diagnostics.total_variance(per), 4.0)
