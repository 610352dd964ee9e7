"""``sg.numpyro.ELBO``: a NumPyro SVI loss whose gradient is scoregrad's surrogate.

Unbiasedness against the exact ELBO gradient by enumeration of the discrete
latents (z·SE, false-failure rate 1e-6 per test shared over the
coordinates); values against NumPyro's own ELBOs on the same keys.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased

numpyro = pytest.importorskip("numpyro")
dist = numpyro.distributions
from numpyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO  # noqa: E402

RATE = 1e-6
X = np.array([-1.0, 1.0, 1.5])  # numpy: float64 under x64, float32 otherwise


def model(x):
  with numpyro.plate("data", 3):
    z = numpyro.sample("z", dist.Bernoulli(0.3))
    numpyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)


def guide(x):
  logits = numpyro.param("logits", jnp.zeros(3))
  with numpyro.plate("data", 3):
    numpyro.sample("z", dist.Bernoulli(logits=logits))


def exact_loss(params):
  q = jax.nn.sigmoid(params["logits"])

  def lp(z):
    return jnp.log(jnp.where(z == 1, 0.3, 0.7)) + dist.Normal(2.0 * z - 1.0, 1.0).log_prob(X)

  def lq(z):
    return jnp.where(z == 1, jnp.log(q), jnp.log1p(-q))

  return -jnp.sum(q * (lp(1.0) - lq(1.0)) + (1 - q) * (lp(0.0) - lq(0.0)))


PARAMS = {"logits": np.array([0.2, -0.5, 1.0])}


def test_score_function_gradient_is_unbiased(x64):
  elbo = sg.numpyro.ELBO(num_particles=4, baseline=sg.baselines.leave_one_out())
  grad = jax.grad(lambda p, k: elbo.loss(k, p, model, guide, X))
  draws = jax.jit(jax.vmap(lambda k: grad(PARAMS, k)))(jax.random.split(jax.random.key(0), 2000))
  assert_unbiased(draws, jax.grad(exact_loss)(PARAMS), false_failure_rate=RATE)


def test_exact_guide_site_is_exact_at_every_order(x64):
  elbo = sg.numpyro.ELBO(estimators={"z": "exact"})
  loss = lambda p: elbo.loss(jax.random.key(0), p, model, guide, X)
  np.testing.assert_allclose(loss(PARAMS), exact_loss(PARAMS), rtol=1e-12)
  np.testing.assert_allclose(
    jax.jit(jax.grad(loss))(PARAMS)["logits"], jax.grad(exact_loss)(PARAMS)["logits"], rtol=1e-10
  )
  np.testing.assert_allclose(
    jax.jit(jax.hessian(loss))(PARAMS)["logits"]["logits"],
    jax.hessian(exact_loss)(PARAMS)["logits"]["logits"],
    rtol=1e-10,
    atol=1e-12,
  )


def model2(x):
  mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
  with numpyro.plate("data", x.shape[0]):
    numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def guide2(x):
  m = numpyro.param("m", 0.3)
  s = numpyro.param("s", 0.7, constraint=dist.constraints.positive)
  numpyro.sample("mu", dist.Normal(m, s))


@pytest.mark.parametrize("particles", [1, 5])
def test_values_equal_numpyro_elbos_on_the_same_keys(x64, particles):
  p = {"m": jnp.array(0.3), "s": jnp.array(0.7)}
  key = jax.random.PRNGKey(3)
  ours = sg.numpyro.ELBO(num_particles=particles).loss(key, p, model2, guide2, X)
  for theirs in (Trace_ELBO(num_particles=particles), TraceGraph_ELBO(num_particles=particles)):
    np.testing.assert_allclose(ours, theirs.loss(key, p, model2, guide2, X), rtol=1e-12)
  # Reparameterized guide: the same gradient as Trace_ELBO's, too.
  g_ours = jax.grad(
    lambda q: sg.numpyro.ELBO(num_particles=particles).loss(key, q, model2, guide2, X)
  )(p)
  g_theirs = jax.grad(
    lambda q: Trace_ELBO(num_particles=particles).loss(key, q, model2, guide2, X)
  )(p)
  for name in p:
    np.testing.assert_allclose(g_ours[name], g_theirs[name], rtol=1e-10)


def test_svi_runs_and_lowers_the_loss():
  import optax

  elbo = sg.numpyro.ELBO(num_particles=4, baseline=sg.baselines.leave_one_out())
  svi = SVI(model, guide, optax.adam(0.1), loss=elbo)
  result = svi.run(jax.random.PRNGKey(0), 60, X, progress_bar=False)
  assert np.all(np.isfinite(result.losses))
  # Exact loss of the trained guide below the initial one (logits 0).
  assert exact_loss(result.params) < exact_loss({"logits": jnp.zeros(3)}) - 0.1


def test_disarm_for_an_unplated_guide_site(x64):
  def m(x):
    z = numpyro.sample("z", dist.Bernoulli(0.3 * jnp.ones(3)).to_event(1))
    numpyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0).to_event(1), obs=x)

  def g(x):
    logits = numpyro.param("logits", jnp.zeros(3))
    numpyro.sample("z", dist.Bernoulli(logits=logits).to_event(1))

  elbo = sg.numpyro.ELBO(num_particles=2, estimators={"z": "disarm"})
  grad = jax.grad(lambda p, k: elbo.loss(k, p, m, g, X))
  draws = jax.jit(jax.vmap(lambda k: grad(PARAMS, k)))(jax.random.split(jax.random.key(0), 2000))
  assert_unbiased(draws, jax.grad(exact_loss)(PARAMS), false_failure_rate=RATE)


def test_import_scoregrad_does_not_import_numpyro():
  code = "import sys, scoregrad; scoregrad.numpyro.ELBO; print('numpyro' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"


# -- bad input ----------------------------------------------------------------


def _loss(m, g, **kw):
  return sg.numpyro.ELBO(**kw).loss(jax.random.PRNGKey(0), PARAMS, m, g, X)


def test_enumeration_marker_names_the_site():
  def m(x):
    with numpyro.plate("data", 3):
      numpyro.sample("z", dist.Bernoulli(0.3), obs=jnp.ones(3), infer={"enumerate": "parallel"})

  def g(x):
    pass

  with pytest.raises(ValueError, match=r"model site 'z' has the enumeration marker"):
    _loss(m, g)


def test_factor_in_the_guide_names_the_site():
  def g(x):
    guide(x)
    numpyro.factor("penalty", -1.0)

  with pytest.raises(ValueError, match=r"guide site 'penalty' is observed .*numpyro.factor"):
    _loss(model, g)


def test_other_bad_input():
  with pytest.raises(ValueError, match="estimators` names \\['w'\\]"):
    _loss(model, guide, estimators={"w": "exact"})
  with pytest.raises(ValueError, match="latent site 'z' is not sampled by the guide"):
    _loss(model, lambda x: numpyro.param("logits", jnp.zeros(3)))
  with pytest.raises(ValueError, match="keeps state across steps"):
    sg.numpyro.ELBO(baseline=sg.baselines.moving_average(0.9))
  with pytest.raises(ValueError, match="Site 'z' uses estimator='disarm', which is not supported"):
    _loss(model, guide, estimators={"z": "disarm"})
