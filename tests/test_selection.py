"""scoregrad.select: ranking by measured variance × time, the checks that keep a
biased or non-finite candidate from being recommended, every reported number
against a hand computation, skipped candidates, bad input.

No test here depends on the machine's speed: the clock that times the pilot
batches is replaced by a fake one (``fake_clock``: every timed batch takes the
same time unless a test says otherwise), so the ranking is by variance alone
and the timing columns are pinned exactly. The problems are built so that
the expected winner's variance is at least ~30× lower than every other
candidate's. Statistical checks state their false-failure rate; the flags
themselves are raised at ``select``'s ``false_flag_rate`` (default 1e-6 per
table), so an unbiased candidate below is flagged by chance with probability
at most 1e-6 per call.
"""

import itertools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import scoregrad as sg
from scoregrad._src import selection as _selection
from scoregrad._src.base import Estimate, GradientEstimator, stateless_init


class FakeClock:
  """Returns 10 r, 10 r + d_r for the r-th timed batch (d_r cycling over ``durations``)."""

  def __init__(self, durations=(1e-3,)):
    self.durations = tuple(durations)
    self.calls = 0

  def __call__(self) -> float:
    batch, end = divmod(self.calls, 2)
    self.calls += 1
    return 10.0 * batch + (self.durations[batch % len(self.durations)] if end else 0.0)


@pytest.fixture(autouse=True)
def fake_clock(monkeypatch):
  clock = FakeClock()
  monkeypatch.setattr(_selection, "_clock", clock)
  return clock


def _check_ranking(result):
  measured = [r for r in result.rows if r.applicable]
  clean = [r for r in measured if not r.flag]
  flagged = [r for r in measured if r.flag]
  assert measured == clean + flagged  # flagged rows after the unflagged ones
  works = [r.work for r in clean]
  assert works == sorted(works)
  assert result.best == min(clean, key=lambda r: r.work).name
  assert not result.row(result.best).flag
  for r in clean:
    assert r.work == pytest.approx(r.variance * r.seconds)
    assert r.variance >= 0 and r.variance_se >= 0 and r.seconds > 0
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
  # straight-through is biased: flagged, ranked after the unbiased ones.
  assert result.best == "disarm"
  assert rows["straight_through"].flag.startswith("biased")
  assert [r.name for r in result.rows if r.applicable][-1] == "straight_through"
  assert result.flagged == {"straight_through": rows["straight_through"].flag}
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


# -- every reported number against a hand computation (issue 29) -------------------------


def _pilot_grads(est, key, index, f, dist_fn, params, num_pilot):
  """The pilot draws of candidate ``index``, by the key scheme select documents."""
  _, k_pilot = jax.random.split(jax.random.fold_in(key, index))
  run = jax.jit(lambda k: est.estimate(k, f, dist_fn, params, est.init(params)))
  grads, values = [], []
  for k in jax.random.split(k_pilot, num_pilot):
    out = run(k)
    leaves = jax.tree_util.tree_leaves(out.grad)
    grads.append([float(x) for leaf in leaves for x in np.ravel(leaf)])
    values.append(float(out.value))
  return grads, values


def _by_hand(grads):
  """tr Cov, its SE (fourth-moment formula), the mean and per-coordinate SEs, in loops."""
  r_count, dim = len(grads), len(grads[0])
  mean = [sum(g[k] for g in grads) / r_count for k in range(dim)]
  q = [sum((g[k] - mean[k]) ** 2 for k in range(dim)) for g in grads]
  variance = sum(q) / (r_count - 1)
  q_bar = sum(q) / r_count
  sd_q = math.sqrt(sum((qi - q_bar) ** 2 for qi in q) / (r_count - 1))
  variance_se = sd_q / math.sqrt(r_count) * r_count / (r_count - 1)
  se = [
    math.sqrt(sum((g[k] - mean[k]) ** 2 for g in grads) / (r_count - 1) / r_count)
    for k in range(dim)
  ]
  return variance, variance_se, mean, se


def test_select_reports_numbers_equal_to_a_hand_computation(fake_clock):
  """Each column of two rows recomputed from the same pilot draws (reproduced
  from the documented key scheme) and the fake clock's batch times. Pins the
  R − 1 of the variance (R = 40: R would give 39/40 of it), the 1/√R of its SE,
  the division of a batch's time by the batch size (not by R), the median and
  quartiles, work, the bias columns and the relative-work column."""
  f, dist_fn, alpha, exact = _bernoulli_problem()
  fake_clock.durations = (0.4, 1.6, 0.2, 0.6)  # 4 batches of 10 estimates
  candidates = {
    "score_function": sg.score_function(num_samples=4),
    "loo": sg.score_function(num_samples=4, baseline=sg.baselines.leave_one_out()),
  }
  key = jax.random.key(11)
  result = sg.select(candidates, key, f, dist_fn, alpha, num_pilot=40, repeats=4, exact_grad=exact)
  assert fake_clock.calls == 2 * 4 * 2  # two clock reads per timed batch, per candidate
  e = [float(x) for x in exact]
  works = {}
  for index, name in enumerate(candidates):
    grads, values = _pilot_grads(candidates[name], key, index, f, dist_fn, alpha, 40)
    variance, variance_se, mean, se = _by_hand(grads)
    row = result.row(name)
    assert row.num_estimates == 40 and row.num_nonfinite == 0 and row.flag == ""
    np.testing.assert_allclose(row.variance, variance, rtol=1e-5)
    np.testing.assert_allclose(row.variance_se, variance_se, rtol=1e-5)
    # Per-estimate times 0.04, 0.16, 0.02, 0.06: median 0.05 (the mean is
    # 0.07); quartiles by linear interpolation at positions 0.75 and 2.25 of
    # the sorted four, 0.02 + 0.75 · 0.02 and 0.06 + 0.25 · 0.1.
    np.testing.assert_allclose(row.seconds, 0.05, rtol=1e-12)
    np.testing.assert_allclose(row.seconds_spread, (0.035, 0.085), rtol=1e-12)
    np.testing.assert_allclose(row.work, variance * 0.05, rtol=1e-5)
    np.testing.assert_allclose(row.work_se, variance_se * 0.05, rtol=1e-5)
    np.testing.assert_allclose(row.value, sum(values) / 40, rtol=1e-5)
    diff = [m - x for m, x in zip(mean, e)]
    np.testing.assert_allclose(row.bias_norm, math.sqrt(sum(d * d for d in diff)), rtol=1e-5)
    np.testing.assert_allclose(row.bias_noise_floor, math.sqrt(variance / 40), rtol=1e-5)
    np.testing.assert_allclose(row.bias_max_z, max(abs(d) / s for d, s in zip(diff, se)), rtol=1e-4)
    works[name] = variance * 0.05
  # The threshold: Bonferroni over 2 candidates × 4 coordinates at 1e-6.
  assert result.false_flag_rate == 1e-6
  np.testing.assert_allclose(result.z_threshold, stats.norm.isf(1e-6 / 16), rtol=1e-9)
  best = min(works, key=works.get)
  assert result.best == best
  table = result.to_markdown()
  for name, w in works.items():
    line = next(l for l in table.splitlines() if f"| {name} |" in l)
    assert f"| {w / works[best]:.3g} |" in line, line
    assert "| 50 ms |" in line and line.endswith("| ok |")


def test_select_cross_check_numbers_by_hand():
  """Without exact_grad: a candidate whose gradient is the score function's plus
  0.3 is blamed (it disagrees with both others, they with one each); the
  disagreement's max |z| is |ḡ_a − ḡ_b| / √(se_a² + se_b²) from the pilot
  draws, and the threshold is Bonferroni over 3 pairs × 4 coordinates."""
  f, dist_fn, alpha, _ = _bernoulli_problem()
  sf = sg.score_function(num_samples=4, baseline=sg.baselines.leave_one_out())
  candidates = {
    "sf": sf,
    "disarm": sg.disarm(num_pairs=2),
    "offset": _shifted(sf, 0.3),
  }
  key = jax.random.key(12)
  result = sg.select(candidates, key, f, dist_fn, alpha, num_pilot=40, repeats=2)
  np.testing.assert_allclose(result.z_threshold, stats.norm.isf(1e-6 / 24), rtol=1e-9)
  assert result.best in ("sf", "disarm")
  assert set(result.flagged) == {"offset"}
  assert [r.name for r in result.rows][-1] == "offset"
  hand = {
    name: _by_hand(_pilot_grads(est, key, i, f, dist_fn, alpha, 40)[0])
    for i, (name, est) in enumerate(candidates.items())
  }
  assert {d.names for d in result.disagreements} == {("sf", "offset"), ("disarm", "offset")}
  for d in result.disagreements:
    assert d.blamed == ("offset",) and "odd one out" in d.cause
    (_, _, ma, sa), (_, _, mb, sb) = hand[d.names[0]], hand[d.names[1]]
    z = max(abs(x - y) / math.sqrt(s * s + t * t) for x, y, s, t in zip(ma, mb, sa, sb))
    np.testing.assert_allclose(d.max_z, z, rtol=1e-4)
    assert d.max_z > result.z_threshold
  assert "disagrees with sf's" in result.row("offset").flag


# -- never a biased recommendation (issue 21, item 3) ------------------------------------


def _shifted(est, shift):
  """``est`` with ``shift`` added to every gradient coordinate (biased, same variance)."""

  def estimate(key, f, dist_fn, params, state):
    out = est.estimate(key, f, dist_fn, params, state)
    return out._replace(grad=jax.tree_util.tree_map(lambda g: g + shift, out.grad))

  return GradientEstimator(est.init, estimate)


def _constant(value, estimate_value=None):
  """A broken estimator: gradient ``value`` everywhere, whatever the samples
  (and ``Estimate.value`` ``estimate_value``, default ``value``)."""
  estimate_value = value if estimate_value is None else estimate_value

  def estimate(key, f, dist_fn, params, state):
    grad = jax.tree_util.tree_map(lambda p: jnp.full(jnp.shape(p), value, jnp.float32), params)
    return Estimate(jnp.asarray(estimate_value, jnp.float32), grad, state)

  return GradientEstimator(stateless_init, estimate)


_S0, _K, _R, _SIGMA, _T = 100.0, 100.0, 0.05, 0.2, 1.0


def _digital_option():
  """Digital call on y = log S_T ~ N(log S0 + (r − σ²/2)T, σ²T), payoff
  e^{−rT} 1[S_T > K]: delta = e^{−rT} φ(d₂)/(S0 σ √T) = 0.018762 at S0 = K = 100,
  r = 0.05, σ = 0.2, T = 1. Pathwise sees the payoff's zero derivative only."""
  d2 = (math.log(_S0 / _K) + (_R - _SIGMA**2 / 2) * _T) / (_SIGMA * math.sqrt(_T))
  delta = math.exp(-_R * _T) * stats.norm.pdf(d2) / (_S0 * _SIGMA * math.sqrt(_T))
  f = lambda y: math.exp(-_R * _T) * jnp.where(jnp.exp(y) > _K, 1.0, 0.0)
  dist_fn = lambda s0: sg.dists.Normal(
    jnp.log(s0) + (_R - _SIGMA**2 / 2) * _T, _SIGMA * math.sqrt(_T)
  )
  return f, dist_fn, jnp.asarray(_S0), delta


_DIGITAL_CANDIDATES = {
  "pathwise": sg.pathwise(num_samples=64),
  "score_function": sg.score_function(num_samples=64),
  "score_function+loo": sg.score_function(num_samples=64, baseline=sg.baselines.leave_one_out()),
}


@pytest.mark.parametrize("with_exact", [True, False], ids=["exact_grad", "cross_check"])
def test_select_digital_option_never_recommends_pathwise(with_exact):
  """Issue 21: pathwise got variance 0 and gradient 0 (bias 0.0188, |z| = inf)
  and was ranked first; the relative-work column read n/a in every row. Now
  pathwise is flagged (or, once pathwise refuses such a cost, skipped); with
  exact_grad as biased, without it by the cross-check against the score
  functions, blamed on pathwise because it differentiates f and they do not."""
  f, dist_fn, s0, delta = _digital_option()
  np.testing.assert_allclose(delta, 0.018762, atol=1e-6)
  result = sg.select(
    _DIGITAL_CANDIDATES,
    jax.random.key(5),
    f,
    dist_fn,
    s0,
    num_pilot=100,
    repeats=2,
    exact_grad=jnp.asarray(delta, jnp.float32) if with_exact else None,
  )
  _check_ranking(result)
  assert result.best in ("score_function", "score_function+loo")
  assert result.row("score_function").flag == "" and result.row("score_function+loo").flag == ""
  pathwise = result.row("pathwise")
  if pathwise.applicable:
    assert pathwise.flag and result.rows.index(pathwise) == 2
    if with_exact:
      assert pathwise.flag.startswith("biased") and pathwise.bias_max_z == math.inf
    else:
      assert {d.blamed for d in result.disagreements} == {("pathwise",)}
      assert all("pathwise differentiates f" in d.cause for d in result.disagreements)
  table = result.to_markdown()
  assert "n/a" not in table and "false-flag rate 1e-06" in table


def test_select_flags_broken_and_relaxed_estimators_against_exact_grad():
  """Issue 21: with exact_grad, a broken estimator returning zeros (variance 0),
  straight-through and Gumbel-softmax (|z| ≈ 17 and 12 here) all ranked above
  DisARM (|z| ≈ 2). Now they are flagged and rank after it; exact enumeration
  (variance 0, right up to float32 rounding) is not flagged and wins, and the
  relative work of the others reads inf."""
  f, dist_fn, alpha, exact = _coupled_problem()
  candidates = {
    "zeros": _constant(0.0),
    "straight_through": sg.straight_through(num_samples=8),
    "gumbel_softmax": sg.gumbel_softmax(num_samples=8, temperature=0.5),
    "disarm": sg.disarm(num_pairs=4),
    "score_function+loo": sg.score_function(num_samples=8, baseline=sg.baselines.leave_one_out()),
  }
  result = sg.select(
    candidates, jax.random.key(6), f, dist_fn, alpha, num_pilot=200, repeats=4, exact_grad=exact
  )
  _check_ranking(result)
  assert set(result.flagged) == {"zeros", "straight_through", "gumbel_softmax"}
  assert result.best in ("disarm", "score_function+loo")
  assert result.row("zeros").bias_max_z == math.inf
  assert "do not vary" in result.row("zeros").flag
  for name in ("straight_through", "gumbel_softmax"):
    assert result.row(name).flag.startswith("biased")
  # Every table line has the header's number of cells (the flags' |z| is escaped).
  table_lines = [l for l in result.to_markdown().splitlines() if l.startswith("|")]
  cells = {len(re.split(r"(?<!\\)\|", l)) for l in table_lines}
  assert len(cells) == 1 and len(table_lines) == 2 + 5, table_lines
  with_exact = sg.select(
    {"disarm": sg.disarm(num_pairs=4), "exact": sg.exact()},
    jax.random.key(7),
    f,
    dist_fn,
    alpha,
    num_pilot=20,
    repeats=2,
    exact_grad=exact,
  )
  assert with_exact.best == "exact" and with_exact.flagged == {}
  assert with_exact.row("exact").variance == 0.0
  # Variance 0 and a mean equal to exact_grad up to float32 rounding: z = 0, not inf.
  assert with_exact.row("exact").bias_max_z == 0.0
  table = with_exact.to_markdown()
  assert "| 1 | exact |" in table and "| inf |" in table


def test_select_cross_check_flags_relaxations_without_exact_grad():
  """The same problem without exact_grad: straight-through differentiates f,
  DisARM and the score function do not, so each disagreement is blamed on it.
  (Their estimates average 8× more samples, so that straight-through's bias
  is well above the pairwise test's resolution.)"""
  f, dist_fn, alpha, _ = _coupled_problem()
  candidates = {
    "straight_through": sg.straight_through(num_samples=8),
    "disarm": sg.disarm(num_pairs=32),
    "score_function+loo": sg.score_function(num_samples=64, baseline=sg.baselines.leave_one_out()),
  }
  result = sg.select(candidates, jax.random.key(6), f, dist_fn, alpha, num_pilot=200, repeats=4)
  _check_ranking(result)
  assert set(result.flagged) == {"straight_through"}
  assert result.disagreements
  for d in result.disagreements:
    assert d.blamed == ("straight_through",)
    assert "straight_through differentiates f" in d.cause


def _coupled_problem():
  # f(b) = (w·b − 2)² on 6 bits: exact gradient by enumerating the 64 configurations.
  dim = 6
  alpha = jnp.linspace(-1.0, 1.5, dim)
  w = jnp.linspace(0.5, 1.5, dim)
  f = lambda b: (jnp.dot(w, b) - 2.0) ** 2
  dist_fn = lambda a: sg.dists.Bernoulli(logits=a)
  configs = np.array(list(itertools.product([0.0, 1.0], repeat=dim)))
  values = np.array([float(f(jnp.asarray(b))) for b in configs])

  def mean(a):
    p = 1 / (1 + np.exp(-a))
    probs = np.prod(np.where(configs > 0, p, 1 - p), axis=1)
    return probs @ values

  a64 = np.asarray(alpha, np.float64)
  p = 1 / (1 + np.exp(-a64))
  probs = np.prod(np.where(configs > 0, p, 1 - p), axis=1)
  exact = (probs * values) @ (configs - p)  # Σ_x p(x) f(x) ∇α log p(x)
  return f, dist_fn, alpha, exact


def test_select_non_finite_candidate_is_never_best():
  """Issue 21: a candidate returning only NaN was returned as best. Now it is
  flagged and ranked last, and so is one with a finite value but NaN
  gradients; alone, select refuses to recommend anything."""
  f, dist_fn, alpha, exact = _bernoulli_problem()
  candidates = {
    "nan": _constant(math.nan),
    "nan_grad": _constant(math.nan, estimate_value=1.0),
    "score_function": sg.score_function(num_samples=4),
  }
  for exact_grad in (None, exact):
    result = sg.select(
      candidates,
      jax.random.key(8),
      f,
      dist_fn,
      alpha,
      num_pilot=40,
      repeats=2,
      exact_grad=exact_grad,
    )
    assert result.best == "score_function"
    row = result.row("nan")
    assert row.num_nonfinite == 40 and "40 of 40 estimates have NaN" in row.flag
    assert result.row("nan_grad").num_nonfinite == 40 and result.row("nan_grad").flag
    assert [r.name for r in result.rows] == ["score_function", "nan", "nan_grad"]
    assert "| n/a |" in result.to_markdown()
  with pytest.raises(ValueError, match="every applicable candidate is flagged") as info:
    sg.select(
      {"nan": _constant(math.nan)}, jax.random.key(8), f, dist_fn, alpha, num_pilot=4, repeats=1
    )
  assert "nan: 4 of 4 estimates have NaN" in str(info.value)


def test_select_refuses_when_it_cannot_tell_which_is_wrong():
  """Two candidates that disagree, neither differentiating f: both blamed, so
  none can be recommended (a clear error with the table), not a coin toss."""
  f, dist_fn, alpha, _ = _bernoulli_problem()
  sf = sg.score_function(num_samples=4)
  with pytest.raises(ValueError, match="every applicable candidate is flagged") as info:
    sg.select(
      {"sf": sf, "offset": _shifted(sf, 5.0)},
      jax.random.key(9),
      f,
      dist_fn,
      alpha,
      num_pilot=40,
      repeats=2,
    )
  assert "cannot tell which" in str(info.value) and "exact_grad" in str(info.value)


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, math.nan])
def test_select_bad_false_flag_rate(rate):
  f, dist_fn, params, _ = _normal_problem()
  with pytest.raises(ValueError, match=r"false_flag_rate.*in \(0, 1\)"):
    sg.select(
      {"pathwise": sg.pathwise(num_samples=2)},
      jax.random.key(0),
      f,
      dist_fn,
      params,
      false_flag_rate=rate,
    )
  with pytest.raises(TypeError, match="false_flag_rate"):
    sg.select(
      {"pathwise": sg.pathwise(num_samples=2)},
      jax.random.key(0),
      f,
      dist_fn,
      params,
      false_flag_rate="small",
    )


def test_select_with_the_real_clock(monkeypatch):
  """The real clock: times positive and finite, ordered spread (nothing about
  which candidate is faster is asserted)."""
  monkeypatch.setattr(_selection, "_clock", __import__("time").perf_counter)
  f, dist_fn, params, _ = _normal_problem()
  result = sg.select(
    {"pathwise": sg.pathwise(num_samples=4), "score_function": sg.score_function(num_samples=4)},
    jax.random.key(0),
    f,
    dist_fn,
    params,
    num_pilot=8,
    repeats=2,
  )
  for r in result.rows:
    lo, hi = r.seconds_spread
    assert 0 < lo <= r.seconds <= hi < math.inf
