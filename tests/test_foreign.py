"""Foreign (NumPyro) instances of scoregrad's families get the families' facts (issue 21, item 4).

``as_distribution`` converts them to the built-in family (each family's
``from_foreign``), so every estimator that works on the built-in works on
them; instances of other families are wrapped, and messages name the foreign
class. distrax and TFP-on-JAX are not installed here: their conversion reads
the same parameter names (``loc``, ``scale``, ``logits``/``probs``,
``rate``, ``concentration``, ``scale_tri``) and is not exercised.

Statistical assertions use false-failure rate 1e-6 each; there are 2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased

nd = pytest.importorskip("numpyro.distributions")
RATE = 1e-6

FAMILIES = {
  "Normal": (lambda: nd.Normal(jnp.zeros(3), 2.0), sg.dists.Normal),
  "MultivariateNormal": (
    lambda: nd.MultivariateNormal(jnp.zeros(2), scale_tril=jnp.array([[1.0, 0.0], [0.5, 2.0]])),
    sg.dists.MultivariateNormalTriL,
  ),
  "BernoulliLogits": (lambda: nd.Bernoulli(logits=jnp.array([0.0, 1.0])), sg.dists.Bernoulli),
  "BernoulliProbs": (lambda: nd.Bernoulli(probs=jnp.array([0.3, 0.6])), sg.dists.Bernoulli),
  "CategoricalLogits": (
    lambda: nd.Categorical(logits=jnp.array([[0.0, 1.0, -1.0]] * 2)),
    sg.dists.Categorical,
  ),
  "CategoricalProbs": (
    lambda: nd.Categorical(probs=jnp.array([0.2, 0.3, 0.5])),
    sg.dists.Categorical,
  ),
  "Poisson": (lambda: nd.Poisson(jnp.array([2.0, 3.0])), sg.dists.Poisson),
  "Exponential": (lambda: nd.Exponential(jnp.array([2.0, 0.5])), sg.dists.Exponential),
  "Gamma": (lambda: nd.Gamma(jnp.array([2.0, 3.0]), 1.5), sg.dists.Gamma),
  "Laplace": (lambda: nd.Laplace(jnp.array([0.0, 1.0]), 2.0), sg.dists.Laplace),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_foreign_instance_converted_with_the_same_log_density(family):
  make, builtin = FAMILIES[family]
  foreign = make()
  ours = sg.dists.as_distribution(foreign)
  assert type(ours) is builtin
  x = foreign.sample(jax.random.key(0), (4,))
  expected = jnp.sum(
    foreign.log_prob(x).reshape(4, -1) if foreign.batch_shape else foreign.log_prob(x)[:, None],
    axis=1,
  )
  np.testing.assert_allclose(np.asarray(ours.log_prob(x)), np.asarray(expected), rtol=2e-5)


def test_numpyro_bernoulli_logits_zero_gradient_is_right_after_conversion():
  """NumPyro 0.22's log_prob gradient at logits = 0 is b, not b − ½; ours is b − ½."""
  for b in (0.0, 1.0):
    ours = jax.grad(lambda t: sg.dists.as_distribution(nd.Bernoulli(logits=t)).log_prob(b))(0.0)
    assert float(ours) == pytest.approx(b - 0.5)
  # The score-function gradient of E[b] = σ(t) at t = 0 is σ'(0) = 1/4.
  est = sg.score_function(num_samples=20_000, per_sample=True)
  t = jnp.zeros(())
  out = est.estimate(
    jax.random.key(0), lambda b: 1.0 * b, lambda t: nd.Bernoulli(logits=t), t, est.init(t)
  )
  assert_unbiased(out.per_sample, jnp.asarray(0.25), false_failure_rate=RATE)


def test_estimators_with_family_facts_accept_numpyro_instances():
  """disarm/exact (Bernoulli facts), measure_valued and the delta method (Normal facts)."""
  logits = jnp.array([0.3, -0.5])
  cost = lambda b: jnp.sum((b - 0.45) ** 2)
  bern = lambda l: nd.Bernoulli(logits=l)
  exact = sg.exact().estimate(jax.random.key(0), cost, bern, logits, ()).grad
  np.testing.assert_allclose(
    np.asarray(exact), np.asarray(jax.nn.sigmoid(logits) * jax.nn.sigmoid(-logits) * 0.1), rtol=1e-5
  )
  est = sg.disarm(num_pairs=4000, per_sample=True)
  out = est.estimate(jax.random.key(1), cost, bern, logits, est.init(logits))
  assert_unbiased(out.per_sample, exact, false_failure_rate=RATE)
  loc = jnp.array([0.2, -0.1])
  normal = lambda m: nd.Normal(m, 1.0)
  mv = sg.measure_valued(num_samples=8)
  assert bool(
    jnp.all(jnp.isfinite(mv.estimate(jax.random.key(2), jnp.sum, normal, loc, mv.init(loc)).grad))
  )
  cv = sg.with_control_variate(sg.pathwise(num_samples=8), sg.control_variates.delta_method())
  out = cv.estimate(jax.random.key(3), lambda x: jnp.sum(x**2), normal, loc, cv.init(loc))
  np.testing.assert_allclose(
    np.asarray(out.grad), np.asarray(2 * loc), rtol=1e-4
  )  # exact: quadratic


def test_graph_sites_with_family_facts_accept_numpyro_instances():
  def program(logits, key):
    b = sg.sample("b", nd.Bernoulli(logits=logits), key, estimator="disarm")
    return jnp.sum((b - 0.45) ** 2)

  surrogate = sg.surrogate(program)
  logits = jnp.array([0.3, -0.5])
  g = jax.grad(lambda l: surrogate(l, jax.random.key(0)))(logits)
  assert g.shape == (2,) and bool(jnp.all(jnp.isfinite(g)))


def test_unsupported_foreign_family_named_in_the_message():
  """Graph sites used to say `got _ForeignDistribution`. (Beta, the example
  here before, now converts to the built-in family; Cauchy has none.)"""
  with pytest.raises(ValueError, match=r"got Cauchy"):
    est = sg.disarm(num_pairs=2)
    est.estimate(jax.random.key(0), jnp.sum, lambda l: nd.Cauchy(2.0, 3.0), jnp.zeros(()), ())

  def program(c, key):
    x = sg.sample("x", nd.Cauchy(c, 3.0), key, estimator="disarm")
    return x

  with pytest.raises(ValueError, match=r"got numpyro\.Cauchy") as info:
    sg.surrogate(program)(jnp.asarray(2.0), jax.random.key(0))
  assert "_ForeignDistribution" not in str(info.value)
