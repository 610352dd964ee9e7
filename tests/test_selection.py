"""scoregrad.select: ranking by measured variance × time, skipped candidates, bad input.

The problems are built so that the expected winner's variance is at least
~30× lower than every other candidate's while the costs per estimate are
within a small factor, so the ranking cannot flip on timing noise; the
tests also check `.best` against the table's own numbers (argmin of variance ×
time), which holds whatever the timings are.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg


def _check_ranking(result):
  measured = [r for r in result.rows if r.applicable]
  works = [r.work for r in measured]
  assert works == sorted(works)
  assert result.best == min(measured, key=lambda r: r.work).name
  for r in measured:
    assert r.work == pytest.approx(r.variance * r.seconds)
    assert r.variance > 0 and r.variance_se > 0 and r.seconds > 0
    lo, hi = r.seconds_spread
    assert lo <= r.seconds <= hi
  assert result.estimator is not None


def _normal_problem():
  # f(x) = Σ (x − 1)² + 20 on N(loc, exp(log_scale)): E f = Σ (loc − 1)² + σ² + 20,
  # ∇_loc = 2(loc − 1), ∇_log_scale = 2σ².
  loc = jnp.array([0.5, -0.3, 1.2])
  log_scale = jnp.array([0.0, -0.5, 0.3])
  params = {"loc": loc, "log_scale": log_scale}
  exact = {"loc": 2 * (loc - 1), "log_scale": 2 * jnp.exp(2 * log_scale)}
  f = lambda x: jnp.sum((x - 1.0) ** 2) + 20.0
  dist_fn = lambda p: sg.dists.Normal(p["loc"], jnp.exp(p["log_scale"]))
  return f, dist_fn, params, exact


def test_select_gaussian_picks_pathwise():
  """Pathwise beats the score function (no baseline; the +20 offset makes it
  ~100× noisier) and the leave-one-out score function; DisARM is skipped."""
  f, dist_fn, params, exact = _normal_problem()
  candidates = {
    "score_function": sg.score_function(num_samples=8),
    "score_function+loo": sg.score_function(num_samples=8, baseline=sg.baselines.leave_one_out()),
    "pathwise": sg.pathwise(num_samples=8),
    "disarm": sg.disarm(num_pairs=4),
  }
  result = sg.select(
    candidates, jax.random.key(0), f, dist_fn, params, num_pilot=120, repeats=3, exact_grad=exact
  )
  _check_ranking(result)
  assert result.best == "pathwise"
  assert result.estimator is candidates["pathwise"]
  rows = {r.name: r for r in result.rows}
  assert rows["score_function"].variance > 30 * rows["pathwise"].variance
  assert not rows["disarm"].applicable and "discrete" in rows["disarm"].reason
  assert math.isnan(rows["disarm"].work)
  assert result.rows[-1].name == "disarm"  # skipped rows come last
  assert list(result.skipped) == ["disarm"]
  # All three applicable estimators are unbiased: E‖mean − ∇‖² = tr Cov/R =
  # floor². ‖mean − ∇‖² is (CLT) a weighted sum of χ²₁ terms with mean floor²;
  # its tail is heaviest when one coordinate dominates, so
  # P(‖bias‖ > 4 floor) ≤ P(|Z| > 4) ≈ 6e-5 per check (keys are fixed).
  for name in ("score_function", "score_function+loo", "pathwise"):
    assert rows[name].bias_norm < 4 * rows[name].bias_noise_floor, rows[name]
  text = str(result)
  assert text.startswith("best: pathwise") and "| 1 | pathwise |" in text
  assert "Skipped (not applicable):" in text and "- disarm:" in text


def _bernoulli_problem():
  # f(b) = Σ (b − 0.45)² + 5, separable: ∂E f/∂α_i = σ'(α_i)((0.55)² − 0.45²).
  alpha = jnp.array([-1.0, 0.3, 0.8, 2.0])
  f = lambda b: jnp.sum((b - 0.45) ** 2) + 5.0
  dist_fn = lambda a: sg.dists.Bernoulli(logits=a)
  p = jax.nn.sigmoid(alpha)
  exact = p * (1 - p) * (0.55**2 - 0.45**2)
  return f, dist_fn, alpha, exact


def test_select_bernoulli_picks_disarm_and_flags_a_biased_candidate():
  """DisARM (zero variance when one bit differs between the antithetic pair
  only through a near-constant f) beats REINFORCE; pathwise is skipped with the
  reason; straight-through is biased and the bias columns show it."""
  f, dist_fn, alpha, exact = _bernoulli_problem()
  candidates = {
    "score_function": sg.score_function(num_samples=4),
    "disarm": sg.disarm(num_pairs=2),
    "pathwise": sg.pathwise(num_samples=4),
    "straight_through": sg.straight_through(num_samples=4),
  }
  result = sg.select(
    candidates, jax.random.key(1), f, dist_fn, alpha, num_pilot=200, repeats=4, exact_grad=exact
  )
  _check_ranking(result)
  rows = {r.name: r for r in result.rows}
  assert rows["score_function"].variance > 100 * rows["disarm"].variance
  # straight-through is not in the clear-cut comparison (its variance is low
  # too); the winner among the unbiased ones is DisARM.
  unbiased = [r for r in result.rows if r.applicable and r.name != "straight_through"]
  assert min(unbiased, key=lambda r: r.work).name == "disarm"
  assert result.best == "disarm"  # straight-through: ~10x the variance here
  assert not rows["pathwise"].applicable
  assert "reparameterized" in rows["pathwise"].reason
  assert "Bernoulli" in rows["pathwise"].reason
  # Straight-through's bias here is ~0.06-0.1 per coordinate against a noise
  # floor ~0.003: a > 5-floor detection cannot be chance.
  assert rows["straight_through"].bias_norm > 5 * rows["straight_through"].bias_noise_floor
  assert rows["straight_through"].bias_max_z > 5
  for name in ("score_function", "disarm"):  # unbiased: see the Gaussian test
    assert rows[name].bias_norm < 4 * rows[name].bias_noise_floor, rows[name]


def test_select_clear_cut_bernoulli_winner():
  """Without the biased reference: DisARM wins outright."""
  f, dist_fn, alpha, _ = _bernoulli_problem()
  candidates = {
    "score_function": sg.score_function(num_samples=4),
    "disarm": sg.disarm(num_pairs=2),
  }
  result = sg.select(candidates, jax.random.key(2), f, dist_fn, alpha, num_pilot=80, repeats=2)
  _check_ranking(result)
  assert result.best == "disarm"
  assert math.isnan(result.row("disarm").bias_norm)  # no exact gradient given
  assert "‖bias‖" not in result.to_markdown()


def test_select_is_deterministic_in_the_variance_and_warms_up_state():
  f, dist_fn, alpha, _ = _bernoulli_problem()
  candidates = {
    "ma": sg.score_function(num_samples=4, baseline=sg.baselines.moving_average(decay=0.5)),
    "sf": sg.score_function(num_samples=4),
  }
  a = sg.select(
    candidates, jax.random.key(3), f, dist_fn, alpha, num_pilot=40, repeats=2, warmup_steps=20
  )
  b = sg.select(
    candidates, jax.random.key(3), f, dist_fn, alpha, num_pilot=40, repeats=2, warmup_steps=20
  )
  for name in candidates:
    assert a.row(name).variance == b.row(name).variance
  # A warmed-up moving-average baseline removes the +5 offset: far lower variance.
  assert a.row("ma").variance < 0.2 * a.row("sf").variance
  cold = sg.select(candidates, jax.random.key(3), f, dist_fn, alpha, num_pilot=40, repeats=2)
  assert cold.row("ma").variance > a.row("ma").variance


def test_select_every_candidate_skipped_is_an_error():
  f, dist_fn, alpha, _ = _bernoulli_problem()
  with pytest.raises(ValueError, match="no candidate applies") as info:
    sg.select(
      {"pathwise": sg.pathwise(num_samples=2)},
      jax.random.key(0),
      f,
      dist_fn,
      alpha,
      num_pilot=4,
      repeats=1,
    )
  assert "reparameterized" in str(info.value)


def test_select_does_not_swallow_other_errors():
  """Only NotApplicableError means 'skip'; a bug in f (or a bad f) propagates."""
  _, dist_fn, alpha, _ = _bernoulli_problem()

  def broken(b):
    raise ZeroDivisionError("user bug")

  with pytest.raises(ZeroDivisionError, match="user bug"):
    sg.select(
      {"sf": sg.score_function(num_samples=2)},
      jax.random.key(0),
      broken,
      dist_fn,
      alpha,
      num_pilot=4,
      repeats=1,
    )
  with pytest.raises(ValueError, match="must return a scalar") as info:
    sg.select(
      {"sf": sg.score_function(num_samples=2)},
      jax.random.key(0),
      lambda b: b,
      dist_fn,
      alpha,
      num_pilot=4,
      repeats=1,
    )
  assert not isinstance(info.value, sg.NotApplicableError)


def test_not_applicable_errors_are_value_errors_and_raised_by_the_library():
  assert issubclass(sg.NotApplicableError, ValueError)
  key = jax.random.key(0)
  with pytest.raises(sg.NotApplicableError, match="reparameterized"):
    sg.pathwise(num_samples=2).estimate(
      key, jnp.sum, lambda a: sg.dists.Bernoulli(logits=a), jnp.zeros(2), sg.EmptyState()
    )
  with pytest.raises(sg.NotApplicableError, match="discrete"):
    est = sg.disarm(num_pairs=1)
    est.estimate(
      key, jnp.sum, lambda m: sg.dists.Normal(m, 1.0), jnp.zeros(2), est.init(jnp.zeros(2))
    )
  # An integer cost for an estimator that differentiates f: a TypeError as before.
  with pytest.raises(sg.NotApplicableError) as info:
    sg.pathwise(num_samples=2).estimate(
      key,
      lambda x: jnp.sum(x > 0),
      lambda m: sg.dists.Normal(m, 1.0),
      jnp.zeros(2),
      sg.EmptyState(),
    )
  assert isinstance(info.value, TypeError)


@pytest.mark.parametrize(
  "candidates, error, match",
  [
    ({}, ValueError, "empty"),
    ([sg.pathwise(num_samples=2)], TypeError, "mapping"),
    ({"a": sg.pathwise}, TypeError, r"candidates\['a'\].*Call the factory"),
    ({"a": "pathwise"}, TypeError, r"GradientEstimator"),
    ({1: sg.pathwise(num_samples=2)}, TypeError, "keys must be strings"),
  ],
)
def test_select_bad_candidates(candidates, error, match):
  f, dist_fn, params, _ = _normal_problem()
  with pytest.raises(error, match=match):
    sg.select(candidates, jax.random.key(0), f, dist_fn, params)


def test_select_bad_settings():
  f, dist_fn, params, exact = _normal_problem()
  c = {"pathwise": sg.pathwise(num_samples=2)}
  k = jax.random.key(0)
  with pytest.raises(ValueError, match="num_pilot"):
    sg.select(c, k, f, dist_fn, params, num_pilot=1)
  with pytest.raises(ValueError, match="multiple of `repeats`"):
    sg.select(c, k, f, dist_fn, params, num_pilot=10, repeats=3)
  with pytest.raises(TypeError, match="key"):
    sg.select(c, 0, f, dist_fn, params)
  with pytest.raises(ValueError, match="structure of `params`"):
    sg.select(c, k, f, dist_fn, params, exact_grad=exact["loc"])
  with pytest.raises(ValueError, match="shapes"):
    sg.select(c, k, f, dist_fn, params, exact_grad={"loc": jnp.zeros(2), "log_scale": jnp.zeros(3)})
  with pytest.raises(ValueError, match="not candidates"):
    sg.select(c, k, f, dist_fn, params, states={"other": ()})
  with pytest.raises(KeyError, match="no candidate named"):
    sg.select(c, k, f, dist_fn, params, num_pilot=4, repeats=1).row("other")


def test_select_accepts_raw_keys_and_float64(x64):
  f, dist_fn, params, exact = _normal_problem()
  params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
  result = sg.select(
    {"pathwise": sg.pathwise(num_samples=4)},
    jax.random.PRNGKey(0),
    f,
    dist_fn,
    params,
    num_pilot=8,
    repeats=2,
    exact_grad=exact,
  )
  assert result.best == "pathwise" and np.isfinite(result.row("pathwise").variance)
