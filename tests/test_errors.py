"""Bad input gets a clear error naming the argument — never a silent wrong or
zero gradient."""

import jax
import jax.numpy as jnp
import pytest

import scoregrad as sg

NORMAL = lambda p: sg.dists.Normal(p["loc"], p["scale"])
PARAMS = {"loc": jnp.array(0.5), "scale": jnp.array(1.0)}


@pytest.mark.parametrize("factory", [sg.score_function, sg.pathwise])
@pytest.mark.parametrize(
  "bad, exc, match",
  [
    (0, ValueError, "num_samples` must be >= 1; got num_samples=0"),
    (-3, ValueError, "num_samples=-3"),
    (2.0, TypeError, r"got 2.0 .*Use num_samples=2"),
    (2.5, TypeError, "got 2.5"),
    (True, TypeError, "got True"),
    (jnp.array(4), TypeError, "static Python value"),
  ],
)
def test_num_samples_validated(factory, bad, exc, match):
  with pytest.raises(exc, match=match):
    factory(num_samples=bad)


def test_settings_are_keyword_only():
  with pytest.raises(TypeError):
    sg.score_function(10)


def test_leave_one_out_needs_two_samples():
  with pytest.raises(ValueError, match=r"leave_one_out\(\)` needs num_samples >= 2.*num_samples=1"):
    sg.score_function(num_samples=1, baseline=sg.baselines.leave_one_out())
  with pytest.raises(ValueError, match="num_samples >= 2"):
    sg.expectation(
      jnp.sin,
      sg.dists.Normal(0.0, 1.0),
      jax.random.key(0),
      num_samples=1,
      baseline=sg.baselines.leave_one_out(),
    )


def test_uncalled_baseline_factory_hint():
  with pytest.raises(TypeError, match=r"Call the factory: baseline=leave_one_out\(\)"):
    sg.score_function(num_samples=4, baseline=sg.baselines.leave_one_out)


def test_moving_average_decay_checked():
  with pytest.raises(ValueError, match="decay=1.0"):
    sg.baselines.moving_average(decay=1.0)
  with pytest.raises(ValueError, match="decay"):
    sg.baselines.moving_average(decay=-0.1)


def test_non_scalar_cost():
  est = sg.score_function(num_samples=4)
  f = lambda x: jnp.stack([x, x])
  with pytest.raises(ValueError, match=r"must return a scalar.*returned \(2,\)"):
    est.estimate(jax.random.key(0), f, NORMAL, PARAMS, est.init(PARAMS))
  pw = sg.pathwise(num_samples=4)
  with pytest.raises(ValueError, match="must return a scalar"):
    pw.estimate(jax.random.key(0), f, NORMAL, PARAMS, pw.init(PARAMS))
  with pytest.raises(ValueError, match="must return a scalar"):
    sg.expectation(f, sg.dists.Normal(0.0, 1.0), jax.random.key(0), num_samples=3)


def test_pathwise_rejects_non_reparameterized():
  """JAX would silently return zero through jax.random.bernoulli; we refuse."""
  est = sg.pathwise(num_samples=8)
  logits = jnp.array([0.1, 0.2])
  for dist_fn in [
    lambda l: sg.dists.Bernoulli(logits=l),
    lambda l: sg.dists.Categorical(logits=l),
    lambda l: sg.dists.Poisson(jnp.exp(l)),
  ]:
    with pytest.raises(ValueError, match=r"reparameterized.*score_function"):
      est.estimate(jax.random.key(0), jnp.sum, dist_fn, logits, est.init(logits))
  with pytest.raises(ValueError, match="reparameterized"):
    sg.expectation(
      jnp.sum,
      sg.dists.Bernoulli(logits=logits),
      jax.random.key(0),
      num_samples=4,
      estimator="pathwise",
    )
  user = sg.dists.from_log_prob(lambda p, x: -x * p, lambda p, k: jax.random.exponential(k) / p)
  with pytest.raises(ValueError, match="reparameterized"):
    est.estimate(jax.random.key(0), lambda x: x, user, jnp.array(1.0), est.init(None))


@pytest.mark.parametrize(
  "key, exc, match",
  [
    (0, TypeError, r"got the int 0.*jax.random.key\(0\)"),
    (
      jax.random.split(jax.random.key(0), 3),
      ValueError,
      r"batch of keys with shape \(3,\).*jax.vmap",
    ),
    (jax.random.split(jax.random.PRNGKey(0), 3), ValueError, r"batch of raw keys"),
    (jnp.array([1.0, 2.0]), TypeError, "dtype float32"),
    ("seed", TypeError, "PRNG key"),
  ],
)
def test_bad_keys(key, exc, match):
  est = sg.score_function(num_samples=4)
  with pytest.raises(exc, match=match):
    est.estimate(key, jnp.sin, NORMAL, PARAMS, est.init(PARAMS))
  with pytest.raises(exc, match=match):
    sg.expectation(jnp.sin, sg.dists.Normal(0.0, 1.0), key, num_samples=4)


def test_params_rejected_by_dist_fn():
  est = sg.score_function(num_samples=4)
  with pytest.raises(KeyError, match=r"dist_fn\(params\)` raised KeyError.*structure"):
    est.estimate(jax.random.key(0), jnp.sin, NORMAL, {"mean": 0.0, "scale": 1.0}, est.init(None))
  with pytest.raises(TypeError, match=r"dist_fn\(params\)"):
    est.estimate(jax.random.key(0), jnp.sin, NORMAL, jnp.array([0.0, 1.0]), est.init(None))


def test_dist_fn_returning_non_distribution():
  est = sg.score_function(num_samples=4)
  with pytest.raises(TypeError, match=r"`dist_fn\(params\)` must be a distribution.*from_log_prob"):
    est.estimate(jax.random.key(0), jnp.sin, lambda p: p, PARAMS, est.init(PARAMS))


def test_integer_params_rejected():
  est = sg.score_function(num_samples=4)
  with pytest.raises(TypeError, match="floating-point"):
    est.estimate(
      jax.random.key(0), jnp.sin, lambda p: sg.dists.Poisson(p), jnp.array(3), est.init(None)
    )


def test_unknown_expectation_estimator():
  with pytest.raises(ValueError, match=r"estimator.*'reinforce'"):
    sg.expectation(
      jnp.sin, sg.dists.Normal(0.0, 1.0), jax.random.key(0), num_samples=4, estimator="reinforce"
    )


def test_stateful_or_per_coordinate_baseline_in_expectation():
  for b in [sg.baselines.moving_average(decay=0.9), sg.baselines.optimal()]:
    with pytest.raises(ValueError, match=r"cannot be used in expectation\(\)"):
      sg.expectation(
        jnp.sin, sg.dists.Normal(0.0, 1.0), jax.random.key(0), num_samples=4, baseline=b
      )


def test_f_not_callable():
  est = sg.score_function(num_samples=4)
  with pytest.raises(TypeError, match="`f` must be a callable"):
    est.estimate(jax.random.key(0), 3.0, NORMAL, PARAMS, est.init(PARAMS))


def test_surrogate_shapes_checked():
  with pytest.raises(ValueError, match=r"log_probs.shape=\(3,\), costs.shape=\(4,\)"):
    sg.score_function_surrogate(jnp.zeros(3), jnp.zeros(4))


def test_categorical_scalar_logits():
  with pytest.raises(ValueError, match="last axis"):
    sg.dists.Categorical(logits=0.3)


def test_mvn_shapes():
  with pytest.raises(ValueError, match=r"scale_tril.shape=\(3, 3\)"):
    sg.dists.MultivariateNormalTriL(jnp.zeros(2), jnp.eye(3))


def test_diagnostics_reject_grad_instead_of_per_sample():
  with pytest.raises(ValueError, match="per_sample"):
    sg.diagnostics.variance({"a": jnp.array(1.0)})
