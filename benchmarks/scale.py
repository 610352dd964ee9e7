"""Scaling out and streaming: devices, chunked sample counts, cost growth.

Three studies, all with the public API:

* **devices** — one jitted ``score_function(num_samples=n, sharding=...)``
  estimate (leave-one-out baseline, Normal in d = 4, f = Σx²) on k = 1, 2,
  4, 8 forced host devices, each k in its own subprocess
  (``XLA_FLAGS=--xla_force_host_platform_device_count=k``): median time and
  per-device temporary memory from ``compile().memory_analysis()``, and the
  largest difference from the k = 1 estimate (same key: it should be float
  rounding). On a CPU the "devices" share the same cores, so time shows
  overhead and correctness only; memory per device is the real figure, and
  on a GPU/TPU mesh time falls too.
* **chunked** — ``chunk_size=`` with num_samples from 10⁴ up to 10⁷ (10⁸
  with --full): time per estimate and the fitted log-log slope of time
  against n (1 = linear), against the unchunked estimator while n ≤
  ``unchunked_max``, with temporary memory of both.
* **growth** — for each estimator family (score function, pathwise,
  measure-valued, DisARM) the fitted exponent of time against n (d fixed)
  and against d (n fixed).

Timings are wall-clock medians on whatever machine runs it; exponents fitted
on the larger sizes, where fixed overheads matter least.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import scoregrad as sg

from benchmarks import common

DESCRIPTION = (
  "Sharding over 1-8 devices (time, per-device memory, identity), chunked "
  "num_samples to 10^7-10^8 (log-log slope), time-growth exponents in n and d"
)

SIZES = {
  "tiny": {
    "devices": (1, 2),
    "device_samples": 4096,
    "chunk_size": 1000,
    "chunked_samples": (10000, 100000),
    "unchunked_max": 10000,
    "growth_samples": (100, 1000),
    "growth_dims": (2, 8),
    "growth_fixed_n": 100,
    "growth_fixed_d": 4,
    "repeats": 2,
  },
  "default": {
    "devices": (1, 2, 4, 8),
    "device_samples": 1 << 20,
    "chunk_size": 10000,
    "chunked_samples": (10000, 100000, 1000000, 10000000),
    "unchunked_max": 1000000,
    "growth_samples": (1000, 10000, 100000),
    "growth_dims": (4, 16, 64, 256),
    "growth_fixed_n": 1000,
    "growth_fixed_d": 8,
    "repeats": 5,
  },
  "full": {
    "devices": (1, 2, 4, 8),
    "device_samples": 1 << 22,
    "chunk_size": 100000,
    "chunked_samples": (10000, 100000, 1000000, 10000000, 100000000),
    "unchunked_max": 10000000,
    "growth_samples": (1000, 10000, 100000, 1000000),
    "growth_dims": (4, 16, 64, 256, 1024),
    "growth_fixed_n": 1000,
    "growth_fixed_d": 8,
    "repeats": 7,
  },
}


def _normal(d):
  params = {"loc": jnp.linspace(-1.0, 1.0, d), "log_scale": jnp.zeros(d)}
  return params, lambda p: sg.dists.Normal(p["loc"], jnp.exp(p["log_scale"]))


def _cost(x):
  return jnp.sum(x**2)


def _jitted(est, f, dist_fn):
  return jax.jit(lambda k, p: est.estimate(k, f, dist_fn, p, est.init(p)))


def _temp_bytes(fn, *args):
  try:
    return int(fn.lower(*args).compile().memory_analysis().temp_size_in_bytes)
  except Exception:  # memory_analysis is not available on every backend
    return None


def slope(xs, ts, last: int = 3) -> float | None:
  """Least-squares slope of log t against log x over the ``last`` largest sizes."""
  xs, ts = np.asarray(xs[-last:], float), np.asarray(ts[-last:], float)
  if len(xs) < 2:
    return None
  return float(np.polyfit(np.log(xs), np.log(ts), 1)[0])


# -- devices (one subprocess per device count) ----------------------------------


def _device_worker(k: int, n: int, repeats: int, seed: int) -> dict:
  """Runs in a subprocess started with k forced host devices."""
  from jax.sharding import AxisType, NamedSharding
  from jax.sharding import PartitionSpec as P

  assert jax.device_count() == k, (jax.device_count(), k)
  mesh = jax.make_mesh((k,), ("samples",), axis_types=(AxisType.Auto,))
  sharding = NamedSharding(mesh, P("samples")) if k > 1 else None
  params, dist_fn = _normal(4)
  est = sg.score_function(num_samples=n, baseline=sg.baselines.leave_one_out(), sharding=sharding)
  fn = _jitted(est, _cost, dist_fn)
  key = jax.random.key(seed)
  out = fn(key, params)
  return {
    "devices": k,
    "time": common.time_fn(lambda: fn(key, params), repeats=repeats),
    "temp_bytes_per_device": _temp_bytes(fn, key, params),
    "grad": {name: np.asarray(g).tolist() for name, g in out.grad.items()},
  }


def _run_devices(sizes, seed):
  rows = []
  root = Path(__file__).resolve().parents[1]
  for k in common.progress(sizes["devices"], "scale: devices"):
    env = dict(
      os.environ,
      XLA_FLAGS=f"--xla_force_host_platform_device_count={k}",
      PYTHONPATH=os.pathsep.join([str(root)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
    )
    if env.get("JAX_PLATFORMS", "cpu") == "cpu":
      env["JAX_PLATFORMS"] = "cpu"
    cmd = [
      sys.executable,
      "-m",
      "benchmarks.scale",
      "--worker",
      str(k),
      str(sizes["device_samples"]),
      str(sizes["repeats"]),
      str(seed),
    ]
    run = subprocess.run(
      cmd, env=env, capture_output=True, text=True, timeout=1800, cwd=root, check=False
    )
    if run.returncode != 0:
      raise RuntimeError(f"device worker k={k} failed:\n{run.stderr[-3000:]}")
    rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
  base = rows[0]["grad"]
  for r in rows:
    r["max_abs_diff_vs_first"] = max(
      float(np.max(np.abs(np.asarray(r["grad"][p]) - np.asarray(base[p])))) for p in base
    )
  return rows


# -- chunked -----------------------------------------------------------------


def _run_chunked(sizes, seed):
  params, dist_fn = _normal(4)
  key = jax.random.key(seed)
  m = sizes["chunk_size"]
  rows = []
  for n in common.progress(sizes["chunked_samples"], "scale: chunked"):
    loo = sg.baselines.leave_one_out()
    chunked = _jitted(
      sg.score_function(num_samples=n, chunk_size=min(m, n), baseline=loo), _cost, dist_fn
    )
    repeats = max(1, sizes["repeats"] if n <= 10**6 else 1)
    row = {
      "n": n,
      "chunk_size": min(m, n),
      "chunked_time": common.time_fn(lambda fn=chunked: fn(key, params), repeats=repeats, warmup=1),
      "chunked_temp_bytes": _temp_bytes(chunked, key, params),
    }
    if n <= sizes["unchunked_max"]:
      plain = _jitted(sg.score_function(num_samples=n, baseline=loo), _cost, dist_fn)
      row["unchunked_time"] = common.time_fn(
        lambda fn=plain: fn(key, params), repeats=repeats, warmup=1
      )
      row["unchunked_temp_bytes"] = _temp_bytes(plain, key, params)
    rows.append(row)
  ns = [r["n"] for r in rows]
  return {
    "rows": rows,
    "slope_chunked": slope(ns, [r["chunked_time"]["median_s"] for r in rows]),
    "slope_unchunked": slope(
      [r["n"] for r in rows if "unchunked_time" in r],
      [r["unchunked_time"]["median_s"] for r in rows if "unchunked_time" in r],
    ),
  }


# -- cost growth -----------------------------------------------------------------


def _family(name, n, d):
  """(estimator, f, dist_fn, params) of one family at n samples and dimension d."""
  if name == "disarm":
    logits = jnp.linspace(-1.0, 1.0, d)
    return (
      sg.disarm(num_pairs=n),
      lambda b: jnp.sum((b - 0.45) ** 2),
      lambda l: sg.dists.Bernoulli(logits=l),
      logits,
    )
  params, dist_fn = _normal(d)
  est = {
    "score_function": lambda: sg.score_function(
      num_samples=n, baseline=sg.baselines.leave_one_out()
    ),
    "pathwise": lambda: sg.pathwise(num_samples=n),
    "measure_valued": lambda: sg.measure_valued(num_samples=n),
  }[name]()
  return est, _cost, dist_fn, params


FAMILIES = ("score_function", "pathwise", "measure_valued", "disarm")


def _run_growth(sizes, seed):
  key = jax.random.key(seed)
  out = {}
  for name in common.progress(FAMILIES, "scale: growth"):

    def timed(n, d, name=name):
      est, f, dist_fn, params = _family(name, n, d)
      fn = _jitted(est, f, dist_fn)
      return common.time_fn(lambda fn=fn, params=params: fn(key, params), repeats=sizes["repeats"])[
        "median_s"
      ]

    ns, ds = sizes["growth_samples"], sizes["growth_dims"]
    t_n = [timed(n, sizes["growth_fixed_d"]) for n in ns]
    t_d = [timed(sizes["growth_fixed_n"], d) for d in ds]
    out[name] = {
      "time_vs_n": t_n,
      "time_vs_d": t_d,
      "exponent_n": slope(ns, t_n),
      "exponent_d": slope(ds, t_d),
    }
  return out


def run(*, full: bool, seed: int, sizes: dict) -> dict:
  del full
  return {
    "sizes": sizes,
    "devices": _run_devices(sizes, seed),
    "chunked": _run_chunked(sizes, seed),
    "growth": _run_growth(sizes, seed),
  }


# -- report --------------------------------------------------------------------


def _mib(b):
  return "n/a" if b is None else f"{b / 2**20:.2f}"


def _fmt(x, digits=2):
  return "n/a" if x is None else f"{x:.{digits}f}"


def report(results: dict) -> str:
  dev = results["devices"]
  first = dev[0]
  devices = common.markdown_table(
    [
      "devices",
      "time (ms)",
      "temp MiB / device",
      "memory × devices / 1 device",
      "max abs Δ grad vs 1 device",
    ],
    [
      [
        r["devices"],
        r["time"]["median_s"] * 1e3,
        _mib(r["temp_bytes_per_device"]),
        _fmt(
          None
          if not (r["temp_bytes_per_device"] and first["temp_bytes_per_device"])
          else r["temp_bytes_per_device"] * r["devices"] / first["temp_bytes_per_device"]
        ),
        f"{r['max_abs_diff_vs_first']:.1e}",
      ]
      for r in dev
    ],
  )
  ch = results["chunked"]
  chunked = common.markdown_table(
    ["n", "chunk", "chunked (ms)", "unchunked (ms)", "temp MiB chunked / unchunked"],
    [
      [
        r["n"],
        r["chunk_size"],
        r["chunked_time"]["median_s"] * 1e3,
        r["unchunked_time"]["median_s"] * 1e3 if "unchunked_time" in r else "—",
        f"{_mib(r['chunked_temp_bytes'])} / {_mib(r.get('unchunked_temp_bytes'))}",
      ]
      for r in ch["rows"]
    ],
  )
  growth = common.markdown_table(
    ["family", "exponent in n", "exponent in d"],
    [[name, _fmt(g["exponent_n"]), _fmt(g["exponent_d"])] for name, g in results["growth"].items()],
  )
  s = results["sizes"]
  return (
    f"## Devices (score function, leave-one-out, n = {s['device_samples']}, d = 4)\n\n"
    + devices
    + "\n\nForced host devices share the CPU's cores: time shows overhead "
    "and correctness only; per-device memory is the real figure.\n\n"
    f"## Chunked num_samples (chunk_size = {s['chunk_size']})\n\n"
    + chunked
    + f"\n\nFitted log-log slope of time vs n (largest 3 sizes): chunked "
    f"{_fmt(ch['slope_chunked'])}, unchunked {_fmt(ch['slope_unchunked'])}.\n\n"
    f"## Cost growth (n ∈ {s['growth_samples']} at d = {s['growth_fixed_d']}; "
    f"d ∈ {s['growth_dims']} at n = {s['growth_fixed_n']})\n\n" + growth + "\n"
  )


def headline(results: dict) -> str:
  dev = results["devices"]
  rows = []
  if dev[0]["temp_bytes_per_device"]:
    last = dev[-1]
    rows.append(
      [
        f"per-device memory × devices / 1 device (k={last['devices']})",
        _fmt(last["temp_bytes_per_device"] * last["devices"] / dev[0]["temp_bytes_per_device"]),
        "≈ 1",
      ]
    )
  rows.append(
    [
      "max abs Δ grad, sharded vs 1 device",
      f"{max(r['max_abs_diff_vs_first'] for r in dev):.1e}",
      "float rounding",
    ]
  )
  rows.append(
    ["chunked time vs n, log-log slope", _fmt(results["chunked"]["slope_chunked"]), "≈ 1"]
  )
  for name, g in results["growth"].items():
    rows.append(
      [
        f"{name}: time exponent in n / in d",
        f"{_fmt(g['exponent_n'])} / {_fmt(g['exponent_d'])}",
        "",
      ]
    )
  return common.markdown_table(["measure", "value", "target"], rows)


def plot(results: dict, outdir: Path) -> list[Path]:
  """Two panels: per-device temporary memory against devices, and chunked time against n."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from benchmarks import style

  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
  dev = results["devices"]
  ks = [r["devices"] for r in dev]
  mib = [r["temp_bytes_per_device"] / 2**20 if r["temp_bytes_per_device"] else np.nan for r in dev]
  ax0.loglog(ks, mib, "D-", color="0.15", label="per-device temp memory (memory_analysis)")
  sharded = [(k, m) for k, m in zip(ks, mib) if k > 1]
  if sharded:
    k0, m0 = sharded[0]
    ax0.loglog(ks, [m0 * k0 / k for k in ks], ":", color="0.5", label="1/k from 2 devices")
  ax0.set_xticks(ks, [str(k) for k in ks])
  ax0.minorticks_off()
  common.plain_log_axis(ax0, [round(m, 1) for m in mib], axis="y", at_values=True)
  ax0.set_xlabel("devices (forced host devices)")
  ax0.set_ylabel("temporary memory per device (MiB)")
  ax0.set_title(f"sharded, n = {results['sizes']['device_samples']}", fontsize=10)
  ax0.grid(True, alpha=0.3)

  rows = results["chunked"]["rows"]
  ax1.loglog(
    [r["n"] for r in rows],
    [r["chunked_time"]["median_s"] for r in rows],
    "o-",
    color="#1f77b4",
    label=f"chunked (chunk_size = {results['sizes']['chunk_size']})",
  )
  un = [r for r in rows if "unchunked_time" in r]
  ax1.loglog(
    [r["n"] for r in un],
    [r["unchunked_time"]["median_s"] for r in un],
    "s--",
    color="#d62728",
    label="unchunked",
  )
  ax1.set_xlabel("num_samples")
  ax1.set_ylabel("time per estimate (s)")
  ax1.set_title("score_function + leave_one_out, d = 4", fontsize=10)
  ax1.grid(True, alpha=0.3)
  fig.tight_layout()
  style.legend_outside(fig, where="below", ncol=4)
  path = common.save_figure(fig, Path(outdir) / "scale.png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  return [path]


BENCHMARK = common.Benchmark(
  name="scale",
  description=DESCRIPTION,
  run=run,
  report=report,
  headline=headline,
  plot=plot,
  sizes=SIZES,
)


if __name__ == "__main__":
  if len(sys.argv) == 6 and sys.argv[1] == "--worker":
    k, n, repeats, seed = (int(a) for a in sys.argv[2:])
    print(json.dumps(_device_worker(k, n, repeats, seed)))
  else:
    sys.exit("Run the benchmark with `python -m benchmarks.run scale [--full | --tiny]`.")
