"""``chunk_size=`` and ``moments=``: streamed estimates on one device.

What is claimed, and tested here: chunk c draws with ``fold_in(key, c)``, so
a chunked estimate equals (to float rounding) the mean of the unchunked
estimator with ``num_samples=chunk_size`` over those keys; with
``leave_one_out()`` it equals the unchunked leave-one-out estimate on the
union of the chunks' samples (two passes). The chunked samples differ from
the unchunked ones, so unbiasedness is tested against exact gradients.
Temporary memory does not grow with ``num_samples``. The same holds for
``arm``/``disarm`` (chunks of draws / pairs; unbiased with the exact variance
of the enumeration oracles) and for ``expectation``, whose value, gradient
and Hessian are the means over chunks (Hessian unbiased against enumeration).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg

import discrete_oracles as oracles

FALSE_FAILURE_RATE = 1e-6  # per test, over all coordinates (Bonferroni inside)

PARAMS = {"loc": jnp.array([1.0, -0.5, 0.3]), "log_scale": jnp.array([0.0, 0.2, -0.3])}
dist_fn = lambda p: sg.dists.Normal(p["loc"], jnp.exp(p["log_scale"]))
f = lambda x: jnp.sum((x - 0.2) ** 2)


def exact_grad(params):
  # E f = Σ (μ − 0.2)² + σ², σ = exp(s): ∂μ = 2(μ − 0.2), ∂s = 2σ².
  return {"loc": 2 * (params["loc"] - 0.2), "log_scale": 2 * jnp.exp(2 * params["log_scale"])}


def estimate(est, key=None, params=PARAMS, cost=f):
  key = jax.random.key(0) if key is None else key
  return jax.jit(lambda k, p: est.estimate(k, cost, dist_fn, p, est.init(p)))(key, params)


def close(a, b, rtol=2e-5, atol=1e-5):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


FACTORIES = {
  "score_function": lambda **kw: sg.score_function(**kw),
  "score_function_constant": lambda **kw: sg.score_function(
    baseline=sg.baselines.constant(2.0), **kw
  ),
  "pathwise": lambda **kw: sg.pathwise(**kw),
  "pathwise_antithetic": lambda **kw: sg.pathwise(sampling="antithetic", **kw),
  "measure_valued": lambda **kw: sg.measure_valued(**kw),
}


@pytest.mark.parametrize("name", FACTORIES)
def test_chunked_is_the_mean_of_per_chunk_estimates(name):
  make = FACTORIES[name]
  key, n, m = jax.random.key(1), 256, 64
  out = estimate(make(num_samples=n, chunk_size=m), key)
  one = make(num_samples=m)
  parts = [estimate(one, jax.random.fold_in(key, c)) for c in range(n // m)]
  close(out.value, np.mean([p.value for p in parts]))
  close(out.grad, jax.tree_util.tree_map(lambda *g: np.mean(g, axis=0), *[p.grad for p in parts]))


class _Chunks:
  """``base`` whose batch of n draws is the chunked path's samples (n = K·m).

  ``sample(key, (n,))`` concatenates ``base.sample(fold_in(key, c), (m,))``,
  so the UNCHUNKED estimator sees exactly the chunked estimator's samples.
  """

  reparameterized = False

  def __init__(self, base, m):
    self.base, self.m = base, m

  def sample(self, key, sample_shape=()):
    (n,) = sample_shape
    if n == self.m:
      return self.base.sample(key, (n,))
    return jnp.concatenate(
      [self.base.sample(jax.random.fold_in(key, c), (self.m,)) for c in range(n // self.m)]
    )

  def log_prob(self, x):
    return self.base.log_prob(x)


def test_leave_one_out_two_pass_is_the_unchunked_estimate_on_the_same_samples():
  n, m, key = 512, 128, jax.random.key(2)
  loo = sg.baselines.leave_one_out()
  chunked = sg.score_function(num_samples=n, chunk_size=m, baseline=loo, moments=True)
  out = jax.jit(
    lambda k, p: chunked.estimate(k, f, lambda q: _Chunks(dist_fn(q), m), p, chunked.init(p))
  )(key, PARAMS)
  plain = sg.score_function(num_samples=n, baseline=loo, per_sample=True)
  ref = jax.jit(
    lambda k, p: plain.estimate(k, f, lambda q: _Chunks(dist_fn(q), m), p, plain.init(p))
  )(key, PARAMS)
  close(out.value, ref.value)
  close(out.grad, ref.grad)
  # The streamed moments are those of the unchunked per-sample rows.
  assert int(out.moments.count) == n
  close(out.moments.mean, ref.grad)
  close(sg.diagnostics.variance(out.moments), sg.diagnostics.variance(ref.per_sample), rtol=1e-4)
  close(sg.diagnostics.snr(out.moments), sg.diagnostics.snr(ref.per_sample), rtol=1e-4)
  close(
    sg.diagnostics.total_variance(out.moments),
    sg.diagnostics.total_variance(ref.per_sample),
    rtol=1e-4,
  )


@pytest.mark.parametrize("name", ["score_function_loo", "pathwise", "measure_valued"])
def test_chunked_is_unbiased(name):
  # The tolerance is z·SE with SE from the streamed moments of the same
  # 2^14 per-sample gradients (leave-one-out rows are exchangeable and
  # their mean is unbiased; its SE is estimated the same way).
  make = {
    "score_function_loo": lambda **kw: sg.score_function(
      baseline=sg.baselines.leave_one_out(), **kw
    ),
    "pathwise": sg.pathwise,
    "measure_valued": sg.measure_valued,
  }[name]
  out = estimate(make(num_samples=1 << 14, chunk_size=1 << 11, moments=True), jax.random.key(3))
  z = sg.testing.z_threshold(FALSE_FAILURE_RATE, 6)
  se = sg.diagnostics.standard_error(out.moments)
  for g, e, s in zip(
    jax.tree_util.tree_leaves(out.grad),
    jax.tree_util.tree_leaves(exact_grad(PARAMS)),
    jax.tree_util.tree_leaves(se),
  ):
    assert np.all(np.abs(np.asarray(g) - np.asarray(e)) <= z * np.asarray(s) + 1e-6), (g, e, s)


def test_moments_without_chunks_match_the_rows(dtype):
  params = jax.tree_util.tree_map(lambda x: x.astype(dtype), PARAMS)
  est = sg.score_function(num_samples=128, moments=True)
  rows = sg.score_function(num_samples=128, per_sample=True)
  out, ref = estimate(est, params=params), estimate(rows, params=params)
  assert out.per_sample is None and out.moments.mean["loc"].dtype == dtype
  close(out.grad, ref.grad)
  close(sg.diagnostics.variance(out.moments), sg.diagnostics.variance(ref.per_sample), rtol=1e-4)
  bias = sg.diagnostics.bias(out.moments, exact_grad(params))
  close(bias.bias, sg.diagnostics.bias(ref.per_sample, exact_grad(params)).bias)


def test_chunked_float64(x64):
  params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), PARAMS)
  out = estimate(sg.score_function(num_samples=256, chunk_size=64, moments=True), params=params)
  assert out.grad["loc"].dtype == jnp.float64 and out.moments.m2["loc"].dtype == jnp.float64


def test_derivatives_of_the_chunked_value():
  n, m, key = 256, 64, jax.random.key(4)
  est = sg.score_function(num_samples=n, chunk_size=m, baseline=sg.baselines.leave_one_out())
  value = lambda p: est.estimate(key, f, dist_fn, p, est.init(p)).value
  close(jax.jit(jax.grad(value))(PARAMS), estimate(est, key).grad)
  # DiCE through the scan: the chunked Hessian is the mean of the chunks'.
  plain = sg.score_function(num_samples=n, chunk_size=m)
  one = sg.score_function(num_samples=m)
  hess = jax.jit(jax.hessian(lambda p: plain.estimate(key, f, dist_fn, p, plain.init(p)).value))
  parts = [
    jax.hessian(
      lambda p, c=c: one.estimate(jax.random.fold_in(key, c), f, dist_fn, p, one.init(p)).value
    )(PARAMS)
    for c in range(n // m)
  ]
  expected = jax.tree_util.tree_map(lambda *h: np.mean(h, axis=0), *parts)
  close(hess(PARAMS), expected, rtol=1e-4, atol=1e-4)
  grad_of_grad = jax.jit(
    jax.jacrev(jax.grad(lambda p: plain.estimate(key, f, dist_fn, p, plain.init(p)).value))
  )
  close(grad_of_grad(PARAMS), expected, rtol=1e-4, atol=1e-4)
  # measure_valued stays first-order only under chunking.
  mv = sg.measure_valued(num_samples=n, chunk_size=m)
  with pytest.raises(NotImplementedError, match="first derivatives only"):
    jax.jit(jax.hessian(lambda p: mv.estimate(key, f, dist_fn, p, mv.init(p)).value))(PARAMS)


def test_memory_does_not_grow_with_num_samples_and_no_recompilation():
  key = jax.random.key(0)
  temps = {}
  for n in (1 << 12, 1 << 20):
    est = sg.score_function(
      num_samples=n, chunk_size=1 << 10, baseline=sg.baselines.leave_one_out()
    )
    fn = jax.jit(lambda k, p, est=est: est.estimate(k, f, dist_fn, p, est.init(p)))
    temps[n] = fn.lower(key, PARAMS).compile().memory_analysis().temp_size_in_bytes
  assert temps[1 << 20] <= 1.1 * temps[1 << 12] + 4096, temps
  est = sg.score_function(num_samples=1 << 12, chunk_size=1 << 10)
  fn = jax.jit(lambda k, p: est.estimate(k, f, dist_fn, p, est.init(p)))
  fn(key, PARAMS)
  fn(jax.random.key(1), PARAMS)
  assert fn._cache_size() == 1


def test_chunk_errors_name_the_argument():
  with pytest.raises(ValueError, match=r"`chunk_size` must divide num_samples=100.*chunk_size=25"):
    sg.score_function(num_samples=100, chunk_size=30)
  with pytest.raises(ValueError, match=r"`chunk_size` must divide"):
    sg.pathwise(num_samples=100, chunk_size=7)
  with pytest.raises(TypeError, match="`chunk_size` must be a Python int"):
    sg.measure_valued(num_samples=100, chunk_size=10.0)
  with pytest.raises(ValueError, match="per_sample=True.*moments=True"):
    sg.score_function(num_samples=100, chunk_size=10, per_sample=True)
  with pytest.raises(ValueError, match="keeps state across steps"):
    sg.score_function(
      num_samples=100, chunk_size=10, baseline=sg.baselines.moving_average(decay=0.9)
    )
  with pytest.raises(ValueError, match="optimal.*cannot stream"):
    sg.score_function(num_samples=100, chunk_size=10, baseline=sg.baselines.optimal())
  with pytest.raises(
    ValueError, match="`chunk_size` is not supported together with `control_variate`"
  ):
    sg.pathwise(num_samples=100, chunk_size=10, control_variate=sg.control_variates.delta_method())
  with pytest.raises(ValueError, match="sampling='qmc'"):
    sg.pathwise(num_samples=100, chunk_size=10, sampling="qmc")
  with pytest.raises(ValueError, match="must be even"):
    sg.pathwise(num_samples=100, chunk_size=25, sampling="antithetic")
  with pytest.raises(TypeError, match="`moments` must be a bool"):
    sg.score_function(num_samples=100, moments=1)
  with pytest.raises(TypeError, match="`sharding` must be a jax.sharding.Sharding"):
    sg.score_function(num_samples=100, sharding=4)


# --- arm and disarm -----------------------------------------------------------

BITS = jnp.array([0.3, -0.7, 1.2])
bernoulli_fn = lambda logits: sg.dists.Bernoulli(logits=logits)
separable = oracles.separable_problem().f
DISCRETE = {
  "arm": lambda n, **kw: sg.arm(num_samples=n, **kw),
  "disarm": lambda n, **kw: sg.disarm(num_pairs=n, **kw),
}


def _bernoulli_run(est):
  """``(key) -> Estimate`` of ``est`` on the separable problem, jitted once."""
  return jax.jit(lambda k: est.estimate(k, separable, bernoulli_fn, BITS, est.init(BITS)))


@pytest.mark.parametrize("name", DISCRETE)
def test_discrete_chunked_is_the_mean_of_per_chunk_estimates(name):
  make = DISCRETE[name]
  key, n, m = jax.random.key(5), 256, 64
  out = _bernoulli_run(make(n, chunk_size=m, moments=True))(key)
  one = _bernoulli_run(make(m))
  parts = [one(jax.random.fold_in(key, c)) for c in range(n // m)]
  close(out.value, np.mean([p.value for p in parts]))
  close(out.grad, np.mean([p.grad for p in parts], axis=0))
  # Streamed moments of the n per-draw rows: their mean is the estimate.
  assert int(out.moments.count) == n
  close(out.moments.mean, out.grad)
  # `.value` carries the gradient through the scan, as unchunked.
  est = make(n, chunk_size=m)
  value = lambda p: est.estimate(key, separable, bernoulli_fn, p, ()).value
  close(jax.jit(jax.grad(value))(BITS), out.grad)


@pytest.mark.parametrize("problem", sorted(oracles.BERNOULLI_PROBLEMS))
@pytest.mark.parametrize("name", DISCRETE)
def test_discrete_chunked_is_unbiased_with_the_exact_variance(name, problem):
  # Independent chunked estimates (num = 32 in chunks of 8) against the
  # enumerated gradient. Each is the mean of 32 iid draws (chunks keyed by
  # fold_in are independent), so its exact variance is the one-draw
  # variance / 32; the variance check fails if chunks reused their samples.
  prob = oracles.BERNOULLI_PROBLEMS[problem]
  num, draws = 32, 4000
  est = DISCRETE[name](num, chunk_size=8)
  logits = jnp.asarray(prob.logits, jnp.float32)
  keys = jax.random.split(jax.random.key(6), draws)
  grads = jax.jit(
    jax.vmap(lambda k: est.estimate(k, prob.f, bernoulli_fn, logits, est.init(logits)).grad)
  )(keys)
  _, exact = oracles.bernoulli_exact(prob)
  _, var = (oracles.arm_moments if name == "arm" else oracles.disarm_moments)(prob)
  sg.testing.assert_unbiased(
    grads, exact, false_failure_rate=FALSE_FAILURE_RATE, exact_variance=var / num
  )
  sg.testing.assert_variance(grads, var / num, false_failure_rate=FALSE_FAILURE_RATE)


# --- expectation ----------------------------------------------------------------


def _expect(params, key, **kw):
  return sg.expectation(f, dist_fn(params), key, **kw)


def _derivatives(fn, order):
  """``fn``'s value and derivatives up to ``order`` (1 or 2), in one jit."""
  if order == 1:
    return jax.jit(lambda *a: (fn(*a), jax.grad(fn)(*a)))
  return jax.jit(lambda *a: (fn(*a), jax.grad(fn)(*a), jax.hessian(fn)(*a)))


@pytest.mark.parametrize(
  "kw",
  [{}, {"baseline": sg.baselines.constant(2.0)}, {"estimator": "pathwise"}],
  ids=["score_function", "score_function_constant", "pathwise"],
)
def test_expectation_chunked_is_the_mean_of_per_chunk_expectations(kw):
  key, n, m = jax.random.key(7), 256, 64
  # DiCE through the scan: the chunked Hessian is the mean of the chunks'.
  order = 1 if kw.get("estimator") == "pathwise" else 2
  chunked = _derivatives(lambda p: _expect(p, key, num_samples=n, chunk_size=m, **kw), order)
  one = _derivatives(lambda p, k: _expect(p, k, num_samples=m, **kw), order)
  parts = [one(PARAMS, jax.random.fold_in(key, c)) for c in range(n // m)]
  expected = jax.tree_util.tree_map(lambda *x: np.mean(x, axis=0), *parts)
  close(chunked(PARAMS), expected, rtol=1e-4, atol=1e-4)


def test_expectation_leave_one_out_two_pass_is_the_unchunked_on_the_same_samples():
  n, m, key = 256, 64, jax.random.key(8)
  loo = sg.baselines.leave_one_out()
  same = lambda p, **kw: sg.expectation(f, _Chunks(dist_fn(p), m), key, baseline=loo, **kw)
  chunked = _derivatives(lambda p: same(p, num_samples=n, chunk_size=m), 2)
  plain = _derivatives(lambda p: same(p, num_samples=n), 2)
  close(chunked(PARAMS), plain(PARAMS), rtol=1e-4, atol=1e-4)


def _bernoulli_hessian(prob):
  """∂²/∂l² Σ_b w(b) f(b), w = Π p^b (1−p)^(1−b): ∂_i w = w (b_i − p_i), so
  the Hessian is Σ_b w f [(b − p)(b − p)ᵀ − diag(p (1 − p))]."""
  p = oracles.sigmoid(prob.logits)
  hess = np.zeros((len(p), len(p)))
  for b in oracles.all_bits(len(p)):
    hess += (
      oracles.bernoulli_prob(b, p) * prob.f_np(b) * (np.outer(b - p, b - p) - np.diag(p * (1 - p)))
    )
  return hess


@pytest.mark.parametrize(
  "baseline", [None, sg.baselines.leave_one_out()], ids=["none", "leave_one_out"]
)
def test_expectation_chunked_hessian_is_unbiased(baseline):
  # Independent chunked Hessians (16 samples in 4 chunks of 4) against the
  # enumerated one; 9 coordinates, Bonferroni inside assert_unbiased.
  prob = oracles.coupled_problem()
  logits = jnp.asarray(prob.logits, jnp.float32)

  def value(l, k):
    return sg.expectation(
      prob.f, bernoulli_fn(l), k, num_samples=16, chunk_size=4, baseline=baseline
    )

  keys = jax.random.split(jax.random.key(9), 4000)
  hessians = jax.jit(jax.vmap(lambda k: jax.hessian(value)(logits, k)))(keys)
  sg.testing.assert_unbiased(
    hessians, _bernoulli_hessian(prob), false_failure_rate=FALSE_FAILURE_RATE
  )


def test_expectation_chunked_first_order_only_and_memory():
  key = jax.random.key(10)
  # Laplace's log_prob is differentiable once: the gradient goes through the
  # scan, a second derivative is refused there too.
  laplace = lambda p, **kw: sg.expectation(
    f, sg.dists.Laplace(p["loc"], jnp.exp(p["log_scale"])), key, num_samples=64, **kw
  )
  grad = jax.jit(jax.grad(lambda p: laplace(p, chunk_size=16)))(PARAMS)
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grad))
  with pytest.raises(NotImplementedError, match="first derivatives only"):
    jax.jit(jax.hessian(lambda p: laplace(p, chunk_size=16)))(PARAMS)
  # Reverse mode recomputes each chunk: jax.grad's temporaries do not grow with n.
  temps = {}
  for n in (1 << 12, 1 << 20):
    fn = jax.jit(
      jax.grad(
        lambda p, n=n: _expect(
          p, key, num_samples=n, chunk_size=1 << 10, baseline=sg.baselines.leave_one_out()
        )
      )
    )
    temps[n] = fn.lower(PARAMS).compile().memory_analysis().temp_size_in_bytes
  assert temps[1 << 20] <= 1.1 * temps[1 << 12] + 4096, temps


def test_new_chunk_errors_name_the_argument():
  with pytest.raises(ValueError, match=r"`chunk_size` must divide num_samples=100.*chunk_size=30"):
    sg.arm(num_samples=100, chunk_size=30)
  with pytest.raises(
    ValueError, match=r"`chunk_size` must divide num_pairs=10 .*got chunk_size=3\. Use chunk_size=2"
  ):
    sg.disarm(num_pairs=10, chunk_size=3)
  with pytest.raises(ValueError, match="per_sample=True returns num_pairs.*moments=True"):
    sg.disarm(num_pairs=10, chunk_size=5, per_sample=True)
  with pytest.raises(TypeError, match="`moments` must be a bool"):
    sg.arm(num_samples=10, moments="yes")
  dist, key = sg.dists.Normal(0.0, 1.0), jax.random.key(0)
  with pytest.raises(ValueError, match=r"`chunk_size` must divide num_samples=100.*chunk_size=7"):
    sg.expectation(jnp.square, dist, key, num_samples=100, chunk_size=7)
  with pytest.raises(ValueError, match="`chunk_size` must be"):
    sg.expectation(jnp.square, dist, key, num_samples=100, chunk_size=0)
  with pytest.raises(ValueError, match=r"`chunk_size` must divide"):
    sg.expectation(jnp.square, dist, key, num_samples=100, chunk_size=30, estimator="pathwise")
