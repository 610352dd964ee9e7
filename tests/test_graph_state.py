"""Stateful baselines in graph surrogates: the state they are updated with (issue 29).

A stateful baseline of a score-function site (``moving_average``,
``learned``) is updated with the step's mean downstream cost of the site:
over the runs of the program, probability-weighted over the configurations of
exact sites and averaged over the branches of DisARM/RODEO sites. A wrong
update leaves the gradient unbiased (only its variance changes), so it is
pinned on the state itself:

* exactly, for every key, against a hand computation from the same draws
  (exact sites below and above the site, by enumeration);
* for every stateful baseline × every other site estimator, E[state after
  one step] against the exact expectation of the downstream cost (by
  enumeration or closed form), with ``assert_unbiased``'s SE-derived
  tolerance at false-failure rate 1e-6 per assertion.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased

RATE = 1e-6
N_KEYS = 8_000
DECAY, LEARNING_RATE = 0.5, 0.25
Bernoulli, Categorical, Normal = sg.dists.Bernoulli, sg.dists.Categorical, sg.dists.Normal
P = jnp.array([0.2, -1.0, 2.0])

BASELINES = {
  "moving_average": (lambda: sg.baselines.moving_average(DECAY), 1.0 - DECAY),
  # One SGD step on mean (C − φ)² from φ = 0: φ₁ = 2·lr·mean(C).
  "learned": (lambda: sg.baselines.learned(optax.sgd(LEARNING_RATE)), 2.0 * LEARNING_RATE),
}


def _value(state):
  return state.value


def _discrete_cost(z, y):
  return (3.0 + 2.0 * z) * y + z + 1.0


def _discrete(estimator):
  """z (score function, stateful baseline) → y ~ Bernoulli (the other estimator)."""

  def program(p, key):
    k1, k2 = jax.random.split(key)
    z = sg.sample("z", Bernoulli(logits=p[0]), k1)
    y = sg.sample("y", Bernoulli(logits=p[1] + p[2] * z), k2, estimator=estimator)
    sg.cost("c", jnp.sum(_discrete_cost(z, y)))

  def expected(p):
    q = jax.nn.sigmoid(p[0])
    given = lambda z: _discrete_cost(z, 0.0) + jax.nn.sigmoid(p[1] + p[2] * z) * (3.0 + 2.0 * z)
    return (1 - q) * given(0.0) + q * given(1.0)

  return program, expected


def _continuous(estimator):
  """z (score function, stateful baseline) → y ~ Normal (the other estimator)."""

  def program(p, key):
    k1, k2 = jax.random.split(key)
    z = sg.sample("z", Bernoulli(logits=p[0]), k1)
    y = sg.sample("y", Normal(p[1] + p[2] * z, 1.0), k2, estimator=estimator)
    sg.cost("c", y**2 + z)

  def expected(p):
    q = jax.nn.sigmoid(p[0])
    given = lambda z: (p[1] + p[2] * z) ** 2 + 1.0 + z
    return (1 - q) * given(0.0) + q * given(1.0)

  return program, expected


def _exact_above():
  """e (exact, 3 classes) → z (score function, stateful baseline)."""

  def program(p, key):
    k1, k2 = jax.random.split(key)
    e = sg.sample("e", Categorical(logits=jnp.array([p[1], 0.0, -p[1]])), k1, estimator="exact")
    z = sg.sample("z", Bernoulli(logits=p[0] + p[2] * (e - 1.0)), k2)
    sg.cost("c", (2.0 + e) * z + 0.5 * e)

  def expected(p):
    pe = jax.nn.softmax(jnp.array([p[1], 0.0, -p[1]]))
    q = jax.nn.sigmoid(p[0] + p[2] * (jnp.arange(3.0) - 1.0))
    return jnp.dot(pe, (2.0 + jnp.arange(3.0)) * q + 0.5 * jnp.arange(3.0))

  return program, expected


COMBINATIONS = {
  "score_function": _discrete("score_function"),
  "exact-below": _discrete("exact"),
  "exact-above": _exact_above(),
  "disarm": _discrete("disarm"),
  "rodeo": _discrete("rodeo"),
  "measure_valued-bernoulli": _discrete("measure_valued"),
  "measure_valued-normal": _continuous("measure_valued"),
  "pathwise": _continuous("pathwise"),
}


def _surrogate(program, baseline):
  return sg.surrogate(
    program,
    num_samples=2,
    baseline={"z": baseline},
    rodeo=dict(num_samples=2, hidden_size=4),
  )


@pytest.mark.parametrize("baseline", sorted(BASELINES))
@pytest.mark.parametrize("other", sorted(COMBINATIONS))
def test_stateful_baseline_state_is_the_mean_downstream_cost(baseline, other):
  """E[state after one step from init] = factor · E[cost downstream of z], exactly."""
  program, expected = COMBINATIONS[other]
  make, factor = BASELINES[baseline]
  loss = _surrogate(program, make())
  state = loss.init(P, jax.random.key(0))
  assert set(state) == ({"z", "y"} if other == "rodeo" else {"z"})
  keys = jax.random.split(jax.random.key(1), N_KEYS)
  after = jax.jit(jax.vmap(lambda k: _value(loss(P, k, state)[1]["z"])))(keys)
  assert_unbiased(
    np.asarray(after, np.float64), np.float64(factor * expected(P)), false_failure_rate=RATE
  )


def _hand_state(program_kind, p, key, n):
  """The probability-weighted mean downstream cost of z, from the program's own draws."""
  total = 0.0
  for k in jax.random.split(key, n):
    k1, k2 = jax.random.split(k)
    if program_kind == "exact-below":
      z = Bernoulli(logits=p[0]).sample(k1)
      r = jax.nn.sigmoid(p[1] + p[2] * z)
      total += r * _discrete_cost(z, 1.0) + (1 - r) * _discrete_cost(z, 0.0)
    else:  # exact-above: z is drawn under each configuration of e, with the same key
      pe = jax.nn.softmax(jnp.array([p[1], 0.0, -p[1]]))
      for e in range(3):
        z = Bernoulli(logits=p[0] + p[2] * (e - 1.0)).sample(k2)
        total += pe[e] * ((2.0 + e) * z + 0.5 * e)
  return total / n


@pytest.mark.parametrize("baseline", sorted(BASELINES))
@pytest.mark.parametrize("kind", ["exact-below", "exact-above"])
def test_exact_site_state_is_the_probability_weighted_mean_on_every_key(baseline, kind):
  program, _ = COMBINATIONS[kind]
  make, factor = BASELINES[baseline]
  loss = sg.surrogate(program, num_samples=4, baseline=make())
  state = loss.init(P, jax.random.key(0))
  step = jax.jit(lambda k, s: loss(P, k, s)[1])
  for seed in range(3):
    key = jax.random.key(10 + seed)
    new = step(key, state)["z"]
    np.testing.assert_allclose(new.value, factor * _hand_state(kind, P, key, 4), rtol=1e-5)
  if baseline == "moving_average":
    assert int(new.count) == 1
