"""scoregrad.diagnostics: every reported number against a hand computation (issue 29).

The per-sample-rows path is pinned in tests/test_pins.py (``test_diagnostics_by_hand``);
this file pins the streamed-moments path (``Estimate.moments``), the columns that
file leaves out, and that rows and moments of the same estimate give the same
numbers. All exact (no statistical tolerance).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg

# Leaf a: draws 1, 2, 3, 4, 10 (mean 4, Σ squared deviations 50);
# leaf b: columns (0, 0, 0, 0, 5) (mean 1, Σ dev² 20) and (2, 2, 2, 2, 2) (mean 2, 0).
PER = {
  "a": jnp.array([1.0, 2.0, 3.0, 4.0, 10.0]),
  "b": jnp.array([[0.0, 2.0]] * 4 + [[5.0, 2.0]]),
}
MOMENTS = sg.GradientMoments(
  count=jnp.asarray(5, jnp.int32),
  mean={"a": jnp.asarray(4.0), "b": jnp.array([1.0, 2.0])},
  m2={"a": jnp.asarray(50.0), "b": jnp.array([20.0, 0.0])},
)


@pytest.mark.parametrize("source", ["rows", "moments"])
def test_every_diagnostic_by_hand(source):
  """variance = Σ dev²/(n − 1): 12.5, (5, 0); standard error √(var/n): √2.5,
  (1, 0); snr |mean|/√var: 4/√12.5, (1/√5, inf); bias against (3, (0.5, 2)):
  1, (0.5, 0) with z = bias/SE: 1/√2.5, (0.5, NaN for 0/0); total variance
  12.5 + 5 + 0 = 17.5."""
  per = PER if source == "rows" else MOMENTS
  var = sg.diagnostics.variance(per)
  np.testing.assert_allclose(var["a"], 12.5, rtol=1e-6)
  np.testing.assert_allclose(var["b"], [5.0, 0.0], rtol=1e-6)
  se = sg.diagnostics.standard_error(per)
  np.testing.assert_allclose(se["a"], math.sqrt(2.5), rtol=1e-6)
  np.testing.assert_allclose(se["b"], [1.0, 0.0], rtol=1e-6, atol=1e-7)
  snr = sg.diagnostics.snr(per)
  np.testing.assert_allclose(snr["a"], 4 / math.sqrt(12.5), rtol=1e-6)
  np.testing.assert_allclose(snr["b"][0], 1 / math.sqrt(5.0), rtol=1e-6)
  assert snr["b"][1] == np.inf  # |2| / 0
  report = sg.diagnostics.bias(per, {"a": 3.0, "b": jnp.array([0.5, 2.0])})
  np.testing.assert_allclose(report.bias["a"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(report.bias["b"], [0.5, 0.0], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(report.standard_error["b"], [1.0, 0.0], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(report.z["a"], 1 / math.sqrt(2.5), rtol=1e-6)
  np.testing.assert_allclose(report.z["b"][0], 0.5, rtol=1e-6)
  assert np.isnan(report.z["b"][1])  # 0 / 0
  np.testing.assert_allclose(sg.diagnostics.total_variance(per), 17.5, rtol=1e-6)


def test_rows_and_moments_of_one_estimate_agree():
  """An estimator built with per_sample=True and moments=True on the same key:
  each diagnostic from Estimate.moments equals the one from Estimate.per_sample,
  and both equal a NumPy computation on the rows (float64 rows, float32
  streamed moments: rtol 1e-5)."""
  est = sg.score_function(num_samples=16, per_sample=True, moments=True)
  params = {"loc": jnp.array([0.3, -0.4]), "scale": jnp.asarray(1.2)}
  dist_fn = lambda p: sg.dists.Normal(p["loc"], p["scale"])
  out = est.estimate(
    jax.random.key(0), lambda x: jnp.sum(jnp.sin(x)), dist_fn, params, est.init(params)
  )
  assert out.per_sample is not None and out.moments is not None
  rows = jax.tree_util.tree_map(lambda r: np.asarray(r, np.float64), out.per_sample)
  exact = {"loc": jnp.array([0.1, 0.2]), "scale": jnp.asarray(-0.1)}
  for per in (out.per_sample, out.moments):
    var = sg.diagnostics.variance(per)
    se = sg.diagnostics.standard_error(per)
    snr = sg.diagnostics.snr(per)
    report = sg.diagnostics.bias(per, exact)
    for name, r in rows.items():
      v = np.var(r, axis=0, ddof=1)
      np.testing.assert_allclose(var[name], v, rtol=1e-5)
      np.testing.assert_allclose(se[name], np.sqrt(v / 16), rtol=1e-5)
      np.testing.assert_allclose(snr[name], np.abs(r.mean(0)) / np.sqrt(v), rtol=1e-5)
      np.testing.assert_allclose(report.bias[name], r.mean(0) - np.asarray(exact[name]), atol=1e-6)
      np.testing.assert_allclose(
        report.z[name], (r.mean(0) - np.asarray(exact[name])) / np.sqrt(v / 16), rtol=1e-4
      )
    total = sum(np.sum(np.var(r, axis=0, ddof=1)) for r in rows.values())
    np.testing.assert_allclose(sg.diagnostics.total_variance(per), total, rtol=1e-5)
