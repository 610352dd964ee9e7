"""Specification of scoregrad.control_variates and the control_variate= keyword.

Statistical assertions use scoregrad.testing with false-failure rate 1e-6
each (Bonferroni over coordinates); the file has fewer than 30 of them, so it
fails by chance with probability below 3e-5 for any seed. Exact gradients are
closed forms; exact variances come from one-dimensional quadrature (scipy),
derived next to each test.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import scoregrad as sg
from scoregrad import control_variates as cvs
from scoregrad.testing import assert_unbiased, assert_variance

RATE = 1e-6
MU, SIGMA = 0.6, 1.3
NORMAL = lambda p: sg.dists.Normal(p["loc"], p["scale"])


def _params(dtype=jnp.float32):
  return {"loc": jnp.asarray(MU, dtype), "scale": jnp.asarray(SIGMA, dtype)}


def _run(est, f, dist_fn, params, key=0):
  return jax.jit(lambda k, p: est.estimate(k, f, dist_fn, p, est.init(p)))(
    jax.random.key(key), params
  )


def _factories():
  return {
    "score_function": lambda **kw: sg.score_function(**kw),
    "score_function+leave_one_out": lambda **kw: sg.score_function(
      baseline=sg.baselines.leave_one_out(), **kw
    ),
    "score_function+optimal": lambda **kw: sg.score_function(baseline=sg.baselines.optimal(), **kw),
    "pathwise": lambda **kw: sg.pathwise(**kw),
    "pathwise+qmc": lambda **kw: sg.pathwise(sampling="qmc", **kw),
    "measure_valued": lambda **kw: sg.measure_valued(**kw),
  }


# -- the delta method is exact for quadratic costs ---------------------------------


@pytest.mark.parametrize(
  "name, coefficient",
  [(name, 1.0) for name in sorted(_factories())]
  + [
    (name, c)
    for c in ("per_leaf", "per_coordinate")
    for name in ("score_function+leave_one_out", "pathwise", "measure_valued")
  ],
)
def test_delta_method_zero_variance_for_quadratic(name, coefficient):
  """f(x) = xᵀAx + bᵀx + 3 (non-diagonal A) under independent Normals:
  E = μᵀAμ + Σ_j A_jj σ_j² + bᵀμ + 3, so ∇μ = (A + Aᵀ)μ + b and
  ∂ log σ_j = 2 A_jj σ_j². h = f exactly, so EVERY per-sample gradient equals
  the exact gradient (variance exactly 0): checked to float32 rounding."""
  A = np.array([[2.0, 0.5], [-0.3, 1.0]])
  b = np.array([1.0, -2.0])
  mu, log_sigma = np.array([0.5, -1.0]), np.array([0.1, -0.2])
  Aj, bj = jnp.asarray(A, jnp.float32), jnp.asarray(b, jnp.float32)
  f = lambda x: x @ Aj @ x + bj @ x + 3.0
  params = {"loc": jnp.asarray(mu, jnp.float32), "log_scale": jnp.asarray(log_sigma, jnp.float32)}
  dist_fn = lambda p: sg.dists.Normal(p["loc"], jnp.exp(p["log_scale"]))
  exact = {"loc": (A + A.T) @ mu + b, "log_scale": 2 * np.diag(A) * np.exp(2 * log_sigma)}
  est = _factories()[name](
    num_samples=64, per_sample=True, control_variate=cvs.delta_method(coefficient=coefficient)
  )
  out = _run(est, f, dist_fn, params)
  for k in exact:
    np.testing.assert_allclose(
      out.per_sample[k], np.broadcast_to(exact[k], (64, 2)), rtol=2e-4, atol=2e-4
    )
    np.testing.assert_allclose(out.grad[k], exact[k], rtol=1e-4, atol=1e-4)


def test_delta_method_exact_for_quadratic_under_multivariate_normal():
  """MVN(μ, LLᵀ), f = xᵀAx + bᵀx: E = μᵀAμ + tr(A L Lᵀ) + bᵀμ, so
  ∇μ = (A + Aᵀ)μ + b and ∇L = tril((A + Aᵀ) L)."""
  A = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, -0.4], [0.1, -0.4, 0.5]])
  b = np.array([0.5, 0.0, -1.0])
  mu = np.array([0.2, -0.5, 1.0])
  L = np.array([[1.0, 0.0, 0.0], [0.4, 0.7, 0.0], [-0.2, 0.3, 1.1]])
  Aj, bj = jnp.asarray(A, jnp.float32), jnp.asarray(b, jnp.float32)
  f = lambda x: x @ Aj @ x + bj @ x
  params = {"loc": jnp.asarray(mu, jnp.float32), "scale_tril": jnp.asarray(L, jnp.float32)}
  dist_fn = lambda p: sg.dists.MultivariateNormalTriL(p["loc"], p["scale_tril"])
  exact = {"loc": (A + A.T) @ mu + b, "scale_tril": np.tril((A + A.T) @ L)}
  for est in [
    sg.score_function(num_samples=32, control_variate=cvs.delta_method()),
    sg.pathwise(num_samples=32, control_variate=cvs.delta_method(), sampling="antithetic"),
  ]:
    out = _run(est, f, dist_fn, params)
    for k in exact:
      np.testing.assert_allclose(out.grad[k], exact[k], rtol=1e-4, atol=1e-4)


# -- unbiased, with exact variances, for a non-quadratic cost -------------------------

_QUAD = dict(epsabs=1e-12, epsrel=1e-11, limit=400)


def _gauss(h):
  return integrate.quad(lambda x: h(x) * stats.norm.pdf(x, MU, SIGMA), -np.inf, np.inf, **_QUAD)[0]


def _delta_cos_terms(beta):
  """Per-sample terms with the delta method for f = cos, x ~ N(μ, σ²).

  h(x) = cos μ − sin μ (x − μ) − ½ cos μ (x − μ)², held fixed; its expectation
  as a function of (μ', σ') has ∂μ' = −sin μ, ∂σ' = −σ cos μ at μ' = μ.
  Score: (f − βh)(x) s(x) + β ∇E[h]; pathwise: ∇θ[f − βh](μ + σz) + β ∇E[h]
  with ∂μ x = 1, ∂σ x = z.
  """
  h = lambda x: math.cos(MU) - math.sin(MU) * (x - MU) - 0.5 * math.cos(MU) * (x - MU) ** 2
  dh = lambda x: -math.sin(MU) - math.cos(MU) * (x - MU)
  eh = {"loc": -math.sin(MU), "scale": -SIGMA * math.cos(MU)}
  z = lambda x: (x - MU) / SIGMA
  score = {
    "loc": lambda x: (np.cos(x) - beta * h(x)) * z(x) / SIGMA + beta * eh["loc"],
    "scale": lambda x: (np.cos(x) - beta * h(x)) * (z(x) ** 2 - 1) / SIGMA + beta * eh["scale"],
  }
  path = {
    "loc": lambda x: -np.sin(x) - beta * dh(x) + beta * eh["loc"],
    "scale": lambda x: (-np.sin(x) - beta * dh(x)) * z(x) + beta * eh["scale"],
  }
  return score, path


EXACT_COS = {
  "loc": -math.sin(MU) * math.exp(-(SIGMA**2) / 2),
  "scale": -SIGMA * math.cos(MU) * math.exp(-(SIGMA**2) / 2),
}


@pytest.mark.parametrize("beta", [1.0, 0.5])
@pytest.mark.parametrize("which", ["score_function", "pathwise"])
def test_fixed_coefficient_unbiased_with_exact_variance(which, beta, dtype):
  score, path = _delta_cos_terms(beta)
  terms = score if which == "score_function" else path
  mean = {k: _gauss(t) for k, t in terms.items()}
  var = {k: _gauss(lambda x: (t(x) - mean[k]) ** 2) for k, t in terms.items()}
  for k in EXACT_COS:  # the quadrature reproduces the closed-form gradient
    assert abs(mean[k] - EXACT_COS[k]) < 1e-9
  factory = sg.score_function if which == "score_function" else sg.pathwise
  est = factory(
    num_samples=100_000, per_sample=True, control_variate=cvs.delta_method(coefficient=beta)
  )
  out = _run(est, jnp.cos, NORMAL, _params(dtype), key=1)
  assert out.per_sample["loc"].dtype == dtype
  assert_unbiased(out.per_sample, EXACT_COS, false_failure_rate=RATE, exact_variance=var)
  assert_variance(out.per_sample, var, false_failure_rate=RATE)


def test_measure_valued_with_delta_method_unbiased():
  est = sg.measure_valued(num_samples=100_000, per_sample=True, control_variate=cvs.delta_method())
  out = _run(est, jnp.cos, NORMAL, _params(), key=2)
  assert_unbiased(out.per_sample, EXACT_COS, false_failure_rate=RATE)


# -- estimated coefficients ------------------------------------------------------------

F_HARD = lambda x: jnp.cos(2 * x) + x**3
# E cos 2x = cos 2μ e^{−2σ²}; E x³ = μ³ + 3μσ².
EXACT_HARD = {
  "loc": -2 * math.sin(2 * MU) * math.exp(-2 * SIGMA**2) + 3 * MU**2 + 3 * SIGMA**2,
  "scale": -4 * SIGMA * math.cos(2 * MU) * math.exp(-2 * SIGMA**2) + 6 * MU * SIGMA,
}


@pytest.mark.parametrize("coefficient", ["per_leaf", "per_coordinate"])
@pytest.mark.parametrize("name", ["score_function", "pathwise", "measure_valued"])
def test_leave_one_out_coefficients_unbiased_at_small_n(name, coefficient):
  """With n = 6, β fitted on the same samples is badly biased (see the power
  check below); leave-one-out β is not: 20000 independent estimates average
  to the exact gradient."""
  est = _factories()[name](num_samples=6, control_variate=cvs.delta_method(coefficient=coefficient))
  keys = jax.random.split(jax.random.key(3), 20_000)
  params = _params()
  grads = jax.jit(
    jax.vmap(lambda k: est.estimate(k, F_HARD, NORMAL, params, est.init(params)).grad)
  )(keys)
  assert_unbiased(grads, EXACT_HARD, false_failure_rate=RATE)


def test_same_sample_coefficient_would_be_caught():
  """Power check: refitting β on all n samples (including sample i) is biased,
  and assert_unbiased rejects it at the sizes used above."""
  params = _params()
  plain = sg.score_function(num_samples=6, per_sample=True)
  with_cv = sg.score_function(num_samples=6, per_sample=True, control_variate=cvs.delta_method())

  def biased(k):
    a = plain.estimate(k, F_HARD, NORMAL, params, plain.init(params)).per_sample
    c = with_cv.estimate(k, F_HARD, NORMAL, params, with_cv.init(params)).per_sample
    out = {}
    for name in a:
      g, h = a[name], a[name] - c[name]  # h = g_h − ∇E[h] (β = 1 subtracts it)
      gc, hc = g - g.mean(), h - h.mean()
      beta = jnp.sum(gc * hc) / jnp.sum(hc * hc)
      out[name] = jnp.mean(g - beta * h)
    return out

  grads = jax.jit(jax.vmap(biased))(jax.random.split(jax.random.key(3), 20_000))
  with pytest.raises(AssertionError, match="biased"):
    assert_unbiased(grads, EXACT_HARD, false_failure_rate=RATE)


def test_leave_one_out_coefficients_match_brute_force():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(7, 3)) + 2.0
  b = 0.5 * a + rng.normal(size=(7, 3))
  beta_leaf = cvs.leave_one_out_coefficients(
    {"x": jnp.asarray(a)}, {"x": jnp.asarray(b)}, mode="per_leaf"
  )["x"]
  beta_coord = cvs.leave_one_out_coefficients(jnp.asarray(a), jnp.asarray(b), mode="per_coordinate")
  for i in range(7):
    keep = np.arange(7) != i
    ai, bi = a[keep], b[keep]
    cov = np.sum((ai - ai.mean(0)) * (bi - bi.mean(0)), 0)
    var = np.sum((bi - bi.mean(0)) ** 2, 0)
    np.testing.assert_allclose(beta_coord[i], cov / var, rtol=1e-5)
    np.testing.assert_allclose(beta_leaf[i], np.full(3, cov.sum() / var.sum()), rtol=1e-5)


def test_estimated_coefficient_reduces_variance():
  """f = exp(x/2): the variance-minimising β ≈ 1.19, not 1; at n = 1000 the
  fitted β reaches n·Var ≈ 0.25 against 0.38 for β = 1 and 5.7 without a
  control variate (measured: 2000 replicates give each to about ±5%, so the
  20% margin is over 4 standard errors)."""
  params = _params()
  f = lambda x: jnp.exp(0.5 * x)
  keys = jax.random.split(jax.random.key(4), 2000)
  variances = {}
  for label, cv in [
    ("none", None),
    ("fixed", cvs.delta_method()),
    ("per_coordinate", cvs.delta_method(coefficient="per_coordinate")),
  ]:
    est = sg.score_function(num_samples=1000, control_variate=cv)
    g = jax.jit(
      jax.vmap(lambda k: est.estimate(k, f, NORMAL, params, est.init(params)).grad["loc"])
    )(keys)
    variances[label] = float(jnp.var(g))
  assert variances["per_coordinate"] < 0.8 * min(variances["none"], variances["fixed"])


# -- user-defined control variates --------------------------------------------------------


def test_parameter_dependent_control_variate_gets_its_chain_rule_term():
  """h(x; μ) = (x − μ)³ + μx has E[h] = μ², and E[∂μ h] = −3σ² + μ ≠ 0: an
  estimator that forgot the −β E[∇θ h] term would be off by that much."""

  def value(f, d, x, state):
    return (x - d.loc) ** 3 + d.loc * x

  def expectation(f, d, state):
    return d.loc**2

  cv = cvs.from_functions(value, expectation, families=(sg.dists.Normal,))
  for factory in [sg.score_function, sg.pathwise, sg.measure_valued]:
    est = factory(num_samples=100_000, per_sample=True, control_variate=cv)
    out = _run(est, jnp.cos, NORMAL, _params(), key=5)
    assert_unbiased(out.per_sample, EXACT_COS, false_failure_rate=RATE)
    # The batched path (no per-sample gradients) computes the same estimate.
    batched = factory(num_samples=64, control_variate=cv)
    per = factory(num_samples=64, per_sample=True, control_variate=cv)
    a = _run(batched, jnp.cos, NORMAL, _params(), key=6)
    b = _run(per, jnp.cos, NORMAL, _params(), key=6)
    for k in EXACT_COS:
      np.testing.assert_allclose(a.grad[k], b.grad[k], rtol=1e-4, atol=1e-5)


def test_stateful_control_variate_threads_state():
  """h = state (a constant with E[h] = state): like a baseline. The state is
  updated to the mean cost; the estimate stays unbiased at any state."""
  cv = cvs.from_functions(
    lambda f, d, x, s: s,
    lambda f, d, s: s,
    families=(sg.dists.Normal,),
    init=lambda: jnp.zeros(()),
    update=lambda s, f, d, value: value,
  )
  est = sg.score_function(num_samples=16, control_variate=cv)
  params = _params()
  state = est.init(params)
  assert isinstance(state, sg.ControlVariateState) and state.control_variate.shape == ()
  out = est.estimate(jax.random.key(0), jnp.cos, NORMAL, params, state)
  np.testing.assert_allclose(out.state.control_variate, out.value, rtol=1e-6)
  state = state._replace(control_variate=jnp.asarray(0.3))
  keys = jax.random.split(jax.random.key(6), 20_000)
  grads = jax.jit(jax.vmap(lambda k: est.estimate(k, jnp.cos, NORMAL, params, state).grad))(keys)
  assert_unbiased(grads, EXACT_COS, false_failure_rate=RATE)


def test_deprecated_update_signature_still_works():
  """0.1's update(state, f, dist, samples, costs) warns and gets costs=value[None]."""
  with pytest.warns(DeprecationWarning, match=r"update\(state, f, dist, value\)"):
    cv = cvs.from_functions(
      lambda f, d, x, s: s,
      lambda f, d, s: s,
      families=(sg.dists.Normal,),
      init=lambda: jnp.zeros(()),
      update=lambda s, f, d, xs, costs: jnp.mean(costs) + 0 * (xs is None),
    )
  est = sg.score_function(num_samples=16, control_variate=cv)
  params = _params()
  out = est.estimate(jax.random.key(0), jnp.cos, NORMAL, params, est.init(params))
  np.testing.assert_allclose(out.state.control_variate, out.value, rtol=1e-6)


def test_pathwise_state_without_and_with_control_variate():
  assert sg.pathwise(num_samples=2).init(None) == sg.EmptyState()
  st = sg.pathwise(num_samples=2, control_variate=cvs.delta_method()).init(None)
  assert st == sg.ControlVariateState(estimator=sg.EmptyState(), control_variate=())
  assert sg.score_function(num_samples=2).init(None) == sg.ScoreFunctionState(baseline=())


# -- bad input ---------------------------------------------------------------------------


def test_family_mismatch_is_refused():
  est = sg.score_function(num_samples=4, control_variate=cvs.delta_method())
  # The delta method needs the family's mean() and covariance(): Categorical
  # (indices) has none. The message lists the families that do.
  with pytest.raises(
    ValueError,
    match=r"delta_method.*only for Normal, "
    r"MultivariateNormalTriL, Bernoulli, Poisson, Exponential, Gamma"
    r".*returned Categorical",
  ):
    est.estimate(
      jax.random.key(0),
      lambda x: jnp.sum(x).astype(jnp.float32),
      lambda l: sg.dists.Categorical(logits=l),
      jnp.zeros((2, 3)),
      est.init(None),
    )
  mine = cvs.from_functions(
    lambda f, d, x, s: x, lambda f, d, s: d.loc, families=(sg.dists.Normal,), name="mine"
  )
  est = sg.measure_valued(num_samples=4, control_variate=mine)
  with pytest.raises(ValueError, match="mine.*only for Normal.*returned Poisson"):
    est.estimate(
      jax.random.key(0),
      lambda x: x,
      lambda r: sg.dists.Poisson(r),
      jnp.asarray(2.0),
      est.init(None),
    )


@pytest.mark.parametrize(
  "kwargs, exc, match",
  [
    ({"coefficient": "optimal"}, ValueError, r"coefficient='optimal'"),
    ({"coefficient": True}, TypeError, "coefficient=True"),
    ({"coefficient": float("nan")}, ValueError, "finite"),
  ],
)
def test_bad_coefficient(kwargs, exc, match):
  with pytest.raises(exc, match=match):
    cvs.delta_method(**kwargs)


def test_traced_coefficient_refused():
  with pytest.raises(TypeError, match="per_leaf"):
    jax.jit(lambda c: cvs.delta_method(coefficient=c).init())(0.5)


def test_bad_control_variate_arguments():
  with pytest.raises(TypeError, match=r"Call the factory: control_variate=delta_method\(\)"):
    sg.pathwise(num_samples=4, control_variate=cvs.delta_method)
  with pytest.raises(ValueError, match="num_samples >= 3.*num_samples=2"):
    sg.score_function(num_samples=2, control_variate=cvs.delta_method(coefficient="per_leaf"))
  with pytest.raises(TypeError, match="families"):
    cvs.from_functions(lambda f, d, x, s: x, lambda f, d, s: 0.0, families=())
  with pytest.raises(TypeError, match="families"):
    cvs.from_functions(lambda f, d, x, s: x, lambda f, d, s: 0.0, families=("Normal",))
  with pytest.raises(TypeError, match="expectation"):
    cvs.from_functions(lambda f, d, x, s: x, 0.0, families=(sg.dists.Normal,))
