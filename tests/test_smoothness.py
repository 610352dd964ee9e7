"""Pathwise needs f without jumps (first order) and in C² (second order); issue 21, items 1-2.

A digital option 1[S_T > K] under the pathwise estimator used to give
delta = vega = 0 exactly, and the Hessian of a pathwise expectation of a call
max(S_T − K, 0) gamma = 0 exactly. Both are now refused at trace time
(scoregrad/_src/smoothness.py, called from base.check_cost), and the
estimators the errors suggest get the exact numbers.

Black-Scholes with S = K = 100, r = 0.05, σ = 0.2, T = 1, log S_T ~
Normal(log S + (r − σ²/2)T, σ√T): the discounted digital's delta is
e^{−rT} φ(d₂)/(S σ √T) = 0.018762, the call's delta N(d₁) = 0.636831 and its
gamma φ(d₁)/(S σ √T) = 0.018762 (the same number: S φ(d₁) = K e^{−rT} φ(d₂)).

Statistical assertions use false-failure rate 1e-6 each; there are 2, so this
file fails by chance with probability below 2e-6 for any key.
"""

import math

import jax
import jax.numpy as jnp
import pytest

import scoregrad as sg
from scoregrad._src import smoothness
from scoregrad.testing import assert_unbiased

RATE = 1e-6
S0, K, R, SIGMA, T = 100.0, 100.0, 0.05, 0.2, 1.0
D1 = (math.log(S0 / K) + (R + SIGMA**2 / 2) * T) / (SIGMA * math.sqrt(T))
D2 = D1 - SIGMA * math.sqrt(T)
PHI = lambda x: math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
DIGITAL_DELTA = math.exp(-R * T) * PHI(D2) / (S0 * SIGMA * math.sqrt(T))
CALL_DELTA = 0.5 * (1 + math.erf(D1 / math.sqrt(2)))
CALL_GAMMA = PHI(D1) / (S0 * SIGMA * math.sqrt(T))
DISCOUNT = math.exp(-R * T)


def log_price(s0):
  return sg.dists.Normal(jnp.log(s0) + (R - SIGMA**2 / 2) * T, SIGMA * math.sqrt(T) + 0 * s0)


def test_black_scholes_numbers():
  """The numbers the issue quotes (hand-checked: 0.018762 twice, N(d₁) = 0.6368)."""
  assert round(DIGITAL_DELTA, 6) == 0.018762
  assert round(CALL_GAMMA, 6) == 0.018762
  assert round(CALL_DELTA, 6) == 0.636831


JUMPS = {
  "where(s > K, 1, 0)": lambda z: DISCOUNT * jnp.where(jnp.exp(z) > K, 1.0, 0.0),
  "(s > K).astype(float)": lambda z: DISCOUNT * (jnp.exp(z) > K).astype(jnp.float32),
  "heaviside": lambda z: DISCOUNT * jnp.heaviside(jnp.exp(z) - K, 0.5),
  "floor": lambda z: jnp.floor(jnp.exp(z) / K),
  "sign": lambda z: jnp.sign(jnp.exp(z) - K),
  "s + step": lambda z: jnp.exp(z) + 10.0 * (jnp.exp(z) > K),
  "jitted step": jax.jit(lambda z: jnp.where(z > 4.6, 1.0, 0.0)),
  "stop_gradient": lambda z: jax.lax.stop_gradient(z) ** 2,
}
KINKED = {
  "max(s - K, 0)": lambda z: jnp.maximum(jnp.exp(z) - K, 0.0),
  "where(s > K, s - K, 0)": lambda z: jnp.where(jnp.exp(z) > K, jnp.exp(z) - K, 0.0),
  "(s > K) * (s - K)": lambda z: (jnp.exp(z) > K) * (jnp.exp(z) - K),
  "abs": lambda z: jnp.abs(jnp.exp(z) - K),
  "relu": lambda z: jax.nn.relu(jnp.exp(z) - K),
}
SMOOTH = {
  "exp": jnp.exp,
  "square": lambda z: z**2,
  "softplus": lambda z: jax.nn.softplus(z - 4.6),
  "sigmoid": lambda z: jax.nn.sigmoid(z - 4.6),
  "logsumexp": lambda z: jax.nn.logsumexp(jnp.stack([z, 2 * z])),
  "linear": lambda z: 3.0 * z,
  "constant": lambda z: jnp.asarray(1.0),
}


def pathwise_grad(f, s0=S0, num_samples=16):
  s0 = jnp.asarray(s0)
  est = sg.pathwise(num_samples=num_samples)
  return est.estimate(jax.random.key(0), f, log_price, s0, est.init(s0)).grad


def expectation_grad(f, s0=S0):
  s0 = jnp.asarray(s0)
  g = lambda s: sg.expectation(
    f, log_price(s), jax.random.key(0), num_samples=16, estimator="pathwise"
  )
  return jax.grad(g)(s0)


@pytest.mark.parametrize("cost", list(JUMPS))
@pytest.mark.parametrize("via", ["pathwise", "expectation", "jit"])
def test_cost_with_a_jump_refused(cost, via):
  """Used to return delta = 0 exactly (pathwise cannot see the jump's term)."""
  f = JUMPS[cost]
  run = {
    "pathwise": lambda: pathwise_grad(f),
    "expectation": lambda: expectation_grad(f),
    "jit": lambda: jax.jit(lambda s: pathwise_grad(f, s))(jnp.asarray(S0)),
  }[via]
  with pytest.raises(
    smoothness.DiscontinuousCostError,
    match=r"The cost `f` .* has a jump in x.*a jump contributes a term.*score_function.*"
    r"measure_valued",
  ):
    run()


def test_jump_error_is_not_applicable_and_names_the_cause():
  with pytest.raises(
    sg.NotApplicableError, match=r"pathwise estimator differentiates it.*through `gt`"
  ):
    pathwise_grad(JUMPS["where(s > K, 1, 0)"])
  with pytest.raises(ValueError, match=r"through `floor`"):
    pathwise_grad(JUMPS["floor"])


@pytest.mark.parametrize("cost", list(KINKED) + list(SMOOTH))
def test_kinked_and_smooth_costs_accepted_at_first_order(cost):
  f = {**KINKED, **SMOOTH}[cost]
  for g in (pathwise_grad(f), expectation_grad(f)):
    assert bool(jnp.isfinite(g))


def test_digital_delta_by_the_suggested_score_function_is_exact():
  """The refusal's alternative: score function, unbiased for 0.018762."""
  est = sg.score_function(num_samples=40_000, per_sample=True)
  s0 = jnp.asarray(S0)
  out = est.estimate(jax.random.key(3), JUMPS["where(s > K, 1, 0)"], log_price, s0, est.init(s0))
  assert_unbiased(out.per_sample, jnp.asarray(DIGITAL_DELTA), false_failure_rate=RATE)


def test_call_delta_pathwise_unbiased():
  """A kink is fine at first order: pathwise delta of the call is N(d₁)."""
  est = sg.pathwise(num_samples=20_000, per_sample=True)
  s0 = jnp.asarray(S0)
  f = lambda z: DISCOUNT * jnp.maximum(jnp.exp(z) - K, 0.0)
  out = est.estimate(jax.random.key(4), f, log_price, s0, est.init(s0))
  assert_unbiased(out.per_sample, jnp.asarray(CALL_DELTA), false_failure_rate=RATE)


SECOND_ORDER = {
  "hessian(expectation)": lambda f: jax.hessian(
    lambda s: sg.expectation(
      f, log_price(s), jax.random.key(0), num_samples=16, estimator="pathwise"
    )
  )(jnp.asarray(S0)),
  "jit(hessian(expectation))": lambda f: jax.jit(
    jax.hessian(
      lambda s: sg.expectation(
        f, log_price(s), jax.random.key(0), num_samples=16, estimator="pathwise"
      )
    )
  )(jnp.asarray(S0)),
  "jacrev(grad(chunked expectation))": lambda f: jax.jacrev(
    jax.grad(
      lambda s: sg.expectation(
        f, log_price(s), jax.random.key(0), num_samples=16, estimator="pathwise", chunk_size=4
      )
    )
  )(jnp.asarray(S0)),
  "jacfwd(pathwise .grad)": lambda f: jax.jacfwd(lambda s: pathwise_grad(f, s))(jnp.asarray(S0)),
  "hessian in the strike": lambda f: jax.hessian(
    lambda k: sg.expectation(
      lambda z: jnp.maximum(jnp.exp(z) - k, 0.0),
      log_price(S0),
      jax.random.key(0),
      num_samples=16,
      estimator="pathwise",
    )
  )(jnp.asarray(K)),
}


@pytest.mark.parametrize("how", list(SECOND_ORDER))
def test_second_derivative_of_kinked_cost_refused(how):
  """Gamma of a call used to be 0 exactly (exact 0.018762)."""
  with pytest.raises(
    NotImplementedError, match=r"differentiable once but not twice.*C².*score_function"
  ):
    SECOND_ORDER[how](KINKED["max(s - K, 0)"])


@pytest.mark.parametrize("cost", ["abs", "relu", "where(s > K, s - K, 0)"])
def test_second_derivative_of_other_kinks_refused(cost):
  with pytest.raises(NotImplementedError, match="not twice"):
    SECOND_ORDER["hessian(expectation)"](KINKED[cost])


def test_second_derivative_of_smooth_cost_still_exact():
  """x ↦ x²: E[S_T²] = S² e^{(2r + σ²)T}, second derivative 2 e^{(2r + σ²)T}, same every sample."""
  f = lambda z: jnp.exp(z) ** 2
  h = SECOND_ORDER["hessian(expectation)"](f)
  exact = 2 * math.exp((2 * R + SIGMA**2) * T)
  # Each sample's second derivative in S is exactly 2 e^{2(z-log S)}; the mean is random, so
  # only check it is finite and of the right size (unbiasedness of pathwise Hessians is
  # tested in tests/test_reliability.py).
  assert bool(jnp.isfinite(h)) and 0.2 * exact < float(h) < 5 * exact


@pytest.mark.parametrize(
  "cost,expected",
  [
    ("jnp.interp", (None, "gather")),
    ("x[argmax x]", (None, "dynamic_slice")),
    ("asset or nothing", ("select_n", "gt")),
    ("asset or nothing, product", ("mul", "gt")),
    ("barrier, product", ("mul", "eq")),
    ("barrier, where", ("select_n", "eq")),
    ("kink, where", (None, "gt")),
    ("kink, product", (None, "gt")),
    ("put kink, where", (None, "lt")),
    ("relu, where", (None, "gt")),
    ("leaky_relu (both branches depend on x)", (None, "ge")),
    ("where(s > K, s, 1) (a non-zero branch: not checked)", (None, "gt")),
  ],
)
def test_what_the_walk_decides(cost, expected):
  """The documented edges: lookups are continuous; a value gated by a comparison of x
  (a select against 0, an indicator product) is continuous only when it is structurally
  l − r for the comparison of l and r (0 on both sides of the threshold)."""
  x = jax.ShapeDtypeStruct((3,), jnp.float32)
  k, h = 1.0, 2.0
  f = {
    "jnp.interp": lambda s: jnp.sum(jnp.interp(s, jnp.arange(3.0), jnp.arange(3.0) ** 2)),
    "x[argmax x]": lambda s: s[jnp.argmax(s)],
    "asset or nothing": lambda s: jnp.sum(jnp.where(s > k, s, 0.0)),
    "asset or nothing, product": lambda s: jnp.sum((s > k) * s),
    "barrier, product": lambda s: jnp.maximum(s[-1] - k, 0.0) * (jnp.max(s) < h),
    "barrier, where": lambda s: jnp.where(jnp.max(s) < h, jnp.maximum(s[-1] - k, 0.0), 0.0),
    "kink, where": lambda s: jnp.sum(jnp.where(s > k, s - k, 0.0)),
    "kink, product": lambda s: jnp.sum((s > k) * (s - k)),
    "put kink, where": lambda s: jnp.sum(jnp.where(s < k, k - s, 0.0)),
    "relu, where": lambda s: jnp.sum(jnp.where(s > 0, s, 0.0)),
    "leaky_relu (both branches depend on x)": lambda s: jnp.sum(jax.nn.leaky_relu(s)),
    "where(s > K, s, 1) (a non-zero branch: not checked)": lambda s: jnp.sum(
      jnp.where(s > k, s, 1.0)
    ),
  }[cost]
  assert tuple(smoothness.analyse(f, x)) == expected


def test_pathwise_refuses_the_barrier_payoff():
  """An up-and-out call on a 4-step path: the knock-out is a jump (delta was silently biased:
  +0.215 against the exact -0.0193 on the greeks benchmark's 52-step barrier)."""
  k, h = 1.0, 1.3

  def payoff(increments):
    path = jnp.cumprod(jnp.exp(increments))
    return jnp.maximum(path[-1] - k, 0.0) * (jnp.max(path) < h)

  est = sg.pathwise(num_samples=8)
  dist_fn = lambda p: sg.dists.Normal(p * jnp.zeros(4), 0.1 * jnp.ones(4))
  with pytest.raises(sg.NotApplicableError, match="jump"):
    est.estimate(jax.random.key(0), payoff, dist_fn, jnp.array(0.01), est.init(jnp.array(0.01)))
  # The score function, which never differentiates f, takes it.
  sf = sg.score_function(num_samples=8)
  out = sf.estimate(jax.random.key(0), payoff, dist_fn, jnp.array(0.01), sf.init(jnp.array(0.01)))
  assert bool(jnp.isfinite(out.grad))
