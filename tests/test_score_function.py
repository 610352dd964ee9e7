"""Specification of the score-function estimator.

Statistical assertions use scoregrad.testing with false-failure rate 1e-6 per
assertion (Bonferroni over coordinates), so the whole file fails by chance
with probability < 1e-4 for any seed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased, assert_variance

from problems import PROBLEMS

RATE = 1e-6
N = 100_000


def _cast(tree, dtype):
  return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), tree)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_unbiased_with_exact_per_sample_variance(name, dtype):
  """Per-sample gradients are iid draws of f(x)∇log p: mean = exact gradient,
  variance = the exact variance derived in problems.py."""
  prob = PROBLEMS[name]
  params = _cast(prob.params, dtype)
  est = sg.score_function(num_samples=N, per_sample=True)
  run = jax.jit(lambda k, p: est.estimate(k, prob.f, prob.dist_fn, p, est.init(p)))
  out = run(jax.random.key(1), params)
  for leaf in jax.tree_util.tree_leaves(out.per_sample):
    assert leaf.dtype == dtype and leaf.shape[0] == N
  assert_unbiased(
    out.per_sample, prob.exact_grad, false_failure_rate=RATE, exact_variance=prob.score_variance
  )
  assert_variance(out.per_sample, prob.score_variance, false_failure_rate=RATE)
  # grad is the mean of the per-sample gradients.
  chex_close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  jax.tree_util.tree_map(lambda g, ps: chex_close(g, jnp.mean(ps, 0)), out.grad, out.per_sample)


@pytest.mark.parametrize("name", ["gaussian_cos", "bernoulli", "categorical", "poisson"])
@pytest.mark.parametrize(
  "baseline",
  [sg.baselines.leave_one_out(), sg.baselines.optimal(), sg.baselines.constant(0.7)],
  ids=lambda b: b.name,
)
def test_baselines_unbiased(name, baseline):
  """Baselines from other samples keep the estimator unbiased: 20000 independent
  4-sample estimates (vmapped keys) average to the exact gradient."""
  prob = PROBLEMS[name]
  est = sg.score_function(num_samples=4, baseline=baseline)
  keys = jax.random.split(jax.random.key(2), 20_000)
  grads = jax.jit(
    jax.vmap(
      lambda k: est.estimate(k, prob.f, prob.dist_fn, prob.params, est.init(prob.params)).grad
    )
  )(keys)
  assert_unbiased(grads, prob.exact_grad, false_failure_rate=RATE)


def test_moving_average_baseline_unbiased_at_any_state():
  prob = PROBLEMS["bernoulli"]
  est = sg.score_function(num_samples=3, baseline=sg.baselines.moving_average(decay=0.5))
  state = sg.ScoreFunctionState(
    baseline=sg.baselines.MovingAverageState(value=jnp.asarray(0.4), count=jnp.asarray(2))
  )
  keys = jax.random.split(jax.random.key(3), 20_000)
  grads = jax.jit(
    jax.vmap(lambda k: est.estimate(k, prob.f, prob.dist_fn, prob.params, state).grad)
  )(keys)
  assert_unbiased(grads, prob.exact_grad, false_failure_rate=RATE)


def test_moving_average_state_update():
  est = sg.score_function(num_samples=4, baseline=sg.baselines.moving_average(decay=0.9))
  prob = PROBLEMS["poisson"]
  state = est.init(prob.params)
  out = est.estimate(jax.random.key(0), prob.f, prob.dist_fn, prob.params, state)
  assert int(out.state.baseline.count) == 1
  np.testing.assert_allclose(out.state.baseline.value, 0.1 * out.value, rtol=1e-6)
  # With zero-debiasing the baseline used at step 2 is the mean cost of step 1.
  b = sg.baselines.moving_average(decay=0.9).values(jnp.zeros(4), None, out.state.baseline)
  np.testing.assert_allclose(b, out.value, rtol=1e-5)


def test_leave_one_out_variance_reduction_is_real():
  """RLOO beats plain REINFORCE on a cost with a large offset (f + 10)."""
  prob = PROBLEMS["gaussian_quadratic"]
  f = lambda x: prob.f(x) + 10.0
  keys = jax.random.split(jax.random.key(4), 4000)
  var = {}
  for b in [None, sg.baselines.leave_one_out()]:
    est = sg.score_function(num_samples=8, baseline=b)
    g = jax.vmap(
      lambda k: est.estimate(k, f, prob.dist_fn, prob.params, est.init(prob.params)).grad
    )(keys)
    var[b is None] = float(jnp.var(g["loc"]))
  assert var[False] < 0.5 * var[True]


def test_pytree_params():
  """Nested dict/tuple params: every leaf gets its gradient."""
  params = {
    "loc": jnp.array([0.5, -1.0]),
    "extra": (jnp.array(0.0), {"log_scale": jnp.array([0.2, -0.3])}),
  }

  def dist_fn(p):
    return sg.dists.Normal(p["loc"] + p["extra"][0], jnp.exp(p["extra"][1]["log_scale"]))

  f = lambda x: jnp.sum(x**2)
  # E = Σ (loc + c)² + e^{2 s}: ∂loc = 2(loc + c), ∂c = Σ 2(loc + c), ∂s = 2 e^{2s}.
  loc, s = np.array([0.5, -1.0]), np.array([0.2, -0.3])
  exact = {"loc": 2 * loc, "extra": (np.sum(2 * loc), {"log_scale": 2 * np.exp(2 * s)})}
  est = sg.score_function(num_samples=200_000, per_sample=True)
  out = jax.jit(lambda k: est.estimate(k, f, dist_fn, params, est.init(params)))(jax.random.key(5))
  assert jax.tree_util.tree_structure(out.grad) == jax.tree_util.tree_structure(params)
  assert out.per_sample["extra"][1]["log_scale"].shape == (200_000, 2)
  assert_unbiased(out.per_sample, exact, false_failure_rate=RATE)


def test_jit_and_no_jit_agree(dtype):
  prob = PROBLEMS["gaussian_cos"]
  params = _cast(prob.params, dtype)
  est = sg.score_function(num_samples=64, baseline=sg.baselines.leave_one_out(), per_sample=True)
  run = lambda k, p: est.estimate(k, prob.f, prob.dist_fn, p, est.init(p))
  a = run(jax.random.key(7), params)
  b = jax.jit(run)(jax.random.key(7), params)
  tol = 1e-5 if dtype == jnp.float32 else 1e-12
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)
  # Same key, same answer; new key, new answer.
  c = jax.jit(run)(jax.random.key(8), params)
  assert not np.allclose(a.grad["loc"], c.grad["loc"])


def test_no_recompilation_on_new_values():
  prob = PROBLEMS["bernoulli"]
  est = sg.score_function(num_samples=16, baseline=sg.baselines.moving_average(decay=0.9))
  traces = []

  @jax.jit
  def step(key, params, state):
    traces.append(1)
    return est.estimate(key, prob.f, prob.dist_fn, params, state)

  state = est.init(prob.params)
  out = step(jax.random.key(0), prob.params, state)
  out = step(jax.random.key(1), prob.params + 0.5, out.state)
  out = step(jax.random.key(2), jnp.array([1.0, 2.0, 3.0]), out.state)
  assert len(traces) == 1 and step._cache_size() == 1


def test_raw_uint32_keys_accepted():
  prob = PROBLEMS["poisson"]
  est = sg.score_function(num_samples=8)
  a = est.estimate(jax.random.PRNGKey(3), prob.f, prob.dist_fn, prob.params, est.init(prob.params))
  assert np.isfinite(a.grad)


def test_nan_costs_propagate():
  """NaN costs give NaN gradients — never a finite number. Documented in
  score_function's docstring."""
  prob = PROBLEMS["gaussian_cos"]
  f = lambda x: jnp.where(x > 1.0, jnp.nan, x)
  for b in [None, sg.baselines.leave_one_out(), sg.baselines.optimal()]:
    est = sg.score_function(num_samples=64, baseline=b)
    out = est.estimate(jax.random.key(0), f, prob.dist_fn, prob.params, est.init(prob.params))
    assert np.isnan(out.value)
    assert all(np.isnan(g) for g in jax.tree_util.tree_leaves(out.grad))


def test_integer_costs_are_promoted():
  prob = PROBLEMS["categorical"]
  est = sg.score_function(num_samples=16)
  out = est.estimate(
    jax.random.key(0), lambda x: x, prob.dist_fn, prob.params, est.init(prob.params)
  )
  assert jnp.issubdtype(out.value.dtype, jnp.floating)


def test_learned_baseline_unbiased_and_fits_mean_cost():
  """At any fixed φ the estimator is unbiased; training moves φ towards E[f]."""
  import optax

  prob = PROBLEMS["poisson"]
  baseline = sg.baselines.learned(optax.sgd(0.3))
  est = sg.score_function(num_samples=4, baseline=baseline)
  state = sg.ScoreFunctionState(
    baseline=sg.baselines.LearnedState(
      value=jnp.asarray(5.0), opt_state=optax.sgd(0.3).init(jnp.asarray(5.0))
    )
  )
  keys = jax.random.split(jax.random.key(9), 20_000)
  grads = jax.jit(
    jax.vmap(lambda k: est.estimate(k, prob.f, prob.dist_fn, prob.params, state).grad)
  )(keys)
  assert_unbiased(grads, prob.exact_grad, false_failure_rate=RATE)

  def step(s, k):
    return est.estimate(k, prob.f, prob.dist_fn, prob.params, s).state, None

  slow = sg.score_function(num_samples=4, baseline=sg.baselines.learned(optax.sgd(0.02)))

  def slow_step(s, k):
    return slow.estimate(k, prob.f, prob.dist_fn, prob.params, s).state, None

  final, _ = jax.lax.scan(slow_step, slow.init(prob.params), keys[:400])
  # E[x²] = λ + λ² = 8.75 for λ = 2.5. SGD (lr 0.02) on (c̄ − φ)² is an EMA
  # φ ← φ + 0.04 (c̄ − φ); c̄ (4 samples) has sd √(102.5/4) ≈ 5.06, so the
  # stationary sd of φ is 5.06·√(0.04/1.96) ≈ 0.72 and the start-up bias
  # 8.75·0.96^400 is negligible: |φ − 8.75| < 4 is a 5.5-sd tolerance.
  assert abs(float(final.baseline.value) - 8.75) < 4.0


@pytest.mark.parametrize(
  "make",
  [
    lambda: sg.score_function(num_samples=8),
    lambda: sg.score_function(
      num_samples=8, baseline=sg.baselines.leave_one_out(), per_sample=True
    ),
    lambda: sg.score_function(num_samples=8, control_variate=sg.control_variates.delta_method()),
    lambda: sg.pathwise(num_samples=8),
    lambda: sg.measure_valued(num_samples=8),
  ],
  ids=[
    "score_function",
    "score_function+loo+per_sample",
    "score_function+delta",
    "pathwise",
    "measure_valued",
  ],
)
def test_value_is_differentiable_in_what_f_closes_over(make):
  """jax.grad through Estimate.value w.r.t. a variable f closes over is the
  Monte Carlo mean of ∂f/∂a at the same samples — never a silent zero."""
  est = make()
  params = {"loc": jnp.array(0.5), "scale": jnp.array(1.2)}
  dist_fn = lambda p: sg.dists.Normal(p["loc"], p["scale"])
  key = jax.random.key(0)

  def value(a):
    return est.estimate(key, lambda x: a * x**2, dist_fn, params, est.init(params)).value

  a = jnp.array(3.0)
  np.testing.assert_allclose(jax.grad(value)(a), value(a) / a, rtol=1e-5)
