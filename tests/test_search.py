"""Evolution strategies on the score function: fitness shaping, natural gradients, kept samples.

Exact answers in closed form; z-tests through ``sg.testing.assert_unbiased``
at a false-failure rate of 1e-6 per assertion (z ≈ 4.9, Bonferroni over
coordinates), on draws that are independent across keys (the rows of one
shaped estimate are coupled by the ranks, so never the rows of one key).
The comparisons with evosax run where it is installed (the ``dev`` extra);
the formulas are tested without it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad._src.natural import fisher_information

NORMAL = lambda p: sg.dists.Normal(p["loc"], p["scale"])
LOG_NORMAL = lambda p: sg.dists.Normal(p["loc"], jnp.exp(p["log_scale"]))


def _costs(seed, n, ties=False, nan=False):
  c = jax.random.normal(jax.random.key(seed), (n,))
  if ties:
    c = jnp.round(2 * c) / 2
  if nan:
    c = c.at[1].set(jnp.nan)
  return c


# -- the shapings' formulas ----------------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
def test_ranks_are_rankdata_average_minus_one(ties):
  for n in (2, 5, 64):
    c = _costs(n, n, ties)
    np.testing.assert_array_equal(sg.shaping.ranks(c), jax.scipy.stats.rankdata(c) - 1)
  assert sg.shaping.ranks(jnp.array([2.0, jnp.nan, 1.0])).tolist() == [1.0, 2.0, 0.0]


def test_centered_ranks_formula_and_order_invariance():
  c = jnp.array([5.0, -1.0, 5.0, 0.5, 100.0])
  # sorted: −1, 0.5, 5, 5, 100 → ranks 0, 1, 2.5 (tied), 2.5, 4
  expected = np.array([2.5, 0.0, 2.5, 1.0, 4.0]) / 4 - 0.5
  u = sg.shaping.centered_ranks().transform(c)
  np.testing.assert_allclose(u, expected, rtol=0, atol=1e-7)
  perm = jnp.array([4, 2, 0, 3, 1])
  np.testing.assert_array_equal(sg.shaping.centered_ranks().transform(c[perm]), u[perm])
  # Invariant to any increasing transform of the costs.
  np.testing.assert_array_equal(sg.shaping.centered_ranks().transform(jnp.exp(c / 10)), u)


def test_standardize_formula_nan_left_out():
  c = jnp.array([1.0, 2.0, jnp.nan, 6.0])
  valid = np.array([1.0, 2.0, 6.0])
  z = sg.shaping.standardize().transform(c)
  expected = (valid - valid.mean()) / np.sqrt(valid.var() + 1e-8)
  np.testing.assert_allclose(np.asarray(z)[[0, 1, 3]], expected, rtol=1e-6)
  assert np.isnan(z[2])
  # Two passes: a large offset does not cancel the spread away (float32).
  z = sg.shaping.standardize().transform(jnp.array([1e4, 1e4 + 1, 1e4 + 2]))
  np.testing.assert_allclose(z, [-math.sqrt(1.5), 0, math.sqrt(1.5)], rtol=1e-3)


def test_normalize_formula_and_flat_costs():
  np.testing.assert_allclose(
    sg.shaping.normalize(0.0, 2.0).transform(jnp.array([3.0, 1.0, 2.0])), [2.0, 0.0, 1.0]
  )
  np.testing.assert_array_equal(sg.shaping.normalize().transform(jnp.full(4, 3.0)), np.zeros(4))


def test_rank_weights_formula():
  n = 6
  raw = np.maximum(np.log(n / 2 + 1) - np.log(np.arange(1, n + 1)), 0)
  w = raw / raw.sum() - 1 / n
  c = jnp.array([0.3, -2.0, 7.0, 1.0, 0.0, 5.0])  # ranks 2, 0, 5, 3, 1, 4
  u = sg.shaping.rank_weights().transform(c)
  np.testing.assert_allclose(u, -w[[2, 0, 5, 3, 1, 4]], rtol=1e-6, atol=1e-7)
  assert abs(float(jnp.sum(u))) < 1e-6
  np.testing.assert_array_equal(
    sg.shaping.rank_weights().transform(jnp.full(4, jnp.nan)), np.zeros(4)
  )


def test_identical_to_evosax():
  evosax_shaping = pytest.importorskip("evosax.core.fitness_shaping")
  from evosax.algorithms.distribution_based.xnes import get_weights

  for n in (2, 7, 300):

    class Params:
      weights = get_weights(n)

    pairs = [
      (sg.shaping.centered_ranks(), evosax_shaping.centered_rank_fitness_shaping_fn, 1, 0.0),
      (sg.shaping.normalize(), evosax_shaping.normalize_fitness_shaping_fn, 1, 0.0),
      # The weights: ours rounded once from float64, evosax's float32 throughout.
      (sg.shaping.rank_weights(), evosax_shaping.weights_fitness_shaping_fn, -1, 1e-7),
      # evosax's variance is E[c²] − c̄² (jax.nn.standardize), ours two-pass:
      # equal to a few float32 ulps on these well-scaled costs.
      (sg.shaping.standardize(), evosax_shaping.standardize_fitness_shaping_fn, 1, 1e-6),
    ]
    both = jax.jit(
      lambda c: [(ours.transform(c), theirs(None, c, None, Params)) for ours, theirs, _, _ in pairs]
    )
    for ties in (False, True):
      for nan in (False, True):
        c = _costs(n, n, ties, nan and n > 2)
        for (got, expected), (ours, _, sign, tol) in zip(both(c), pairs):
          got, expected = np.asarray(got), sign * np.asarray(expected)
          message = f"{ours.name}, n={n}, ties={ties}, nan={nan}"
          if tol:
            np.testing.assert_allclose(got, expected, rtol=tol, atol=tol, err_msg=message)
          else:
            np.testing.assert_array_equal(got, expected, err_msg=message)


# -- the shaped estimator ------------------------------------------------------


def test_centered_ranks_unbiased_for_the_shaped_objective():
  # f(x) = x under N(μ, σ²): the shaped objective is h(x) = Φ((x − μ₀)/σ₀) − ½,
  # and ∇ E_θ[h] at θ₀ is (1/(2√π σ), 0) exactly, for every n ≥ 2 (the
  # unshaped gradient is (1, 0): the shaping is biased for ∇E[f]).
  mu, sigma = 0.7, 1.6
  params = {"loc": jnp.asarray(mu), "scale": jnp.asarray(sigma)}
  est = sg.score_function(num_samples=8, fitness_shaping=sg.shaping.centered_ranks())
  one = lambda k: est.estimate(k, lambda x: x, NORMAL, params, est.init(params)).grad
  grads = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 20000))
  exact = {"loc": 1 / (2 * math.sqrt(math.pi) * sigma), "scale": 0.0}
  sg.testing.assert_unbiased(grads, exact, false_failure_rate=1e-6)
  # Invariant to an increasing transform of f: the same estimates bit for bit.
  one_exp = lambda k: est.estimate(k, jnp.exp, NORMAL, params, est.init(params)).grad
  again = jax.jit(jax.vmap(one_exp))(jax.random.split(jax.random.key(0), 20000))
  np.testing.assert_array_equal(again["loc"], grads["loc"])


def test_shaped_gradient_is_the_utilities_formula_and_layer_equals_keyword():
  params = {"loc": jnp.array([0.5, -1.0]), "scale": jnp.array([1.0, 2.0])}
  f = lambda x: jnp.sum(x**2)
  key = jax.random.key(3)
  keyword = sg.score_function(
    num_samples=16, fitness_shaping=sg.shaping.standardize(), keep_samples=True
  )
  layer = sg.with_fitness_shaping(
    sg.score_function(num_samples=16, keep_samples=True), sg.shaping.standardize()
  )
  a = keyword.estimate(key, f, NORMAL, params, keyword.init(params))
  b = layer.estimate(key, f, NORMAL, params, layer.init(params))
  np.testing.assert_array_equal(a.grad["loc"], b.grad["loc"])
  x, c = a.samples, a.costs
  np.testing.assert_allclose(c, jax.vmap(f)(x), rtol=1e-6)
  u = sg.shaping.standardize().transform(c)
  z = (x - params["loc"]) / params["scale"]
  np.testing.assert_allclose(
    a.grad["loc"], jnp.mean(u[:, None] * z / params["scale"], 0), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
    a.grad["scale"], jnp.mean(u[:, None] * (z**2 - 1) / params["scale"], 0), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(a.value, jnp.mean(c), rtol=1e-6)
  # jax.grad of `.value` is the shaped gradient (the front door's loss).
  g = jax.grad(lambda p: keyword.estimate(key, f, NORMAL, p, keyword.init(p)).value)(params)
  np.testing.assert_allclose(g["loc"], a.grad["loc"], rtol=1e-6)


def test_shaped_derivatives_beyond_first_and_param_dependent_costs_refused():
  est = sg.score_function(num_samples=8, fitness_shaping=sg.shaping.centered_ranks())
  params = {"loc": jnp.asarray(0.3), "scale": jnp.asarray(1.0)}
  value = lambda p, f: est.estimate(jax.random.key(0), f, NORMAL, p, est.init(p)).value
  with pytest.raises(NotImplementedError, match="first derivatives"):
    jax.hessian(lambda p: value(p, jnp.sin))(params)
  with pytest.raises(NotImplementedError, match="depends on the parameters"):
    jax.grad(lambda p: value(p, lambda x: (x - p["loc"]) ** 2))(params)


def test_nan_cost_gives_nan_shaped_gradient():
  est = sg.score_function(num_samples=8, fitness_shaping=sg.shaping.centered_ranks())
  params = {"loc": jnp.asarray(0.3), "scale": jnp.asarray(1.0)}
  f = lambda x: jnp.where(x > 0.5, jnp.nan, x)
  out = est.estimate(jax.random.key(1), f, NORMAL, params, est.init(params))
  assert bool(jnp.isnan(out.value)) and bool(jnp.isnan(out.grad["loc"]))


def test_shaping_bad_input():
  shaping = sg.shaping.centered_ranks()
  with pytest.raises(ValueError, match=r"fitness_shaping=centered_ranks\(\).*num_samples=1"):
    sg.score_function(num_samples=1, fitness_shaping=shaping)
  with pytest.raises(ValueError, match=r"num_samples=1"):
    sg.with_fitness_shaping(sg.score_function(num_samples=1), shaping)
  with pytest.raises(TypeError, match="fitness_shaping"):
    sg.score_function(num_samples=4, fitness_shaping="centered_ranks")
  with pytest.raises(ValueError, match="shapes_costs=False"):
    sg.with_fitness_shaping(sg.pathwise(num_samples=4), shaping)
  with pytest.raises(ValueError, match="chunk"):
    sg.with_fitness_shaping(sg.score_function(num_samples=8, chunk_size=4), shaping)
  with pytest.raises(ValueError, match="chunk_size=4"):
    sg.chunked(sg.score_function(num_samples=8, fitness_shaping=shaping), 4)
  with pytest.raises(ValueError, match="already shaped"):
    sg.with_fitness_shaping(sg.score_function(num_samples=8, fitness_shaping=shaping), shaping)
  with pytest.raises(ValueError, match="control_variate"):
    sg.score_function(
      num_samples=8,
      fitness_shaping=shaping,
      control_variate=sg.control_variates.delta_method(),
    )
  with pytest.raises(ValueError, match="takes no control variate"):
    sg.with_control_variate(
      sg.score_function(num_samples=8, fitness_shaping=shaping),
      sg.control_variates.delta_method(),
    )
  with pytest.raises(ValueError, match="epsilon"):
    sg.shaping.standardize(epsilon=-1.0)
  with pytest.raises(ValueError, match="low"):
    sg.shaping.normalize(1.0, 0.0)


def test_shaping_with_moments_and_antithetic():
  est = sg.with_moments(
    sg.score_function(
      num_samples=8, sampling="antithetic", fitness_shaping=sg.shaping.centered_ranks()
    )
  )
  shaped = sg.with_fitness_shaping(
    sg.with_moments(sg.score_function(num_samples=8, sampling="antithetic")),
    sg.shaping.centered_ranks(),
  )
  params = {"loc": jnp.asarray(0.3), "scale": jnp.asarray(1.0)}
  a = est.estimate(jax.random.key(2), jnp.sin, NORMAL, params, est.init(params))
  b = shaped.estimate(jax.random.key(2), jnp.sin, NORMAL, params, shaped.init(params))
  np.testing.assert_allclose(a.moments.mean["loc"], a.grad["loc"], rtol=1e-5)
  np.testing.assert_array_equal(a.grad["loc"], b.grad["loc"])


# -- natural gradients -----------------------------------------------------------

A = jnp.array([1.0, 3.0])
C = jnp.array([0.5, -1.0])
QUAD = lambda x: jnp.sum(A * (x - C) ** 2)


def _natural_rows(dist_fn, params, n=40000, structure="dense"):
  est = sg.natural_gradient(sg.score_function(num_samples=n, per_sample=True), structure=structure)
  return est.estimate(jax.random.key(4), QUAD, dist_fn, params, est.init(params)).per_sample


def test_natural_gradient_loc_log_scale_is_snes_form():
  # E f = Σ a((μ − c)² + σ²); in (μ, ρ = log σ): ∇ = (2a(μ − c), 2aσ²),
  # F = diag(1/σ², 2), so F⁻¹∇ = (2aσ²(μ − c), aσ²).
  mu, sigma = jnp.array([1.0, 0.0]), jnp.array([0.8, 1.5])
  params = {"loc": mu, "log_scale": jnp.log(sigma)}
  exact = {"loc": 2 * A * sigma**2 * (mu - C), "log_scale": A * sigma**2}
  rows = _natural_rows(LOG_NORMAL, params)
  sg.testing.assert_unbiased(rows, exact, false_failure_rate=1e-6)
  # structure="diagonal" is exact here: the same rows to float rounding.
  diagonal = _natural_rows(LOG_NORMAL, params, structure="diagonal")
  np.testing.assert_allclose(diagonal["loc"], rows["loc"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(diagonal["log_scale"], rows["log_scale"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    fisher_information(LOG_NORMAL, params), np.diag(np.r_[1 / sigma**2, 2, 2]), rtol=1e-6
  )


def test_natural_gradient_loc_scale_and_coupled_coordinates():
  mu, sigma = jnp.array([1.0, 0.0]), jnp.array([0.8, 1.5])
  # (μ, σ): F = diag(1/σ², 2/σ²), F⁻¹∇ = (2aσ²(μ − c), aσ³).
  params = {"loc": mu, "scale": sigma}
  exact = {"loc": 2 * A * sigma**2 * (mu - C), "scale": A * sigma**3}
  sg.testing.assert_unbiased(_natural_rows(NORMAL, params), exact, false_failure_rate=1e-6)
  # μ = M θ: the natural gradient in θ is M⁻¹ (2aσ²(μ − c)) (parametrisation-invariant).
  m = jnp.array([[2.0, 1.0], [0.5, 1.0]])
  theta = jnp.linalg.solve(m, mu)
  coupled = lambda p: sg.dists.Normal(m @ p["theta"], jnp.exp(p["log_scale"]))
  params = {"theta": theta, "log_scale": jnp.log(sigma)}
  exact = {"theta": jnp.linalg.solve(m, 2 * A * sigma**2 * (mu - C)), "log_scale": A * sigma**2}
  sg.testing.assert_unbiased(_natural_rows(coupled, params), exact, false_failure_rate=1e-6)
  # There F is not diagonal: structure="diagonal" answers NaN, never its diagonal.
  est = sg.natural_gradient(sg.score_function(num_samples=8), structure="diagonal")
  out = est.estimate(jax.random.key(0), QUAD, coupled, params, est.init(params))
  assert bool(jnp.all(jnp.isnan(out.grad["theta"])))


def test_natural_gradient_reproduces_one_snes_generation():
  snes_module = pytest.importorskip("evosax.algorithms")
  d, n = 5, 16
  es = snes_module.SNES(population_size=n, solution=jnp.zeros(d))
  es_params = es.default_params
  mean0 = jnp.linspace(-1.0, 1.0, d)
  state = es.init(jax.random.key(0), mean0, es_params)
  key = jax.random.key(7)
  population, state = es.ask(key, state, es_params)
  f = lambda x: jnp.sum(jnp.arange(1.0, d + 1) * (x - 0.1) ** 2)
  fitness = jax.vmap(f)(population)
  new_state, _ = es.tell(key, population, fitness, state, es_params)
  est = sg.natural_gradient(
    sg.score_function(num_samples=n, fitness_shaping=sg.shaping.rank_weights())
  )
  params = {"loc": mean0, "log_scale": jnp.log(state.std)}
  out = est.estimate(key, f, LOG_NORMAL, params, est.init(params))
  # SNES (sgd, learning rate 1): μ ← μ − n (F⁻¹ĝ)_μ, log σ ← log σ − n·lr_σ (F⁻¹ĝ)_ρ.
  np.testing.assert_allclose(new_state.mean, mean0 - n * out.grad["loc"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    jnp.log(new_state.std),
    params["log_scale"] - n * es_params.lr_std_init * out.grad["log_scale"],
    rtol=1e-5,
    atol=1e-6,
  )


def test_natural_gradient_bad_input_and_moments():
  with pytest.raises(ValueError, match="damping"):
    sg.natural_gradient(sg.score_function(num_samples=4), damping=-1.0)
  with pytest.raises(ValueError, match="structure='banded'"):
    sg.natural_gradient(sg.score_function(num_samples=4), structure="banded")
  with pytest.raises(ValueError, match="with_moments outside"):
    sg.natural_gradient(sg.score_function(num_samples=4, moments=True))
  est = sg.natural_gradient(sg.score_function(num_samples=4))
  p = jnp.asarray(0.0)
  with pytest.raises(sg.NotApplicableError, match="Fisher information.*Bernoulli"):
    est.estimate(
      jax.random.key(0), lambda x: x, lambda q: sg.dists.Bernoulli(logits=q), p, est.init(p)
    )
  # with_moments outside: the moments of the preconditioned rows.
  params = {"loc": jnp.array([1.0, 0.0]), "log_scale": jnp.zeros(2)}
  outer = sg.with_moments(sg.natural_gradient(sg.score_function(num_samples=64)))
  out = outer.estimate(jax.random.key(1), QUAD, LOG_NORMAL, params, outer.init(params))
  np.testing.assert_allclose(out.moments.mean["loc"], out.grad["loc"], rtol=1e-5)
  inner = sg.natural_gradient(sg.score_function(num_samples=4))
  with pytest.raises(NotImplementedError, match="first derivatives"):
    jax.jacrev(
      lambda q: inner.estimate(jax.random.key(0), QUAD, LOG_NORMAL, q, inner.init(q)).grad["loc"]
    )(params)


# -- kept samples --------------------------------------------------------------


def test_keep_samples_returns_samples_and_raw_costs_and_default_keeps_none():
  params = {"loc": jnp.array([0.5, -1.0]), "scale": jnp.array([1.0, 2.0])}
  f = lambda x: jnp.sum(x**2)
  kept = sg.score_function(num_samples=16, keep_samples=True, sampling="antithetic")
  plain = sg.score_function(num_samples=16, sampling="antithetic")
  a = kept.estimate(jax.random.key(5), f, NORMAL, params, kept.init(params))
  b = plain.estimate(jax.random.key(5), f, NORMAL, params, plain.init(params))
  assert b.samples is None and b.costs is None
  assert a.samples.shape == (16, 2) and a.costs.shape == (16,)
  np.testing.assert_array_equal(a.grad["loc"], b.grad["loc"])
  np.testing.assert_allclose(a.costs, jax.vmap(f)(a.samples), rtol=1e-6)
  np.testing.assert_allclose(
    a.samples[8:] - params["loc"], -(a.samples[:8] - params["loc"]), rtol=1e-6, atol=1e-6
  )
  best = a.samples[jnp.argmin(a.costs)]
  assert float(f(best)) == float(jnp.min(a.costs))
  with pytest.raises(TypeError, match="keep_samples"):
    sg.score_function(num_samples=8, keep_samples="yes")
  with pytest.raises(ValueError, match="keep_samples"):
    sg.score_function(num_samples=8, keep_samples=True, chunk_size=4)
