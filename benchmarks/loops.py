"""Sites inside ``sg.scan`` against the same program unrolled in Python, and hand-written JAX.

The program: a tabular MDP (4 states, 3 actions, stochastic transitions; the
policy's action and the transition are both score-function sites, a cost at
every step), T steps, n = 16 runs per estimate with the per-step
leave-one-out baseline. Three entrants:

* ``scan``: ``sg.scan`` over the steps (one site name per site, per-step
  credit from the body's data flow);
* ``unrolled``: the same program with a Python loop, sites ``a{t}``,
  ``s{t}`` and costs ``c{t}`` (the only way before ``sg.scan``): the same
  estimator (per-step credit from the data flow, a baseline per site);
* ``hand_written``: a ``lax.scan`` rollout returning per-step log-probs and
  costs, and causal REINFORCE with the per-step leave-one-out baseline
  written by hand (first order only; the graph's gradient is checked equal
  at the same key before timing).

Measured per T: compile time of ``jax.jit(jax.grad(loss))`` (lowering,
tracing included, plus XLA compilation; wall and process CPU time, the
latter less sensitive to a shared machine), the jaxpr's equation count, the
time per gradient estimate (interleaved rounds after compilation; the ratio
to hand-written within the run is what means anything) and the gradient
variance (per coordinate over ``replicates`` independent estimates, summed).

Run: ``python -m benchmarks.run loops`` (or ``python -m benchmarks.loops``).
"""

from __future__ import annotations

from pathlib import Path
import time

import jax
import jax.numpy as jnp
import numpy as np

import scoregrad as sg
from scoregrad.dists import Categorical

from benchmarks import (
  common,
  style,
)

DESCRIPTION = (
  "sg.scan vs the same program unrolled in Python vs hand-written JAX: compile time, "
  "time per estimate, gradient variance (tabular MDP)."
)
SIZES = {  # short, long: the two numbers of steps T
  "tiny": {"short": 2, "long": 3, "num_samples": 4, "replicates": 8, "repeats": 3},
  "default": {"short": 8, "long": 52, "num_samples": 16, "replicates": 400, "repeats": 20},
  "full": {"short": 8, "long": 200, "num_samples": 16, "replicates": 2000, "repeats": 50},
}
NUM_STATES, NUM_ACTIONS = 4, 3


def _env(key):
  k1, k2 = jax.random.split(key)
  costs = jax.random.normal(k1, (NUM_STATES, NUM_ACTIONS))
  transition_logits = jax.random.normal(k2, (NUM_STATES, NUM_ACTIONS, NUM_STATES))
  return costs, transition_logits


def _programs(env, steps):
  costs, transitions = env

  def step(theta, s, k, t=""):
    ka, ks = jax.random.split(k)
    a = sg.sample(f"a{t}", Categorical(logits=theta[s]), ka, estimator="score_function")
    s2 = sg.sample(f"s{t}", Categorical(logits=transitions[s, a]), ks, estimator="score_function")
    sg.cost(f"c{t}", costs[s, a])
    return s2, None

  def scanned(theta, key):
    sg.scan(lambda s, k: step(theta, s, k), jnp.int32(0), jax.random.split(key, steps))

  def unrolled(theta, key):
    s, keys = jnp.int32(0), jax.random.split(key, steps)
    for t in range(steps):
      s, _ = step(theta, s, keys[t], t)

  return scanned, unrolled


def _hand_written(env, steps, n):
  """Causal REINFORCE with the per-step leave-one-out baseline, by hand."""
  costs, transitions = env

  def rollout(theta, key):
    def step(s, k):
      ka, ks = jax.random.split(k)
      pa = Categorical(logits=theta[s])
      a = jax.lax.stop_gradient(pa.sample(ka))
      s2 = Categorical(logits=transitions[s, a]).sample(ks)
      return s2, (pa.log_prob(a), costs[s, a])

    return jax.lax.scan(step, jnp.int32(0), jax.random.split(key, steps))[1]

  def loss(theta, key):
    lp, c = jax.vmap(lambda k: rollout(theta, k))(jax.random.split(key, n))  # (n, T)
    to_go = jax.lax.cumsum(c, axis=1, reverse=True)
    adv = jax.lax.stop_gradient(to_go - (jnp.sum(to_go, 0) - to_go) / (n - 1))
    score = jnp.mean(jnp.sum(lp * adv, axis=1))
    return jnp.mean(jnp.sum(c, axis=1)) + score - jax.lax.stop_gradient(score)

  return loss


def _count(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    total += 1
    for v in eqn.params.values():
      for sub in v if isinstance(v, (tuple, list)) else (v,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          total += _count(inner)
  return total


def run(*, full: bool, seed: int, tiny: bool = False, sizes: dict | None = None) -> dict:
  """Runs the benchmark at the preset sizes (or ``sizes``); see the module docstring."""
  sizes = common.sizes_for(SIZES, full, sizes, tiny)
  base = jax.random.key(seed)
  env = _env(jax.random.fold_in(base, 0))
  theta = 0.3 * jax.random.normal(jax.random.fold_in(base, 1), (NUM_STATES, NUM_ACTIONS))
  n = sizes["num_samples"]
  key = jax.random.fold_in(base, 2)
  rep_keys = jax.random.split(jax.random.fold_in(base, 3), sizes["replicates"])
  rows = []
  for steps in common.progress([sizes["short"], sizes["long"]], desc="loops"):
    scanned, unrolled = _programs(env, steps)
    losses = {
      "scan": sg.surrogate(scanned, num_samples=n, baseline=sg.baselines.leave_one_out()),
      "unrolled": sg.surrogate(unrolled, num_samples=n, baseline=sg.baselines.leave_one_out()),
      "hand_written": _hand_written(env, steps, n),
    }
    row: dict = {"steps": steps, "entrants": {}}
    compiled = {}
    for name, loss in losses.items():
      grad = jax.grad(loss)
      t0, c0 = time.perf_counter(), time.process_time()
      lowered = jax.jit(grad).lower(theta, key)
      compiled[name] = lowered.compile()
      compile_s, compile_cpu_s = time.perf_counter() - t0, time.process_time() - c0
      eqns = _count(jax.make_jaxpr(grad)(theta, key).jaxpr)
      reps = np.asarray(jax.jit(jax.vmap(lambda k, g=grad: g(theta, k)))(rep_keys), np.float64)
      row["entrants"][name] = {
        "compile_s": compile_s,
        "compile_cpu_s": compile_cpu_s,
        "jaxpr_equations": eqns,
        "variance_sum": float(np.sum(np.var(reps.reshape(len(reps), -1), axis=0, ddof=1))),
      }
    g = {k: np.asarray(c(theta, key)) for k, c in compiled.items()}
    row["max_abs_difference_scan_vs_unrolled"] = float(np.max(np.abs(g["scan"] - g["unrolled"])))
    row["max_abs_difference_scan_vs_hand_written"] = float(
      np.max(np.abs(g["scan"] - g["hand_written"]))
    )
    row["max_abs_grad"] = float(np.max(np.abs(g["hand_written"])))
    times = common.interleaved_times(
      {k: (lambda c=c: c(theta, key)) for k, c in compiled.items()}, repeats=sizes["repeats"]
    )
    for k, t in times.items():
      row["entrants"][k]["time_per_estimate"] = t
    hw = row["entrants"]["hand_written"]
    for k in ("scan", "unrolled"):
      e = row["entrants"][k]
      e["time_ratio_to_hand_written"] = (
        e["time_per_estimate"]["median_s"] / hw["time_per_estimate"]["median_s"]
      )
      e["variance_ratio_to_hand_written"] = e["variance_sum"] / hw["variance_sum"]
    rows.append(row)
  return {"sizes": sizes, "states": NUM_STATES, "actions": NUM_ACTIONS, "rows": rows}


_g = common.format_number


def _table(results: dict) -> str:
  out = []
  for row in results["rows"]:
    for name, e in row["entrants"].items():
      out.append(
        [
          row["steps"],
          name,
          f"{e['compile_s']:.2f}",
          f"{e['compile_cpu_s']:.2f}",
          e["jaxpr_equations"],
          f"{1e3 * e['time_per_estimate']['median_s']:.3f}",
          f"{e.get('time_ratio_to_hand_written', 1.0):.2f}",
          _g(e["variance_sum"]),
          f"{e.get('variance_ratio_to_hand_written', 1.0):.3f}",
        ]
      )
  return common.markdown_table(
    [
      "T",
      "entrant",
      "compile (s)",
      "compile CPU (s)",
      "jaxpr eqns",
      "ms / estimate",
      "time / hand",
      "Σ var (grad)",
      "var / hand",
    ],
    out,
  )


def headline(results: dict) -> str:
  s = results["sizes"]
  diffs = ", ".join(
    f"T={r['steps']}: {_g(r['max_abs_difference_scan_vs_hand_written'])}" for r in results["rows"]
  )
  return "\n".join(
    [
      f"Tabular MDP ({results['states']} states, {results['actions']} actions, stochastic "
      f"transitions), n = {s['num_samples']} runs per estimate, per-step leave-one-out; "
      f"variance over {s['replicates']} estimates. Max |grad(scan) − grad(hand)| at the same "
      f"key: {diffs}.",
      "",
      _table(results),
    ]
  )


def report(results: dict) -> str:
  return headline(results)


def plot(results: dict, outdir: Path) -> list[Path]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = results["rows"]
  steps = [r["steps"] for r in rows]
  entrants = list(dict.fromkeys(e for r in rows for e in r["entrants"]))
  fig, (ax_c, ax_t) = plt.subplots(1, 2, figsize=(9, 3.4))
  for name in entrants:
    st = style.style(name)
    have = [r for r in rows if name in r["entrants"]]
    ts = [r["steps"] for r in have]
    ax_c.plot(ts, [r["entrants"][name]["compile_cpu_s"] for r in have], label=name, **st.kwargs())
    timing = [r["entrants"][name]["time_per_estimate"] for r in have]
    med = np.array([t["median_s"] for t in timing]) * 1e3
    lo = med - np.array([t["q25_s"] for t in timing]) * 1e3
    hi = np.array([t["q75_s"] for t in timing]) * 1e3 - med
    ax_t.errorbar(ts, med, yerr=[lo, hi], capsize=3, label=name, **st.kwargs())
  for ax in (ax_c, ax_t):
    ax.set_yscale("log")
    common.plain_log_axis(ax, steps, "x", at_values=True)
    ax.set_xlabel("steps T")
  ax_c.set_ylabel("compile CPU time (s)")
  ax_c.set_title("compile (CPU s)")
  ax_t.set_ylabel("ms per estimate (median, IQR)")
  ax_t.set_title(f"time per estimate (n = {results['sizes']['num_samples']})")
  fig.tight_layout()
  style.legend_outside(fig, ax_c, where="below", ncol=len(entrants))
  path = common.save_figure(fig, Path(outdir) / "loops.png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  return [path]


BENCHMARK = common.Benchmark(
  name="loops",
  description=DESCRIPTION,
  run=run,
  report=report,
  headline=headline,
  plot=plot,
  sizes=SIZES,
  takes_tiny=True,
)


if __name__ == "__main__":  # pragma: no cover
  print(headline(run(full=False, seed=0)))
