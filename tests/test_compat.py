"""scoregrad.compat.optax_monte_carlo against optax 0.1.8's documented behaviour.

optax 0.1.8's per-sample jacobians are ``jax.jacfwd`` of a per-sample
surrogate; the reference functions below are small hand-written equivalents
of those two formulations (score function and pathwise), used to check that
the compat functions return the same numbers with the same ``rng``. The
other functions are checked against their documented semantics: exact
gradients (closed forms, enumeration), exact variances (quadrature), the
moving-average update written out, and zero variance of the delta method on
quadratics. Statistical assertions: false-failure rate 1e-6 each, fewer than
20 in the file.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from test_measure_valued import _normal_mvd_moments

import scoregrad as sg
from scoregrad.compat import optax_monte_carlo as mc
from scoregrad.testing import assert_unbiased, assert_variance

RATE = 1e-6
MEAN = np.array([0.5, -1.0, 2.0])
LOG_SCALE = np.array([0.1, -0.2, 0.3])
PARAMS = [jnp.asarray(MEAN, jnp.float32), jnp.asarray(LOG_SCALE, jnp.float32)]
SQUARES = lambda x: jnp.sum(x**2)
# E Σx² = Σ μ² + e^{2 s}: ∂μ = 2μ, ∂s = 2 e^{2s}.
EXACT_SQUARES = [2 * MEAN, 2 * np.exp(2 * LOG_SCALE)]


class HandWrittenMultiNormal:
  """The interface of optax 0.1.8's MultiNormalDiagFromLogScale, written here."""

  def __init__(self, loc, log_scale):
    self._loc, self._log_scale = loc, log_scale
    self._shape = jnp.broadcast_shapes(jnp.shape(loc), jnp.shape(log_scale))

  def sample(self, shape, seed):
    return (
      jax.random.normal(seed, tuple(shape) + self._shape) * jnp.exp(self._log_scale) + self._loc
    )

  def log_prob(self, x):
    lp = jax.scipy.stats.norm.logpdf(x, self._loc, jnp.exp(self._log_scale))
    return jnp.sum(lp, axis=tuple(range(-len(self._shape), 0)))

  @property
  def log_scale(self):
    return self._log_scale

  @property
  def params(self):
    return [self._loc, self._log_scale]


def _optax_028_multi_normal():
  """optax 0.2.x still ships the builder (private), with sample(shape, key)."""
  from optax._src import utils

  return utils.multi_normal


BUILDERS = {
  "compat": mc.multi_normal,
  "hand_written": HandWrittenMultiNormal,
  "optax_0.2": _optax_028_multi_normal(),
}


def _sample(dist, n, rng):
  return dist.sample((n,), rng)


def reference_score_function_jacobians(function, params, dist_builder, rng, num_samples):
  def surrogate(params):
    dist = dist_builder(*params)
    samples = jax.lax.stop_gradient(_sample(dist, num_samples, rng))
    return jax.vmap(lambda x: function(x) * dist.log_prob(x))(samples)

  return jax.jacfwd(surrogate)(params)


def reference_pathwise_jacobians(function, params, dist_builder, rng, num_samples):
  return jax.jacfwd(lambda p: jax.vmap(function)(_sample(dist_builder(*p), num_samples, rng)))(
    params
  )


@pytest.mark.parametrize("builder", sorted(BUILDERS))
@pytest.mark.parametrize("which", ["score_function", "pathwise"])
def test_same_numbers_as_jacfwd_formulation(which, builder):
  ours = {"score_function": mc.score_function_jacobians, "pathwise": mc.pathwise_jacobians}[which]
  ref = {
    "score_function": reference_score_function_jacobians,
    "pathwise": reference_pathwise_jacobians,
  }[which]
  f = lambda x: jnp.sum(jnp.cos(x) * jnp.arange(1.0, 4.0)) + x[0] * x[2]
  rng = jax.random.PRNGKey(3)
  for params in [list(PARAMS), tuple(PARAMS)]:
    got = ours(f, params, BUILDERS[builder], rng, 64)
    want = ref(f, params, BUILDERS[builder], rng, 64)
    assert type(got) is type(params) and len(got) == 2
    for g, w in zip(got, want):
      assert g.shape == (64, 3)
      np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize(
  "which", ["score_function", "pathwise", "measure_valued", "measure_valued_uncoupled"]
)
def test_unbiased_against_exact_gradient(which):
  fn = {
    "score_function": mc.score_function_jacobians,
    "pathwise": mc.pathwise_jacobians,
    "measure_valued": mc.measure_valued_jacobians,
    "measure_valued_uncoupled": lambda *a: mc.measure_valued_jacobians(*a, coupling=False),
  }[which]
  jac = jax.jit(fn, static_argnums=(0, 2, 4))(
    SQUARES, PARAMS, mc.multi_normal, jax.random.PRNGKey(0), 100_000
  )
  assert isinstance(jac, list) and [j.shape for j in jac] == [(100_000, 3)] * 2
  assert_unbiased(jac, EXACT_SQUARES, false_failure_rate=RATE)


@pytest.mark.parametrize("coupling", [True, False])
def test_measure_valued_exact_variance(coupling):
  """1-D f = cos: the Weibull/Maxwell moments of tests/test_measure_valued.py;
  the log-scale jacobian is σ × the scale jacobian, so its variance is σ²×."""
  mu, log_sigma = 0.7, math.log(1.3)
  sigma = math.exp(log_sigma)
  mean, var = _normal_mvd_moments(np.cos, mu, sigma, coupling)
  exact = [np.float64(mean["loc"]), np.float64(sigma * mean["scale"])]
  exact_var = [np.float64(var["loc"]), np.float64(sigma**2 * var["scale"])]
  jac = mc.measure_valued_jacobians(
    jnp.cos,
    [jnp.asarray(mu), jnp.asarray(log_sigma)],
    mc.multi_normal,
    jax.random.PRNGKey(1),
    100_000,
    coupling,
  )
  assert_unbiased(jac, exact, false_failure_rate=RATE, exact_variance=exact_var)
  assert_variance(jac, exact_var, false_failure_rate=RATE)


def test_measure_valued_with_scoregrad_distribution_and_chain_rule():
  """Builder (a, b) -> Bernoulli(logits = a + 2b): the jacobians are chained
  through the builder, ∂a = ∂logits, ∂b = 2 ∂logits; exact by enumeration."""
  a, b = np.array([0.3, -0.7]), np.array([0.1, 0.2])
  logits = a + 2 * b
  p = special.expit(logits)
  f_np = lambda x: (x[0] - 2 * x[1] + 0.3) ** 2
  grad = np.zeros(2)
  for x0 in (0.0, 1.0):
    for x1 in (0.0, 1.0):
      x = np.array([x0, x1])
      grad += np.prod(np.where(x == 1, p, 1 - p)) * f_np(x) * (x - p)
  jac = mc.measure_valued_jacobians(
    lambda x: (x[0] - 2 * x[1] + 0.3) ** 2,
    (jnp.asarray(a), jnp.asarray(b)),
    lambda a, b: sg.dists.Bernoulli(logits=a + 2 * b),
    jax.random.PRNGKey(2),
    50_000,
  )
  assert_unbiased(jac, [grad, 2 * grad], false_failure_rate=RATE)


def test_scoregrad_and_numpyro_distributions_accepted():
  numpyro_dists = pytest.importorskip("numpyro.distributions")
  builders = [
    lambda m, s: sg.dists.Normal(m, jnp.exp(s)),
    lambda m, s: numpyro_dists.Normal(m, jnp.exp(s)).to_event(1),
  ]
  for builder in builders:
    for fn in (mc.score_function_jacobians, mc.pathwise_jacobians):
      jac = jax.jit(fn, static_argnums=(0, 2, 4))(
        SQUARES, tuple(PARAMS), builder, jax.random.PRNGKey(4), 50_000
      )
      assert isinstance(jac, tuple)
      assert_unbiased(jac, EXACT_SQUARES, false_failure_rate=RATE)


# -- control variates -------------------------------------------------------------------


def test_control_delta_method_semantics():
  """Quadratic f: h = f at any x and E[h] = E[f] exactly. f = Σ cos x:
  E[h] = Σ cos μ (1 − σ²/2), and the mean of h over samples matches it."""
  A = jnp.array([[1.0, 0.2, 0.0], [0.2, 2.0, 0.1], [0.0, 0.1, 0.5]])
  quad = lambda x: x @ A @ x + jnp.sum(x)
  h, expected, update = mc.control_delta_method(quad)
  xs = jax.random.normal(jax.random.key(0), (5, 3)) * 3
  np.testing.assert_allclose(
    jax.vmap(lambda x: h(PARAMS, x, None))(xs), jax.vmap(quad)(xs), rtol=1e-5
  )
  sigma2 = np.exp(2 * LOG_SCALE)
  exact_quad = MEAN @ np.asarray(A) @ MEAN + np.sum(np.diag(np.asarray(A)) * sigma2) + MEAN.sum()
  np.testing.assert_allclose(expected(PARAMS, None), exact_quad, rtol=1e-5)
  assert update(PARAMS, xs, "state") == "state"

  cos = lambda x: jnp.sum(jnp.cos(x))
  h, expected, _ = mc.control_delta_method(cos)
  np.testing.assert_allclose(
    jax.jit(expected)(PARAMS, None), np.sum(np.cos(MEAN) * (1 - sigma2 / 2)), rtol=1e-5
  )
  samples = mc.multi_normal(*PARAMS).sample((100_000,), jax.random.PRNGKey(5))
  values = jax.jit(jax.vmap(lambda x: h(PARAMS, x, None)))(samples)
  assert_unbiased(values, np.float64(expected(PARAMS, None)), false_failure_rate=RATE)


@pytest.mark.parametrize("heuristic", [True, False])
@pytest.mark.parametrize("zero_debias", [True, False])
def test_moving_avg_baseline_update(heuristic, zero_debias):
  """The documented update, written out for three steps."""
  f = lambda x: jnp.sum(x)
  h, expected, update = mc.moving_avg_baseline(
    f, decay=0.9, zero_debias=zero_debias, use_decay_early_training_heuristic=heuristic
  )
  state = (jnp.asarray(0.0), 0)
  value = 0.0
  for i in range(3):
    xs = jax.random.normal(jax.random.key(i), (10, 3)) + i
    d = min(0.9, (1 + i) / (10 + i)) if heuristic else 0.9
    value = d * value + (1 - d) * float(np.mean(np.sum(np.asarray(xs), 1)))
    if zero_debias:
      value /= 1 - d ** (i + 1)
    state = update(PARAMS, xs, state)
    np.testing.assert_allclose(state[0], value, rtol=1e-5)
    assert int(state[1]) == i + 1
    assert h(PARAMS, xs[0], state) == state[0] and expected(PARAMS, state) == state[0]


@pytest.mark.parametrize("estimator", ["score_function", "pathwise", "measure_valued"])
def test_control_variates_jacobians_delta_zero_variance_on_quadratic(estimator):
  """optax documents the delta method as exact for quadratics: every
  per-sample jacobian equals the exact gradient."""
  grad_estimator = {
    "score_function": mc.score_function_jacobians,
    "pathwise": mc.pathwise_jacobians,
    "measure_valued": mc.measure_valued_jacobians,
  }[estimator]
  jac, state = jax.jit(
    lambda p, k: mc.control_variates_jacobians(
      SQUARES, mc.control_delta_method, grad_estimator, p, mc.multi_normal, k, 50
    )
  )(PARAMS, jax.random.PRNGKey(6))
  assert isinstance(jac, list) and state is None
  for j, e in zip(jac, EXACT_SQUARES):
    np.testing.assert_allclose(j, np.broadcast_to(e, (50, 3)), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("case", ["moving_avg", "estimated_coefficients", "optax_state_order"])
def test_control_variates_jacobians_unbiased(case):
  """f = Σ cos x: E = Σ cos μ e^{−σ²/2}; ∂μ = −sin μ e^{−σ²/2}, ∂s = −σ² cos μ e^{−σ²/2}.
  Over 20000 independent keys (n = 4 samples each): the score function with
  the moving-average baseline at any state, and with the delta method with
  estimated coefficients (from new samples), average to the exact gradient.

  ``use_updated_state=True`` (optax 0.1.8's order) at the first step with the
  early-training heuristic has decay 0.1 and zero-debiasing makes the
  baseline exactly the mean cost of the current samples, so the jacobians
  average (1/n) Σ (f_i − f̄) ∇ log p_i, whose expectation is (n − 1)/n times
  the gradient: checked as documented."""
  f = lambda x: jnp.sum(jnp.cos(x))
  s2 = np.exp(2 * LOG_SCALE)
  exact = [-np.sin(MEAN) * np.exp(-s2 / 2), -s2 * np.cos(MEAN) * np.exp(-s2 / 2)]
  if case == "estimated_coefficients":
    run = lambda k: mc.control_variates_jacobians(
      f,
      mc.control_delta_method,
      mc.score_function_jacobians,
      PARAMS,
      mc.multi_normal,
      k,
      4,
      estimate_cv_coeffs=True,
      estimate_cv_coeffs_num_samples=10,
    )[0]
  elif case == "moving_avg":
    run = lambda k: mc.control_variates_jacobians(
      f,
      mc.moving_avg_baseline,
      mc.score_function_jacobians,
      PARAMS,
      mc.multi_normal,
      k,
      4,
      control_variate_state=(jnp.asarray(1.5), 3),
    )[0]
  else:
    run = lambda k: mc.control_variates_jacobians(
      f,
      mc.moving_avg_baseline,
      mc.score_function_jacobians,
      PARAMS,
      mc.multi_normal,
      k,
      4,
      control_variate_state=(jnp.asarray(0.0), 0),
      use_updated_state=True,
    )[0]
    exact = [0.75 * e for e in exact]
  keys = jax.random.split(jax.random.PRNGKey(7), 20_000)
  grads = jax.jit(jax.vmap(lambda k: [j.mean(0) for j in run(k)]))(keys)
  assert_unbiased(grads, exact, false_failure_rate=RATE)


def test_control_variates_jacobians_returns_updated_state():
  f = lambda x: jnp.sum(x)
  rng = jax.random.PRNGKey(9)
  _, state = mc.control_variates_jacobians(
    f,
    mc.moving_avg_baseline,
    mc.score_function_jacobians,
    PARAMS,
    mc.multi_normal,
    rng,
    8,
    control_variate_state=(jnp.asarray(0.0), 0),
  )
  samples = mc.multi_normal(*PARAMS).sample((8,), rng)
  np.testing.assert_allclose(state[0], jnp.mean(jax.vmap(f)(samples)), rtol=1e-5)
  assert int(state[1]) == 1


def test_estimate_control_variate_coefficients_formula():
  """Σ Cov / (Σ Var + eps) of the jacobians on samples from split(rng)[0]."""
  f = lambda x: jnp.sum(jnp.cos(x)) + jnp.sum(x**3)
  rng = jax.random.PRNGKey(8)
  coeffs = jax.jit(
    lambda p, k: mc.estimate_control_variate_coefficients(
      f, mc.control_delta_method, mc.pathwise_jacobians, p, mc.multi_normal, k, 30
    )
  )(PARAMS, rng)
  cv_rng = jax.random.split(rng)[0]
  h, _, _ = mc.control_delta_method(f)
  jf, jh = jax.jit(
    lambda p, k: (
      mc.pathwise_jacobians(f, p, mc.multi_normal, k, 30),
      mc.pathwise_jacobians(lambda x: h(p, x, None), p, mc.multi_normal, k, 30),
    )
  )(PARAMS, cv_rng)
  assert isinstance(coeffs, list) and len(coeffs) == 2
  for c, a, b in zip(coeffs, jf, jh):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cov = np.mean((a - a.mean(0)) * (b - b.mean(0)), 0).sum()
    np.testing.assert_allclose(c, cov / (np.var(b, 0).sum() + 1e-3), rtol=1e-4)


def test_never_uses_jacfwd(monkeypatch):
  def forbidden(*args, **kwargs):
    raise AssertionError("jax.jacfwd called")

  monkeypatch.setattr(jax, "jacfwd", forbidden)
  rng = jax.random.PRNGKey(0)
  for fn in (mc.score_function_jacobians, mc.pathwise_jacobians, mc.measure_valued_jacobians):
    jax.make_jaxpr(lambda p, k: fn(SQUARES, p, mc.multi_normal, k, 4))(PARAMS, rng)
  jax.make_jaxpr(
    lambda p, k: mc.control_variates_jacobians(
      SQUARES,
      mc.control_delta_method,
      mc.pathwise_jacobians,
      p,
      mc.multi_normal,
      k,
      4,
      estimate_cv_coeffs=True,
    )
  )(PARAMS, rng)


# -- bad input --------------------------------------------------------------------------


def test_builder_without_sample_or_log_prob():
  class NoLogProb:
    def __init__(self, *params):
      pass

    def sample(self, shape, seed):
      return jnp.zeros(tuple(shape) + (3,))

  with pytest.raises(
    TypeError, match=r"dist_builder\(\*params\)` returned NoLogProb, which lacks log_prob"
  ):
    mc.score_function_jacobians(SQUARES, PARAMS, NoLogProb, jax.random.PRNGKey(0), 4)
  with pytest.raises(TypeError, match="lacks sample and log_prob"):
    mc.pathwise_jacobians(SQUARES, PARAMS, lambda *p: object(), jax.random.PRNGKey(0), 4)
  with pytest.raises(TypeError, match="dist_builder` must be a callable"):
    mc.pathwise_jacobians(SQUARES, PARAMS, "multi_normal", jax.random.PRNGKey(0), 4)


def test_measure_valued_unsupported_lists_supported():
  mvn = lambda m, s: sg.dists.MultivariateNormalTriL(m, jnp.diag(jnp.exp(s)))
  with pytest.raises(
    ValueError,
    match=r"MultivariateNormalTriL\. Supported: optax's multi_normal"
    r".*Bernoulli.*Categorical.*Poisson.*Exponential.*Gamma",
  ):
    mc.measure_valued_jacobians(SQUARES, PARAMS, mvn, jax.random.PRNGKey(0), 4)


def test_other_bad_input():
  rng = jax.random.PRNGKey(0)
  bern = lambda a, b: sg.dists.Bernoulli(logits=a + b)
  with pytest.raises(
    ValueError, match=r"control_delta_method.*diagonal Gaussians.*returned Bernoulli"
  ):
    mc.control_variates_jacobians(
      SQUARES, mc.control_delta_method, mc.score_function_jacobians, PARAMS, bern, rng, 4
    )
  with pytest.raises(ValueError, match="reparameterized.*Bernoulli"):
    mc.pathwise_jacobians(SQUARES, PARAMS, bern, rng, 4)
  with pytest.raises(TypeError, match="list or tuple of arrays"):
    mc.score_function_jacobians(SQUARES, {"mean": PARAMS[0]}, mc.multi_normal, rng, 4)
  with pytest.raises(TypeError, match="Pass control_delta_method, not control_delta_method"):
    mc.control_variates_jacobians(
      SQUARES,
      lambda f: mc.control_delta_method,
      mc.pathwise_jacobians,
      PARAMS,
      mc.multi_normal,
      rng,
      4,
    )
  with pytest.raises(ValueError, match="num_samples"):
    mc.score_function_jacobians(SQUARES, PARAMS, mc.multi_normal, rng, 0)
  with pytest.raises(TypeError, match="rng"):
    mc.score_function_jacobians(SQUARES, PARAMS, mc.multi_normal, 0, 4)


def test_measure_valued_builder_neither_multi_normal_nor_weak_derivative():
  """optax 0.1.8's testRaisesErrorForNonGaussian: ValueError, jitted or not."""

  class TestDist:  # optax's own test builder: takes one argument, has no log_prob
    def __init__(self, params):
      self._params = params

    def sample(self, n):
      return np.zeros(n)

  rng = jax.random.PRNGKey(1)
  jitted = jax.jit(mc.measure_valued_jacobians, static_argnums=(0, 2, 4, 5))
  for fn in (mc.measure_valued_jacobians, jitted):
    for coupling in (True, False):
      with pytest.raises(
        ValueError,
        match=r"`dist_builder`.*got dist_builder=TestDist, and "
        r"dist_builder\(\*params\) raised TypeError: .*takes 2 positional.*"
        r"Supported: optax's multi_normal.*Normal.*Bernoulli.*score_function_jacobians",
      ):
        fn(SQUARES, PARAMS, TestDist, rng, 8, coupling)
  with pytest.raises(
    ValueError,
    match=r"got dist_builder=<lambda>, and dist_builder\(\*params\) "
    r"returned object\. Supported: optax's multi_normal",
  ):
    mc.measure_valued_jacobians(SQUARES, PARAMS, lambda *p: object(), rng, 8)
  with pytest.raises(TypeError, match="`dist_builder` must be a callable"):  # not a builder at all
    mc.measure_valued_jacobians(SQUARES, PARAMS, "multi_normal", rng, 8)


@pytest.mark.parametrize("estimator", ["score_function", "pathwise", "measure_valued"])
def test_wrong_shapes_name_the_argument(estimator):
  fn = getattr(mc, f"{estimator}_jacobians")
  rng = jax.random.PRNGKey(0)
  with pytest.raises(
    ValueError,
    match=r"`params` = \[loc, log_scale\].*got loc of shape \(3,\) "
    r"and log_scale of shape \(2,\)\. Give log_scale the shape of loc",
  ):
    fn(SQUARES, [jnp.zeros(3), jnp.zeros(2)], mc.multi_normal, rng, 4)
  with pytest.raises(
    TypeError,
    match=r"got 1 \(shapes \[\(3,\)\]\), e\.g\. multi_normal takes "
    r"params = \[mean, log_scale\]",
  ):
    fn(SQUARES, [jnp.zeros(3)], mc.multi_normal, rng, 4)
  with pytest.raises(
    ValueError,
    match=r"must return a scalar for one sample.*returned \(3,\).*"
    r"jnp\.sum",
  ):
    fn(lambda x: x, PARAMS, mc.multi_normal, rng, 4)
  with pytest.raises(ValueError, match=r"single PRNG key.*shape \(2, 2\)"):
    fn(SQUARES, PARAMS, mc.multi_normal, jax.random.split(rng), 4)
  with pytest.raises(
    ValueError,
    match=r"`control_variate_state` of moving_avg_baseline must be a "
    r"pair of scalars.*value of shape \(3,\).*\(jnp\.array\(0\.\), 0\)",
  ):
    mc.control_variates_jacobians(
      SQUARES, mc.moving_avg_baseline, fn, PARAMS, mc.multi_normal, rng, 4, (jnp.zeros(3), 0)
    )


def test_swapped_arguments_are_named():
  rng = jax.random.PRNGKey(0)
  order = r"\(function, params, dist_builder, rng, num_samples\)"
  with pytest.raises(
    TypeError, match=r"`rng` and `num_samples` look swapped: got rng=4 .*" + order
  ):
    mc.score_function_jacobians(SQUARES, PARAMS, mc.multi_normal, 4, rng)
  with pytest.raises(TypeError, match=r"`function` and `params` look swapped.*" + order):
    mc.pathwise_jacobians(PARAMS, SQUARES, mc.multi_normal, rng, 4)
  with pytest.raises(
    TypeError,
    match=r"got <function multi_normal.*`params` and `dist_builder` "
    r"look swapped.*" + order,
  ):
    mc.measure_valued_jacobians(SQUARES, mc.multi_normal, PARAMS, rng, 4)
  with pytest.raises(
    TypeError,
    match=r"look swapped: got control_variate_from_function="
    r"score_function_jacobians and grad_estimator=control_delta_method",
  ):
    mc.control_variates_jacobians(
      SQUARES, mc.score_function_jacobians, mc.control_delta_method, PARAMS, mc.multi_normal, rng, 4
    )
  with pytest.raises(
    TypeError,
    match=r"`grad_estimator` must be a gradient estimator.*got "
    r"grad_estimator=moving_avg_baseline",
  ):
    mc.estimate_control_variate_coefficients(
      SQUARES, mc.control_delta_method, mc.moving_avg_baseline, PARAMS, mc.multi_normal, rng, 4
    )
  with pytest.raises(
    TypeError,
    match=r"`params` and `dist_builder` look swapped.*"
    r"control_variate_from_function, grad_estimator",
  ):
    mc.control_variates_jacobians(
      SQUARES, mc.control_delta_method, mc.pathwise_jacobians, mc.multi_normal, PARAMS, rng, 4
    )
  with pytest.raises(
    TypeError,
    match=r"`estimate_cv_coeffs` must be a bool; got "
    r"estimate_cv_coeffs=\(0\.0, 0\)",
  ):  # state and estimate_cv_coeffs shifted
    mc.control_variates_jacobians(
      SQUARES,
      mc.moving_avg_baseline,
      mc.pathwise_jacobians,
      PARAMS,
      mc.multi_normal,
      rng,
      4,
      None,
      (0.0, 0),
    )


def test_control_variate_state_must_be_a_pair():
  rng = jax.random.PRNGKey(0)
  msg = (
    r"`control_variate_state` of moving_avg_baseline .* must be a pair \(value, step\).*"
    r"got control_variate_state={}\. Start from control_variate_state=\(jnp\.array\(0\.\), 0\)"
  )
  for state in (3.0, None):
    with pytest.raises(TypeError, match=msg.format(re.escape(repr(state)))):
      mc.control_variates_jacobians(
        SQUARES,
        mc.moving_avg_baseline,
        mc.score_function_jacobians,
        PARAMS,
        mc.multi_normal,
        rng,
        4,
        state,
      )
  with pytest.raises(TypeError, match=msg.format(r"3\.0")):
    mc.estimate_control_variate_coefficients(
      SQUARES,
      mc.moving_avg_baseline,
      mc.score_function_jacobians,
      PARAMS,
      mc.multi_normal,
      rng,
      4,
      3.0,
    )
  _, expected, update = mc.moving_avg_baseline(SQUARES)
  with pytest.raises(TypeError, match=msg.format(r"3\.0")):
    update(PARAMS, jnp.zeros((4, 3)), 3.0)
  with pytest.raises(TypeError, match=msg.format(r"3\.0")):
    expected(PARAMS, 3.0)
  # A stateless control variate ignores the state, as in optax.
  jac, state = mc.control_variates_jacobians(
    SQUARES, mc.control_delta_method, mc.pathwise_jacobians, PARAMS, mc.multi_normal, rng, 4, 3.0
  )
  assert state == 3.0 and [j.shape for j in jac] == [(4, 3), (4, 3)]


@pytest.mark.parametrize("estimator", ["score_function", "pathwise", "measure_valued"])
def test_numpy_function_as_cost_under_jit(estimator):
  """optax's tests pass `np.sum` (no weak reference, so jax.jit(np.sum) fails,
  and on jax 0.10.2 a second attempt segfaults); it is only ever called."""
  fn = jax.jit(getattr(mc, f"{estimator}_jacobians"), static_argnums=(0, 2, 4))
  rng = jax.random.PRNGKey(3)
  with_numpy = fn(np.sum, PARAMS, mc.multi_normal, rng, 16)
  with_jnp = fn(jnp.sum, PARAMS, mc.multi_normal, rng, 16)
  for a, b in zip(with_numpy, with_jnp):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
