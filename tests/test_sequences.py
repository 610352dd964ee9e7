"""Sequences: score_function_surrogate on (n, T) per-step costs, and scoregrad.rl.

The oracle is enumeration. Two small tabular MDPs (Bernoulli and Categorical
actions, state-dependent policies, stochastic transitions, an absorbing
terminal state so episodes end early) have few enough trajectories to list.
The exact objective J(θ) = Σ_τ p_θ(τ) Σ_t γ^t m_t c_t(θ) is differentiated
by JAX through the enumerated sum; the estimator's exact expectation is
Σ_τ p(τ) ∇S(θ; τ), the surrogate's derivatives on each trajectory weighted
by its probability (held fixed). Comparing the two is deterministic and sharp
(float64, rtol 1e-9) — unbiasedness of the gradient and of the Hessian, with
every baseline. Exact per-sample variances come from the same enumeration.
After termination the arrays hold NaN: it must not leak.

Monte Carlo checks sample real rollouts and use ``scoregrad.testing`` with a
false-failure rate of 1e-6 per assertion (Bonferroni over coordinates inside
the helpers); the fixed keys only make runs reproducible.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased, assert_variance

RATE = 1e-6
RTOL = 1e-9


class MDP:
  """States 0..S−2 live, S−1 absorbing terminal; T steps from state 0.

  ``kind`` "bernoulli": θ has shape (S−1,), π(a=1|s) = sigmoid(θ_s);
  "categorical": θ has shape (S−1, A), π(a|s) = softmax(θ_s)_a. Cost
  c(s, a; θ) = C[s, a] + kappa · θ-term (so the pathwise part is tested).
  """

  def __init__(self, kind, transitions, costs, horizon, discount, kappa=0.0):
    self.kind = kind
    self.P = np.asarray(transitions)  # (S−1, A, S)
    self.C = np.asarray(costs)  # (S−1, A)
    self.T = horizon
    self.discount = discount
    self.kappa = kappa
    self.num_live, self.num_actions, self.num_states = self.P.shape
    self.trajectories = self._enumerate()

  def dist(self, theta, s):
    if self.kind == "bernoulli":
      return sg.dists.Bernoulli(logits=theta[s])
    return sg.dists.Categorical(logits=theta[s])

  def log_prob(self, theta, s, a):
    return self.dist(theta, s).log_prob(a.astype(theta.dtype) if self.kind == "bernoulli" else a)

  def cost(self, theta, s, a):
    if self.kind == "bernoulli":
      extra = theta[s] * (2 * a - 1)
    else:
      extra = theta[s, a] ** 2
    return jnp.asarray(self.C)[s, a] + self.kappa * extra

  def _enumerate(self):
    """[(states, actions, alive, env_prob)] with garbage 0s after termination."""
    out = []

    def rec(t, s, states, actions, alive, prob):
      if t == self.T or s == self.num_states - 1:
        pad = self.T - len(states)
        out.append((states + [0] * pad, actions + [0] * pad, alive + [0] * pad, prob))
        return
      for a in range(self.num_actions):
        for s2 in range(self.num_states):
          p = self.P[s, a, s2]
          if p > 0:
            rec(t + 1, s2, states + [s], actions + [a], alive + [1], prob * p)

    rec(0, 0, [], [], [], 1.0)
    states, actions, alive, prob = map(np.asarray, zip(*out))
    return {
      "states": jnp.asarray(states),
      "actions": jnp.asarray(actions),
      "alive": jnp.asarray(alive),
      "env_prob": jnp.asarray(prob),
    }

  def per_step(self, theta, states, actions, alive):
    """(log_probs, costs) of one trajectory, NaN after termination."""
    logp = jax.vmap(lambda s, a: self.log_prob(theta, s, a))(states, actions)
    costs = jax.vmap(lambda s, a: self.cost(theta, s, a))(states, actions)
    dead = alive == 0
    return jnp.where(dead, jnp.nan, logp), jnp.where(dead, jnp.nan, costs)

  def probabilities(self, theta):
    tr = self.trajectories

    def one(states, actions, alive, env_prob):
      logp, _ = self.per_step(theta, states, actions, alive)
      return env_prob * jnp.exp(jnp.sum(jnp.where(alive == 1, logp, 0.0)))

    return jax.vmap(one)(tr["states"], tr["actions"], tr["alive"], tr["env_prob"])

  def objective(self, theta):
    """Exact J(θ) by enumeration (differentiable in θ)."""
    tr = self.trajectories
    gammas = self.discount ** jnp.arange(self.T)

    def total(states, actions, alive):
      _, costs = self.per_step(theta, states, actions, alive)
      return jnp.sum(jnp.where(alive == 1, gammas * costs, 0.0))

    totals = jax.vmap(total)(tr["states"], tr["actions"], tr["alive"])
    return jnp.sum(self.probabilities(theta) * totals)


def bernoulli_mdp(horizon=3, kappa=0.0):
  P = [[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], [[0.3, 0.3, 0.4], [0.5, 0.1, 0.4]]]
  C = [[1.0, 2.5], [-0.5, 3.0]]
  return MDP("bernoulli", P, C, horizon, discount=0.9, kappa=kappa)


def categorical_mdp(horizon=3, kappa=0.3):
  rng = np.random.default_rng(7)
  P = rng.dirichlet(np.ones(3), size=(2, 3))
  P[:, :, 2] += 0.15  # every action risks termination
  P /= P.sum(-1, keepdims=True)
  C = rng.normal(size=(2, 3)) + 1.0
  return MDP("categorical", P, C, horizon, discount=0.8, kappa=kappa)


THETA = {
  "bernoulli": jnp.array([0.3, -0.7]),
  "categorical": jnp.array([[0.2, -0.4, 0.9], [-1.0, 0.5, 0.1]]),
}


def _surrogate(mdp, baseline=None, baseline_state=None, mask_dtype="float", value_table=None):
  """S(θ; trajectories): the scoregrad surrogate on stacked (n, T) rollouts."""

  def surrogate(theta, states, actions, alive):
    logp, costs = jax.vmap(lambda s, a, m: mdp.per_step(theta, s, a, m))(states, actions, alive)
    mask = alive.astype(bool) if mask_dtype == "bool" else alive.astype(jnp.float64)
    b = baseline
    if value_table is not None:  # a critic V(s_t): state-dependent, action-independent
      b = jnp.where(alive == 1, jnp.asarray(value_table)[states], jnp.nan)
    return sg.score_function_surrogate(
      logp, costs, mask=mask, discount=mdp.discount, baseline=b, baseline_state=baseline_state
    )

  return surrogate


def _expected_derivatives(mdp, surrogate, theta, n=1):
  """Σ over n-tuples of trajectories of Π p · (∇S, ∇²S): the estimator's exact mean."""
  tr = mdp.trajectories
  probs = mdp.probabilities(theta)
  k = probs.shape[0]
  idx = jnp.asarray(list(itertools.product(range(k), repeat=n)))  # (k^n, n)
  weights = jnp.prod(probs[idx], axis=1)

  def derivs(ix):
    args = (tr["states"][ix], tr["actions"][ix], tr["alive"][ix])
    return jax.grad(surrogate)(theta, *args), jax.hessian(surrogate)(theta, *args)

  grads, hessians = jax.jit(jax.vmap(derivs))(idx)
  mean = lambda x: jnp.tensordot(weights, x, axes=1)
  return mean(grads), mean(hessians), grads, weights


MDPS = {"bernoulli": bernoulli_mdp, "categorical": categorical_mdp}


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_enumeration_sums_to_one(kind, x64):
  mdp = MDPS[kind]()
  np.testing.assert_allclose(
    jnp.sum(mdp.probabilities(THETA[kind].astype(jnp.float64))), 1.0, rtol=1e-12
  )
  assert jnp.any(mdp.trajectories["alive"][:, -1] == 0), "no early termination to test"


@pytest.mark.parametrize("kind,mask_dtype", [("bernoulli", "float"), ("categorical", "bool")])
def test_causal_gradient_and_hessian_exact(kind, mask_dtype, x64):
  """No baseline: E[∇S] = ∇J and E[∇²S] = ∇²J exactly (cumulative magic box)."""
  mdp = MDPS[kind]()
  theta = THETA[kind].astype(jnp.float64)
  g, h, _, _ = _expected_derivatives(mdp, _surrogate(mdp, mask_dtype=mask_dtype), theta)
  np.testing.assert_allclose(g, jax.grad(mdp.objective)(theta), rtol=RTOL, atol=1e-12)
  np.testing.assert_allclose(h, jax.hessian(mdp.objective)(theta), rtol=RTOL, atol=1e-12)


def test_value_is_the_discounted_cost(x64):
  mdp = categorical_mdp()
  theta = THETA["categorical"].astype(jnp.float64)
  tr = mdp.trajectories
  values = jax.vmap(lambda s, a, m: _surrogate(mdp)(theta, s[None], a[None], m[None]))(
    tr["states"], tr["actions"], tr["alive"]
  )
  assert np.all(np.isfinite(values))  # NaN garbage after termination stays out
  np.testing.assert_allclose(
    jnp.sum(mdp.probabilities(theta) * values), mdp.objective(theta), rtol=RTOL
  )


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_state_value_baseline_exact_at_every_order(kind, x64):
  """A critic's V(s_t) as an (n, T) array: gradient and Hessian stay exact."""
  mdp = MDPS[kind]()
  theta = THETA[kind].astype(jnp.float64)
  surrogate = _surrogate(mdp, value_table=[2.0, -1.5, 0.0])
  g, h, _, _ = _expected_derivatives(mdp, surrogate, theta)
  np.testing.assert_allclose(g, jax.grad(mdp.objective)(theta), rtol=RTOL, atol=1e-12)
  np.testing.assert_allclose(h, jax.hessian(mdp.objective)(theta), rtol=RTOL, atol=1e-12)


def test_moving_average_per_step_exact(x64):
  ma = sg.baselines.moving_average(decay=0.5)
  mdp = bernoulli_mdp()
  state = ma.init((mdp.T,))
  state = ma.update(state, jnp.array([[3.0, 1.0, 0.5], [1.0, 2.0, 0.0]]))
  assert state.value.shape == (mdp.T,)
  theta = THETA["bernoulli"].astype(jnp.float64)
  g, h, _, _ = _expected_derivatives(mdp, _surrogate(mdp, ma, state), theta)
  np.testing.assert_allclose(g, jax.grad(mdp.objective)(theta), rtol=RTOL, atol=1e-12)
  np.testing.assert_allclose(h, jax.hessian(mdp.objective)(theta), rtol=RTOL, atol=1e-12)


def test_leave_one_out_per_step_exact(x64):
  """b_{i,t} = mean_{j≠i} G_{j,t}: exact over all pairs of trajectories (n = 2)."""
  n = 2
  mdp = bernoulli_mdp(horizon=2)
  theta = THETA["bernoulli"].astype(jnp.float64)
  surrogate = _surrogate(mdp, sg.baselines.leave_one_out())
  g, h, _, _ = _expected_derivatives(mdp, surrogate, theta, n=n)
  np.testing.assert_allclose(g, jax.grad(mdp.objective)(theta), rtol=RTOL, atol=1e-12)
  np.testing.assert_allclose(h, jax.hessian(mdp.objective)(theta), rtol=RTOL, atol=1e-12)


def _per_episode_grads(mdp, theta):
  """The per-episode estimator: Σ_t log π times the whole discounted cost, (n,) inputs."""
  tr = mdp.trajectories
  gammas = mdp.discount ** jnp.arange(mdp.T)

  def surrogate(theta, states, actions, alive):
    logp, costs = mdp.per_step(theta, states, actions, alive)
    live = alive == 1
    return sg.score_function_surrogate(
      jnp.sum(jnp.where(live, logp, 0.0))[None], jnp.sum(jnp.where(live, gammas * costs, 0.0))[None]
    )

  return jax.vmap(jax.grad(surrogate), in_axes=(None, 0, 0, 0))(
    theta, tr["states"], tr["actions"], tr["alive"]
  )


def _exact_variance(grads, weights):
  mean = jnp.tensordot(weights, grads, axes=1)
  return jnp.tensordot(weights, grads**2, axes=1) - mean**2


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_causal_variance_below_per_episode(kind, x64):
  """Exact per-sample variances (enumeration): causal < per-episode in every
  coordinate here, and both estimators have the same (exact) mean."""
  mdp = MDPS[kind]()
  theta = THETA[kind].astype(jnp.float64)
  g_causal, _, grads, weights = _expected_derivatives(mdp, _surrogate(mdp), theta)
  episode = _per_episode_grads(mdp, theta)
  np.testing.assert_allclose(
    jnp.tensordot(weights, episode, axes=1), g_causal, rtol=RTOL, atol=1e-12
  )
  var_causal = _exact_variance(grads, weights)
  var_episode = _exact_variance(episode, weights)
  assert np.all(var_causal < var_episode), (var_causal, var_episode)
  assert jnp.sum(var_causal) < 0.9 * jnp.sum(var_episode)


def _rollouts(mdp, theta, key, n):
  """n sampled episodes as (states, actions, alive), garbage 0 after the end."""
  P = jnp.asarray(mdp.P)

  def episode(key):
    def step(carry, key):
      s, running = carry
      ka, ks = jax.random.split(key)
      a = mdp.dist(theta, jnp.minimum(s, mdp.num_live - 1)).sample(ka).astype(jnp.int32)
      s2 = jax.random.categorical(ks, jnp.log(P[jnp.minimum(s, mdp.num_live - 1), a]))
      out = (jnp.where(running, s, 0), jnp.where(running, a, 0), running.astype(jnp.int32))
      s2 = s2.astype(jnp.int32)
      return (s2, running & (s2 != mdp.num_states - 1)), out

    _, (states, actions, alive) = jax.lax.scan(
      step, (jnp.int32(0), jnp.bool_(True)), jax.random.split(key, mdp.T)
    )
    return states, actions, alive

  return jax.vmap(episode)(jax.random.split(key, n))


def test_monte_carlo_unbiased_and_exact_variance(x64):
  """Sampled rollouts: per-episode gradient draws average to ∇J (z·SE with the
  exact variance) and their variance matches the enumerated one."""
  mdp = categorical_mdp()
  theta = THETA["categorical"].astype(jnp.float64)
  _, _, grads, weights = _expected_derivatives(mdp, _surrogate(mdp), theta)
  surrogate = _surrogate(mdp)
  states, actions, alive = _rollouts(mdp, theta, jax.random.key(0), 20_000)
  draws = jax.jit(jax.vmap(lambda s, a, m: jax.grad(surrogate)(theta, s[None], a[None], m[None])))(
    states, actions, alive
  )
  exact = jax.grad(mdp.objective)(theta)
  variance = _exact_variance(grads, weights)
  assert_unbiased(draws, exact, false_failure_rate=RATE, exact_variance=variance)
  assert_variance(draws, variance, false_failure_rate=RATE)


def test_monte_carlo_leave_one_out_batch_unbiased(x64):
  """Batches of n = 8 rollouts with the per-step leave-one-out baseline."""
  mdp = bernoulli_mdp()
  theta = THETA["bernoulli"].astype(jnp.float64)
  surrogate = _surrogate(mdp, sg.baselines.leave_one_out())
  keys = jax.random.split(jax.random.key(1), 5_000)
  draws = jax.jit(jax.vmap(lambda k: jax.grad(surrogate)(theta, *_rollouts(mdp, theta, k, 8))))(
    keys
  )
  assert_unbiased(draws, jax.grad(mdp.objective)(theta), false_failure_rate=RATE)


# -- the formula itself on random data ---------------------------------------------


def _random_batch(key, n=5, T=6, dtype=jnp.float32):
  k1, k2, k3 = jax.random.split(key, 3)
  theta = jax.random.normal(k1, (n, T), dtype)
  costs = jax.random.normal(k2, (n, T), dtype) + 1.0
  lengths = jax.random.randint(k3, (n,), 1, T + 1)
  alive = jnp.arange(T)[None, :] < lengths[:, None]
  return theta, costs, alive


@pytest.mark.parametrize("discount", [1.0, 0.7])
def test_gradient_is_reward_to_go_formula(discount, dtype):
  """∇S = (1/n) Σ_i Σ_t ∇τ_{i,t} γ^t (G_{i,t} − b_{i,t}) with τ = log_probs itself."""
  theta, costs, alive = _random_batch(jax.random.key(3), dtype=dtype)
  garbage_costs = jnp.where(alive, costs, jnp.inf)
  b = jnp.where(alive, 0.3 * costs, jnp.nan)
  grad = jax.grad(
    lambda lp: sg.score_function_surrogate(
      jnp.where(alive, lp, jnp.nan), garbage_costs, mask=alive, discount=discount, baseline=b
    )
  )(theta)
  G = sg.rl.discounted_returns(costs, mask=alive, discount=discount)
  n, T = costs.shape
  want = jnp.where(alive, discount ** jnp.arange(T) * (G - jnp.where(alive, b, 0)), 0) / n
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-6)
  assert grad.dtype == dtype
  value = sg.score_function_surrogate(theta, garbage_costs, mask=alive, discount=discount)
  np.testing.assert_allclose(value, jnp.mean(G[:, 0]), rtol=1e-5)


def test_one_step_sequences_match_the_flat_layout():
  theta, costs, _ = _random_batch(jax.random.key(4), T=1)
  for baseline in (None, sg.baselines.leave_one_out()):
    flat = jax.grad(
      lambda lp, b=baseline: sg.score_function_surrogate(lp[:, 0], costs[:, 0], baseline=b)
    )
    seq = jax.grad(lambda lp, b=baseline: sg.score_function_surrogate(lp, costs, baseline=b))
    np.testing.assert_allclose(seq(theta), flat(theta), rtol=1e-6)


def test_nan_cost_at_a_live_step_gives_nan():
  theta, costs, alive = _random_batch(jax.random.key(5))
  costs = costs.at[0, 0].set(jnp.nan)
  g = jax.grad(lambda lp: sg.score_function_surrogate(lp, costs, mask=alive))(theta)
  assert jnp.isnan(g[0, 0])


def test_no_recompilation_on_second_call():
  traces = []

  @jax.jit
  def grad(lp, costs, alive, discount):
    traces.append(1)
    return jax.grad(
      lambda l: sg.score_function_surrogate(
        l, costs, mask=alive, discount=discount, baseline=sg.baselines.leave_one_out()
      )
    )(lp)

  theta, costs, alive = _random_batch(jax.random.key(6))
  grad(theta, costs, alive, 0.9)
  grad(theta + 1, costs * 2, ~alive | alive, 0.5)
  assert len(traces) == 1


# -- scoregrad.rl ------------------------------------------------------------------


def test_discounted_returns_by_hand():
  costs = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, jnp.nan]])
  mask = jnp.array([[1, 1, 1], [1, 1, 0]])
  G = sg.rl.discounted_returns(costs, discount=0.5, mask=mask)
  np.testing.assert_allclose(G, [[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3], [4 + 2.5, 5, 0]])
  G = sg.rl.discounted_returns(costs[:1], discount=0.5, bootstrap_value=jnp.array([8.0]))
  np.testing.assert_allclose(G[0, -1], 3 + 4.0)


def _gae_by_hand(costs, values, mask, gamma, lam, boot):
  costs, values, mask = (np.asarray(x, np.float64) for x in (costs, values, mask))
  n, T = costs.shape
  costs = np.where(mask == 1, costs, 0.0)
  values = np.where(mask == 1, values, 0.0)
  v_next = np.concatenate([values[:, 1:], np.asarray(boot)[:, None]], axis=1)
  v_next[:, :-1] *= mask[:, 1:]
  delta = costs + gamma * v_next - values
  adv = np.zeros((n, T))
  for i in range(n):
    for t in range(T):
      if mask[i, t]:
        adv[i, t] = sum(
          (gamma * lam) ** k * delta[i, t + k] for k in range(T - t) if mask[i, t + k]
        )
  return adv


@pytest.mark.parametrize("lam", [0.0, 0.9, 1.0])
def test_gae_and_lambda_returns(lam):
  _, costs, alive = _random_batch(jax.random.key(7))
  values = jax.random.normal(jax.random.key(8), costs.shape)
  boot = jnp.array([0.5, -1.0, 2.0, 0.0, 1.0])
  garbage = lambda x: jnp.where(alive, x, jnp.nan)
  adv = sg.rl.generalized_advantage_estimation(
    garbage(costs), garbage(values), discount=0.9, lambda_=lam, mask=alive, bootstrap_value=boot
  )
  np.testing.assert_allclose(
    adv, _gae_by_hand(costs, values, alive, 0.9, lam, boot), rtol=1e-5, atol=1e-5
  )
  ret = sg.rl.lambda_returns(
    garbage(costs), garbage(values), discount=0.9, lambda_=lam, mask=alive, bootstrap_value=boot
  )
  np.testing.assert_allclose(ret, jnp.where(alive, adv + values, 0.0), rtol=1e-5, atol=1e-5)
  if lam == 1.0:
    G = sg.rl.discounted_returns(costs, discount=0.9, mask=alive, bootstrap_value=boot)
    np.testing.assert_allclose(ret, G, rtol=1e-5, atol=1e-5)


def test_rl_helpers_jit_and_traced_settings():
  _, costs, alive = _random_batch(jax.random.key(9))
  f = jax.jit(lambda c, g: sg.rl.discounted_returns(c, discount=g, mask=alive))
  np.testing.assert_allclose(
    f(costs, 0.9), sg.rl.discounted_returns(costs, discount=0.9, mask=alive), rtol=1e-6
  )
  assert jnp.all(jnp.isnan(f(costs, 1.5)))  # out of [0, 1] under jit: NaN, not a number


# -- bad input -----------------------------------------------------------------------


def test_bad_sequence_inputs_name_the_argument():
  lp, c = jnp.zeros((3, 4)), jnp.ones((3, 4))
  with pytest.raises(ValueError, match=r"log_probs.shape=\(3, 4\), costs.shape=\(3, 5\)"):
    sg.score_function_surrogate(lp, jnp.ones((3, 5)))
  with pytest.raises(ValueError, match=r"log_probs.shape=\(3, 4\), costs.shape=\(4,\)"):
    sg.score_function_surrogate(lp, jnp.ones(4))
  with pytest.raises(ValueError, match=r"`mask` must have the shape .*\(3, 4\).*\(4, 3\)"):
    sg.score_function_surrogate(lp, c, mask=jnp.ones((4, 3)))
  with pytest.raises(ValueError, match=r"`mask` must hold only 0/1.*\[0.5"):
    sg.score_function_surrogate(lp, c, mask=jnp.full((3, 4), 0.5))
  for bad in (-0.1, 1.5, float("nan")):
    with pytest.raises(ValueError, match=r"`discount` must be in \[0, 1\]"):
      sg.score_function_surrogate(lp, c, discount=bad)
  with pytest.raises(ValueError, match=r"`baseline=optimal\(\)` is per-coordinate"):
    sg.score_function_surrogate(lp, c, baseline=sg.baselines.optimal())
  with pytest.raises(ValueError, match=r"`baseline`.*\(3, 4\).*got shape \(4,\)"):
    sg.score_function_surrogate(lp, c, baseline=jnp.zeros(4))
  with pytest.raises(ValueError, match=r"baseline_state.*init\(\(4,\)\)"):
    sg.score_function_surrogate(lp, c, baseline=sg.baselines.moving_average())
  with pytest.raises(ValueError, match="`mask` applies to sequences only"):
    sg.score_function_surrogate(jnp.zeros(3), jnp.ones(3), mask=jnp.ones(3))
  with pytest.raises(ValueError, match="`discount` applies to sequences only"):
    sg.score_function_surrogate(jnp.zeros(3), jnp.ones(3), discount=0.9)
  with pytest.raises(ValueError, match="needs num_samples >= 2"):
    sg.score_function_surrogate(lp[:1], c[:1], baseline=sg.baselines.leave_one_out())


def test_traced_bad_mask_gives_nan():
  lp, c = jnp.zeros((3, 4)), jnp.ones((3, 4))
  f = jax.jit(lambda m: sg.score_function_surrogate(lp, c, mask=m))
  assert jnp.isnan(f(jnp.full((3, 4), 2.0)))
  assert f(jnp.ones((3, 4))) == 4.0


def test_bad_rl_inputs():
  c = jnp.ones((2, 3))
  with pytest.raises(ValueError, match=r"`costs` must have shape \(n, T\)"):
    sg.rl.discounted_returns(jnp.ones(3))
  with pytest.raises(ValueError, match=r"`values` must have shape \(2, 3\)"):
    sg.rl.generalized_advantage_estimation(c, jnp.ones((3, 2)))
  with pytest.raises(ValueError, match=r"`lambda_` must be in \[0, 1\]"):
    sg.rl.lambda_returns(c, c, lambda_=1.2)
  with pytest.raises(ValueError, match=r"`discount` must be in \[0, 1\]"):
    sg.rl.discounted_returns(c, discount=-1.0)
  with pytest.raises(ValueError, match=r"`bootstrap_value` must have shape \(2,\)"):
    sg.rl.discounted_returns(c, bootstrap_value=jnp.ones(3))
  with pytest.raises(ValueError, match="`mask` must hold only 0/1"):
    sg.rl.discounted_returns(c, mask=jnp.full((2, 3), 3))


# -- one reading of masks, and the NaN rule for every traced setting ---------------------

HOLE = jnp.array([[1.0, 0.0, 1.0]])
GOOD_MASK = jnp.array([[1, 1, 0], [1, 1, 1]]) > 0


def test_mask_with_a_hole_is_refused_by_every_reader():
  """Issue 21 item 12: (1, 0, 1) was read as 101 by the surrogate and as termination by
  discounted_returns. A mask is a prefix mask; a hole is a clear error (concrete) or NaN
  (traced), in every function that reads masks."""
  costs = jnp.array([[1.0, 10.0, 100.0]])
  readers = {
    "score_function_surrogate": lambda m: sg.score_function_surrogate(
      jnp.zeros((1, 3)), costs, mask=m
    ),
    "discounted_returns": lambda m: sg.rl.discounted_returns(costs, mask=m),
    "lambda_returns": lambda m: sg.rl.lambda_returns(costs, costs, mask=m),
    "generalized_advantage_estimation": lambda m: sg.rl.generalized_advantage_estimation(
      costs, costs, mask=m
    ),
    "kl_penalty": lambda m: sg.rl.kl_penalty(jnp.zeros((1, 3)), costs, m),
  }
  for name, fn in readers.items():
    for hole in (HOLE, HOLE.astype(bool), np.asarray(HOLE)):
      with pytest.raises(ValueError, match=r"prefix mask.*hole in row 0 \(mask\[0, 1\] = 0"):
        fn(hole)
    assert jnp.all(jnp.isnan(jax.jit(fn)(HOLE))), name
    assert jnp.all(jnp.isnan(jax.jit(fn)(HOLE.astype(bool)))), name
    assert jnp.all(jnp.isfinite(jax.jit(fn)(jnp.array([[1.0, 1.0, 0.0]])))), name
  # The one reading: a 0 ends the episode, in both functions.
  prefix = jnp.array([[1.0, 1.0, 0.0]])
  np.testing.assert_allclose(sg.rl.discounted_returns(costs, mask=prefix), [[11.0, 10.0, 0.0]])
  assert sg.score_function_surrogate(jnp.zeros((1, 3)), costs, mask=prefix) == 11.0


def _traced_settings():
  """(name, fn(setting) -> array, invalid value, valid value) for every traced setting."""
  c = jnp.arange(6.0).reshape(2, 3)
  lp = jnp.zeros((2, 3))
  cases = []
  for name, reader in (
    ("discounted_returns", lambda **kw: sg.rl.discounted_returns(c, **kw)),
    ("lambda_returns", lambda **kw: sg.rl.lambda_returns(c, c, **kw)),
    ("gae", lambda **kw: sg.rl.generalized_advantage_estimation(c, c, **kw)),
    ("surrogate", lambda **kw: sg.score_function_surrogate(lp, c, **kw)),
  ):
    for bad in (1.5, -0.1):
      cases.append((f"{name}-discount={bad}", lambda v, r=reader: r(discount=v), bad, 0.9))
    cases.append(
      (f"{name}-mask=2", lambda v, r=reader: r(mask=v), jnp.full((2, 3), 2.0), GOOD_MASK)
    )
  for name, reader in (
    ("lambda_returns", lambda **kw: sg.rl.lambda_returns(c, c, **kw)),
    ("gae", lambda **kw: sg.rl.generalized_advantage_estimation(c, c, **kw)),
  ):
    for bad in (1.5, -0.1):
      cases.append((f"{name}-lambda_={bad}", lambda v, r=reader: r(lambda_=v), bad, 0.9))
  for name, reader in (
    ("surrogate-clip", lambda v: sg.score_function_surrogate(lp, c, behavior_log_probs=lp, clip=v)),
    (
      "surrogate-truncation",
      lambda v: sg.score_function_surrogate(lp, c, behavior_log_probs=lp, truncation=v),
    ),
  ):
    cases.append((name, reader, -0.5, 0.2))
  cases.append(
    ("kl_penalty-mask=2", lambda v: sg.rl.kl_penalty(lp, c, v), jnp.full((2, 3), 2.0), GOOD_MASK)
  )
  return cases


@pytest.mark.parametrize("case", _traced_settings(), ids=lambda case: case[0])
def test_every_traced_invalid_setting_gives_nan(case):
  """Issue 29: the NaN rule for traced invalid settings, for the whole class (GAE's λ was
  unchecked by any test). Invalid → every entry NaN under jit; valid → all finite."""
  _, fn, bad, good = case
  jitted = jax.jit(fn)
  assert jnp.all(jnp.isnan(jitted(bad)))
  assert jnp.all(jnp.isfinite(jitted(good)))


@pytest.mark.parametrize("off_policy", [False, True])
def test_hessian_through_lax_scan_keeps_every_term(off_policy):
  """The sequence surrogate summed inside lax.scan: the same Hessian as outside the loop.

  T = 40 > 32 exercises the blocked cumulative sums. A custom-JVP box once lost
  the ∇τ∇τᵀ term inside scan (CHANGELOG); the literal box and linear sums must not.
  The reference is the Hessian of the same sum written without a loop, and the
  ∇τ∇τᵀ part is checked to be present (the Hessian differs from Σ_t ∇²τ-only terms).
  """
  n, T = 4, 40
  keys = jax.random.split(jax.random.key(5), 3)
  feats = jax.random.normal(keys[0], (2, n, T, 3))
  costs = jax.random.normal(keys[1], (2, n, T))
  mask = (jnp.arange(T)[None, :] < jnp.array([40, 33, 20, 1])[:, None]).astype(jnp.float32)
  theta = jnp.array([0.3, -0.2, 0.5])

  def one(th, f, c):
    lp = jax.nn.log_sigmoid(f @ th)
    return sg.score_function_surrogate(
      lp,
      c,
      mask=mask,
      discount=0.95,
      baseline=sg.baselines.leave_one_out(),
      behavior_log_probs=jax.lax.stop_gradient(lp) - 0.1 if off_policy else None,
    )

  def looped(th):
    def body(acc, xs):
      return acc + one(th, *xs), None

    return jax.lax.scan(body, 0.0, (feats, costs))[0]

  def unrolled(th):
    return one(th, feats[0], costs[0]) + one(th, feats[1], costs[1])

  h_loop = jax.jit(jax.hessian(looped))(theta)
  h_ref = jax.hessian(unrolled)(theta)
  np.testing.assert_allclose(h_loop, h_ref, rtol=1e-5, atol=1e-6)

  # The outer-product term is there: dropping it (first-order advantages only)
  # changes the Hessian.
  def first_order_only(th):
    total = 0.0
    for k in range(2):
      lp = jax.nn.log_sigmoid(feats[k] @ th)
      adv = jax.grad(
        lambda x, k=k: sg.score_function_surrogate(
          x, costs[k], mask=mask, discount=0.95, baseline=sg.baselines.leave_one_out()
        )
      )(jax.lax.stop_gradient(lp))
      total = total + jnp.sum(jax.lax.stop_gradient(adv) * lp)
    return total

  if not off_policy:
    assert np.max(np.abs(jax.hessian(first_order_only)(theta) - h_ref)) > 1e-3
