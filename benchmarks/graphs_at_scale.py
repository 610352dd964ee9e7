"""Plates at the scale of a real model: the iris mixture, per-datum credit vs one site.

A 2-component Gaussian mixture on the 150 iris petal lengths (x_i in cm):

    μ_k ~ N(3.5, 2²) (k = 0, 1),  z_i ~ Bernoulli(1/2),  x_i | z_i, μ ~ N(μ_{z_i}, 0.5²),

with the mean-field guide q(μ) = N(m, softplus(ρ)²) (pathwise) and q(z_i) =
Bernoulli(σ(ℓ_i)), trained by Adam (step 0.05) on the negative ELBO with 8
samples per step, from the same initial guide (m = (1.5, 4.5), softplus(ρ) =
0.5, ℓ = 0), in one ``lax.scan`` per method:

* **sg plated**: one program with ``sg.plate("data", 150)``, z a
  score-function site with ``leave_one_out()`` baselines: element i's score
  multiplies only datum i's cost terms (per-datum credit);
* **sg plated exact**: the same plate with z ``"exact"``: enumerated per
  datum (2 runs of the program, not 2^150);
* **sg one site**: the same program without the plate (one 150-dimensional
  site, every z_i's score multiplies the whole likelihood), leave-one-out;
* **sg.numpyro.ELBO**: the same NumPyro model and guide trained by NumPyro's
  ``SVI`` with ``loss=sg.numpyro.ELBO(num_particles=8,
  baseline=leave_one_out())`` (NumPyro's plates read for per-datum credit);
* **NumPyro TraceGraph_ELBO** (``num_particles=8``, NumPyro's plates, no
  baselines) on the same model and guide;
* **NumPyro TraceEnum_ELBO**: z enumerated in the model (the guide has q(μ)
  only, so its bound is of the marginal model: not the same objective).

Reported: the final ELBO (−cost, averaged over 2,000 fresh samples of the
trained guide by one evaluator for the q(z) guides; TraceEnum's own loss with
2,000 particles for the marginal one), steps/s of the compiled scan (the
fastest of 3 runs of it), and the compile time of the training scan
(``jit(...).lower().compile()``, one measurement), all in one process on the
same device. On a shared machine both timings move by 2x between runs; the
ELBOs are deterministic (seed 0).
"""

from __future__ import annotations

from pathlib import Path
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import scoregrad as sg

from benchmarks import (
  common,
  style,
)

DESCRIPTION = (
  "Iris 2-component mixture (150 petal lengths): plated sg program vs one-site program vs "
  "NumPyro TraceGraph_ELBO / TraceEnum_ELBO (ELBO, steps/s, compile time)"
)
SIZES = {
  "tiny": {"steps": 10, "samples": 8, "eval_samples": 50},
  "default": {"steps": 1000, "samples": 8, "eval_samples": 2000},
  "full": {"steps": 3000, "samples": 8, "eval_samples": 5000},
}
SIZE_MINIMUM = {"steps": 1, "samples": 2, "eval_samples": 2}
PRIOR_LOC, PRIOR_SCALE, LIK_SCALE, LR = 3.5, 2.0, 0.5, 0.05
REPEATS = 3
METHODS = (
  "sg plated",
  "sg plated exact",
  "sg one site",
  "sg.numpyro.ELBO",
  "TraceGraph_ELBO",
  "TraceEnum_ELBO",
)


def load_data() -> jnp.ndarray:
  from sklearn.datasets import load_iris

  return jnp.asarray(load_iris().data[:, 2], jnp.float32)  # petal length (cm)


def init_params(n: int) -> dict:
  return {
    "mu_loc": jnp.array([1.5, 4.5], jnp.float32),
    "mu_rho": jnp.full((2,), float(np.log(np.expm1(0.5))), jnp.float32),
    "z_logits": jnp.zeros((n,), jnp.float32),
  }


def _normal_lp(x, loc, scale):
  return -0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi)


def _bern_lp(z, logits):
  return z * jax.nn.log_sigmoid(logits) + (1 - z) * jax.nn.log_sigmoid(-logits)


def _local(params, mu, z, x):
  """Per-datum negative ELBO terms: log q(z_i) − log p(z_i) − log p(x_i | μ, z_i)."""
  loc = jnp.where(z > 0.5, mu[1], mu[0])
  return _bern_lp(z, params["z_logits"]) - jnp.log(0.5) - _normal_lp(x, loc, LIK_SCALE)


def _global(params, mu):
  scale = jax.nn.softplus(params["mu_rho"])
  return jnp.sum(_normal_lp(mu, params["mu_loc"], scale) - _normal_lp(mu, PRIOR_LOC, PRIOR_SCALE))


def sg_program(x, plated: bool, estimator: str = "score_function"):
  n = x.shape[0]

  def program(params, key):
    k1, k2 = jax.random.split(key)
    q_mu = sg.dists.Normal(params["mu_loc"], jax.nn.softplus(params["mu_rho"]))
    mu = sg.sample("mu", q_mu, k1)  # pathwise
    q_z = sg.dists.Bernoulli(logits=params["z_logits"])
    if plated:
      with sg.plate("data", n):
        z = sg.sample("z", q_z, k2, estimator=estimator)
        sg.cost("local", _local(params, mu, z, x))
    else:
      z = sg.sample("z", q_z, k2, estimator=estimator)
      sg.cost("local", jnp.sum(_local(params, mu, z, x)))
    return _global(params, mu)

  return program


def negative_elbo(params, key, x, num):
  """−ELBO of the mean-field guide, by ``num`` fresh samples (the one evaluator)."""

  def one(k):
    k1, k2 = jax.random.split(k)
    scale = jax.nn.softplus(params["mu_rho"])
    mu = params["mu_loc"] + scale * jax.random.normal(k1, (2,))
    z = jax.random.bernoulli(k2, jax.nn.sigmoid(params["z_logits"])).astype(jnp.float32)
    return _global(params, mu) + jnp.sum(_local(params, mu, z, x))

  return jnp.mean(jax.lax.map(one, jax.random.split(key, num), batch_size=256))


def _numpyro_parts(x):
  import numpyro
  from numpyro import distributions as npd

  n = x.shape[0]

  def model(enumerate_z=False):
    mu = numpyro.sample("mu", npd.Normal(PRIOR_LOC, PRIOR_SCALE).expand([2]).to_event(1))
    with numpyro.plate("data", n):
      infer = {"enumerate": "parallel"} if enumerate_z else {}
      z = numpyro.sample("z", npd.Bernoulli(0.5), infer=infer)
      loc = jnp.where(z > 0.5, mu[1], mu[0])
      numpyro.sample("x", npd.Normal(loc, LIK_SCALE), obs=x)

  def guide(enumerate_z=False):
    p0 = init_params(n)
    loc = numpyro.param("mu_loc", p0["mu_loc"])
    rho = numpyro.param("mu_rho", p0["mu_rho"])
    numpyro.sample("mu", npd.Normal(loc, jax.nn.softplus(rho)).to_event(1))
    if not enumerate_z:
      logits = numpyro.param("z_logits", p0["z_logits"])
      with numpyro.plate("data", n):
        numpyro.sample("z", npd.Bernoulli(logits=logits))

  return model, guide


def _train_sg(x, key, sizes, plated, estimator):
  loss = sg.surrogate(
    sg_program(x, plated, estimator),
    num_samples=sizes["samples"],
    baseline=None if estimator == "exact" else sg.baselines.leave_one_out(),
  )
  opt = optax.adam(LR)
  params = init_params(x.shape[0])

  def train(params, key):
    def step(carry, k):
      p, s = carry
      updates, s = opt.update(jax.grad(loss)(p, k), s, p)
      return (optax.apply_updates(p, updates), s), None

    (p, _), _ = jax.lax.scan(
      step, (params, opt.init(params)), jax.random.split(key, sizes["steps"])
    )
    return p

  return _timed(train, params, key)


def _train_numpyro(x, key, sizes, method):
  from numpyro.infer import SVI, TraceEnum_ELBO, TraceGraph_ELBO
  import numpyro.optim

  model, guide = _numpyro_parts(x)
  enum = method == "TraceEnum_ELBO"
  if enum:
    elbo = TraceEnum_ELBO(num_particles=sizes["samples"], max_plate_nesting=1)
  elif method == "TraceGraph_ELBO":
    elbo = TraceGraph_ELBO(num_particles=sizes["samples"])
  else:  # scoregrad's surrogate behind NumPyro's SVI, per-datum leave-one-out baselines
    elbo = sg.numpyro.ELBO(num_particles=sizes["samples"], baseline=sg.baselines.leave_one_out())
  svi = SVI(model, guide, numpyro.optim.Adam(LR), loss=elbo)
  k_init, k_run = jax.random.split(key)
  state = svi.init(k_init, enum)

  def train(state, key):
    del key  # the SVI state carries its own key
    state, _ = jax.lax.scan(
      lambda s, _: (svi.update(s, enum)[0], None), state, None, sizes["steps"]
    )
    return state

  final, compile_s, run_s = _timed(train, state, k_run)
  params = svi.get_params(final)
  if enum:
    value = float(
      TraceEnum_ELBO(num_particles=sizes["eval_samples"], max_plate_nesting=1).loss(
        jax.random.fold_in(key, 7), params, model, guide, True
      )
    )
    return params, compile_s, run_s, value
  return params, compile_s, run_s, None


def _has_funsor() -> bool:
  import importlib.util

  return importlib.util.find_spec("funsor") is not None


def _timed(train, state, key):
  t0 = time.perf_counter()
  compiled = jax.jit(train).lower(state, key).compile()
  compile_s = time.perf_counter() - t0
  runs = []
  for _ in range(REPEATS):  # the fastest of a few runs: the machine may be shared
    t0 = time.perf_counter()
    out = common.block(compiled(state, key))
    runs.append(time.perf_counter() - t0)
  return out, compile_s, min(runs)


def run(*, full: bool, seed: int, tiny: bool = False, sizes: dict | None = None) -> dict:
  sizes = common.sizes_for(SIZES, full, sizes, tiny)
  x = load_data()
  key = jax.random.key(seed)
  k_eval = jax.random.fold_in(key, 1000)
  evaluate = jax.jit(lambda p: -negative_elbo(p, k_eval, x, sizes["eval_samples"]))
  rows = {}
  for i, method in enumerate(common.progress(METHODS, "graphs_at_scale")):
    k = jax.random.fold_in(key, i)
    if method.startswith("sg "):  # the sg programs (sg.numpyro.ELBO goes through SVI)
      plated = "plated" in method
      estimator = "exact" if "exact" in method else "score_function"
      params, compile_s, run_s = _train_sg(x, k, sizes, plated, estimator)
      value = None
    else:
      enum = method == "TraceEnum_ELBO"
      if enum and not _has_funsor():
        rows[method] = {"skipped": "needs funsor (pip install funsor), not installed"}
        continue
      params, compile_s, run_s, value = _train_numpyro(x, k, sizes, method)
    elbo = float(-value) if value is not None else float(evaluate(params))
    rows[method] = {
      "elbo": elbo,
      "steps_per_s": sizes["steps"] / run_s,
      "compile_s": compile_s,
      "mu_loc": [float(v) for v in np.asarray(params["mu_loc"])],
    }
  return {"sizes": sizes, "methods": rows, "data": "sklearn.datasets.load_iris() petal length"}


def report(results: dict) -> str:
  s = results["sizes"]
  table = common.markdown_table(
    ["method", "ELBO", "steps/s", "compile (s)", "q(μ) means"],
    [
      [
        m,
        f"{r['elbo']:.1f}",
        f"{r['steps_per_s']:.0f}",
        f"{r['compile_s']:.2f}",
        ", ".join(f"{v:.2f}" for v in r["mu_loc"]),
      ]
      for m, r in results["methods"].items()
      if "skipped" not in r
    ],
  )
  skipped = "".join(
    f"\n{m}: not run ({r['skipped']}).\n" for m, r in results["methods"].items() if "skipped" in r
  )
  return (
    f"{s['steps']} Adam steps (lr {LR}), {s['samples']} samples per step, ELBO from "
    f"{s['eval_samples']} fresh samples of the trained guide (TraceEnum_ELBO: the bound "
    "of the model with z summed out, a different objective).\n\n" + table + "\n" + skipped
  )


def headline(results: dict) -> str:
  return common.markdown_table(
    ["method", "ELBO", "steps/s", "compile (s)"],
    [
      [m, f"{r['elbo']:.1f}", f"{r['steps_per_s']:.0f}", f"{r['compile_s']:.2f}"]
      for m, r in results["methods"].items()
      if "skipped" not in r
    ],
  )


def plot(results: dict, outdir: Path) -> list:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  methods = [m for m, r in results["methods"].items() if "skipped" not in r]
  # Not estimators of the table: one colour each from style.py's palette (the
  # y tick labels name them).
  colors = [style.DARK2[i % len(style.DARK2)] for i in range(len(methods))]
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=True)
  for ax, field, label in zip(
    axes, ("elbo", "steps_per_s", "compile_s"), ("ELBO", "steps/s", "compile time (s)")
  ):
    values = [results["methods"][m][field] for m in methods]
    if field == "elbo":  # negative and close together: points, not bars from 0
      ax.scatter(values, methods, color=colors, zorder=3)
      ax.grid(axis="x", alpha=0.3)
    else:
      ax.barh(methods, values, color=colors)
    ax.set_xlabel(label)
    ax.set_ylabel("method")
    ax.tick_params(axis="y", labelleft=ax is axes[0])
  elbos = [results["methods"][m]["elbo"] for m in methods]
  axes[0].set_xlim(min(elbos) - 5, max(elbos) + 5)
  axes[0].set_title(f"ELBO ({results['sizes']['eval_samples']} samples)")
  axes[1].set_title(f"steps/s ({results['sizes']['steps']} steps)")
  axes[2].set_title("compile time")
  fig.suptitle("Iris mixture: plates vs one site vs NumPyro")
  fig.tight_layout()
  path = common.save_figure(fig, Path(outdir) / "graphs_at_scale.png", dpi=120)
  plt.close(fig)
  return [path]


BENCHMARK = common.Benchmark(
  name="graphs_at_scale",
  description=DESCRIPTION,
  run=run,
  report=report,
  headline=headline,
  plot=plot,
  sizes=SIZES,
  size_minimum=SIZE_MINIMUM,
  takes_tiny=True,
)
