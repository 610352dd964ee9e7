"""The exact columns of the discrete benchmarks, checked against the
independent oracles of tests/discrete_oracles.py, and a small end-to-end run
of each (two estimator rows) with its results schema."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg

from benchmarks import discrete_toy, discrete_vae
from benchmarks import run as runner
import discrete_oracles as oracles


def _one_bit(theta, t):
  alpha = np.log(theta / (1 - theta))
  return oracles.BernoulliProblem(
    "one", np.array([alpha]), lambda b: float(np.sum((b - t) ** 2)), lambda b: jnp.sum((b - t) ** 2)
  )


@pytest.mark.parametrize("theta", [0.1, 0.37, 0.5, 0.8])
@pytest.mark.parametrize("t", [0.45, 0.499])
def test_toy_exact_moments_match_oracles(theta, t):
  """The one-bit formulas of benchmarks/discrete_toy.py equal the D-dimensional
  oracles at D = 1 (per-sample variance n·Var(ĝ_n) with n = 2 or 4)."""
  prob = _one_bit(theta, t)
  grad = oracles.bernoulli_exact(prob)[1][0]
  np.testing.assert_allclose(discrete_toy.exact_gradient(theta, t), grad, rtol=1e-12)
  fin = oracles.finite_bernoulli(prob)
  sf_var = fin.probs @ (fin.costs[:, None] * fin.scores) ** 2 - grad**2  # one draw
  for n in (2, 4):
    loo_mean, loo_var = oracles.leave_one_out_moments(fin, n)  # Var of the n-sample mean
    arm_mean, arm_var = oracles.arm_moments(prob)  # one pair
    disarm_mean, disarm_var = oracles.disarm_moments(prob)  # one pair
    pairs = n // 2
    expected = {
      "score_function": (grad, sf_var),
      "score_function+leave_one_out": (loo_mean, n * loo_var),
      "arm": (arm_mean, n * arm_var / pairs),
      "disarm": (disarm_mean, n * disarm_var / pairs),
      "straight_through": oracles.straight_through_moments_bernoulli(prob),
      "gumbel_softmax(0.5)": oracles.gumbel_softmax_moments_bernoulli(prob, 0.5, False, 48),
      "gumbel_softmax_st(0.5)": oracles.gumbel_softmax_moments_bernoulli(prob, 0.5, True, 48),
    }
    for name, (want_mean, want_var) in expected.items():
      mean, var = discrete_toy.exact_moments(name, theta, t, n)
      np.testing.assert_allclose(mean, np.squeeze(want_mean), rtol=1e-7, atol=1e-12, err_msg=name)
      np.testing.assert_allclose(var, np.squeeze(want_var), rtol=1e-6, atol=1e-15, err_msg=name)
  mean, var = discrete_toy.exact_moments("rao_blackwell+leave_one_out", theta, t, 2)
  assert mean == pytest.approx(grad) and var == 0.0
  assert discrete_toy.exact_moments("rebar", theta, t, 2) is None


def test_vae_exact_terms_match_scoregrad_exact(x64):
  """Matrix-form enumeration of the VAE (−ELBO, log p(x), ∂E_q[f]/∂α) against
  scoregrad.exact per data point and a direct sum over configurations."""
  train, _ = discrete_vae.load_data()
  params = discrete_vae.init_params(jax.random.key(3), 5, train)
  params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
  params["enc"]["V"] = params["enc"]["V"] * 50.0  # a non-trivial encoder
  params["dec"]["W"] = params["dec"]["W"] * 100.0
  x = jnp.asarray(train[:6], jnp.float64)
  configs = discrete_vae.all_configurations(5).astype(jnp.float64)
  neg_elbo, log_px, g_alpha = discrete_vae.exact_terms(params, x, configs)
  alpha = discrete_vae.encoder_logits(params["enc"], x)
  est = sg.exact()

  def per_row(xi, ai):
    f = lambda b: discrete_vae.cost(params["dec"], xi, b)
    out = est.estimate(jax.random.key(0), f, lambda a: sg.dists.Bernoulli(logits=a), ai, ())
    return out.grad, out.value - discrete_vae.entropy(ai), jax.nn.logsumexp(-jax.vmap(f)(configs))

  grads, neg_elbos, log_pxs = jax.jit(jax.vmap(per_row))(x, alpha)
  np.testing.assert_allclose(grads, g_alpha, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(neg_elbos, neg_elbo, rtol=1e-10)
  np.testing.assert_allclose(log_pxs, log_px, rtol=1e-10)


@pytest.mark.parametrize(
  "name, rows",
  [
    ("discrete_toy", "disarm,gumbel_softmax(0.5)"),
    ("discrete_vae", "score_function+moving_average,straight_through"),
  ],
)
def test_discrete_benchmarks_small_run(name, rows, tmp_path, capsys):
  rc = runner.main([name, "--tiny", "--out", str(tmp_path), "--estimators", rows])
  captured = capsys.readouterr()
  assert rc == 0, captured.err[-3000:]
  results = json.loads((tmp_path / f"{name}.json").read_text())
  assert results["estimators"] == rows.split(",")
  assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  if name == "discrete_toy":
    g = results["sizes"]["grid_points"]
    for row in results["rows"].values():
      for per_t in row["by_target"]:
        assert len(per_t["variance"]) == len(per_t["exact_variance"]) == g
        assert all(
          lo <= v <= hi for lo, v, hi in zip(per_t["lower"], per_t["variance"], per_t["upper"])
        )
    assert results["rows"]["disarm"]["by_target"][0]["exact_bias"][0] == pytest.approx(0, abs=1e-12)
    assert results["rows"]["gumbel_softmax(0.5)"]["by_target"][0]["exact_bias"][0] != 0
  else:
    assert results["scoregrad_exact_max_abs_difference"] < 1e-3
    for row in results["rows"].values():
      assert len(row["elbo_curve"]) == len(results["eval_steps"])
      assert row["variance_lower"] <= row["variance"] <= row["variance_upper"]
      assert row["relative_bias"] >= 0 and row["relative_noise_floor"] > 0


def test_bias_table_in_gumbel_softmax_docstring():
  """The one-bit bias table in the docstrings of gumbel_softmax and
  straight_through (3 significant digits) matches the quadrature/closed form."""
  rows = {
    "gumbel_softmax(0.5)": (-0.019, 0.021, 0.050),
    "gumbel_softmax_st(0.5)": (-0.036, 0.021, 0.067),
    "straight_through": (-0.080, 0.025, 0.112),
  }
  for name, values in rows.items():
    for theta, want in zip((0.2, 0.5, 0.8), values):
      mean, _ = discrete_toy.exact_moments(name, theta, 0.45, 2)
      assert mean == pytest.approx(want, abs=6e-4), (name, theta)
  low = [discrete_toy._gumbel_softmax_moments(th, 0.45, 0.1, False)[0] for th in (0.2, 0.5, 0.8)]
  np.testing.assert_allclose(low, (0.0066, 0.025, 0.025), atol=6e-4)
  for theta, want in zip((0.2, 0.5, 0.8), (0.016, 0.025, 0.016)):
    assert discrete_toy.exact_gradient(theta, 0.45) == pytest.approx(want, abs=1e-12)
  assert "−0.019" in sg.gumbel_softmax.__doc__ and "−0.080" in sg.straight_through.__doc__


def test_mnist_vae_data_and_cost():
  """The bundled digits are 4000/1000 grey levels in [0, 1]; the per-image cost
  is −log p(x, b) + log q(b | x), checked against a direct computation."""
  from benchmarks import discrete_vae_mnist as m

  train, test = m.load_data()
  assert train.shape == (4000, 784) and test.shape == (1000, 784)
  assert train.min() == 0 and train.max() == 1
  params = m.init_params(jax.random.key(0), "nonlinear", 5, train.mean(axis=0))
  x = np.asarray(m.binarise(jax.random.key(1), jnp.asarray(train[:1])))[0]
  b = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
  alpha = np.array([0.3, -1.0, 2.0, 0.0, 0.5])
  h = b
  for i, layer in enumerate(params["dec"]):
    h = h @ np.asarray(layer["w"]) + np.asarray(layer["b"])
    if i < 2:
      h = np.where(h > 0, h, 0.3 * h)
  p = 1 / (1 + np.exp(-h))
  log_px_b = np.sum(x * np.log(p) + (1 - x) * np.log1p(-p))
  q = 1 / (1 + np.exp(-alpha))
  log_q = np.sum(b * np.log(q) + (1 - b) * np.log1p(-q))
  want = -(log_px_b + 5 * np.log(0.5)) + log_q
  got = float(m.cost(params["dec"], jnp.asarray(x), jnp.asarray(alpha), jnp.asarray(b)))
  assert got == pytest.approx(want, rel=1e-4)
