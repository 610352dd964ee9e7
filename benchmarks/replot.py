"""Redraws benchmark plots from the committed results, without re-running.

    python -m benchmarks.replot            # every benchmark with a results JSON
    python -m benchmarks.replot logreg     # only these
    python -m benchmarks.replot --outdir /tmp/plots

Each benchmark's ``plot(results, outdir)`` reads only ``results/<name>.json``,
so a change to a figure (``benchmarks/style.py``, labels, legends) is a
replot, not a new run; the numbers in the tables stay those of the run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.run import BENCHMARKS

RESULTS = Path(__file__).resolve().parent / "results"


def replot(names=None, outdir: Path = RESULTS) -> list[Path]:
  """Redraws the plots of ``names`` (default: all with a results JSON) into ``outdir``."""
  written = []
  for name in names or BENCHMARKS:
    if name not in BENCHMARKS:
      raise SystemExit(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    source = RESULTS / f"{name}.json"
    if not source.exists():
      if names:
        raise SystemExit(f"{source} does not exist: run `python -m benchmarks.run {name}` first")
      continue
    results = json.loads(source.read_text())
    written += [Path(p) for p in BENCHMARKS[name].plot(results, Path(outdir))]
  return written


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("names", nargs="*", help="benchmarks (default: all with results)")
  parser.add_argument("--outdir", type=Path, default=RESULTS)
  args = parser.parse_args(argv)
  args.outdir.mkdir(parents=True, exist_ok=True)
  for path in replot(args.names, args.outdir):
    print(path)


if __name__ == "__main__":
  main()
