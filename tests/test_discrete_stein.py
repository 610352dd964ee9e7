"""Double control variates and RODEO: unbiased for any control-variate
parameters, with exact variances from enumerating the K-tuples of samples.

Exact answers come from tests/discrete_oracles.py (float64 NumPy, explicit
loops over samples and neighbours, independent of the implementation).
Statistical assertions use false-failure rate 1e-6 each (Bonferroni over
coordinates); this file makes fewer than 30, so it fails by chance with
probability < 3e-5 for any seed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased, assert_variance

import discrete_oracles as oracles

RATE = 1e-6
DRAWS = 40_000
B = oracles.BERNOULLI_PROBLEMS
HIDDEN = 6


def _make(name, k, **kw):
  if name == "double_cv":
    return sg.double_cv(num_samples=k, **kw)
  return sg.rodeo(num_samples=k, hidden_size=HIDDEN, **kw)


def _perturbed_control(name, state):
  """Arbitrary nonzero control-variate parameters (unbiasedness must hold for all)."""
  if name == "double_cv":
    return {"alpha": jnp.asarray(0.8)}
  net = state.control["network"]
  leaves, tree = jax.tree_util.tree_flatten(net)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  leaves = [x + 0.7 * jax.random.normal(kk, x.shape, x.dtype) for x, kk in zip(leaves, keys)]
  return {
    "alpha": jnp.asarray(0.9),
    "beta": jnp.asarray(-1.7),
    "network": jax.tree_util.tree_unflatten(tree, leaves),
  }


def _moments(name, prob, k, control):
  if name == "double_cv":
    return oracles.double_cv_moments(prob, k, float(control["alpha"]))
  return oracles.rodeo_moments(prob, k, jax.tree_util.tree_map(np.asarray, control))


def _draws(est, f, params, state, draws=DRAWS, seed=2):
  keys = jax.random.split(jax.random.key(seed), draws)
  fn = jax.jit(jax.vmap(lambda kk: est.estimate(kk, f, oracles.bernoulli_dist, params, state).grad))
  return np.asarray(fn(keys), np.float64)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
def test_oracle_mean_is_exact_gradient_for_any_control(name, k):
  """The estimator's exact mean (all (2^3)^K tuples) is the enumerated gradient
  at LOO-REINFORCE parameters (0) and at arbitrary nonzero ones: the identity
  itself, to 1e-10, no Monte Carlo."""
  for prob in B.values():
    _, grad = oracles.bernoulli_exact(prob)
    est = _make(name, k)
    state = est.init(jnp.zeros(3))
    for control in (state.control, _perturbed_control(name, state)):
      mean, _ = _moments(name, prob, k, control)
      np.testing.assert_allclose(mean, grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
  "name, k", [("double_cv", 2), ("double_cv", 3), ("rodeo", 2), ("rodeo", 3)]
)
def test_unbiased_with_exact_variance(name, k, dtype):
  """Fixed nonzero control parameters (learning off): many independent
  estimates have the enumerated gradient as mean and the enumerated variance."""
  prob = B["coupled"]
  est = _make(name, k, learning_rate=0.0)
  logits = jnp.asarray(prob.logits, dtype)
  state = est.init(logits)
  state = state._replace(control=_perturbed_control(name, state))
  _, var = _moments(name, prob, k, state.control)
  _, grad = oracles.bernoulli_exact(prob)
  draws = _draws(est, prob.f, logits, state)
  assert_unbiased(draws, grad, false_failure_rate=RATE, exact_variance=var)
  assert_variance(draws, var, false_failure_rate=RATE)


@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
def test_adapted_in_scan_unbiased_and_lower_variance(name):
  """Adapt the control variate for 300 steps inside lax.scan (logits fixed):
  the parameters move, the exact variance at the adapted state is below
  leave-one-out REINFORCE's (a = β = 0), and estimates at the adapted state
  are unbiased with that exact variance."""
  prob = B["coupled"]
  k = 2
  est = _make(name, k, optimizer=optax.adam(3e-2))
  logits = jnp.asarray(prob.logits, jnp.float32)
  state0 = est.init(logits)

  def step(state, key):
    out = est.estimate(key, prob.f, oracles.bernoulli_dist, logits, state)
    return out.state, jnp.sum(out.grad**2)

  state, _ = jax.jit(lambda s: jax.lax.scan(step, s, jax.random.split(jax.random.key(5), 300)))(
    state0
  )
  assert float(state.control["alpha"]) != 0.0
  print(
    name,
    "adapted control:",
    jax.tree_util.tree_map(
      lambda x: np.round(np.asarray(x), 3) if np.ndim(x) == 0 else x.shape, state.control
    ),
  )
  _, var0 = _moments(name, prob, k, state0.control)
  _, var = _moments(name, prob, k, state.control)
  print(name, "exact Σ variance, LOO start:", np.sum(var0), "adapted:", np.sum(var))
  np.testing.assert_allclose(
    var0, oracles.leave_one_out_moments(oracles.finite_bernoulli(prob), 2)[1], rtol=1e-10
  )
  if name == "double_cv":
    # ĝ is affine in a, so Σ Var is exactly quadratic in a: its minimum from
    # three values. Learning gets within half of the way from LOO to it.
    v = [np.sum(oracles.double_cv_moments(prob, k, a)[1]) for a in (-1.0, 0.0, 1.0)]
    curv, slope = (v[0] + v[2] - 2 * v[1]) / 2, (v[2] - v[0]) / 2
    best = v[1] - slope**2 / (4 * curv)
    assert best < np.sum(var0)
    assert np.sum(var) - best < 0.5 * (np.sum(var0) - best)
  else:
    assert np.sum(var) < 0.75 * np.sum(var0)  # measured: 0.070 vs 0.145
  frozen = _make(name, k, learning_rate=0.0)
  state = frozen.init(logits)._replace(control=state.control)
  draws = _draws(frozen, prob.f, logits, state)
  assert_unbiased(
    draws, oracles.bernoulli_exact(prob)[1], false_failure_rate=RATE, exact_variance=var
  )
  assert_variance(draws, var, false_failure_rate=RATE)


@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
def test_jit_scan_no_retrace_pytree_params_per_sample(name):
  """Pytree params through the pull-back, per_sample rows averaging to the
  estimate, a state that threads through jit without a second trace."""
  est = _make(name, 3, per_sample=True)
  traces = []

  def f(b):
    traces.append(1)
    return jnp.mean((b - 0.45) ** 2) + b[0] * b[2]

  params = {"w": jnp.array([[0.1, 0.2, -0.3], [0.4, 0.0, 0.2]])}
  dist_fn = lambda p: sg.dists.Bernoulli(logits=jnp.sum(p["w"], 0))
  run = jax.jit(lambda kk, p, s: est.estimate(kk, f, dist_fn, p, s))
  out = run(jax.random.key(0), params, est.init(params))
  n = len(traces)
  out = run(jax.random.key(1), jax.tree_util.tree_map(lambda x: x + 1.0, params), out.state)
  assert len(traces) == n
  assert out.per_sample["w"].shape == (3, 2, 3)
  np.testing.assert_allclose(np.mean(out.per_sample["w"], 0), out.grad["w"], rtol=1e-5, atol=1e-7)
  assert jax.tree_util.tree_structure(out.state) == jax.tree_util.tree_structure(est.init(params))


@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
def test_value_and_first_order_only(name):
  """value: mean f, differentiable in what f closes over (unbiased for
  E[h(b)]); differentiating .grad again is refused."""
  prob = B["coupled"]
  est = _make(name, 2)
  logits = jnp.asarray(prob.logits, jnp.float32)
  value, _ = oracles.bernoulli_exact(prob)

  def one(kk):
    return jax.grad(
      lambda phi: (
        est.estimate(
          kk, lambda b: phi * prob.f(b), oracles.bernoulli_dist, logits, est.init(logits)
        ).value
      )
    )(1.0)

  draws = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(4), 20_000)))
  assert_unbiased(draws, np.float64(value), false_failure_rate=RATE)
  with pytest.raises(NotImplementedError, match="first derivatives only"):
    jax.jit(
      jax.jacobian(
        lambda l: (
          est.estimate(jax.random.key(0), prob.f, oracles.bernoulli_dist, l, est.init(l)).grad
        )
      )
    )(logits)


@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
def test_bad_inputs(name):
  make = sg.double_cv if name == "double_cv" else sg.rodeo
  with pytest.raises(ValueError, match=r"num_samples >= 2.*num_samples=1"):
    make(num_samples=1)
  with pytest.raises(TypeError, match="num_samples"):
    make(num_samples=2.5)
  with pytest.raises(ValueError, match="either `learning_rate` or `optimizer`"):
    make(num_samples=2, learning_rate=1e-3, optimizer=optax.adam(1e-3))
  with pytest.raises(TypeError, match="axis_name"):
    make(num_samples=2, axis_name=3)
  est = make(num_samples=2)
  logits = jnp.zeros((2, 3))
  f = lambda x: jnp.sum(x)
  with pytest.raises(ValueError, match=r"supports scoregrad.dists.Bernoulli.*Categorical"):
    est.estimate(
      jax.random.key(0), f, lambda l: sg.dists.Categorical(logits=l), logits, est.init(logits)
    )
  with pytest.raises(ValueError, match="Normal"):
    est.estimate(jax.random.key(0), f, lambda l: sg.dists.Normal(l, 1.0), logits, est.init(logits))
  with pytest.raises(TypeError, match="init"):
    est.estimate(jax.random.key(0), f, oracles.bernoulli_dist, logits, ())
  if name == "rodeo":
    with pytest.raises(ValueError, match="hidden_size"):
      sg.rodeo(num_samples=2, hidden_size=0)


@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
def test_composes_with_control_variate_layer(name):
  """sg.with_control_variate(est, delta_method()) stays unbiased."""
  prob = B["coupled"]
  est = sg.with_control_variate(_make(name, 2), sg.control_variates.delta_method())
  logits = jnp.asarray(prob.logits, jnp.float32)
  draws = _draws(est, prob.f, logits, est.init(logits), draws=20_000)
  assert_unbiased(draws, oracles.bernoulli_exact(prob)[1], false_failure_rate=RATE)
