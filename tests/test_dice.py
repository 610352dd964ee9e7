"""The DiCE surrogate: first and second derivatives are unbiased, with and
without baselines (Foerster et al. 2018; Mao et al. 2019), and a cost that
depends on θ gets its pathwise term. False-failure rate 1e-6 per assertion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased

RATE = 1e-6


def test_magic_box_value_and_derivatives():
  tau = jnp.array(0.3)
  assert sg.magic_box(tau) == 1.0
  assert jax.grad(sg.magic_box)(tau) == 1.0  # □ ∇τ with ∇τ = 1
  assert jax.grad(jax.grad(sg.magic_box))(tau) == 1.0
  f = lambda t: sg.magic_box(t**2)
  np.testing.assert_allclose(jax.grad(f)(tau), 2 * 0.3, rtol=1e-6)
  np.testing.assert_allclose(jax.grad(jax.grad(f))(tau), 2 + (2 * 0.3) ** 2, rtol=1e-6)


def _cos_hessian(mu, sigma):
  """E[cos x] = cos μ e^{−σ²/2}; its Hessian in (μ, σ)."""
  e = np.exp(-(sigma**2) / 2)
  return np.array(
    [
      [-np.cos(mu) * e, sigma * np.sin(mu) * e],
      [sigma * np.sin(mu) * e, (sigma**2 - 1) * np.cos(mu) * e],
    ]
  )


@pytest.mark.parametrize(
  "baseline",
  [None, sg.baselines.leave_one_out(), sg.baselines.constant(2.0)],
  ids=["none", "leave_one_out", "constant"],
)
def test_hessian_unbiased_gaussian(baseline):
  theta = jnp.array([0.7, 1.1])

  def value(t, key):
    return sg.expectation(
      jnp.cos, sg.dists.Normal(t[0], t[1]), key, num_samples=8, baseline=baseline
    )

  keys = jax.random.split(jax.random.key(0), 20_000)
  hessians = jax.jit(jax.vmap(lambda k: jax.hessian(value)(theta, k)))(keys)
  assert_unbiased(hessians, _cos_hessian(0.7, 1.1), false_failure_rate=RATE)


def test_hessian_unbiased_bernoulli():
  """E[f(b)] = p f(1) + (1 − p) f(0), p = σ(l) ⇒ d²/dl² = (f1 − f0) p(1−p)(1−2p)."""
  l = 0.4
  p = 1 / (1 + np.exp(-l))
  f = lambda b: (b - 0.2) ** 2 + 1.0
  exact = ((0.8**2 + 1) - (0.2**2 + 1)) * p * (1 - p) * (1 - 2 * p)

  def value(t, key):
    return sg.expectation(
      f, sg.dists.Bernoulli(logits=t), key, num_samples=16, baseline=sg.baselines.leave_one_out()
    )

  keys = jax.random.split(jax.random.key(1), 40_000)
  second = jax.jit(jax.vmap(lambda k: jax.grad(jax.grad(value))(jnp.asarray(l), k)))(keys)
  assert_unbiased(second, np.float64(exact), false_failure_rate=RATE)


def test_cost_depending_on_theta_gets_pathwise_term():
  """x ~ N(θ, 1), f(x; θ) = θ x ⇒ E = θ², gradient 2θ, second derivative 2.
  Without the pathwise term the gradient would be θ (wrong)."""
  theta = 0.8

  def value(t, key):
    return sg.expectation(lambda x: t * x, sg.dists.Normal(t, 1.0), key, num_samples=8)

  keys = jax.random.split(jax.random.key(2), 20_000)
  grads = jax.jit(jax.vmap(lambda k: jax.grad(value)(jnp.asarray(theta), k)))(keys)
  assert_unbiased(grads, np.float64(2 * theta), false_failure_rate=RATE)
  second = jax.jit(jax.vmap(lambda k: jax.grad(jax.grad(value))(jnp.asarray(theta), k)))(keys)
  assert_unbiased(second, np.float64(2.0), false_failure_rate=RATE)


def test_expectation_value_is_monte_carlo_mean():
  key = jax.random.key(3)
  dist = sg.dists.Normal(1.0, 2.0)
  v = sg.expectation(jnp.square, dist, key, num_samples=10)
  x = dist.sample(key, (10,))
  np.testing.assert_allclose(v, jnp.mean(x**2), rtol=1e-6)


def test_expectation_pathwise():
  theta = jnp.array([0.7, 1.1])

  def value(t, key):
    return sg.expectation(
      jnp.cos, sg.dists.Normal(t[0], t[1]), key, num_samples=8, estimator="pathwise"
    )

  e = np.exp(-(1.1**2) / 2)
  exact = np.array([-np.sin(0.7) * e, -1.1 * np.cos(0.7) * e])
  keys = jax.random.split(jax.random.key(4), 20_000)
  grads = jax.jit(jax.vmap(lambda k: jax.grad(value)(theta, k)))(keys)
  assert_unbiased(grads, exact, false_failure_rate=RATE)


def test_score_function_surrogate_matches_estimator():
  """The sample-based entry point gives the estimator's gradient exactly."""
  logits = jnp.array([0.2, -0.5, 1.0])
  f = lambda b: jnp.sum(b * jnp.array([1.0, 2.0, -1.0]))
  key = jax.random.key(5)
  est = sg.score_function(num_samples=32, baseline=sg.baselines.leave_one_out())
  dist_fn = lambda l: sg.dists.Bernoulli(logits=l)
  out = est.estimate(key, f, dist_fn, logits, est.init(logits))
  samples = dist_fn(logits).sample(key, (32,))
  costs = jax.vmap(f)(samples)

  def loss(l):
    logp = jax.vmap(sg.dists.Bernoulli(logits=l).log_prob)(samples)
    return sg.score_function_surrogate(logp, costs, baseline=sg.baselines.leave_one_out())

  np.testing.assert_allclose(jax.grad(loss)(logits), out.grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(loss(logits), out.value, rtol=1e-6)


def test_score_function_surrogate_moving_average_needs_state():
  ma = sg.baselines.moving_average(decay=0.9)
  with pytest.raises(ValueError, match="baseline_state"):
    sg.score_function_surrogate(jnp.zeros(4), jnp.ones(4), baseline=ma)
  state = ma.init()
  v = sg.score_function_surrogate(jnp.zeros(4), jnp.ones(4), baseline=ma, baseline_state=state)
  assert v == 1.0
  state = ma.update(state, jnp.ones(4))
  g = jax.grad(
    lambda lp: sg.score_function_surrogate(lp, jnp.ones(4), baseline=ma, baseline_state=state)
  )(jnp.zeros(4))
  np.testing.assert_allclose(g, 0.0, atol=1e-6)  # cost 1, baseline 1 ⇒ zero


def test_score_function_surrogate_array_baseline():
  """User-computed baselines (e.g. a value network) as arrays: unbiased
  REINFORCE, and the shape is checked."""
  logits = jnp.array([0.3, -0.2])
  samples = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  costs = jnp.array([1.0, 2.0, 3.0])
  b = jnp.array([0.5, 0.1, 2.0])

  def loss(l, baseline):
    logp = jax.vmap(sg.dists.Bernoulli(logits=l).log_prob)(samples)
    return sg.score_function_surrogate(logp, costs, baseline=baseline)

  scores = samples - jax.nn.sigmoid(logits)
  expected = jnp.mean((costs - b)[:, None] * scores, axis=0)
  np.testing.assert_allclose(jax.grad(loss)(logits, b), expected, rtol=1e-5)
  np.testing.assert_allclose(loss(logits, b), 2.0, rtol=1e-6)
  with pytest.raises(ValueError, match=r"shape \(3,\)"):
    loss(logits, jnp.zeros(2))


def test_dice_terms_value_and_gradient():
  """sg.dice: value c_i per sample; gradient (c_i − b_i) ∇τ_i, exactly, on fixed numbers."""
  theta = jnp.array([0.3, -0.2, 0.5])
  costs = jnp.array([1.0, 2.0, -1.5])
  baselines = jnp.array([0.5, 0.5, 0.5])

  def terms(t):
    return sg.dice(t**2, costs, baselines)

  np.testing.assert_allclose(terms(theta), costs, rtol=1e-6)
  grad = jax.grad(lambda t: jnp.sum(terms(t)))(theta)
  np.testing.assert_allclose(grad, (costs - baselines) * 2 * theta, rtol=1e-6)


def test_describe_makes_a_users_estimator_layerable():
  """sg.describe attaches Traits, so sg.chunked can rebuild a user's own estimator."""

  def mine(num_samples, per_sample=False):
    base = sg.score_function(num_samples=num_samples, per_sample=per_sample)
    traits = sg.Traits(
      name=f"mine({num_samples})",
      num_samples=num_samples,
      samples_name="num_samples",
      rebuild=lambda **k: mine(**{"num_samples": num_samples, "per_sample": per_sample, **k}),
      per_sample=per_sample,
      chunk_plan=lambda chunk, rows: ((lambda _: mine(chunk, rows)), None),
    )
    return sg.describe(sg.GradientEstimator(base.init, base.estimate), traits)

  est = sg.chunked(mine(8), 4)
  assert est.traits.chunk_size == 4
  params = jnp.array([0.2, 1.0])
  dist_fn = lambda p: sg.dists.Normal(p[0], p[1])
  out = est.estimate(jax.random.key(0), jnp.sin, dist_fn, params, est.init(params))
  assert out.grad.shape == (2,) and bool(jnp.all(jnp.isfinite(out.grad)))
