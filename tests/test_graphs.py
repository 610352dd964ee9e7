"""Stochastic computation graphs (sg.sample / sg.cost / sg.surrogate).

Gradients and Hessians are checked against exact answers (closed forms and
enumeration) with standard-error tolerances, false-failure rate 1e-6 per
assertion (``scoregrad.testing``); variances where they are known exactly are
computed by enumerating the sites; identities that hold sample by sample
(hand-written DiCE on the same samples, enumeration) are checked to float
precision. Keys are fixed only for reproducibility.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased, assert_variance

RATE = 1e-6
N_KEYS = 20_000
Bernoulli, Normal = sg.dists.Bernoulli, sg.dists.Normal


def _per_key(fn, params, n=N_KEYS, seed=0):
  keys = jax.random.split(jax.random.key(seed), n)
  return jax.jit(jax.vmap(lambda k: fn(params, k)))(keys)


# -- chain Bernoulli → Normal ---------------------------------------------------


def _chain(est_z, est_x):
  def program(p, key):
    k1, k2 = jax.random.split(key)
    z = sg.sample("z", Bernoulli(logits=p[0]), k1, estimator=est_z)
    x = sg.sample("x", Normal(p[1] * z + p[2] * (1 - z), jnp.exp(p[3])), k2, estimator=est_x)
    sg.cost("fit", (x - 2.0) ** 2)
    return 0.5 * z

  return program


def _chain_exact(p):
  q, s2 = jax.nn.sigmoid(p[0]), jnp.exp(2 * p[3])
  return q * ((p[1] - 2) ** 2 + s2 + 0.5) + (1 - q) * ((p[2] - 2) ** 2 + s2)


CHAIN_PARAMS = jnp.array([0.3, 1.2, -0.4, -0.2])
MIXES = [
  (None, None),
  ("exact", None),
  (None, "score_function"),
  ("exact", "score_function"),
  ("score_function", "pathwise"),
]


@pytest.mark.parametrize("est_z,est_x", MIXES, ids=lambda e: str(e))
def test_chain_gradient_and_hessian_unbiased(est_z, est_x):
  loss = sg.surrogate(_chain(est_z, est_x), num_samples=4, baseline=sg.baselines.leave_one_out())
  grads = _per_key(jax.grad(loss), CHAIN_PARAMS)
  hessians = _per_key(jax.hessian(loss), CHAIN_PARAMS, seed=1)
  assert_unbiased(
    grads, jax.grad(_chain_exact)(CHAIN_PARAMS), false_failure_rate=RATE, rtol=1e-5
  )  # some coordinates have zero variance
  assert_unbiased(
    hessians, jax.hessian(_chain_exact)(CHAIN_PARAMS), false_failure_rate=RATE, rtol=1e-5
  )


def test_chain_graph_and_value():
  loss = sg.surrogate(_chain(None, None))
  graph = loss.graph(CHAIN_PARAMS, jax.random.key(0))
  assert graph == {
    "sites": {"z": "score_function", "x": "pathwise"},
    "costs": {"fit": ["z", "x"], "<return value>": ["z"]},
  }

  # The value is the program's cost on the same samples.
  def forward(p, key):
    k1, k2 = jax.random.split(key)
    z = Bernoulli(logits=p[0]).sample(k1)
    x = Normal(p[1] * z + p[2] * (1 - z), jnp.exp(p[3])).sample(k2)
    return (x - 2.0) ** 2 + 0.5 * z

  key = jax.random.key(3)
  np.testing.assert_allclose(loss(CHAIN_PARAMS, key), forward(CHAIN_PARAMS, key), rtol=1e-6)
  # Outside a surrogate the program runs forward as plain JAX (sg.sample samples).
  np.testing.assert_allclose(
    _chain(None, None)(CHAIN_PARAMS, key) + 0.0,
    0.5 * Bernoulli(logits=0.3).sample(jax.random.split(key)[0]),
  )


# -- two-layer sigmoid belief net ------------------------------------------------

U, T = jnp.array([0.7, -1.3]), jnp.array([1.0, 0.0])
SBN = {
  "a": jnp.array([0.2, -0.5]),
  "W": jnp.array([[1.0, -2.0], [0.5, 1.5]]),
  "b": jnp.array([-0.3, 0.4]),
}


def _sbn(est_top):
  def program(p, key):
    k1, k2 = jax.random.split(key)
    z1 = sg.sample("z1", Bernoulli(logits=p["a"]), k1, estimator=est_top)
    z2 = sg.sample("z2", Bernoulli(logits=p["W"] @ z1 + p["b"]), k2)
    sg.cost("top", jnp.dot(U, z1))
    sg.cost("bottom", jnp.sum((z2 - T) ** 2))

  return program


def _sbn_exact(p):
  configs = Bernoulli.enumerate_configurations((2,), jnp.float32)

  def given_top(z1):
    lp1 = Bernoulli(logits=p["a"]).log_prob(z1)
    d2 = Bernoulli(logits=p["W"] @ z1 + p["b"])
    lp2 = jax.vmap(d2.log_prob)(configs)
    inner = jnp.sum(jnp.exp(lp2) * jax.vmap(lambda z2: jnp.sum((z2 - T) ** 2))(configs))
    return jnp.exp(lp1) * (jnp.dot(U, z1) + inner)

  return jnp.sum(jax.vmap(given_top)(configs))


@pytest.mark.parametrize("est_top", [None, "exact"])
def test_sigmoid_belief_net_gradient_and_hessian_unbiased(est_top):
  loss = sg.surrogate(_sbn(est_top), num_samples=4, baseline=sg.baselines.leave_one_out())
  assert loss.graph(SBN, jax.random.key(0))["costs"] == {"top": ["z1"], "bottom": ["z1", "z2"]}
  flat, unravel = jax.flatten_util.ravel_pytree(SBN)
  f = lambda v, k: loss(unravel(v), k)
  exact = lambda v: _sbn_exact(unravel(v))
  grads = _per_key(jax.grad(f), flat)
  hessians = _per_key(jax.hessian(f), flat, n=N_KEYS // 2, seed=1)
  assert_unbiased(grads, jax.grad(exact)(flat), false_failure_rate=RATE)
  assert_unbiased(hessians, jax.hessian(exact)(flat), false_failure_rate=RATE)


def test_all_exact_is_the_exact_expectation():
  """Both layers enumerated: value, gradient and Hessian are exact, any key."""

  def program(p, key):
    k1, k2 = jax.random.split(key)
    z1 = sg.sample("z1", Bernoulli(logits=p["a"]), k1, estimator="exact")
    z2 = sg.sample("z2", Bernoulli(logits=p["W"] @ z1 + p["b"]), k2, estimator="exact")
    sg.cost("top", jnp.dot(U, z1))
    sg.cost("bottom", jnp.sum((z2 - T) ** 2))

  loss = sg.surrogate(program)
  flat, unravel = jax.flatten_util.ravel_pytree(SBN)
  f = lambda v: loss(unravel(v), jax.random.key(5))
  exact = lambda v: _sbn_exact(unravel(v))
  ours = jax.jit(lambda v: (f(v), jax.grad(f)(v), jax.hessian(f)(v)))(flat)
  for a, b in zip(ours, (exact(flat), jax.grad(exact)(flat), jax.hessian(exact)(flat))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="max_configurations=8"):
    sg.surrogate(program, max_configurations=8)(SBN, jax.random.key(0))


# -- dependency-aware credit: exact variances by enumeration ---------------------

F = (2.0, -1.0)  # c1 = F[z1]
G = (3.0, 5.0)  # c2 = G[z2]


def _two_costs(p, key):
  k1, k2 = jax.random.split(key)
  z1 = sg.sample("z1", Bernoulli(logits=p[0]), k1)
  z2 = sg.sample("z2", Bernoulli(logits=p[1]), k2)
  sg.cost("c1", jnp.where(z1 > 0.5, F[1], F[0]))
  sg.cost("c2", jnp.where(z2 > 0.5, G[1], G[0]))


def _global_dice(p, z1, z2):
  """One magic box over both sites for both costs (global credit)."""
  tau = Bernoulli(logits=p[0]).log_prob(z1) + Bernoulli(logits=p[1]).log_prob(z2)
  c = jnp.where(z1 > 0.5, F[1], F[0]) + jnp.where(z2 > 0.5, G[1], G[0])
  return sg.magic_box(tau) * c


def test_dependency_aware_credit_has_lower_exact_variance():
  p = jnp.array([0.4, -0.8])
  q = np.asarray(jax.nn.sigmoid(p), np.float64)
  loss = sg.surrogate(_two_costs)
  probs, dep, glob = [], [], []
  for z1 in (0.0, 1.0):
    for z2 in (0.0, 1.0):
      at = sg.surrogate(_two_costs, fixed_values={"z1": z1, "z2": z2})
      dep.append(np.asarray(jax.grad(at)(p, jax.random.key(0)), np.float64))
      glob.append(np.asarray(jax.grad(_global_dice)(p, z1, z2), np.float64))
      probs.append((q[0] if z1 else 1 - q[0]) * (q[1] if z2 else 1 - q[1]))
  probs, dep, glob = np.array(probs), np.array(dep), np.array(glob)
  exact_grad = q * (1 - q) * np.array([F[1] - F[0], G[1] - G[0]])
  mean = lambda g: probs @ g
  var = lambda g: probs @ (g - mean(g)) ** 2
  np.testing.assert_allclose(mean(dep), exact_grad, rtol=1e-5)
  np.testing.assert_allclose(mean(glob), exact_grad, rtol=1e-5)
  # Closed form of the dependency-aware variance: Var[c1(z1)(z1 − q1)], likewise z2.
  closed = np.array(
    [
      q[i] * (1 - q[i]) * (c[1] ** 2 * (1 - q[i]) + c[0] ** 2 * q[i])
      - (q[i] * (1 - q[i]) * (c[1] - c[0])) ** 2
      for i, c in enumerate((F, G))
    ]
  )
  np.testing.assert_allclose(var(dep), closed, rtol=1e-5)
  assert np.all(var(dep) < var(glob)), (var(dep), var(glob))
  assert var(dep)[0] < 0.05 * var(glob)[0]  # z1: 0.15 vs 4.9 (c2's noise removed)
  # The sampled surrogate has exactly this variance (and mean).
  sampled = _per_key(jax.grad(loss), p)
  assert_unbiased(sampled, exact_grad, false_failure_rate=RATE)
  assert_variance(sampled, closed, false_failure_rate=RATE)


# -- a reparameterized site under a discrete site --------------------------------


def _mixture(est_x):
  def program(p, key):
    k1, k2 = jax.random.split(key)
    z = sg.sample("z", Bernoulli(logits=p[0]), k1)
    x = sg.sample("x", Normal(p[1] * z + 0.5 * (1 - z), 1.0), k2, estimator=est_x)
    sg.cost("square", x**2)
    sg.cost("switch", 4.0 * z)

  return program


def test_pathwise_under_discrete_keeps_pathwise_variance():
  """∂/∂θ of E[x²], x | z=1 ~ N(θ, 1): the estimate is 2x·z (no score term), with
  Var = q·4(θ² + 1) − (2qθ)²; a score-function x has Var = q E[x⁴(x−θ)²] − (2qθ)²."""
  p = jnp.array([0.2, 0.8])
  q, theta = float(jax.nn.sigmoid(0.2)), 0.8
  pathwise = _per_key(jax.grad(sg.surrogate(_mixture(None))), p)[:, 1]
  exact_var = q * 4 * (theta**2 + 1) - (2 * q * theta) ** 2
  assert_unbiased(pathwise, np.float64(2 * q * theta), false_failure_rate=RATE)
  assert_variance(pathwise, np.float64(exact_var), false_failure_rate=RATE)
  nodes, weights = np.polynomial.hermite_e.hermegauss(40)
  x = theta + nodes
  score_var = q * np.sum(weights * x**4 * nodes**2) / np.sqrt(2 * np.pi) - (2 * q * theta) ** 2
  scored = _per_key(jax.grad(sg.surrogate(_mixture("score_function"))), p)[:, 1]
  assert_unbiased(scored, np.float64(2 * q * theta), false_failure_rate=RATE)
  assert_variance(scored, np.float64(score_var), false_failure_rate=RATE)
  assert exact_var < 0.25 * score_var


# -- same answers as a hand-written DiCE surrogate -------------------------------


def _three_sites(p, key):
  k1, k2, k3 = jax.random.split(key, 3)
  z = sg.sample("z", Bernoulli(logits=p[0]), k1)
  y = sg.sample("y", Bernoulli(logits=p[1] + p[2] * z), k2)
  x = sg.sample("x", Normal(p[3] * y, 1.0), k3)
  sg.cost("c1", 0.3 * z)
  sg.cost("c2", x**2)


def _hand_written(p, key, n=4):
  def one(k):
    k1, k2, k3 = jax.random.split(k, 3)
    z = jax.lax.stop_gradient(Bernoulli(logits=p[0]).sample(k1))
    dy = Bernoulli(logits=p[1] + p[2] * z)
    y = jax.lax.stop_gradient(dy.sample(k2))
    x = Normal(p[3] * y, 1.0).sample(k3)
    return (Bernoulli(logits=p[0]).log_prob(z), dy.log_prob(y), 0.3 * z, x**2)

  tz, ty, c1, c2 = jax.vmap(one)(jax.random.split(key, n))
  box = sg.magic_box
  r_z, r_y = jax.lax.stop_gradient(c1 + c2), jax.lax.stop_gradient(c2)
  loo = lambda r: (jnp.sum(r) - r) / (n - 1)
  terms = (
    box(tz) * c1 + box(tz + ty) * c2 + (1 - box(tz)) * loo(r_z) + (1 - box(ty)) * box(tz) * loo(r_y)
  )
  return jnp.mean(terms)


def test_same_answers_as_hand_written_dice():
  p = jnp.array([0.3, -0.2, 1.1, 0.7])
  loss = sg.surrogate(_three_sites, num_samples=4, baseline=sg.baselines.leave_one_out())
  assert loss.graph(p, jax.random.key(0))["costs"] == {"c1": ["z"], "c2": ["z", "y", "x"]}
  both = jax.jit(
    jax.vmap(
      lambda k: [(f(p, k), jax.grad(f)(p, k), jax.hessian(f)(p, k)) for f in (loss, _hand_written)]
    )
  )
  ours, hand = both(jax.random.split(jax.random.key(0), 50))
  for a, b in zip(ours, hand):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# -- baselines -------------------------------------------------------------------


def test_moving_average_baseline_threads_state_and_stays_unbiased():
  loss = sg.surrogate(_two_costs, num_samples=2, baseline=sg.baselines.moving_average(0.5))
  p = jnp.array([0.4, -0.8])
  state = loss.init(p, jax.random.key(0))
  assert set(state) == {"z1", "z2"}
  step = jax.jit(jax.grad(loss, has_aux=True))
  for i in range(5):
    _, state = step(p, jax.random.key(i), state)
  assert float(state["z1"].value) != 0.0
  q = jax.nn.sigmoid(p)
  exact = q * (1 - q) * jnp.array([F[1] - F[0], G[1] - G[0]])
  grads = _per_key(lambda pp, k: jax.grad(loss, has_aux=True)(pp, k, state)[0], p)
  assert_unbiased(grads, exact, false_failure_rate=RATE)
  hessians = _per_key(lambda pp, k: jax.hessian(lambda v: loss(v, k, state)[0])(pp), p, seed=1)
  assert_unbiased(
    hessians,
    jax.hessian(lambda v: jnp.sum(jax.nn.sigmoid(v) * jnp.array([F[1] - F[0], G[1] - G[0]])))(p),
    false_failure_rate=RATE,
  )
  with pytest.raises(TypeError, match="fn.init"):
    loss(p, jax.random.key(0), None)


def test_callable_baseline_sees_only_non_descendants():
  seen = {}

  def b_y(values):
    seen["y"] = sorted(values)
    return 2.0 * values["z"] + 1.0

  loss = sg.surrogate(_three_sites, baseline={"y": b_y, "z": sg.baselines.constant(1.0)})
  p = jnp.array([0.3, -0.2, 1.1, 0.7])
  loss(p, jax.random.key(0))
  assert seen["y"] == ["z"]  # x is a descendant of y; y itself is excluded

  def exact(v):
    qz = jax.nn.sigmoid(v[0])
    qy = lambda z: jax.nn.sigmoid(v[1] + v[2] * z)
    return 0.3 * qz + sum(
      pz * (qy(z) * (v[3] ** 2 + 1) + (1 - qy(z)) * 1.0) for z, pz in ((0.0, 1 - qz), (1.0, qz))
    )

  grads = _per_key(jax.grad(loss), p)
  hessians = _per_key(jax.hessian(loss), p, seed=1)
  assert_unbiased(grads, jax.grad(exact)(p), false_failure_rate=RATE)
  assert_unbiased(hessians, jax.hessian(exact)(p), false_failure_rate=RATE)


# -- transformations -------------------------------------------------------------


def test_jit_vmap_scan_and_no_recompilation():
  loss = sg.surrogate(_chain(None, None), num_samples=4, baseline=sg.baselines.leave_one_out())
  key = jax.random.key(7)
  eager = jax.grad(loss)(CHAIN_PARAMS, key)
  jitted = jax.jit(jax.grad(loss))
  np.testing.assert_allclose(jitted(CHAIN_PARAMS, key), eager, rtol=1e-5)
  jitted(CHAIN_PARAMS + 1.0, jax.random.key(8))
  assert jitted._cache_size() == 1
  keys = jax.random.split(key, 3)
  batched = jax.vmap(jax.grad(loss), in_axes=(None, 0))(CHAIN_PARAMS, keys)
  np.testing.assert_allclose(batched[1], jax.grad(loss)(CHAIN_PARAMS, keys[1]), rtol=1e-5)
  opt = optax.adam(0.05)

  def step(carry, k):
    p, s = carry
    g = jax.grad(loss)(p, k)
    u, s = opt.update(g, s, p)
    return (optax.apply_updates(p, u), s), loss(p, k)

  (final, _), _ = jax.lax.scan(
    step, (CHAIN_PARAMS, opt.init(CHAIN_PARAMS)), jax.random.split(key, 300)
  )
  assert _chain_exact(final) < _chain_exact(CHAIN_PARAMS) - 0.5


def test_dependencies_through_jit_helpers_and_float64(x64):
  @jax.jit
  def helper(a, b):
    return a * 2.0, b + 1.0

  def program(p, key):
    k1, k2 = jax.random.split(key)
    z = sg.sample("z", Bernoulli(logits=p[0]), k1)
    w = sg.sample("w", Bernoulli(logits=p[1]), k2)
    u, v = helper(z, w)  # one equation, two outputs: followed inside
    sg.cost("u", u)
    sg.cost("v", v)
    sg.cost("both", jax.lax.scan(lambda c, x: (c + x, None), 0.0, jnp.stack([z, 0 * w]))[0])

  loss = sg.surrogate(program)
  p = jnp.array([0.1, 0.2])
  assert loss.graph(p, jax.random.key(0))["costs"] == {"u": ["z"], "v": ["w"], "both": ["z", "w"]}
  assert loss(p, jax.random.key(0)).dtype == jnp.float64


# -- bad input -------------------------------------------------------------------


def _err(program, *args, **kwargs):
  return sg.surrogate(program, **kwargs)(jnp.array([0.1, 0.2]), jax.random.key(0), *args)


def test_errors():
  def twice(p, key):
    k1, k2 = jax.random.split(key)
    sg.sample("z", Bernoulli(logits=p[0]), k1)
    sg.sample("z", Bernoulli(logits=p[1]), k2)
    return 0.0

  with pytest.raises(ValueError, match="'z' is used twice"):
    _err(twice)

  def reused(p, key):
    a = sg.sample("a", Bernoulli(logits=p[0]), key)
    b = sg.sample("b", Bernoulli(logits=p[1]), key)
    return a + b

  with pytest.raises(ValueError, match="same key object as site 'a'"):
    _err(reused)

  def pathwise_bernoulli(p, key):
    return sg.sample("z", Bernoulli(logits=p[0]), key, estimator="pathwise")

  with pytest.raises(ValueError, match="pathwise estimator needs a reparameterized"):
    _err(pathwise_bernoulli)
  with pytest.raises(ValueError, match="pathwise estimator needs a reparameterized"):
    pathwise_bernoulli(jnp.zeros(2), jax.random.key(0))  # outside: validated too

  def vector_cost(p, key):
    sg.cost("v", sg.sample("x", Normal(p, 1.0), key))

  with pytest.raises(ValueError, match=r"a cost must be a scalar; got shape \(2,\)"):
    _err(vector_cost)
  with pytest.raises(ValueError, match=r"return value .* must be a scalar; got shape \(2,\)"):
    _err(lambda p, k: sg.sample("x", Normal(p, 1.0), k))
  with pytest.raises(ValueError, match="reported no cost"):
    _err(lambda p, k: None)
  with pytest.raises(ValueError, match="cannot be enumerated"):
    _err(lambda p, k: sg.sample("x", Normal(p[0], 1.0), k, estimator="exact"))
  with pytest.raises(ValueError, match="must be one of"):
    _err(lambda p, k: sg.sample("x", Normal(p[0], 1.0), k, estimator="reinforce"))
  with pytest.raises(ValueError, match="num_samples=n"):
    _err(_two_costs, baseline=sg.baselines.leave_one_out())
  with pytest.raises(ValueError, match="does not have"):
    _err(_two_costs, baseline={"nope": sg.baselines.constant(1.0)})
  with pytest.raises(ValueError, match="score-function sites only"):
    _err(
      lambda p, k: sg.sample("x", Normal(p[0], 1.0), k), baseline={"x": sg.baselines.constant(1.0)}
    )
  with pytest.raises(ValueError, match="per-coordinate"):
    sg.surrogate(_two_costs, num_samples=2, baseline=sg.baselines.optimal())
  with pytest.raises(ValueError, match="differentiable once only"):
    _err(lambda p, k: sg.sample("x", sg.dists.Laplace(p[0], 1.0), k, estimator="score_function"))
  with pytest.raises(TypeError, match="program"):
    sg.surrogate(3)

  def inside_vmap(p, key):
    return jnp.sum(
      jax.vmap(lambda k: sg.sample("x", Normal(p[0], 1.0), k))(jax.random.split(key, 2))
    )

  with pytest.raises(ValueError, match="'x' is inside a jax.vmap"):
    _err(inside_vmap)
  # Outside a surrogate: plain samples, costs returned unchanged.
  assert sg.cost("c", 1.5) == 1.5
  x = sg.sample("x", Normal(0.0, 1.0), jax.random.key(1))
  np.testing.assert_allclose(x, Normal(0.0, 1.0).sample(jax.random.key(1)))


def test_site_costs_give_regression_data_for_a_learned_baseline():
  p = jnp.array([0.3, -0.2, 1.1, 0.7])
  loss = sg.surrogate(_three_sites, num_samples=4)
  key = jax.random.key(2)
  data = loss.site_costs(p, key)
  assert data["values"]["x"].shape == (4, 1) and data["weights"].shape == (4, 1)
  z, x = (data["values"][n][:, 0] for n in ("z", "x"))
  np.testing.assert_allclose(data["downstream"]["z"][:, 0], 0.3 * z + x**2, rtol=1e-6)
  np.testing.assert_allclose(data["downstream"]["y"][:, 0], x**2, rtol=1e-6)
  # Fit b_y(z) = w[0] + w[1] z by least squares on fresh runs, then use it.
  runs = jax.vmap(lambda k: loss.site_costs(p, k))(jax.random.split(key, 500))
  zs = runs["values"]["z"].reshape(-1)
  design = np.stack([np.ones_like(zs), zs], axis=1)
  w = np.linalg.lstsq(design, np.asarray(runs["downstream"]["y"]).reshape(-1), rcond=None)[0]
  fitted = sg.surrogate(_three_sites, num_samples=4, baseline={"y": lambda v: w[0] + w[1] * v["z"]})
  plain = sg.surrogate(_three_sites, num_samples=4)
  g_fit, g_plain = _per_key(jax.grad(fitted), p), _per_key(jax.grad(plain), p)
  tol = 6 * np.sqrt((g_fit.var(0) + g_plain.var(0)) / N_KEYS)  # z = 6: rate ~2e-9 per coordinate
  assert np.all(np.abs(g_fit.mean(0) - g_plain.mean(0)) < tol)  # both unbiased
  assert g_fit[:, 1].var() < 0.8 * g_plain[:, 1].var()  # the fitted baseline reduces y's noise


def test_nan_cost_gives_nan_gradient():
  def program(p, key):
    z = sg.sample("z", Bernoulli(logits=p[0]), key)
    return jnp.log(z - 2.0) + p[1]  # log of a negative number: NaN

  g = jax.grad(sg.surrogate(program))(jnp.array([0.1, 0.2]), jax.random.key(0))
  assert np.all(np.isnan(g))


@pytest.mark.parametrize(
  "program,params,exact",
  [
    (_chain("disarm", None), CHAIN_PARAMS, _chain_exact),
    (_chain("disarm", "score_function"), CHAIN_PARAMS, _chain_exact),
  ],
  ids=["chain", "chain-score-x"],
)
def test_disarm_site_gradient_unbiased_and_first_order_only(program, params, exact):
  loss = sg.surrogate(program, num_samples=2)
  grads = _per_key(jax.grad(loss), params)
  assert_unbiased(grads, jax.grad(exact)(params), false_failure_rate=RATE, rtol=1e-5)
  with pytest.raises(NotImplementedError, match="first derivatives only"):
    jax.jit(jax.hessian(loss))(params, jax.random.key(0))


def test_disarm_site_in_sigmoid_belief_net():
  def program(p, key):
    k1, k2 = jax.random.split(key)
    z1 = sg.sample("z1", Bernoulli(logits=p["a"]), k1, estimator="disarm")
    z2 = sg.sample("z2", Bernoulli(logits=p["W"] @ z1 + p["b"]), k2)
    sg.cost("top", jnp.dot(U, z1))
    sg.cost("bottom", jnp.sum((z2 - T) ** 2))

  loss = sg.surrogate(program, num_samples=4, baseline=sg.baselines.leave_one_out())
  grads = _per_key(jax.grad(loss), SBN)
  assert_unbiased(grads, jax.grad(_sbn_exact)(SBN), false_failure_rate=RATE)
  # Against the score function with the same baseline, DisARM's top-layer
  # gradient is less noisy here: measured 0.29x and 0.39x the variance; the
  # 0.6x bound leaves a margin of many standard errors of the variance estimates.
  score = _per_key(
    jax.grad(sg.surrogate(_sbn(None), num_samples=4, baseline=sg.baselines.leave_one_out())), SBN
  )
  assert np.all(np.var(grads["a"], 0) < 0.6 * np.var(score["a"], 0))
  with pytest.raises(ValueError, match="needs a factorised Bernoulli"):
    _err(lambda p, k: sg.sample("x", Normal(p[0], 1.0), k, estimator="disarm"))


def _sbn_with(top, bottom):
  def program(p, key):
    k1, k2 = jax.random.split(key)
    z1 = sg.sample("z1", Bernoulli(logits=p["a"]), k1, estimator=top)
    z2 = sg.sample("z2", Bernoulli(logits=p["W"] @ z1 + p["b"]), k2, estimator=bottom)
    sg.cost("top", jnp.dot(U, z1))
    sg.cost("bottom", jnp.sum((z2 - T) ** 2))

  return program


@pytest.mark.parametrize(
  "top,bottom",
  [("disarm", "disarm"), ("exact", "disarm"), ("disarm", "exact")],
  ids=lambda e: str(e),
)
def test_several_disarm_sites_and_disarm_with_exact_sites_unbiased(top, bottom):
  """Two disarm sites in a chain (the lower one follows its new parents in the
  upper one's antithetic run), and disarm above or below an exact site."""
  loss = sg.surrogate(_sbn_with(top, bottom), num_samples=2)
  assert loss.graph(SBN, jax.random.key(0))["sites"] == {"z1": top, "z2": bottom}
  grads = _per_key(jax.grad(loss), SBN)
  assert_unbiased(grads, jax.grad(_sbn_exact)(SBN), false_failure_rate=RATE, rtol=1e-5)
  with pytest.raises(NotImplementedError, match="first derivatives only"):
    jax.jit(jax.hessian(loss))(SBN, jax.random.key(0))


def test_two_independent_disarm_sites_match_two_disarm_estimates():
  """Sites with disjoint costs: each gets exactly DisARM on its own costs, so the
  gradient equals the hand-built DisARM of each on the same uniforms."""

  def program(p, key):
    k1, k2 = jax.random.split(key)
    a = sg.sample("a", Bernoulli(logits=p[:2]), k1, estimator="disarm")
    b = sg.sample("b", Bernoulli(logits=p[2:]), k2, estimator="disarm")
    sg.cost("ca", jnp.sum((a - 0.3) ** 2) + a[0] * a[1])
    sg.cost("cb", jnp.dot(jnp.array([1.5, -2.0]), b))

  params = jnp.array([0.4, -0.7, 0.2, 1.1])
  key = jax.random.key(5)
  g = jax.jit(jax.grad(sg.surrogate(program)))(params, key)

  def by_hand(logits, k, f):
    u = jax.random.uniform(k, logits.shape)
    b, bt = Bernoulli(logits=logits).antithetic_pair(u, logits)
    return 0.5 * (f(b) - f(bt)) * (1 - 2 * bt) * (b != bt) * jax.nn.sigmoid(jnp.abs(logits))

  k1, k2 = jax.random.split(key)
  expected = jnp.concatenate(
    [
      by_hand(params[:2], k1, lambda a: jnp.sum((a - 0.3) ** 2) + a[0] * a[1]),
      by_hand(params[2:], k2, lambda b: jnp.dot(jnp.array([1.5, -2.0]), b)),
    ]
  )
  np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-7)


# -- measure-valued sites -------------------------------------------------------


@pytest.mark.parametrize(
  "est_z,est_x",
  [(None, "measure_valued"), ("measure_valued", None), ("measure_valued", "measure_valued")],
  ids=lambda e: str(e),
)
def test_measure_valued_site_gradient_unbiased_and_first_order_only(est_z, est_x):
  # z keeps a leave-one-out baseline where it is a score-function site.
  baseline = {"z": sg.baselines.leave_one_out()} if est_z is None else None
  loss = sg.surrogate(_chain(est_z, est_x), num_samples=2, baseline=baseline)
  assert loss.graph(CHAIN_PARAMS, jax.random.key(0))["sites"]["x"] == (est_x or "pathwise")
  grads = _per_key(jax.grad(loss), CHAIN_PARAMS)
  assert_unbiased(grads, jax.grad(_chain_exact)(CHAIN_PARAMS), false_failure_rate=RATE, rtol=1e-5)
  with pytest.raises(NotImplementedError, match="first derivatives only"):
    jax.jit(jax.hessian(loss))(CHAIN_PARAMS, jax.random.key(0))


def test_measure_valued_sites_in_sigmoid_belief_net_beat_the_score_function():
  """MVD on a Bernoulli site upstream of a score-function site, and on the lower
  layer itself (a Categorical-free check of the chain rule through parents)."""
  loo = sg.baselines.leave_one_out()
  for top, bottom in [("measure_valued", None), (None, "measure_valued")]:

    def program(p, key, top=top, bottom=bottom):
      k1, k2 = jax.random.split(key)
      z1 = sg.sample("z1", Bernoulli(logits=p["a"]), k1, estimator=top)
      z2 = sg.sample("z2", Bernoulli(logits=p["W"] @ z1 + p["b"]), k2, estimator=bottom)
      sg.cost("top", jnp.dot(U, z1))
      sg.cost("bottom", jnp.sum((z2 - T) ** 2))

    loss = sg.surrogate(program, num_samples=4, baseline=loo)
    grads = _per_key(jax.grad(loss), SBN)
    assert_unbiased(grads, jax.grad(_sbn_exact)(SBN), false_failure_rate=RATE)
    score = _per_key(jax.grad(sg.surrogate(_sbn(None), num_samples=4, baseline=loo)), SBN)
    # The weak derivative of a Bernoulli is exact in its own coordinate
    # (f(1) − f(0)): the MVD layer's gradient is less noisy than the score
    # function's with the same baseline. Measured variance ratios: 0.08–0.15
    # (top layer, a), 0.03 (bottom layer, b); the 0.5 bound leaves many
    # standard errors of the variance estimates (20 000 keys each).
    layer = "a" if top else "b"
    assert np.all(np.var(grads[layer], 0) < 0.5 * np.var(score[layer], 0)), layer


def test_measure_valued_categorical_and_gamma_sites():
  w = jnp.array([1.0, -0.5, 2.0])

  def program(p, key):
    k1, k2 = jax.random.split(key)
    c = sg.sample("c", sg.dists.Categorical(logits=p[:3]), k1, estimator="measure_valued")
    y = sg.sample("y", sg.dists.Gamma(2.0, jnp.exp(p[3] + 0.3 * c)), k2, estimator="measure_valued")
    return w[c] + y**2

  def exact(p):
    pi = jax.nn.softmax(p[:3])
    rate = jnp.exp(p[3] + 0.3 * jnp.arange(3.0))
    return jnp.dot(pi, w + 2.0 * 3.0 / rate**2)  # E[y²] = α(α + 1)/β² for Gamma(α = 2, β)

  params = jnp.array([0.2, -0.4, 0.1, 0.3])
  grads = _per_key(jax.grad(sg.surrogate(program, num_samples=2)), params)
  assert_unbiased(grads, jax.grad(exact)(params), false_failure_rate=RATE)


def test_measure_valued_site_errors():
  with pytest.raises(ValueError, match="needs a weak-derivative decomposition"):
    _err(
      lambda p, k: jnp.sum(
        sg.sample(
          "x",
          sg.dists.MultivariateNormalTriL(p, jnp.eye(2)),
          k,
          estimator="measure_valued",
        )
      )
    )
  with pytest.raises(ValueError, match="through its rate only, but its concentration"):
    _err(
      lambda p, k: sg.sample("y", sg.dists.Gamma(jnp.exp(p[0]), 1.0), k, estimator="measure_valued")
    )

  def mixed(p, key):
    k1, k2 = jax.random.split(key)
    a = sg.sample("a", Bernoulli(logits=p[0]), k1, estimator="exact")
    b = sg.sample("b", Normal(p[1], 1.0), k2, estimator="measure_valued")
    return a + b

  with pytest.raises(ValueError, match="cannot be combined with 'exact' or 'disarm'"):
    _err(mixed)


# -- RODEO sites ----------------------------------------------------------------


def _rodeo_grads(loss, params, state, seed):
  grad = jax.grad(lambda p, k, s: loss(p, k, s)[0])
  keys = jax.random.split(jax.random.key(seed), N_KEYS)
  return jax.jit(jax.vmap(grad, in_axes=(None, 0, None)))(params, keys, state)


@pytest.mark.parametrize(
  "program,params,exact",
  [
    (_chain("rodeo", None), CHAIN_PARAMS, _chain_exact),
    (_sbn_with("rodeo", None), SBN, _sbn_exact),
  ],
  ids=["chain", "sigmoid-belief-net"],
)
def test_rodeo_site_unbiased_at_init_and_after_learning_its_controls(program, params, exact):
  loss = sg.surrogate(
    program,
    num_samples=2,
    baseline=sg.baselines.leave_one_out(),
    rodeo=dict(num_samples=4, hidden_size=8, learning_rate=1e-2),
  )
  state = loss.init(params, jax.random.key(0))
  assert isinstance(state["z" if "z" in state else "z1"], sg.RodeoState)
  truth = jax.grad(exact)(params)
  assert_unbiased(_rodeo_grads(loss, params, state, 1), truth, false_failure_rate=RATE, rtol=1e-5)

  # The controls are learned in the state threaded through a jitted lax.scan;
  # unbiased for any controls, so for the learned ones too.
  def step(s, k):
    return loss(params, k, s)[1], None

  learned, _ = jax.jit(lambda s: jax.lax.scan(step, s, jax.random.split(jax.random.key(9), 200)))(
    state
  )
  site = "z" if "z" in state else "z1"
  assert float(jnp.abs(learned[site].control["alpha"])) > 0  # it moved
  assert_unbiased(_rodeo_grads(loss, params, learned, 2), truth, false_failure_rate=RATE, rtol=1e-5)
  with pytest.raises(NotImplementedError, match="first derivatives only"):
    jax.jit(jax.hessian(lambda p: loss(p, jax.random.key(0), state)[0]))(params)


def test_rodeo_site_errors():
  program = _chain("rodeo", None)
  with pytest.raises(ValueError, match=r"surrogate\(program, rodeo=dict\(num_samples=K\)\)"):
    sg.surrogate(program)(CHAIN_PARAMS, jax.random.key(0))
  with pytest.raises(ValueError, match="`rodeo` must be None or a dict with num_samples"):
    sg.surrogate(program, rodeo={"samples": 4})
  with pytest.raises(ValueError, match="num_samples >= 2"):
    sg.surrogate(program, rodeo=dict(num_samples=1))
  loss = sg.surrogate(program, rodeo=dict(num_samples=2, hidden_size=4))
  with pytest.raises(ValueError, match="no entry for the rodeo site 'z'"):
    loss(CHAIN_PARAMS, jax.random.key(0), {})
  with pytest.raises(ValueError, match="estimator='rodeo' needs a factorised Bernoulli"):
    _err(lambda p, k: sg.sample("x", Normal(p[0], 1.0), k, estimator="rodeo"))
  with pytest.raises(ValueError, match="one site per program"):
    sg.surrogate(_sbn_with("rodeo", "rodeo"), rodeo=dict(num_samples=2))(SBN, jax.random.key(0), {})
