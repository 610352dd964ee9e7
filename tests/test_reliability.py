"""Never a silent wrong gradient (issue 9): the rules, each enforced in one place.

* Derivative order (scoregrad/_src/base.py: first_order_only,
  gradient_carrier): every estimator's ``jax.grad(.value)`` equals its
  ``.grad``; a second derivative (``jax.hessian(.value)``,
  ``jax.jacfwd``/``jax.jacrev`` of ``.grad``) is unbiased for the estimators
  that are right at every order and raises NotImplementedError naming the
  estimator for the others.
* NaN (base.finish): a NaN cost gives a NaN gradient in every estimator.
* Costs: a non-float cost under an estimator that differentiates f is an error.
* Parameters (dists/_base.py): out-of-support parameters raise at
  construction when concrete and give NaN (values, samples, gradients) under jit.
* State (base.check_state) and keys (validation.check_key).

Statistical assertions use false-failure rate 1e-6 each (Bonferroni over
coordinates); there are 5 of them, so this file fails by chance with
probability below 5e-6 for any key.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased

RATE = 1e-6
NORMAL_PARAMS = {"loc": jnp.array(1.0), "scale": jnp.array(1.0)}
NORMAL = lambda p: sg.dists.Normal(p["loc"], p["scale"])
QUADRATIC = lambda x: (x - 2.0) ** 2  # E = (μ − 2)² + σ²; Hessian 2·I
LOGITS = jnp.array([0.3, -0.6])
BERN = lambda l: sg.dists.Bernoulli(logits=l)
BITS_COST = lambda b: jnp.sum((b - 0.3) ** 2 * jnp.array([1.0, 2.0])) + 0.5 * b[0] * b[1]

CONTINUOUS = {
  "score_function": lambda: sg.score_function(num_samples=8),
  "score_function(per_sample)": lambda: sg.score_function(num_samples=8, per_sample=True),
  "score_function+leave_one_out": lambda: sg.score_function(
    num_samples=8, baseline=sg.baselines.leave_one_out()
  ),
  "score_function+optimal": lambda: sg.score_function(
    num_samples=8, baseline=sg.baselines.optimal()
  ),
  "score_function+delta_method": lambda: sg.score_function(
    num_samples=8, control_variate=sg.control_variates.delta_method()
  ),
  "pathwise": lambda: sg.pathwise(num_samples=8),
  "measure_valued": lambda: sg.measure_valued(num_samples=8),
}
DISCRETE = {
  "arm": lambda: sg.arm(num_samples=4),
  "disarm": lambda: sg.disarm(num_pairs=4),
  "rao_blackwell": lambda: sg.rao_blackwell(num_summed=1, num_samples=4),
  "exact": lambda: sg.exact(),
  "rebar": lambda: sg.rebar(num_samples=4),
  "relax": lambda: sg.relax(num_samples=4),
  "gumbel_softmax": lambda: sg.gumbel_softmax(num_samples=4, temperature=0.5),
  "straight_through": lambda: sg.straight_through(num_samples=4),
  "vimco": lambda: sg.vimco(num_samples=4),
  "double_cv": lambda: sg.double_cv(num_samples=4),
  "rodeo": lambda: sg.rodeo(num_samples=4, hidden_size=8),
  "disarm+delta_method": lambda: sg.with_control_variate(
    sg.disarm(num_pairs=4), sg.control_variates.delta_method()
  ),
}
# Right at every order (DiCE, reparameterization, enumeration).
EVERY_ORDER = {
  "score_function",
  "score_function(per_sample)",
  "score_function+leave_one_out",
  "pathwise",
  "exact",
}


def _problem(name):
  if name in CONTINUOUS:
    return CONTINUOUS[name](), QUADRATIC, NORMAL, NORMAL_PARAMS
  return DISCRETE[name](), BITS_COST, BERN, LOGITS


@pytest.mark.parametrize("name", list(CONTINUOUS) + list(DISCRETE))
def test_grad_of_value_is_the_estimators_gradient(name):
  est, f, dist_fn, params = _problem(name)
  run = lambda p, k: est.estimate(k, f, dist_fn, p, est.init(p))
  key = jax.random.key(3)
  through_value = jax.jit(jax.grad(lambda p: run(p, key).value))(params)
  grad = jax.jit(lambda p: run(p, key).grad)(params)
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), through_value, grad
  )
  # And the value itself is unchanged by what carries the gradient.
  plain = jax.jit(lambda p: run(p, key).value)(params)
  assert np.isfinite(plain)


SECOND_ORDER = {
  "hessian(.value)": lambda run: jax.hessian(lambda p: run(p).value),
  "jacfwd(.grad)": lambda run: jax.jacfwd(lambda p: run(p).grad),
  "jacrev(.grad)": lambda run: jax.jacrev(lambda p: run(p).grad),
}


REFUSED = [
  (name, how)
  for name in sorted((set(CONTINUOUS) | set(DISCRETE)) - EVERY_ORDER)
  for how in SECOND_ORDER
]


@pytest.mark.parametrize("name,how", REFUSED)
def test_second_derivatives_of_first_order_estimators_are_refused(name, how):
  est, f, dist_fn, params = _problem(name)
  run = lambda p: est.estimate(jax.random.key(0), f, dist_fn, p, est.init(p))
  label = {
    "score_function+optimal": "score_function with a per-coordinate baseline",
    "score_function+delta_method": "with_control_variate",
    "disarm+delta_method": "(with_control_variate|disarm)",
  }.get(name, name)
  with pytest.raises(NotImplementedError, match=f"{label}.*first derivatives only"):
    jax.jit(SECOND_ORDER[how](run))(params)


@pytest.mark.parametrize("how", list(SECOND_ORDER))
@pytest.mark.parametrize(
  "name",
  ["score_function", "score_function(per_sample)", "score_function+leave_one_out", "pathwise"],
)
def test_second_derivatives_unbiased_against_the_exact_hessian(name, how):
  """E[(x − 2)²] = (μ − 2)² + σ²: the Hessian in (μ, σ) is 2·I. 4000 keys."""
  est, f, dist_fn, params = _problem(name)
  keys = jax.random.split(jax.random.key(4), 4000)

  def one(k):
    run = lambda p: est.estimate(k, f, dist_fn, p, est.init(p))
    h = SECOND_ORDER[how](run)(params)
    return jnp.array(
      [[h["loc"]["loc"], h["loc"]["scale"]], [h["scale"]["loc"], h["scale"]["scale"]]]
    )

  hessians = jax.jit(jax.vmap(one))(keys)
  assert_unbiased(hessians, 2.0 * np.eye(2), false_failure_rate=RATE)


def test_exact_hessian_matches_enumeration_exactly():
  est = sg.exact()
  with jax.enable_x64(True):
    logits = jnp.asarray(LOGITS, jnp.float64)
    configs = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    expectation = lambda l: jnp.sum(
      jnp.exp(BERN(l).log_prob(configs)) * jax.vmap(BITS_COST)(configs)
    )
    run = lambda l: est.estimate(jax.random.key(0), BITS_COST, BERN, l, est.init(l))
    np.testing.assert_allclose(
      jax.hessian(lambda l: run(l).value)(logits), jax.hessian(expectation)(logits), rtol=1e-10
    )
    np.testing.assert_allclose(
      jax.jacfwd(lambda l: run(l).grad)(logits), jax.hessian(expectation)(logits), rtol=1e-10
    )


# -- NaN rule -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONTINUOUS) + list(DISCRETE))
def test_nan_cost_gives_nan_gradient(name):
  """A cost that is NaN at every sample: value and every gradient leaf NaN."""
  est, f, dist_fn, params = _problem(name)
  nan_f = lambda x: f(x) * jnp.nan
  out = jax.jit(lambda k: est.estimate(k, nan_f, dist_fn, params, est.init(params)))(
    jax.random.key(0)
  )
  assert np.isnan(out.value), name
  for leaf in jax.tree_util.tree_leaves(out.grad):
    assert np.all(np.isnan(leaf)), (name, out.grad)


@pytest.mark.parametrize("name", ["pathwise", "measure_valued", "score_function"])
def test_nan_at_some_samples_poisons_the_gradient(name):
  """log(x) of N(1, 1) samples is NaN below 0: P(no such sample in 256) =
  0.84^256 < 1e-19, for any key. jax.grad of log is a finite 1/x there, so
  without the NaN rule pathwise would return a finite gradient."""
  est = {
    "pathwise": sg.pathwise,
    "measure_valued": sg.measure_valued,
    "score_function": sg.score_function,
  }[name](num_samples=256, per_sample=True)
  out = est.estimate(jax.random.key(1), jnp.log, NORMAL, NORMAL_PARAMS, est.init(NORMAL_PARAMS))
  assert np.isnan(out.value)
  assert all(np.all(np.isnan(l)) for l in jax.tree_util.tree_leaves((out.grad, out.per_sample)))


@pytest.mark.parametrize("cost", [lambda x: x > 0, lambda x: jnp.round(x).astype(jnp.int32)])
@pytest.mark.parametrize("make", [lambda: sg.pathwise(num_samples=4)])
def test_non_float_cost_refused_where_f_is_differentiated(make, cost):
  est = make()
  with pytest.raises(TypeError, match="no derivative in x.*silent zero gradient"):
    est.estimate(jax.random.key(0), cost, NORMAL, NORMAL_PARAMS, est.init(NORMAL_PARAMS))


# -- Parameters out of support ---------------------------------------------------------

INVALID = {
  "Normal(scale=-1)": (lambda: sg.dists.Normal(0.0, -1.0), "`scale` must be positive"),
  "Normal(scale=0)": (lambda: sg.dists.Normal(0.0, 0.0), "`scale` must be positive"),
  "Poisson(-1)": (lambda: sg.dists.Poisson(-1.0), "`rate` must be positive"),
  "Poisson(0)": (lambda: sg.dists.Poisson(0.0), "`rate` must be positive"),
  "Exponential(-1)": (
    lambda: sg.dists.Exponential(jnp.array([1.0, -1.0])),
    "`rate` must be positive",
  ),
  "Gamma(conc=0)": (
    lambda: sg.dists.Gamma(0.0, 1.0),
    "`concentration` and `rate` must be positive",
  ),
  "Laplace(scale=nan)": (lambda: sg.dists.Laplace(0.0, jnp.nan), "`scale` must be positive"),
  "MVN(zero diagonal)": (
    lambda: sg.dists.MultivariateNormalTriL(jnp.zeros(2), jnp.diag(jnp.array([1.0, 0.0]))),
    "diagonal of `scale_tril` must be non-zero",
  ),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_concrete_out_of_support_parameters_raise(name):
  make, message = INVALID[name]
  with pytest.raises(ValueError, match=message):
    make()


@pytest.mark.parametrize(
  "family,bad,est",
  [
    ("Poisson", -1.0, lambda: sg.score_function(num_samples=8)),
    ("Exponential", -1.0, lambda: sg.pathwise(num_samples=8)),
    ("Exponential", -1.0, lambda: sg.measure_valued(num_samples=8)),
    ("Normal", -1.0, lambda: sg.measure_valued(num_samples=8)),
    ("Normal", 0.0, lambda: sg.score_function(num_samples=8)),
  ],
)
def test_traced_out_of_support_parameters_give_nan(family, bad, est):
  est = est()
  dist_fn = {
    "Poisson": lambda r: sg.dists.Poisson(r),
    "Exponential": lambda r: sg.dists.Exponential(r),
    "Normal": lambda s: sg.dists.Normal(0.5, s),
  }[family]
  run = jax.jit(lambda p: est.estimate(jax.random.key(0), jnp.sum, dist_fn, p, est.init(p)))
  out = run(jnp.array([bad, 1.5]))
  assert np.isnan(out.value) and np.all(np.isnan(out.grad))
  ok = run(jnp.array([0.7, 1.5]))
  assert np.isfinite(ok.value) and np.all(np.isfinite(ok.grad))
  x = jax.jit(lambda p: dist_fn(p).sample(jax.random.key(0), (3,)))(jnp.array([bad, 1.5]))
  assert np.all(np.isnan(x))
  assert np.all(np.isnan(jax.jit(lambda p, x: dist_fn(p).log_prob(x))(jnp.array([bad, 1.5]), x)))


# -- State and keys -------------------------------------------------------------------


@pytest.mark.parametrize(
  "make,cls",
  [
    (lambda: sg.score_function(num_samples=4), "ScoreFunctionState"),
    (
      lambda: sg.score_function(num_samples=4, baseline=sg.baselines.moving_average()),
      "ScoreFunctionState",
    ),
    (lambda: sg.rao_blackwell(num_summed=1, num_samples=2), "RaoBlackwellState"),
    (lambda: sg.rebar(num_samples=2), "RebarState"),
    (
      lambda: sg.with_control_variate(sg.disarm(num_pairs=4), sg.control_variates.delta_method()),
      "ControlVariateState",
    ),
  ],
)
@pytest.mark.parametrize("bad", [(), None])
def test_wrong_state_names_init(make, cls, bad):
  est = make()
  dist_fn = BERN if cls != "ScoreFunctionState" else (lambda l: sg.dists.Normal(l, 1.0))
  with pytest.raises(
    TypeError, match=rf"`state` of .* must be the {cls} returned by its `init\(params\)`"
  ):
    est.estimate(
      jax.random.key(0), BITS_COST if cls != "ScoreFunctionState" else jnp.sum, dist_fn, LOGITS, bad
    )


def test_moving_average_state_keeps_its_dtype_and_skips_nan():
  est = sg.score_function(num_samples=4, baseline=sg.baselines.moving_average(decay=0.5))
  dist_fn = lambda l: sg.dists.Normal(l, 1.0)
  state = est.init(LOGITS)

  # The state's floats follow the params' dtype, and the scan carry keeps it
  # (float32 params with x64 on, and bf16 params).
  for x64, dtype in [(True, jnp.float32), (False, jnp.bfloat16), (True, jnp.float64)]:
    with jax.enable_x64(x64):
      params = LOGITS.astype(dtype)

      def step(carry, key, params=params):
        out = est.estimate(key, jnp.sum, dist_fn, params, carry)
        return out.state, out.value

      init = est.init(params)
      assert init.baseline.value.dtype == dtype
      final, _ = jax.lax.scan(step, init, jax.random.split(jax.random.key(0), 5))
      assert final.baseline.value.dtype == dtype

  good = est.estimate(jax.random.key(1), jnp.sum, dist_fn, LOGITS, state).state
  poisoned = est.estimate(jax.random.key(2), lambda x: jnp.sum(x) * jnp.nan, dist_fn, LOGITS, good)
  assert np.isnan(poisoned.value) and np.all(np.isnan(poisoned.grad))
  after = poisoned.state
  np.testing.assert_array_equal(after.baseline.value, good.baseline.value)
  np.testing.assert_array_equal(after.baseline.count, good.baseline.count)


def test_raw_keys_of_the_configured_prng_implementation():
  previous = jax.config.jax_default_prng_impl
  try:
    jax.config.update("jax_default_prng_impl", "rbg")
    key = jax.random.PRNGKey(0)
    assert key.shape == (4,)
    est = sg.score_function(num_samples=4)
    out = est.estimate(key, jnp.sum, lambda l: sg.dists.Normal(l, 1.0), LOGITS, est.init(LOGITS))
    assert np.all(np.isfinite(out.grad))
    from scoregrad.compat import optax_monte_carlo as mc

    jac = mc.score_function_jacobians(
      jnp.sum, [jnp.zeros(2), jnp.zeros(2)], mc.multi_normal, key, 3
    )
    assert jac[0].shape == (3, 2)
    with pytest.raises(TypeError, match=r"uint32\[4\] for the configured PRNG implementation"):
      est.estimate(
        jnp.zeros(2, jnp.uint32),
        jnp.sum,
        lambda l: sg.dists.Normal(l, 1.0),
        LOGITS,
        est.init(LOGITS),
      )
  finally:
    jax.config.update("jax_default_prng_impl", previous)


def test_tracer_error_in_dist_fn_stays_a_tracer_error():
  def dist_fn(p):
    if p > 0:  # Python `if` on a traced value
      return sg.dists.Normal(p, 1.0)
    return sg.dists.Normal(-p, 1.0)

  est = sg.score_function(num_samples=4)
  with pytest.raises(jax.errors.TracerBoolConversionError) as info:
    jax.jit(lambda p: est.estimate(jax.random.key(0), jnp.sum, dist_fn, p, est.init(p)))(1.0)
  assert any("scoregrad: `dist_fn(params)` raised" in n for n in info.value.__notes__)


def test_expectation_pathwise_refuses_non_float_cost():
  with pytest.raises(TypeError, match="no derivative in x"):
    sg.expectation(
      lambda x: x > 0,
      sg.dists.Normal(0.0, 1.0),
      jax.random.key(0),
      num_samples=4,
      estimator="pathwise",
    )


def test_exact_refuses_an_enumeration_that_cannot_fit_before_allocating():
  est = sg.exact(max_configurations=2**40)
  with pytest.raises(ValueError, match=r"would need about .* GiB to enumerate 1,073,741,824"):
    est.estimate(jax.random.key(0), jnp.sum, BERN, jnp.zeros(30), est.init(jnp.zeros(30)))


def test_exact_with_infinite_logits():
  """p = 1, σ(0.3), 0: E[f] and ∇ by hand; the infinite logits' gradients are 0."""
  logits = jnp.array([jnp.inf, 0.3, -jnp.inf])
  f = lambda b: jnp.sum(b * jnp.arange(1.0, 4.0)) + b[0] * b[1]
  out = sg.exact().estimate(jax.random.key(0), f, BERN, logits, ())
  p = 1 / (1 + np.exp(-0.3))
  np.testing.assert_allclose(out.value, 1 + 3 * p, rtol=1e-6)
  np.testing.assert_allclose(out.grad, [0.0, 3 * p * (1 - p), 0.0], rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(
    BERN(logits).log_prob(jnp.array([1.0, 1.0, 0.0])),
    BERN(jnp.array([0.3])).log_prob(jnp.array([1.0])),
  )


def test_opt_in_checkify_error_for_traced_parameters():
  from jax.experimental import checkify

  with sg.dists.checked_parameters():
    est = sg.score_function(num_samples=4)
    step = checkify.checkify(
      jax.jit(
        lambda s: (
          est.estimate(
            jax.random.key(0), jnp.sum, lambda q: sg.dists.Normal(0.5, q), s, est.init(s)
          ).grad
        )
      )
    )
    err, grad = step(jnp.array(-1.0))
    assert np.isnan(grad)
    with pytest.raises(checkify.JaxRuntimeError, match="`scale` must be positive"):
      err.throw()
    err, grad = step(jnp.array(1.0))
    err.throw()  # no error for valid parameters
    assert np.isfinite(grad)
  # Outside the context nothing is recorded (and nothing needs checkify).
  out = jax.jit(lambda s: sg.dists.Normal(0.5, s).log_prob(1.0))(jnp.array(-1.0))
  assert np.isnan(out)


# -- Issue 21, items 10 and 14: impossible categories and infinite costs ------------------

NEG_INF = -jnp.inf


@pytest.mark.parametrize(
  "logits",
  [
    [[NEG_INF, NEG_INF, 1.0, -0.5]],  # two impossible categories at the start
    [[1.0, -0.5, NEG_INF, NEG_INF]],  # ... at the end: η = (−∞) − (−∞) used to be NaN
    [[0.2, NEG_INF, NEG_INF, NEG_INF]],  # only one possible category
  ],
)
@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_categorical_arm_disarm_with_adjacent_impossible_categories(name, logits):
  """Used to give NaN for the −∞ logits; exact gives 0 there, and the rest is unbiased."""
  logits = jnp.asarray(logits)
  dist_fn = lambda l: sg.dists.Categorical(logits=l)
  f = lambda x: jnp.sum(jnp.where(x == 2, 1.5, 0.0) + 0.3 * x)
  exact = sg.exact().estimate(jax.random.key(0), f, dist_fn, logits, ()).grad
  est = {
    "arm": sg.arm(num_samples=4000, per_sample=True),
    "disarm": sg.disarm(num_pairs=2000, per_sample=True),
  }[name]
  out = est.estimate(jax.random.key(1), f, dist_fn, logits, est.init(logits))
  assert bool(jnp.all(jnp.isfinite(out.grad))), out.grad
  impossible = jnp.isneginf(logits)
  assert bool(jnp.all(jnp.where(impossible, out.grad == 0, True))), out.grad
  if name == "arm":  # independent per-sample rows (DisARM's pairs are independent too)
    assert_unbiased(out.per_sample, exact, false_failure_rate=RATE)


def test_categorical_binary_logits_finite_derivative_at_impossible_categories():
  logits = jnp.array([[1.0, -0.5, NEG_INF, NEG_INF]])
  eta = sg.dists.Categorical.binary_logits(logits)
  jac = jax.jacobian(sg.dists.Categorical.binary_logits)(logits)
  assert bool(jnp.all(jnp.isfinite(jac)))
  assert float(jax.nn.sigmoid(eta[0, 1])) == 1.0  # stage 1 stops surely: the rest impossible
  np.testing.assert_allclose(float(eta[0, 0]), 1.0 - (-0.5), rtol=1e-6)


INF_COST_CASES = {
  "categorical": (
    lambda l: sg.dists.Categorical(logits=l),
    jnp.array([NEG_INF, 0.0, 1.0]),
    lambda x: jnp.where(x == 0, jnp.inf, 1.0 * x),
    # E = (1·1 + 2·e)/(1 + e); ∂/∂l = p_k (c_k − E), k = 1, 2
    lambda: _categorical_inf_expected(),
  ),
  "bernoulli": (
    lambda l: sg.dists.Bernoulli(logits=l),
    jnp.array([NEG_INF, 0.5]),
    lambda b: jnp.where(b[0] == 1, jnp.inf, 2.0 * b[1]),
    lambda: (
      2 * float(jax.nn.sigmoid(0.5)),
      np.array([0.0, 2 * float(jax.nn.sigmoid(0.5) * jax.nn.sigmoid(-0.5))]),
    ),
  ),
}


def _categorical_inf_expected():
  p = np.array([0.0, 1.0, np.e]) / (1 + np.e)
  c = np.array([0.0, 1.0, 2.0])
  value = float(np.sum(p * c))
  return value, p * (c - value)


@pytest.mark.parametrize("case", list(INF_COST_CASES))
def test_exact_infinite_cost_at_impossible_configuration(case):
  """0·∞ used to make the value, gradient and Hessian NaN; E[f] is finite."""
  dist_fn, logits, f, expected = INF_COST_CASES[case]
  value, grad = expected()
  est = sg.exact()
  out = est.estimate(jax.random.key(0), f, dist_fn, logits, est.init(logits))
  np.testing.assert_allclose(float(out.value), value, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out.grad), grad, rtol=1e-5, atol=1e-7)
  hessian = jax.hessian(lambda l: est.estimate(jax.random.key(0), f, dist_fn, l, ()).value)(logits)
  assert bool(jnp.all(jnp.isfinite(hessian)))
  # A NaN cost at the impossible configuration still poisons (NaN in, NaN out).
  g = lambda x: jnp.where(x == 0, jnp.nan, 1.0 * x)
  if case == "categorical":
    assert bool(jnp.isnan(est.estimate(jax.random.key(0), g, dist_fn, logits, ()).value))
