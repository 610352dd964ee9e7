"""``sg.plate``: per-element credit, per-element baselines, per-element enumeration.

Every unbiasedness check compares the mean of many independent surrogate
gradients (or Hessians) with the exact one, computed by enumerating the
discrete latents (and Gauss-Hermite quadrature for a Normal one), within
z·SE with z from a false-failure rate of 1e-6 per test shared over its
coordinates (scoregrad.testing.assert_unbiased).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased

Bernoulli, Normal = sg.dists.Bernoulli, sg.dists.Normal
RATE = 1e-6
DATA = jnp.array([0.0, 1.0, 1.0])
W = jnp.array([1.0, 2.0, 3.0])


def _plated(theta, key):
  with sg.plate("data", 3):
    z = sg.sample("z", Bernoulli(logits=theta), key)
    sg.cost("fit", (z - DATA) ** 2 * W)
  return 0.5 * jnp.sum(z) ** 2  # outside the plate: depends on every element


def _exact_plated(theta):
  p = jax.nn.sigmoid(theta)
  total = 0.0
  for bits in itertools.product([0.0, 1.0], repeat=3):
    z = jnp.array(bits)
    w = jnp.prod(jnp.where(z == 1, p, 1 - p))
    total = total + w * (jnp.sum((z - DATA) ** 2 * W) + 0.5 * jnp.sum(z) ** 2)
  return total


def _draws(loss, theta, n, order=1):
  fn = jax.grad(loss) if order == 1 else jax.hessian(loss)
  return jax.jit(jax.vmap(lambda k: fn(theta, k)))(jax.random.split(jax.random.key(1), n))


def test_plated_score_function_gradient_and_hessian_are_unbiased(x64):
  theta = jnp.array([0.3, -0.2, 0.5])
  loss = sg.surrogate(_plated, num_samples=4, baseline=sg.baselines.leave_one_out())
  assert loss.graph(theta, jax.random.key(0))["costs"] == {"fit": ["z"], "<return value>": ["z"]}
  assert_unbiased(
    _draws(loss, theta, 2000), jax.grad(_exact_plated)(theta), false_failure_rate=RATE
  )
  assert_unbiased(
    _draws(loss, theta, 1000, 2), jax.hessian(_exact_plated)(theta), false_failure_rate=RATE
  )


def _mixture(estimator):
  data = jnp.array([0.0, 1.0, 2.0])

  def program(th, key):
    k1, k2 = jax.random.split(key)
    mu = sg.sample("mu", Normal(th[0], 1.0), k1, estimator="score_function")
    with sg.plate("data", 3):
      z = sg.sample("z", Bernoulli(logits=th[1:] + 0.1 * mu), k2, estimator=estimator)
      sg.cost("lik", (data - mu * z) ** 2)
    return mu**2

  def exact(th):
    x, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()
    total = 0.0
    for xi, wi in zip(x, w):
      mu = th[0] + xi
      p = jax.nn.sigmoid(th[1:] + 0.1 * mu)
      total = total + wi * (jnp.sum(p * (data - mu) ** 2 + (1 - p) * data**2) + mu**2)
    return total

  return program, exact


@pytest.mark.parametrize("estimator", ["exact", "score_function"])
def test_plated_site_below_a_global_one_unbiased_at_both_orders(x64, estimator):
  program, exact = _mixture(estimator)
  th = jnp.array([0.2, 0.3, -0.4, 0.1])
  loss = sg.surrogate(program, num_samples=4, baseline=sg.baselines.leave_one_out())
  assert_unbiased(_draws(loss, th, 2000), jax.grad(exact)(th), false_failure_rate=RATE)
  assert_unbiased(_draws(loss, th, 1000, 2), jax.hessian(exact)(th), false_failure_rate=RATE)


def test_exact_site_in_a_plate_enumerates_per_element(x64):
  # 3 Bernoulli elements: 2 configurations per element fit max_configurations=2
  # (the 2^3 = 8 joint configurations would be refused).
  program, exact = _mixture("exact")
  th = jnp.array([0.2, 0.3, -0.4, 0.1])
  loss = sg.surrogate(program, max_configurations=2)
  # mu is the only sampled site: fixing it, the surrogate is exact in z.
  mu = 0.7
  fixed = sg.surrogate(program, max_configurations=2, fixed_values={"mu": mu})
  data = jnp.array([0.0, 1.0, 2.0])
  p = jax.nn.sigmoid(th[1:] + 0.1 * mu)
  expected = jnp.sum(p * (data - mu) ** 2 + (1 - p) * data**2) + mu**2
  np.testing.assert_allclose(fixed(th, jax.random.key(0)), expected, rtol=1e-12)
  assert jnp.isfinite(loss(th, jax.random.key(0)))


D = jnp.arange(12.0).reshape(3, 4) / 6


def _nested(th, key):
  k1, k2 = jax.random.split(key)
  with sg.plate("rows", 3, dim=-2):
    with sg.plate("cols", 4, subsample_size=2, key=k2) as idx:
      z = sg.sample("z", Bernoulli(logits=th[idx][None, :] + jnp.zeros((3, 1))), k1)
      sg.cost("c", (z - D[:, idx]) ** 2)


def _nested_exact(th):
  p = jax.nn.sigmoid(th)[None, :]
  return jnp.sum(p * (1 - D) ** 2 + (1 - p) * D**2)


def test_nested_plates_with_subsampling_are_unbiased(x64):
  th = jnp.array([0.1, -0.3, 0.5, 0.2])
  loss = sg.surrogate(_nested, num_samples=4, baseline=sg.baselines.leave_one_out())
  keys = jax.random.split(jax.random.key(1), 2000)
  values = jax.jit(jax.vmap(lambda k: loss(th, k)))(keys)
  assert_unbiased(values, _nested_exact(th), false_failure_rate=RATE)
  assert_unbiased(_draws(loss, th, 2000), jax.grad(_nested_exact)(th), false_failure_rate=RATE)


def test_plate_returns_the_indices_and_runs_forward():
  with sg.plate("a", 5) as idx:
    np.testing.assert_array_equal(idx, np.arange(5))
  with sg.plate("b", 5, subsample_size=3, key=jax.random.key(0)) as idx:
    assert idx.shape == (3,) and len(set(np.asarray(idx).tolist())) == 3
  _plated(jnp.zeros(3), jax.random.key(0))  # sites are plain draws outside a surrogate


def test_plated_credit_has_lower_variance_than_the_unplated_program():
  n = 8
  data = jnp.linspace(-1.0, 1.0, n)

  def plated(th, key):
    with sg.plate("data", n):
      z = sg.sample("z", Bernoulli(logits=th), key)
      sg.cost("fit", (z - data) ** 2)

  def unplated(th, key):
    z = sg.sample("z", Bernoulli(logits=th), key)
    sg.cost("fit", jnp.sum((z - data) ** 2))

  th = jnp.linspace(-0.5, 0.5, n)
  base = sg.baselines.leave_one_out()
  a = _draws(sg.surrogate(plated, num_samples=8, baseline=base), th, 2000)
  b = _draws(sg.surrogate(unplated, num_samples=8, baseline=base), th, 2000)
  # Same expectation; element i's score multiplies only its own cost.
  np.testing.assert_allclose(a.mean(0), b.mean(0), atol=6 * float(jnp.max(b.std(0))) / 45)
  # Measured 20x lower total variance (n = 8 elements, seed 1); 3x is far outside noise.
  assert float(jnp.sum(a.var(0))) * 3 < float(jnp.sum(b.var(0)))


def test_same_key_same_answer_and_float32():
  th = jnp.array([0.3, -0.2, 0.5], jnp.float32)
  loss = sg.surrogate(_plated, num_samples=4, baseline=sg.baselines.leave_one_out())
  f = jax.jit(jax.value_and_grad(loss))
  v1, g1 = f(th, jax.random.key(2))
  v2, g2 = f(th, jax.random.key(2))
  np.testing.assert_array_equal(g1, g2)
  assert v1.dtype == jnp.float32 and g1.dtype == jnp.float32
  v3, g3 = jax.value_and_grad(loss)(th, jax.random.key(2))
  np.testing.assert_allclose(g1, g3, rtol=1e-5)


def test_nan_cost_gives_nan_gradient():
  def program(th, key):
    with sg.plate("data", 3):
      z = sg.sample("z", Bernoulli(logits=th), key)
      sg.cost("fit", z * jnp.array([1.0, jnp.nan, 1.0]))

  g = jax.grad(sg.surrogate(program, num_samples=2))(jnp.zeros(3), jax.random.key(0))
  assert np.all(np.isnan(g))


# -- bad input ----------------------------------------------------------------


def _fails(program, match, **kw):
  with pytest.raises((ValueError, TypeError), match=match):
    jax.grad(sg.surrogate(program, **kw))(jnp.zeros(3), jax.random.key(0))


def test_site_shape_not_matching_the_plate_names_the_site():
  def program(th, key):
    with sg.plate("data", 4):
      z = sg.sample("z", Bernoulli(logits=th), key)
    return jnp.sum(z)

  _fails(program, r"Site 'z' is inside the plates 'data' \(size 4.*shape \(4,\).*shape \(3,\)")


def test_cost_shape_not_matching_the_plate_names_the_cost():
  def program(th, key):
    with sg.plate("data", 3):
      z = sg.sample("z", Bernoulli(logits=th), key)
      sg.cost("fit", jnp.sum(z))

  _fails(program, r"sg.cost\('fit', value\) is inside the plates 'data'.*shape \(3,\)")


def test_reused_plate_name():
  def different(th, key):
    with sg.plate("data", 3):
      z = sg.sample("z", Bernoulli(logits=th), key)
    with sg.plate("data", 2):
      sg.cost("c", z[:2])

  _fails(different, "plate name 'data' is reused for a different plate")

  def nested(th, key):
    with sg.plate("data", 3):
      with sg.plate("data", 3):
        z = sg.sample("z", Bernoulli(logits=th), key)
    return jnp.sum(z)

  _fails(nested, "plate 'data' is entered inside itself")

  def same(th, key):  # re-entering the same plate is the same plate
    with sg.plate("data", 3):
      z = sg.sample("z", Bernoulli(logits=th), key)
    with sg.plate("data", 3):
      sg.cost("c", z)

  jax.grad(sg.surrogate(same))(jnp.zeros(3), jax.random.key(0))


def test_exact_site_with_a_cost_outside_its_plate_is_refused():
  def program(th, key):
    with sg.plate("data", 3):
      z = sg.sample("z", Bernoulli(logits=th), key, estimator="exact")
    return jnp.sum(z) ** 2

  _fails(program, r"'exact' site 'z' is inside the plates \['data'\].*'<return value>'")


def test_unsupported_site_estimator_and_baselines_in_plates():
  def program(th, key, est="disarm"):
    with sg.plate("data", 3):
      z = sg.sample("z", Bernoulli(logits=th), key, estimator=est)
      sg.cost("c", z)

  _fails(program, "Site 'z' uses estimator='disarm', which is not supported in a program with")
  _fails(
    lambda t, k: program(t, k, None),
    "baseline .*moving_average.* not supported",
    baseline=sg.baselines.moving_average(0.9),
  )


def test_plate_arguments():
  with pytest.raises(ValueError, match="needs `key=`"):
    sg.plate("a", 4, subsample_size=2)
  with pytest.raises(ValueError, match="subsample_size=5 is larger than size=4"):
    sg.plate("a", 4, subsample_size=5, key=jax.random.key(0))
  with pytest.raises(ValueError, match=r"`size` must be an int >= 1; got 0"):
    sg.plate("a", 0)
  with pytest.raises(ValueError, match="`dim` must be None or a negative int"):
    sg.plate("a", 3, dim=0)


@pytest.mark.parametrize(
  "dist",
  [
    Normal(jnp.arange(3.0), jnp.array([1.0, 2.0, 0.5])),
    Normal(jnp.zeros((3, 2)), 1.5),  # a scalar parameter broadcast to the value
    Bernoulli(logits=jnp.array([0.3, -1.0, 2.0])),
    sg.dists.Categorical(logits=jnp.arange(12.0).reshape(3, 4) / 5),
    sg.dists.Poisson(jnp.array([1.0, 2.0, 3.0])),
    sg.dists.Dirichlet(jnp.ones((3, 4)) + jnp.arange(4.0)),
  ],
  ids=lambda d: type(d).__name__,
)
def test_element_log_probs_sum_to_the_log_prob(dist):
  x = dist.sample(jax.random.key(0))
  elements = dist.plate_log_prob(x, 1)
  assert elements.shape == (3,)
  np.testing.assert_allclose(jnp.sum(elements), dist.log_prob(x), rtol=1e-5)
  full = lambda p: jnp.broadcast_to(p, jnp.shape(x) + jnp.shape(p)[x.ndim :])
  one = jax.tree_util.tree_map(lambda p: full(p)[1], dist)
  np.testing.assert_allclose(elements[1], one.log_prob(x[1]), rtol=1e-5)


def test_joint_families_refuse_a_plate_over_their_event():
  def program(th, key):
    with sg.plate("data", 3):
      sg.sample("w", sg.dists.Dirichlet(jnp.ones(3) + th), key, estimator="score_function")
    return 0.0

  _fails(program, r"Site 'w' is inside the plates 'data'.*not independent")
