"""The layers (sg.chunked, sg.sharded, sg.with_moments, sg.with_control_variate).

Specification:
* each layer wraps every factory estimator it claims and gives, for the same
  key, the same estimate as the factory keyword it replaces (one code path);
* layers compose in either order where that means something;
* a layer refuses what the estimator says it cannot do, naming both;
* ``sg.expectation`` accepts every estimator object and is unbiased with each
  (z-tests against closed forms: false-failure rate 1e-6 per assertion, 1e-5
  over the file), and its Hessian with the score function is unbiased when f
  closes over the parameters (issue 21, item 8).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg

KEY = jax.random.key(0)


def _normal(p):
  return sg.dists.Normal(p[0], p[1])


def _bernoulli(p):
  return sg.dists.Bernoulli(logits=p)


NORMAL = (jnp.array([0.4, 1.3]), _normal, lambda x: jnp.sin(2.0 * x) + 0.3 * x**3)
BERNOULLI = (jnp.array([0.3, -0.8, 1.1]), _bernoulli, lambda b: jnp.sum((b - 0.45) ** 2 * b[0]))

# (factory, its keyword settings, the problem it runs on)
FACTORIES = [
  (sg.score_function, dict(num_samples=32), NORMAL),
  (sg.score_function, dict(num_samples=32, baseline=sg.baselines.leave_one_out()), NORMAL),
  (sg.pathwise, dict(num_samples=32), NORMAL),
  (sg.pathwise, dict(num_samples=32, sampling="antithetic"), NORMAL),
  (sg.measure_valued, dict(num_samples=16), NORMAL),
  (sg.arm, dict(num_samples=16), BERNOULLI),
  (sg.disarm, dict(num_pairs=16), BERNOULLI),
]
IDS = [
  "score_function",
  "score_function+loo",
  "pathwise",
  "pathwise+antithetic",
  "measure_valued",
  "arm",
  "disarm",
]


def _run(est, problem, key=KEY):
  params, dist_fn, f = problem
  return est.estimate(key, f, dist_fn, params, est.init(params))


def _same(a, b):
  np.testing.assert_allclose(a.value, b.value, rtol=1e-6, atol=1e-7)
  for x, y in zip(jax.tree_util.tree_leaves(a.grad), jax.tree_util.tree_leaves(b.grad)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factory,settings,problem", FACTORIES, ids=IDS)
def test_chunked_is_the_keyword(factory, settings, problem):
  layered = sg.chunked(factory(**settings), chunk_size=8)
  keyword = factory(**settings, chunk_size=8)
  _same(_run(layered, problem), _run(keyword, problem))


@pytest.mark.parametrize("factory,settings,problem", FACTORIES, ids=IDS)
def test_with_moments_is_the_keyword_in_either_order(factory, settings, problem):
  plain = _run(sg.with_moments(factory(**settings)), problem)
  _same(plain, _run(factory(**settings, moments=True), problem))
  a = _run(sg.with_moments(sg.chunked(factory(**settings), 8)), problem)
  b = _run(sg.chunked(sg.with_moments(factory(**settings)), 8), problem)
  c = _run(factory(**settings, chunk_size=8, moments=True), problem)
  for other in (b, c):
    _same(a, other)
    np.testing.assert_allclose(a.moments.m2, other.moments.m2, rtol=1e-5, atol=1e-6)
  assert int(a.moments.count) == settings.get("num_samples", settings.get("num_pairs"))


@pytest.mark.parametrize("factory,settings,problem", FACTORIES, ids=IDS)
def test_sharded_is_the_keyword(factory, settings, problem):
  mesh = jax.make_mesh((1,), ("samples",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("samples"))
  layered = jax.jit(lambda k: _run(sg.sharded(factory(**settings), sharding), problem, k))
  keyword = jax.jit(lambda k: _run(factory(**settings, sharding=sharding), problem, k))
  _same(layered(KEY), keyword(KEY))
  # A sharded chunked estimator: each chunk is sharded.
  both = _run(sg.sharded(sg.chunked(factory(**settings), 8), sharding), problem)
  _same(both, _run(factory(**settings, chunk_size=8), problem))


def test_layers_keep_the_traits_and_the_state():
  est = sg.chunked(sg.score_function(num_samples=64, baseline=sg.baselines.leave_one_out()), 16)
  assert est.traits.chunk_size == 16 and est.traits.num_samples == 64
  assert "chunked(score_function(num_samples=64" in repr(est)
  params, dist_fn, f = NORMAL
  out = jax.jit(est.estimate, static_argnums=(1, 2))(KEY, f, dist_fn, params, est.init(params))
  assert isinstance(out.state, sg.ScoreFunctionState)


# -- refusals ------------------------------------------------------------------


def test_layers_refuse_an_estimator_without_traits():
  mine = sg.GradientEstimator(init=lambda p: (), estimate=lambda *a: None)
  mesh = jax.make_mesh((1,), ("samples",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("samples"))
  for layer, arg in ((sg.chunked, 8), (sg.with_moments, None), (sg.sharded, sharding)):
    with pytest.raises(TypeError, match=r"carries no scoregrad.Traits"):
      layer(mine) if arg is None else layer(mine, arg)
  with pytest.raises(TypeError, match=r"`estimator` must be a scoregrad.GradientEstimator"):
    sg.chunked("score_function", 8)


def test_chunked_refusals_name_the_estimator_and_the_setting():
  with pytest.raises(ValueError, match=r"already chunked"):
    sg.chunked(sg.chunked(sg.score_function(num_samples=64), 16), 8)
  with pytest.raises(ValueError, match=r"must divide num_samples=64.*chunk_size=10"):
    sg.chunked(sg.score_function(num_samples=64), 10)
  with pytest.raises(ValueError, match=r"must divide num_pairs=8"):
    sg.chunked(sg.disarm(num_pairs=8), 3)
  with pytest.raises(ValueError, match=r"moving_average.*keeps state"):
    sg.chunked(sg.score_function(num_samples=64, baseline=sg.baselines.moving_average()), 16)
  with pytest.raises(ValueError, match=r"optimal.*cannot stream"):
    sg.chunked(sg.score_function(num_samples=64, baseline=sg.baselines.optimal()), 16)
  with pytest.raises(ValueError, match=r"per_sample=True.*moments=True"):
    sg.chunked(sg.pathwise(num_samples=64, per_sample=True), 16)
  with pytest.raises(ValueError, match=r"sampling='qmc'.*different point set"):
    sg.chunked(sg.pathwise(num_samples=64, sampling="qmc"), 16)
  with pytest.raises(ValueError, match=r"chunk_size must be even"):
    sg.chunked(sg.pathwise(num_samples=64, sampling="antithetic"), 1)


def test_sharded_refuses_a_second_sharding():
  mesh = jax.make_mesh((1,), ("samples",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("samples"))
  with pytest.raises(ValueError, match=r"already sharded"):
    sg.sharded(sg.sharded(sg.score_function(num_samples=8), sharding), sharding)
  with pytest.raises(TypeError, match=r"not the string 'samples'"):
    sg.sharded(sg.score_function(num_samples=8), "samples")


# -- with_control_variate asks the estimator (issue 21, item 9) ----------------


def _exact_normal_grad(mu, sigma):
  # f = sin 2x + 0.3 x^3: E sin 2x = sin(2μ) e^{−2σ²}, E x³ = μ³ + 3μσ².
  e = np.exp(-2.0 * sigma**2)
  return np.array(
    [
      2.0 * np.cos(2 * mu) * e + 0.3 * (3 * mu**2 + 3 * sigma**2),
      -4.0 * sigma * np.sin(2 * mu) * e + 0.3 * 6 * mu * sigma,
    ]
  )


@pytest.mark.parametrize(
  "inner",
  [
    lambda: sg.score_function(
      num_samples=4, baseline=sg.baselines.leave_one_out(), per_sample=True
    ),
    lambda: sg.score_function(num_samples=4, baseline=sg.baselines.leave_one_out()),
  ],
  ids=["loo-rows", "loo-no-rows"],
)
def test_estimated_coefficient_on_coupled_rows_is_unbiased(inner):
  # On today's main the layer fitted β on the leave-one-out rows themselves:
  # ∂loc 0.972 against 1.582 (z = −6.5). It now fits β on the estimator's
  # independent rows (its Traits' fit_rows) and stays unbiased.
  est = sg.with_control_variate(inner(), sg.control_variates.delta_method(coefficient="per_leaf"))
  params, dist_fn, f = NORMAL
  keys = jax.random.split(jax.random.key(1), 4000)
  grads = jax.jit(jax.vmap(lambda k: est.estimate(k, f, dist_fn, params, est.init(params)).grad))(
    keys
  )
  sg.testing.assert_unbiased(grads, _exact_normal_grad(0.4, 1.3), false_failure_rate=1e-6)


def test_estimated_coefficient_on_antithetic_rows_is_refused_naming_both():
  # The antithetic pair couples the rows and there is no independent refit.
  with pytest.raises(
    ValueError, match=r"pathwise\(num_samples=8, sampling='antithetic'\).*couples"
  ):
    sg.with_control_variate(
      sg.pathwise(num_samples=8, sampling="antithetic", per_sample=True),
      sg.control_variates.delta_method(coefficient="per_leaf"),
    )


# -- expectation takes any estimator -------------------------------------------


def _bernoulli_exact(logits, f):
  """E f(b) for independent bits by enumeration, and its gradient in the logits."""
  d = logits.shape[0]
  configs = jnp.array(np.array(np.meshgrid(*[[0.0, 1.0]] * d, indexing="ij")).reshape(d, -1).T)

  def mean(l):
    lp = jnp.sum(configs * jax.nn.log_sigmoid(l) + (1 - configs) * jax.nn.log_sigmoid(-l), 1)
    return jnp.sum(jnp.exp(lp) * jax.vmap(f)(configs))

  return mean(logits), jax.grad(mean)(logits)


EXPECTATION_BERNOULLI = {
  "score_function": lambda: sg.score_function(num_samples=8),
  "score_function+loo": lambda: sg.score_function(
    num_samples=8, baseline=sg.baselines.leave_one_out()
  ),
  "score_function+optimal": lambda: sg.score_function(
    num_samples=8, baseline=sg.baselines.optimal()
  ),
  "arm": lambda: sg.arm(num_samples=4),
  "disarm": lambda: sg.disarm(num_pairs=4),
  "measure_valued": lambda: sg.measure_valued(num_samples=4),
  "rao_blackwell": lambda: sg.rao_blackwell(num_summed=2, num_samples=4),
  "exact": lambda: sg.exact(),
  "chunked(disarm)": lambda: sg.chunked(sg.disarm(num_pairs=4), 2),
  "with_control_variate(disarm)": lambda: sg.with_control_variate(
    sg.disarm(num_pairs=4), sg.control_variates.delta_method()
  ),
}


@pytest.mark.parametrize("name", list(EXPECTATION_BERNOULLI))
def test_expectation_with_every_bernoulli_estimator_is_unbiased(name):
  est = EXPECTATION_BERNOULLI[name]()
  logits, _, f = BERNOULLI
  _, exact = _bernoulli_exact(logits, f)

  def loss(l, k):
    return sg.expectation(f, sg.dists.Bernoulli(logits=l), k, estimator=est)

  keys = jax.random.split(jax.random.key(2), 3000)
  grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(logits, keys)
  sg.testing.assert_unbiased(grads, exact, false_failure_rate=1e-6, rtol=1e-5)


EXPECTATION_NORMAL = {
  "score_function+loo": lambda: sg.score_function(
    num_samples=8, baseline=sg.baselines.leave_one_out()
  ),
  "pathwise": lambda: sg.pathwise(num_samples=8),
  "pathwise+antithetic": lambda: sg.pathwise(num_samples=8, sampling="antithetic"),
  "measure_valued": lambda: sg.measure_valued(num_samples=4),
  "chunked(pathwise)": lambda: sg.chunked(sg.pathwise(num_samples=8), 4),
}


@pytest.mark.parametrize("name", list(EXPECTATION_NORMAL))
def test_expectation_with_every_normal_estimator_is_unbiased(name):
  est = EXPECTATION_NORMAL[name]()
  params, _, f = NORMAL

  def loss(p, k):
    return sg.expectation(f, sg.dists.Normal(p[0], p[1]), k, estimator=est)

  keys = jax.random.split(jax.random.key(3), 3000)
  grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(params, keys)
  sg.testing.assert_unbiased(grads, _exact_normal_grad(0.4, 1.3), false_failure_rate=1e-6)


def test_expectation_first_order_estimators_refuse_a_hessian():
  logits, _, f = BERNOULLI

  def loss(l):
    return sg.expectation(f, sg.dists.Bernoulli(logits=l), KEY, estimator=sg.disarm(num_pairs=4))

  with pytest.raises(NotImplementedError, match=r"first derivatives only"):
    jax.hessian(loss)(logits)


def test_expectation_refuses_shorthand_settings_with_an_object():
  with pytest.raises(ValueError, match=r"`num_samples=8` is a setting of the string shorthand"):
    sg.expectation(
      jnp.sin, sg.dists.Normal(0.0, 1.0), KEY, estimator=sg.pathwise(num_samples=8), num_samples=8
    )
  with pytest.raises(TypeError, match=r"needs `num_samples=`"):
    sg.expectation(jnp.sin, sg.dists.Normal(0.0, 1.0), KEY)
  with pytest.raises(ValueError, match=r"GradientEstimator .* or one of the shorthands"):
    sg.expectation(jnp.sin, sg.dists.Normal(0.0, 1.0), KEY, estimator="disarm", num_samples=8)


# -- second order when f closes over the parameters (issue 21, item 8) ---------


def test_hessian_of_value_with_a_cost_that_closes_over_params():
  # f(b; l) = l·b, b ~ Bernoulli(σ(l)): E = l σ(l), d²E/dl² = 2σ' + l σ''.
  # On ddbc6c1 the Hessian of `.value` averaged −0.0109 against 0.478 (z ≈ −6500).
  l0 = 0.7
  s = jax.nn.sigmoid(l0)
  exact = 2 * s * (1 - s) + l0 * s * (1 - s) * (1 - 2 * s)
  for baseline in (None, sg.baselines.leave_one_out()):
    for est in (
      sg.score_function(num_samples=8, baseline=baseline),
      sg.score_function(num_samples=8, baseline=baseline, chunk_size=4),
      sg.score_function(num_samples=8, baseline=baseline, per_sample=True),
    ):

      def value(l, k, est=est):
        f = lambda b: l * b
        return est.estimate(k, f, lambda q: sg.dists.Bernoulli(logits=q), l, est.init(l)).value

      keys = jax.random.split(jax.random.key(4), 4000)
      h = jax.jit(jax.vmap(jax.hessian(value), in_axes=(None, 0)))(jnp.asarray(l0), keys)
      sg.testing.assert_unbiased(h, np.asarray(exact), false_failure_rate=1e-6)


def test_streamed_moments_keep_float64_precision():
  # Issue 21, item 13: combine_moments divided two int32 counts, which JAX
  # computes in float32, so x64 moments differed from `.grad` by ~1e-8.
  with jax.enable_x64(True):
    params = jnp.array([0.4, 1.3], jnp.float64)
    est = sg.score_function(num_samples=96, chunk_size=32, moments=True)
    out = est.estimate(KEY, NORMAL[2], _normal, params, est.init(params))
    assert out.moments.mean.dtype == jnp.float64
    np.testing.assert_allclose(out.moments.mean, out.grad, rtol=1e-12, atol=1e-13)


# -- the value's standard error (issue 21, item 5) -----------------------------


@pytest.mark.parametrize("factory,settings,problem", FACTORIES, ids=IDS)
def test_value_moments_give_the_value_standard_error(factory, settings, problem):
  rows = _run(factory(**settings, per_sample=True), problem)
  values = np.asarray(rows.per_sample_values)
  np.testing.assert_allclose(values.mean(), rows.value, rtol=1e-5, atol=1e-6)
  out = _run(factory(**settings, moments=True), problem)
  se = float(sg.diagnostics.standard_error(out.value_moments))
  np.testing.assert_allclose(se, values.std(ddof=1) / np.sqrt(values.size), rtol=1e-4)
  assert out.per_sample_values is None  # moments only: no rows kept
  # Streamed across chunks: count and mean of all rows.
  chunked = _run(factory(**settings, chunk_size=8, moments=True), problem)
  assert int(chunked.value_moments.count) == values.size
  np.testing.assert_allclose(chunked.value_moments.mean, chunked.value, rtol=1e-5, atol=1e-6)


def test_value_standard_error_is_calibrated():
  # E[x/2 + sin x] under N(0.4, 1.3²) = μ/2 + sin(μ) e^{−σ²/2}; across keys
  # (value − exact) / SE is ≈ t with 63 degrees of freedom (variance 1.033).
  # Over 2000 keys the sample variance of z has sd ≈ 0.033, so the band
  # 0.85–1.20 is > 5 sd from 1.033 on either side: false failure < 1e-6.
  mu, sigma = 0.4, 1.3
  exact = 0.5 * mu + np.sin(mu) * np.exp(-(sigma**2) / 2)
  est = sg.with_moments(sg.pathwise(num_samples=64))
  f = lambda x: 0.5 * x + jnp.sin(x)
  params = jnp.array([mu, sigma])

  def one(k):
    out = est.estimate(k, f, _normal, params, est.init(params))
    return out.value, sg.diagnostics.standard_error(out.value_moments)

  values, ses = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(5), 2000))
  z = (np.asarray(values) - exact) / np.asarray(ses)
  assert 0.85 < np.var(z) < 1.20, np.var(z)


# -- the stateless relaxation estimators (no keyword shorthands: layers only) ----

CATEGORICAL = (
  jnp.array([0.3, -0.2, 0.1]),
  lambda p: sg.dists.Categorical(logits=p),
  lambda onehot: jnp.sum((onehot @ jnp.array([0.0, 1.0, 2.0]) - 1.5) ** 2),
)
RELAXED = {
  "reinmax": lambda n, rows=False: sg.reinmax(num_samples=n, temperature=1.0, per_sample=rows),
  "gumbel_rao": lambda n, rows=False: sg.gumbel_rao(
    num_samples=n, num_inner=2, temperature=1.0, per_sample=rows
  ),
  "gumbel_softmax": lambda n, rows=False: sg.gumbel_softmax(
    num_samples=n, temperature=0.5, per_sample=rows
  ),
  "straight_through": lambda n, rows=False: sg.straight_through(num_samples=n, per_sample=rows),
}


@pytest.mark.parametrize("name", list(RELAXED))
def test_chunked_relaxed_estimator_has_the_plain_estimators_mean(name):
  """Chunks of 4 of a 16-sample estimate average like the 16-sample estimate.

  These estimators are biased for ∇E[f], so the reference is the plain
  estimator's own mean: a two-sample z-test per coordinate on 256 keys each
  (|z| ≤ 4.9 per coordinate, Bonferroni over 3 coordinates × 4 estimators:
  false-failure rate about 1e-5 for the set). Summing chunks instead of
  averaging them (a factor 4) or dropping one fails it.
  """
  params, dist_fn, f = CATEGORICAL
  plain, layered = RELAXED[name](16), sg.chunked(RELAXED[name](16), 4)
  keys = jax.random.split(jax.random.key(3), 512)

  def grads(est, ks):
    run = jax.jit(jax.vmap(lambda k: est.estimate(k, f, dist_fn, params, est.init(params)).grad))
    return np.asarray(run(ks))

  a, b = grads(plain, keys[:256]), grads(layered, keys[256:])
  z = (a.mean(0) - b.mean(0)) / np.sqrt(a.var(0, ddof=1) / 256 + b.var(0, ddof=1) / 256)
  assert np.all(np.abs(z) < 4.9), z


@pytest.mark.parametrize("name", list(RELAXED))
def test_with_moments_on_a_relaxed_estimator_gives_its_rows_standard_error(name):
  params, dist_fn, f = CATEGORICAL
  out = _run(sg.with_moments(RELAXED[name](16)), CATEGORICAL)
  rows = _run(RELAXED[name](16, rows=True), CATEGORICAL)
  assert int(out.moments.count) == 16
  np.testing.assert_allclose(out.grad, rows.grad, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
    sg.diagnostics.standard_error(out.moments),
    np.std(np.asarray(rows.per_sample), axis=0, ddof=1) / np.sqrt(16),
    rtol=1e-4,
    atol=1e-7,
  )
  assert float(sg.diagnostics.standard_error(out.value_moments)) > 0
