"""scoregrad.compat.optax_monte_carlo against optax 0.1.8's jacfwd formulation.

optax 0.1.8's ``score_function_jacobians`` and ``pathwise_jacobians``
computed per-sample jacobians as ``jax.jacfwd`` over the parameters of the
vector of per-sample surrogates (f(x_i) log p(x_i; θ), resp. f(x_i(θ))): one
forward tangent per parameter, so the cost grows with the parameter count 2d.
The compat functions compute the same jacobians with reverse mode,
``vmap(grad)`` over the samples. Both are timed here on optax's own
``multi_normal(loc, log_scale)`` builder (the compat module's copy), with the
jacfwd formulation written out below, for d ∈ {10, 100, 1000} parameters per
leaf and n samples. Before timing, the two must agree to float32 rounding
(same ``rng``, same samples).

Timings: medians of interleaved repeats after compilation (machine drift hits
both alike); memory: XLA's compiled temporary-buffer size. Only the ratios in
one run are meaningful.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from scoregrad.compat import optax_monte_carlo as mc

from benchmarks import common, style

DESCRIPTION = (
  "compat.optax_monte_carlo (reverse-mode vmap(grad)) vs optax 0.1.8's "
  "jacfwd per-sample jacobians, d = 10, 100, 1000"
)

SIZES = {
  "tiny": {"dims": (4,), "num_samples": 16, "repeats": (2,)},
  "default": {"dims": (10, 100, 1000), "num_samples": 1000, "repeats": (20, 10, 2)},
  "full": {"dims": (10, 100, 1000, 3000), "num_samples": 1000, "repeats": (60, 30, 10, 3)},
}
SIZE_MINIMUM = {"dims": 1, "num_samples": 1, "repeats": 1}

ESTIMATORS = ("score_function_jacobians", "pathwise_jacobians")


def cost(x):
  return jnp.sum(x**2) + jnp.sum(jnp.sin(x))


def _params(d):
  return [jnp.linspace(-1.0, 1.0, d), jnp.full((d,), -0.2)]


def jacfwd_score_function(function, params, dist_builder, rng, num_samples):
  """optax 0.1.8's formulation: jacfwd of the per-sample surrogates f(x_i) log p(x_i)."""

  def surrogate(params):
    dist = dist_builder(*params)
    samples = jax.lax.stop_gradient(dist.sample((num_samples,), rng))
    return jax.vmap(lambda x: function(x) * dist.log_prob(x))(samples)

  return jax.jacfwd(surrogate)(params)


def jacfwd_pathwise(function, params, dist_builder, rng, num_samples):
  """optax 0.1.8's formulation: jacfwd of f(x_i(θ)) over θ."""
  return jax.jacfwd(lambda p: jax.vmap(function)(dist_builder(*p).sample((num_samples,), rng)))(
    params
  )


REFERENCES = {
  "score_function_jacobians": jacfwd_score_function,
  "pathwise_jacobians": jacfwd_pathwise,
}


def _temp_bytes(fn, *args):
  try:
    return int(fn.lower(*args).compile().memory_analysis().temp_size_in_bytes)
  except Exception:  # Not every backend reports memory.
    return None


def run(*, full: bool, seed: int, tiny: bool = False, sizes: dict | None = None) -> dict:
  sizes = common.sizes_for(SIZES, full, sizes, tiny)
  dims, n = sizes["dims"], sizes["num_samples"]
  repeats = tuple(sizes["repeats"])
  if len(repeats) == 1:
    repeats = repeats * len(dims)
  if len(repeats) != len(dims):
    raise common.SizeError(
      f"compat: `repeats` needs one value, or one per entry of dims {dims}; got {repeats}."
    )
  rng = jax.random.PRNGKey(seed)
  rows = []
  bar = iter(common.progress(range(len(dims) * len(ESTIMATORS)), "compat"))
  for d, reps in zip(dims, repeats):
    params = _params(d)
    for name in ESTIMATORS:
      next(bar, None)
      ours = getattr(mc, name)
      fns = {
        "compat": jax.jit(lambda p, k, f=ours: f(cost, p, mc.multi_normal, k, n)),
        "jacfwd": jax.jit(lambda p, k, f=REFERENCES[name]: f(cost, p, mc.multi_normal, k, n)),
      }
      a, b = fns["compat"](params, rng), fns["jacfwd"](params, rng)
      max_rel = max(
        float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-30)) for x, y in zip(a, b)
      )
      if not max_rel < 1e-3:
        raise AssertionError(
          f"compat {name} disagrees with the jacfwd formulation at d={d}: "
          f"max relative difference {max_rel:.3g}."
        )
      t = common.interleaved_times(
        {k: (lambda f=f: f(params, rng)) for k, f in fns.items()}, repeats=reps, warmup=0
      )  # warmed up by the check above
      rows.append(
        {
          "estimator": name,
          "d": d,
          "n": n,
          "repeats": reps,
          "compat_s": t["compat"]["median_s"],
          "jacfwd_s": t["jacfwd"]["median_s"],
          "speedup": t["jacfwd"]["median_s"] / t["compat"]["median_s"],
          "max_relative_difference": max_rel,
          "compat_temp_bytes": _temp_bytes(fns["compat"], params, rng),
          "jacfwd_temp_bytes": _temp_bytes(fns["jacfwd"], params, rng),
          "timings": t,
        }
      )
  return {
    "sizes": sizes,
    "cost": "f(x) = Σ x² + Σ sin x",
    "builder": "multi_normal(loc, log_scale)",
    "rows": rows,
  }


def _mib(b):
  return "n/a" if b is None else f"{b / 2**20:.1f}"


def report(results: dict) -> str:
  table = common.markdown_table(
    [
      "function",
      "d",
      "n",
      "compat (ms)",
      "jacfwd (ms)",
      "speedup",
      "temp MiB compat / jacfwd",
      "max rel. diff",
    ],
    [
      [
        r["estimator"],
        r["d"],
        r["n"],
        r["compat_s"] * 1e3,
        r["jacfwd_s"] * 1e3,
        f"{r['speedup']:.1f}×",
        f"{_mib(r['compat_temp_bytes'])} / {_mib(r['jacfwd_temp_bytes'])}",
        r["max_relative_difference"],
      ]
      for r in results["rows"]
    ],
  )
  return (
    f"Cost {results['cost']}, builder {results['builder']}: d parameters per leaf "
    "(2d in all). Medians of interleaved repeats after compilation.\n\n" + table + "\n"
  )


def headline(results: dict) -> str:
  rows = [[r["estimator"], r["d"], r["n"], f"{r['speedup']:.1f}×"] for r in results["rows"]]
  return (
    "Per-sample jacobians, jacfwd (optax 0.1.8) time / compat time:\n\n"
    + common.markdown_table(["function", "d", "n", "speedup"], rows)
  )


def plot(results: dict, outdir: Path) -> list[Path]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for name in ESTIMATORS:
    rows = [r for r in results["rows"] if r["estimator"] == name]
    ds = [r["d"] for r in rows]
    # Colour and marker: the estimator's (benchmarks/style.py); solid: scoregrad's
    # compat module, dashed: optax 0.1.8's jacfwd.
    st = style.style(name)
    ax.plot(
      ds,
      [r["compat_s"] * 1e3 for r in rows],
      color=st.color,
      marker=st.marker,
      ls="-",
      label=f"{name}: scoregrad.compat (vmap(grad))",
    )
    ax.plot(
      ds,
      [r["jacfwd_s"] * 1e3 for r in rows],
      color=st.color,
      marker=st.marker,
      ls="--",
      mfc="none",
      label=f"{name}: optax 0.1.8 (jacfwd)",
    )
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("d (parameters per leaf)")
  ax.set_ylabel("time per call (ms)")
  ax.set_title(f"Per-sample jacobians, n = {results['sizes']['num_samples']}")
  ax.grid(True, which="major", alpha=0.3)
  fig.tight_layout()
  style.legend_outside(fig, ax)
  path = common.save_figure(fig, Path(outdir) / "compat.png", dpi=120, bbox_inches="tight")
  plt.close(fig)
  return [path]


BENCHMARK = common.Benchmark(
  name="compat",
  description=DESCRIPTION,
  run=run,
  report=report,
  headline=headline,
  plot=plot,
  sizes=SIZES,
  size_minimum=SIZE_MINIMUM,
  takes_tiny=True,
)
