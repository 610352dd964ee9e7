"""Built-in distributions: log_prob against scipy, sampling moments, pytree
behaviour, dtypes, and the NumPyro adapter. Moment checks use standard-error
tolerances with false-failure rate 1e-6."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import scoregrad as sg
from scoregrad.testing import assert_unbiased

RATE = 1e-6


def test_log_prob_against_scipy():
  x = np.array([0.3, -1.2])
  np.testing.assert_allclose(
    sg.dists.Normal(jnp.array([0.1, 0.5]), jnp.array([1.2, 0.7])).log_prob(x),
    stats.norm.logpdf(x, [0.1, 0.5], [1.2, 0.7]).sum(),
    rtol=1e-5,
  )
  logits = np.array([0.2, -1.0, 2.0])
  b = np.array([1.0, 0.0, 1.0])
  np.testing.assert_allclose(
    sg.dists.Bernoulli(logits=logits).log_prob(b),
    stats.bernoulli.logpmf(b, special.expit(logits)).sum(),
    rtol=1e-5,
  )
  cl = np.array([[0.1, 0.5, -1.0], [2.0, 0.0, 0.3]])
  np.testing.assert_allclose(
    sg.dists.Categorical(logits=cl).log_prob(jnp.array([2, 0])),
    np.log(special.softmax(cl, -1)[[0, 1], [2, 0]]).sum(),
    rtol=1e-5,
  )
  np.testing.assert_allclose(
    sg.dists.Poisson(jnp.array([2.0, 0.5])).log_prob(jnp.array([3.0, 0.0])),
    stats.poisson.logpmf([3, 0], [2.0, 0.5]).sum(),
    rtol=1e-5,
  )
  np.testing.assert_allclose(
    sg.dists.Gamma(2.5, 1.5).log_prob(0.7), stats.gamma.logpdf(0.7, 2.5, scale=1 / 1.5), rtol=1e-5
  )
  mu = np.array([0.5, -1.0])
  L = np.array([[1.0, 0.0], [0.4, 0.6]])
  np.testing.assert_allclose(
    sg.dists.MultivariateNormalTriL(mu, L).log_prob(np.array([0.1, 0.2])),
    stats.multivariate_normal.logpdf([0.1, 0.2], mu, L @ L.T),
    rtol=1e-5,
  )


def test_batched_log_prob_one_value_per_sample():
  d = sg.dists.Normal(jnp.zeros(3), 1.0)
  x = d.sample(jax.random.key(0), (5, 2))
  assert x.shape == (5, 2, 3)
  assert d.log_prob(x).shape == (5, 2)
  c = sg.dists.Categorical(logits=jnp.zeros((3, 4)))
  y = c.sample(jax.random.key(0), (7,))
  assert y.shape == (7, 3) and y.dtype == jnp.int32
  assert c.log_prob(y).shape == (7,)
  m = sg.dists.MultivariateNormalTriL(jnp.zeros(2), jnp.eye(2))
  assert m.log_prob(m.sample(jax.random.key(0), (4, 3))).shape == (4, 3)


@pytest.mark.parametrize(
  "dist, mean, var",
  [
    (sg.dists.Normal(1.5, 0.5), 1.5, 0.25),
    (
      sg.dists.Bernoulli(logits=0.4),
      special.expit(0.4),
      special.expit(0.4) * (1 - special.expit(0.4)),
    ),
    (sg.dists.Poisson(3.0), 3.0, 3.0),
    (sg.dists.Gamma(2.0, 4.0), 0.5, 2.0 / 16),
  ],
  ids=["normal", "bernoulli", "poisson", "gamma"],
)
def test_sample_mean(dist, mean, var):
  x = dist.sample(jax.random.key(1), (200_000,))
  assert_unbiased(x, np.float64(mean), false_failure_rate=RATE, exact_variance=np.float64(var))


def test_categorical_frequencies():
  logits = jnp.array([0.0, 1.0, -1.0])
  x = sg.dists.Categorical(logits=logits).sample(jax.random.key(2), (200_000,))
  onehot = jax.nn.one_hot(x, 3)
  p = special.softmax(np.asarray(logits))
  assert_unbiased(onehot, p, false_failure_rate=RATE, exact_variance=p * (1 - p))


def test_pytree_through_jit_and_vmap():
  d = sg.dists.Normal(jnp.array([0.0, 1.0]), jnp.array([1.0, 2.0]))
  leaves, tree = jax.tree_util.tree_flatten(d)
  assert len(leaves) == 2
  d2 = jax.jit(lambda dd: dd)(d)
  assert isinstance(d2, sg.dists.Normal)
  np.testing.assert_allclose(d2.scale, d.scale)
  lps = jax.vmap(lambda loc: sg.dists.Normal(loc, 1.0).log_prob(0.0))(jnp.arange(3.0))
  assert lps.shape == (3,)


def test_python_floats_do_not_recompile():
  traces = []

  @jax.jit
  def lp(d):
    traces.append(1)
    return d.log_prob(0.3)

  lp(sg.dists.Normal(0.0, 1.0))
  lp(sg.dists.Normal(1.0, 2.0))
  assert len(traces) == 1


def test_dtypes_follow_parameters(x64):
  d = sg.dists.Normal(jnp.asarray(0.0, jnp.float64), 1.0)
  assert d.sample(jax.random.key(0), (3,)).dtype == jnp.float64
  assert d.log_prob(0.1).dtype == jnp.float64
  b = sg.dists.Bernoulli(logits=jnp.zeros(2, jnp.float32))
  assert b.sample(jax.random.key(0)).dtype == jnp.float32


def test_from_log_prob_batches_and_checks():
  fam = sg.dists.from_log_prob(
    lambda p, x: -jnp.sum((x - p) ** 2) / 2, lambda p, k: p + jax.random.normal(k, (2,))
  )
  d = fam(jnp.array([1.0, 2.0]))
  x = d.sample(jax.random.key(0), (4,))
  assert x.shape == (4, 2) and d.log_prob(x).shape == (4,)
  bad = sg.dists.from_log_prob(
    lambda p, x: -((x - p) ** 2), lambda p, k: p + jax.random.normal(k, (2,))
  )
  with pytest.raises(ValueError, match="scalar log-density"):
    bad(jnp.zeros(2)).log_prob(jnp.zeros(2))
  with pytest.raises(TypeError, match="log_prob_fn"):
    sg.dists.from_log_prob("not a function", lambda p, k: p)


def test_numpyro_adapter():
  """NumPyro distributions pass straight in; batch dims are summed into one event."""
  import numpyro.distributions as npd  # in the dev extra: a missing install must fail

  params = jnp.array([0.4, -0.3])
  exact = 2 * np.asarray(params)  # E Σx² = Σ μ² + σ²
  f = lambda x: jnp.sum(x**2)
  dist_fn = lambda p: npd.Normal(p, 1.0)
  for est in [
    sg.score_function(num_samples=200_000, per_sample=True),
    sg.pathwise(num_samples=100_000, per_sample=True),
  ]:
    out = jax.jit(lambda k: est.estimate(k, f, dist_fn, params, est.init(params)))(
      jax.random.key(4)
    )
    assert_unbiased(out.per_sample, exact, false_failure_rate=RATE)
  with pytest.raises(ValueError, match="reparameterized"):
    est = sg.pathwise(num_samples=4)
    est.estimate(jax.random.key(0), f, lambda p: npd.Bernoulli(logits=p), params, est.init(params))
  # expectation() accepts NumPyro objects too.
  g = jax.grad(lambda p: sg.expectation(f, npd.Normal(p, 1.0), jax.random.key(0), num_samples=8))(
    params
  )
  assert g.shape == (2,)


class _DistraxLike:
  """Mimics distrax/TFP's convention: sample(seed=, sample_shape=), reparameterization_type."""

  reparameterization_type = "FULLY_REPARAMETERIZED"

  def __init__(self, loc):
    self.loc = loc
    self.batch_shape = jnp.shape(loc)
    self.event_shape = ()

  def sample(self, *, seed, sample_shape=()):
    return self.loc + jax.random.normal(seed, tuple(sample_shape) + self.batch_shape)

  def log_prob(self, x):
    return -0.5 * (x - self.loc) ** 2 - 0.5 * np.log(2 * np.pi)


def test_distrax_convention_adapter():
  params = jnp.array([0.4, -0.3])
  est = sg.pathwise(num_samples=100_000, per_sample=True)
  out = jax.jit(
    lambda k: est.estimate(k, lambda x: jnp.sum(x**2), _DistraxLike, params, est.init(params))
  )(jax.random.key(5))
  assert_unbiased(out.per_sample, 2 * np.asarray(params), false_failure_rate=RATE)


def test_object_without_protocol_rejected():
  with pytest.raises(TypeError, match="sample.*log_prob"):
    sg.dists.as_distribution(object())


def test_incomplete_subclass_says_what_is_missing():
  """The abstract base's methods name what a new distribution must define."""
  import dataclasses

  @dataclasses.dataclass(frozen=True)
  class Half(sg.dists.Distribution):
    loc: jax.Array

  d = Half(jnp.zeros(2))
  with pytest.raises(NotImplementedError, match="Half must define the `event_shape`"):
    d.event_shape
  with pytest.raises(NotImplementedError, match=r"Half must define `log_prob\(x\)`"):
    d.log_prob(jnp.zeros(2))
  with pytest.raises(NotImplementedError, match=r"Half must define `_sample"):
    d._sample(jax.random.key(0), (2,))
