"""Bayesian logistic regression: gradient variance and ELBO training curves.

Data: scikit-learn's bundled Wisconsin breast-cancer set (569 × 30), columns
standardised, plus a bias column (D = 31). Model: θ ~ N(0, I),
y_i ~ Bernoulli(sigmoid(x_iᵀθ)). Variational posterior q(θ) = N(m, diag e^{2ℓ})
with parameters {"loc": m, "log_scale": ℓ}. The negative ELBO is

    L(m, ℓ) = E_q[f(θ)] − H[q],  f(θ) = −log p(y, θ),  H[q] = Σ ℓ + (D/2)(1 + log 2π),

and every estimator of ``benchmarks.estimators.ESTIMATORS`` for the "normal"
family estimates ∇ E_q[f]; the entropy's gradient is exact.

Reported:

* the per-sample variance n·Var(ĝ_n) of ∇ E_q[f] at the initialisation
  (m = 0, ℓ = ``init_log_scale``), mean over the 2D coordinates with a 95% CI and
  the largest coordinate with its CI;
* ELBO training curves with ``optax.adam``, every estimator trained inside
  one ``jax.jit`` + ``lax.scan`` (seeds vectorised with ``vmap``); the ELBO
  along the way is evaluated afterwards from the saved parameters with common
  random numbers, and the final ELBO with ``final_eval_samples`` samples.

References:
  Mohamed et al., "Monte Carlo Gradient Estimation in Machine Learning", JMLR
  2020, Section 8 (Bayesian logistic regression).
  Ranganath, Gerrish & Blei, "Black Box Variational Inference", AISTATS 2014.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import scoregrad as sg

from benchmarks import common, style

DESCRIPTION = (
  "Bayesian logistic regression (breast cancer, diagonal Gaussian VI): gradient "
  "variance at init and ELBO curves with Adam, score function vs pathwise."
)

FAMILY = "normal"

SIZES = {
  "tiny": {
    "num_samples": 4,
    "replicates": 32,
    "warmup_steps": 3,
    "steps": 20,
    "seeds": 1,
    "eval_points": 5,
    "eval_samples": 16,
    "final_eval_samples": 64,
    "learning_rate": 0.01,
    "init_log_scale": -1.0,
  },
  "default": {
    "num_samples": 16,
    "replicates": 1000,
    "warmup_steps": 30,
    "steps": 2000,
    "seeds": 3,
    "eval_points": 81,
    "eval_samples": 256,
    "final_eval_samples": 4096,
    "learning_rate": 0.01,
    "init_log_scale": -1.0,
  },
  "full": {
    "num_samples": 16,
    "replicates": 10000,
    "warmup_steps": 50,
    "steps": 10000,
    "seeds": 5,
    "eval_points": 201,
    "eval_samples": 1024,
    "final_eval_samples": 32768,
    "learning_rate": 0.01,
    "init_log_scale": -1.0,
  },
}
SIZE_MINIMUM = {
  "num_samples": 2,
  "replicates": 8,
  "warmup_steps": 0,
  "steps": 1,
  "seeds": 1,
  "eval_points": 2,
  "eval_samples": 2,
  "final_eval_samples": 2,
  "learning_rate": 0.0,
  "init_log_scale": -math.inf,
}


def load_data() -> tuple[np.ndarray, np.ndarray]:
  """Standardised features with a bias column, and labels in {0, 1} (float32)."""
  from sklearn.datasets import load_breast_cancer

  x, y = load_breast_cancer(return_X_y=True)
  x = (x - x.mean(axis=0)) / x.std(axis=0)
  x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
  return x.astype(np.float32), y.astype(np.float32)


def make_problem(x: np.ndarray, y: np.ndarray):
  """Returns ``(cost, dist_fn, elbo)`` for the data."""
  x, y = jnp.asarray(x), jnp.asarray(y)
  dim = x.shape[1]

  def log_joint(theta):
    logits = x @ theta
    return (
      jnp.sum(y * logits - jax.nn.softplus(logits))
      - 0.5 * jnp.sum(theta**2)
      - 0.5 * dim * math.log(2 * math.pi)
    )

  def cost(theta):
    return -log_joint(theta)

  def dist_fn(p):
    return sg.dists.Normal(p["loc"], jnp.exp(p["log_scale"]))

  def entropy(p):
    return jnp.sum(p["log_scale"]) + 0.5 * dim * (1.0 + math.log(2 * math.pi))

  def elbo(p, eps):
    """ELBO at ``p`` from standard-normal draws ``eps`` (S, D): mean and its SE."""
    theta = p["loc"] + jnp.exp(p["log_scale"]) * eps
    lj = jax.vmap(log_joint)(theta)
    return (jnp.mean(lj) + entropy(p), jnp.std(lj, ddof=1) / jnp.sqrt(lj.shape[0]))

  return cost, dist_fn, elbo


def _init_params(dim: int, init_log_scale: float):
  return {
    "loc": jnp.zeros((dim,), jnp.float32),
    "log_scale": jnp.full((dim,), init_log_scale, jnp.float32),
  }


def _flat(tree):
  return jnp.concatenate([tree["loc"], tree["log_scale"]])


def train(est, key, params, cost, dist_fn, *, steps: int, learning_rate: float):
  """Adam on the negative ELBO for ``steps`` steps: returns the parameter trajectory.

  Pure and traceable (vmap it over keys for seeds); the state of the
  estimator (e.g. a moving-average baseline) is threaded through the scan.
  """
  opt = optax.adam(learning_rate)
  entropy_grad = {
    "loc": jnp.zeros_like(params["loc"]),
    "log_scale": -jnp.ones_like(params["log_scale"]),
  }

  def step(carry, k):
    p, opt_state, est_state = carry
    out = est.estimate(k, cost, dist_fn, p, est_state)
    grad = jax.tree_util.tree_map(jnp.add, out.grad, entropy_grad)  # ∇(E_q f − H)
    updates, opt_state = opt.update(grad, opt_state, p)
    p = optax.apply_updates(p, updates)
    return (p, opt_state, out.state), (p, out.value)

  carry = (params, opt.init(params), est.init(params))
  _, (trajectory, values) = jax.lax.scan(step, carry, jax.random.split(key, steps))
  return trajectory, values


def _study(
  est,
  var_keys,
  train_keys,
  params,
  cost,
  dist_fn,
  elbo,
  *,
  warmup,
  steps,
  learning_rate,
  eval_steps,
  eval_eps,
  final_eps,
):
  """Gradients at init (one per var key), ELBO curves and final ELBOs (one per train key)."""
  grads = jax.vmap(
    lambda k: _flat(common.estimate_after_warmup(est, k, cost, dist_fn, params, warmup).grad)
  )(var_keys)
  trajectory, values = jax.vmap(
    lambda k: train(est, k, params, cost, dist_fn, steps=steps, learning_rate=learning_rate)
  )(train_keys)
  with_init = jax.tree_util.tree_map(  # index 0 = the initialisation
    lambda p0, t: jnp.concatenate([jnp.broadcast_to(p0, (t.shape[0], 1) + p0.shape), t], axis=1),
    params,
    trajectory,
  )
  at_eval = jax.tree_util.tree_map(lambda t: t[:, eval_steps], with_init)
  curve = jax.vmap(jax.vmap(lambda p: elbo(p, eval_eps)[0]))(at_eval)
  finals = jax.tree_util.tree_map(lambda t: t[:, -1], trajectory)
  final, final_se = jax.vmap(lambda p: elbo(p, final_eps))(finals)
  return grads, curve, final, final_se, values[:, -1]


def run(
  *,
  full: bool,
  seed: int,
  tiny: bool = False,
  sizes: dict | None = None,
  estimators: list[str] | None = None,
) -> dict:
  """Runs the benchmark at the preset sizes (or ``sizes``); see the module docstring."""
  sizes = common.sizes_for(SIZES, full, sizes, tiny)
  n, r = sizes["num_samples"], sizes["replicates"]
  specs = common.select_estimators(estimators, FAMILY)
  x, y = load_data()
  dim = x.shape[1]
  cost, dist_fn, elbo = make_problem(x, y)
  params = _init_params(dim, sizes["init_log_scale"])
  base = jax.random.key(seed)

  steps = sizes["steps"]
  half = max(sizes["eval_points"] // 2, 1)  # linear and log-spaced steps (early dynamics)
  eval_steps = np.unique(
    np.concatenate(
      [np.linspace(0, steps, sizes["eval_points"] - half), np.geomspace(1, steps, half)]
    )
    .round()
    .astype(int)
  )
  eval_eps = jax.random.normal(jax.random.fold_in(base, 1), (sizes["eval_samples"], dim))
  final_eps = jax.random.normal(jax.random.fold_in(base, 2), (sizes["final_eval_samples"], dim))

  init_elbo, init_elbo_se = (float(v) for v in jax.jit(elbo)(params, final_eps))
  results = {
    "sizes": sizes,
    "family": FAMILY,
    "estimators": [s.name for s in specs],
    "data": {
      "name": "sklearn.datasets.load_breast_cancer",
      "n": int(x.shape[0]),
      "dim": int(dim),
      "preprocessing": "standardised columns + bias column",
    },
    "variance_definition": "per-sample variance n·Var(ĝ_n) of the estimate of ∇E_q[f]",
    "ci_level": 0.95,
    "eval_steps": eval_steps,
    "init_elbo": init_elbo,
    "init_elbo_se": init_elbo_se,
    "rows": {},
  }

  bar = common.progress(specs, desc="logreg")
  for spec in bar:
    est = spec.make(n)
    stateful = common.is_stateful(est, params)
    warmup = sizes["warmup_steps"] if stateful else 0
    key = common.name_key(base, spec.name)
    k_var, k_train = jax.random.split(key)

    study = common.jit(
      lambda kv, kt, est=est, warmup=warmup: _study(
        est,
        kv,
        kt,
        params,
        cost,
        dist_fn,
        elbo,
        warmup=warmup,
        steps=steps,
        learning_rate=sizes["learning_rate"],
        eval_steps=eval_steps,
        eval_eps=eval_eps,
        final_eps=final_eps,
      ),
      fast_compile=tiny,
    )  # one compilation per estimator
    grads, curve, final, final_se, values = study(
      jax.random.split(k_var, r), jax.random.split(k_train, sizes["seeds"])
    )
    grads = np.asarray(grads, np.float64)
    curve = np.asarray(curve, np.float64)  # (seeds, eval points)
    mean_ci = common.variance_ci(grads, reduce="mean")
    per_coord = common.variance_ci(grads)
    worst = int(np.argmax(per_coord["variance"]))
    finite = bool(np.all(np.isfinite(curve)))

    results["rows"][spec.name] = {
      "kind": spec.kind,
      "stateful": stateful,
      "warmup_steps": warmup,
      "variance_mean": n * mean_ci["variance"],
      "variance_mean_lower": n * mean_ci["lower"],
      "variance_mean_upper": n * mean_ci["upper"],
      "variance_max": n * per_coord["variance"][worst],
      "variance_max_lower": n * per_coord["lower"][worst],
      "variance_max_upper": n * per_coord["upper"][worst],
      "variance_max_coordinate": _coordinate_name(worst, dim),
      "variance_mean_loc": n * float(np.mean(per_coord["variance"][:dim])),
      "variance_mean_log_scale": n * float(np.mean(per_coord["variance"][dim:])),
      "elbo_curve": curve,
      "final_elbo": np.asarray(final, np.float64),
      "final_elbo_se": np.asarray(final_se, np.float64),
      "mc_value_last": np.asarray(values, np.float64),
      "diverged": not finite,
    }
  pw = results["rows"].get("pathwise")
  for row in results["rows"].values():
    row["variance_mean_ratio_to_pathwise"] = (
      row["variance_mean"] / pw["variance_mean"] if pw else None
    )
  return results


def _coordinate_name(i: int, dim: int) -> str:
  block, j = ("loc", i) if i < dim else ("log_scale", i - dim)
  return f"{block}[{j}]" + (" (bias)" if j == dim - 1 else "")


# -- reporting -------------------------------------------------------------------


_g = common.format_number


def _final(row) -> str:
  f = np.asarray(row["final_elbo"], float)
  if f.size > 1:
    return f"{f.mean():.1f} (seeds {f.min():.1f} … {f.max():.1f})"
  return f"{f.mean():.1f} ± {float(np.asarray(row['final_elbo_se']).mean()):.2f}"


def headline(results: dict) -> str:
  s = results["sizes"]
  rows = []
  for name, row in results["rows"].items():
    rows.append(
      [
        name,
        f"{_g(row['variance_mean'])} [{_g(row['variance_mean_lower'])}, "
        f"{_g(row['variance_mean_upper'])}]",
        _g(row["variance_mean_ratio_to_pathwise"]),
        _g(row["variance_max"]),
        _final(row) + (" (diverged)" if row["diverged"] else ""),
      ]
    )
  return "\n".join(
    [
      f"Breast cancer ({results['data']['n']}×{results['data']['dim']}), q = N(m, diag e^{{2ℓ}}), "
      f"n = {s['num_samples']} samples per step, Adam lr {s['learning_rate']}, "
      f"{s['steps']} steps, {s['seeds']} seed(s). ELBO at init {results['init_elbo']:.1f}.",
      "",
      common.markdown_table(
        [
          "estimator",
          "per-sample grad variance at init, mean over dims [95% CI]",
          "ratio to pathwise",
          "max over dims",
          "final ELBO",
        ],
        rows,
      ),
    ]
  )


def report(results: dict) -> str:
  s = results["sizes"]
  out = [
    f"Data: {results['data']['name']} ({results['data']['preprocessing']}), "
    f"{results['data']['n']} points, D = {results['data']['dim']}. Prior N(0, I). "
    f"q = N(m, diag e^{{2ℓ}}) initialised at m = 0, ℓ = {s['init_log_scale']}. "
    f"Gradient variance: {s['replicates']} independent n = {s['num_samples']} estimates of "
    "∇E_q[f] at the initialisation (stateful estimators warmed up for "
    f"{s['warmup_steps']} estimates first); per-sample variance n·Var(ĝ_n). "
    f"Training: optax.adam({s['learning_rate']}), {s['steps']} steps, {s['seeds']} seed(s); "
    f"ELBO curves evaluated with {s['eval_samples']} common random draws, final ELBO with "
    f"{s['final_eval_samples']} draws (± SE).",
    "",
    common.markdown_table(
      [
        "estimator",
        "mean var [95% CI]",
        "mean var (loc)",
        "mean var (log-scale)",
        "max var [95% CI]",
        "argmax",
        "final ELBO per seed",
      ],
      [
        [
          name,
          f"{_g(r['variance_mean'])} [{_g(r['variance_mean_lower'])}, "
          f"{_g(r['variance_mean_upper'])}]",
          _g(r["variance_mean_loc"]),
          _g(r["variance_mean_log_scale"]),
          f"{_g(r['variance_max'])} [{_g(r['variance_max_lower'])}, {_g(r['variance_max_upper'])}]",
          r["variance_max_coordinate"],
          ", ".join(
            f"{f:.2f} ± {e:.2f}"
            for f, e in zip(np.atleast_1d(r["final_elbo"]), np.atleast_1d(r["final_elbo_se"]))
          ),
        ]
        for name, r in results["rows"].items()
      ],
    ),
    "",
    "The max over dimensions is the largest of 2D noisy estimates, so it leans high; "
    "its CI is that coordinate's own.",
  ]
  return "\n".join(out)


def plot(results: dict, outdir: Path) -> list[Path]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = list(results["rows"])
  styles = {n: style.style(n) for n in names}
  steps = np.asarray(results["eval_steps"], float)
  fig, (ax, ax2, ax3) = plt.subplots(
    1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [2, 2, 1.3]}
  )
  best = max(float(np.max(np.asarray(r["elbo_curve"], float))) for r in results["rows"].values())
  for name in names:
    curve = np.asarray(results["rows"][name]["elbo_curve"], float)
    for k, c in enumerate(curve):
      label = name if k == 0 else None
      st = styles[name]
      ax.plot(
        np.maximum(steps, 1), -c, color=st.color, ls=st.linestyle, lw=1.3, alpha=0.85, label=label
      )
      ax2.plot(steps, c, color=st.color, ls=st.linestyle, lw=1.3, alpha=0.85, label=label)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_title("negative ELBO during training (log–log; step 0 drawn at 1)")
  ax.set_ylabel("−ELBO (nats)")
  finals = [
    float(np.min(np.asarray(r["elbo_curve"], float)[:, -1])) for r in results["rows"].values()
  ]
  low = max(min(finals) - 2.0, best - 30.0)
  ax2.set_ylim(low, best + 0.1 * (best - low) + 0.5)
  ax2.set_title("ELBO near the optimum (zoom)")
  ax2.set_ylabel("ELBO (nats)")
  for a in (ax, ax2):
    a.set_xlabel("Adam step")
    a.grid(True, which="major", alpha=0.3)
  v = [results["rows"][n]["variance_mean"] for n in names]
  lo = [results["rows"][n]["variance_mean_lower"] for n in names]
  hi = [results["rows"][n]["variance_mean_upper"] for n in names]
  ypos = np.arange(len(names))
  ax3.barh(
    ypos,
    v,
    xerr=[np.subtract(v, lo), np.subtract(hi, v)],
    color=[styles[n].color for n in names],
    capsize=3,
  )
  ax3.set_yticks(ypos, names, fontsize=8)
  ax3.invert_yaxis()
  ax3.set_xscale("log")
  ax3.set_xlabel("per-sample variance n·Var(ĝ)")
  ax3.set_ylabel("estimator")
  ax3.set_title("per-sample gradient variance at init\n(mean over dims, 95% CI)", fontsize=10)
  s = results["sizes"]
  fig.suptitle(
    f"Bayesian logistic regression, breast cancer (D = {results['data']['dim']}); "
    f"n = {s['num_samples']} samples/step, Adam {s['learning_rate']}, "
    f"{s['seeds']} seed(s)",
    fontsize=10,
  )
  fig.tight_layout()
  handles = [
    plt.Line2D([], [], label=n, lw=1.3, color=styles[n].color, ls=styles[n].linestyle)
    for n in names
  ]
  style.legend_outside(fig, handles, where="below", ncol=4)
  path = common.save_figure(fig, Path(outdir) / "logreg.png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  return [path]


BENCHMARK = common.Benchmark(
  name="logreg",
  description=DESCRIPTION,
  run=run,
  report=report,
  headline=headline,
  plot=plot,
  sizes=SIZES,
  size_minimum=SIZE_MINIMUM,
  family=FAMILY,
  takes_tiny=True,
  takes_estimators=True,
)
