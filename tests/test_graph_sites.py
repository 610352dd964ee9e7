"""Site-estimator values (``sg.sites``), the surrogate's one call signature, fixed values.

The values of :mod:`scoregrad.sites` and their string aliases are the same
estimator: same key → the same value, gradient and state, bit for bit. The
unbiasedness of each site estimator is tested in tests/test_graphs.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg

Bernoulli, Normal = sg.dists.Bernoulli, sg.dists.Normal
PARAMS = jnp.array([0.3, 1.2, -0.4, -0.2])


def _chain(est_z, est_x=None):
  def program(p, key):
    k1, k2 = jax.random.split(key)
    z = sg.sample("z", Bernoulli(logits=p[0]), k1, estimator=est_z)
    x = sg.sample("x", Normal(p[1] * z + p[2] * (1 - z), jnp.exp(p[3])), k2, estimator=est_x)
    sg.cost("fit", (x - 2.0) ** 2)
    return 0.5 * z

  return program


VALUES = {
  "score_function": sg.sites.score_function(),
  "exact": sg.sites.exact(),
  "disarm": sg.sites.disarm(),
  "measure_valued": sg.sites.measure_valued(),
}


@pytest.mark.parametrize("name", sorted(VALUES))
def test_site_values_are_their_string_aliases(name):
  by_value = sg.surrogate(_chain(VALUES[name]), num_samples=2)
  by_name = sg.surrogate(_chain(name), num_samples=2)
  key = jax.random.key(3)
  assert by_value.graph(PARAMS, key) == by_name.graph(PARAMS, key)
  assert by_value.graph(PARAMS, key)["sites"]["z"] == name
  a = jax.jit(jax.value_and_grad(by_value))(PARAMS, key)
  b = jax.jit(jax.value_and_grad(by_name))(PARAMS, key)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])


def test_pathwise_site_value():
  by_value = sg.surrogate(_chain(None, sg.sites.pathwise()))
  by_name = sg.surrogate(_chain(None, "pathwise"))
  key = jax.random.key(1)
  np.testing.assert_array_equal(jax.grad(by_value)(PARAMS, key), jax.grad(by_name)(PARAMS, key))
  assert repr(sg.sites.pathwise()) == "scoregrad.sites.pathwise()"


def test_rodeo_site_with_its_own_settings_equals_the_surrogate_setting():
  own = sg.surrogate(_chain(sg.sites.rodeo(num_samples=2, hidden_size=4, learning_rate=0.01)))
  shared = sg.surrogate(
    _chain("rodeo"), rodeo=dict(num_samples=2, hidden_size=4, learning_rate=0.01)
  )
  key = jax.random.key(2)
  s_own, s_shared = own.init(PARAMS, key), shared.init(PARAMS, key)
  grad = lambda loss, s: jax.jit(jax.grad(loss, has_aux=True))(PARAMS, key, s)
  (g_own, new_own), (g_shared, new_shared) = grad(own, s_own), grad(shared, s_shared)
  np.testing.assert_array_equal(g_own, g_shared)
  for a, b in zip(jax.tree_util.tree_leaves(new_own), jax.tree_util.tree_leaves(new_shared)):
    np.testing.assert_array_equal(a, b)


def test_one_call_signature_for_every_configuration():
  key = jax.random.key(0)
  stateless = sg.surrogate(_chain(None), num_samples=2, baseline=sg.baselines.leave_one_out())
  assert stateless.init(PARAMS, key) == {}
  value, state = stateless(PARAMS, key, {})
  assert state == {}
  np.testing.assert_array_equal(value, stateless(PARAMS, key))
  stateful = sg.surrogate(_chain(None), num_samples=2, baseline=sg.baselines.moving_average())
  # The same generic training-step code works for both.
  for loss in (stateless, stateful):
    s = loss.init(PARAMS, key)
    g, s = jax.jit(jax.grad(loss, has_aux=True))(PARAMS, key, s)
    assert g.shape == PARAMS.shape and set(s) == set(loss.init(PARAMS, key))
  with pytest.raises(TypeError, match=r"keeps state \(sites \['z'\]\).*fn.init"):
    stateful(PARAMS, key)
  with pytest.raises(TypeError, match="`state` must be the dict"):
    stateless(PARAMS, key, 3)


def test_fixed_values_hold_a_site():
  """z held at 1: the gradient is the DiCE term at z = 1 (by hand)."""
  loss = sg.surrogate(_chain(None, "score_function"), fixed_values={"z": 1.0})
  key = jax.random.key(5)
  k2 = jax.random.split(key)[1]
  x = Normal(PARAMS[1], jnp.exp(PARAMS[3])).sample(k2)

  def by_hand(p):
    tz = Bernoulli(logits=p[0]).log_prob(1.0)
    tx = Normal(p[1], jnp.exp(p[3])).log_prob(x)
    return sg.magic_box(tz + tx) * (x - 2.0) ** 2 + sg.magic_box(tz) * 0.5

  np.testing.assert_allclose(jax.grad(loss)(PARAMS, key), jax.grad(by_hand)(PARAMS), rtol=1e-5)


def test_bad_site_estimators_and_fixed_values():
  def with_site(estimator):
    return lambda p, k: sg.sample("z", Bernoulli(logits=p[0]), k, estimator=estimator)

  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"Site 'z'.*scoregrad.sites.*not the\s+GradientEstimator"):
    with_site(sg.disarm(num_pairs=2))(PARAMS, key)
  with pytest.raises(ValueError, match="must be one of .* got estimator=3"):
    sg.surrogate(with_site(3))(PARAMS, key)
  with pytest.raises(ValueError, match="need num_samples"):
    sg.sites.rodeo(hidden_size=4)
  with pytest.raises(ValueError, match="num_samples >= 2"):
    sg.sites.rodeo(num_samples=1)
  with pytest.raises(ValueError, match="`fixed_values` names site 'w', which the program does not"):
    sg.surrogate(with_site(None), fixed_values={"w": 1.0})(PARAMS, key)
  with pytest.raises(ValueError, match="uses estimator='disarm'"):
    sg.surrogate(with_site("disarm"), fixed_values={"z": 1.0})(PARAMS, key)
  with pytest.raises(TypeError, match="`fixed_values` must be None or a dict"):
    sg.surrogate(with_site(None), fixed_values=[1.0])


def test_the_program_is_traced_twice_per_trace_of_the_surrogate():
  """Once for the dependency analysis (sites tagged in one jaxpr), once for the runs
  (issue 22: it was three times, with a separate shape pass)."""
  calls = []

  def program(p, key):
    calls.append(None)
    return _chain(None)(p, key)

  loss = sg.surrogate(program, num_samples=4, baseline=sg.baselines.leave_one_out())
  jax.make_jaxpr(jax.grad(loss))(PARAMS, jax.random.key(0))
  assert len(calls) == 2
  calls.clear()
  jax.make_jaxpr(jax.hessian(loss))(PARAMS, jax.random.key(0))
  assert len(calls) == 2
