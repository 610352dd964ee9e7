"""Runs the benchmark suite: `python -m benchmarks.run [NAMES...] [--full | --tiny]`.

Each benchmark is a module in ``benchmarks/`` that exports one
``BENCHMARK = benchmarks.common.Benchmark(...)`` record, listed in ``SUITE``
below. The record names its ``run``, ``report``, ``headline`` and ``plot``
functions and declares what ``run`` takes besides ``full`` and ``seed``:

* ``takes_tiny`` — ``run(..., tiny: bool = False)``, smoke-test sizes
  (``--tiny``; the tests run every benchmark this way);
* ``sizes = {"tiny": {...}, "default": {...}, "full": {...}}`` (and
  ``size_minimum = {key: lowest allowed}``) — ``run(..., sizes=None)``: the
  runner validates the preset plus ``--set KEY=VALUE`` overrides against the
  defaults' keys and types before anything runs, and passes the result;
* ``takes_estimators`` — ``run(..., estimators=None)``, a list of names from
  ``benchmarks/estimators.py`` (``--estimators``), validated by the runner
  (against ``family``, when given).

Every argument (names, sizes, estimators, results folder) is checked before
any benchmark starts: bad input prints ``error: ...`` and exits with status 2.
A benchmark that raises is reported and skipped (exit status 1 at the end).
Results go to ``benchmarks/results/<name>.json`` (with seeds, versions, device
and sizes), ``<name>.md`` and PNGs, each written atomically, the JSON last;
a stale ``<name>.json`` is deleted when the benchmark starts, so a JSON file
exists only for a run that completed. ``summary.md`` gathers the headline
tables of a complete default/--full/--tiny run of all benchmarks.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
import sys
import time
import traceback

from benchmarks import (
  common,
  compat,
  discrete_toy,
  discrete_vae,
  discrete_vae_mnist,
  graphs_at_scale,
  greeks,
  lm_policy_gradient,
  logreg,
  loops,
  mohamed,
  policy_gradient,
  scale,
  scaling,
  search,
  throughput,
  vi,
)

# The suite, in default run order.
SUITE = (
  throughput.BENCHMARK,
  mohamed.BENCHMARK,
  scaling.BENCHMARK,
  scale.BENCHMARK,
  logreg.BENCHMARK,
  discrete_toy.BENCHMARK,
  discrete_vae.BENCHMARK,
  discrete_vae_mnist.BENCHMARK,
  compat.BENCHMARK,
  policy_gradient.BENCHMARK,
  lm_policy_gradient.BENCHMARK,
  loops.BENCHMARK,
  vi.BENCHMARK,
  greeks.BENCHMARK,
  graphs_at_scale.BENCHMARK,
  search.BENCHMARK,
)

# Benchmark name -> record (in default run order).
BENCHMARKS = {bench.name: bench for bench in SUITE}

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


class UsageError(Exception):
  """Bad command-line input: reported as ``error: ...`` with exit status 2."""


def _parse(argv):
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.run",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
    "names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}"
  )
  size = p.add_mutually_exclusive_group()
  size.add_argument("--full", action="store_true", help="paper-scale sizes (slow)")
  size.add_argument(
    "--tiny", action="store_true", help="smoke-test sizes (seconds; numbers are not meaningful)"
  )
  p.add_argument(
    "--set",
    dest="overrides",
    action="append",
    default=[],
    metavar="[BENCH.]KEY=VALUE",
    help="override one size, e.g. --set replicates=500 or --set scaling.dims=1,10 "
    "(see --list for each benchmark's sizes); repeatable",
  )
  p.add_argument(
    "--estimators",
    default=None,
    metavar="NAME[,NAME...]",
    help="only these rows of benchmarks/estimators.py (benchmarks that iterate over it)",
  )
  p.add_argument("--seed", type=int, default=0, help="base PRNG seed (default 0)")
  p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
  p.add_argument("--no-plots", action="store_true", help="skip PNG plots")
  p.add_argument("--list", action="store_true", help="list benchmarks and their sizes, then exit")
  return p.parse_args(argv)


def _fail(msg: str) -> int:
  print(f"error: {msg}", file=sys.stderr)
  return 2


def _split_overrides(items: list[str], names: list[str]) -> dict[str, dict]:
  """'[bench.]key=value' strings -> {bench: {key: value}}; unqualified keys go to
  every selected benchmark that has them (an error if none has)."""
  per = {n: {} for n in names}
  for item in items:
    if "=" not in item:
      raise UsageError(f"--set needs KEY=VALUE or BENCH.KEY=VALUE; got {item!r}.")
    target, text = item.split("=", 1)
    try:
      value = common.parse_size_value(text)
    except common.SizeError as e:
      raise UsageError(f"--set {item}: {e}.") from None
    if "." in target:
      bench, key = target.split(".", 1)
      if bench not in per:
        raise UsageError(f"--set {item}: benchmark {bench!r} is not selected; selected: {names}.")
      per[bench][key] = value
      continue
    takers = [n for n in names if target in (BENCHMARKS[n].sizes or {}).get("default", {})]
    if not takers:
      raise UsageError(
        f"--set {item}: no selected benchmark has a size {target!r} "
        "(see `python -m benchmarks.run --list`)."
      )
    for n in takers:
      per[n][target] = value
  return per


def _plan(args) -> list[tuple[common.Benchmark, dict]]:
  """Validates everything before anything runs: (benchmark, run kwargs) per benchmark."""
  from benchmarks import estimators as estimators_table

  names = args.names or list(BENCHMARKS)
  unknown = [n for n in names if n not in BENCHMARKS]
  if unknown:
    raise UsageError(
      f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)} (or none for all)."
    )
  if len(set(names)) != len(names):
    raise UsageError(f"benchmark names repeated: {names}.")
  if args.seed < 0:
    raise UsageError(f"--seed must be >= 0; got {args.seed}.")
  estimator_names = None
  if args.estimators is not None:
    estimator_names = [s.strip() for s in args.estimators.split(",") if s.strip()]
    if not estimator_names:
      raise UsageError(f"--estimators needs at least one name; got {args.estimators!r}.")
    try:
      estimators_table.select(estimator_names)
    except ValueError as e:
      raise UsageError(f"--estimators: {e}.") from None
  overrides = _split_overrides(args.overrides, names)
  preset = "full" if args.full else "tiny" if args.tiny else "default"
  plan = []
  for name in names:
    bench = BENCHMARKS[name]
    kwargs = {"full": args.full, "seed": args.seed}
    if bench.sizes is not None:
      try:
        kwargs["sizes"] = common.resolve_sizes(bench, preset, overrides[name])
      except common.SizeError as e:
        raise UsageError(str(e)) from None
    elif overrides[name]:
      raise UsageError(f"--set: {name} has no SIZES table, so its sizes cannot be overridden.")
    if args.tiny:
      if bench.takes_tiny:
        kwargs["tiny"] = True
      elif "sizes" not in kwargs:
        raise UsageError(
          f"--tiny: {name} has no tiny sizes (neither SIZES['tiny'] nor "
          "run(..., tiny=True)); run it without --tiny."
        )
    if estimator_names is not None:
      if bench.takes_estimators:
        family = bench.family
        if family is not None and not estimators_table.select(estimator_names, family=family):
          raise UsageError(
            f"--estimators: none of {estimator_names} applies to {name}'s distribution "
            f"family {family!r}; those that do: "
            f"{[s.name for s in estimators_table.for_family(family)]}."
          )
        kwargs["estimators"] = estimator_names
      else:
        print(
          f"note: {name} does not iterate over benchmarks/estimators.py; "
          "--estimators does not apply to it.",
          file=sys.stderr,
        )
    plan.append((bench, kwargs))
  return plan


def _check_out(out: Path) -> None:
  try:
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".write-probe"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise UsageError(
      f"results folder {str(out)!r} cannot be written ({e}). Pass a writable folder with --out DIR."
    ) from None


def run_one(
  bench: common.Benchmark,
  kwargs: dict,
  out: Path,
  *,
  preset: str = "default",
  plots: bool = True,
  command: str = "",
) -> dict:
  """Runs one benchmark and writes <name>.md, PNGs, and last <name>.json.

  A stale <name>.json from an earlier run is removed first, so after a crash
  no JSON is left that looks like this run's complete result.
  """
  name = bench.name
  stale = out / f"{name}.json"
  if stale.exists():
    stale.unlink()
  print(f"== {name}: {bench.description}", file=sys.stderr, flush=True)
  t0 = time.perf_counter()
  results = bench.run(**kwargs)
  elapsed = time.perf_counter() - t0
  results = {
    "benchmark": name,
    "seed": kwargs["seed"],
    "full": kwargs["full"],
    "preset": preset,
    "command": command,
    "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "elapsed_s": elapsed,
    "environment": common.environment(),
    **results,
  }
  plotted = bench.plot(results, out) if plots else []
  results["plots"] = [Path(p).name for p in plotted]
  md = f"# {name}\n\n{bench.description}\n\n" + bench.report(results) + "\n"
  common.write_atomic(out / f"{name}.md", md)
  common.write_json(out / f"{name}.json", results)  # last: marks completion
  print(f"   done in {elapsed:.1f}s -> {out / (name + '.json')}", file=sys.stderr, flush=True)
  return results


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  args = _parse(argv)
  if args.list:
    for name, bench in BENCHMARKS.items():
      print(f"{name:12s} {bench.description}")
      for preset, sizes in (bench.sizes or {}).items():
        print(f"{'':12s}   {preset:8s} " + ", ".join(f"{k}={v}" for k, v in sizes.items()))
    return 0
  try:
    plan = _plan(args)
    _check_out(args.out)
  except UsageError as e:
    return _fail(str(e))

  import jax

  # Variance studies need full float32 matrix products: GPUs' default TF32
  # adds ~1e-3 relative noise that would masquerade as estimator variance.
  jax.config.update("jax_default_matmul_precision", "highest")
  out = args.out
  command = "python -m benchmarks.run " + " ".join(argv)
  preset = "full" if args.full else "tiny" if args.tiny else "default"
  headlines, failed = [], []
  for bench, kwargs in plan:
    name = bench.name
    try:
      results = run_one(bench, kwargs, out, preset=preset, plots=not args.no_plots, command=command)
    except Exception:  # one broken benchmark must not hide the others' results
      traceback.print_exc()
      print(
        f"error: benchmark {name!r} failed (above); no {name}.json written.",
        file=sys.stderr,
        flush=True,
      )
      failed.append(name)
      continue
    headlines.append(f"## {name}\n\n{bench.headline(results)}\n")

  env = common.environment()
  summary = (
    f"# scoregrad benchmark summary\n\n`{command.strip()}` on {env['device']} "
    f"({env['cpu_count']} CPUs, jax {env['jax']}), seed {args.seed}, {preset} sizes.\n\n"
    + "\n".join(headlines)
  )
  if failed:
    summary += f"\n**Failed:** {', '.join(failed)} (see the errors above).\n"
  elif [bench.name for bench, _ in plan] == list(BENCHMARKS):
    common.write_atomic(out / "summary.md", summary)
  print("\n" + summary)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
