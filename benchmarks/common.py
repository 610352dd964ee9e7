"""Shared plumbing for benchmarks: progress bars, timing, atomic result files."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import numpy as np


def progress(iterable: Iterable, desc: str, total: int | None = None) -> Iterable:
  """A tqdm progress bar on stderr (plain iteration if tqdm is missing)."""
  try:
    from tqdm.auto import tqdm
  except ImportError:  # pragma: no cover
    return iterable
  return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)


def block(tree: Any) -> Any:
  return jax.tree_util.tree_map(
      lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree)


def time_fn(fn: Callable[[], Any], *, repeats: int = 20, warmup: int = 2) -> dict:
  """Median and IQR wall time (s) of ``fn()`` after warm-up (compilation)."""
  for _ in range(warmup):
    block(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    block(fn())
    times.append(time.perf_counter() - t0)
  t = np.asarray(times)
  return {"median_s": float(np.median(t)), "q25_s": float(np.percentile(t, 25)),
          "q75_s": float(np.percentile(t, 75)), "repeats": repeats}


def interleaved_times(fns: dict[str, Callable[[], Any]], *, repeats: int = 30,
                      warmup: int = 2) -> dict[str, dict]:
  """Times several functions in interleaved rounds so drift hits all alike."""
  for fn in fns.values():
    for _ in range(warmup):
      block(fn())
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      t0 = time.perf_counter()
      block(fn())
      times[k].append(time.perf_counter() - t0)
  out = {}
  for k, ts in times.items():
    t = np.asarray(ts)
    out[k] = {"median_s": float(np.median(t)), "q25_s": float(np.percentile(t, 25)),
              "q75_s": float(np.percentile(t, 75)), "repeats": repeats}
  return out


def environment() -> dict:
  import jaxlib
  return {
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "device": str(jax.devices()[0]),
      "platform": jax.default_backend(),
      "python": platform.python_version(),
      "machine": platform.machine(),
      "cpu_count": os.cpu_count(),
      "x64": bool(jax.config.read("jax_enable_x64")),
  }


def to_jsonable(obj: Any) -> Any:
  if isinstance(obj, dict):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if hasattr(obj, "tolist"):
    return to_jsonable(np.asarray(obj).tolist())
  if isinstance(obj, float) and not np.isfinite(obj):
    return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
  return obj


def write_atomic(path: Path, text: str) -> None:
  """Writes via a temporary file and rename, so no partial file looks complete."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as fh:
      fh.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_json(path: Path, data: dict) -> None:
  write_atomic(path, json.dumps(to_jsonable(data), indent=2, sort_keys=False) + "\n")


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
  def fmt(v):
    if isinstance(v, float):
      return f"{v:.4g}"
    return str(v)
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)
