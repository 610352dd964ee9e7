"""LogNormal, Beta, Dirichlet, StudentT, VonMises, Binomial and Geometric.

log_prob against scipy.stats; sample moments; pathwise gradients (implicit
reparameterization for Beta, Dirichlet, StudentT and VonMises) unbiased
against closed-form moments, second derivatives too; score-function and
measure-valued gradients of the discrete families unbiased against
enumeration; the support rule (raise when concrete, NaN under jit); dtypes.

Every statistical assertion uses scoregrad.testing.assert_unbiased with
false-failure rate RATE = 1e-7 (two-sided, Bonferroni over coordinates); the
file makes fewer than 40 of them, so a correct library fails by chance with
probability below 4e-6 per run. Keys are fixed, so a run is reproducible.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import scoregrad as sg
from scoregrad.testing import assert_unbiased

RATE = 1e-7
NEW = ("LogNormal", "Beta", "Dirichlet", "StudentT", "VonMises", "Binomial", "Geometric")


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _vm_mean_cos(kappa):
  """A(κ) = I₁(κ)/I₀(κ) = E[cos(x − μ)] under von Mises(μ, κ), differentiable in JAX."""
  return jax.scipy.special.i1e(kappa) / jax.scipy.special.i0e(kappa)


# -- log_prob against scipy ------------------------------------------------------------


def test_log_prob_against_scipy(x64):
  d = sg.dists
  x = np.array([0.3, 2.1])
  np.testing.assert_allclose(
    d.LogNormal(jnp.array([0.1, -0.4]), jnp.array([0.5, 1.3])).log_prob(x),
    stats.lognorm.logpdf(x, [0.5, 1.3], scale=np.exp([0.1, -0.4])).sum(),
    rtol=1e-10,
  )
  u = np.array([0.2, 0.85])
  np.testing.assert_allclose(
    d.Beta(jnp.array([0.7, 2.0]), jnp.array([3.0, 1.5])).log_prob(u),
    stats.beta.logpdf(u, [0.7, 2.0], [3.0, 1.5]).sum(),
    rtol=1e-10,
  )
  alpha = np.array([[0.5, 2.0, 3.0], [1.0, 1.0, 4.0]])
  simplex = np.array([[0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
  np.testing.assert_allclose(
    d.Dirichlet(alpha).log_prob(simplex),
    sum(stats.dirichlet.logpdf(s, a) for s, a in zip(simplex, alpha)),
    rtol=1e-10,
  )
  t = np.array([-1.7, 0.4])
  np.testing.assert_allclose(
    d.StudentT(jnp.array([2.5, 7.0]), jnp.array([0.3, -1.0]), jnp.array([1.5, 0.4])).log_prob(t),
    stats.t.logpdf(t, [2.5, 7.0], [0.3, -1.0], [1.5, 0.4]).sum(),
    rtol=1e-10,
  )
  a = np.array([-2.9, 1.0])
  np.testing.assert_allclose(
    d.VonMises(jnp.array([0.5, -2.0]), jnp.array([0.3, 40.0])).log_prob(a),
    stats.vonmises.logpdf(a, [0.3, 40.0], loc=[0.5, -2.0]).sum(),
    rtol=1e-10,
  )
  k = np.array([0.0, 3.0, 7.0])
  logits = np.array([0.4, -1.2, 2.0])
  np.testing.assert_allclose(
    d.Binomial(jnp.array([4.0, 5.0, 7.0]), logits=logits).log_prob(k),
    stats.binom.logpmf(k, [4, 5, 7], special.expit(logits)).sum(),
    rtol=1e-10,
  )
  # scipy's geom counts trials (from 1): failures k ↔ trials k + 1.
  np.testing.assert_allclose(
    d.Geometric(logits=logits).log_prob(k),
    stats.geom.logpmf(k + 1, special.expit(logits)).sum(),
    rtol=1e-10,
  )


def test_outside_the_support_is_minus_inf(x64):
  d = sg.dists
  assert d.LogNormal(0.0, 1.0).log_prob(-1.0) == -np.inf
  assert d.Beta(2.0, 2.0).log_prob(1.5) == -np.inf
  assert d.Dirichlet(jnp.ones(3)).log_prob(jnp.array([-0.1, 0.6, 0.5])) == -np.inf
  assert d.Binomial(3.0, logits=0.0).log_prob(4.0) == -np.inf
  assert d.Binomial(3.0, logits=0.0).log_prob(1.5) == -np.inf
  assert d.Geometric(logits=0.0).log_prob(-1.0) == -np.inf
  for dist, x in [
    (d.LogNormal(0.0, 1.0), jnp.nan),
    (d.Beta(2.0, 2.0), jnp.nan),
    (d.Geometric(logits=0.0), jnp.nan),
  ]:
    assert np.isnan(dist.log_prob(x))  # NaN in, NaN out


# -- sample moments ----------------------------------------------------------------------

MOMENT_CASES = {
  "LogNormal": lambda: sg.dists.LogNormal(jnp.array([0.2, -0.5]), jnp.array([0.3, 0.6])),
  "Beta": lambda: sg.dists.Beta(jnp.array([0.4, 2.0]), jnp.array([1.3, 5.0])),
  "Dirichlet": lambda: sg.dists.Dirichlet(jnp.array([0.3, 1.0, 2.5])),
  "StudentT": lambda: sg.dists.StudentT(jnp.array([9.0, 12.0]), jnp.array([0.5, -1.0]), 2.0),
  "Binomial": lambda: sg.dists.Binomial(jnp.array([3.0, 10.0]), logits=jnp.array([0.5, -1.0])),
  "Geometric": lambda: sg.dists.Geometric(logits=jnp.array([0.5, -0.7])),
}


@pytest.mark.parametrize("family", sorted(MOMENT_CASES))
def test_sample_mean_and_variance(family, x64):
  dist = MOMENT_CASES[family]()
  x = dist.sample(jax.random.key(1), (20000,))
  assert x.shape == (20000,) + tuple(dist.event_shape)
  mean = dist.mean()
  var = jnp.reshape(jnp.diag(dist.covariance()), dist.event_shape)
  assert_unbiased(x, mean, false_failure_rate=RATE)
  assert_unbiased((x - mean) ** 2, var, false_failure_rate=RATE)


def test_dirichlet_covariance_and_simplex(x64):
  dist = sg.dists.Dirichlet(jnp.array([[0.3, 1.0, 2.5], [2.0, 2.0, 1.0]]))
  x = dist.sample(jax.random.key(2), (20000,))
  np.testing.assert_allclose(jnp.sum(x, -1), 1.0, rtol=1e-12)
  flat = (x - dist.mean()).reshape(20000, -1)
  products = flat[:, :, None] * flat[:, None, :]
  assert_unbiased(products, dist.covariance(), false_failure_rate=RATE)


def test_von_mises_moments_and_wrapping(x64):
  loc, kappa = jnp.array([3.0, -0.4]), jnp.array([0.05, 8.0])
  x = sg.dists.VonMises(loc, kappa).sample(jax.random.key(3), (20000,))
  assert jnp.all(x >= -np.pi) and jnp.all(x < np.pi)
  a = _vm_mean_cos(kappa)
  assert_unbiased(jnp.cos(x - loc), a, false_failure_rate=RATE)
  assert_unbiased(jnp.sin(x - loc), jnp.zeros(2), false_failure_rate=RATE)
  # Kolmogorov–Smirnov against scipy's CDF (p-value threshold 1e-7).
  centred = jnp.mod(x[:, 1] - loc[1] + np.pi, 2 * np.pi) - np.pi
  assert stats.kstest(np.asarray(centred), stats.vonmises(8.0).cdf).pvalue > RATE


# -- pathwise gradients against closed-form moments ---------------------------------------


def _square(x):
  return jnp.sum(x**2)


def _circle(x):
  return jnp.sum(jnp.cos(x) + 0.5 * jnp.sin(x))


PATHWISE_CASES = {
  # name: (dist_fn, params, cost, exact expectation as a function of params)
  "LogNormal": (
    lambda p: sg.dists.LogNormal(p[0], jnp.exp(p[1])),
    (jnp.array([0.2, -0.3]), jnp.array([-0.5, -1.0])),
    lambda x: jnp.sum(x),
    lambda p: jnp.sum(jnp.exp(p[0] + 0.5 * jnp.exp(2 * p[1]))),
  ),
  "Beta": (
    lambda p: sg.dists.Beta(jnp.exp(p[0]), jnp.exp(p[1])),
    (jnp.array([-0.7, 0.6]), jnp.array([0.3, -0.2])),
    _square,
    lambda p: jnp.sum(
      (lambda d: jnp.diag(d.covariance()) + d.mean() ** 2)(
        sg.dists.Beta(jnp.exp(p[0]), jnp.exp(p[1]))
      )
    ),
  ),
  "Dirichlet": (
    lambda p: sg.dists.Dirichlet(jnp.exp(p[0])),
    (jnp.array([-0.9, 0.0, 0.8]),),
    lambda x: jnp.sum(jnp.array([1.0, -2.0, 0.5]) * x**2),
    lambda p: jnp.sum(
      jnp.array([1.0, -2.0, 0.5])
      * (lambda d: jnp.diag(d.covariance()) + d.mean() ** 2)(sg.dists.Dirichlet(jnp.exp(p[0])))
    ),
  ),
  "StudentT": (
    lambda p: sg.dists.StudentT(9.0 + jnp.exp(p[0]), p[1], jnp.exp(p[2])),
    (jnp.array([0.3]), jnp.array([0.5]), jnp.array([-0.2])),
    _square,
    lambda p: jnp.sum(
      jnp.exp(2 * p[2]) * (9.0 + jnp.exp(p[0])) / (7.0 + jnp.exp(p[0])) + p[1] ** 2
    ),
  ),
  "VonMises": (
    lambda p: sg.dists.VonMises(p[0], jnp.exp(p[1])),
    (jnp.array([0.4, -2.5]), jnp.array([-1.0, 1.2])),
    _circle,
    lambda p: jnp.sum(_vm_mean_cos(jnp.exp(p[1])) * (jnp.cos(p[0]) + 0.5 * jnp.sin(p[0]))),
  ),
}


@pytest.mark.parametrize("family", sorted(PATHWISE_CASES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pathwise_unbiased_first_and_second_order(family, dtype):
  with jax.enable_x64(dtype == "float64"):
    dist_fn, params, cost, exact_fn = PATHWISE_CASES[family]
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
    est = sg.pathwise(num_samples=8)
    run = lambda p, k: est.estimate(k, cost, dist_fn, p, est.init(p)).grad
    keys = jax.random.split(jax.random.key(4), 1000)
    grads = jax.jit(jax.vmap(lambda k: run(params, k)))(keys)
    for g in jax.tree_util.tree_leaves(grads):
      assert g.dtype == jnp.dtype(dtype)
    rtol = 1e-4 if dtype == "float32" else 1e-10
    assert_unbiased(grads, jax.grad(exact_fn)(params), false_failure_rate=RATE, rtol=rtol)
    if dtype == "float32":
      return
    flat = lambda h: jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(h)])
    hess = lambda k: flat(jax.jacfwd(lambda p: run(p, k))(params))
    estimates = jax.jit(jax.vmap(hess))(keys[:400])
    exact = flat(jax.hessian(exact_fn)(params))
    assert_unbiased(estimates, exact, false_failure_rate=RATE, rtol=1e-8)


def test_von_mises_implicit_gradient_matches_scipy_cdf(x64):
  """∂θ/∂κ = −(∂F/∂κ)/p against central differences of scipy's CDF."""
  from scoregrad.dists.von_mises import _dtheta_dkappa

  theta = jnp.array([-2.0, -0.6, -0.05, 0.1, 0.9, 2.8])
  for kappa in (0.05, 0.7, 4.0, 30.0):
    ours = _dtheta_dkappa(theta, jnp.full_like(theta, kappa))
    h = 1e-5 * kappa
    cdf = lambda k: stats.vonmises.cdf(np.asarray(theta), k)
    dcdf = (cdf(kappa + h) - cdf(kappa - h)) / (2 * h)
    pdf = stats.vonmises.pdf(np.asarray(theta), kappa)
    keep = pdf > 1e-6  # scipy's CDF differences are noise far in the tails
    np.testing.assert_allclose(np.asarray(ours)[keep], (-dcdf / pdf)[keep], rtol=1e-4, atol=1e-9)


# -- discrete families: score function and measure-valued against enumeration -----------


DISCRETE_CASES = {
  "Binomial": (
    lambda l: sg.dists.Binomial(5.0, logits=l),
    jnp.array([0.4, -1.1]),
    lambda k: jnp.sum(jnp.cos(jnp.array([0.7, 0.3]) * k)),
    # E[cos(w k)] by enumeration of k = 0..5 (exact).
    lambda l: jnp.sum(
      jax.vmap(
        lambda li, wi: jnp.sum(
          jnp.exp(jax.vmap(sg.dists.Binomial(5.0, logits=li).log_prob)(jnp.arange(6.0)))
          * jnp.cos(wi * jnp.arange(6.0))
        )
      )(l, jnp.array([0.7, 0.3]))
    ),
  ),
  "Geometric": (
    lambda l: sg.dists.Geometric(logits=l),
    jnp.array([0.3, -0.5]),
    lambda k: jnp.sum(jnp.cos(jnp.array([0.7, 0.3]) * k)),
    # E[cos(w k)] by enumeration up to k = 399 (the tail is < (1 − p)^400 < 1e-60).
    lambda l: jnp.sum(
      jax.vmap(
        lambda li, wi: jnp.sum(
          jnp.exp(jax.vmap(sg.dists.Geometric(logits=li).log_prob)(jnp.arange(400.0)))
          * jnp.cos(wi * jnp.arange(400.0))
        )
      )(l, jnp.array([0.7, 0.3]))
    ),
  ),
}

DISCRETE_ESTIMATORS = {
  "score_function": lambda: sg.score_function(num_samples=8),
  "score_function+leave_one_out": lambda: sg.score_function(
    num_samples=8, baseline=sg.baselines.leave_one_out()
  ),
  "measure_valued": lambda: sg.measure_valued(num_samples=8),
  "measure_valued+uncoupled": lambda: sg.measure_valued(num_samples=8, coupling=False),
}


@pytest.mark.parametrize("family", sorted(DISCRETE_CASES))
@pytest.mark.parametrize("name", sorted(DISCRETE_ESTIMATORS))
def test_discrete_families_unbiased(family, name, x64):
  dist_fn, logits, cost, exact_fn = DISCRETE_CASES[family]
  est = DISCRETE_ESTIMATORS[name]()
  run = lambda k: est.estimate(k, cost, dist_fn, logits, est.init(logits)).grad
  grads = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(5), 2000))
  assert_unbiased(grads, jax.grad(exact_fn)(logits), false_failure_rate=RATE)


def test_lognormal_measure_valued_unbiased(x64):
  dist_fn, params, cost, exact_fn = PATHWISE_CASES["LogNormal"]
  est = sg.measure_valued(num_samples=8)
  run = lambda k: est.estimate(k, cost, dist_fn, params, est.init(params)).grad
  grads = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(6), 2000))
  assert_unbiased(grads, jax.grad(exact_fn)(params), false_failure_rate=RATE)


def test_discrete_families_are_not_reparameterized():
  for dist in (sg.dists.Binomial(4, logits=0.0), sg.dists.Geometric(logits=0.0)):
    est = sg.pathwise(num_samples=4)
    with pytest.raises(Exception, match="reparameterized"):
      est.estimate(jax.random.key(0), lambda x: jnp.sum(x), lambda p: dist, jnp.zeros(()), ())


def test_binomial_total_count_held_constant_by_measure_valued():
  est = sg.measure_valued(num_samples=4)
  with pytest.raises(ValueError, match="total_count"):
    est.estimate(
      jax.random.key(0),
      lambda x: jnp.sum(x),
      lambda p: sg.dists.Binomial(jnp.round(p) + 3.0, logits=p),
      jnp.zeros(()),
      (),
    )


# -- the support rule, dtypes, pytrees ----------------------------------------------------

BAD = {
  "LogNormal": (lambda s: sg.dists.LogNormal(0.0, s), "scale"),
  "Beta": (lambda s: sg.dists.Beta(s, 1.0), "concentration1"),
  "Dirichlet": (lambda s: sg.dists.Dirichlet(jnp.stack([s, 1.0])), "concentration"),
  "StudentT": (lambda s: sg.dists.StudentT(s, 0.0, 1.0), "df"),
  "VonMises": (lambda s: sg.dists.VonMises(0.0, s), "concentration"),
  "Binomial": (lambda s: sg.dists.Binomial(s, logits=0.0), "total_count"),
}


@pytest.mark.parametrize("family", sorted(BAD))
def test_out_of_support_raises_when_concrete_nan_under_jit(family):
  build, name = BAD[family]
  with pytest.raises(ValueError, match=name):
    build(jnp.array(-1.0))
  dist = jax.jit(build)(jnp.array(-1.0))  # a pytree: built under jit, no check
  del dist

  def run(s):
    d = build(s)
    return d.log_prob(d.sample(jax.random.key(0))), d.sample(jax.random.key(1))

  lp, x = jax.jit(run)(jnp.array(-1.0))
  assert np.all(np.isnan(lp)) and np.all(np.isnan(x))
  lp, x = jax.jit(run)(jnp.array(2.0))  # and valid parameters are fine under jit
  assert np.all(np.isfinite(lp)) and np.all(np.isfinite(x))


def test_binomial_needs_whole_total_count():
  with pytest.raises(ValueError, match="whole number"):
    sg.dists.Binomial(2.5, logits=0.0)


def test_dirichlet_needs_categories():
  with pytest.raises(ValueError, match="K >= 2"):
    sg.dists.Dirichlet(jnp.array(1.0))


@pytest.mark.parametrize("family", NEW)
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_dtypes_pytrees_and_jit(family, dtype):
  with jax.enable_x64(dtype == "float64"):
    build = {
      "LogNormal": lambda v: sg.dists.LogNormal(v, jnp.exp(v)),
      "Beta": lambda v: sg.dists.Beta(jnp.exp(v), 2.0),
      "Dirichlet": lambda v: sg.dists.Dirichlet(jnp.exp(v)),
      "StudentT": lambda v: sg.dists.StudentT(5.0, v, 1.0),
      "VonMises": lambda v: sg.dists.VonMises(v, jnp.exp(v)),
      "Binomial": lambda v: sg.dists.Binomial(6.0, logits=v),
      "Geometric": lambda v: sg.dists.Geometric(logits=v),
    }[family]
    v = jnp.asarray([0.3, -0.2, 0.5], dtype)
    dist = build(v)
    assert dist.dtype == jnp.dtype(dtype)
    traces = []

    @jax.jit
    def draw(d, k):
      traces.append(1)
      x = d.sample(k, (4,))
      return x, d.log_prob(x)

    x, lp = draw(dist, jax.random.key(0))
    x2, _ = draw(build(v * 0.5), jax.random.key(0))  # a new value: no new trace
    assert len(traces) == 1
    assert x.dtype == jnp.dtype(dtype) and x.shape == (4, 3) and lp.shape == (4,)
    assert np.all(np.isfinite(np.asarray(x, np.float32)))
    assert np.all(np.isfinite(np.asarray(lp, np.float32)))
    x3, _ = draw(dist, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(x3, np.float32))
