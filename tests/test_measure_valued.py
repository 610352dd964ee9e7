"""Specification of the measure-valued estimator.

Every statistical assertion uses scoregrad.testing with false-failure rate
1e-6 (Bonferroni over coordinates), so this file fails by chance with
probability below 3e-5 for any seed. Exact gradients and exact per-sample
variances come from closed forms, adaptive quadrature (scipy) or enumeration,
as derived next to each test.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

import scoregrad as sg
from scoregrad.dists import _weak as weak_module
from scoregrad.testing import assert_unbiased, assert_variance

RATE = 1e-6
N = 100_000


def _run(est, f, dist_fn, params, key=0):
  return jax.jit(lambda k, p: est.estimate(k, f, dist_fn, p, est.init(p)))(
    jax.random.key(key), params
  )


# -- Normal: Weibull (mean) and double-sided Maxwell (scale) ------------------

_QUAD = dict(epsabs=1e-12, epsrel=1e-11, limit=400)


def _rayleigh_expect(h):
  """E[h(W)], W ~ Weibull(scale √2, shape 2): density w e^{−w²/2} on w > 0."""
  return integrate.quad(lambda w: h(w) * w * np.exp(-0.5 * w * w), 0, np.inf, **_QUAD)[0]


def _maxwell_pdf(m):
  """Double-sided Maxwell: m² φ(m)."""
  return m * m * stats.norm.pdf(m)


def _normal_mvd_moments(f, mu, sigma, coupling):
  """Exact mean and per-sample variance of the 1-D Normal measure-valued terms.

  loc:   g = (f(μ + σW) − f(μ − σW')) / (σ√(2π)), W' = W when coupled;
  scale: g = (f(μ + σM) − f(μ + σV)) / σ, V = U·M when coupled, else V ~ N(0,1).
  Coupled second moments are one- (loc) and two-dimensional (scale: over M
  and U) integrals; uncoupled variances are sums of the two sides' variances.
  """
  c = sigma * math.sqrt(2 * math.pi)
  plus = lambda w: f(mu + sigma * w)
  minus = lambda w: f(mu - sigma * w)
  mean_loc = (_rayleigh_expect(plus) - _rayleigh_expect(minus)) / c
  if coupling:
    var_loc = _rayleigh_expect(lambda w: (plus(w) - minus(w)) ** 2) / c**2 - mean_loc**2
  else:
    var = lambda h: _rayleigh_expect(lambda w: h(w) ** 2) - _rayleigh_expect(h) ** 2
    var_loc = (var(plus) + var(minus)) / c**2
  gauss = lambda h: integrate.quad(lambda z: h(z) * stats.norm.pdf(z), -np.inf, np.inf, **_QUAD)[0]
  maxwell = lambda h: integrate.quad(lambda m: h(m) * _maxwell_pdf(m), -np.inf, np.inf, **_QUAD)[0]
  fp = lambda m: f(mu + sigma * m)
  mean_scale = (maxwell(fp) - gauss(fp)) / sigma
  if coupling:
    second = integrate.dblquad(
      lambda u, m: (fp(m) - fp(u * m)) ** 2 * _maxwell_pdf(m),
      -12,
      12,
      0,
      1,
      epsabs=1e-11,
      epsrel=1e-10,
    )[0]
    var_scale = second / sigma**2 - mean_scale**2
  else:
    var_scale = (
      (maxwell(lambda m: fp(m) ** 2) - maxwell(fp) ** 2)
      + (gauss(lambda z: fp(z) ** 2) - gauss(fp) ** 2)
    ) / sigma**2
  return {"loc": mean_loc, "scale": mean_scale}, {"loc": var_loc, "scale": var_scale}


@pytest.mark.parametrize("coupling", [True, False], ids=["coupled", "uncoupled"])
def test_normal_unbiased_with_exact_variance(coupling, dtype):
  """f = cos: E = cos μ e^{−σ²/2}, so ∂μ = −sin μ e^{−σ²/2}, ∂σ = −σ cos μ e^{−σ²/2}.
  The quadrature means must match these closed forms (a check of the table)."""
  mu, sigma = 0.7, 1.3
  mean, var = _normal_mvd_moments(np.cos, mu, sigma, coupling)
  exact = {
    "loc": -math.sin(mu) * math.exp(-(sigma**2) / 2),
    "scale": -sigma * math.cos(mu) * math.exp(-(sigma**2) / 2),
  }
  for p in exact:
    assert abs(mean[p] - exact[p]) < 1e-8
  params = {"loc": jnp.asarray(mu, dtype), "scale": jnp.asarray(sigma, dtype)}
  dist_fn = lambda p: sg.dists.Normal(p["loc"], p["scale"])
  est = sg.measure_valued(num_samples=N, coupling=coupling, per_sample=True)
  out = _run(est, jnp.cos, dist_fn, params)
  assert out.per_sample["loc"].dtype == dtype and out.per_sample["loc"].shape == (N,)
  assert_unbiased(out.per_sample, exact, false_failure_rate=RATE, exact_variance=var)
  assert_variance(out.per_sample, var, false_failure_rate=RATE)
  np.testing.assert_allclose(out.grad["loc"], jnp.mean(out.per_sample["loc"]), rtol=1e-4, atol=1e-6)


def test_normal_coupling_of_mean_for_linear_cost():
  """f(x) = x: coupled g_μ = 2W/√(2π) has variance (2/π)(2 − π/2) = 4/π − 1;
  uncoupled (W + W')/√(2π) has half of it (Var W = 2 − π/2 for Rayleigh(1))."""
  params = jnp.array([0.3, 0.8])
  dist_fn = lambda p: sg.dists.Normal(p[0], p[1])
  for coupling, var in [(True, 4 / math.pi - 1), (False, 2 / math.pi - 0.5)]:
    est = sg.measure_valued(num_samples=N, coupling=coupling, per_sample=True)
    out = _run(est, lambda x: x, dist_fn, params, key=3)
    # ∂σ E[x] = 0 and both scale draws' difference has mean 0.
    loc = out.per_sample[:, 0]
    assert_unbiased(loc, np.float64(1.0), false_failure_rate=RATE, exact_variance=var)
    assert_variance(loc, np.float64(var), false_failure_rate=RATE)


def test_multivariate_non_separable_cost_and_pytree_params():
  """Independent coordinates, f(x) = x₀x₁ + sin(x₂): E = μ₀μ₁ + sin μ₂ e^{−σ₂²/2}.

  params is a nested pytree mapped to (loc, scale) by an arbitrary function
  (the chain rule goes through jax.vjp of dist_fn): loc = a + shift,
  scale = exp(s). ∂a_j = ∂μ_j, ∂shift = Σ_j ∂μ_j, ∂s_j = σ_j ∂σ_j, with
  ∂σ₂ = −σ₂ sin μ₂ e^{−σ₂²/2} and ∂σ₀ = ∂σ₁ = 0.
  """
  a = np.array([0.5, -1.0, 0.3])
  s = np.array([0.1, -0.2, 0.25])
  params = {
    "a": jnp.asarray(a, jnp.float32),
    "more": (jnp.asarray(0.0), {"s": jnp.asarray(s, jnp.float32)}),
  }

  def dist_fn(p):
    return sg.dists.Normal(p["a"] + p["more"][0], jnp.exp(p["more"][1]["s"]))

  f = lambda x: x[0] * x[1] + jnp.sin(x[2])
  mu, sig = a, np.exp(s)
  g_mu = np.array([mu[1], mu[0], math.cos(mu[2]) * math.exp(-(sig[2] ** 2) / 2)])
  g_sig = np.array([0.0, 0.0, -sig[2] * math.sin(mu[2]) * math.exp(-(sig[2] ** 2) / 2)])
  exact = {"a": g_mu, "more": (np.sum(g_mu), {"s": sig * g_sig})}
  est = sg.measure_valued(num_samples=N, per_sample=True)
  out = _run(est, f, dist_fn, params, key=4)
  assert jax.tree_util.tree_structure(out.grad) == jax.tree_util.tree_structure(params)
  assert out.per_sample["more"][1]["s"].shape == (N, 3)
  assert_unbiased(out.per_sample, exact, false_failure_rate=RATE)


def test_chunked_evaluation_matches_vectorised(monkeypatch):
  """Large d·d·n is evaluated in chunks with lax.map: same numbers."""
  params = {"loc": jnp.linspace(-1, 1, 6), "scale": jnp.linspace(0.5, 1.5, 6)}
  dist_fn = lambda p: sg.dists.Normal(p["loc"], p["scale"])
  f = lambda x: jnp.sum(jnp.sin(x) * jnp.arange(6.0)) + x[0] * x[5]
  est = sg.measure_valued(num_samples=40, per_sample=True)
  full = _run(est, f, dist_fn, params)
  monkeypatch.setattr(weak_module, "CHUNK_ELEMENTS", 36 * 7)  # 7 samples per chunk
  chunked = _run(est, f, dist_fn, params)  # a new trace reads the patched constant
  jax.tree_util.tree_map(
    lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6), full, chunked
  )


def test_grad_is_mean_of_per_sample_and_jit_agrees():
  params = jnp.array([0.2, 1.1])
  dist_fn = lambda p: sg.dists.Normal(p[0], p[1])
  a = sg.measure_valued(num_samples=64)
  b = sg.measure_valued(num_samples=64, per_sample=True)
  key = jax.random.key(9)
  ga = jax.jit(lambda k: a.estimate(k, jnp.cos, dist_fn, params, a.init(params)))(key)
  gb = jax.jit(lambda k: b.estimate(k, jnp.cos, dist_fn, params, b.init(params)))(key)
  np.testing.assert_allclose(ga.grad, gb.grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ga.grad, jnp.mean(gb.per_sample, 0), rtol=1e-5, atol=1e-6)
  assert ga.per_sample is None


# -- Bernoulli and Categorical: enumeration --------------------------------------


def test_bernoulli_exact_by_enumeration():
  """g_j = p_j(1 − p_j)(f(x; x_j=1) − f(x; x_j=0)) with x ~ p: its mean and
  second moment are sums over the 2³ outcomes; the exact gradient is
  Σ_x p(x) f(x) (x − p) (score of the logits). Coupling has no effect."""
  logits = np.array([0.3, -0.7, 1.2])
  w = np.array([1.0, -2.0, 0.5])
  f_np = lambda x: (x @ w - 0.4) ** 2 + x[0] * x[2]
  p = special.expit(logits)
  grad, mean, second = np.zeros(3), np.zeros(3), np.zeros(3)
  for bits in itertools.product([0.0, 1.0], repeat=3):
    x = np.array(bits)
    prob = np.prod(np.where(x == 1, p, 1 - p))
    grad += prob * f_np(x) * (x - p)
    g = np.array(
      [
        p[j]
        * (1 - p[j])
        * (f_np(np.where(np.arange(3) == j, 1.0, x)) - f_np(np.where(np.arange(3) == j, 0.0, x)))
        for j in range(3)
      ]
    )
    mean += prob * g
    second += prob * g**2
  np.testing.assert_allclose(mean, grad, atol=1e-12)
  wj = jnp.asarray(w, jnp.float32)
  f = lambda x: (x @ wj - 0.4) ** 2 + x[0] * x[2]
  dist_fn = lambda l: sg.dists.Bernoulli(logits=l)
  params = jnp.asarray(logits, jnp.float32)
  outs = [
    _run(sg.measure_valued(num_samples=N, per_sample=True, coupling=c), f, dist_fn, params, key=5)
    for c in (True, False)
  ]
  np.testing.assert_array_equal(outs[0].per_sample, outs[1].per_sample)
  assert_unbiased(
    outs[0].per_sample, grad, false_failure_rate=RATE, exact_variance=second - grad**2
  )
  assert_variance(outs[0].per_sample, second - grad**2, false_failure_rate=RATE)


@pytest.mark.parametrize("coupling", [True, False], ids=["coupled", "uncoupled"])
def test_categorical_exact_by_enumeration(coupling):
  """Two independent categoricals over K = 3, f(x) = T[x₀, x₁].

  g_{j,m} = π_{jm} (f(x; x_j=m) − f(x; x_j=y)) with y = x_j (coupled) or an
  independent y ~ π_j (uncoupled); mean and second moment by enumerating the
  9 outcomes of x (times 3 of y). Exact gradient: Σ_x p(x) f(x)(1[x_j=m] − π_jm).
  """
  logits = np.array([[0.5, -1.0, 0.2], [0.0, 1.0, -0.5]])
  table = np.array([[2.0, -1.0, 0.5], [3.0, 0.0, -2.0], [1.0, 4.0, 0.5]])
  pi = special.softmax(logits, axis=-1)
  grad = np.zeros((2, 3))
  mean = np.zeros((2, 3))
  second = np.zeros((2, 3))
  for x in itertools.product(range(3), repeat=2):
    px = pi[0, x[0]] * pi[1, x[1]]
    fx = table[x]
    for j in range(2):
      grad[j] += px * fx * (np.eye(3)[x[j]] - pi[j])
      for m in range(3):
        xm = list(x)
        xm[j] = m
        ys = [(x[j], 1.0)] if coupling else [(y, pi[j, y]) for y in range(3)]
        for y, py in ys:
          xy = list(x)
          xy[j] = y
          g = pi[j, m] * (table[tuple(xm)] - table[tuple(xy)])
          mean[j, m] += px * py * g
          second[j, m] += px * py * g * g
  np.testing.assert_allclose(mean, grad, atol=1e-12)
  t = jnp.asarray(table, jnp.float32)
  est = sg.measure_valued(num_samples=N, per_sample=True, coupling=coupling)
  out = _run(
    est,
    lambda x: t[x[0], x[1]],
    lambda l: sg.dists.Categorical(logits=l),
    jnp.asarray(logits, jnp.float32),
    key=6,
  )
  assert out.per_sample.shape == (N, 2, 3)
  var = second - grad**2
  assert_unbiased(out.per_sample, grad, false_failure_rate=RATE, exact_variance=var)
  assert_variance(out.per_sample, var, false_failure_rate=RATE)


# -- Poisson, Exponential, Gamma ---------------------------------------------------


@pytest.mark.parametrize("coupling", [True, False], ids=["coupled", "uncoupled"])
def test_poisson_exact_by_summation(coupling):
  """f(x) = 1/(1 + x), λ = 2.5: ∂λ E[f] = Σ_k f(k) p(k)(k/λ − 1). Coupled
  g = f(x + 1) − f(x); uncoupled g = f(y + 1) − f(y'), y, y' independent.
  Sums to k = 200 (the omitted tail is below 1e-100)."""
  lam = 2.5
  k = np.arange(201.0)
  pk = stats.poisson.pmf(k, lam)
  f_np = lambda x: 1.0 / (1.0 + x)
  grad = np.sum(f_np(k) * pk * (k / lam - 1))
  if coupling:
    g = f_np(k + 1) - f_np(k)
    var = np.sum(pk * g**2) - grad**2
  else:
    e = lambda h: np.sum(pk * h)
    var = (e(f_np(k + 1) ** 2) - e(f_np(k + 1)) ** 2) + (e(f_np(k) ** 2) - e(f_np(k)) ** 2)
  est = sg.measure_valued(num_samples=N, per_sample=True, coupling=coupling)
  out = _run(est, lambda x: 1.0 / (1.0 + x), lambda r: sg.dists.Poisson(r), jnp.asarray(lam), key=7)
  assert_unbiased(
    out.per_sample, np.float64(grad), false_failure_rate=RATE, exact_variance=np.float64(var)
  )
  assert_variance(out.per_sample, np.float64(var), false_failure_rate=RATE)


def _gamma_moment(k, beta, r):
  """E[x^r] for x ~ Gamma(k, β): k(k+1)…(k+r−1)/β^r."""
  return math.prod(k + i for i in range(r)) / beta**r


def _gamma_rate_x2_moments(alpha, beta, coupling):
  """Exact mean and variance of the rate estimator for f(x) = x².

  c = α/β. Coupled: x⁻ = x + e, e ~ Exponential(β), so g = −c(2xe + e²) with
  E[(2xe + e²)²] = 4E[x²]E[e²] + 4E[x]E[e³] + E[e⁴]. Uncoupled: g = c(a² − b²),
  a ~ Gamma(α, β), b ~ Gamma(α + 1, β), Var = c²(Var a² + Var b²).
  """
  c = alpha / beta
  mean = -2 * alpha * (alpha + 1) / beta**3
  m = lambda k, r: _gamma_moment(k, beta, r)
  if coupling:
    second = c**2 * (4 * m(alpha, 2) * m(1, 2) + 4 * m(alpha, 1) * m(1, 3) + m(1, 4))
    return mean, second - mean**2
  var = lambda k: m(k, 4) - m(k, 2) ** 2
  return mean, c**2 * (var(alpha) + var(alpha + 1))


@pytest.mark.parametrize(
  "coupling, dtype",
  [(True, jnp.float64), (False, jnp.float32)],
  ids=["coupled-float64", "uncoupled-float32"],
)
def test_exponential_and_gamma_rate(coupling, dtype):
  """Exponential(λ) is Gamma(1, λ): for λ = 2 the coupled variance is 48/λ⁶
  and the uncoupled one 104/λ⁶ (closed forms in _gamma_rate_x2_moments)."""
  for dist_fn, alpha, beta in [
    (lambda r: sg.dists.Exponential(r), 1.0, 2.0),
    (lambda r: sg.dists.Gamma(2.5, r), 2.5, 1.5),
  ]:
    mean, var = _gamma_rate_x2_moments(alpha, beta, coupling)
    if alpha == 1.0:
      assert math.isclose(var, (48 if coupling else 104) / beta**6)
    est = sg.measure_valued(num_samples=N, per_sample=True, coupling=coupling)
    with jax.enable_x64(dtype == jnp.float64):
      out = _run(est, lambda x: x**2, dist_fn, jnp.asarray(beta, dtype), key=8)
    assert out.per_sample.dtype == dtype
    assert_unbiased(
      out.per_sample, np.float64(mean), false_failure_rate=RATE, exact_variance=np.float64(var)
    )
    assert_variance(out.per_sample, np.float64(var), false_failure_rate=RATE)


def test_gamma_with_constant_concentration_through_pytree():
  """Only the rate depends on params (concentration closed over): accepted."""
  params = {"log_rate": jnp.log(jnp.array([1.5, 0.7]))}
  dist_fn = lambda p: sg.dists.Gamma(jnp.array([2.5, 1.2]), jnp.exp(p["log_rate"]))
  # E[x] = α/β ⇒ ∂ log β = −α/β.
  exact = {"log_rate": -np.array([2.5, 1.2]) / np.array([1.5, 0.7])}
  est = sg.measure_valued(num_samples=N, per_sample=True)
  out = _run(est, lambda x: jnp.sum(x), dist_fn, params, key=10)
  assert_unbiased(out.per_sample, exact, false_failure_rate=RATE)


# -- Bad input --------------------------------------------------------------------


def test_unsupported_family_lists_supported():
  est = sg.measure_valued(num_samples=4)
  mvn = lambda p: sg.dists.MultivariateNormalTriL(p, jnp.eye(2))
  with pytest.raises(
    ValueError,
    match=r"MultivariateNormalTriL.*Supported: .*Normal.*Bernoulli"
    r".*Categorical.*Poisson.*Exponential.*Gamma",
  ):
    est.estimate(jax.random.key(0), jnp.sum, mvn, jnp.zeros(2), est.init(None))
  user = sg.dists.from_log_prob(lambda t, x: -((x - t) ** 2), lambda t, k: t + jax.random.normal(k))
  with pytest.raises(ValueError, match="UserDistribution.*score_function"):
    est.estimate(jax.random.key(0), lambda x: x, user, jnp.zeros(()), est.init(None))


def test_gamma_concentration_depending_on_params_is_refused():
  est = sg.measure_valued(num_samples=4)
  dist_fn = lambda p: sg.dists.Gamma(p[0], p[1])
  with pytest.raises(ValueError, match="concentration depend on `params`"):
    est.estimate(jax.random.key(0), lambda x: x, dist_fn, jnp.array([2.0, 1.0]), est.init(None))


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"num_samples": 0}, "num_samples"),
    ({"num_samples": 2.0}, "num_samples=2"),
    ({"num_samples": 4, "coupling": "yes"}, "coupling='yes'"),
    ({"num_samples": 4, "per_sample": 1}, "per_sample=1"),
    ({"num_samples": 4, "control_variate": "delta"}, "control_variate"),
  ],
)
def test_bad_settings(kwargs, match):
  with pytest.raises((TypeError, ValueError), match=match):
    sg.measure_valued(**kwargs)


def test_no_recompilation_on_new_values_with_control_variate():
  est = sg.measure_valued(num_samples=8, control_variate=sg.control_variates.delta_method())
  dist_fn = lambda p: sg.dists.Normal(p["loc"], jnp.exp(p["log_scale"]))
  traces = []

  @jax.jit
  def step(key, params, state):
    traces.append(1)
    return est.estimate(key, lambda x: jnp.sum(jnp.cos(x)), dist_fn, params, state)

  params = {"loc": jnp.zeros(2), "log_scale": jnp.zeros(2)}
  out = step(jax.random.key(0), params, est.init(params))
  assert isinstance(out.state, sg.ControlVariateState)
  step(jax.random.key(1), {"loc": jnp.ones(2), "log_scale": -jnp.ones(2)}, out.state)
  assert len(traces) == 1
