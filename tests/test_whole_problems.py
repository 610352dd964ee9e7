"""Whole-problem dimensions of issue 21's acceptance, beside the conformance suite.

* Parameters with ±inf leaves (masked categories, an unused −inf leaf): every
  discrete estimator and every continuous one gives a finite value and a
  finite gradient, exactly 0 for the −inf logit and the unused leaf, and the
  sampling ones are unbiased against enumeration.
* Costs that close over the differentiated parameters, at second order, for
  every estimator that claims second derivatives (score function with and
  without leave-one-out, pathwise, exact, and the front door on each): the
  Hessian of ``.value`` / ``expectation`` is unbiased against the exact one.

Statistical checks: ``assert_unbiased`` at a false-failure rate of 1e-6 per
assertion (Bonferroni over coordinates inside), 1e-5 over the file.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg

RATE = 1e-6
LOGITS = jnp.array([[0.5, -jnp.inf, 1.0, 0.2]])
PARAMS = {"logits": LOGITS, "mask": jnp.array([0.0, -jnp.inf])}
CAT = lambda p: sg.dists.Categorical(logits=p["logits"])
F = lambda x: jnp.sum((x - 1.3) ** 2)


def _exact_grad():
  est = sg.exact()
  return est.estimate(jax.random.key(0), F, CAT, PARAMS, est.init(PARAMS)).grad


SAMPLING = {
  "score_function": lambda: sg.score_function(num_samples=8),
  "score_function+loo": lambda: sg.score_function(
    num_samples=8, baseline=sg.baselines.leave_one_out()
  ),
  "arm": lambda: sg.arm(num_samples=4),
  "disarm": lambda: sg.disarm(num_pairs=4),
  "measure_valued": lambda: sg.measure_valued(num_samples=4),
  "rao_blackwell": lambda: sg.rao_blackwell(num_summed=2, num_samples=4),
  "unordered_set": lambda: sg.unordered_set(num_samples=2),
  "arms": lambda: sg.arms(num_samples=3),
}


def test_exact_is_finite_with_inf_leaves():
  g = _exact_grad()
  assert np.all(np.isfinite(g["logits"])) and float(g["logits"][0, 1]) == 0.0
  np.testing.assert_array_equal(g["mask"], 0.0)
  # The enumerated gradient of E f over the three live categories, by hand.
  live = jnp.array([0.5, 1.0, 0.2])
  p = jax.nn.softmax(live)
  costs = (jnp.array([0.0, 2.0, 3.0]) - 1.3) ** 2
  hand = p * (costs - jnp.sum(p * costs))
  np.testing.assert_allclose(g["logits"][0, jnp.array([0, 2, 3])], hand, rtol=1e-5)


@pytest.mark.parametrize("name", list(SAMPLING))
def test_inf_leaves_finite_and_unbiased(name):
  est = SAMPLING[name]()

  def one(k):
    out = est.estimate(k, F, CAT, PARAMS, est.init(PARAMS))
    return out.value, out.grad

  values, grads = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(1), 2000))
  assert np.all(np.isfinite(values))
  assert np.all(np.isfinite(grads["logits"])) and np.all(np.asarray(grads["logits"])[:, 0, 1] == 0)
  np.testing.assert_array_equal(grads["mask"], 0.0)
  live = np.asarray(grads["logits"])[:, 0, [0, 2, 3]]
  sg.testing.assert_unbiased(
    live, np.asarray(_exact_grad()["logits"])[0, [0, 2, 3]], false_failure_rate=RATE, rtol=1e-5
  )


@pytest.mark.parametrize(
  "make",
  [lambda: sg.score_function(num_samples=8), lambda: sg.pathwise(num_samples=8)],
  ids=["score_function", "pathwise"],
)
def test_unused_inf_leaf_next_to_a_normal(make):
  est = make()
  params = {"loc": jnp.array(0.3), "scale": jnp.array(1.2), "mask": jnp.array([0.0, -jnp.inf])}
  dist_fn = lambda p: sg.dists.Normal(p["loc"], p["scale"])
  out = est.estimate(jax.random.key(2), jnp.sin, dist_fn, params, est.init(params))
  assert np.isfinite(out.value) and np.isfinite(out.grad["loc"]) and np.isfinite(out.grad["scale"])
  np.testing.assert_array_equal(out.grad["mask"], 0.0)


# -- second order with a cost that closes over the parameters ------------------


def _bernoulli_mean(l):
  # f(b; l) = Σ l_i b_i + (b_0 − 0.4)² l_1, b ~ Bernoulli(σ(l)), 2 bits, enumerated.
  configs = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
  lp = jnp.sum(configs * jax.nn.log_sigmoid(l) + (1 - configs) * jax.nn.log_sigmoid(-l), 1)
  f = lambda b: jnp.sum(l * b) + (b[0] - 0.4) ** 2 * l[1]
  return jnp.sum(jnp.exp(lp) * jax.vmap(f)(configs))


def _bernoulli_cost(l):
  return lambda b: jnp.sum(l * b) + (b[0] - 0.4) ** 2 * l[1]


BERNOULLI_SECOND_ORDER = {
  "score_function": lambda: sg.score_function(num_samples=8),
  "score_function+loo": lambda: sg.score_function(
    num_samples=8, baseline=sg.baselines.leave_one_out()
  ),
  "score_function chunked": lambda: sg.chunked(sg.score_function(num_samples=8), 4),
  "exact": lambda: sg.exact(),
}


@pytest.mark.parametrize("name", list(BERNOULLI_SECOND_ORDER))
@pytest.mark.parametrize("via", ["value", "expectation"])
def test_second_order_with_a_cost_closing_over_params_discrete(name, via):
  est = BERNOULLI_SECOND_ORDER[name]()
  l0 = jnp.array([0.3, -0.6])
  dist_fn = lambda l: sg.dists.Bernoulli(logits=l)

  def value(l, k):
    if via == "expectation":
      return sg.expectation(_bernoulli_cost(l), dist_fn(l), k, estimator=est)
    return est.estimate(k, _bernoulli_cost(l), dist_fn, l, est.init(l)).value

  keys = jax.random.split(jax.random.key(3), 3000 if name != "exact" else 2)
  h = jax.jit(jax.vmap(jax.hessian(value), in_axes=(None, 0)))(l0, keys)
  sg.testing.assert_unbiased(
    h, jax.hessian(_bernoulli_mean)(l0), false_failure_rate=RATE, rtol=1e-5
  )


def _normal_mean(p):
  # f(x; p) = sin(p0 x) + p1 x², x ~ N(p0, p1²): E = sin(p0²) e^{−p0² p1²/2} + p1 (p0² + p1²).
  return jnp.sin(p[0] ** 2) * jnp.exp(-(p[0] ** 2) * p[1] ** 2 / 2) + p[1] * (p[0] ** 2 + p[1] ** 2)


NORMAL_SECOND_ORDER = {
  "score_function+loo": lambda: sg.score_function(
    num_samples=8, baseline=sg.baselines.leave_one_out()
  ),
  "pathwise": lambda: sg.pathwise(num_samples=8),
  "pathwise antithetic": lambda: sg.pathwise(num_samples=8, sampling="antithetic"),
  "score_function antithetic": lambda: sg.score_function(num_samples=8, sampling="antithetic"),
}


@pytest.mark.parametrize("name", list(NORMAL_SECOND_ORDER))
@pytest.mark.parametrize("via", ["value", "expectation"])
def test_second_order_with_a_cost_closing_over_params_normal(name, via):
  est = NORMAL_SECOND_ORDER[name]()
  p0 = jnp.array([0.7, 0.9])
  dist_fn = lambda p: sg.dists.Normal(p[0], p[1])
  cost = lambda p: lambda x: jnp.sin(p[0] * x) + p[1] * x**2

  def value(p, k):
    if via == "expectation":
      return sg.expectation(cost(p), dist_fn(p), k, estimator=est)
    return est.estimate(k, cost(p), dist_fn, p, est.init(p)).value

  keys = jax.random.split(jax.random.key(4), 4000)
  h = jax.jit(jax.vmap(jax.hessian(value), in_axes=(None, 0)))(p0, keys)
  sg.testing.assert_unbiased(h, jax.hessian(_normal_mean)(p0), false_failure_rate=RATE)
