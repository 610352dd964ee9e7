"""Dimension and cost scaling: score function against pathwise as d grows.

x ~ N(μ·1, diag σ²) in d dimensions (μ = σ = 1) with the cost
f(x) = (1/d) Σ_j x_j², the gradient taken with respect to all 2d parameters
(loc and scale). For d ∈ {1, 10, 100, 1000} and every estimator of
``benchmarks.estimators.ESTIMATORS`` for the "normal" family:

* the trace of the covariance of one n-sample estimate, tr Var(ĝ_n), with a
  95% CI (``common.variance_ci(reduce="sum")``), and its ratio to pathwise;
* the time per jitted estimate (median of interleaved repeats,
  ``common.interleaved_times``), next to hand-written JAX estimators timed in
  the same rounds: the score function and pathwise estimators written
  directly with ``jax.grad`` — per-sample (``vmap(grad)``, the work the
  ESTIMATORS rows do, as they are built with ``per_sample=True``) and batched
  (``grad`` of the mean, what one writes when only the mean gradient is needed);
* the work-normalised variance tr Var(ĝ_n) × time: the variance per unit of
  compute, lower is better.

For this cost the score function's trace grows like d·E[f]²/σ² while the
pathwise one shrinks like 1/d, so their ratio grows like d²; a baseline
removes the E[f]² term.

Timings are wall-clock on whatever machine runs the benchmark and are noisy
when other work shares it; the ratios in one run are what to compare.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import scoregrad as sg

from benchmarks import common, mohamed, quadrature, style

DESCRIPTION = (
  "Dimension scaling d ∈ {1,10,100,1000}: variance ratio score function / "
  "pathwise, time per estimate against hand-written JAX, work-normalised variance."
)

MU = 1.0
SIGMA = 1.0
FAMILY = "normal"

SIZES = {
  "tiny": {
    "dims": (1, 4),
    "num_samples": 8,
    "replicates": 32,
    "warmup_steps": 3,
    "timing_repeats": 3,
  },
  "default": {
    "dims": (1, 10, 100, 1000),
    "num_samples": 32,
    "replicates": 1000,
    "warmup_steps": 30,
    "timing_repeats": 100,
  },
  "full": {
    "dims": (1, 10, 100, 1000),
    "num_samples": 32,
    "replicates": 10000,
    "warmup_steps": 30,
    "timing_repeats": 300,
  },
}
SIZE_MINIMUM = {
  "dims": 1,
  "num_samples": 2,
  "replicates": 8,
  "warmup_steps": 0,
  "timing_repeats": 1,
}

#: Hand-written references: name -> (kind, per_sample).
REFERENCES = {
  "hand-written score_function (per-sample)": ("score_function", True),
  "hand-written score_function (batched)": ("score_function", False),
  "hand-written pathwise (per-sample)": ("pathwise", True),
  "hand-written pathwise (batched)": ("pathwise", False),
}
#: The reference each estimator kind's time is divided by.
REFERENCE_FOR_KIND = {
  "score_function": "hand-written score_function (per-sample)",
  "pathwise": "hand-written pathwise (per-sample)",
}


def cost(x):
  return jnp.mean(x * x)


def _dist_fn(p):
  return sg.dists.Normal(p["loc"], p["scale"])


def _log_normal(p, x):
  z = (x - p["loc"]) / p["scale"]
  return jnp.sum(-0.5 * z * z - jnp.log(p["scale"]) - 0.5 * math.log(2 * math.pi))


def reference_estimator(kind: str, per_sample: bool, num_samples: int):
  """A hand-written JAX estimator: ``fn(key, params) -> grad`` (no scoregrad)."""

  def score_function(key, params):
    d = params["loc"].shape[0]
    eps = jax.random.normal(key, (num_samples, d), params["loc"].dtype)
    x = params["loc"] + params["scale"] * eps
    fx = jax.vmap(cost)(x)
    if per_sample:
      per = jax.vmap(lambda xi, fi: jax.grad(lambda p: fi * _log_normal(p, xi))(params))(x, fx)
      return jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=0), per)
    return jax.grad(lambda p: jnp.mean(fx * jax.vmap(_log_normal, (None, 0))(p, x)))(params)

  def pathwise(key, params):
    d = params["loc"].shape[0]
    eps = jax.random.normal(key, (num_samples, d), params["loc"].dtype)
    one = lambda p, e: cost(p["loc"] + p["scale"] * e)
    if per_sample:
      per = jax.vmap(jax.grad(one), (None, 0))(params, eps)
      return jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=0), per)
    return jax.grad(lambda p: jnp.mean(jax.vmap(one, (None, 0))(p, eps)))(params)

  return {"score_function": score_function, "pathwise": pathwise}[kind]


def _flat(grad):
  return jnp.concatenate([grad["loc"], grad["scale"]])


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
  base = jax.random.key(seed)
  results = {
    "sizes": sizes,
    "mu": MU,
    "sigma": SIGMA,
    "cost": "f(x) = mean_j x_j²",
    "family": FAMILY,
    "estimators": [s.name for s in specs],
    "references": list(REFERENCES),
    "ci_level": 0.95,
    "dims": {},
  }

  total = len(sizes["dims"]) * (len(specs) + len(REFERENCES) + 1)
  bar = iter(common.progress(range(total), desc="scaling", total=total))
  for d in sizes["dims"]:
    params = {"loc": jnp.full((d,), MU, jnp.float32), "scale": jnp.full((d,), SIGMA, jnp.float32)}
    rows, timed = {}, {}
    k0 = jax.random.key(2)  # timing key (timing does not depend on it)
    for spec in specs:
      next(bar, None)
      est = spec.make(n)
      stateful = common.is_stateful(est, params)
      warmup = sizes["warmup_steps"] if stateful else 0
      fn = common.jit(
        lambda k, s, est=est: _flat_estimate(est.estimate(k, cost, _dist_fn, params, s)),
        fast_compile=tiny,
      )
      grads, state = _draws(
        fn, est.init(params), common.name_key(base, f"{spec.name}/{d}"), r, warmup, stateful
      )
      rows[spec.name] = {
        "kind": spec.kind,
        "stateful": stateful,
        "warmup_steps": warmup,
        "draws": "one chain" if stateful else "independent",
        **_variance(grads),
      }
      timed[spec.name] = lambda fn=fn, s=state: fn(k0, s)
    for name, (kind, per_sample) in REFERENCES.items():
      next(bar, None)
      ref = reference_estimator(kind, per_sample, n)
      fn = common.jit(lambda k, s, ref=ref: (_flat(ref(k, params)), s), fast_compile=tiny)
      grads, _ = _draws(fn, (), common.name_key(base, f"{name}/{d}"), r, 0, False)
      rows[name] = {
        "kind": kind,
        "stateful": False,
        "warmup_steps": 0,
        "draws": "independent",
        **_variance(grads),
      }
      timed[name] = lambda fn=fn: fn(k0, ())
    next(bar, None)
    times = common.interleaved_times(timed, repeats=sizes["timing_repeats"])
    for name, t in times.items():
      rows[name]["time"] = t
      rows[name]["work"] = rows[name]["trace_variance"] * t["median_s"]
    _ratios(rows)
    if d == 1:
      _exact_d1(rows, n)
    results["dims"][str(d)] = rows
  return results


def _exact_d1(rows: dict, num_samples: int) -> None:
  """At d = 1, f = x² is Mohamed's (x − k)² with k = 0: exact tr Var(ĝ_n) by quadrature.

  For the moving-average chain the warm-up length enters only through Σ w_t²,
  which changes by < 1% of the baseline term beyond the 30 warm-up steps.
  """
  problem = quadrature.Problem(mohamed.COSTS[0], 0.0, MU, SIGMA)
  for name, row in rows.items():
    key = {
      "hand-written score_function (per-sample)": "score_function",
      "hand-written score_function (batched)": "score_function",
      "hand-written pathwise (per-sample)": "pathwise",
      "hand-written pathwise (batched)": "pathwise",
    }.get(name, name)
    exact_fn = quadrature.exact_for(key)
    if exact_fn is None:
      continue
    ex = exact_fn(problem, quadrature.RunSettings(num_samples, row["warmup_steps"]))
    row["exact_trace_variance"] = sum(ex.variance.values()) / num_samples
    diff = row["trace_variance"] - row["exact_trace_variance"]
    # A zero-variance row (delta method on this quadratic) has se = 0: compare
    # against float32 rounding of the gradient instead of dividing by zero.
    se = math.hypot(row["trace_variance_se"], 1e-6 * (1.0 + abs(row["exact_trace_variance"])))
    row["z_exact"] = diff / se


def _flat_estimate(out):
  return _flat(out.grad), out.state


def _draws(fn, state, key, replicates: int, warmup: int, stateful: bool):
  """``replicates`` gradient draws from the compiled single-estimate ``fn``.

  Reusing the function that is timed avoids a second compilation per
  estimator and dimension. Stateless estimators: independent keys, the same
  state. Stateful ones: one chain at fixed parameters, ``warmup`` estimates
  first, then ``replicates`` consecutive estimates (their errors are
  uncorrelated — each is unbiased given the past — and the baseline's share of
  the variance is small, so the i.i.d. confidence interval is close).
  """
  keys = jax.random.split(key, warmup + replicates)
  for k in keys[:warmup]:
    _, state = fn(k, state)
  grads = []
  for k in keys[warmup:]:
    g, new_state = fn(k, state)
    grads.append(g)
    if stateful:
      state = new_state
  return np.stack(jax.device_get(grads)), state


def _variance(grads) -> dict:
  g = np.asarray(grads, dtype=np.float64)  # (R, 2d)
  ci = common.variance_ci(g, reduce="sum")
  return {
    "trace_variance": float(ci["variance"]),
    "trace_variance_se": float(ci["se"]),
    "lower": float(ci["lower"]),
    "upper": float(ci["upper"]),
  }


def _ratios(rows: dict) -> None:
  """Variance and work ratios to pathwise (with a CI on the log scale), time ratios to references."""
  pw = rows.get("pathwise") or rows["hand-written pathwise (per-sample)"]
  z = common.normal_quantile(0.95)
  for row in rows.values():
    ratio = row["trace_variance"] / pw["trace_variance"]
    row["variance_ratio_to_pathwise"] = ratio
    if row["trace_variance"] == 0:  # e.g. the delta method on this quadratic cost
      row["variance_ratio_ci"] = [0.0, 0.0]
    else:
      rel = math.hypot(
        row["trace_variance_se"] / row["trace_variance"],
        pw["trace_variance_se"] / pw["trace_variance"],
      )
      row["variance_ratio_ci"] = [ratio * math.exp(-z * rel), ratio * math.exp(z * rel)]
    row["work_ratio_to_pathwise"] = row["work"] / pw["work"]
    ref = REFERENCE_FOR_KIND.get(row["kind"])
    if ref is not None and ref in rows:
      row["reference"] = ref
      row["time_ratio_to_reference"] = row["time"]["median_s"] / rows[ref]["time"]["median_s"]
    else:
      row["reference"] = None
      row["time_ratio_to_reference"] = None


# -- reporting -------------------------------------------------------------------


def _us(t: float) -> str:
  return f"{1e6 * t:.0f}" if t >= 1e-5 else f"{1e6 * t:.1f}"


def _g(v) -> str:
  return "n/a" if v is None else f"{float(v):.3g}"


def headline(results: dict) -> str:
  dims = list(results["dims"])
  names = results["estimators"]
  var_rows, time_rows = [], []
  for name in names:
    var_rows.append(
      [name]
      + [
        f"{_g(results['dims'][d][name]['variance_ratio_to_pathwise'])} "
        f"({_g(results['dims'][d][name]['work_ratio_to_pathwise'])})"
        for d in dims
      ]
    )
  for name in names + list(results["references"]):
    cells = []
    for d in dims:
      row = results["dims"][d][name]
      cell = _us(row["time"]["median_s"])
      if row.get("time_ratio_to_reference") is not None:
        cell += f" (×{row['time_ratio_to_reference']:.2f})"
      cells.append(cell)
    time_rows.append([name] + cells)
  s = results["sizes"]
  return "\n".join(
    [
      f"f(x) = mean_j x_j², x ~ N(1, I_d), n = {s['num_samples']} samples per estimate, "
      f"{s['replicates']} replicates. Variance ratio tr Var / tr Var(pathwise) "
      "(work-normalised ratio, variance × time, in parentheses):",
      "",
      common.markdown_table(["estimator"] + [f"d={d}" for d in dims], var_rows),
      "",
      "Time per jitted estimate in µs (× its hand-written per-sample JAX equivalent, same run):",
      "",
      common.markdown_table(["estimator"] + [f"d={d}" for d in dims], time_rows),
    ]
  )


def report(results: dict) -> str:
  s = results["sizes"]
  out = [
    f"x ~ N({results['mu']}·1, {results['sigma']}²·I_d), cost {results['cost']}, "
    f"gradient in all 2d parameters. Each estimator: {s['replicates']} independent "
    f"estimates of n = {s['num_samples']} samples; **tr Var** = trace of the covariance "
    "of one n-sample estimate with a 95% CI; time = median of "
    f"{s['timing_repeats']} interleaved repeats (IQR in brackets) of one jitted "
    "estimate; work = tr Var × time. Stateful estimators (moving-average baseline) "
    f"run one chain at fixed parameters: {s['warmup_steps']} warm-up estimates (not "
    "used), then consecutive estimates whose errors are uncorrelated; their timed "
    "call also returns the new state, as a user threading it would. Timings are "
    "noisy when the machine is shared; compare ratios within one run. At d = 1 "
    "the cost is Mohamed's (x − k)² with k = 0, so the exact tr Var(ĝ_n) comes "
    "from `benchmarks/quadrature.py` where registered (166/n for the score "
    "function, 16/n for pathwise).",
    "",
  ]
  for d, rows in results["dims"].items():
    out += [f"## d = {d}", ""]
    table = []
    for name, row in rows.items():
      t = row["time"]
      table.append(
        [
          name,
          f"{_g(row['trace_variance'])} [{_g(row['lower'])}, {_g(row['upper'])}]",
          f"{_g(row['variance_ratio_to_pathwise'])} [{_g(row['variance_ratio_ci'][0])}, "
          f"{_g(row['variance_ratio_ci'][1])}]",
          f"{_us(t['median_s'])} [{_us(t['q25_s'])}, {_us(t['q75_s'])}]",
          _g(row["time_ratio_to_reference"]),
          f"{row['work']:.3g}",
          _g(row["work_ratio_to_pathwise"]),
          (
            f"{_g(row['exact_trace_variance'])} (z {row['z_exact']:+.1f})"
            if "exact_trace_variance" in row
            else ""
          ),
        ]
      )
    out += [
      common.markdown_table(
        [
          "estimator",
          "tr Var [95% CI]",
          "ratio to pathwise [95% CI]",
          "time µs [IQR]",
          "time / hand-written",
          "work (var·s)",
          "work ratio to pathwise",
          "exact tr Var",
        ],
        table,
      ),
      "",
    ]
  return "\n".join(out)


def plot(results: dict, outdir: Path) -> list[Path]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  dims = [int(d) for d in results["dims"]]
  names = results["estimators"] + list(results["references"])
  estimators = set(results["estimators"])
  fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
  for name in names:
    rows = [results["dims"][str(d)][name] for d in dims]
    st = style.style(name)
    color, ls, marker = st.color, st.linestyle, st.marker
    if name in estimators:
      ratio = np.array([r["variance_ratio_to_pathwise"] for r in rows])
      lo = np.array([r["variance_ratio_ci"][0] for r in rows])
      hi = np.array([r["variance_ratio_ci"][1] for r in rows])
      axes[0].errorbar(
        dims,
        ratio,
        yerr=[ratio - lo, hi - ratio],
        marker=marker,
        ls=ls,
        color=color,
        capsize=2,
        label=name,
      )
    axes[1].plot(
      dims,
      [1e6 * r["time"]["median_s"] for r in rows],
      marker=marker,
      ls=ls,
      color=color,
      label=name,
    )
    if name in estimators:
      axes[2].plot(dims, [r["work"] for r in rows], marker=marker, ls=ls, color=color, label=name)
  axes[0].set_title("variance relative to pathwise")
  axes[0].set_ylabel("tr Var(ĝ) / tr Var(pathwise)")
  axes[1].set_title("time per jitted estimate (grey: hand-written JAX)")
  axes[1].set_ylabel("time (µs)")
  axes[2].set_title("work-normalised variance")
  axes[2].set_ylabel("tr Var(ĝ) × time (s)")
  for ax in axes:
    common.plain_log_axis(ax, dims, at_values=True)
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.grid(True, which="major", alpha=0.3)
  handles, labels = axes[1].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
  s = results["sizes"]
  fig.suptitle(
    f"f(x) = mean x², x ~ N(1, I_d); n = {s['num_samples']} samples per estimate, "
    f"{s['replicates']} replicates, 95% CIs",
    fontsize=10,
  )
  fig.tight_layout(rect=(0, 0.1, 1, 1))
  path = common.save_figure(fig, Path(outdir) / "scaling.png", dpi=110)
  plt.close(fig)
  return [path]


BENCHMARK = common.Benchmark(
  name="scaling",
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
