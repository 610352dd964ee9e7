"""Tests of the benchmark suite: exact moments, smoke runs, results schema, bad input.

Statistical checks use ``scoregrad.testing`` with a false-failure rate of 1e-6
per assertion (Bonferroni over coordinates); the fixed keys only make runs
reproducible. Closed forms below are derived by hand in the comments, with
x = μ + σz, z ~ N(0, 1), c = μ − k, and the normal moments E z² = 1,
E z⁴ = 3, E z⁶ = 15, E z⁸ = 105.
"""

from __future__ import annotations

import inspect
import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg

from benchmarks import common, mohamed
from benchmarks import estimators as estimators_table
from benchmarks import quadrature as q
from benchmarks import run as runner

QUADRATIC, EXP, COS = mohamed.COSTS
MU_SIGMA = [(1.0, 1.0), (0.3, 2.0), (-1.5, 0.5)]


# -- the quadrature integrator against closed forms ----------------------------------


@pytest.mark.parametrize("mu,sigma", MU_SIGMA)
@pytest.mark.parametrize("k", [-3.0, 0.0, 1.0, 2.5])
def test_quadratic_cost_exact_variances(k, mu, sigma):
  """f = (x − k)²; c = μ − k, so f = (c + σz)².

  Gradient: E f = c² + σ², so ∂μ = 2c, ∂σ = 2σ.
  Score function, ∂μ: g = f z/σ. E g² = E[(c+σz)⁴ z²]/σ²; the even terms of
  (c+σz)⁴ are c⁴, 6c²σ²z², σ⁴z⁴, so E g² = (c⁴ + 18c²σ² + 15σ⁴)/σ².
  Score function, ∂σ: g = f (z² − 1)/σ. With (z²−1)² = z⁴ − 2z² + 1:
  E(z²−1)² = 2, E z²(z²−1)² = 10, E z⁴(z²−1)² = 78, so
  E g² = (2c⁴ + 60c²σ² + 78σ⁴)/σ².
  Pathwise: ∂μ: g = 2(c + σz), Var = 4σ². ∂σ: g = 2(c + σz) z,
  E g² = 4(c² + 3σ²), Var = 4c² + 8σ².
  Quadrature must match to ~1e-9 relative (its tolerance is 1e-10).
  """
  problem = q.Problem(QUADRATIC, k, mu, sigma)
  c = mu - k
  run = q.RunSettings(num_samples=8)
  sf = q.EXACT["score_function"](problem, run)
  pw = q.EXACT["pathwise"](problem, run)
  grad = q.true_gradient(problem)
  want_grad = {"loc": 2 * c, "scale": 2 * sigma}
  want_sf = {
    "loc": (c**4 + 18 * c**2 * sigma**2 + 15 * sigma**4) / sigma**2 - 4 * c**2,
    "scale": (2 * c**4 + 60 * c**2 * sigma**2 + 78 * sigma**4) / sigma**2 - 4 * sigma**2,
  }
  want_pw = {"loc": 4 * sigma**2, "scale": 4 * c**2 + 8 * sigma**2}
  for p in q.PARAMS:
    np.testing.assert_allclose(grad[p].value, want_grad[p], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sf.mean[p], want_grad[p], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pw.mean[p], want_grad[p], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sf.variance[p], want_sf[p], rtol=1e-9)
    np.testing.assert_allclose(pw.variance[p], want_pw[p], rtol=1e-9)
    assert sf.abserr[p] < 1e-6 * want_sf[p]


@pytest.mark.parametrize("mu,sigma", MU_SIGMA)
@pytest.mark.parametrize("w", [0.5, 1.7, 5.0])
def test_cos_cost_exact_variances(w, mu, sigma):
  """f = cos(wx), oscillatory. With E e^{ibz} = e^{−b²/2}:

  E f = cos(wμ) e^{−w²σ²/2}, so ∂μ = −w sin(wμ) e^{−w²σ²/2}, ∂σ = −w²σ cos(wμ) e^{−w²σ²/2}.
  Pathwise ∂μ: g = −w sin(wx); E sin² = ½(1 − E cos 2wx) = ½(1 − cos(2wμ) e^{−2w²σ²}).
  Score function ∂μ: g = cos(wx) z/σ; cos² = ½(1 + cos 2wx) and
  E[z² e^{ibz}] = (1 − b²) e^{−b²/2} (differentiate e^{−b²/2} twice), so with
  b = 2wσ: E g² = ½(1 + cos(2wμ)(1 − 4w²σ²) e^{−2w²σ²})/σ².
  """
  problem = q.Problem(COS, w, mu, sigma)
  grad = q.true_gradient(problem)
  damp = math.exp(-0.5 * w * w * sigma * sigma)
  np.testing.assert_allclose(grad["loc"].value, -w * math.sin(w * mu) * damp, rtol=1e-8, atol=1e-12)
  np.testing.assert_allclose(
    grad["scale"].value, -w * w * sigma * math.cos(w * mu) * damp, rtol=1e-8, atol=1e-12
  )
  pw = q.EXACT["pathwise"](problem, q.RunSettings(4))
  want_pw = (
    w
    * w
    * (
      0.5 * (1 - math.cos(2 * w * mu) * math.exp(-2 * w * w * sigma**2))
      - math.sin(w * mu) ** 2 * damp**2
    )
  )
  np.testing.assert_allclose(pw.variance["loc"], want_pw, rtol=1e-8)
  sf = q.EXACT["score_function"](problem, q.RunSettings(4))
  b2 = 4 * w * w * sigma**2
  want_sf = (
    0.5 * (1 + math.cos(2 * w * mu) * (1 - b2) * math.exp(-0.5 * b2)) / sigma**2
    - (w * math.sin(w * mu) * damp) ** 2
  )
  np.testing.assert_allclose(sf.variance["loc"], want_sf, rtol=1e-8)


@pytest.mark.parametrize("mu,sigma", MU_SIGMA)
@pytest.mark.parametrize("w", [0.1, 1.0, 10.0])
def test_exp_cost_exact_gradient(w, mu, sigma):
  """f = exp(−wx²). Completing the square, E f = a^{−1/2} exp(−wμ²/a), a = 1 + 2wσ²;

  ∂μ = −(2wμ/a) E f, ∂σ = (−2wσ/a + 4w²μ²σ/a²) E f.
  """
  problem = q.Problem(EXP, w, mu, sigma)
  a = 1 + 2 * w * sigma**2
  value = math.exp(-w * mu * mu / a) / math.sqrt(a)
  grad = q.true_gradient(problem)
  np.testing.assert_allclose(grad["loc"].value, -2 * w * mu / a * value, rtol=1e-8, atol=1e-13)
  np.testing.assert_allclose(
    grad["scale"].value,
    (-2 * w * sigma / a + 4 * w * w * mu * mu * sigma / a**2) * value,
    rtol=1e-8,
    atol=1e-13,
  )
  # Both per-sample integrands are unbiased, so their means are the gradient too.
  for name in ("score_function", "pathwise"):
    exact = q.EXACT[name](problem, q.RunSettings(4))
    for p in q.PARAMS:
      np.testing.assert_allclose(exact.mean[p], grad[p].value, rtol=1e-8, atol=1e-13)


def test_quadrature_reports_non_convergence():
  """An integrand QUADPACK cannot resolve raises instead of returning a number."""
  with pytest.raises(q.QuadratureError, match="did not converge"):
    q.expect(lambda x: 1.0 / abs(x - 0.3) ** 0.999, lambda x: 1.0, 0.0, 1.0, limit=5)


def _replicated_grads(spec_name, problem, num_samples, warmup, replicates, seed):
  """``replicates`` independent estimates (as the benchmark runs them), float64."""
  est = estimators_table.by_name()[spec_name].make(num_samples)
  params = {"loc": jnp.asarray(problem.mu), "scale": jnp.asarray(problem.sigma)}
  f = lambda x: problem.cost.value(x, problem.theta, jnp)
  dist_fn = lambda p: sg.dists.Normal(p["loc"], p["scale"])

  @jax.jit
  def draws(keys):
    out = jax.vmap(lambda k: common.estimate_after_warmup(est, k, f, dist_fn, params, warmup))(keys)
    return out.grad

  return draws(jax.random.split(jax.random.key(seed), replicates))


def test_leave_one_out_exact_variance_matches_simulation(x64):
  """The Hoeffding formula n·Var = A − (n−2)/(n−1) G² + V S2/(n−1) (quadrature.leave_one_out_exact)

  against 200 000 runs of the ESTIMATORS row at n = 2, f = exp(−x²). The
  problem is chosen so that the finite-n formula and its n → ∞ limit
  Var[(f − E f) s] differ by > 2×, far beyond the tolerance (checked below,
  so the test can fail). False-failure rate 1e-6 per assertion.
  """
  problem = q.Problem(EXP, 1.0, 1.0, 1.0)
  n, reps = 2, 200_000
  exact = q.leave_one_out_exact(problem, q.RunSettings(n))
  grads = _replicated_grads("score_function+leave_one_out", problem, n, 0, reps, seed=11)
  exact_var = {p: exact.variance[p] / n for p in q.PARAMS}  # Var of the n-sample mean
  sg.testing.assert_variance(grads, exact_var, false_failure_rate=1e-6)
  sg.testing.assert_unbiased(
    grads, {p: q.true_gradient(problem)[p].value for p in q.PARAMS}, false_failure_rate=1e-6
  )
  for p in q.PARAMS:
    m = q.moments(problem, p)
    assert exact.variance[p] > 2 * (m.A - m.G**2)  # the n → ∞ value would fail


def test_moving_average_exact_variance_matches_simulation(x64):
  """quadrature.moving_average_exact with T = 2 warm-up steps, n = 2, f = exp(−x²).

  After two updates the debiased baseline is b = (d m₁ + m₂)/(1 + d) with
  batch means m_t, so Var b = (V/n)(1 + d²)/(1 + d)²; the formula's Σ w² must
  give that. The Var b term moves the exact variance by > 20% here (checked),
  far beyond the tolerance. False-failure rate 1e-6 per assertion.
  """
  problem = q.Problem(EXP, 1.0, 1.0, 1.0)
  n, warmup, reps = 2, 2, 200_000
  exact = q.EXACT["score_function+moving_average"](problem, q.RunSettings(n, warmup))
  d = q.MOVING_AVERAGE_DECAY
  by_hand = q.random_baseline_variance(
    problem, q.moments(problem, "loc").F, (1 + d * d) / (1 + d) ** 2 / n
  )
  grads = _replicated_grads("score_function+moving_average", problem, n, warmup, reps, seed=12)
  for p in q.PARAMS:
    np.testing.assert_allclose(exact.variance[p], by_hand.variance[p], rtol=1e-12)
    m = q.moments(problem, p)
    assert exact.variance[p] > 1.2 * (m.A - m.G**2)  # dropping Var b would fail
  sg.testing.assert_variance(
    grads, {p: exact.variance[p] / n for p in q.PARAMS}, false_failure_rate=1e-6
  )


def test_moving_average_decay_matches_the_estimators_table():
  """The exact form assumes MOVING_AVERAGE_DECAY; read the row's decay from its state.

  One estimate with constant cost 1 from a zero average leaves the average
  at (1 − decay)·1 (the update is v ← d v + (1 − d) mean(costs)).
  """
  est = estimators_table.by_name()["score_function+moving_average"].make(4)
  params = {"loc": jnp.asarray(1.0), "scale": jnp.asarray(1.0)}
  out = est.estimate(
    jax.random.key(0),
    lambda x: jnp.ones(()),
    lambda p: sg.dists.Normal(p["loc"], p["scale"]),
    params,
    est.init(params),
  )
  decay = 1.0 - float(out.state.baseline.value)
  assert decay == pytest.approx(q.MOVING_AVERAGE_DECAY, abs=1e-6)


def test_register_hook_adds_an_exact_form():
  name = "test-only-estimator"
  try:
    q.register(name, q.from_integrand(q.pathwise_integrand))
    assert q.exact_for(name) is not None
    with pytest.raises(ValueError, match="already registered"):
      q.register(name, q.from_integrand(q.pathwise_integrand))
    with pytest.raises(TypeError, match="callable"):
      q.register("other", 3.0, overwrite=True)
  finally:
    q.EXACT.pop(name, None)


def test_variance_ci_sum_is_trace_and_interval_brackets():
  """reduce='sum' gives the sum of per-coordinate unbiased variances (an identity)."""
  draws = np.random.default_rng(0).normal(size=(500, 3)) * [1.0, 2.0, 3.0]
  per = common.variance_ci(draws)
  total = common.variance_ci(draws, reduce="sum")
  np.testing.assert_allclose(total["variance"], per["variance"].sum(), rtol=1e-12)
  np.testing.assert_allclose(per["variance"], draws.var(axis=0, ddof=1), rtol=1e-12)
  assert np.all(per["lower"] < per["variance"]) and np.all(per["variance"] < per["upper"])
  with pytest.raises(ValueError, match="at least 2"):
    common.variance_ci(draws[:1])


# -- smoke runs of every benchmark at tiny size, and the results schema ----------------


def _finite_or_none(obj, path="results"):
  """Every number in the JSON is finite (NaN/inf become null or strings)."""
  if isinstance(obj, dict):
    for k, v in obj.items():
      _finite_or_none(v, f"{path}.{k}")
  elif isinstance(obj, list):
    for i, v in enumerate(obj):
      _finite_or_none(v, f"{path}[{i}]")
  elif isinstance(obj, float):
    assert math.isfinite(obj), path


def _check_common_schema(name, results, out):
  for key in (
    "benchmark",
    "seed",
    "full",
    "preset",
    "command",
    "finished",
    "elapsed_s",
    "environment",
    "plots",
  ):
    assert key in results, key
  assert results["benchmark"] == name and results["seed"] == 0 and results["preset"] == "tiny"
  for key in ("jax", "jaxlib", "device", "platform", "python", "cpu_count"):
    assert key in results["environment"], key
  bench = runner.BENCHMARKS[name]
  if bench.sizes is not None:
    assert results["sizes"] == json.loads(json.dumps(bench.sizes["tiny"]))
  for png in results["plots"]:
    assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert (out / f"{name}.md").read_text().startswith(f"# {name}")


def _check_mohamed(results):
  names = [s.name for s in estimators_table.for_family("normal")]
  assert results["estimators"] == names
  assert [c["name"] for c in results["costs"]] == ["quadratic", "exp", "cos"]
  g = results["sizes"]["grid_points"]
  for cost in results["costs"]:
    assert len(cost["grid"]) == g
    assert set(cost["rows"]) == set(names)
    for name, row in cost["rows"].items():
      for p in ("loc", "scale"):
        e = row[p]
        for key in (
          "variance",
          "lower",
          "upper",
          "variance_se",
          "mean",
          "bias",
          "bias_se",
          "bias_z",
        ):
          assert len(e[key]) == g, (name, key)
        assert all(lo <= v <= hi for lo, v, hi in zip(e["lower"], e["variance"], e["upper"]))
        if q.exact_for(name) is not None:
          assert len(e["exact"]) == g and len(e["z_exact"]) == g
        else:
          assert e["exact"] is None
  for key in ("variance_vs_exact", "bias"):
    assert {"comparisons", "threshold", "flagged"} <= set(results["checks"][key])


def _check_scaling(results):
  dims = [str(d) for d in results["sizes"]["dims"]]
  assert list(results["dims"]) == dims
  for rows in results["dims"].values():
    assert set(results["estimators"]) | set(results["references"]) == set(rows)
    for row in rows.values():
      assert row["lower"] <= row["trace_variance"] <= row["upper"]
      assert row["time"]["median_s"] > 0 and row["work"] > 0
    assert rows["pathwise"]["variance_ratio_to_pathwise"] == pytest.approx(1.0)


def _check_logreg(results):
  s = results["sizes"]
  assert results["data"]["dim"] == 31 and results["data"]["n"] == 569
  for row in results["rows"].values():
    assert np.shape(row["elbo_curve"]) == (s["seeds"], len(results["eval_steps"]))
    assert len(row["final_elbo"]) == s["seeds"]
    assert row["variance_mean_lower"] <= row["variance_mean"] <= row["variance_mean_upper"]
    assert row["variance_max"] >= row["variance_mean"]


def _check_policy_gradient(results):
  s = results["sizes"]
  assert results["studied"] == results["variants"]  # --tiny skips the hand-written rows
  for name in results["variants"]:
    row = results["rows"][name]
    assert np.shape(row["curve"]) == (s["seeds"], s["updates"])
    assert row["variance_lower"] <= row["variance_mean"] <= row["variance_upper"]
    assert row["env_steps_per_s"] > 0 and row["time_per_update"]["median_s"] > 0
  assert results["rows"]["hand_written"]["time_per_update"]["median_s"] > 0
  assert results["time_ratio_to_hand_written"] > 0
  # Same batch: scoregrad's per-step + leave-one-out is the hand-written estimator.
  assert results["max_abs_grad_difference"] <= 1e-5 * max(1.0, results["max_abs_grad"])


def _check_lm_policy_gradient(results):
  s = results["sizes"]
  assert results["methods"] == ["reinforce", "rloo", "grpo", "dr_grpo"]
  for name in results["methods"]:
    row = results["rows"][name]
    assert np.shape(row["curve"]) == (s["seeds"], s["updates"])
    assert all(0.0 <= r <= 1.0 for r in np.ravel(row["curve"]))  # rewards lie in [0, 1]
    assert row["variance_lower"] <= row["variance_mean"] <= row["variance_upper"]
    assert -1.0 <= row["cosine"] <= 1.0 and row["tokens_per_s"] > 0
  # Theory's constants: grpo has none, dr_grpo's is (G − 1)/(G·T).
  assert results["rows"]["grpo"]["known_scale"] is None
  g, t = s["group_size"], s["max_prompt"] + 1
  assert results["rows"]["dr_grpo"]["known_scale"] == pytest.approx((g - 1) / (g * t))
  for name in ("rloo", "hand_written_rloo"):
    assert results["rows"][name]["time_per_update"]["median_s"] > 0
    assert results["rows"][name]["time_per_gradient"]["median_s"] > 0
  assert results["time_ratio_to_hand_written"] > 0
  # Same batch: scoregrad's rloo is the hand-written RLOO, and the J^T w route is jax.grad.
  assert results["max_abs_grad_difference"] <= 1e-5 * max(1.0, results["max_abs_grad"])
  assert results["max_abs_route_difference"] <= 1e-5 * max(1.0, results["max_abs_grad"])


def _check_discrete_vae_mnist(results):
  """8 latent bits, 4 steps, linear model, K = 2: every registry row that has a
  K = 2 form, the checkpoints, the ratio to DisARM; the bundled digits were
  found and verified (4000/1000)."""
  from benchmarks import discrete_vae_mnist

  assert results["data"]["train"] == 4000 and results["data"]["held_out"] == 1000
  n = results["sizes"]["checkpoints"] + 1
  assert len(results["eval_steps"]) == n
  assert set(results["runs"]) == {
    f"linear/K=2/{name}"
    for name, e in discrete_vae_mnist.ESTIMATORS.items()
    if e.make(2) is not None
  }
  for run in results["runs"].values():
    for column in ("variance_mean", "train_elbo", "test_elbo"):
      assert len(run[column]) == n
    assert all(v > 0 for v in run["variance_mean"]) and run["steps_per_s"] > 0
    assert all(e < 0 for e in run["train_elbo"])  # 784 Bernoulli pixels: ELBO < 0
  assert results["runs"]["linear/K=2/disarm"]["variance_ratio_to_disarm"] == [1.0] * n


SCHEMA = {
  "mohamed": _check_mohamed,
  "scaling": _check_scaling,
  "logreg": _check_logreg,
  "policy_gradient": _check_policy_gradient,
  "lm_policy_gradient": _check_lm_policy_gradient,
  "discrete_vae_mnist": _check_discrete_vae_mnist,
}

# Compilation dominates tiny runs (one per estimator); these benchmarks are
# smoke-tested with a stateful and a pathwise row only, to stay in the test
# budget. `mohamed` runs every row, so every estimator and exact form is exercised.
EXTRA_ARGS = {
  "scaling": ["--estimators", "score_function+moving_average,pathwise"],
  "logreg": ["--estimators", "score_function+moving_average,pathwise"],
  "discrete_toy": [
    "--estimators",
    "score_function+moving_average,disarm,rebar,gumbel_softmax(0.5)",
  ],
  "discrete_vae": ["--estimators", "score_function+moving_average,relax"],
}


@pytest.mark.parametrize("name", list(runner.BENCHMARKS))
def test_benchmark_record_matches_its_run_signature(name):
  """Each BENCHMARK record declares exactly the keyword arguments its ``run`` takes,
  and comes from the module of its name."""
  bench = runner.BENCHMARKS[name]
  module = sys.modules[bench.run.__module__]
  assert module.__name__ == f"benchmarks.{name}" and module.BENCHMARK is bench
  declared = {"full", "seed"}
  declared |= {"sizes"} if bench.sizes is not None else set()
  declared |= {"tiny"} if bench.takes_tiny else set()
  declared |= {"estimators"} if bench.takes_estimators else set()
  params = inspect.signature(bench.run).parameters
  assert set(params) == declared
  assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
  if bench.sizes is not None:
    assert set(bench.sizes) == set(common.PRESETS)
    assert set(bench.size_minimum or {}) <= set(bench.sizes["default"])
  assert len(runner.SUITE) == len(runner.BENCHMARKS)


@pytest.mark.parametrize("name", list(runner.BENCHMARKS))
def test_every_benchmark_runs_at_tiny_size(name, tmp_path, capsys):
  """`python -m benchmarks.run NAME --tiny`: exit 0, JSON/Markdown/PNGs, schema, headline printed."""
  bench = runner.BENCHMARKS[name]
  assert bench.sizes is not None or bench.takes_tiny, (
    f"{name} has no tiny sizes: give it sizes['tiny'] or run(..., tiny=True)"
  )
  rc = runner.main([name, "--tiny", "--out", str(tmp_path)] + EXTRA_ARGS.get(name, []))
  captured = capsys.readouterr()
  assert rc == 0, captured.err[-3000:]
  results = json.loads((tmp_path / f"{name}.json").read_text())
  _finite_or_none(results)
  _check_common_schema(name, results, tmp_path)
  if name in SCHEMA:
    SCHEMA[name](results)
  assert f"## {name}" in captured.out


# -- bad input: clear message, exit status 2, nothing written ---------------------------


@pytest.mark.parametrize(
  "argv,message",
  [
    (["nope"], "unknown benchmark(s) ['nope']"),
    (["mohamed", "--estimators", "score_function,bogus"], "unknown estimator(s) ['bogus']"),
    (["mohamed", "--estimators", ","], "--estimators needs at least one name"),
    (["mohamed", "--set", "replicates=1"], "replicates must be >= 8; got replicates=1"),
    (["mohamed", "--set", "num_samples=2.5"], "num_samples must be an integer; got 2.5"),
    (["mohamed", "--set", "bogus=3"], "no selected benchmark has a size 'bogus'"),
    (["mohamed", "--set", "mohamed.bogus=3"], "unknown size 'bogus'=3"),
    (["mohamed", "--set", "replicates"], "--set needs KEY=VALUE"),
    (["mohamed", "--set", "replicates=many"], "cannot read 'many' as a number"),
    (["scaling", "--set", "dims=0,10"], "dims must be >= 1; got dims=0"),
    (["scaling", "--set", "logreg.steps=3"], "benchmark 'logreg' is not selected"),
    (["logreg", "--set", "learning_rate=-0.1"], "learning_rate must be > 0.0"),
    (["mohamed", "--seed", "-1"], "--seed must be >= 0"),
  ],
)
def test_bad_input_exits_2_without_writing(argv, message, tmp_path, capsys):
  rc = runner.main(argv + ["--out", str(tmp_path)])
  err = capsys.readouterr().err
  assert rc == 2
  assert "error:" in err and message in err, err
  assert not list(tmp_path.iterdir())


def test_unwritable_results_folder(tmp_path, capsys):
  blocker = tmp_path / "a-file"
  blocker.write_text("not a folder")
  rc = runner.main(["mohamed", "--tiny", "--out", str(blocker / "results")])
  err = capsys.readouterr().err
  assert rc == 2 and "cannot be written" in err and "--out" in err


def test_full_and_tiny_exclude_each_other(tmp_path, capsys):
  with pytest.raises(SystemExit) as info:
    runner.main(["mohamed", "--full", "--tiny", "--out", str(tmp_path)])
  assert info.value.code == 2
  assert "not allowed with" in capsys.readouterr().err


def test_failing_benchmark_leaves_no_json(tmp_path, capsys, monkeypatch):
  """A benchmark that raises: exit 1, its stale JSON removed, no new JSON, others still run."""

  def run(*, full, seed):
    raise RuntimeError("boom in the middle of a run")

  fake = common.Benchmark(
    name="fake", description="always fails", run=run, report=str, headline=str, plot=lambda r, o: []
  )
  monkeypatch.setitem(runner.BENCHMARKS, "fake", fake)
  (tmp_path / "fake.json").write_text('{"benchmark": "fake", "stale": true}')
  rc = runner.main(["fake", "--out", str(tmp_path)])
  err = capsys.readouterr().err
  assert rc == 1
  assert "boom in the middle" in err and "no fake.json written" in err
  assert not (tmp_path / "fake.json").exists()
  assert not (tmp_path / "summary.md").exists()
