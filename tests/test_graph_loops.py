"""Sample sites inside loops: ``sg.scan`` / ``sg.fori_loop`` with per-step credit.

Unbiasedness tests draw M independent estimates (vmap over keys) and compare
their mean with the exact value coordinate by coordinate at z = 5 from the
sample standard error: a false failure has probability about 5.7e-7 per
coordinate (two-sided Normal tail), under 1e-4 per test over all the
coordinates checked (union bound); the tolerances hold for any key. The
identity tests (same samples, same numbers) need no tolerance beyond float
rounding.
"""

import itertools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.dists import Bernoulli, Categorical, Normal

Z = 5.0  # two-sided P(|Z| > 5) ≈ 5.7e-7 per coordinate


def _check_unbiased(samples, exact, z=Z, atol=1e-6):
  """Mean of the (M, ...) samples within z standard errors of ``exact``, per entry."""
  samples = np.asarray(samples, np.float64)
  m = samples.shape[0]
  mean = samples.mean(0)
  se = samples.std(0, ddof=1) / np.sqrt(m)
  err = np.abs(mean - np.asarray(exact, np.float64))
  assert np.all(err <= z * se + atol), (mean, exact, se, err / np.maximum(se, 1e-30))


# -- (a) a tabular MDP with stochastic transitions, written as a scan ---------------

H = 4  # steps
COST = jnp.array([[1.0, -0.5], [0.3, 2.0]])  # cost of action a in state s
NEXT_COST = 0.7  # cost of landing in state 1


def _mdp(params, key):
  theta, phi = params["theta"], params["phi"]

  def step(s, k):
    ka, ks = jax.random.split(k)
    a = sg.sample("a", Categorical(logits=theta[s]), ka)
    s2 = sg.sample("s", Bernoulli(logits=phi[s, a]), ks)
    sg.cost("c", COST[s, a] + NEXT_COST * s2)
    return s2.astype(jnp.int32), None

  sg.scan(step, jnp.int32(0), jax.random.split(key, H))


_TRAJ = np.array(list(itertools.product(range(2), repeat=2 * H)))  # (a_t, s_{t+1}) per step


def _mdp_exact(params):
  """E[Σ_t c_t] summed over all (2·2)^H trajectories (action, next state per step)."""
  theta, phi = params["theta"], params["phi"]
  a, nxt = _TRAJ[:, 0::2], _TRAJ[:, 1::2]
  s = np.concatenate([np.zeros((len(_TRAJ), 1), int), nxt[:, :-1]], axis=1)
  logp = jnp.take_along_axis(jax.nn.log_softmax(theta[s]), a[..., None], -1)[..., 0]
  logit = phi[s, a]
  logp = logp + jnp.where(nxt == 1, jax.nn.log_sigmoid(logit), jax.nn.log_sigmoid(-logit))
  cost = jnp.sum(COST[s, a] + NEXT_COST * nxt, axis=1)
  return jnp.sum(jnp.exp(jnp.sum(logp, axis=1)) * cost)


MDP_PARAMS = {
  "theta": jnp.array([[0.3, -0.4], [-0.2, 0.5]]),
  "phi": jnp.array([[0.4, -0.6], [0.8, -0.1]]),
}


FLAT, UNRAVEL = jax.flatten_util.ravel_pytree(MDP_PARAMS)


def test_mdp_graph_reads_the_per_step_structure():
  loss = sg.surrogate(_mdp, num_samples=4, baseline=sg.baselines.leave_one_out())
  assert loss.graph(MDP_PARAMS, jax.random.key(0)) == {
    "sites": {"a": "score_function", "s": "score_function"},
    "costs": {"c": ["a", "s"]},
  }
  from scoregrad._src.graphs import analysis

  (info,) = analysis.analyse(_mdp, MDP_PARAMS, jax.random.key(0)).loops
  # c_t reads a_t and s_t (same step) and, through the state, both at earlier steps;
  # a_t reads the state (earlier steps only); s_t reads a_t now and the state.
  assert info.same == {0: frozenset(), 1: frozenset({0}), "c": frozenset({0, 1})}
  assert info.lag == {0: frozenset({0, 1}), 1: frozenset({0, 1}), "c": frozenset({0, 1})}
  assert info.length == H


def test_mdp_gradient_and_hessian_unbiased_against_enumeration():
  surrogate = sg.surrogate(_mdp, num_samples=4, baseline=sg.baselines.leave_one_out())
  loss = lambda v, k: surrogate(UNRAVEL(v), k)
  keys = jax.random.split(jax.random.key(1), 2000)
  value, grads, hess = jax.jit(
    jax.vmap(lambda k: (loss(FLAT, k), jax.grad(loss)(FLAT, k), jax.hessian(loss)(FLAT, k)))
  )(keys)
  exact = lambda v: _mdp_exact(UNRAVEL(v))
  exact_v, exact_g, exact_h = exact(FLAT), jax.grad(exact)(FLAT), jax.hessian(exact)(FLAT)
  assert np.abs(exact_g).min() > 1e-3  # every coordinate is a real test
  _check_unbiased(value, exact_v)
  _check_unbiased(grads, exact_g)
  _check_unbiased(hess, exact_h)


def test_chain_is_the_sequence_surrogate_at_the_same_samples():
  """One loop site, per-step costs: exactly score_function_surrogate on (n, T)."""
  n, T = 6, 5

  def walk(theta, key):
    def step(x, k):
      x = sg.sample("x", Normal(x + theta, 1.0), k, estimator="score_function")
      sg.cost("d", x**2)
      return x, None

    sg.scan(step, 0.0, jax.random.split(key, T))

  def by_hand(theta, key):
    def one(k):
      def step(x, kk):
        nxt = jax.lax.stop_gradient(Normal(x + theta, 1.0).sample(kk))
        return nxt, (Normal(x + theta, 1.0).log_prob(nxt), nxt**2)

      return jax.lax.scan(step, 0.0, jax.random.split(k, T))[1]

    lp, c = jax.vmap(one)(jax.random.split(key, n))
    return sg.score_function_surrogate(lp, c, baseline=sg.baselines.leave_one_out())

  loss = sg.surrogate(walk, num_samples=n, baseline=sg.baselines.leave_one_out())
  key, theta = jax.random.key(3), jnp.asarray(0.3)

  def all_orders(f):
    return jax.jit(lambda t, k: (f(t, k), jax.grad(f)(t, k), jax.hessian(f)(t, k)))(theta, key)

  for ours, theirs in zip(all_orders(loss), all_orders(by_hand)):
    np.testing.assert_allclose(ours, theirs, rtol=2e-5)


def test_independent_steps_get_same_step_credit_only():
  """No carry: the score at step t multiplies c_t alone (not Σ_{t'≥t} c_t')."""
  n, T = 5, 4

  def program(theta, key):
    def step(carry, k):
      x = sg.sample("x", Normal(theta, 1.0), k, estimator="score_function")
      sg.cost("c", jnp.sin(x))
      return carry, None

    sg.scan(step, 0.0, jax.random.split(key, T))

  loss = sg.surrogate(program, num_samples=n, baseline=sg.baselines.leave_one_out())
  theta, key = jnp.asarray(0.2), jax.random.key(4)
  x = jax.jit(loss.site_costs)(theta, key)["values"]["x"][:, 0]  # (n, T)
  c = jnp.sin(x)
  b = (jnp.sum(c, 0) - c) / (n - 1)
  expected = jnp.mean(jnp.sum((c - b) * (x - theta), axis=1))  # ∂θ log N(x; θ, 1) = x − θ
  np.testing.assert_allclose(jax.jit(jax.grad(loss))(theta, key), expected, rtol=1e-5)
  full = jnp.mean(jnp.sum((jnp.sum(c, 1, keepdims=True) - jnp.sum(b, 1, keepdims=True))
                          * (x - theta), axis=1))  # fmt: skip
  assert abs(float(full - expected)) > 1e-3  # the whole-trajectory credit differs


# -- (b) an Euler-discretised geometric Brownian motion: digital delta and vega ------

S0, STRIKE, RATE, SIGMA, MATURITY, STEPS = 1.0, 1.0, 0.05, 0.2, 1.0, 8
DT = MATURITY / STEPS


def _gbm(p, key):
  """S_{k+1} ~ Normal(S_k (1 + r Δ), σ S_k √Δ): the Euler step's Normal increment."""

  def step(s, k):
    nxt = sg.sample(
      "S",
      Normal(s * (1.0 + RATE * DT), p["sigma"] * s * np.sqrt(DT)),
      k,
      estimator="score_function",
    )
    return nxt, None

  s_final, _ = sg.scan(step, p["s0"], jax.random.split(key, STEPS))
  sg.cost("payoff", np.exp(-RATE * MATURITY) * (s_final > STRIKE).astype(s_final.dtype))


def _reference(p, key, num_paths=2**20):
  """The scheme's own delta and vega, by conditional Monte Carlo on the last step.

  E[1{S_8 > K} | S_7] = Φ((S_7 (1 + rΔ) − K) / (σ S_7 √Δ)), a smooth function of
  S_7 = S0 Π_{k<7} (1 + rΔ + σ √Δ Z_k): differentiated pathwise, per path.
  Returns the mean and standard error of (delta, vega) over the paths.
  """

  def price(q, z):
    s = q["s0"] * jnp.prod(1.0 + RATE * DT + q["sigma"] * np.sqrt(DT) * z)
    d = (s * (1.0 + RATE * DT) - STRIKE) / (q["sigma"] * s * np.sqrt(DT))
    return np.exp(-RATE * MATURITY) * jax.scipy.stats.norm.cdf(d)

  z = jax.random.normal(key, (num_paths, STEPS - 1))
  g = jax.jit(jax.vmap(jax.grad(price), in_axes=(None, 0)))(p, z)
  out = np.stack([np.asarray(g["s0"], np.float64), np.asarray(g["sigma"], np.float64)], 1)
  return out.mean(0), out.std(0, ddof=1) / np.sqrt(num_paths)


def test_gbm_digital_delta_and_vega_against_the_scheme():
  p = {"s0": jnp.asarray(S0), "sigma": jnp.asarray(SIGMA)}
  loss = sg.surrogate(_gbm, num_samples=8, baseline=sg.baselines.leave_one_out())
  keys = jax.random.split(jax.random.key(5), 8192)
  g = jax.jit(jax.vmap(lambda k: jax.grad(loss)(p, k)))(keys)
  est = np.stack([np.asarray(g["s0"], np.float64), np.asarray(g["sigma"], np.float64)], 1)
  ref, ref_se = _reference(p, jax.random.key(6))
  mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(len(est))
  # The reference's SE is far below the estimator's; both enter the tolerance.
  assert np.all(ref_se < 0.2 * se)
  assert np.all(np.abs(mean - ref) <= Z * np.sqrt(se**2 + ref_se**2)), (mean, ref, se, ref_se)
  # Sanity of the reference: near Black-Scholes (the limit), not equal to it.
  d1 = (np.log(S0 / STRIKE) + (RATE + SIGMA**2 / 2) * MATURITY) / (SIGMA * np.sqrt(MATURITY))
  d2 = d1 - SIGMA * np.sqrt(MATURITY)
  pdf = np.exp(-(d2**2) / 2) / np.sqrt(2 * np.pi) * np.exp(-RATE * MATURITY)
  bs = np.array([pdf / (S0 * SIGMA * np.sqrt(MATURITY)), -pdf * d1 / SIGMA])
  assert np.all(np.abs(ref / bs - 1) < 0.25), (ref, bs)


# -- (c) the trace does not grow with the number of steps ----------------------------


def _count(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    total += 1
    for v in eqn.params.values():
      for sub in v if isinstance(v, (tuple, list)) else (v,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          total += _count(inner)
  return total


def _mdp_of_length(steps, unrolled=False):
  def program(params, key):
    theta, phi = params["theta"], params["phi"]

    def step(s, k, t=""):
      ka, ks = jax.random.split(k)
      a = sg.sample(f"a{t}", Categorical(logits=theta[s]), ka)
      s2 = sg.sample(f"s{t}", Bernoulli(logits=phi[s, a]), ks)
      sg.cost(f"c{t}", COST[s, a] + NEXT_COST * s2)
      return s2.astype(jnp.int32), None

    keys = jax.random.split(key, steps)
    if unrolled:
      s = jnp.int32(0)
      for t in range(steps):
        s, _ = step(s, keys[t], t)
    else:
      sg.scan(step, jnp.int32(0), keys)

  return program


def test_jaxpr_size_does_not_grow_with_the_number_of_steps():
  def size(steps, unrolled=False):
    loss = sg.surrogate(
      _mdp_of_length(steps, unrolled), num_samples=4, baseline=sg.baselines.leave_one_out()
    )
    return _count(jax.make_jaxpr(jax.hessian(loss))(MDP_PARAMS, jax.random.key(0)).jaxpr)

  assert size(4) == size(64)
  assert size(8, unrolled=True) > size(4, unrolled=True)  # the count can tell


# -- pathwise sites, fori_loop, dtypes, NaN --------------------------------------------


def test_pathwise_sites_in_a_loop_are_differentiable(x64):
  def program(mu, key):
    def step(x, k):
      x = sg.sample("x", Normal(x + mu, 0.5), k)  # pathwise (reparameterized)
      sg.cost("sq", x**2)
      return x, None

    sg.scan(step, jnp.asarray(0.0), jax.random.split(key, 3))

  # E Σ_t x_t² with x_t = t μ + noise of variance 0.25 t: Σ_t (t² μ² + 0.25 t).
  loss = sg.surrogate(program, num_samples=8)
  keys = jax.random.split(jax.random.key(7), 2000)
  grads = jax.jit(jax.vmap(lambda k: jax.grad(loss)(jnp.asarray(0.4), k)))(keys)
  assert grads.dtype == jnp.float64
  _check_unbiased(grads, 2 * 0.4 * (1 + 4 + 9))


def test_fori_loop_matches_scan_and_mixes_with_sites_outside():
  def with_scan(p, key):
    k0, k1 = jax.random.split(key)
    m = sg.sample("m", Normal(p, 1.0), k0, estimator="score_function")

    def step(x, i):
      x = sg.sample("x", Normal(x + m, 1.0), jax.random.fold_in(k1, i), estimator="score_function")
      sg.cost("c", x)
      return x, None

    x, _ = sg.scan(step, 0.0, jnp.arange(3))
    return x**2  # a cost outside the loop, downstream of every step

  def with_fori(p, key):
    k0, k1 = jax.random.split(key)
    m = sg.sample("m", Normal(p, 1.0), k0, estimator="score_function")

    def step(i, x):
      x = sg.sample("x", Normal(x + m, 1.0), jax.random.fold_in(k1, i), estimator="score_function")
      sg.cost("c", x)
      return x

    return sg.fori_loop(0, 3, step, 0.0) ** 2

  la = sg.surrogate(with_scan, num_samples=4, baseline=sg.baselines.leave_one_out())
  lb = sg.surrogate(with_fori, num_samples=4, baseline=sg.baselines.leave_one_out())
  key, p = jax.random.key(8), jnp.asarray(0.3)
  np.testing.assert_allclose(
    jax.jit(jax.grad(la))(p, key), jax.jit(jax.grad(lb))(p, key), rtol=1e-5
  )
  assert la.graph(p, key)["costs"] == {"c": ["m", "x"], "<return value>": ["m", "x"]}
  # E[c + x_3²] with m ~ N(p, 1), x_t = t m + N(0, t): 6 p + (9 p² + 9 + 3).
  keys = jax.random.split(jax.random.key(9), 2000)
  grads, hess = jax.jit(jax.vmap(lambda k: (jax.grad(la)(p, k), jax.hessian(la)(p, k))))(keys)
  _check_unbiased(grads, 6 + 18 * p)
  _check_unbiased(hess, 18.0)


def test_nan_in_nan_out_and_no_recompilation():
  loss = sg.surrogate(_mdp, num_samples=2, baseline=sg.baselines.leave_one_out())
  bad = {"theta": MDP_PARAMS["theta"].at[0, 0].set(jnp.nan), "phi": MDP_PARAMS["phi"]}
  traces = []

  def counted(params, key):
    traces.append(1)
    return loss(params, key)

  f = jax.jit(jax.grad(counted))
  g = f(bad, jax.random.key(0))
  assert all(np.all(np.isnan(x)) for x in jax.tree_util.tree_leaves(g))
  assert traces
  n = len(traces)
  g = f(MDP_PARAMS, jax.random.key(2))
  assert len(traces) == n  # no retrace on a second call
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(g))


def test_outside_a_surrogate_scan_is_lax_scan():
  def step(x, k):
    x = sg.sample("x", Normal(x, 1.0), k)
    sg.cost("c", x)
    return x, x

  keys = jax.random.split(jax.random.key(0), 4)
  ours = sg.scan(step, 0.0, keys)
  plain = jax.lax.scan(lambda x, k: (x + Normal(0.0, 1.0).sample(k), None), 0.0, keys)
  np.testing.assert_allclose(ours[0], plain[0], rtol=1e-6)


# -- (d) bad input -------------------------------------------------------------------


def _run(program, **kwargs):
  kwargs.setdefault("num_samples", 2)
  loss = sg.surrogate(program, **kwargs)
  return jax.grad(loss)(jnp.asarray(0.1), jax.random.key(0))


def test_a_site_whose_shape_changes_across_steps_is_refused():
  def growing(p, key):
    def step(x, k):
      y = sg.sample("y", Normal(jnp.zeros_like(x) + p, 1.0), k, estimator="score_function")
      return jnp.concatenate([x, y[:1]]), None

    sg.scan(step, jnp.zeros(2), jax.random.split(key, 3))
    return 0.0

  with pytest.raises(ValueError, match=r"another shape.*\(2,\).*\(3,\).*'y': \(2,\)"):
    _run(growing)


def test_unsupported_site_estimators_inside_a_scan_are_refused():
  for estimator in ("exact", "disarm", "measure_valued"):

    def program(p, key, estimator=estimator):
      def step(x, k):
        z = sg.sample("z", Bernoulli(logits=p + x), k, estimator=estimator)
        sg.cost("c", z)
        return x, None

      sg.scan(step, 0.0, jax.random.split(key, 3))

    with pytest.raises(
      ValueError, match=f"Site 'z' is inside sg.scan and uses estimator='{estimator}'"
    ):
      _run(program)


def test_other_bad_loops_are_clear_errors():
  def raw_scan(p, key):
    def step(x, k):
      return x + sg.sample("w", Normal(p, 1.0), k), None

    return jax.lax.scan(step, 0.0, jax.random.split(key, 3))[0]

  with pytest.raises(ValueError, match="'w' is inside a jax.vmap.*scoregrad.scan"):
    _run(raw_scan)

  def nested(p, key):
    def inner(x, k):
      return x + sg.sample("v", Normal(p, 1.0), k), None

    def outer(x, k):
      return sg.scan(inner, x, jax.random.split(k, 2))[0], None

    return sg.scan(outer, 0.0, jax.random.split(key, 3))[0]

  with pytest.raises(ValueError, match="nested"):
    _run(nested)

  def chain(p, key):
    def step(x, k):
      x = sg.sample("x", Normal(x + p, 1.0), k, estimator="score_function")
      sg.cost("c", x)
      return x, None

    sg.scan(step, 0.0, jax.random.split(key, 3))

  with pytest.raises(ValueError, match="'x' is inside sg.scan and its baseline is moving_average"):
    loss = sg.surrogate(chain, baseline=sg.baselines.moving_average(0.9))
    loss(jnp.asarray(0.1), jax.random.key(0), loss.init(jnp.asarray(0.1), jax.random.key(0)))
  with pytest.raises(ValueError, match="`fixed_values` names site 'x', which is inside sg.scan"):
    _run(chain, fixed_values={"x": jnp.zeros(3)})
  with pytest.raises(TypeError, match="static trip count: `upper`"):
    sg.fori_loop(0, jnp.asarray(3), lambda i, x: x, 0.0)

  def twice(p, key):
    def step(x, k):
      k1, k2 = jax.random.split(k)
      sg.sample("x", Normal(p, 1.0), k1)
      sg.sample("x", Normal(p, 1.0), k2)
      return x, None

    sg.scan(step, 0.0, jax.random.split(key, 3))
    return 0.0

  with pytest.raises(ValueError, match="'x' is used twice in the body of sg.scan"):
    _run(twice)
