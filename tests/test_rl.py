"""Language-model RL estimators: group baselines, aggregation, KL penalties, off-policy ratios.

The oracle is enumeration. A tiny autoregressive categorical policy —
vocabulary V = 3, length T = 3, logits θ[t] + BONUS[previous token] — has few
enough sequences to list (27; with token 0 as end-of-sequence, 15 of
variable length). An estimator's exact expectation is Σ p(batch) ∇S(θ; batch)
over every batch of n sequences, compared with JAX's derivative of the
enumerated objective: deterministic, float64, rtol 1e-9. Biased forms are
compared with the formula they do estimate, and their bias against the true
gradient is measured and asserted to be there (relative error or angle).

Monte Carlo checks (graph sites, score_function) use ``scoregrad.testing``
with a false-failure rate of 1e-6 per assertion.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased

RTOL = 1e-9
V, T = 3, 3
BONUS = np.array([[0.4, -0.3, 0.2], [-0.5, 0.6, 0.1], [0.3, 0.2, -0.7], [0.0, 0.5, -0.2]])
THETA = np.array([[0.2, -0.4, 0.9], [-1.0, 0.5, 0.1], [0.3, 0.3, -0.6]])
THETA_OLD = np.array([[0.5, -0.1, 0.4], [-0.6, 0.2, 0.3], [0.0, 0.6, -0.2]])
THETA_REF = np.array([[-0.3, 0.4, 0.2], [0.5, -0.2, 0.0], [0.1, -0.5, 0.6]])
STEP_COST = np.array([[1.0, -0.5, 2.0], [0.3, 1.5, -1.0], [-0.7, 0.4, 1.2]])  # (t, token)


def token_log_probs(theta, y):
  """(T,) log π(y_t | y_<t; θ) for one sequence y of T tokens."""
  prev = jnp.concatenate([jnp.array([V]), y[:-1]])
  logits = jnp.asarray(theta) + jnp.asarray(BONUS)[prev]
  return jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]


def sequences(eos):
  """All sequences, their prefix masks (through the first EOS = token 0 if ``eos``)."""
  ys, masks = [], []
  for y in itertools.product(range(V), repeat=T):
    m = np.ones(T)
    if eos and 0 in y:
      end = y.index(0)
      if any(y[end + 1 :]):
        continue  # canonical: tokens after EOS are 0
      m[end + 1 :] = 0
    ys.append(y)
    masks.append(m)
  return jnp.asarray(ys), jnp.asarray(masks)


def seq_log_prob(theta, y, m):
  return jnp.sum(m * token_log_probs(theta, y))


def probabilities(theta, ys, ms):
  return jnp.exp(jax.vmap(lambda y, m: seq_log_prob(theta, y, m))(ys, ms))


def reward(y, m):
  """A sequence-level reward: counts of token 2, a bonus for token 1 first, a length cost."""
  return jnp.sum(m * (y == 2)) + 0.7 * (y[0] == 1) - 0.3 * jnp.sum(m)


def expected(fn, theta, ys, ms, n=1, sampler=None, order=1):
  """Σ over n-tuples of Π p · (∇ fn, ∇² fn): the exact mean of fn's derivatives."""
  probs = probabilities(theta if sampler is None else sampler, ys, ms)
  idx = jnp.asarray(list(itertools.product(range(ys.shape[0]), repeat=n)))
  weights = jnp.prod(probs[idx], axis=1)

  def derivs(ix):
    g = jax.grad(fn)(theta, ys[ix], ms[ix])
    if order == 1:
      return g
    return g, jax.hessian(fn)(theta, ys[ix], ms[ix])

  out = jax.jit(jax.vmap(derivs))(idx)
  return jax.tree_util.tree_map(lambda x: jnp.tensordot(weights, x, axes=1), out)


def batch_log_probs(theta, ys):
  return jax.vmap(lambda y: token_log_probs(theta, y))(ys)


def close(a, b):
  np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-12)


def relative_error(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def cosine(a, b):
  a, b = jnp.ravel(a), jnp.ravel(b)
  return float(jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))


# -- group baselines and advantages ------------------------------------------------


def _categorical_groups(group_size, num_groups):
  """B prompts with K = 3 outcomes each (logits (B, 3)), rewards per outcome."""
  logits = jnp.array([[0.3, -0.2, 0.8], [-0.5, 0.4, 0.0]])[:num_groups]
  rewards = jnp.array([[1.0, 0.0, 3.0], [2.0, -1.0, 0.5]])[:num_groups]
  n = group_size * num_groups
  prompt = jnp.repeat(jnp.arange(num_groups), group_size)
  outcomes = jnp.asarray(list(itertools.product(range(3), repeat=n)))  # (3^n, n)

  def weights(lg):
    lp = jax.nn.log_softmax(lg)[prompt[None, :], outcomes]
    return jnp.exp(jnp.sum(lp, axis=1))

  def objective(lg):  # mean over prompts of E[r]
    return jnp.mean(jnp.sum(jax.nn.softmax(lg) * rewards, axis=1))

  def log_probs(lg, ys):
    return jax.nn.log_softmax(lg)[prompt, ys]

  return logits, rewards, prompt, outcomes, weights, objective, log_probs


@pytest.mark.parametrize("group_size,num_groups", [(2, 2), (3, 1)])
def test_group_leave_one_out_exact_at_every_order(group_size, num_groups, x64):
  """RLOO per group in the surrogate: E[∇S] = ∇J and E[∇²S] = ∇²J exactly."""
  lg, rw, prompt, outcomes, weights, objective, log_probs = _categorical_groups(
    group_size, num_groups
  )
  lg = lg.astype(jnp.float64)
  baseline = sg.baselines.leave_one_out(group_size=group_size)

  def loss(p, ys):
    return -sg.score_function_surrogate(log_probs(p, ys), rw[prompt, ys], baseline=baseline)

  w = weights(lg)
  both = jax.jit(jax.vmap(lambda ys: (jax.grad(loss)(lg, ys), jax.hessian(loss)(lg, ys))))
  g, h = (jnp.tensordot(w, x, axes=1) for x in both(outcomes))
  close(g, -jax.grad(objective)(lg))
  close(h, -jax.hessian(objective)(lg))


@pytest.mark.parametrize("group_size,num_groups", [(2, 2), (3, 1)])
def test_group_advantages_targets(group_size, num_groups, x64):
  """What (1/n) Σ A_i ∇ log π(y_i) estimates, by enumeration, per method.

  rloo: ∇J; dr_grpo: (G−1)/G ∇J; grpo: not a multiple of ∇J (measured).
  """
  lg, rw, prompt, outcomes, weights, objective, log_probs = _categorical_groups(
    group_size, num_groups
  )
  lg = lg.astype(jnp.float64)
  exact = jax.grad(objective)(lg)
  w = weights(lg)

  def mean_grad(method):
    def one(ys):
      adv = sg.rl.group_advantages(rw[prompt, ys], group_size, method=method)
      return jax.grad(lambda p: jnp.mean(adv * log_probs(p, ys)))(lg)

    return jnp.tensordot(w, jax.jit(jax.vmap(one))(outcomes), axes=1)

  close(mean_grad("rloo"), exact)
  close(mean_grad("dr_grpo"), (group_size - 1) / group_size * exact)
  grpo = mean_grad("grpo")
  # Biased beyond a constant: the best multiple c·∇J leaves a residual far above
  # rounding (1e-9 here). Measured: G = 2, B = 2: angle 5.7°, |g|/|∇J| 0.32;
  # G = 3, B = 1: angle 1.0°, |g|/|∇J| 0.48.
  best = jnp.vdot(grpo, exact) / jnp.vdot(exact, exact)
  residual = float(jnp.linalg.norm(grpo - best * exact) / jnp.linalg.norm(grpo))
  angle = np.degrees(np.arcsin(min(residual, 1.0)))
  ratio = float(jnp.linalg.norm(grpo) / jnp.linalg.norm(exact))
  print(f"GRPO G={group_size} B={num_groups}: angle {angle:.2f} deg, norm ratio {ratio:.3f}")
  assert residual > 1e-3, (angle, ratio)
  expected_angle = {(2, 2): 5.69, (3, 1): 1.03}[(group_size, num_groups)]
  assert abs(angle - expected_angle) < 0.1 * expected_angle, angle


def test_group_advantages_match_the_surrogate_and_by_hand():
  rewards = jnp.array([1.0, 0.0, 2.0, 5.0, 5.0, 5.0])
  rloo = sg.rl.group_advantages(rewards, 3, method="rloo")
  np.testing.assert_allclose(rloo, [0.0, -1.5, 1.5, 0.0, 0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(
    sg.rl.group_advantages(rewards, 3, method="dr_grpo"), [0, -1, 1, 0, 0, 0], atol=1e-6
  )
  # GRPO: (r − mean) / (std with ddof 1 + eps); a tied group gives 0, not NaN.
  np.testing.assert_allclose(
    sg.rl.group_advantages(rewards, 3, method="grpo", eps=1e-4),
    [0.0, -1 / 1.0001, 1 / 1.0001, 0, 0, 0],
    rtol=1e-5,
    atol=1e-6,
  )
  # The surrogate with leave_one_out(group_size=3) on costs −r has the gradient
  # −(1/n) Σ A_i ∇τ_i with the rloo advantages.
  g = jax.grad(
    lambda lp: sg.score_function_surrogate(
      lp, -rewards, baseline=sg.baselines.leave_one_out(group_size=3)
    )
  )(jnp.zeros(6))
  np.testing.assert_allclose(g, -rloo / 6, atol=1e-6)
  # Per step, for (n, T) costs: the group mean of the other cost-to-go values.
  costs = jnp.arange(12.0).reshape(4, 3)
  b = sg.baselines.leave_one_out(group_size=2).values(costs, None, ())
  np.testing.assert_allclose(b, costs.reshape(2, 2, 3)[:, ::-1].reshape(4, 3))


def test_group_leave_one_out_in_score_function_and_graph_sites():
  """Monte Carlo: unbiased in score_function (plain and chunked) and at a graph site."""
  params = jnp.array([0.4, -0.3])

  def dist_fn(p):
    return sg.dists.Bernoulli(logits=p)

  def exact_b(p):  # a cost that depends on x
    q = jax.nn.sigmoid(p)
    return jnp.sum(q * jnp.array([2.0, -1.0]))

  f2 = lambda x: jnp.sum(x * jnp.array([2.0, -1.0]))
  baseline = sg.baselines.leave_one_out(group_size=2)
  est = sg.score_function(num_samples=8, baseline=baseline)
  keys = jax.random.split(jax.random.key(3), 2000)
  grads = jax.jit(jax.vmap(lambda k: est.estimate(k, f2, dist_fn, params, est.init(params)).grad))(
    keys
  )
  assert_unbiased(grads, jax.grad(exact_b)(params), false_failure_rate=1e-6)
  # Chunked: groups lie inside chunks (chunk_size a multiple of group_size).
  chunked = sg.score_function(num_samples=8, baseline=baseline, chunk_size=4)
  grads = jax.jit(
    jax.vmap(lambda k: chunked.estimate(k, f2, dist_fn, params, chunked.init(params)).grad)
  )(keys)
  assert_unbiased(grads, jax.grad(exact_b)(params), false_failure_rate=1e-6)
  costs = jnp.array([1.0, 2.0, 4.0, 8.0])
  np.testing.assert_allclose(
    baseline.chunked(jnp.sum(costs), 8).values(costs, None, ()), [2.0, 1.0, 8.0, 4.0]
  )

  # A graph site.
  def program(p, key):
    x = sg.sample("x", dist_fn(p), key)
    return f2(x)

  loss = sg.surrogate(program, num_samples=4, baseline=baseline)
  g = jax.jit(jax.vmap(lambda k: jax.grad(loss)(params, k)))(keys)
  assert_unbiased(g, jax.grad(exact_b)(params), false_failure_rate=1e-6)
  h = jax.jit(jax.vmap(lambda k: jax.hessian(loss)(params, k)))(keys)
  assert_unbiased(h, jax.hessian(exact_b)(params), false_failure_rate=1e-6, rtol=1e-5)


def test_group_errors_name_the_argument():
  with pytest.raises(ValueError, match=r"`group_size` must be >= 2; got group_size=1"):
    sg.baselines.leave_one_out(group_size=1)
  with pytest.raises(TypeError, match="`group_size` must be a Python int"):
    sg.baselines.leave_one_out(group_size=2.0)
  with pytest.raises(ValueError, match=r"`group_size=4`.*must divide.*got 6 samples, 2 left"):
    sg.score_function_surrogate(
      jnp.zeros(6), jnp.ones(6), baseline=sg.baselines.leave_one_out(group_size=4)
    )
  with pytest.raises(ValueError, match=r"`group_size=4`.*must divide.*got 6 samples"):
    sg.score_function_surrogate(
      jnp.zeros((6, 2)), jnp.ones((6, 2)), baseline=sg.baselines.leave_one_out(group_size=4)
    )
  est = sg.score_function(num_samples=6, baseline=sg.baselines.leave_one_out(group_size=4))
  with pytest.raises(ValueError, match=r"`group_size=4`.*must divide"):
    normal = lambda p: sg.dists.Normal(p, 1.0)
    est.estimate(jax.random.key(0), jnp.sum, normal, jnp.zeros(2), est.init(jnp.zeros(2)))
  with pytest.raises(ValueError, match=r"needs num_samples >= 4"):
    sg.score_function(num_samples=2, baseline=sg.baselines.leave_one_out(group_size=4))
  with pytest.raises(ValueError, match=r"`group_size=4`.*must divide.*got 6"):
    sg.rl.group_advantages(jnp.ones(6), 4)
  with pytest.raises(ValueError, match=r"`group_size` must be >= 2; got group_size=1"):
    sg.rl.group_advantages(jnp.ones(6), 1)
  with pytest.raises(ValueError, match=r"`method` must be one of .*got method='ppo'"):
    sg.rl.group_advantages(jnp.ones(6), 2, method="ppo")
  with pytest.raises(ValueError, match=r"`rewards` must have shape \(n,\)"):
    sg.rl.group_advantages(jnp.ones((6, 2)), 2)


# -- aggregation over tokens ---------------------------------------------------------


def _lm_surrogate(aggregation, baseline=None, max_length=None):
  def surrogate(theta, ys, ms):
    lp = batch_log_probs(theta, ys)
    costs = -jax.vmap(reward)(ys, ms)
    return sg.score_function_surrogate(
      lp, costs, mask=ms, baseline=baseline, aggregation=aggregation, max_length=max_length
    )

  return surrogate


def _lm_objective(theta, ys, ms):
  return jnp.sum(probabilities(theta, ys, ms) * -jax.vmap(reward)(ys, ms))


def test_aggregation_sequence_and_constant_exact_at_every_order(x64):
  ys, ms = sequences(eos=True)
  assert len(set(np.asarray(ms).sum(1).tolist())) == 3  # lengths 1, 2, 3
  theta = jnp.asarray(THETA, jnp.float64)
  grad_j, hess_j = jax.grad(_lm_objective)(theta, ys, ms), jax.hessian(_lm_objective)(theta, ys, ms)
  g, h = expected(_lm_surrogate("sequence"), theta, ys, ms, order=2)
  close(g, grad_j)
  close(h, hess_j)
  g, h = expected(
    _lm_surrogate("sequence", sg.baselines.leave_one_out()), theta, ys, ms, n=2, order=2
  )
  close(g, grad_j)
  close(h, hess_j)
  for max_length, scale in ((5, 5),):
    g, h = expected(_lm_surrogate("constant", max_length=max_length), theta, ys, ms, order=2)
    close(g, grad_j / scale)
    close(h, hess_j / scale)


def test_aggregation_token_mean_target_and_bias(x64):
  """token_mean estimates E[(c − b)/L ∇ log p(y)], not ∇E[c]: its bias, measured."""
  ys, ms = sequences(eos=True)
  theta = jnp.asarray(THETA, jnp.float64)
  grad_j = jax.grad(_lm_objective)(theta, ys, ms)
  g = expected(_lm_surrogate("token_mean"), theta, ys, ms)
  probs = probabilities(theta, ys, ms)
  costs = -jax.vmap(reward)(ys, ms)
  scores = jax.vmap(lambda y, m: jax.grad(seq_log_prob)(theta, y, m))(ys, ms)
  formula = jnp.tensordot(probs * costs / jnp.sum(ms, 1), scores, axes=1)
  close(g, formula)
  assert abs(relative_error(g, grad_j) - 0.537) < 0.01  # the measured bias
  assert cosine(g, grad_j) < 0.99
  g_loo = expected(_lm_surrogate("token_mean", sg.baselines.leave_one_out()), theta, ys, ms, n=2)
  assert abs(relative_error(g_loo, grad_j) - 0.497) < 0.01
  # With equal lengths token_mean is ∇E[c]/T, exactly.
  ys3, ms3 = sequences(eos=False)
  close(
    expected(_lm_surrogate("token_mean"), theta, ys3, ms3),
    jax.grad(_lm_objective)(theta, ys3, ms3) / T,
  )
  with pytest.raises(NotImplementedError, match="first derivatives only"):
    jax.hessian(_lm_surrogate("token_mean"))(theta, ys, ms)


# -- KL penalties ----------------------------------------------------------------------


def _kl_exact(theta, ys, ms):
  p = probabilities(theta, ys, ms)
  ref = probabilities(jnp.asarray(THETA_REF, theta.dtype), ys, ms)
  return jnp.sum(p * (jnp.log(p) - jnp.log(ref)))


def _kl_terms(theta, ys, estimator, detach):
  lp = batch_log_probs(theta, ys)
  ref = batch_log_probs(jnp.asarray(THETA_REF, theta.dtype), ys)
  k = sg.rl.kl_penalty(lp, ref, estimator=estimator)
  return lp, jax.lax.stop_gradient(k) if detach else k


def _in_reward(estimator, detach=False):
  def surrogate(theta, ys, ms):
    del ms
    lp, k = _kl_terms(theta, ys, estimator, detach)
    return sg.score_function_surrogate(lp, k)

  return surrogate


def _in_loss(estimator):
  def loss(theta, ys, ms):
    del ms
    _, k = _kl_terms(theta, ys, estimator, False)
    return jnp.mean(jnp.sum(k, axis=1))

  return loss


def test_kl_values_are_unbiased_for_k1_k3(x64):
  ys, ms = sequences(eos=False)
  theta = jnp.asarray(THETA, jnp.float64)
  probs = probabilities(theta, ys, ms)
  kl = _kl_exact(theta, ys, ms)
  for est, unbiased in (("k1", True), ("k3", True), ("k2", False)):
    mean = jnp.sum(probs * jnp.sum(_kl_terms(theta, ys, est, True)[1], axis=1))
    if unbiased:
      close(mean, kl)
    else:
      assert abs(float(mean - kl)) > 1e-3 * float(kl)


def test_kl_in_the_reward(x64):
  """As a cost credited through the surrogate: k1, k3 unbiased for ∇KL (and ∇²KL); k2 not."""
  ys, ms = sequences(eos=False)
  theta = jnp.asarray(THETA, jnp.float64)
  grad_kl, hess_kl = jax.grad(_kl_exact)(theta, ys, ms), jax.hessian(_kl_exact)(theta, ys, ms)
  for est in ("k1", "k3"):
    g, h = expected(_in_reward(est), theta, ys, ms, order=2)
    close(g, grad_kl)
    close(h, hess_kl)
  # k2: the gradient of E[Σ k2], which is not the KL's.
  g = expected(_in_reward("k2"), theta, ys, ms)
  probs_fn = lambda th: jnp.sum(
    probabilities(th, ys, ms) * jnp.sum(_kl_terms(th, ys, "k2", False)[1], axis=1)
  )
  close(g, jax.grad(probs_fn)(theta))
  assert abs(relative_error(g, grad_kl) - 0.229) < 0.01  # the measured bias
  # Detached (the reward as data): k1 stays unbiased, k3 does not.
  close(expected(_in_reward("k1", detach=True), theta, ys, ms), grad_kl)
  detached = expected(_in_reward("k3", detach=True), theta, ys, ms)
  assert abs(relative_error(detached, grad_kl) - 1.224) < 0.01  # the measured bias


def test_kl_in_the_loss(x64):
  """Differentiated directly: k1 → 0; k2 → E[Σ_t ℓ_t s_t]; k3 → per token ∇KL(ref ‖ π)."""
  ys, ms = sequences(eos=False)
  theta = jnp.asarray(THETA, jnp.float64)
  grad_kl = jax.grad(_kl_exact)(theta, ys, ms)
  close(expected(_in_loss("k1"), theta, ys, ms), jnp.zeros_like(theta))
  g2 = expected(_in_loss("k2"), theta, ys, ms)
  assert abs(relative_error(g2, grad_kl) - 0.104) < 0.005  # measured (later tokens' credit lost)
  g3 = expected(_in_loss("k3"), theta, ys, ms)
  assert abs(relative_error(g3, grad_kl) - 0.375) < 0.01  # the measured bias

  # One token (T = 1): k2 in the loss is exactly ∇KL, k3 exactly ∇KL(π_ref ‖ π).
  logits, ref = jnp.array([0.3, -0.5, 0.9], jnp.float64), jnp.array([0.0, 0.4, -0.2], jnp.float64)
  tokens = jnp.arange(3)

  def loss(lg, est):
    lp = jax.nn.log_softmax(lg)[tokens][:, None]
    k = sg.rl.kl_penalty(lp, jax.nn.log_softmax(ref)[tokens][:, None], estimator=est)
    return k[:, 0]

  p = jax.nn.softmax(logits)
  expect = lambda est: jnp.tensordot(p, jax.jacobian(loss)(logits, est), axes=1)
  q = jax.nn.softmax(ref)
  forward = jax.grad(lambda lg: jnp.sum(jax.nn.softmax(lg) * (jax.nn.log_softmax(lg) - jnp.log(q))))
  reverse = jax.grad(lambda lg: jnp.sum(q * (jnp.log(q) - jax.nn.log_softmax(lg))))
  close(expect("k2"), forward(logits))
  close(expect("k3"), reverse(logits))
  assert relative_error(expect("k3"), forward(logits)) > 0.05


def test_kl_penalty_masks_and_errors():
  lp, ref = jnp.zeros((2, 3)), jnp.full((2, 3), -1.0)
  mask = jnp.array([[1, 1, 0], [1, 0, 0]])
  out = sg.rl.kl_penalty(lp, ref, mask, estimator="k1")
  np.testing.assert_allclose(out, mask * 1.0)
  with pytest.raises(ValueError, match=r"`estimator` must be one of .*got estimator='k4'"):
    sg.rl.kl_penalty(lp, ref, estimator="k4")
  with pytest.raises(ValueError, match=r"ref_log_probs.shape=\(2, 4\)"):
    sg.rl.kl_penalty(lp, jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="prefix mask"):
    sg.rl.kl_penalty(lp, ref, jnp.array([[1, 0, 1], [1, 0, 0]]))


# -- off-policy ratios -----------------------------------------------------------------


def _step_costs(ys):
  return jnp.asarray(STEP_COST)[jnp.arange(T)[None, :], ys]


def _off_policy(kind, baseline=None, **kwargs):
  def surrogate(theta, ys, ms):
    lp = batch_log_probs(theta, ys)
    behavior = batch_log_probs(jnp.asarray(THETA_OLD, theta.dtype), ys)
    costs = _step_costs(ys) if kind == "step" else -jax.vmap(reward)(ys, ms)
    if kind == "flat":
      lp, behavior = jnp.sum(lp, 1), jnp.sum(behavior, 1)
    return sg.score_function_surrogate(
      lp,
      costs,
      mask=None if kind == "flat" else ms,
      discount=0.8 if kind == "step" else 1.0,
      baseline=baseline,
      behavior_log_probs=behavior,
      **kwargs,
    )

  return surrogate


def _step_objective(theta, ys, ms):
  weights = 0.8 ** jnp.arange(T)
  return jnp.sum(probabilities(theta, ys, ms) * jnp.sum(_step_costs(ys) * ms * weights, 1))


@pytest.mark.parametrize("kind", ["step", "sequence", "flat"])
def test_off_policy_importance_weighted_exact_at_every_order(kind, x64):
  """Samples from μ = π_θold: E_μ[∇^k S(θ)] = ∇^k J(θ) exactly, with and without a baseline."""
  ys, ms = sequences(eos=kind != "flat")
  if kind == "flat":
    ms = jnp.ones_like(ms)
  theta = jnp.asarray(THETA, jnp.float64)
  old = jnp.asarray(THETA_OLD, jnp.float64)
  objective = _step_objective if kind == "step" else _lm_objective
  grad_j, hess_j = jax.grad(objective)(theta, ys, ms), jax.hessian(objective)(theta, ys, ms)
  g, h = expected(_off_policy(kind), theta, ys, ms, sampler=old, order=2)
  close(g, grad_j)
  close(h, hess_j)
  g, h = expected(
    _off_policy(kind, sg.baselines.leave_one_out()), theta, ys, ms, n=2, sampler=old, order=2
  )
  close(g, grad_j)
  close(h, hess_j)
  # The value is the importance-sampling estimate of J.
  vals = jax.vmap(lambda y, m: _off_policy(kind)(theta, y[None], m[None]))(ys, ms)
  close(jnp.sum(probabilities(old, ys, ms) * vals), objective(theta, ys, ms))


@pytest.mark.parametrize("setting", [{"clip": 0.2}, {"truncation": 1.0}, {"truncation": 2.0}])
@pytest.mark.parametrize("kind", ["step", "sequence"])
def test_clipped_and_truncated_ratios(kind, setting, x64):
  """Exact at θ = θ_old, biased elsewhere (measured), first order only."""
  ys, ms = sequences(eos=True)
  old = jnp.asarray(THETA_OLD, jnp.float64)
  theta = jnp.asarray(THETA, jnp.float64)
  objective = _step_objective if kind == "step" else _lm_objective
  surrogate = _off_policy(kind, **setting)
  close(expected(surrogate, old, ys, ms, sampler=old), jax.grad(objective)(old, ys, ms))
  g = expected(surrogate, theta, ys, ms, sampler=old)
  # The measured bias at θ ≠ θ_old (relative error of the exact expectation).
  measured = {
    ("step", "clip"): 0.309,
    ("step", "truncation", 1.0): 0.457,
    ("step", "truncation", 2.0): 0.075,
    ("sequence", "clip"): 0.896,
    ("sequence", "truncation", 1.0): 0.263,
    ("sequence", "truncation", 2.0): 0.137,
  }
  name, value = next(iter(setting.items()))
  bias = measured[(kind, name) if name == "clip" else (kind, name, value)]
  assert abs(relative_error(g, jax.grad(objective)(theta, ys, ms)) - bias) < 0.01
  with pytest.raises(NotImplementedError, match="first derivatives only"):
    jax.hessian(surrogate)(theta, ys[:2], ms[:2])


def test_clip_is_ppo_by_hand():
  lp = jnp.log(jnp.array([[0.5, 0.2], [0.1, 0.6]]))
  old = jnp.log(jnp.array([[0.25, 0.25], [0.25, 0.25]]))
  costs = jnp.array([1.0, -2.0])  # one per sequence; no baseline: A_i = c_i
  g = jax.grad(lambda x: sg.score_function_surrogate(x, costs, behavior_log_probs=old, clip=0.2))(
    lp
  )
  rho = jnp.exp(lp - old)
  adv = costs[:, None]
  # max(ρA, clip(ρ)A): the gradient flows where ρA is the larger term.
  live = (rho * adv) >= (jnp.clip(rho, 0.8, 1.2) * adv)
  np.testing.assert_allclose(g, jnp.where(live, rho * adv, 0.0) / 2, rtol=1e-5)
  g = jax.grad(
    lambda x: sg.score_function_surrogate(x, costs, behavior_log_probs=old, truncation=1.5)
  )(lp)
  np.testing.assert_allclose(g, jnp.minimum(rho, 1.5) * adv / 2, rtol=1e-5)


def test_off_policy_and_aggregation_errors():
  lp, c = jnp.zeros((4, 3)), jnp.ones((4, 3))
  with pytest.raises(ValueError, match=r"behavior_log_probs.shape=\(4, 2\), log_probs.shape="):
    sg.score_function_surrogate(lp, c, behavior_log_probs=jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match=r"`clip` must be >= 0; got clip=-0.1"):
    sg.score_function_surrogate(lp, c, behavior_log_probs=lp, clip=-0.1)
  with pytest.raises(ValueError, match=r"`truncation` must be > 0; got truncation=0"):
    sg.score_function_surrogate(lp, c, behavior_log_probs=lp, truncation=0)
  with pytest.raises(ValueError, match="`clip` acts on importance ratios"):
    sg.score_function_surrogate(lp, c, clip=0.2)
  with pytest.raises(ValueError, match="not both"):
    sg.score_function_surrogate(lp, c, behavior_log_probs=lp, clip=0.2, truncation=2.0)
  with pytest.raises(ValueError, match=r"`aggregation` must be one of .*got aggregation='mean'"):
    sg.score_function_surrogate(lp, c, aggregation="mean")
  with pytest.raises(ValueError, match="`aggregation` applies to sequences only"):
    sg.score_function_surrogate(jnp.zeros(3), jnp.ones(3), aggregation="token_mean")
  with pytest.raises(ValueError, match="`max_length` is the T_max"):
    sg.score_function_surrogate(lp, c, max_length=5)
  with pytest.raises(ValueError, match=r"`max_length` must be >= 3; got max_length=2"):
    sg.score_function_surrogate(lp, c, aggregation="constant", max_length=2)
  with pytest.raises(ValueError, match="`discount` applies to per-step costs"):
    sg.score_function_surrogate(lp, jnp.ones(4), discount=0.9)
  hole = jnp.array([[1, 0, 1]] * 4)
  for aggregation in ("sequence", "token_mean", "constant"):
    with pytest.raises(ValueError, match=r"prefix mask.*hole in row 0"):
      sg.score_function_surrogate(lp, jnp.ones(4), mask=hole, aggregation=aggregation)


def test_traced_clip_truncation_out_of_range_give_nan():
  lp, c = jnp.zeros((4, 3)), jnp.ones((4, 3))
  f = jax.jit(lambda e: sg.score_function_surrogate(lp, c, behavior_log_probs=lp, clip=e))
  assert jnp.isnan(f(-0.1)) and jnp.isfinite(f(0.2))
  f = jax.jit(lambda e: sg.score_function_surrogate(lp, c, behavior_log_probs=lp, truncation=e))
  assert jnp.isnan(f(0.0)) and jnp.isfinite(f(2.0))
