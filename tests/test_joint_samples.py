"""Joint (pytree) samples, foreign joint distributions, low-precision QMC, relaxations (issue 9).

* TFP-on-JAX joint distributions (``JointDistributionNamed``): TFP does not
  import with our jax, so ``_JointNamed`` below is a duck-typed double of its
  interface — ``sample(seed=, sample_shape=)`` returning a dict, ``log_prob``
  of a dict adding the components' log-densities with broadcasting, and
  ``batch_shape``/``event_shape``/``reparameterization_type`` as dicts with
  one entry per component. The adapter (dists/_base.py) reads those per
  component: batch dimensions, event shapes, and reparameterization (pathwise
  needs every component reparameterized).
* NumPyro has no joint distribution: dict and tuple samples go through
  ``scoregrad.dists.from_log_prob`` (here with NumPyro log-densities), and
  NumPyro distributions keep working through the adapter.
* ``pathwise(sampling="qmc" | "antithetic")`` with bfloat16/float16 parameters.
* ``gumbel_softmax``/``rebar``/``relax`` refuse temperatures below the
  dtype's machine epsilon, and relaxed estimators refuse costs whose JAX
  derivative is identically zero (jnp.round, floor, comparisons, ...).

Statistical assertions use false-failure rate 1e-6 each (Bonferroni over
coordinates); there are 15 of them, so this file fails by chance with
probability below 1.5e-5 for any key. Every other assertion is exact.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased

RATE = 1e-6


# -- A duck-typed double of TFP-on-JAX's distributions ---------------------------------


class _ReparameterizationType:
  """Like tfd.ReparameterizationType: compared by identity, shown by its name."""

  def __init__(self, name):
    self._name = name

  def __repr__(self):
    return f"<Reparameterization Type: {self._name}>"


FULLY_REPARAMETERIZED = _ReparameterizationType("FULLY_REPARAMETERIZED")
NOT_REPARAMETERIZED = _ReparameterizationType("NOT_REPARAMETERIZED")


class _TensorShape:
  """Like tf.TensorShape: iterable of ints, but neither a tuple nor a pytree."""

  def __init__(self, dims):
    self._dims = tuple(int(d) for d in dims)

  def __iter__(self):
    return iter(self._dims)

  def __len__(self):
    return len(self._dims)

  def as_list(self):
    return list(self._dims)

  def __repr__(self):
    return f"TensorShape({list(self._dims)})"


class _Normal:
  reparameterization_type = FULLY_REPARAMETERIZED

  def __init__(self, loc, scale):
    self.loc, self.scale = jnp.asarray(loc), jnp.asarray(scale)
    self.batch_shape = _TensorShape(jnp.broadcast_shapes(self.loc.shape, self.scale.shape))
    self.event_shape = _TensorShape(())

  def sample(self, sample_shape=(), seed=None):
    eps = jax.random.normal(seed, tuple(sample_shape) + tuple(self.batch_shape))
    return self.loc + self.scale * eps

  def log_prob(self, x):
    return -0.5 * ((x - self.loc) / self.scale) ** 2 - jnp.log(self.scale) - 0.5 * np.log(2 * np.pi)


class _Bernoulli:
  reparameterization_type = NOT_REPARAMETERIZED

  def __init__(self, logits):
    self.logits = jnp.asarray(logits)
    self.batch_shape = _TensorShape(self.logits.shape)
    self.event_shape = _TensorShape(())

  def sample(self, sample_shape=(), seed=None):
    shape = tuple(sample_shape) + tuple(self.batch_shape)
    return jax.random.bernoulli(seed, jax.nn.sigmoid(self.logits), shape).astype(jnp.int32)

  def log_prob(self, x):
    return x * self.logits - jax.nn.softplus(self.logits)


class _JointNamed:
  """Like tfd.JointDistributionNamed over independent components (no dependencies)."""

  def __init__(self, model):
    self.model = dict(model)

  @property
  def batch_shape(self):
    return {k: d.batch_shape for k, d in self.model.items()}

  @property
  def event_shape(self):
    return {k: d.event_shape for k, d in self.model.items()}

  @property
  def reparameterization_type(self):
    return {k: d.reparameterization_type for k, d in self.model.items()}

  def sample(self, sample_shape=(), seed=None):
    keys = jax.random.split(seed, len(self.model))
    return {k: d.sample(sample_shape, seed=kk) for (k, d), kk in zip(self.model.items(), keys)}

  def log_prob(self, value):
    return sum(d.log_prob(value[k]) for k, d in self.model.items())  # broadcasts, as TFP's


class _JointNamedAutoBatched(_JointNamed):
  """Like tfd.JointDistributionNamedAutoBatched: one batch shape, per-component events."""

  @property
  def batch_shape(self):
    return _TensorShape(())

  @property
  def event_shape(self):
    return {k: d.batch_shape for k, d in self.model.items()}

  def log_prob(self, value):
    def component(d, v):  # the component's batch dimensions are part of the joint's event
      lp = d.log_prob(v)
      return jnp.sum(lp, axis=tuple(range(lp.ndim - len(d.batch_shape), lp.ndim)))

    return sum(component(d, value[k]) for k, d in self.model.items())


def _run(est, f, dist_fn, params, key):
  return jax.jit(lambda k: est.estimate(k, f, dist_fn, params, est.init(params)))(key)


# -- 1. Foreign joint distributions -----------------------------------------------------

MU = {"x": jnp.array([0.4, -0.3]), "y": jnp.array([0.2, 0.7])}
TWO_NORMALS = lambda p: _JointNamed({"x": _Normal(p["x"], 1.0), "y": _Normal(p["y"], 2.0)})
# E[Σx² + Σ y] = Σ μx² + 2 + Σ μy: gradient (2 μx, 1).
TWO_NORMALS_COST = lambda s: jnp.sum(s["x"] ** 2) + jnp.sum(s["y"])
TWO_NORMALS_GRAD = {"x": 2 * MU["x"], "y": jnp.ones(2)}


def test_joint_named_adapter_reads_shapes_per_component():
  d = sg.dists.as_distribution(TWO_NORMALS(MU))
  assert d.event_shape == {"x": (2,), "y": (2,)}
  assert d.reparameterized and d.not_reparameterized == ()
  x = d.sample(jax.random.key(0), (5,))
  assert x["x"].shape == (5, 2) and d.log_prob(x).shape == (5,)
  one = jax.tree_util.tree_map(lambda a: a[0], x)
  exact = sum(
    jnp.sum(-0.5 * ((one[k] - MU[k]) / s) ** 2 - jnp.log(s) - 0.5 * np.log(2 * np.pi))
    for k, s in [("x", 1.0), ("y", 2.0)]
  )
  np.testing.assert_allclose(d.log_prob(one), exact, rtol=1e-6)
  auto = sg.dists.as_distribution(
    _JointNamedAutoBatched({"x": _Normal(MU["x"], 1.0), "y": _Normal(0.0, 1.0)})
  )
  assert auto.event_shape == {"x": (2,), "y": ()}
  assert auto.log_prob(auto.sample(jax.random.key(1), (3,))).shape == (3,)


@pytest.mark.parametrize(
  "name,make",
  [
    ("score_function", lambda: sg.score_function(num_samples=40_000, per_sample=True)),
    ("pathwise", lambda: sg.pathwise(num_samples=20_000, per_sample=True)),
  ],
)
def test_joint_named_of_normals_unbiased(name, make):
  """Used to crash: the adapter counted batch_shape's dict keys as batch dimensions."""
  out = _run(make(), TWO_NORMALS_COST, TWO_NORMALS, MU, jax.random.key(11))
  assert_unbiased(out.per_sample, TWO_NORMALS_GRAD, false_failure_rate=RATE)


def test_joint_components_with_different_batch_shapes_refused():
  """TFP's log_prob would broadcast the scalar component over the other's batch."""
  joint = _JointNamed({"x": _Normal(jnp.zeros(3), 1.0), "y": _Normal(0.0, 1.0)})
  with pytest.raises(
    ValueError,
    match=r"`dist` is a joint distribution \(_JointNamed\).*"
    r"different batch shapes \(x: \(3,\), y: \(\)\).*Independent",
  ):
    sg.dists.as_distribution(joint)


# -- 2. Reparameterization decided per component ----------------------------------------

MIXED = lambda m: _JointNamed({"x": _Normal(m, 1.0), "b": _Bernoulli(logits=m)})
MIXED_COST = lambda s: s["x"] + s["b"]  # E = μ + σ(μ); at μ = 0 the gradient is 1.25


def test_mixed_joint_is_not_reparameterized():
  d = sg.dists.as_distribution(MIXED(jnp.array(0.0)))
  assert not d.reparameterized and d.not_reparameterized == ("b",)
  est = sg.pathwise(num_samples=8)
  # Used to return 1.0 (the Bernoulli's path silently dropped), not 1.25.
  with pytest.raises(
    ValueError,
    match=r"pathwise.*_JointNamed \(a joint distribution: its "
    r"components 'b' are not reparameterized.*score_function",
  ):
    est.estimate(jax.random.key(0), MIXED_COST, MIXED, jnp.array(0.0), est.init(0.0))
  with pytest.raises(ValueError, match="components 'b' are not reparameterized"):
    sg.expectation(
      MIXED_COST, MIXED(jnp.array(0.0)), jax.random.key(0), num_samples=4, estimator="pathwise"
    )


def test_mixed_joint_score_function_unbiased():
  est = sg.score_function(num_samples=100_000, per_sample=True)
  out = _run(est, MIXED_COST, MIXED, jnp.array(0.0), jax.random.key(12))
  assert_unbiased(out.per_sample, np.array(1.25), false_failure_rate=RATE)
  # Through sg.expectation too (the DiCE surrogate of the same estimator).
  grads = jax.jit(
    jax.vmap(
      jax.grad(lambda m, k: sg.expectation(MIXED_COST, MIXED(m), k, num_samples=8)),
      in_axes=(None, 0),
    )
  )(jnp.array(0.0), jax.random.split(jax.random.key(13), 20_000))
  assert_unbiased(grads, np.array(1.25), false_failure_rate=RATE)


# -- NumPyro: real distributions, and joints through from_log_prob ----------------------


def test_numpyro_batched_event_distribution_still_works():
  npd = pytest.importorskip("numpyro.distributions")
  params = jnp.array([[0.4, -0.3, 0.1], [0.0, 0.5, -0.2]])
  dist_fn = lambda p: npd.Normal(p, 1.0).to_event(1)  # batch (2,), event (3,)
  d = sg.dists.as_distribution(dist_fn(params))
  assert d.event_shape == (2, 3) and d.reparameterized and d.not_reparameterized == ()
  assert d.log_prob(d.sample(jax.random.key(0), (4,))).shape == (4,)
  est = sg.score_function(num_samples=50_000, per_sample=True)
  out = _run(est, lambda x: jnp.sum(x**2), dist_fn, params, jax.random.key(14))
  assert_unbiased(out.per_sample, 2 * np.asarray(params), false_failure_rate=RATE)
  bern = sg.dists.as_distribution(npd.Bernoulli(logits=jnp.zeros(2)))
  assert not bern.reparameterized


def _numpyro_joint(npd, as_tuple):
  """{x ~ Normal(θ, 1), b ~ Bernoulli(logits=θ)} with NumPyro's log-densities."""

  def sample(theta, key):
    kx, kb = jax.random.split(key)
    x = npd.Normal(theta, 1.0).sample(kx)
    b = npd.Bernoulli(logits=theta).sample(kb).astype(jnp.float32)
    return (x, b) if as_tuple else {"x": x, "b": b}

  def log_prob(theta, s):
    x, b = s if as_tuple else (s["x"], s["b"])
    return npd.Normal(theta, 1.0).log_prob(x) + npd.Bernoulli(logits=theta).log_prob(b)

  cost = (lambda s: s[0] + s[1]) if as_tuple else MIXED_COST
  return sg.dists.from_log_prob(log_prob, sample), cost


@pytest.mark.parametrize("as_tuple", [False, True], ids=["dict", "tuple"])
def test_numpyro_joint_through_from_log_prob_unbiased(as_tuple):
  npd = pytest.importorskip("numpyro.distributions")
  family, cost = _numpyro_joint(npd, as_tuple)
  # Not at θ = 0: there NumPyro's Bernoulli(logits=θ).log_prob, written with
  # max(θ, 0) and |θ|, has the one-sided derivative b instead of b − 1/2.
  theta = 0.3
  exact = 1.0 + jax.nn.sigmoid(theta) * (1 - jax.nn.sigmoid(theta))
  est = sg.score_function(num_samples=100_000, per_sample=True)
  out = _run(est, cost, family, jnp.array(theta), jax.random.key(15))
  assert_unbiased(out.per_sample, np.asarray(exact), false_failure_rate=RATE)


# -- 3. from_log_prob with dict and tuple samples ----------------------------------------

THETA = {"mu": jnp.array(0.3), "log_rate": jnp.array(0.2)}


def _user_joint(as_tuple, reparameterized=False):
  """x ~ Normal(μ, 1), y ~ Exponential(rate = e^ρ); E[x² + y] = μ² + 1 + e^{−ρ}."""

  def sample(p, key):
    kx, ky = jax.random.split(key)
    x = p["mu"] + jax.random.normal(kx)
    y = jax.random.exponential(ky) / jnp.exp(p["log_rate"])
    return (x, y) if as_tuple else {"x": x, "y": y}

  def log_prob(p, s):
    x, y = s if as_tuple else (s["x"], s["y"])
    return -0.5 * (x - p["mu"]) ** 2 + p["log_rate"] - jnp.exp(p["log_rate"]) * y

  cost = (lambda s: s[0] ** 2 + s[1]) if as_tuple else (lambda s: s["x"] ** 2 + s["y"])
  return sg.dists.from_log_prob(log_prob, sample, reparameterized=reparameterized), cost


USER_GRAD = {"mu": 2 * THETA["mu"], "log_rate": -jnp.exp(-THETA["log_rate"])}


@pytest.mark.parametrize("as_tuple", [False, True], ids=["dict", "tuple"])
def test_user_joint_samples_shapes(as_tuple):
  family, _ = _user_joint(as_tuple)
  d = family(THETA)
  one = d.sample(jax.random.key(0))
  batch = d.sample(jax.random.key(0), (4, 5))
  assert type(one) is type(batch) is (tuple if as_tuple else dict)
  assert all(leaf.shape == () for leaf in jax.tree_util.tree_leaves(one))
  assert all(leaf.shape == (4, 5) for leaf in jax.tree_util.tree_leaves(batch))
  assert d.log_prob(one).shape == () and d.log_prob(batch).shape == (4, 5)
  first = jax.tree_util.tree_map(lambda a: a[1, 2], batch)
  np.testing.assert_allclose(d.log_prob(batch)[1, 2], d.log_prob(first), rtol=1e-6)


def test_user_joint_log_prob_checks_structure_and_batch():
  family, _ = _user_joint(False)
  d = family(THETA)
  with pytest.raises(ValueError, match=r"`log_prob\(x\)`.*structured like the samples"):
    d.log_prob((jnp.zeros(()), jnp.zeros(())))
  with pytest.raises(ValueError, match=r"same leading \(batch\) dimensions on every leaf"):
    d.log_prob({"x": jnp.zeros(3), "y": jnp.zeros(4)})


@pytest.mark.parametrize("as_tuple", [False, True], ids=["dict", "tuple"])
@pytest.mark.parametrize("name", ["score_function", "pathwise"])
def test_user_joint_samples_unbiased(name, as_tuple):
  """Used to fail with "'dict' object has no attribute 'reshape'"."""
  family, cost = _user_joint(as_tuple, reparameterized=name == "pathwise")
  make = {"score_function": sg.score_function, "pathwise": sg.pathwise}[name]
  out = _run(make(num_samples=100_000, per_sample=True), cost, family, THETA, jax.random.key(16))
  assert_unbiased(out.per_sample, USER_GRAD, false_failure_rate=RATE)
  # per_sample=False: the same estimate from the same key (the mean of the rows),
  # up to float32 summation order over 64 rows.
  rows = _run(make(num_samples=64, per_sample=True), cost, family, THETA, jax.random.key(0))
  plain = _run(make(num_samples=64), cost, family, THETA, jax.random.key(0))
  jax.tree_util.tree_map(
    lambda a, r: np.testing.assert_allclose(
      a, np.mean(r, 0), rtol=1e-5, atol=1e-5 * np.mean(np.abs(r))
    ),
    plain.grad,
    rows.per_sample,
  )


def test_user_joint_not_reparameterized_refused_by_pathwise():
  family, cost = _user_joint(False)
  est = sg.pathwise(num_samples=4)
  with pytest.raises(ValueError, match="reparameterized"):
    est.estimate(jax.random.key(0), cost, family, THETA, est.init(THETA))


# -- 4. QMC and antithetic sampling with bfloat16 / float16 parameters -------------------

LOW = [jnp.bfloat16, jnp.float16]


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: jnp.dtype(d).name)
def test_qmc_noise_in_low_precision_is_the_float32_noise_rounded(dtype):
  """Used to fail inside ndtri ("x.dtype=bfloat16 is not supported")."""
  key = jax.random.key(5)
  low = sg.sampling.randomized_qmc_normal(key, 16, (3,), dtype)
  high = sg.sampling.randomized_qmc_normal(key, 16, (3,), jnp.float32)
  assert low.dtype == dtype and low.shape == (16, 3)
  np.testing.assert_array_equal(
    np.asarray(low, np.float32), np.asarray(high.astype(dtype), np.float32)
  )


@pytest.mark.parametrize("sampling", ["qmc", "antithetic"])
@pytest.mark.parametrize("dtype", LOW, ids=lambda d: jnp.dtype(d).name)
def test_pathwise_qmc_and_antithetic_in_low_precision_unbiased(dtype, sampling):
  """f linear: ∂/∂μ = Σ w exactly; ∂/∂σ = mean_i Σ_j w_j ε_ij has mean 0.

  Every operation is exact or sign-symmetric (round-to-nearest of −v is −v
  rounded), and the noise is symmetric in distribution, so the rounding to
  ``dtype`` adds no bias.
  """
  w = jnp.array([1.0, 0.5, 0.25], dtype)
  params = jnp.array([0.5, 1.5], dtype)
  dist_fn = lambda p: sg.dists.Normal(p[0] * jnp.ones(3, dtype), p[1])
  f = lambda x: jnp.sum(w * x)
  est = sg.pathwise(num_samples=16, sampling=sampling)
  one = lambda k: est.estimate(k, f, dist_fn, params, est.init(params)).grad
  grads = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(17), 4000))
  assert grads.dtype == dtype and bool(jnp.all(jnp.isfinite(grads)))
  assert_unbiased(np.asarray(grads, np.float64), np.array([1.75, 0.0]), false_failure_rate=RATE)
  # A nonlinear cost runs too, with finite gradients of the parameters' dtype.
  g = _run(est, lambda x: jnp.sum(x**2), dist_fn, params, jax.random.key(0)).grad
  assert g.dtype == dtype and bool(jnp.all(jnp.isfinite(g)))


# -- 5. Temperatures the relaxation cannot resolve ---------------------------------------

BERN = lambda l: sg.dists.Bernoulli(logits=l)
CAT = lambda l: sg.dists.Categorical(logits=l)
TOY = lambda b: jnp.sum((b - 0.45) ** 2)


@pytest.mark.parametrize(
  "make",
  [
    lambda t: sg.gumbel_softmax(num_samples=4, temperature=t),
    lambda t: sg.gumbel_softmax(num_samples=4, temperature=t, straight_through=True),
    lambda t: sg.rebar(temperature=t),
    lambda t: sg.relax(temperature=t),
  ],
  ids=["gumbel_softmax", "straight_through", "rebar", "relax"],
)
def test_temperature_below_every_dtypes_epsilon_refused_at_construction(make):
  """gumbel_softmax(temperature=1e-30) used to return exactly 0."""
  with pytest.raises(
    ValueError,
    match=r"`temperature` of \w+ must be at least 2.22e-16.*"
    r"got temperature=1e-30.*silent 0",
  ):
    make(1e-30)


@pytest.mark.parametrize(
  "dtype,bad,good",
  [(jnp.float32, 1e-10, 1e-6), (jnp.bfloat16, 1e-3, 0.05), (jnp.float16, 1e-4, 0.05)],
  ids=["float32", "bfloat16", "float16"],
)
@pytest.mark.parametrize("dist_fn", [BERN, CAT], ids=["Bernoulli", "Categorical"])
def test_temperature_below_the_logits_epsilon_refused(dtype, bad, good, dist_fn):
  logits = jnp.zeros((2, 3), dtype)
  for make in [
    lambda t: sg.gumbel_softmax(num_samples=4, temperature=t),
    lambda t: sg.rebar(num_samples=2, temperature=t),
  ]:
    with pytest.raises(
      ValueError,
      match=rf"`temperature`.*at least .*dtype "
      rf"{jnp.dtype(dtype).name}; got temperature={bad!r}",
    ):
      _run(make(bad), TOY, dist_fn, logits, jax.random.key(0))
    assert _run(make(good), TOY, dist_fn, logits, jax.random.key(0)).grad.shape == logits.shape


# -- 6. Costs whose JAX derivative is identically zero -----------------------------------

ZERO_DERIVATIVE = {
  "round": lambda b: jnp.sum(jnp.round(b) * jnp.arange(1.0, 4.0)),
  "floor": lambda b: jnp.sum(jnp.floor(b + 0.5)),
  "ceil": lambda b: jnp.sum(jnp.ceil(b - 0.5)),
  "sign": lambda b: jnp.sum(jnp.sign(b - 0.5)),
  "where(b > 0.5)": lambda b: jnp.sum(jnp.where(b > 0.5, 1.0, -1.0)),
  "int cast": lambda b: jnp.sum((2 * b).astype(jnp.int32)).astype(jnp.float32),
  "stop_gradient": lambda b: jnp.sum(jax.lax.stop_gradient(b) ** 2),
  "jitted round": jax.jit(lambda b: jnp.sum(jnp.round(b)) ** 2),
}
DIFFERENTIABLE = {
  "smooth": TOY,
  "constant": lambda b: jnp.asarray(2.0),  # true gradient 0: nothing to refuse
  "relu": lambda b: jnp.sum(jnp.maximum(b - 0.5, 0.0)),
  "abs": lambda b: jnp.sum(jnp.abs(b - 0.5)),
  "where with a live branch": lambda b: jnp.sum(jnp.where(b > 0.5, b, 0.0)),
  "straight-through round": lambda b: jnp.sum(b + jax.lax.stop_gradient(jnp.round(b) - b)),
  "jitted smooth": jax.jit(TOY),
}
RELAXED = {
  "rebar": lambda: sg.rebar(num_samples=2),
  "relax": lambda: sg.relax(num_samples=2),
  "gumbel_softmax": lambda: sg.gumbel_softmax(num_samples=2, temperature=0.5),
  "straight_through": lambda: sg.straight_through(num_samples=2),
}


# Each estimator with jnp.round, and every cost with rebar (the check is one helper).
ZERO_CASES = [("round", e) for e in RELAXED] + [
  (c, "rebar") for c in ZERO_DERIVATIVE if c != "round"
]
ACCEPTED_CASES = [("constant", e) for e in RELAXED] + [
  (c, "rebar") for c in DIFFERENTIABLE if c != "constant"
]


@pytest.mark.parametrize("cost,estimator", ZERO_CASES)
def test_cost_with_zero_derivative_refused(cost, estimator):
  """rebar/relax with f = round(...) used to return a silent zero gradient."""
  est = RELAXED[estimator]()
  logits = jnp.array([0.3, -0.6, 1.0])
  with pytest.raises(
    ValueError,
    match=rf"{estimator} differentiates the cost `f`.*"
    r"identically zero.*jnp.round.*scoregrad.disarm",
  ):
    _run(est, ZERO_DERIVATIVE[cost], BERN, logits, jax.random.key(0))


@pytest.mark.parametrize("estimator", ["rebar", "gumbel_softmax"])
def test_categorical_cost_through_argmax_refused(estimator):
  est = RELAXED[estimator]()
  logits = jnp.zeros((2, 3))
  f = lambda onehot: jnp.sum(jnp.argmax(onehot, axis=-1).astype(jnp.float32))
  with pytest.raises(ValueError, match="identically zero"):
    _run(est, f, CAT, logits, jax.random.key(0))


@pytest.mark.parametrize("cost,estimator", ACCEPTED_CASES)
def test_differentiable_and_constant_costs_accepted(cost, estimator):
  est = RELAXED[estimator]()
  logits = jnp.array([0.3, -0.6, 1.0])
  out = _run(est, DIFFERENTIABLE[cost], BERN, logits, jax.random.key(0))
  assert out.grad.shape == (3,) and bool(jnp.all(jnp.isfinite(out.grad)))


def test_zero_derivative_detected_under_jit_and_vmap_with_closures():
  """The check runs at trace time, on f closing over traced (and batched) values."""
  logits = jnp.array([0.3, -0.6, 1.0])
  est = sg.rebar(num_samples=2, axis_name="batch")

  def run(weights, cost):
    f = lambda b: cost(b * weights)
    return est.estimate(jax.random.key(0), f, BERN, logits, est.init(logits)).grad

  batched = jax.vmap(run, in_axes=(0, None), axis_name="batch")
  weights = jnp.ones((2, 3))
  with pytest.raises(ValueError, match="identically zero"):
    jax.jit(batched, static_argnums=1)(weights, ZERO_DERIVATIVE["round"])
  assert jax.jit(batched, static_argnums=1)(weights, TOY).shape == (2, 3)
