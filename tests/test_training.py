"""Training loops: estimator state threads next to optax state inside one
jax.jit + lax.scan, and score-function training reaches known optima.

Thresholds: the optima are exact (loc = 3, scale → 0; P(b=1) → 0); the
tolerances are several times the spread seen across 20 seeds of the same
loop (checked when writing the test), so they hold for any key."""

import jax
import jax.numpy as jnp
import optax
import pytest

import scoregrad as sg


def _train(est, dist_fn, f, params, steps, lr, key):
  opt = optax.adam(lr)

  def step(carry, key):
    params, opt_state, est_state = carry
    out = est.estimate(key, f, dist_fn, params, est_state)
    updates, opt_state = opt.update(out.grad, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state, out.state), out.value

  carry = (params, opt.init(params), est.init(params))
  (params, _, est_state), values = jax.jit(lambda c, ks: jax.lax.scan(step, c, ks))(
    carry, jax.random.split(key, steps)
  )
  return params, est_state, values


@pytest.mark.parametrize(
  "baseline",
  [sg.baselines.leave_one_out(), sg.baselines.moving_average(decay=0.9)],
  ids=lambda b: b.name,
)
def test_gaussian_to_known_optimum(baseline):
  """min over (loc, log_scale) of E[(x − 3)²] = (loc − 3)² + scale²."""
  est = sg.score_function(num_samples=16, baseline=baseline)
  dist_fn = lambda p: sg.dists.Normal(p["loc"], jnp.exp(p["log_scale"]))
  params = {"loc": jnp.array(0.0), "log_scale": jnp.array(0.0)}
  params, est_state, values = _train(
    est, dist_fn, lambda x: (x - 3.0) ** 2, params, steps=1500, lr=0.05, key=jax.random.key(0)
  )
  assert abs(float(params["loc"]) - 3.0) < 0.15
  assert float(jnp.exp(params["log_scale"])) < 0.2
  assert float(jnp.mean(values[-100:])) < 0.1 < float(values[0])
  if baseline.stateful:
    assert int(est_state.baseline.count) == 1500


def test_bernoulli_to_known_optimum():
  """min E[(b − 0.45)²] = 0.2025 + 0.1 p: the optimum is p = σ(θ) → 0."""
  est = sg.score_function(num_samples=8, baseline=sg.baselines.leave_one_out())
  dist_fn = lambda t: sg.dists.Bernoulli(logits=t)
  theta, _, _ = _train(
    est,
    dist_fn,
    lambda b: (b - 0.45) ** 2,
    jnp.array(0.0),
    steps=600,
    lr=0.05,
    key=jax.random.key(1),
  )
  assert float(jax.nn.sigmoid(theta)) < 0.05


def test_expectation_front_door_in_optax_loop():
  """A loss written with sg.expectation trains with plain jax.grad."""
  opt = optax.sgd(0.05)

  def loss(theta, key):
    return sg.expectation(
      lambda x: (x - 3.0) ** 2,
      sg.dists.Normal(theta, 0.5),
      key,
      num_samples=32,
      baseline=sg.baselines.leave_one_out(),
    )

  def step(carry, key):
    theta, s = carry
    g = jax.grad(loss)(theta, key)
    u, s = opt.update(g, s, theta)
    return (optax.apply_updates(theta, u), s), None

  theta = jnp.array(0.0)
  (theta, _), _ = jax.lax.scan(
    step, (theta, opt.init(theta)), jax.random.split(jax.random.key(2), 300)
  )
  assert abs(float(theta) - 3.0) < 0.15
