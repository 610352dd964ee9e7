"""Bad input to the discrete estimators: clear errors naming the argument and
value, never a silent wrong or zero gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoregrad as sg

KEY = jax.random.key(0)
BERN = lambda l: sg.dists.Bernoulli(logits=l)
CAT = lambda l: sg.dists.Categorical(logits=l)
NORMAL = lambda p: sg.dists.Normal(p, 1.0)
F = lambda b: jnp.sum((b - 0.45) ** 2)

DISCRETE_ONLY = {
  "arm": lambda: sg.arm(num_samples=2),
  "disarm": lambda: sg.disarm(num_pairs=2),
  "rebar": lambda: sg.rebar(num_samples=2),
  "relax": lambda: sg.relax(num_samples=2),
  "gumbel_softmax": lambda: sg.gumbel_softmax(num_samples=2, temperature=0.5),
  "straight_through": lambda: sg.straight_through(num_samples=2),
  "rao_blackwell": lambda: sg.rao_blackwell(num_summed=2, num_samples=2),
  "exact": lambda: sg.exact(),
  "double_cv": lambda: sg.double_cv(num_samples=2),
  "rodeo": lambda: sg.rodeo(num_samples=2, hidden_size=4),
  "reinmax": lambda: sg.reinmax(num_samples=2, temperature=1.0),
  "gumbel_rao": lambda: sg.gumbel_rao(num_samples=2, num_inner=2, temperature=0.5),
  "unordered_set": lambda: sg.unordered_set(num_samples=2),
  "arms": lambda: sg.arms(num_samples=2),
}


def _estimate(est, f, dist_fn, params):
  return est.estimate(KEY, f, dist_fn, params, est.init(params))


@pytest.mark.parametrize("name", sorted(DISCRETE_ONLY))
def test_continuous_distribution_rejected(name):
  est = DISCRETE_ONLY[name]()
  with pytest.raises(
    ValueError,
    match=rf"`{name}` estimates gradients for discrete "
    r"distributions.*got Normal.*continuous.*scoregrad\.pathwise",
  ):
    _estimate(est, jnp.sin, NORMAL, jnp.zeros(2))


@pytest.mark.parametrize("name", sorted(DISCRETE_ONLY))
def test_other_discrete_distribution_rejected(name):
  """Poisson is discrete but not logits-parameterised: the message says what
  to do instead (score_function)."""
  est = DISCRETE_ONLY[name]()
  with pytest.raises(ValueError, match=r"got Poisson.*score_function"):
    _estimate(est, F, lambda r: sg.dists.Poisson(r), jnp.ones(2))


@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
def test_categorical_rejected_by_bernoulli_only_estimators(name):
  est = DISCRETE_ONLY[name]()
  with pytest.raises(
    ValueError,
    match=rf"`{name}` supports scoregrad\.dists\.Bernoulli.*"
    r"Categorical.*disarm.*rao_blackwell",
  ):
    _estimate(est, lambda x: jnp.sum(x).astype(jnp.float32), CAT, jnp.zeros((2, 3)))


def test_discrete_distribution_rejected_by_pathwise():
  """The reverse: a discrete distribution given to a continuous-only estimator."""
  est = sg.pathwise(num_samples=2)
  with pytest.raises(
    ValueError, match="reparameterized distribution.*Bernoulli.*discrete estimators"
  ):
    _estimate(est, F, BERN, jnp.zeros(2))


@pytest.mark.parametrize(
  "make, match",
  [
    (lambda: sg.disarm(num_pairs=0), r"`num_pairs` must be >= 1; got num_pairs=0"),
    (lambda: sg.disarm(num_pairs=-2), "num_pairs=-2"),
    (lambda: sg.disarm(num_pairs=2.0), r"Use num_pairs=2"),
    (lambda: sg.arm(num_samples=0), "num_samples=0"),
    (lambda: sg.rebar(num_samples=0), "num_samples=0"),
    (lambda: sg.gumbel_softmax(num_samples=0, temperature=1.0), "num_samples=0"),
    (lambda: sg.rao_blackwell(num_summed=0, num_samples=2), "num_summed=0"),
    (lambda: sg.rao_blackwell(num_summed=2, num_samples=0), "num_samples=0"),
    (lambda: sg.vimco(num_samples=1), r"`num_samples` must be >= 2; got num_samples=1.*other"),
    (lambda: sg.exact(max_configurations=0), "max_configurations=0"),
  ],
)
def test_counts_validated(make, match):
  with pytest.raises((ValueError, TypeError), match=match):
    make()


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf")])
@pytest.mark.parametrize("factory", ["gumbel_softmax", "rebar", "relax"])
def test_temperature_must_be_positive(factory, bad):
  kwargs = {"num_samples": 2, "temperature": bad}
  with pytest.raises(
    ValueError,
    match=rf"`temperature` must be a finite number > 0; "
    rf"got temperature={bad!r}",
  ):
    getattr(sg, factory)(**kwargs)


def test_temperature_type():
  with pytest.raises(TypeError, match="`temperature` must be a Python float"):
    sg.gumbel_softmax(num_samples=2, temperature="hot")


def test_exact_space_too_large():
  est = sg.exact()
  with pytest.raises(
    ValueError,
    match=r"2\^20 = 1,048,576 configurations of a Bernoulli "
    r"with event shape \(20,\), more than max_configurations=65,536.*"
    r"rao_blackwell.*disarm.*leave_one_out.*max_configurations=1048576",
  ):
    _estimate(est, F, BERN, jnp.zeros(20))
  with pytest.raises(ValueError, match=r"10\^6 = 1,000,000 configurations of a Categorical"):
    _estimate(est, lambda x: jnp.sum(x).astype(jnp.float32), CAT, jnp.zeros((6, 10)))
  # the same check under jit (it is made from shapes)
  with pytest.raises(ValueError, match="max_configurations"):
    jax.jit(lambda l: _estimate(est, F, BERN, l).grad)(jnp.zeros(20))


def test_rebar_settings_validated():
  with pytest.raises(ValueError, match="either `learning_rate` or `optimizer`"):
    sg.rebar(learning_rate=0.1, optimizer=optax.adam(0.1))
  with pytest.raises(TypeError, match="optax.GradientTransformation"):
    sg.rebar(optimizer="adam")
  with pytest.raises(ValueError, match="learning_rate=-0.1"):
    sg.rebar(learning_rate=-0.1)
  with pytest.raises(ValueError, match="`scale` must be finite"):
    sg.rebar(scale=float("nan"))
  with pytest.raises(TypeError, match="axis_name"):
    sg.rebar(axis_name=3)
  with pytest.raises(ValueError, match="control_variate_params.*without `control_variate`"):
    sg.relax(control_variate_params={"a": jnp.zeros(2)})
  with pytest.raises(ValueError, match="needs its initial parameters"):
    sg.relax(control_variate=lambda rho, z: jnp.sum(z))
  with pytest.raises(ValueError, match="hidden_size=0"):
    sg.relax(hidden_size=0)


def test_rebar_state_checked():
  est = sg.rebar()
  with pytest.raises(TypeError, match="RebarState returned by its `init"):
    est.estimate(KEY, F, BERN, jnp.zeros(2), ())


def test_rao_blackwell_rejects_per_coordinate_baseline():
  with pytest.raises(ValueError, match="optimal.*per-coordinate"):
    sg.rao_blackwell(num_summed=2, num_samples=4, baseline=sg.baselines.optimal())
  with pytest.raises(ValueError, match="num_samples >= 2"):
    sg.rao_blackwell(num_summed=2, num_samples=1, baseline=sg.baselines.leave_one_out())


@pytest.mark.parametrize("name", sorted(DISCRETE_ONLY))
def test_cost_must_be_scalar(name):
  est = DISCRETE_ONLY[name]()
  with pytest.raises(ValueError, match="must return a scalar"):
    _estimate(est, lambda b: b, BERN, jnp.zeros(3))


@pytest.mark.parametrize("name", ["rebar", "relax", "gumbel_softmax", "straight_through"])
def test_relaxed_cost_must_be_float(name):
  """Relaxation-based estimators differentiate f: an integer cost is an error
  (it would otherwise give a zero gradient)."""
  est = DISCRETE_ONLY[name]()
  with pytest.raises(TypeError, match="floating-point scalar"):
    _estimate(est, lambda b: jnp.sum(b > 0.5).astype(jnp.int32), BERN, jnp.zeros(3))


def test_key_and_params_checked():
  est = sg.disarm(num_pairs=2)
  with pytest.raises(TypeError, match=r"jax\.random\.key\(0\)"):
    est.estimate(0, F, BERN, jnp.zeros(2), ())
  with pytest.raises(TypeError, match="floating-point"):
    est.estimate(KEY, F, BERN, jnp.zeros(2, jnp.int32), ())
  with pytest.raises(TypeError, match="dist_fn"):
    est.estimate(KEY, F, "bernoulli", jnp.zeros(2), ())


def test_bool_settings_checked():
  with pytest.raises(TypeError, match="straight_through=1"):
    sg.gumbel_softmax(num_samples=2, temperature=1.0, straight_through=1)
  with pytest.raises(TypeError, match="per_sample='yes'"):
    sg.arm(num_samples=2, per_sample="yes")


def test_settings_keyword_only():
  for factory in (
    sg.arm,
    sg.disarm,
    sg.rebar,
    sg.relax,
    sg.gumbel_softmax,
    sg.straight_through,
    sg.rao_blackwell,
    sg.exact,
    sg.vimco,
  ):
    with pytest.raises(TypeError):
      factory(4)


def test_nan_cost_gives_nan_gradient():
  """A NaN cost must not turn into a finite gradient."""
  for est in (
    sg.disarm(num_pairs=4),
    sg.arm(num_samples=4),
    sg.exact(),
    sg.rao_blackwell(num_summed=2, num_samples=2),
  ):
    out = _estimate(est, lambda b: jnp.sum(b) * jnp.nan, BERN, jnp.array([0.1, -0.2]))
    assert np.any(np.isnan(np.asarray(out.grad)))
