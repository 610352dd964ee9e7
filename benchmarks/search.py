"""Black-box search: scoregrad's evolution strategies against evosax's.

A Gaussian search distribution N(μ, diag σ²) minimises a test function f by
following estimates of ∇E[f] (with fitness shaping) from n evaluations per
generation. Every method gets the same population n, the same number of
generations G, the same initial mean (uniform in [−3, 3]^d, one per seed)
and initial σ = 1, on the same 5 seeds:

* ``sg_es``: ``score_function(num_samples=n, sampling="antithetic",
  fitness_shaping=centered_ranks())`` on (μ, log σ), with optax's Adam
  (learning rate 0.05): the OpenAI-ES estimator with a learned σ.
* ``sg_snes``: ``natural_gradient(score_function(num_samples=n,
  fitness_shaping=rank_weights()), structure="diagonal")`` on (μ, log σ) with SGD at SNES's
  learning rates (n for μ, n·(3 + log d)/(5√d) for log σ): the separable NES
  update written with scoregrad.
* evosax 0.3 (the ``dev`` extra; rows absent if it is not installed):
  ``Open_ES`` (antithetic, centered ranks, σ fixed at 1, the same Adam),
  ``SNES`` and ``Sep_CMA_ES`` (their defaults, σ₀ = 1). Sep-CMA-ES (diagonal
  covariance, like the other four) rather than full CMA-ES: full CMA-ES's
  d × d eigendecomposition per generation made the default run take over
  ten minutes at d = 100 on 2 cores.

The objective reported is f at the final mean μ_G (median, min and max over
the seeds) and the best f evaluated during the run (scoregrad through
``keep_samples=True``, evosax through its state's ``best_fitness``). Time
per generation: the compiled ``lax.scan`` over the G generations of all
seeds at once (vmapped), median of repeats after compilation, divided by G.

Test functions (minimum 0 at x* = 0, or 1 for Rosenbrock): sphere Σx²;
Rastrigin 10d + Σ(x² − 10 cos 2πx); Rosenbrock Σ 100(x_{i+1} − x_i²)² +
(1 − x_i)²; step Σ ⌊x + ½⌋² (piecewise constant, so its gradient is 0
almost everywhere: only a search-distribution method can descend it).

A NaN in the table is the method's own numerical failure after convergence
(σ underflowing to 0 in float32, so z = (x − μ)/σ is 0/0), reported as it
came out, not replaced.
"""

from __future__ import annotations

import math
from pathlib import Path

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
  "Evolution strategies: scoregrad (score_function + fitness shaping, natural gradient) vs "
  "evosax OpenES/SNES/Sep-CMA-ES on sphere, Rastrigin, Rosenbrock (d = 10, 100) and a step function"
)

SIZES = {
  "tiny": {"dims": (3,), "population": 8, "generations": 4, "seeds": 2, "repeats": 1},
  "default": {"dims": (10, 100), "population": 64, "generations": 1000, "seeds": 5, "repeats": 2},
  "full": {"dims": (10, 100), "population": 64, "generations": 5000, "seeds": 5, "repeats": 5},
}
SIZE_MINIMUM = {"dims": 2, "population": 4, "generations": 1, "seeds": 1, "repeats": 1}

LEARNING_RATE = 0.05
INIT_RANGE = 3.0


def sphere(x):
  return jnp.sum(x**2)


def rastrigin(x):
  return 10.0 * x.shape[0] + jnp.sum(x**2 - 10.0 * jnp.cos(2 * math.pi * x))


def rosenbrock(x):
  return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def step(x):
  return jnp.sum(jnp.floor(x + 0.5) ** 2)


FUNCTIONS = {"sphere": sphere, "rastrigin": rastrigin, "rosenbrock": rosenbrock, "step": step}


# (function, d): the step function in the smallest dimension only.
def problems(dims):
  out = [(name, d) for d in dims for name in ("sphere", "rastrigin", "rosenbrock")]
  return out + [("step", min(dims))]


def _dist_fn(p):
  return sg.dists.Normal(p["loc"], jnp.exp(p["log_scale"]))


def scoregrad_es(f, d, n, generations):
  est = sg.score_function(
    num_samples=n,
    sampling="antithetic",
    fitness_shaping=sg.shaping.centered_ranks(),
    keep_samples=True,
  )
  return _scoregrad_loop(est, optax.adam(LEARNING_RATE), f, d, generations)


def snes_std_rate(d):
  return (3 + math.log(d)) / (5 * math.sqrt(d))


def scoregrad_snes(f, d, n, generations):
  est = sg.natural_gradient(
    sg.score_function(num_samples=n, fitness_shaping=sg.shaping.rank_weights(), keep_samples=True),
    structure="diagonal",
  )
  opt = optax.multi_transform(
    {"loc": optax.sgd(float(n)), "log_scale": optax.sgd(n * snes_std_rate(d))},
    {"loc": "loc", "log_scale": "log_scale"},
  )
  return _scoregrad_loop(est, opt, f, d, generations)


def _scoregrad_loop(est, opt, f, d, generations):
  def run(key, x0):
    params = {"loc": x0, "log_scale": jnp.zeros(d)}
    carry0 = (params, opt.init(params), est.init(params), jnp.asarray(jnp.inf))

    def gen(carry, k):
      params, opt_state, est_state, best = carry
      out = est.estimate(k, f, _dist_fn, params, est_state)
      updates, opt_state = opt.update(out.grad, opt_state, params)
      best = jnp.minimum(best, jnp.min(out.costs))
      return (optax.apply_updates(params, updates), opt_state, out.state, best), None

    (params, _, _, best), _ = jax.lax.scan(gen, carry0, jax.random.split(key, generations))
    return f(params["loc"]), best

  return run


def _evosax_loop(make, f, d, n, generations):
  es = make(n, d)
  es_params = es.default_params

  def run(key, x0):
    init_key, key = jax.random.split(key)
    state = es.init(init_key, x0, es_params)

    def gen(state, k):
      ask_key, tell_key = jax.random.split(k)
      population, state = es.ask(ask_key, state, es_params)
      state, _ = es.tell(tell_key, population, jax.vmap(f)(population), state, es_params)
      return state, None

    state, _ = jax.lax.scan(gen, state, jax.random.split(key, generations))
    return f(state.mean), state.best_fitness

  return run


def evosax_methods():
  """The evosax rows, or ``{}`` (and the reason) when evosax is not installed."""
  try:
    from evosax.algorithms import SNES, Open_ES, Sep_CMA_ES
  except ImportError as e:  # the dev extra is not installed
    return {}, f"evosax not importable ({e}); its rows are absent"

  def open_es(n, d):
    return Open_ES(n, jnp.zeros(d), optimizer=optax.adam(LEARNING_RATE))

  def snes(n, d):
    return SNES(n, jnp.zeros(d))

  def sep_cma_es(n, d):
    return Sep_CMA_ES(n, jnp.zeros(d))

  def wrap(make):
    return lambda f, d, n, g: _evosax_loop(make, f, d, n, g)

  from importlib import metadata

  version = metadata.version("evosax")
  return {
    "evosax_open_es": wrap(open_es),
    "evosax_snes": wrap(snes),
    "evosax_sep_cma_es": wrap(sep_cma_es),
  }, f"evosax {version}"


def methods():
  theirs, note = evosax_methods()
  return {"sg_es": scoregrad_es, "sg_snes": scoregrad_snes, **theirs}, note


def run(*, full: bool, seed: int, tiny: bool = False, sizes: dict | None = None) -> dict:
  sizes = common.sizes_for(SIZES, full, sizes, tiny)
  dims = tuple(sizes["dims"])
  n, generations = sizes["population"], sizes["generations"]
  num_seeds, repeats = sizes["seeds"], sizes["repeats"]
  if n % 2:
    raise common.SizeError(f"search: `population` must be even (antithetic pairs); got {n}.")
  table, evosax_note = methods()
  rows = []
  todo = problems(dims)
  bar = iter(common.progress(range(len(todo) * len(table)), "search"))
  names = tuple(FUNCTIONS)
  for d in dims:
    # One compilation per (method, d): the function is a lax.switch on a
    # traced index, so the problems of one dimension share the program.
    fns = {}
    for method, build in table.items():

      def program(keys, x0, index, build=build):
        f = lambda x: jax.lax.switch(index, [FUNCTIONS[k] for k in names], x)
        return jax.vmap(build(f, d, n, generations))(keys, x0)

      fns[method] = jax.jit(program)
    for name, dim in todo:
      if dim != d:
        continue
      index = jnp.asarray(names.index(name), jnp.int32)
      keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), d), num_seeds)
      x0 = jax.vmap(lambda k: jax.random.uniform(k, (d,), minval=-INIT_RANGE, maxval=INIT_RANGE))(
        jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
      )
      results = {}
      for method, fn in fns.items():
        next(bar, None)
        final, best = common.block(fn(keys, x0, index))  # compiles on first use
        results[method] = (np.asarray(final), np.asarray(best))
      times = common.interleaved_times(
        {m: (lambda fn=fn: fn(keys, x0, index)) for m, fn in fns.items()},
        repeats=repeats,
        warmup=0,
      )
      for method in fns:
        final, best = results[method]
        rows.append(
          {
            "function": name,
            "d": d,
            "method": method,
            "final": final.tolist(),
            "final_median": float(np.median(final)),
            "final_min": float(np.min(final)),
            "final_max": float(np.max(final)),
            "best_median": float(np.median(best)),
            "time_per_generation_s": times[method]["median_s"] / generations,
            "timings": times[method],
          }
        )
  return {
    "sizes": sizes,
    "learning_rate": LEARNING_RATE,
    "init": f"mean uniform in [-{INIT_RANGE}, {INIT_RANGE}]^d per seed, sigma 1",
    "evosax": evosax_note,
    "rows": rows,
  }


def _ratio_rows(results):
  by = {(r["function"], r["d"], r["method"]): r for r in results["rows"]}
  out = []
  for r in results["rows"]:
    ref = {"sg_es": "evosax_open_es", "sg_snes": "evosax_snes"}.get(r["method"])
    other = by.get((r["function"], r["d"], ref)) if ref else None
    out.append((r, other))
  return out


def report(results: dict) -> str:
  s = results["sizes"]
  rows = []
  for r, other in _ratio_rows(results):
    ratio = f"{r['time_per_generation_s'] / other['time_per_generation_s']:.2f}×" if other else ""
    rows.append(
      [
        r["function"],
        r["d"],
        r["method"],
        r["final_median"],
        r["final_min"],
        r["final_max"],
        r["best_median"],
        r["time_per_generation_s"] * 1e6,
        ratio,
      ]
    )
  table = common.markdown_table(
    [
      "function",
      "d",
      "method",
      "f(μ_G) median",
      "min",
      "max",
      "best f seen (median)",
      "µs / generation",
      "time vs evosax twin",
    ],
    rows,
  )
  return (
    f"Population {s['population']}, {s['generations']} generations, {s['seeds']} seeds "
    f"(vmapped together; time per generation is for all seeds at once), "
    f"{results['init']}; Adam learning rate {results['learning_rate']} for sg_es and "
    f"evosax_open_es; {results['evosax']}. 'time vs evosax twin': sg_es against "
    "evosax_open_es, sg_snes against evosax_snes.\n\n" + table + "\n"
  )


def headline(results: dict) -> str:
  rows = [
    [r["function"], r["d"], r["method"], r["final_median"], r["time_per_generation_s"] * 1e6]
    for r in results["rows"]
  ]
  return "Final objective (median over seeds) and time per generation:\n\n" + (
    common.markdown_table(["function", "d", "method", "f(μ_G)", "µs / gen"], rows)
  )


def plot(results: dict, outdir: Path) -> list[Path]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  todo = list(dict.fromkeys((r["function"], r["d"]) for r in results["rows"]))
  method_names = list(dict.fromkeys(r["method"] for r in results["rows"]))
  fig, axes = plt.subplots(1, len(todo), figsize=(2.2 * len(todo), 3.4), squeeze=False)
  for ax, (name, d) in zip(axes[0], todo):
    for i, m in enumerate(method_names):
      r = next(
        (r for r in results["rows"] if (r["function"], r["d"], r["method"]) == (name, d, m)), None
      )
      if r is None:
        continue
      color = style.TAB10[i % len(style.TAB10)]  # not estimators of the table
      # None in the JSON (a run that did not finish) is NaN: not drawn on the log axis.
      vals = np.asarray([np.nan if v is None else v for v in r["final"]], float)
      vals = np.maximum(vals[np.isfinite(vals)], 1e-12)
      ax.scatter(np.full(vals.shape, i), vals, s=10, color=color, label=m)
      if r["final_median"] is not None and np.isfinite(r["final_median"]):
        ax.plot([i - 0.3, i + 0.3], [max(r["final_median"], 1e-12)] * 2, color=color)
    ax.set_yscale("log")
    ax.set_xticks([])
    ax.set_title(f"{name}, d={d}", fontsize=8)
    ax.set_ylabel("f(final mean), 5 seeds", fontsize=8)
  fig.tight_layout()
  from matplotlib.lines import Line2D

  # Proxies: a method with no finite result in the first panel still gets its entry.
  handles = [
    Line2D([], [], color=style.TAB10[i % len(style.TAB10)], marker="o", linestyle="", label=m)
    for i, m in enumerate(method_names)
  ]
  style.legend_outside(fig, handles, where="below", ncol=len(method_names), fontsize=7)
  path = common.save_figure(fig, Path(outdir) / "search.png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  return [path]


BENCHMARK = common.Benchmark(
  name="search",
  description=DESCRIPTION,
  run=run,
  report=report,
  headline=headline,
  plot=plot,
  sizes=SIZES,
  size_minimum=SIZE_MINIMUM,
  takes_tiny=True,
)
