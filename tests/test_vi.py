"""scoregrad.vi: ELBO, IWAE and Rényi bounds, each gradient unbiased for its bound.

Exact answers:

* A conjugate Gaussian model, prior z ~ N(φ, 1) (φ a model parameter that
  ``log_joint`` closes over), likelihood x | z ~ N(z, σ²), guide
  q = N(m, s²): the ELBO, its gradient and Hessian in (φ, m, log s) in
  closed form, log Z = log N(x; φ, 1 + σ²), and the K = 3 IWAE and Rényi
  bounds by 3-D Gauss–Hermite quadrature over the guide's noise
  (the integrand is smooth; 26 and 34 nodes per axis agree to 1e-10, checked
  below), differentiated by JAX for their gradients and Hessians.
* A discrete model with two binary latents and a Bernoulli guide: ELBO and
  the K = 2 IWAE bound by enumeration of all (pairs of) configurations.

Statistical assertions use scoregrad.testing.assert_unbiased with
false-failure rate RATE = 1e-7 (two-sided, Bonferroni over coordinates);
the file makes fewer than 40, so a correct library fails by chance with
probability below 4e-6 per run. Keys are fixed: runs are reproducible.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased

RATE = 1e-7
X, SIGMA = 1.3, 0.8  # the observation and the likelihood's scale
KEYS = 4000


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


PARAMS = {"phi": 0.2, "loc": 0.1, "log_scale": -0.4}


def _params(values=PARAMS):
  return {k: jnp.asarray(v, jnp.float64) for k, v in values.items()}


def _log_joint(phi):
  def log_joint(z):
    z = jnp.squeeze(z)
    prior = -0.5 * (z - phi) ** 2 - 0.5 * math.log(2 * math.pi)
    lik = -0.5 * ((X - z) / SIGMA) ** 2 - math.log(SIGMA) - 0.5 * math.log(2 * math.pi)
    return prior + lik

  return log_joint


def _guide(p):
  return sg.dists.Normal(p["loc"] * jnp.ones(1), jnp.exp(p["log_scale"]) * jnp.ones(1))


def _bound_fn(function, **kwargs):
  def bound(p, key):
    return function(_log_joint(p["phi"]), _guide(p), key, **kwargs)

  return bound


def exact_elbo(p):
  m, s, phi = p["loc"], jnp.exp(p["log_scale"]), p["phi"]
  prior = -0.5 * math.log(2 * math.pi) - 0.5 * ((m - phi) ** 2 + s**2)
  lik = -0.5 * math.log(2 * math.pi * SIGMA**2) - ((X - m) ** 2 + s**2) / (2 * SIGMA**2)
  entropy = 0.5 * jnp.log(2 * math.pi * math.e * s**2)
  return prior + lik + entropy


def log_evidence(phi):
  var = 1 + SIGMA**2
  return -0.5 * math.log(2 * math.pi * var) - 0.5 * (X - phi) ** 2 / var


def _quadrature(p, alpha, nodes=26, k=3):
  """E[(1/(1−α)) log (1/K) Σ_k w_k^{1−α}] by K-dimensional Gauss–Hermite quadrature."""
  eps, weights = np.polynomial.hermite_e.hermegauss(nodes)
  weights = weights / weights.sum()
  grid = jnp.asarray(np.stack(np.meshgrid(*[eps] * k, indexing="ij"), -1).reshape(-1, k))
  w = jnp.asarray(np.prod(np.stack(np.meshgrid(*[weights] * k, indexing="ij"), -1), -1).ravel())
  s = jnp.exp(p["log_scale"])
  z = p["loc"] + s * grid
  log_q = -0.5 * grid**2 - jnp.log(s) - 0.5 * math.log(2 * math.pi)
  log_w = jax.vmap(jax.vmap(_log_joint(p["phi"])))(z) - log_q
  lse = jax.nn.logsumexp((1 - alpha) * log_w, axis=1) - math.log(k)
  return jnp.sum(w * lse) / (1 - alpha)


def _flat(tree):
  return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def _grads(bound, params, num_keys=KEYS, seed=0):
  keys = jax.random.split(jax.random.key(seed), num_keys)
  values, grads = jax.jit(jax.vmap(lambda k: jax.value_and_grad(bound)(params, k)))(keys)
  return values, grads


# -- the exact answers themselves ------------------------------------------------


def test_quadrature_converged_and_bounds_ordered():
  p = _params()
  for alpha in (0.0, 0.5):
    for nodes in (26, 34):
      value, grad = jax.jit(jax.value_and_grad(lambda q: _quadrature(q, alpha, nodes)))(p)
      if nodes == 26:
        reference = (value, _flat(grad))
    np.testing.assert_allclose(reference[0], value, atol=1e-10)
    np.testing.assert_allclose(reference[1], _flat(grad), atol=1e-10)
  # K = 1 quadrature is the closed-form ELBO.
  np.testing.assert_allclose(_quadrature(p, 0.0, 40, k=1), exact_elbo(p), atol=1e-12)
  elbo, iwae, log_z = exact_elbo(p), _quadrature(p, 0.0), log_evidence(p["phi"])
  assert elbo < _quadrature(p, 0.5) < iwae < log_z


# -- ELBO --------------------------------------------------------------------------


@pytest.mark.parametrize(
  "gradient,baseline",
  [("pathwise", None), ("stl", None), ("score_function", sg.baselines.leave_one_out())],
)
def test_elbo_value_and_gradient_unbiased(gradient, baseline):
  p = _params()
  bound = _bound_fn(sg.vi.elbo, num_samples=8, gradient=gradient, baseline=baseline)
  values, grads = _grads(bound, p)
  assert_unbiased(values, exact_elbo(p), false_failure_rate=RATE)
  assert_unbiased(grads, jax.grad(exact_elbo)(p), false_failure_rate=RATE)


@pytest.mark.parametrize("gradient", ["pathwise", "score_function"])
def test_elbo_hessian_unbiased(gradient):
  p = _params()
  bound = _bound_fn(sg.vi.elbo, num_samples=8, gradient=gradient)
  keys = jax.random.split(jax.random.key(1), 2000)
  hessians = jax.jit(jax.vmap(lambda k: _flat(jax.hessian(bound)(p, k))))(keys)
  assert_unbiased(hessians, _flat(jax.hessian(exact_elbo)(p)), false_failure_rate=RATE)


def test_stl_has_zero_variance_at_the_posterior():
  """q = posterior: log w is constant in z, so STL's guide gradient is exactly 0."""
  post_var = 1 / (1 + 1 / SIGMA**2)
  post_mean = post_var * (PARAMS["phi"] + X / SIGMA**2)
  p = _params({"phi": PARAMS["phi"], "loc": post_mean, "log_scale": 0.5 * math.log(post_var)})
  for gradient, zero in [("stl", True), ("pathwise", False)]:
    _, grads = _grads(_bound_fn(sg.vi.elbo, num_samples=4, gradient=gradient), p, 50)
    spread = max(float(np.max(np.abs(grads[k]))) for k in ("loc", "log_scale"))
    assert (spread < 1e-12) == zero, (gradient, spread)
  _, grads = _grads(_bound_fn(sg.vi.iwae, num_samples=4, gradient="dreg"), p, 50)
  assert max(float(np.max(np.abs(grads[k]))) for k in ("loc", "log_scale")) < 1e-12


# -- IWAE and Rényi ---------------------------------------------------------------


@pytest.mark.parametrize("gradient", ["pathwise", "dreg", "vimco"])
def test_iwae_value_and_gradient_unbiased(gradient):
  p = _params()
  bound = _bound_fn(sg.vi.iwae, num_samples=3, gradient=gradient)
  values, grads = _grads(bound, p)
  assert_unbiased(values, _quadrature(p, 0.0), false_failure_rate=RATE)
  assert_unbiased(grads, jax.grad(lambda q: _quadrature(q, 0.0))(p), false_failure_rate=RATE)


@pytest.mark.parametrize("gradient", ["pathwise", "dreg"])
def test_renyi_value_and_gradient_unbiased(gradient):
  p = _params()
  bound = _bound_fn(sg.vi.renyi, num_samples=3, alpha=0.5, gradient=gradient)
  values, grads = _grads(bound, p)
  assert_unbiased(values, _quadrature(p, 0.5), false_failure_rate=RATE)
  assert_unbiased(grads, jax.grad(lambda q: _quadrature(q, 0.5))(p), false_failure_rate=RATE)


def test_iwae_pathwise_hessian_unbiased():
  p = _params()
  bound = _bound_fn(sg.vi.iwae, num_samples=3)
  keys = jax.random.split(jax.random.key(2), 2000)
  hessians = jax.jit(jax.vmap(lambda k: _flat(jax.hessian(bound)(p, k))))(keys)
  exact = _flat(jax.hessian(lambda q: _quadrature(q, 0.0))(p))
  assert_unbiased(hessians, exact, false_failure_rate=RATE)


@pytest.mark.parametrize(
  "function,kwargs",
  [
    (sg.vi.elbo, dict(gradient="stl")),
    (sg.vi.iwae, dict(gradient="dreg")),
    (sg.vi.iwae, dict(gradient="vimco")),
    (sg.vi.renyi, dict(gradient="dreg", alpha=0.5)),
  ],
)
def test_first_order_gradients_refuse_second_derivatives(function, kwargs):
  p = _params()
  bound = _bound_fn(function, num_samples=3, **kwargs)
  with pytest.raises(NotImplementedError, match="first derivatives only"):
    jax.jit(jax.hessian(bound))(p, jax.random.key(0))
  # ... in the guide's parameters and in the model's alike.
  only_phi = lambda phi: bound({**p, "phi": phi}, jax.random.key(0))
  with pytest.raises(NotImplementedError, match="first derivatives only"):
    jax.jit(jax.hessian(only_phi))(p["phi"])


def test_alpha_zero_is_iwae_and_one_sample_dreg_is_stl():
  p, key = _params(), jax.random.key(3)
  run = lambda function, **kw: jax.jit(jax.value_and_grad(_bound_fn(function, **kw)))(p, key)
  iwae = run(sg.vi.iwae, num_samples=5, gradient="dreg")
  renyi = run(sg.vi.renyi, num_samples=5, alpha=0.0, gradient="dreg")
  np.testing.assert_allclose(_flat(iwae), _flat(renyi), rtol=1e-12)
  dreg = run(sg.vi.iwae, num_samples=1, gradient="dreg")
  stl = run(sg.vi.elbo, num_samples=1, gradient="stl")
  np.testing.assert_allclose(_flat(dreg), _flat(stl), rtol=1e-12)


def test_num_outer_gives_independent_bounds():
  p, key = _params(), jax.random.key(4)
  bound = _bound_fn(sg.vi.iwae, num_samples=4, gradient="dreg", num_outer=6)
  values = jax.jit(bound)(p, key)
  assert values.shape == (6,) and len(set(np.asarray(values).tolist())) == 6
  jac = jax.jit(jax.jacrev(bound))(p, key)
  assert jac["loc"].shape == (6,)
  # Each row is the one-bound estimator at the split keys.
  keys = jax.random.split(key, 6)
  single = _bound_fn(sg.vi.iwae, num_samples=4, gradient="dreg")
  np.testing.assert_allclose(
    jac["loc"][2], jax.jit(jax.grad(single))(p, keys[2])["loc"], rtol=1e-12
  )
  # The mean over bounds is a loss; same key, same answer; no recompilation.
  traces = []

  @jax.jit
  def step(q, k):
    traces.append(1)
    return jax.grad(lambda r: jnp.mean(bound(r, k)))(q)

  a, b = step(p, key), step(p, key)
  step(jax.tree_util.tree_map(lambda x: x + 0.1, p), jax.random.key(5))
  np.testing.assert_array_equal(_flat(a), _flat(b))
  assert len(traces) == 1


@pytest.mark.parametrize("gradient", ["pathwise", "score_function"])
def test_elbo_chunked_is_the_mean_over_chunks(gradient):
  """chunk_size passes to sg.expectation: chunk c draws with fold_in(key, c)."""
  p, key = _params(), jax.random.key(8)
  chunked = _bound_fn(sg.vi.elbo, num_samples=8, gradient=gradient, chunk_size=4)
  single = _bound_fn(sg.vi.elbo, num_samples=4, gradient=gradient)
  value, grad = jax.jit(jax.value_and_grad(chunked))(p, key)
  parts = [jax.jit(jax.value_and_grad(single))(p, jax.random.fold_in(key, c)) for c in (0, 1)]
  np.testing.assert_allclose(value, np.mean([v for v, _ in parts]), rtol=1e-12)
  np.testing.assert_allclose(_flat(grad), np.mean([_flat(g) for _, g in parts], 0), rtol=1e-10)
  with pytest.raises(ValueError, match="chunk_size.*gradient='stl'"):
    sg.vi.elbo(_log_joint(0.0), _guide(p), key, num_samples=8, gradient="stl", chunk_size=4)


# -- a discrete guide: score function and VIMCO against enumeration ---------------

W, C = jnp.array([0.8, -0.5]), 1.2


def _discrete_log_joint(b):
  return jnp.dot(W, b) + C * b[0] * b[1] - 1.0


def _configurations():
  return jnp.asarray(list(itertools.product([0.0, 1.0], repeat=2)))


def _exact_discrete(logits, k):
  configs = _configurations()
  q = sg.dists.Bernoulli(logits=logits)
  log_w = jax.vmap(_discrete_log_joint)(configs) - jax.vmap(q.log_prob)(configs)
  log_q = jax.vmap(q.log_prob)(configs)
  total = 0.0
  for idx in itertools.product(range(4), repeat=k):
    idx = jnp.asarray(idx)
    total = total + jnp.exp(jnp.sum(log_q[idx])) * (jax.nn.logsumexp(log_w[idx]) - math.log(k))
  return total


@pytest.mark.parametrize(
  "function,kwargs,k",
  [
    (sg.vi.elbo, dict(gradient="score_function"), 1),
    (sg.vi.elbo, dict(gradient="score_function", baseline=sg.baselines.leave_one_out()), 1),
    (sg.vi.iwae, dict(gradient="vimco"), 2),
  ],
)
def test_discrete_guide_unbiased(function, kwargs, k):
  logits = jnp.array([0.3, -0.6])
  num_samples = 6 if k == 1 else k
  bound = lambda l, key: function(
    _discrete_log_joint, sg.dists.Bernoulli(logits=l), key, num_samples=num_samples, **kwargs
  )
  values, grads = _grads(bound, logits)
  exact = jax.jit(jax.value_and_grad(_exact_discrete), static_argnums=1)(logits, k)
  assert_unbiased(values, exact[0], false_failure_rate=RATE)
  assert_unbiased(grads, exact[1], false_failure_rate=RATE)


def test_score_function_elbo_hessian_unbiased_on_a_discrete_guide():
  logits = jnp.array([0.3, -0.6])
  bound = lambda l, key: sg.vi.elbo(
    _discrete_log_joint,
    sg.dists.Bernoulli(logits=l),
    key,
    num_samples=6,
    gradient="score_function",
    baseline=sg.baselines.leave_one_out(),
  )
  keys = jax.random.split(jax.random.key(6), 2000)
  hessians = jax.jit(jax.vmap(lambda key: jax.hessian(bound)(logits, key).ravel()))(keys)
  exact = jax.jit(jax.hessian(_exact_discrete), static_argnums=1)(logits, 1).ravel()
  assert_unbiased(hessians, exact, false_failure_rate=RATE)


# -- the rules: NaN, dtypes, foreign guides, bad input -----------------------------

ALL = [
  (sg.vi.elbo, dict(gradient="pathwise")),
  (sg.vi.elbo, dict(gradient="stl")),
  (sg.vi.elbo, dict(gradient="score_function")),
  (sg.vi.iwae, dict(gradient="pathwise")),
  (sg.vi.iwae, dict(gradient="dreg")),
  (sg.vi.iwae, dict(gradient="vimco")),
  (sg.vi.renyi, dict(gradient="pathwise", alpha=0.5)),
  (sg.vi.renyi, dict(gradient="dreg", alpha=0.5)),
]


@pytest.mark.parametrize("function,kwargs", ALL)
def test_nan_in_nan_out(function, kwargs):
  p = _params()
  bound = lambda q, key: function(
    lambda z: _log_joint(q["phi"])(z) * jnp.nan, _guide(q), key, num_samples=3, **kwargs
  )
  value, grads = jax.jit(jax.value_and_grad(bound))(p, jax.random.key(0))
  assert np.isnan(value) and np.all(np.isnan(_flat(grads)))


@pytest.mark.parametrize("function,kwargs", ALL)
def test_float32_stays_float32(function, kwargs):
  with jax.enable_x64(False):
    p = {k: jnp.asarray(v, jnp.float32) for k, v in PARAMS.items()}
    value, grads = jax.jit(jax.value_and_grad(_bound_fn(function, num_samples=3, **kwargs)))(
      p, jax.random.key(0)
    )
    assert value.dtype == jnp.float32
    assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))
    assert np.all(np.isfinite(_flat(grads)))


def test_numpyro_guide():
  dist = pytest.importorskip("numpyro.distributions")
  p, key = _params(), jax.random.key(7)

  def bound(q, k, native):
    scale = jnp.exp(q["log_scale"]) * jnp.ones(1)
    guide = (sg.dists.Normal if native else dist.Normal)(q["loc"] * jnp.ones(1), scale)
    return sg.vi.iwae(_log_joint(q["phi"]), guide, k, num_samples=4, gradient="dreg")

  np.testing.assert_allclose(
    _flat(jax.grad(bound)(p, key, False)), _flat(jax.grad(bound)(p, key, True)), rtol=1e-10
  )


def test_bad_input_errors_name_the_argument_and_the_alternative():
  key = jax.random.key(0)
  bernoulli = sg.dists.Bernoulli(logits=jnp.zeros(2))
  lj = _discrete_log_joint
  with pytest.raises(ValueError, match="not reparameterized.*gradient='score_function'"):
    sg.vi.elbo(lj, bernoulli, key, num_samples=4, gradient="stl")
  with pytest.raises(ValueError, match="not reparameterized.*gradient='vimco'"):
    sg.vi.iwae(lj, bernoulli, key, num_samples=4, gradient="dreg")
  with pytest.raises(ValueError, match="num_samples.*>= 2.*elbo"):
    sg.vi.iwae(lj, bernoulli, key, num_samples=1, gradient="vimco")
  normal = sg.dists.Normal(jnp.zeros(2), 1.0)
  with pytest.raises(ValueError, match="`log_joint\\(z\\)` must return a scalar.*\\(2,\\)"):
    sg.vi.elbo(lambda z: z**2, normal, key, num_samples=4)
  with pytest.raises(TypeError, match="floating-point.*int"):
    sg.vi.iwae(lambda z: jnp.sum(z > 0).astype(jnp.int32), normal, key, num_samples=4)
  with pytest.raises(ValueError, match="`gradient`.*'pathwise', 'stl', 'score_function'.*'dreg'"):
    sg.vi.elbo(lambda z: jnp.sum(z), normal, key, num_samples=4, gradient="dreg")
  with pytest.raises(ValueError, match="`gradient`.*'pathwise', 'dreg', 'vimco'.*got.*'stl'"):
    sg.vi.iwae(lambda z: jnp.sum(z), normal, key, num_samples=4, gradient="stl")
  with pytest.raises(ValueError, match="`baseline` applies to gradient='score_function'"):
    sg.vi.elbo(
      lambda z: jnp.sum(z), normal, key, num_samples=4, baseline=sg.baselines.leave_one_out()
    )
  with pytest.raises(ValueError, match="alpha.*= 1.*elbo"):
    sg.vi.renyi(lambda z: jnp.sum(z), normal, key, num_samples=4, alpha=1.0)
  with pytest.raises(TypeError, match="num_samples"):
    sg.vi.iwae(lambda z: jnp.sum(z), normal, key, num_samples=4.0)
  with pytest.raises(TypeError, match="log_joint"):
    sg.vi.elbo("not a function", normal, key, num_samples=4)
