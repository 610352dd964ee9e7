"""Unbiasedness and exact variances of the unbiased discrete estimators.

Exact answers come from tests/discrete_oracles.py (float64 NumPy, independent
of scoregrad.discrete): gradients by enumeration, variances by enumerating the
joint distribution of the random variables each estimator uses. Statistical
assertions use scoregrad.testing with false-failure rate 1e-6 each
(Bonferroni over coordinates); this file has fewer than 60 of them, so it
fails by chance with probability < 1e-4 for any seed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased, assert_variance, z_threshold

import discrete_oracles as oracles

RATE = 1e-6
N = 100_000
B = oracles.BERNOULLI_PROBLEMS


def _run(est, f, dist_fn, params, seed=1):
  fn = jax.jit(lambda k, p: est.estimate(k, f, dist_fn, p, est.init(p)))
  return fn(jax.random.key(seed), params)


def _repeat(est, f, dist_fn, params, draws, seed=2):
  """``draws`` independent estimates (vmapped over keys): their grads."""
  keys = jax.random.split(jax.random.key(seed), draws)
  fn = jax.jit(jax.vmap(lambda k: est.estimate(k, f, dist_fn, params, est.init(params)).grad))
  return fn(keys)


# --- oracles agree with each other ----------------------------------------


@pytest.mark.parametrize("problem", sorted(B))
def test_oracle_means_equal_exact_gradient(problem):
  """The derived estimator means equal the enumerated gradient (1e-10): the
  derivations of the exact variances below are at least consistent."""
  prob = B[problem]
  _, grad = oracles.bernoulli_exact(prob)
  fin = oracles.finite_bernoulli(prob)
  for mean in (
    oracles.arm_moments(prob)[0],
    oracles.disarm_moments(prob)[0],
    oracles.leave_one_out_moments(fin, 2)[0],
    oracles.rao_blackwell_moments(fin, 3)[0],
  ):
    np.testing.assert_allclose(mean, grad, rtol=1e-10, atol=1e-13)


def test_exact_matches_closed_form_separable(dtype):
  """f = mean_i (b_i − t)² ⇒ E f = (1/3) Σ [p_i (1−t)² + (1−p_i) t²] and
  ∂/∂α_i = σ'(α_i)(1 − 2t)/3."""
  prob = B["separable"]
  logits = jnp.asarray(prob.logits, dtype)
  out = _run(sg.exact(), prob.f, oracles.bernoulli_dist, logits)
  p = oracles.sigmoid(prob.logits)
  t = 0.45
  tol = 1e-6 if dtype == jnp.float32 else 1e-13
  np.testing.assert_allclose(out.grad, p * (1 - p) * (1 - 2 * t) / 3, rtol=tol, atol=tol)
  np.testing.assert_allclose(out.value, np.mean(p * (1 - t) ** 2 + (1 - p) * t**2), rtol=tol)
  assert out.grad.dtype == dtype


def test_exact_categorical_and_hessian(x64):
  prob = oracles.categorical_problem()
  logits = jnp.asarray(prob.logits)
  est = sg.exact()
  out = _run(est, prob.f, oracles.categorical_dist, logits)
  value, grad = oracles.categorical_exact(prob)
  np.testing.assert_allclose(out.grad, grad, rtol=1e-12)
  np.testing.assert_allclose(out.value, value, rtol=1e-12)
  # grad is differentiable again: its Jacobian is the exact Hessian of E f,
  # here checked against autodiff of the closed form Σ_x Π p(x) f(x).
  table = jnp.asarray(prob.table)

  def closed(l):
    p = jax.nn.softmax(l, axis=-1)
    return jnp.einsum("i,j,ij->", p[0], p[1], table)

  hess = jax.jit(
    jax.jacobian(
      lambda l: est.estimate(jax.random.key(0), prob.f, oracles.categorical_dist, l, ()).grad
    )
  )(logits)
  np.testing.assert_allclose(hess, jax.hessian(closed)(logits), rtol=1e-10, atol=1e-12)


def test_exact_chunked_large_space():
  """13 bits = 8192 configurations: f is evaluated in chunks (lax.map)."""
  logits = jnp.linspace(-1.0, 1.0, 13)
  out = _run(sg.exact(), lambda b: jnp.mean((b - 0.3) ** 2), oracles.bernoulli_dist, logits)
  p = jax.nn.sigmoid(logits)
  np.testing.assert_allclose(out.grad, p * (1 - p) * 0.4 / 13, rtol=2e-5)


# --- ARM and DisARM ---------------------------------------------------------


@pytest.mark.parametrize("problem", sorted(B))
@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_antithetic_unbiased_with_exact_variance(name, problem, dtype):
  """Per-draw (per-pair) gradients: mean = the enumerated gradient, variance
  = the exact variance (3^D-cell integration for ARM, 4^D enumeration for
  DisARM)."""
  prob = B[problem]
  if name == "arm":
    est, (_, var) = sg.arm(num_samples=N, per_sample=True), oracles.arm_moments(prob)
  else:
    est, (_, var) = sg.disarm(num_pairs=N, per_sample=True), oracles.disarm_moments(prob)
  value, grad = oracles.bernoulli_exact(prob)
  out = _run(est, prob.f, oracles.bernoulli_dist, jnp.asarray(prob.logits, dtype))
  assert out.per_sample.shape == (N, 3) and out.per_sample.dtype == dtype
  assert_unbiased(out.per_sample, grad, false_failure_rate=RATE, exact_variance=var)
  assert_variance(out.per_sample, var, false_failure_rate=RATE)
  np.testing.assert_allclose(
    out.grad, np.mean(np.asarray(out.per_sample, np.float64), 0), rtol=1e-4, atol=1e-7
  )
  # value: the mean of a pair has variance ≤ Var f, so |error| ≤ z sqrt(Var f / N).
  fin = oracles.finite_bernoulli(prob)
  var_f = fin.probs @ fin.costs**2 - value**2
  assert abs(float(out.value) - value) < z_threshold(RATE) * np.sqrt(var_f / N)


def test_disarm_never_worse_than_arm():
  """DisARM is ARM Rao-Blackwellised: exact variances, coordinate by coordinate."""
  for prob in B.values():
    assert np.all(oracles.disarm_moments(prob)[1] <= oracles.arm_moments(prob)[1] + 1e-15)


# --- leave-one-out baselines compose with the discrete families ------------


@pytest.mark.parametrize("family, n", [("bernoulli", 2), ("bernoulli", 3), ("categorical", 2)])
def test_score_function_leave_one_out_discrete(family, n):
  """score_function + leave_one_out on Bernoulli / Categorical: the estimate
  with n samples, over many independent keys, has the exact mean and the
  exact variance from enumerating all n-tuples of samples."""
  if family == "bernoulli":
    prob = B["coupled"]
    f, dist_fn, fin = prob.f, oracles.bernoulli_dist, oracles.finite_bernoulli(prob)
    _, grad = oracles.bernoulli_exact(prob)
  else:
    prob = oracles.categorical_problem()
    f, dist_fn, fin = prob.f, oracles.categorical_dist, oracles.finite_categorical(prob)
    grad = oracles.categorical_exact(prob)[1].ravel()
  mean, var = oracles.leave_one_out_moments(fin, n)
  np.testing.assert_allclose(mean, grad, rtol=1e-10, atol=1e-13)
  est = sg.score_function(num_samples=n, baseline=sg.baselines.leave_one_out())
  draws = _repeat(est, f, dist_fn, jnp.asarray(prob.logits, jnp.float32), 60_000)
  draws = np.asarray(draws).reshape(draws.shape[0], -1)
  assert_unbiased(draws, grad, false_failure_rate=RATE, exact_variance=var)
  assert_variance(draws, var, false_failure_rate=RATE)


# --- Rao-Blackwellised sum-and-sample ---------------------------------------


@pytest.mark.parametrize(
  "family, num_summed", [("bernoulli", 3), ("bernoulli", 6), ("categorical", 4)]
)
def test_rao_blackwell_unbiased_with_exact_variance(family, num_summed, dtype):
  """Without a baseline each per-sample term is A + (1 − p(C)) f(x) ∇log p(x),
  x ~ p(· | x ∉ C), i.i.d.: exact mean and variance by enumerating the
  complement of C (the num_summed most probable configurations)."""
  if family == "bernoulli":
    prob = B["coupled"]
    f, dist_fn, fin = prob.f, oracles.bernoulli_dist, oracles.finite_bernoulli(prob)
    grad = oracles.bernoulli_exact(prob)[1]
  else:
    prob = oracles.categorical_problem()
    f, dist_fn, fin = prob.f, oracles.categorical_dist, oracles.finite_categorical(prob)
    grad = oracles.categorical_exact(prob)[1].ravel()
  _, var = oracles.rao_blackwell_moments(fin, num_summed)
  est = sg.rao_blackwell(num_summed=num_summed, num_samples=N, per_sample=True)
  out = _run(est, f, dist_fn, jnp.asarray(prob.logits, dtype))
  per = np.asarray(out.per_sample, np.float64).reshape(N, -1)
  assert out.per_sample.dtype == dtype
  assert_unbiased(per, grad, false_failure_rate=RATE, exact_variance=var)
  assert_variance(per, var, false_failure_rate=RATE)


def test_rao_blackwell_with_leave_one_out_unbiased():
  """With leave_one_out over the complement samples (and their mean for the
  summed part) the estimate stays unbiased: many independent estimates."""
  prob = B["coupled"]
  est = sg.rao_blackwell(num_summed=2, num_samples=3, baseline=sg.baselines.leave_one_out())
  draws = _repeat(
    est, prob.f, oracles.bernoulli_dist, jnp.asarray(prob.logits, jnp.float32), 60_000
  )
  assert_unbiased(draws, oracles.bernoulli_exact(prob)[1], false_failure_rate=RATE)


def test_rao_blackwell_whole_space_is_exact():
  prob = oracles.categorical_problem()
  est = sg.rao_blackwell(num_summed=50, num_samples=2)
  out = _run(est, prob.f, oracles.categorical_dist, jnp.asarray(prob.logits, jnp.float32))
  value, grad = oracles.categorical_exact(prob)
  np.testing.assert_allclose(out.grad, grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.value, value, rtol=1e-5)


def test_top_configurations_are_the_most_probable():
  from scoregrad._src.discrete.sum_and_sample import top_configurations

  logits = jnp.array([1.5, -0.3, 0.8, -2.0, 0.1])
  configs, joint = top_configurations(sg.dists.Bernoulli.per_variable_log_probs(logits), 7)
  bits = oracles.all_bits(5)
  p = oracles.sigmoid(np.asarray(logits, np.float64))
  probs = np.array([oracles.bernoulli_prob(b, p) for b in bits])
  best = np.argsort(-probs)[:7]
  np.testing.assert_array_equal(np.asarray(configs), bits[best].astype(int))
  np.testing.assert_allclose(np.exp(joint), probs[best], rtol=1e-5)


# --- VIMCO ------------------------------------------------------------------


@pytest.mark.parametrize("family, k", [("bernoulli", 2), ("bernoulli", 3), ("categorical", 2)])
def test_vimco_unbiased_with_exact_variance(family, k):
  """VIMCO estimates ∇ E[log mean_k exp f(x_k)] (here f = log-weight, fixed):
  exact gradient, mean and variance by enumerating the K-tuples."""
  if family == "bernoulli":
    prob = B["coupled"]
    f, dist_fn, fin = prob.f, oracles.bernoulli_dist, oracles.finite_bernoulli(prob)
  else:
    prob = oracles.categorical_problem()
    f = lambda x: 0.5 * prob.f(x)
    dist_fn = oracles.categorical_dist
    fin = oracles.finite_categorical(prob)
    fin = fin._replace(costs=0.5 * fin.costs)
  grad, mean, var = oracles.vimco_moments(fin, k)
  np.testing.assert_allclose(mean, grad, rtol=1e-10, atol=1e-13)
  draws = _repeat(
    sg.vimco(num_samples=k), f, dist_fn, jnp.asarray(prob.logits, jnp.float32), 60_000
  )
  draws = np.asarray(draws).reshape(draws.shape[0], -1)
  assert_unbiased(draws, grad, false_failure_rate=RATE, exact_variance=var)
  assert_variance(draws, var, false_failure_rate=RATE)


def test_vimco_value_gives_pathwise_term(x64):
  """With f = φ·h(x), ∇φ E[L̂] = E[Σ_k w̃_k h(x_k)]: jax.grad of
  Estimate.value with respect to φ is unbiased for it (exact by enumeration)."""
  prob = B["coupled"]
  fin = oracles.finite_bernoulli(prob)
  phi = 0.7
  k = 2
  exact = 0.0
  import itertools

  for idx in itertools.product(range(len(fin.probs)), repeat=k):
    idx = np.array(idx)
    lw = phi * fin.costs[idx]
    w = np.exp(lw - lw.max())
    exact += np.prod(fin.probs[idx]) * np.sum(w / w.sum() * fin.costs[idx])
  est = sg.vimco(num_samples=k)
  logits = jnp.asarray(prob.logits)

  def one(key):
    return jax.grad(
      lambda ph: (
        est.estimate(key, lambda b: ph * prob.f(b), oracles.bernoulli_dist, logits, ()).value
      )
    )(jnp.asarray(phi))

  draws = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(3), 50_000))
  assert_unbiased(np.asarray(draws), np.float64(exact), false_failure_rate=RATE)


# --- pytree parameters, pull-back -------------------------------------------


def test_pytree_params_pullback(dtype):
  """logits = x W + c from a dict of parameters: DisARM's pulled-back
  per-pair gradients are unbiased for the exact pytree gradient (sg.exact,
  itself checked against autodiff of the closed form)."""
  x = jnp.asarray([0.5, -1.0], dtype)
  params = {
    "W": jnp.asarray([[0.3, -0.2, 0.5], [0.1, 0.4, -0.6]], dtype),
    "c": jnp.asarray([0.2, -0.1, 0.0], dtype),
  }
  dist_fn = lambda p: sg.dists.Bernoulli(logits=x @ p["W"] + p["c"])
  prob = B["coupled"]
  exact = _run(sg.exact(), prob.f, dist_fn, params)

  def closed(p):
    probs = jax.nn.sigmoid(x @ p["W"] + p["c"])
    bits = jnp.asarray(oracles.all_bits(3), dtype)
    w = jnp.prod(jnp.where(bits == 1, probs, 1 - probs), axis=1)
    return jnp.sum(w * jax.vmap(prob.f)(bits))

  tol = 1e-5 if dtype == jnp.float32 else 1e-12
  for a, b in zip(
    jax.tree_util.tree_leaves(exact.grad),
    jax.tree_util.tree_leaves(jax.jit(jax.grad(closed))(params)),
  ):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
  out = _run(sg.disarm(num_pairs=N, per_sample=True), prob.f, dist_fn, params)
  assert out.per_sample["W"].shape == (N, 2, 3) and out.per_sample["W"].dtype == dtype
  assert_unbiased(out.per_sample, exact.grad, false_failure_rate=RATE)


# --- jit: no recompilation ---------------------------------------------------


@pytest.mark.parametrize(
  "make",
  [
    lambda: sg.arm(num_samples=4),
    lambda: sg.disarm(num_pairs=4),
    lambda: sg.rebar(num_samples=2),
    lambda: sg.relax(num_samples=2),
    lambda: sg.gumbel_softmax(num_samples=4, temperature=0.5),
    lambda: sg.straight_through(num_samples=4),
    lambda: sg.rao_blackwell(num_summed=2, num_samples=3),
    lambda: sg.exact(),
    lambda: sg.vimco(num_samples=3),
  ],
  ids=[
    "arm",
    "disarm",
    "rebar",
    "relax",
    "gumbel_softmax",
    "straight_through",
    "rao_blackwell",
    "exact",
    "vimco",
  ],
)
def test_no_recompilation_with_new_values(make):
  est = make()
  traces = []

  def f(b):
    traces.append(1)
    return jnp.mean((b - 0.45) ** 2)

  run = jax.jit(lambda k, p, s: est.estimate(k, f, oracles.bernoulli_dist, p, s))
  p0 = jnp.array([0.1, 0.2, -0.3])
  out = run(jax.random.key(0), p0, est.init(p0))
  n = len(traces)
  out = run(jax.random.key(1), p0 + 1.0, out.state)
  assert len(traces) == n
  assert np.all(np.isfinite(np.asarray(out.grad)))


# --- Estimate.value carries the gradient of what f closes over ----------------


@pytest.mark.parametrize(
  "make",
  [
    lambda: sg.arm(num_samples=2),
    lambda: sg.disarm(num_pairs=2),
    lambda: sg.rebar(num_samples=2),
    lambda: sg.relax(num_samples=2),
    lambda: sg.gumbel_softmax(num_samples=2, temperature=0.5),
    lambda: sg.straight_through(num_samples=2),
    lambda: sg.rao_blackwell(num_summed=2, num_samples=2),
    lambda: sg.exact(),
  ],
  ids=[
    "arm",
    "disarm",
    "rebar",
    "relax",
    "gumbel_softmax",
    "straight_through",
    "rao_blackwell",
    "exact",
  ],
)
def test_value_differentiable_in_what_f_closes_over(make):
  """With f = φ·h(b), ∂ value/∂φ (samples held fixed) is unbiased for
  ∂E[f]/∂φ = E[h(b)] (enumeration): the pathwise part for parameters of f."""
  est = make()
  prob = B["coupled"]
  value, _ = oracles.bernoulli_exact(prob)
  logits = jnp.asarray(prob.logits, jnp.float32)

  def one(k):
    return jax.grad(
      lambda phi: (
        est.estimate(
          k, lambda b: phi * prob.f(b), oracles.bernoulli_dist, logits, est.init(logits)
        ).value
      )
    )(1.0)

  draws = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(4), 20_000)))
  if np.all(draws == draws[0]):  # exact: no randomness
    np.testing.assert_allclose(draws[0], value, rtol=1e-5)
  else:
    assert_unbiased(draws, np.float64(value), false_failure_rate=RATE)


# --- categorical ARM/DisARM (stick-breaking coupling) -------------------------


def _categorical_from_eta(eta):
  """Categorical logits log π from stick-breaking logits η (so η(ℓ(η)) = η)."""
  log_stop = jax.nn.log_sigmoid(eta)
  log_go = jnp.cumsum(jax.nn.log_sigmoid(-eta), axis=-1)
  before = jnp.concatenate([jnp.zeros_like(eta[..., :1]), log_go], axis=-1)
  return before + jnp.concatenate([log_stop, jnp.zeros_like(eta[..., :1])], axis=-1)


def test_stick_breaking_representation_is_exact(x64):
  """The bits reproduce softmax(ℓ) exactly (enumeration of all 2^4 bit
  vectors), and the family's η and bits→index map agree with the oracle's."""
  prob = oracles.categorical_problem()
  sb = oracles.stick_breaking(prob)
  p = oracles.special.softmax(prob.logits, axis=-1)
  q = oracles.sigmoid(sb.eta.ravel())
  cat = sg.dists.Categorical
  joint = np.zeros((3, 3))
  for bits in oracles.all_bits(4):
    x = sb.to_x(bits)
    joint[tuple(x)] += oracles.bernoulli_prob(bits, q)
    np.testing.assert_array_equal(np.asarray(cat.from_binary(jnp.asarray(bits.reshape(2, 2)))), x)
  np.testing.assert_allclose(joint, np.outer(p[0], p[1]), rtol=1e-12)
  np.testing.assert_allclose(
    np.asarray(cat.binary_logits(jnp.asarray(prob.logits))), sb.eta, rtol=1e-12
  )
  np.testing.assert_allclose(
    np.asarray(_categorical_from_eta(jnp.asarray(sb.eta))), np.log(p), rtol=1e-12
  )


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_categorical_antithetic_unbiased_with_exact_variance(name, dtype):
  """Parameterised by the stick-breaking logits η (the pull-back η → ℓ → η is
  the identity), per-pair gradients have the enumerated mean ∇η E[f] and the
  exact variance of ARM/DisARM on the bits with unreached bits dropped;
  dropping them (Rao-Blackwellisation) never adds variance."""
  prob = oracles.categorical_problem()
  sb = oracles.stick_breaking(prob)
  moments = oracles.arm_moments if name == "arm" else oracles.disarm_moments
  mean, var = moments(sb.bits_problem, sb.reached)
  _, grad = oracles.bernoulli_exact(sb.bits_problem)
  np.testing.assert_allclose(mean, grad, rtol=1e-10, atol=1e-13)
  assert np.all(var <= moments(sb.bits_problem)[1] + 1e-15)
  est = (
    sg.arm(num_samples=N, per_sample=True)
    if name == "arm"
    else sg.disarm(num_pairs=N, per_sample=True)
  )
  dist_fn = lambda eta: sg.dists.Categorical(logits=_categorical_from_eta(eta))
  out = _run(est, prob.f, dist_fn, jnp.asarray(sb.eta, dtype))
  assert out.per_sample.shape == (N, 2, 2) and out.per_sample.dtype == dtype
  per = np.asarray(out.per_sample, np.float64).reshape(N, -1)
  assert_unbiased(
    per,
    grad,
    false_failure_rate=RATE,
    exact_variance=var,
    rtol=1e-5 if dtype == jnp.float32 else 0.0,
  )
  assert_variance(per, var, false_failure_rate=RATE)
  value, _ = oracles.categorical_exact(prob)
  var_f = np.sum(oracles.finite_categorical(prob).probs * prob.table.ravel() ** 2) - value**2
  assert abs(float(out.value) - value) < z_threshold(RATE) * np.sqrt(var_f / N)


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_categorical_antithetic_unbiased_in_logits(name):
  """With the softmax logits ℓ as parameters (pulled back through η(ℓ)), the
  gradient is unbiased for the enumerated ∇ℓ E[f]."""
  prob = oracles.categorical_problem()
  est = (
    sg.arm(num_samples=N, per_sample=True)
    if name == "arm"
    else sg.disarm(num_pairs=N, per_sample=True)
  )
  out = _run(est, prob.f, oracles.categorical_dist, jnp.asarray(prob.logits, jnp.float32))
  assert out.per_sample.shape == (N, 2, 3)
  assert_unbiased(
    np.asarray(out.per_sample, np.float64),
    oracles.categorical_exact(prob)[1],
    false_failure_rate=RATE,
    rtol=1e-5,
  )
