"""Mohamed et al. (JMLR 2020), Section 3: estimator variance for a Gaussian input.

For x ~ N(μ, σ²) with μ = σ = 1 and the paper's three costs

* f(x) = (x − k)²,  k ∈ [−3, 3];
* f(x) = exp(−w x²), w ∈ [0.1, 10] (log-spaced);
* f(x) = cos(w x),  w ∈ [0.5, 5] (log-spaced),

every estimator of ``benchmarks.estimators.ESTIMATORS`` that applies to the
"normal" family estimates ∇_{μ,σ} E[f] many times (``replicates`` independent
estimates of ``num_samples`` evaluations each). Reported per estimator, cost,
θ and parameter:

* the empirical **per-sample variance** n·Var(ĝ_n) with a 95% confidence
  interval (fourth-moment standard error, see ``common.variance_ci``);
* the exact per-sample variance from adaptive quadrature
  (``benchmarks.quadrature.EXACT``; "n/a" where no exact form is registered)
  and the z-score of the difference;
* the empirical bias against the exact gradient, with its standard error.

Stateful estimators (the moving-average baseline) first make
``warmup_steps`` estimates at the same parameters, threading their state, and
the measured estimate is the one after; the exact variance accounts for it.

References:
  Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in Machine
  Learning", JMLR 2020, Section 3 and Figure 2.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import scoregrad as sg

from benchmarks import common, quadrature, style

DESCRIPTION = (
  "Mohamed et al. (2020) §3: per-sample variance of ∂/∂μ, ∂/∂σ for "
  "N(1, 1) and costs (x−k)², exp(−wx²), cos(wx), empirical vs exact "
  "(quadrature), with bias."
)

MU = 1.0
SIGMA = 1.0
FAMILY = "normal"

SIZES = {
  "tiny": {
    "grid_points": 2,
    "replicates": 64,
    "num_samples": 4,
    "warmup_steps": 3,
    "exact_points": 5,
  },
  "default": {
    "grid_points": 13,
    "replicates": 10000,
    "num_samples": 16,
    "warmup_steps": 30,
    "exact_points": 61,
  },
  "full": {
    "grid_points": 25,
    "replicates": 40000,
    "num_samples": 16,
    "warmup_steps": 30,
    "exact_points": 201,
  },
}
SIZE_MINIMUM = {
  "grid_points": 2,
  "replicates": 8,
  "num_samples": 2,
  "warmup_steps": 0,
  "exact_points": 2,
}

COSTS = (
  quadrature.Cost(
    "quadratic", "k", "(x − k)²", lambda x, k, xp: (x - k) ** 2, lambda x, k, xp: 2 * (x - k)
  ),
  quadrature.Cost(
    "exp",
    "w",
    "exp(−w x²)",
    lambda x, w, xp: xp.exp(-w * x * x),
    lambda x, w, xp: -2 * w * x * xp.exp(-w * x * x),
  ),
  quadrature.Cost(
    "cos", "w", "cos(w x)", lambda x, w, xp: xp.cos(w * x), lambda x, w, xp: -w * xp.sin(w * x)
  ),
)
#: (low, high, log-spaced) of θ for each cost.
RANGES = {"quadratic": (-3.0, 3.0, False), "exp": (0.1, 10.0, True), "cos": (0.5, 5.0, True)}
PARAM_LABELS = {"loc": "∂/∂μ", "scale": "∂/∂σ"}


def grid(cost_name: str, points: int) -> np.ndarray:
  lo, hi, log = RANGES[cost_name]
  return np.geomspace(lo, hi, points) if log else np.linspace(lo, hi, points)


def _dist_fn(p):
  return sg.dists.Normal(p["loc"], p["scale"])


def _cost(index, theta):
  """f(x) for cost number ``index`` (traced) at ``theta`` (traced): one compile."""
  branches = [lambda x, c=c: c.value(x, theta, jnp) for c in COSTS]
  return lambda x: jax.lax.switch(index, branches, x)


def _replicates_fn(est, replicates: int, warmup_steps: int, fast_compile: bool = False):
  """jit: (keys (C, R), cost index (C,), θ (C,)) -> gradients (C, R, 2)."""
  params = {"loc": jnp.asarray(MU, jnp.float32), "scale": jnp.asarray(SIGMA, jnp.float32)}

  def one(key, index, theta):
    out = common.estimate_after_warmup(
      est, key, _cost(index, theta), _dist_fn, params, warmup_steps
    )
    return jnp.stack([out.grad["loc"], out.grad["scale"]])

  def config(args):
    keys, index, theta = args
    return jax.vmap(one, in_axes=(0, None, None))(keys, index, theta)

  return common.jit(
    lambda keys, index, theta: jax.lax.map(config, (keys, index, theta)), fast_compile=fast_compile
  ), params


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
  g, r, n = sizes["grid_points"], sizes["replicates"], sizes["num_samples"]
  specs = common.select_estimators(estimators, FAMILY)

  thetas = np.concatenate([grid(c.name, g) for c in COSTS])
  index = np.repeat(np.arange(len(COSTS)), g)
  problems = [quadrature.Problem(COSTS[i], float(t), MU, SIGMA) for i, t in zip(index, thetas)]
  true = {
    p: np.array([quadrature.true_gradient(pr)[p].value for pr in problems])
    for p in quadrature.PARAMS
  }

  results = {
    "sizes": sizes,
    "mu": MU,
    "sigma": SIGMA,
    "family": FAMILY,
    "estimators": [s.name for s in specs],
    "variance_definition": "per-sample variance n·Var(ĝ_n) of an estimate from "
    "n = num_samples evaluations of f",
    "ci_level": 0.95,
    "costs": [
      {
        "name": c.name,
        "param": c.param,
        "formula": c.formula,
        "grid": grid(c.name, g),
        "true_gradient": {p: true[p][i * g : (i + 1) * g] for p in quadrature.PARAMS},
        "rows": {},
      }
      for i, c in enumerate(COSTS)
    ],
  }

  base = jax.random.key(seed)
  for spec in common.progress(specs, desc="mohamed"):
    est = spec.make(n)
    fn, params = _replicates_fn(est, r, 0, tiny)
    stateful = common.is_stateful(est, params)
    warmup = sizes["warmup_steps"] if stateful else 0
    if warmup:
      fn, _ = _replicates_fn(est, r, warmup, tiny)
    keys = jax.random.split(common.name_key(base, spec.name), len(thetas) * r)
    keys = keys.reshape(len(thetas), r)
    grads = np.asarray(
      fn(keys, jnp.asarray(index), jnp.asarray(thetas, jnp.float32)), dtype=np.float64
    )  # (C·G, R, 2)
    exact_fn = quadrature.exact_for(spec.name)
    settings = quadrature.RunSettings(num_samples=n, warmup_steps=warmup)
    exact = [exact_fn(pr, settings) for pr in problems] if exact_fn else None
    for i, _cost in enumerate(COSTS):
      sl = slice(i * g, (i + 1) * g)
      row = {"kind": spec.kind, "stateful": stateful, "warmup_steps": warmup}
      for j, p in enumerate(quadrature.PARAMS):
        draws = grads[sl, :, j].T  # (R, G)
        ci = common.variance_ci(draws)
        mean, se = common.mean_se(draws)
        entry = {
          "variance": n * ci["variance"],
          "lower": n * ci["lower"],
          "upper": n * ci["upper"],
          "variance_se": n * ci["se"],
          "mean": mean,
          "bias": mean - true[p][sl],
          "bias_se": se,
          "bias_z": _z(mean - true[p][sl], se, ROUNDING * (np.abs(true[p][sl]) + 1)),
        }
        if exact is not None:
          ex = np.array([e.variance[p] for e in exact[sl]])
          entry["exact"] = ex
          entry["exact_abserr"] = np.array([e.abserr[p] for e in exact[sl]])
          entry["z_exact"] = _z(
            entry["variance"] - ex,
            entry["variance_se"],
            n * (ROUNDING * (np.abs(true[p][sl]) + 1)) ** 2,
          )
        else:
          entry["exact"] = None
        row[p] = entry
      results["costs"][i]["rows"][spec.name] = row

  # Smooth exact curves for the plot (cheap: one-dimensional integrals).
  for i, cost in enumerate(COSTS):
    dense = grid(cost.name, sizes["exact_points"])
    curves = {"grid": dense}
    for spec in specs:
      exact_fn = quadrature.exact_for(spec.name)
      if exact_fn is None:
        continue
      warmup = results["costs"][i]["rows"][spec.name]["warmup_steps"]
      settings = quadrature.RunSettings(num_samples=n, warmup_steps=warmup)
      ex = [exact_fn(quadrature.Problem(cost, float(t), MU, SIGMA), settings) for t in dense]
      curves[spec.name] = {p: [e.variance[p] for e in ex] for p in quadrature.PARAMS}
    results["costs"][i]["exact_curve"] = curves

  results["checks"] = _checks(results)
  return results


# float32 rounding of one gradient estimate is about this times (|g| + 1).
ROUNDING = 8 * float(np.finfo(np.float32).eps)


def _z(diff, se, floor=0.0):
  """diff / sqrt(se² + floor²): a z-score whose noise includes float32 rounding.

  ``floor`` is the rounding scale of the compared quantity, so zero-variance
  estimators (delta method on quadratics, coupled measure-valued and
  antithetic rows at symmetric points) are not flagged for differences of
  order 1e-7·|g| that float32 arithmetic leaves behind.
  """
  diff, se = np.asarray(diff, float), np.asarray(se, float)
  scale = np.sqrt(se**2 + np.asarray(floor, float) ** 2)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where((scale == 0) & (np.abs(diff) <= 1e-12), 0.0, diff / scale)


def _checks(results: dict) -> dict:
  """Counts empirical-vs-exact and bias z-scores beyond a Bonferroni threshold.

  The threshold makes a false flag anywhere in the run happen with
  probability about 1e-3 (two-sided, over all comparisons).
  """
  var_z, bias_z = [], []
  for cost in results["costs"]:
    for name, row in cost["rows"].items():
      for p in quadrature.PARAMS:
        e = row[p]
        for t, z in zip(cost["grid"], np.atleast_1d(e["bias_z"])):
          bias_z.append((name, cost["name"], float(t), p, float(z)))
        if e["exact"] is not None:
          for t, z in zip(cost["grid"], np.atleast_1d(e["z_exact"])):
            var_z.append((name, cost["name"], float(t), p, float(z)))
  out = {"false_flag_rate": 1e-3}
  for label, zs in (("variance_vs_exact", var_z), ("bias", bias_z)):
    thr = sg.testing.z_threshold(1e-3, max(len(zs), 1))
    flagged = [
      dict(zip(("estimator", "cost", "theta", "param", "z"), z))
      for z in zs
      if not abs(z[-1]) <= thr
    ]
    out[label] = {"comparisons": len(zs), "threshold": thr, "flagged": flagged}
  return out


# -- reporting -------------------------------------------------------------------


def _fmt(v) -> str:
  if v is None:
    return "n/a"
  v = float(v)
  return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.2e}"


def _mid(cost: dict) -> int:
  return (len(cost["grid"]) - 1) // 2


def headline(results: dict) -> str:
  headers = ["estimator"]
  for cost in results["costs"]:
    t = cost["grid"][_mid(cost)]
    for p in quadrature.PARAMS:
      headers.append(f"{cost['formula']}, {cost['param']}={float(t):.3g}, {PARAM_LABELS[p]}")
  rows = []
  for name in results["estimators"]:
    row = [name]
    for cost in results["costs"]:
      i = _mid(cost)
      for p in quadrature.PARAMS:
        e = cost["rows"][name][p]
        exact = _fmt(e["exact"][i]) if e["exact"] is not None else "n/a"
        row.append(f"{_fmt(e['variance'][i])} ({exact})")
    rows.append(row)
  checks = results["checks"]
  n = results["sizes"]["num_samples"]
  lines = [
    f"Per-sample variance n·Var(ĝ_n), n = {n}, {results['sizes']['replicates']} "
    f"replicates: empirical (exact by quadrature).",
    "",
    common.markdown_table(headers, rows),
    "",
    _check_sentence(checks),
  ]
  return "\n".join(lines)


def _check_sentence(checks: dict) -> str:
  v, b = checks["variance_vs_exact"], checks["bias"]
  return (
    f"Empirical vs exact variance: {len(v['flagged'])} of {v['comparisons']} beyond "
    f"|z| > {v['threshold']:.2f}; bias: {len(b['flagged'])} of {b['comparisons']} "
    f"beyond |z| > {b['threshold']:.2f} (thresholds give a 1e-3 chance of any false "
    "flag per run)."
  )


def report(results: dict) -> str:
  s = results["sizes"]
  out = [
    f"x ~ N(μ={results['mu']}, σ²={results['sigma']}²). For each estimator, "
    f"{s['replicates']} independent estimates with n = {s['num_samples']} "
    "evaluations of f each. **variance** is the per-sample variance n·Var(ĝ_n) "
    f"with a {int(100 * results['ci_level'])}% CI; **exact** comes from adaptive "
    "quadrature (`benchmarks/quadrature.py`), n/a where no exact form is "
    "registered; **z** = (empirical − exact)/SE; **bias** = mean − exact gradient "
    "± its standard error. Stateful estimators make "
    f"{s['warmup_steps']} warm-up estimates at the same parameters first.",
    "",
    _check_sentence(results["checks"]),
    "",
  ]
  for flag in (
    results["checks"]["variance_vs_exact"]["flagged"] + results["checks"]["bias"]["flagged"]
  ):
    out.append(f"- **flagged**: {flag}")
  for cost in results["costs"]:
    for p in quadrature.PARAMS:
      out += [f"## f(x) = {cost['formula']}, {PARAM_LABELS[p]}", ""]
      rows = []
      for i, t in enumerate(cost["grid"]):
        for name, row in cost["rows"].items():
          e = row[p]
          ex = e["exact"]
          rows.append(
            [
              f"{float(t):.3g}",
              name,
              f"{_fmt(e['variance'][i])} [{_fmt(e['lower'][i])}, {_fmt(e['upper'][i])}]",
              _fmt(ex[i]) if ex is not None else "n/a",
              f"{float(e['z_exact'][i]):+.2f}" if ex is not None else "",
              f"{float(e['bias'][i]):+.2e} ± {float(e['bias_se'][i]):.1e}",
              _fmt(cost["true_gradient"][p][i]),
            ]
          )
      out += [
        common.markdown_table(
          [
            cost["param"],
            "estimator",
            "variance [95% CI]",
            "exact",
            "z",
            "bias ± SE",
            "exact gradient",
          ],
          rows,
        ),
        "",
      ]
  return "\n".join(out)


def plot(results: dict, outdir: Path) -> list[Path]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = results["estimators"]
  styles = {n: style.style(n) for n in names}
  ncost = len(results["costs"])
  fig, axes = plt.subplots(
    3, ncost, figsize=(4.6 * ncost, 10.5), gridspec_kw={"height_ratios": [3, 3, 2]}
  )
  axes = np.asarray(axes).reshape(3, ncost)
  below = {}
  for c, cost in enumerate(results["costs"]):
    log_x = RANGES[cost["name"]][2]
    g = np.asarray(cost["grid"], dtype=float)
    curve = cost["exact_curve"]
    for r, p in enumerate(quadrature.PARAMS):
      ax = axes[r, c]
      for name in names:
        e = cost["rows"][name][p]
        v = np.asarray(e["variance"], float)
        lo, hi = np.asarray(e["lower"], float), np.asarray(e["upper"], float)
        st = styles[name]
        ax.errorbar(
          g, v, yerr=[v - lo, hi - v], fmt=st.marker, ms=4, capsize=2, color=st.color, label=None
        )
        if name in curve:
          ax.plot(curve["grid"], curve[name][p], color=st.color, ls=st.linestyle, lw=1.5)
        else:
          ax.plot(g, v, color=st.color, ls=st.linestyle, lw=0.8, alpha=0.6)
      ax.set_yscale("log")
      # Zero-variance rows (exact control variates, symmetric couplings) sit at
      # float rounding, 1e-15 and below: show 8 decades under the largest
      # variance; the footer names the rows that fall below the axis.
      top = max(float(np.nanmax(np.asarray(cost["rows"][n][p]["variance"], float))) for n in names)
      floor = top * 1e-8
      ax.set_ylim(bottom=floor)
      for n in names:
        if np.nanmin(np.asarray(cost["rows"][n][p]["variance"], float)) < floor:
          below.setdefault(n, []).append(f"{cost['name']} {PARAM_LABELS[p]}")
      if log_x:
        common.plain_log_axis(ax, g)
      ax.set_title(f"f = {cost['formula']}   {PARAM_LABELS[p]}")
      ax.set_xlabel(cost["param"])
      ax.grid(True, which="major", alpha=0.3)
      ax.set_ylabel("per-sample variance  n·Var(ĝ)")
    ax = axes[2, c]
    xs = np.linspace(-4, 6, 400)
    costobj = COSTS[[k.name for k in COSTS].index(cost["name"])]
    picks = [g[0], g[_mid(cost)], g[-1]]
    for k, t in enumerate(picks):
      col = plt.cm.viridis(k / 2.5)
      ax.plot(xs, costobj.value(xs, t, np), "-", color=col, label=f"{cost['param']}={t:.2g}")
      ax.plot(xs, costobj.derivative(xs, t, np), "--", color=col)
    ax.axvspan(
      results["mu"] - results["sigma"], results["mu"] + results["sigma"], color="0.9", zorder=0
    )
    ax.set_title("f (solid) and f′ (dashed)")
    ax.set_xlabel("x")
    ax.set_ylabel("f(x), f′(x)")
    if cost["name"] == "quadratic":
      ax.set_ylim(-15, 40)
    # Below the panel, outside the curves.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.26), ncol=3, frameon=False)
  handles = [plt.Line2D([], [], lw=1.5, label=n, **styles[n].kwargs()) for n in names]
  fig.legend(
    handles=handles, loc="upper center", ncol=min(len(names), 5), fontsize=9, frameon=False
  )
  fig.text(
    0.5,
    0.005,
    f"markers: empirical, {int(100 * results['ci_level'])}% CI bars "
    f"({results['sizes']['replicates']} replicates, n={results['sizes']['num_samples']}); "
    "lines: exact (quadrature), or thin lines joining the markers where there is no "
    "exact form; grey band: μ ± σ",
    ha="center",
    fontsize=9,
  )
  if below:
    import textwrap

    note = "variance ≈ 0 somewhere (points below the axis): " + "; ".join(
      f"{n} ({', '.join(sorted({w.split()[0] for w in where}))})" for n, where in below.items()
    )
    fig.text(0.5, 0.022, "\n".join(textwrap.wrap(note, 190)), ha="center", fontsize=8)
  fig.tight_layout(rect=(0, 0.045, 1, 0.93))
  path = common.save_figure(fig, Path(outdir) / "mohamed.png", dpi=110)
  plt.close(fig)
  return [path]


BENCHMARK = common.Benchmark(
  name="mohamed",
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
