"""Specification of the variance-reduction layer, ``sg.with_control_variate``.

The layer wraps ANY estimator: ∇E[f] = ∇E[f − βh] + β∇E[h]. These tests
apply it to every estimator family on Bernoulli bits, where everything is
exact by enumeration: exact gradients, and exact per-sample variances of the
corrected score-function and DisARM estimators (enumerating the 2^D samples,
and the 4^D antithetic pairs).

Statistical assertions use scoregrad.testing with false-failure rate 1e-6
each (Bonferroni over coordinates); fewer than 20 of them, so the file fails
by chance with probability below 2e-5 for any seed.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased, assert_variance

RATE = 1e-6
LOGITS = np.array([0.3, -0.5, 1.1])
A = np.array([0.7, -0.4, 0.9])
BERN = lambda l: sg.dists.Bernoulli(logits=l)


def f_exp(b):
  """Not quadratic: the delta method's h is only an approximation of it."""
  return jnp.exp(jnp.asarray(A, b.dtype) @ b)


def f_quadratic(b):
  return jnp.sum((b - 0.45) ** 2) + b[0] * b[2]


def _configs(d=3):
  return np.array(list(itertools.product([0.0, 1.0], repeat=d)))


def _exact_grad(f, logits=LOGITS):
  """∇ Σ_b p(b) f(b) by enumeration, in float64."""
  with jax.enable_x64(True):
    configs = jnp.asarray(_configs(len(logits)))
    fs = jax.vmap(f)(configs)
    g = jax.grad(lambda l: jnp.sum(jnp.exp(BERN(l).log_prob(configs)) * fs))(jnp.asarray(logits))
  return np.asarray(g)


def _delta_pieces(f, logits=LOGITS):
  """h(b) and ∇ℓ E[h] of the delta method at p = σ(ℓ), in float64 (by hand)."""
  with jax.enable_x64(True):
    p = jax.nn.sigmoid(jnp.asarray(logits))
    f0, g, H = f(p), jax.grad(f)(p), jax.hessian(f)(p)
    h = lambda b: f0 + g @ (b - p) + 0.5 * (b - p) @ H @ (b - p)
    dp = p * (1 - p)
    # E[h] = f0 + g·(μ − p̄) + ½[(μ − p̄)ᵀH(μ − p̄) + Σ_j H_jj μ_j(1 − μ_j)], at μ = p̄.
    grad_eh = g * dp + 0.5 * jnp.diag(H) * (1 - 2 * p) * dp
    return h, np.asarray(grad_eh)


def _wrapped(name):
  cv = sg.control_variates.delta_method()
  base = {
    "score_function": lambda: sg.score_function(num_samples=64, per_sample=True),
    "score_function+leave_one_out": lambda: sg.score_function(
      num_samples=64, per_sample=True, baseline=sg.baselines.leave_one_out()
    ),
    "arm": lambda: sg.arm(num_samples=64, per_sample=True),
    "disarm": lambda: sg.disarm(num_pairs=64, per_sample=True),
    "rao_blackwell": lambda: sg.rao_blackwell(num_summed=3, num_samples=64, per_sample=True),
    "measure_valued": lambda: sg.measure_valued(num_samples=64, per_sample=True),
    "rebar": lambda: sg.rebar(num_samples=64, per_sample=True, learning_rate=0.0),
    "exact": lambda: sg.exact(),
  }[name]()
  return sg.with_control_variate(base, cv)


ALL = [
  "score_function",
  "score_function+leave_one_out",
  "arm",
  "disarm",
  "rao_blackwell",
  "measure_valued",
  "rebar",
  "exact",
]


@pytest.mark.parametrize("name", ALL)
def test_exact_for_quadratic_cost_on_bernoulli_bits(name):
  """For quadratic f the delta method's h equals f, so the residual f − h is
  0 and every per-sample gradient is the exact ∇E[f] (variance exactly 0)."""
  est = _wrapped(name)
  logits = jnp.asarray(LOGITS, jnp.float32)
  out = jax.jit(lambda k: est.estimate(k, f_quadratic, BERN, logits, est.init(logits)))(
    jax.random.key(0)
  )
  exact = _exact_grad(f_quadratic)
  np.testing.assert_allclose(out.grad, exact, rtol=1e-5, atol=1e-6)
  if out.per_sample is not None:
    np.testing.assert_allclose(
      out.per_sample, np.broadcast_to(exact, out.per_sample.shape), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", ALL)
def test_unbiased_for_every_estimator_family(name):
  """Non-quadratic f: 4000 independent estimates average to the exact gradient."""
  est = _wrapped(name)
  logits = jnp.asarray(LOGITS, jnp.float32)
  keys = jax.random.split(jax.random.key(1), 4000)
  grads = jax.jit(jax.vmap(lambda k: est.estimate(k, f_exp, BERN, logits, est.init(logits)).grad))(
    keys
  )
  if name == "exact":
    np.testing.assert_allclose(grads, np.broadcast_to(_exact_grad(f_exp), grads.shape), rtol=1e-5)
  else:
    assert_unbiased(grads, _exact_grad(f_exp), false_failure_rate=RATE)


def test_score_function_exact_variance_by_enumeration():
  """Per-sample estimator g(b) = (f(b) − h(b)) (b − σ(ℓ)) + ∇E[h]: its exact
  mean (= ∇E[f]) and variance by enumerating the 8 configurations, against
  100 000 rows. The control variate cuts the trace of the variance from
  that of plain REINFORCE (also exact), which the test checks too."""
  h, grad_eh = _delta_pieces(lambda b: jnp.exp(jnp.asarray(A) @ b))
  configs = _configs()
  p = 1 / (1 + np.exp(-LOGITS))
  probs = np.prod(np.where(configs > 0, p, 1 - p), axis=1)
  fs = np.exp(configs @ A)
  with jax.enable_x64(True):
    hs = np.asarray(jax.vmap(h)(jnp.asarray(configs)))
  scores = configs - p
  rows = (fs - hs)[:, None] * scores + grad_eh
  mean = probs @ rows
  np.testing.assert_allclose(mean, _exact_grad(f_exp), rtol=1e-10)
  var = probs @ (rows - mean) ** 2
  plain = fs[:, None] * scores
  var_plain = probs @ (plain - probs @ plain) ** 2
  assert var.sum() < 0.2 * var_plain.sum()  # exact numbers: a >5x reduction

  est = sg.score_function(
    num_samples=100_000, per_sample=True, control_variate=sg.control_variates.delta_method()
  )
  logits = jnp.asarray(LOGITS, jnp.float32)
  out = jax.jit(lambda k: est.estimate(k, f_exp, BERN, logits, est.init(logits)))(jax.random.key(2))
  assert_unbiased(out.per_sample, mean, exact_variance=var, false_failure_rate=RATE)
  assert_variance(out.per_sample, var, false_failure_rate=RATE)


def test_disarm_exact_variance_by_enumerating_pairs():
  """DisARM's rows depend on the antithetic pair (b, b̃). Per coordinate,
  P(1,1) = max(0, 2p − 1), P(1,0) = P(0,1) = min(p, 1 − p),
  P(0,0) = max(0, 1 − 2p), independently across coordinates: enumerate the
  4^3 pairs for the exact mean and variance of the corrected rows."""
  h, grad_eh = _delta_pieces(lambda b: jnp.exp(jnp.asarray(A) @ b))
  p = 1 / (1 + np.exp(-LOGITS))
  joint = {
    (1, 1): np.maximum(0, 2 * p - 1),
    (1, 0): np.minimum(p, 1 - p),
    (0, 1): np.minimum(p, 1 - p),
    (0, 0): np.maximum(0, 1 - 2 * p),
  }
  residual = lambda b: math.exp(A @ b) - float(h(jnp.asarray(b)))
  rows, weights = [], []
  with jax.enable_x64(True):
    for pairs in itertools.product(list(joint), repeat=3):
      b = np.array([q[0] for q in pairs], float)
      bt = np.array([q[1] for q in pairs], float)
      w = np.prod([joint[q][j] for j, q in enumerate(pairs)])
      if w == 0:
        continue
      g = (
        0.5
        * (residual(b) - residual(bt))
        * (1 - 2 * bt)
        * (b != bt)
        / (1 + np.exp(-np.abs(LOGITS)))
      )
      rows.append(g + grad_eh)
      weights.append(w)
  rows, weights = np.array(rows), np.array(weights)
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-12)
  mean = weights @ rows
  np.testing.assert_allclose(mean, _exact_grad(f_exp), rtol=1e-10)
  var = weights @ (rows - mean) ** 2

  est = sg.with_control_variate(
    sg.disarm(num_pairs=100_000, per_sample=True), sg.control_variates.delta_method()
  )
  logits = jnp.asarray(LOGITS, jnp.float32)
  out = jax.jit(lambda k: est.estimate(k, f_exp, BERN, logits, est.init(logits)))(jax.random.key(3))
  assert_unbiased(out.per_sample, mean, exact_variance=var, false_failure_rate=RATE)
  assert_variance(out.per_sample, var, false_failure_rate=RATE)


@pytest.mark.parametrize("coefficient", ["per_leaf", "per_coordinate"])
@pytest.mark.parametrize("name", ["disarm", "measure_valued"])
def test_estimated_coefficients_unbiased_on_discrete_estimators(name, coefficient):
  base = {
    "disarm": lambda: sg.disarm(num_pairs=8, per_sample=True),
    "measure_valued": lambda: sg.measure_valued(num_samples=8, per_sample=True),
  }[name]()
  est = sg.with_control_variate(
    base, sg.control_variates.delta_method(coefficient=coefficient), per_sample=False
  )
  logits = jnp.asarray(LOGITS, jnp.float32)
  keys = jax.random.split(jax.random.key(4), 20_000)
  outs = jax.jit(jax.vmap(lambda k: est.estimate(k, f_exp, BERN, logits, est.init(logits))))(keys)
  assert outs.per_sample is None
  assert_unbiased(outs.grad, _exact_grad(f_exp), false_failure_rate=RATE)


def test_in_lax_scan_without_retracing():
  est = _wrapped("disarm")
  traces = []

  @jax.jit
  def run(logits, keys):
    traces.append(1)

    def step(carry, key):
      logits, state = carry
      out = est.estimate(key, f_exp, BERN, logits, state)
      return (logits - 0.1 * out.grad, out.state), out.value

    return jax.lax.scan(step, (logits, est.init(logits)), keys)

  keys = jax.random.split(jax.random.key(5), 20)
  run(jnp.asarray(LOGITS, jnp.float32), keys)
  run(jnp.asarray(-LOGITS, jnp.float32), keys)
  assert len(traces) == 1


def test_bad_input():
  cv = sg.control_variates.delta_method()
  with pytest.raises(TypeError, match="`estimator` must be a scoregrad.GradientEstimator"):
    sg.with_control_variate(sg.score_function, cv)
  with pytest.raises(TypeError, match=r"Call the factory: control_variate=delta_method\(\)"):
    sg.with_control_variate(sg.disarm(num_pairs=4), sg.control_variates.delta_method)
  logits = jnp.zeros(3)
  # A factory's estimator says how to give rows (its Traits), so the layer
  # asks for them; an estimator that cannot say (here one stripped of its
  # traits by _replace, like a user's own) still gets the error.
  asks = sg.with_control_variate(
    sg.disarm(num_pairs=4), sg.control_variates.delta_method(coefficient="per_leaf")
  )
  out = asks.estimate(jax.random.key(0), f_exp, BERN, logits, asks.init(logits))
  assert out.per_sample is None and np.all(np.isfinite(np.asarray(out.grad)))
  needs_rows = sg.with_control_variate(
    sg.disarm(num_pairs=4)._replace(), sg.control_variates.delta_method(coefficient="per_leaf")
  )
  with pytest.raises(ValueError, match="per_sample=True"):
    needs_rows.estimate(jax.random.key(0), f_exp, BERN, logits, needs_rows.init(logits))
  est = _wrapped("disarm")
  with pytest.raises(TypeError, match=r"ControlVariateState returned by its `init\(params\)`"):
    est.estimate(jax.random.key(0), f_exp, BERN, logits, sg.EmptyState())
  with pytest.raises(ValueError, match="sampling='qmc' couples them"):
    sg.pathwise(
      num_samples=8,
      sampling="qmc",
      control_variate=sg.control_variates.delta_method(coefficient="per_leaf"),
    )
