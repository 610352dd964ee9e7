"""Shared plumbing for benchmarks: the record each benchmark exports, progress
bars, timing, atomic result files."""

from __future__ import annotations

import json
import os
from pathlib import Path
import platform
import tempfile
import time
from typing import Any, Callable, Iterable, NamedTuple

import jax
import numpy as np


class Benchmark(NamedTuple):
  """One benchmark of the suite: what ``benchmarks/run.py`` needs to run it.

  Each benchmark module exports one as ``BENCHMARK``; the runner lists them
  in ``benchmarks.run.SUITE``.

  Attributes:
    name: The command-line name; also the stem of the result files.
    description: One line, printed when the benchmark starts and under the
      title of ``<name>.md``.
    run: ``run(*, full: bool, seed: int, **options) -> dict`` — the
      JSON-serialisable results (use :func:`progress` for progress bars).
      Besides ``full`` and ``seed`` it takes exactly the options declared
      below: ``sizes=`` when ``sizes`` is given, ``tiny=`` when
      ``takes_tiny``, ``estimators=`` when ``takes_estimators``.
    report: ``report(results) -> str`` — Markdown (tables) for the results file.
    headline: ``headline(results) -> str`` — a short Markdown table for the
      terminal and ``summary.md``.
    plot: ``plot(results, outdir: Path) -> list[Path]`` — the PNG files written.
    sizes: ``{"tiny": {...}, "default": {...}, "full": {...}}``, or None for a
      benchmark with fixed presets (no ``--set``). With a table the runner
      validates the preset plus ``--set`` overrides against the defaults'
      keys and types (:func:`resolve_sizes`) and passes them as ``sizes=``.
    size_minimum: ``{key: lowest allowed value}`` for ``sizes`` (default 1 for
      integers; floats must be > 0), or None.
    family: The distribution family of the rows of ``benchmarks/estimators.py``
      the benchmark iterates over (``"normal"``, ``"bernoulli"``), or None.
      With ``--estimators`` the runner rejects a selection of which no name
      applies to this family.
    takes_tiny: Whether ``run`` takes ``tiny: bool`` (smoke-test sizes for
      ``--tiny``; the tests run every benchmark this way).
    takes_estimators: Whether ``run`` takes ``estimators: list[str] | None``,
      names from ``benchmarks/estimators.py`` (``--estimators``), validated by
      the runner.
  """

  name: str
  description: str
  run: Callable[..., dict]
  report: Callable[[dict], str]
  headline: Callable[[dict], str]
  plot: Callable[[dict, Path], list]
  sizes: dict | None = None
  size_minimum: dict | None = None
  family: str | None = None
  takes_tiny: bool = False
  takes_estimators: bool = False


def progress(iterable: Iterable, desc: str, total: int | None = None) -> Iterable:
  """A tqdm progress bar on stderr (plain iteration if tqdm is missing)."""
  try:
    from tqdm.auto import tqdm
  except ImportError:  # pragma: no cover
    return iterable
  return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)


def block(tree: Any) -> Any:
  return jax.tree_util.tree_map(
    lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree
  )


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
  return {
    "median_s": float(np.median(t)),
    "q25_s": float(np.percentile(t, 25)),
    "q75_s": float(np.percentile(t, 75)),
    "repeats": repeats,
  }


def interleaved_times(
  fns: dict[str, Callable[[], Any]], *, repeats: int = 30, warmup: int = 2
) -> dict[str, dict]:
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
    out[k] = {
      "median_s": float(np.median(t)),
      "q25_s": float(np.percentile(t, 25)),
      "q75_s": float(np.percentile(t, 75)),
      "repeats": repeats,
    }
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
    "matmul_precision": str(jax.config.jax_default_matmul_precision),
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
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_json(path: Path, data: dict) -> None:
  write_atomic(path, json.dumps(to_jsonable(data), indent=2, sort_keys=False) + "\n")


def format_number(v: Any, *, upper: float = 1e5) -> str:
  """'n/a' for None, '0' for zero, 3 significant digits in [1e-3, upper), else exponent."""
  if v is None:
    return "n/a"
  v = float(v)
  if v == 0:
    return "0"
  return f"{v:.3g}" if 1e-3 <= abs(v) < upper else f"{v:.2e}"


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
  def fmt(v):
    if isinstance(v, float):
      return f"{v:.4g}"
    return str(v)

  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


# -- sizes: presets, overrides and their validation ----------------------------

PRESETS = ("tiny", "default", "full")


class SizeError(ValueError):
  """A size setting that cannot be run (unknown name, wrong type, too small)."""


def parse_size_value(text: str) -> Any:
  """'12' -> 12, '0.5' -> 0.5, '1,10,100' -> (1, 10, 100)."""

  def scalar(t: str):
    t = t.strip()
    try:
      return int(t)
    except ValueError:
      pass
    try:
      return float(t)
    except ValueError:
      raise SizeError(f"cannot read {t!r} as a number") from None

  if "," in text:
    return tuple(scalar(t) for t in text.split(",") if t.strip())
  return scalar(text)


def check_sizes(benchmark: str, sizes: dict, reference: dict, minimum: dict | None = None) -> dict:
  """Checks ``sizes`` against the keys and types of ``reference`` (the defaults).

  Integers must be >= ``minimum[key]`` (default 1); floats finite and > 0
  unless ``minimum`` gives another floor; tuples non-empty with every entry
  valid. Raises :class:`SizeError` naming the benchmark, key and value.
  """
  minimum = minimum or {}
  out = {}
  for key, value in sizes.items():
    if key not in reference:
      raise SizeError(
        f"{benchmark}: unknown size {key!r}={value!r}; known sizes: "
        f"{', '.join(f'{k}={v!r}' for k, v in reference.items())}."
      )
    ref = reference[key]
    lo = minimum.get(
      key, 1 if _is_int(ref) or (isinstance(ref, tuple) and _is_int(ref[0])) else 0.0
    )

    def one(v, ref_item):
      if _is_int(ref_item):
        if not _is_int(v):
          raise SizeError(f"{benchmark}: size {key} must be an integer; got {v!r}.")
        if v < lo:
          raise SizeError(f"{benchmark}: size {key} must be >= {lo}; got {key}={v!r}.")
        return int(v)
      if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
        raise SizeError(f"{benchmark}: size {key} must be a finite number; got {v!r}.")
      if not v > lo:
        raise SizeError(f"{benchmark}: size {key} must be > {lo}; got {key}={v!r}.")
      return float(v)

    if isinstance(ref, tuple):
      items = value if isinstance(value, (tuple, list)) else (value,)
      if not items:
        raise SizeError(f"{benchmark}: size {key} needs at least one value; got {value!r}.")
      out[key] = tuple(one(v, ref[0]) for v in items)
    else:
      if isinstance(value, (tuple, list)):
        raise SizeError(f"{benchmark}: size {key} takes one value; got {value!r}.")
      out[key] = one(value, ref)
  missing = [k for k in reference if k not in out]
  if missing:
    raise SizeError(f"{benchmark}: sizes {missing} are missing.")
  return out


def _is_int(v) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def resolve_sizes(bench: Benchmark, preset: str, overrides: dict | None = None) -> dict:
  """The benchmark's ``sizes[preset]`` updated with ``overrides``, validated."""
  if preset not in PRESETS:
    raise SizeError(f"unknown size preset {preset!r}; choose from {PRESETS}.")
  if bench.sizes is None:
    raise SizeError(
      f"{bench.name} defines no SIZES table, so it runs only at its "
      "own default/--full sizes (no --tiny, no --set)."
    )
  sizes = {**bench.sizes[preset], **(overrides or {})}
  return check_sizes(bench.name, sizes, bench.sizes["default"], bench.size_minimum)


def sizes_for(module_sizes: dict, full: bool, sizes: dict | None, tiny: bool = False) -> dict:
  """What a benchmark's ``run`` uses: ``sizes`` if given, else the preset."""
  if sizes is not None:
    return dict(sizes)
  if full and tiny:
    raise SizeError("full=True and tiny=True exclude each other.")
  return dict(module_sizes["full" if full else "tiny" if tiny else "default"])


# -- statistics of replicated estimates ---------------------------------------


def normal_quantile(level: float) -> float:
  from scipy import stats

  return float(stats.norm.ppf(0.5 + level / 2))


def mean_se(draws: Any) -> tuple[np.ndarray, np.ndarray]:
  """Mean over the leading axis and its standard error."""
  d = np.asarray(draws, dtype=np.float64)
  return d.mean(axis=0), d.std(axis=0, ddof=1) / np.sqrt(d.shape[0])


def variance_ci(draws: Any, *, reduce: str | None = None, level: float = 0.95) -> dict:
  """Unbiased variance over the leading axis with its standard error and CI.

  With q_r = (g_r − ḡ)², s² = Σ q_r / (R − 1) and SE(s²) = sd(q)/√R · R/(R−1)
  (the fourth-moment formula, valid for any distribution with a finite fourth
  moment). The interval is s² · exp(± z SE/s²) (normal on the log scale, so it
  stays positive). ``reduce="sum"`` / ``"mean"`` first sums / averages q over
  the remaining axes: the trace of the covariance (or its mean over
  coordinates), with a CI that accounts for correlated coordinates.
  """
  d = np.asarray(draws, dtype=np.float64)
  r = d.shape[0]
  if r < 2:
    raise ValueError(f"need at least 2 draws to estimate a variance; got {r}.")
  q = (d - d.mean(axis=0)) ** 2
  if reduce == "sum":
    q = q.reshape(r, -1).sum(axis=1)
  elif reduce == "mean":
    q = q.reshape(r, -1).mean(axis=1)
  elif reduce is not None:
    raise ValueError(f"reduce must be None, 'sum' or 'mean'; got {reduce!r}.")
  s2 = q.sum(axis=0) / (r - 1)
  se = q.std(axis=0, ddof=1) / np.sqrt(r) * r / (r - 1)
  z = normal_quantile(level)
  with np.errstate(divide="ignore", invalid="ignore"):
    half = np.where(s2 > 0, z * se / np.where(s2 > 0, s2, 1.0), 0.0)
  return {
    "variance": s2,
    "se": se,
    "lower": s2 * np.exp(-half),
    "upper": s2 * np.exp(half),
    "level": level,
    "draws": r,
  }


# -- running estimators as the benchmarks do ------------------------------------


def name_key(key: jax.Array, name: str) -> jax.Array:
  """A key for ``name`` that does not change when other estimators are added."""
  import zlib

  return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def is_stateful(estimator: Any, params: Any) -> bool:
  """Whether ``estimator.init(params)`` holds any arrays (EMA baselines, ...)."""
  return bool(jax.tree_util.tree_leaves(estimator.init(params)))


def warmed_state(
  estimator: Any, key: jax.Array, f: Callable, dist_fn: Callable, params: Any, warmup_steps: int
):
  """The estimator state after ``warmup_steps`` estimates at the same params.

  The state is threaded through the warm-up (``lax.scan``), as in training
  with a slowly moving θ. Traceable.
  """
  state = estimator.init(params)
  if warmup_steps > 0:

    def step(state, k):
      return estimator.estimate(k, f, dist_fn, params, state).state, None

    state, _ = jax.lax.scan(step, state, jax.random.split(key, warmup_steps))
  return state


def estimate_after_warmup(
  estimator: Any, key: jax.Array, f: Callable, dist_fn: Callable, params: Any, warmup_steps: int
):
  """``estimator.estimate`` after :func:`warmed_state`'s warm-up at the same params.

  Traceable: vmap it over keys for independent replicates.
  """
  key, warm = jax.random.split(key)
  state = warmed_state(estimator, warm, f, dist_fn, params, warmup_steps)
  return estimator.estimate(key, f, dist_fn, params, state)


def save_figure(fig: Any, path: Path, **kwargs) -> Path:
  """``fig.savefig`` via a temporary file and rename (no half-written PNG)."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  os.close(fd)
  try:
    fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def plain_log_axis(ax: Any, values: Any, axis: str = "x", *, at_values: bool = False) -> None:
  """Log scale on ``axis`` with plain-number ticks: at 1-2-5 steps within the
  range of ``values``, or at the ``values`` themselves (``at_values``)."""
  from matplotlib import ticker

  values = np.asarray(values, dtype=float)
  lo, hi = values.min() * 0.999, values.max() * 1.001
  ticks = (
    sorted(set(values.tolist()))
    if at_values
    else [m * 10.0**e for e in range(-6, 7) for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]
  )
  target = ax.xaxis if axis == "x" else ax.yaxis
  (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
  target.set_major_locator(ticker.FixedLocator(ticks))
  target.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
  target.set_minor_formatter(ticker.NullFormatter())


def select_estimators(names: list[str] | None, family: str) -> list:
  """Rows of ``benchmarks.estimators.ESTIMATORS`` for ``family`` (all, or ``names``).

  Raises ValueError for unknown names or when none of them applies to ``family``.
  """
  from benchmarks import estimators as table

  specs = table.select(names, family=family)
  if not specs:
    raise ValueError(
      f"none of the estimators {names} applies to the {family!r} family; "
      f"those that do: {[s.name for s in table.for_family(family)]}."
    )
  return specs


def jit(fn: Callable, *, fast_compile: bool = False) -> Callable:
  """``jax.jit``; with ``fast_compile`` XLA's CPU backend skips most LLVM
  optimisation (about 3× faster compilation, slower code): for ``--tiny``
  smoke runs, where compilation is nearly all the time. Never for timings
  that are reported."""
  if fast_compile:
    try:
      return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0})
    except TypeError:  # pragma: no cover - jax without per-jit compiler options
      pass
  return jax.jit(fn)
