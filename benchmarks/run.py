"""Runs the benchmark suite: `python -m benchmarks.run [NAMES...] [--full]`.

Each benchmark is a module in ``benchmarks/`` listed in ``BENCHMARKS`` below
and exposing:

* ``DESCRIPTION: str``
* ``run(*, full: bool, seed: int) -> dict`` — JSON-serialisable results (use
  ``benchmarks.common.progress`` for progress bars);
* ``report(results) -> str`` — Markdown (tables) for the results file;
* ``headline(results) -> str`` — a short Markdown table for the terminal/README;
* ``plot(results, outdir: Path) -> list[Path]`` — PNG files written.

Results go to ``benchmarks/results/<name>.json`` (with seeds, versions, device
and sizes), ``<name>.md`` and PNGs, each written atomically; ``summary.md``
gathers the headline tables.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

# Benchmark name -> module (in default run order).
BENCHMARKS = {
    "throughput": "benchmarks.throughput",
}

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _parse(argv):
  p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
  p.add_argument("--full", action="store_true", help="paper-scale sizes (slow)")
  p.add_argument("--seed", type=int, default=0, help="base PRNG seed (default 0)")
  p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
  p.add_argument("--no-plots", action="store_true", help="skip PNG plots")
  p.add_argument("--list", action="store_true", help="list benchmarks and exit")
  return p.parse_args(argv)


def _fail(msg: str) -> int:
  print(f"error: {msg}", file=sys.stderr)
  return 2


def main(argv=None) -> int:
  args = _parse(argv)
  if args.list:
    for name, mod in BENCHMARKS.items():
      print(f"{name:16s} {importlib.import_module(mod).DESCRIPTION}")
    return 0
  unknown = [n for n in args.names if n not in BENCHMARKS]
  if unknown:
    return _fail(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)} "
                 "(or none for all).")
  if args.seed < 0:
    return _fail(f"--seed must be >= 0; got {args.seed}.")
  out = args.out
  try:
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".write-probe"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    return _fail(f"results folder {str(out)!r} cannot be written ({e}). Pass a "
                 "writable folder with --out DIR.")

  from benchmarks import common  # after argument checks: imports JAX

  names = args.names or list(BENCHMARKS)
  headlines = []
  for name in names:
    module = importlib.import_module(BENCHMARKS[name])
    print(f"== {name}: {module.DESCRIPTION}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    results = module.run(full=args.full, seed=args.seed)
    elapsed = time.perf_counter() - t0
    results = {"benchmark": name, "seed": args.seed, "full": args.full,
               "elapsed_s": elapsed, "environment": common.environment(), **results}
    plots = [] if args.no_plots else module.plot(results, out)
    results["plots"] = [p.name for p in plots]
    md = f"# {name}\n\n{module.DESCRIPTION}\n\n" + module.report(results) + "\n"
    common.write_atomic(out / f"{name}.md", md)
    common.write_json(out / f"{name}.json", results)  # last: marks completion
    headlines.append(f"## {name}\n\n{module.headline(results)}\n")
    print(f"   done in {elapsed:.1f}s -> {out / (name + '.json')}", file=sys.stderr, flush=True)

  env = common.environment()
  summary = (f"# scoregrad benchmark summary\n\n`python -m benchmarks.run {' '.join(argv or sys.argv[1:])}`"
             f" on {env['device']} (jax {env['jax']}), seed {args.seed}, "
             f"{'full' if args.full else 'default'} sizes.\n\n" + "\n".join(headlines))
  if names == list(BENCHMARKS):
    common.write_atomic(out / "summary.md", summary)
  print("\n" + summary)
  return 0


if __name__ == "__main__":
  sys.exit(main())
