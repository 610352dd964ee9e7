"""Estimator selection: measure candidates on pilot draws and rank them by work-normalised variance.

A candidate is recommended only if nothing in its own measurements says it
is wrong: with an exact gradient, a bias significant at the table's stated
false-flag rate flags it; without one, the candidates are cross-checked
against each other (their means must agree), and a candidate with non-finite
estimates is flagged always. Flagged candidates are listed, ranked after the
others and never ``best``.
"""

from __future__ import annotations

from collections.abc import Mapping
import itertools
import math
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from scoregrad._src.base import GradientEstimator
from scoregrad._src.testing import z_threshold
from scoregrad._src.validation import (
  NotApplicableError,
  check_callable,
  check_key,
  check_positive_int,
)

PyTree = Any

# The clock that times the pilot batches. A private hook: the tests replace
# it with a fake clock (monkeypatch) to pin the timing columns, and so that
# no test depends on the machine's speed.
_clock: Callable[[], float] = time.perf_counter

# Rounding slack of the bias tests, in units of the machine epsilon of the
# estimates' dtype (float32: 1.2e-4 relative): an estimator with (near) zero
# variance, e.g. exact enumeration, must not be flagged for float rounding.
_ROUNDING_EPS = 1000.0


class SelectionRow(NamedTuple):
  """One candidate's measurements (all floats are NaN for a skipped candidate).

  Attributes:
    name: the candidate's key in ``candidates``.
    applicable: False if the candidate raised
      :class:`~scoregrad.NotApplicableError` at trace time (then skipped).
    reason: why it was skipped (the error message); ``""`` otherwise.
    variance: tr Cov(ĝ), the total variance of ONE estimate ``Estimate.grad``
      (all coordinates of ``params``), from the R independent pilot
      estimates: Σ_r ‖ĝ_r − ḡ‖² / (R − 1).
    variance_se: its standard error, sd(q_r)/√R · R/(R − 1) with
      q_r = ‖ĝ_r − ḡ‖² (the fourth-moment formula).
    seconds: median wall time of one estimate (compiled; see :func:`select`).
    seconds_spread: (25th, 75th) percentiles of that time over the timed batches.
    work: ``variance * seconds``, the work-normalised variance: the time needed
      to reach a given variance by averaging independent estimates is
      proportional to it. For an average of n i.i.d. per-sample terms it
      equals the per-sample variance times the time per sample, so estimators
      with different ``num_samples`` compare fairly.
    work_se: the standard error of ``work`` from ``variance_se`` alone
      (timing noise is not included).
    value: the mean of ``Estimate.value`` over the pilot estimates.
    bias_norm: ‖mean(ĝ) − exact_grad‖ when ``exact_grad`` was given, else NaN.
    bias_noise_floor: √(tr Cov(ĝ)/R), the root of E‖mean(ĝ) − E ĝ‖² over R
      pilot estimates: an unbiased estimator's ``bias_norm`` is of this size.
    bias_max_z: the largest abs(mean(ĝ) − exact) / standard error over the
      coordinates (NaN without ``exact_grad``; ``inf`` where the standard
      error is 0 and the mean differs from ``exact_grad``).
    num_estimates: R, the number of independent pilot estimates.
    flag: why the candidate is not recommended, ``""`` if it is not flagged:
      its bias is significant (``exact_grad``), its mean disagrees with other
      candidates' (no ``exact_grad``; with the likely cause), or some of its
      estimates are NaN or infinite. Flagged candidates rank after the
      unflagged ones and are never ``best``.
    num_nonfinite: how many of the R pilot estimates have a NaN or infinite
      ``value`` or ``grad`` coordinate.
  """

  name: str
  applicable: bool
  reason: str = ""
  variance: float = math.nan
  variance_se: float = math.nan
  seconds: float = math.nan
  seconds_spread: tuple = (math.nan, math.nan)
  work: float = math.nan
  work_se: float = math.nan
  value: float = math.nan
  bias_norm: float = math.nan
  bias_noise_floor: float = math.nan
  bias_max_z: float = math.nan
  num_estimates: int = 0
  flag: str = ""
  num_nonfinite: int = 0


class Disagreement(NamedTuple):
  """Two candidates whose mean gradients differ significantly (no ``exact_grad``).

  Attributes:
    names: the two candidates.
    max_z: the largest |mean_a − mean_b| / √(se_a² + se_b²) over the coordinates.
    blamed: the candidate(s) flagged for it.
    cause: the likely cause, in words.
  """

  names: tuple
  max_z: float
  blamed: tuple
  cause: str


class Selection(NamedTuple):
  """What :func:`select` returns: the ranked table and the winner.

  Attributes:
    best: the name of the unflagged applicable candidate with the lowest
      ``work`` (variance × time per estimate).
    estimator: ``candidates[best]``.
    rows: one :class:`SelectionRow` per candidate: the unflagged applicable
      ones ranked by ``work`` (lowest first), then the flagged ones (by
      ``work``, NaN last), then the skipped ones in the order given.
    exact: whether an exact gradient was given (so the bias columns are filled).
    false_flag_rate: α, the probability that the table flags some unbiased,
      finite candidate by chance (Bonferroni over the tests it makes).
    z_threshold: the ``|z|`` above which a bias or a disagreement is flagged.
    disagreements: without ``exact_grad``, the pairs of candidates whose
      means differ significantly (:class:`Disagreement`), else ``()``.
  """

  best: str
  estimator: GradientEstimator
  rows: tuple
  exact: bool = False
  false_flag_rate: float = math.nan
  z_threshold: float = math.nan
  disagreements: tuple = ()

  def row(self, name: str) -> SelectionRow:
    """The row of candidate ``name``."""
    for r in self.rows:
      if r.name == name:
        return r
    raise KeyError(f"no candidate named {name!r}; candidates: {[r.name for r in self.rows]}.")

  @property
  def skipped(self) -> dict:
    """``{name: reason}`` for the candidates that do not apply."""
    return {r.name: r.reason for r in self.rows if not r.applicable}

  @property
  def flagged(self) -> dict:
    """``{name: flag}`` for the applicable candidates that are not recommended."""
    return {r.name: r.flag for r in self.rows if r.applicable and r.flag}

  def to_markdown(self) -> str:
    """The ranked table as Markdown (flagged and skipped candidates with their reasons)."""
    return _markdown(self.rows, self.best, self.exact, self.false_flag_rate, self.z_threshold)

  def __str__(self) -> str:
    return f"best: {self.best}\n\n" + self.to_markdown()


def _relative(work: float, best_work: float) -> str:
  if not np.isfinite(work) or not np.isfinite(best_work):
    return "n/a"
  if best_work > 0:
    return _fmt(work / best_work)
  return "1" if work == 0 else "inf"  # the recommended estimator has zero variance


def _markdown(rows, best, exact, false_flag_rate, z_thr) -> str:
  best_work = next((r.work for r in rows if r.name == best), math.nan)
  headers = [
    "rank",
    "estimator",
    "tr Var(ĝ)",
    "time/estimate",
    "variance × time",
    "relative work",
  ]
  if exact:
    headers += ["‖bias‖", "noise floor", "max \\|z\\|"]
  headers.append("check")
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  rank = 0
  for r in rows:
    if not r.applicable:
      continue
    rank += 1
    cells = [
      str(rank),
      r.name,
      f"{_fmt(r.variance)} ± {_fmt(r.variance_se)}",
      _fmt_seconds(r.seconds),
      _fmt(r.work),
      _relative(r.work, best_work),
    ]
    if exact:
      cells += [_fmt(r.bias_norm), _fmt(r.bias_noise_floor), f"{r.bias_max_z:.1f}"]
    # The flag's first line, its pipes escaped (|z| would split the cell).
    cells.append("ok" if not r.flag else "FLAGGED: " + r.flag.splitlines()[0].replace("|", "\\|"))
    lines.append("| " + " | ".join(cells) + " |")
  what = "bias against exact_grad" if exact else "the candidates' means against each other"
  lines.append("")
  lines.append(
    f"Checks: {what}"
    f", flagged when |z| > {z_thr:.2f} (false-flag rate {false_flag_rate:.2g} for the table, "
    "Bonferroni over its tests), and non-finite estimates. Flagged candidates rank "
    "after the others and are never best."
  )
  skipped = [r for r in rows if not r.applicable]
  if skipped:
    lines.append("")
    lines.append("Skipped (not applicable):")
    for r in skipped:
      lines.append(f"- {r.name}: {r.reason.splitlines()[0] if r.reason else ''}")
  return "\n".join(lines)


def _fmt(v: float) -> str:
  return "nan" if not np.isfinite(v) else f"{v:.3g}"


def _fmt_seconds(s: float) -> str:
  if not np.isfinite(s):
    return "nan"
  for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
    if s >= scale:
      return f"{s / scale:.3g} {unit}"
  return f"{s / 1e-9:.3g} ns"


class _Measured(NamedTuple):
  """A row and what the checks need (per-coordinate means and standard errors)."""

  row: SelectionRow
  mean: Any = None  # (D,) float64, None for a skipped candidate
  se: Any = None
  rtol: float = 0.0
  position: int = 0


def select(
  candidates: Mapping[str, GradientEstimator],
  key: jax.Array,
  f: Callable,
  dist_fn: Callable,
  params: PyTree,
  *,
  num_pilot: int = 200,
  repeats: int = 5,
  warmup_steps: int = 0,
  states: Optional[Mapping[str, PyTree]] = None,
  exact_grad: Optional[PyTree] = None,
  false_flag_rate: float = 1e-6,
) -> Selection:
  r"""Runs each candidate estimator on pilot draws and picks the most efficient unbiased one.

  For each candidate it draws R = ``num_pilot`` independent estimates ĝ_r =
  ``estimate(key_r, f, dist_fn, params, state).grad`` (fresh keys, the same
  state) and measures

  * the total variance of one estimate, tr Cov(ĝ) = Σ_r ‖ĝ_r − ḡ‖²/(R − 1),
    the unbiased sample variance summed over every coordinate of ``params``,
    with its standard error sd(q_r)/√R · R/(R − 1), q_r = ‖ĝ_r − ḡ‖²;
  * the wall time of one estimate, t: the R estimates run as ``repeats``
    compiled batches of R/``repeats`` estimates each (``jax.lax.map``,
    sequential, one ``jax.jit``; compilation happens before timing, every
    batch is timed to ``block_until_ready``), t = median batch time / batch
    size;
  * with ``exact_grad``, the bias ‖mean_r ĝ_r − ∇‖ next to its noise floor
    √(tr Cov(ĝ)/R), and the largest per-coordinate z-score
    ``|ḡ_k − ∇_k| / (sd_k/√R)``.

  and ranks them by the work-normalised variance tr Cov(ĝ) · t: averaging m
  independent estimates takes time m·t for variance tr Cov(ĝ)/m, so reaching
  a target variance ε costs tr Cov(ĝ)·t/ε seconds. For a mean of n i.i.d.
  per-sample terms, tr Cov(ĝ)·t = (n tr Cov(ĝ))·(t/n), the per-sample
  variance times the time per sample, so candidates with different
  ``num_samples`` compare fairly. The variance is measured across whole
  estimates, never from ``Estimate.per_sample``, so it is right for estimators
  whose samples are coupled (antithetic pairs, QMC, leave-one-out baselines).

  **Never a biased recommendation.** A low variance is worthless if the mean
  is wrong (pathwise on a discontinuous cost has variance 0 and gradient 0).
  So before ranking, every candidate is checked, and a flagged one is listed
  with the reason, ranked after the unflagged ones and never ``best``:

  * a candidate with any NaN or infinite ``value`` or ``grad`` among its
    pilot estimates is flagged;
  * with ``exact_grad``, a candidate is flagged as biased if for some
    coordinate ``|ḡ_k − ∇_k| > z·se_k + ρ(|∇_k| + max_j |∇_j|)``, where z is the
    two-sided normal quantile for ``false_flag_rate`` Bonferroni-corrected
    over all candidates × coordinates and ρ = 1000 × the machine epsilon of
    the estimates (float rounding of zero-variance estimators);
  * without ``exact_grad``, every pair of candidates is tested for equal
    means, coordinate by coordinate (``|ḡ_a − ḡ_b| > z·√(se_a² + se_b²) +
    ρ(|ḡ_a| + |ḡ_b| + scale)``, z Bonferroni-corrected over pairs ×
    coordinates); every candidate is taken to claim unbiasedness (all of
    scoregrad's estimators do except the relaxations ``gumbel_softmax``,
    ``straight_through`` and friends, which enter the check like the
    others). A disagreement is reported in ``disagreements`` with its likely
    cause, and blamed on: the candidate that differentiates f when the other
    does not (measured: f is replaced by a function with the same values
    whose derivative is NaN; a jump in f, e.g. ``jnp.where(s > K, 1.0,
    0.0)``, adds a term that an estimator differentiating f cannot see);
    else on the candidate that disagrees with more of the others; else on
    both.

  Under these rules an unbiased, finite candidate is flagged with probability
  at most ``false_flag_rate`` (asymptotically, by the central limit theorem
  over the R pilot estimates: with few pilot estimates of a skewed estimator,
  e.g. a rare outcome of a discrete variable not yet drawn, the estimated
  standard error can be far too small, so keep ``num_pilot`` ≥ 100 for the
  stated rate); a biased one escapes only while its bias is below the
  resolution of the R pilot estimates (raise ``num_pilot`` to resolve it).

  A candidate whose ``init`` or ``estimate`` raises
  :class:`~scoregrad.NotApplicableError` while being traced (``pathwise`` on a
  Bernoulli, a discrete estimator on a Normal, a relaxation on a cost without
  a derivative) is reported as skipped with the message; any other exception
  is a real error and propagates.

  This is a host-side measurement routine (it times compiled code), not a
  function to call under ``jax.jit``. Timings are of this machine and this
  problem size, so ``best`` can change between runs when candidates' works are
  close; the variance columns are deterministic given the key. The variance
  is of ``params`` as given (it changes during training, so re-select now and
  then on long runs).

  Args:
    candidates: a non-empty mapping from names to
      :class:`~scoregrad.GradientEstimator`\ s.
    key: a PRNG key. Candidate i (in the mapping's order) uses
      ``k_warm, k_pilot = jax.random.split(jax.random.fold_in(key, i))``:
      its warm-up runs on ``jax.random.split(k_warm, warmup_steps)`` and its
      r-th pilot estimate on ``jax.random.split(k_pilot, num_pilot)[r]``, so
      the pilot draws can be reproduced outside ``select``.
    f: the cost of one sample, as for ``estimate``.
    dist_fn: ``params -> distribution``, as for ``estimate``.
    params: the parameters at which to measure.
    num_pilot: R, the number of independent estimates per candidate (≥ 2 and
      a multiple of ``repeats``).
    repeats: the number of timed batches (≥ 1).
    warmup_steps: for stateful candidates (moving-average baselines, REBAR,
      RELAX), the number of estimates through which the state is threaded at
      ``params`` (``jax.lax.scan``, untimed) before the pilot estimates,
      which all use the warmed-up state.
    states: optional ``{name: state}`` initial states (default
      ``candidates[name].init(params)``), e.g. a state adapted in training.
    exact_grad: optional exact ∇θ E[f], a pytree like ``params``, for the
      bias columns and the bias check.
    false_flag_rate: α in (0, 1), the probability that the checks flag some
      unbiased candidate of the table by chance (default 1e-6).

  Returns:
    A :class:`Selection` with ``.best`` (a name), ``.estimator``, ``.rows``
    (ranked :class:`SelectionRow`\ s), ``.flagged``, ``.skipped``,
    ``.disagreements`` and ``.to_markdown()`` (``str(selection)`` prints the
    table).

  Raises:
    ValueError: for empty ``candidates``, a bad ``num_pilot``/``repeats``/
      ``false_flag_rate``, an ``exact_grad`` or ``states`` entry that does not
      match, when no candidate applies (the reasons are listed), or when
      every applicable candidate is flagged (the table is in the message).
    TypeError: if a candidate is not a ``GradientEstimator``.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> candidates = {
    ...     "pathwise": sg.pathwise(num_samples=8),
    ...     "score_function": sg.score_function(num_samples=8),
    ...     "disarm": sg.disarm(num_pairs=4),   # not for a Normal: skipped
    ... }
    >>> dist_fn = lambda p: sg.dists.Normal(p["loc"], jnp.exp(p["log_scale"]))
    >>> params = {"loc": jnp.ones(3), "log_scale": jnp.zeros(3)}
    >>> result = sg.select(candidates, jax.random.key(0), lambda x: jnp.sum(x**2),
    ...                    dist_fn, params, num_pilot=60, repeats=3)
    >>> # The variance column does not depend on timing: pathwise's is far lower.
    >>> bool(result.row("pathwise").variance < result.row("score_function").variance / 10)
    True
    >>> result.flagged   # the two agree: nothing flagged
    {}
    >>> sorted(result.skipped)
    ['disarm']

  References:
    Glynn & Whitt, "The Asymptotic Efficiency of Simulation Estimators",
    Operations Research 40(3), 1992 (work-normalised variance as the
    efficiency of a Monte Carlo estimator).
  """
  names, estimators = _check_candidates(candidates)
  key = check_key(key)
  check_callable("f", f, "f(x) -> scalar cost of one sample")
  check_callable("dist_fn", dist_fn, "dist_fn(params) -> distribution")
  num_pilot = check_positive_int("num_pilot", num_pilot, minimum=2)
  repeats = check_positive_int("repeats", repeats)
  warmup_steps = check_positive_int("warmup_steps", warmup_steps, minimum=0)
  if num_pilot % repeats:
    raise ValueError(
      f"`num_pilot` must be a multiple of `repeats` (the pilot estimates run in "
      f"`repeats` equal timed batches); got num_pilot={num_pilot}, repeats={repeats}. "
      f"Use e.g. num_pilot={max(repeats, num_pilot - num_pilot % repeats)}."
    )
  false_flag_rate = _check_rate(false_flag_rate)
  states = _check_states(states, names)
  exact_flat = None if exact_grad is None else _check_exact(exact_grad, params)

  measured = []
  for index, (name, est) in enumerate(zip(names, estimators)):
    k = jax.random.fold_in(key, index)
    m = _measure(
      name,
      est,
      k,
      f,
      dist_fn,
      params,
      states.get(name),
      num_pilot,
      repeats,
      warmup_steps,
      exact_flat,
    )
    measured.append(m._replace(position=index))

  applicable = [m for m in measured if m.row.applicable]
  if not applicable:
    reasons = "\n".join(f"- {m.row.name}: {m.row.reason}" for m in measured)
    raise ValueError(
      "select: no candidate applies to this problem (each raised "
      f"scoregrad.NotApplicableError):\n{reasons}\nAdd a candidate that does, e.g. "
      "scoregrad.score_function(num_samples=...), which needs only log_prob."
    )

  finite = [m for m in applicable if not m.row.num_nonfinite]
  num_coords = 0 if not finite else finite[0].mean.size
  disagreements: tuple = ()
  if exact_flat is not None:
    z_thr = z_threshold(false_flag_rate, max(1, len(finite) * num_coords))
    flags = {m.row.name: _bias_flag(m, exact_flat, z_thr) for m in finite}
  else:
    num_pairs = len(finite) * (len(finite) - 1) // 2
    z_thr = z_threshold(false_flag_rate, max(1, num_pairs * num_coords))
    disagreements = _cross_check(
      finite,
      z_thr,
      lambda m: _differentiates_f(estimators[m.position], m, f, dist_fn, params, states),
    )
    flags = {m.row.name: "" for m in finite}
    for d in disagreements:
      for name in d.blamed:
        other = d.names[1] if name == d.names[0] else d.names[0]
        text = f"its mean disagrees with {other}'s (max |z| = {d.max_z:.3g}): {d.cause}"
        flags[name] = flags[name] + ("\n" if flags[name] else "") + text
  rows = []
  for m in applicable:
    if m.row.num_nonfinite:
      flag = (
        f"{m.row.num_nonfinite} of {m.row.num_estimates} estimates have NaN or infinite "
        "values or gradients"
      )
    else:
      flag = flags[m.row.name]
    rows.append(m.row._replace(flag=flag))

  def rank_key(r):
    return (bool(r.flag), r.work if np.isfinite(r.work) else math.inf)

  ranked = sorted(rows, key=rank_key)  # stable: ties keep the given order
  skipped = [m.row for m in measured if not m.row.applicable]
  all_rows = tuple(ranked + skipped)
  if ranked[0].flag:
    raise ValueError(
      "select: every applicable candidate is flagged, so none can be recommended:\n"
      + "\n".join(f"- {r.name}: {r.flag}" for r in ranked)
      + "\n\n"
      + _markdown(all_rows, "", exact_flat is not None, false_flag_rate, z_thr)
      + "\n\nAdd a candidate that is unbiased for this problem, e.g. "
      "scoregrad.score_function(num_samples=..., baseline=scoregrad.baselines.leave_one_out()), "
      "which needs only log_prob and no derivative of f."
    )
  best = ranked[0].name
  return Selection(
    best=best,
    estimator=estimators[names.index(best)],
    rows=all_rows,
    exact=exact_flat is not None,
    false_flag_rate=false_flag_rate,
    z_threshold=z_thr,
    disagreements=disagreements,
  )


def _check_rate(rate) -> float:
  try:
    value = float(rate)
  except (TypeError, ValueError):
    raise TypeError(
      f"`false_flag_rate` must be a float in (0, 1), e.g. 1e-6; got {rate!r} of type "
      f"{type(rate).__name__}."
    ) from None
  if not 0 < value < 1:
    raise ValueError(
      f"`false_flag_rate` must be in (0, 1) (the probability of flagging an unbiased "
      f"candidate by chance), e.g. 1e-6; got false_flag_rate={rate!r}."
    )
  return value


def _exceeds(diff, scale, z_thr, rounding) -> np.ndarray:
  """|diff| > z·scale + rounding, per coordinate (0/0 is not exceeded)."""
  return np.abs(diff) > z_thr * scale + rounding


def _rounding(rtol: float, exact: np.ndarray) -> np.ndarray:
  """The float-rounding slack ρ(|∇_k| + max_j |∇_j|) of the bias check, per coordinate."""
  return rtol * (np.abs(exact) + np.max(np.abs(exact), initial=0.0))


def _bias_flag(m: _Measured, exact: np.ndarray, z_thr: float) -> str:
  diff = m.mean - exact
  bad = _exceeds(diff, m.se, z_thr, _rounding(m.rtol, exact))
  if not np.any(bad):
    return ""
  zero_var = bool(np.all(m.se[bad] == 0))
  return (
    f"biased: mean − exact_grad is significant at {int(bad.sum())} of {bad.size} "
    f"coordinates (max |z| = {m.row.bias_max_z:.3g} > {z_thr:.2f})"
    + (
      "; its estimates do not vary, as when the estimator differentiates a cost whose "
      "derivative is zero almost everywhere (a step, jnp.where with constant branches, "
      "floor, sign)"
      if zero_var
      else ""
    )
  )


def _cross_check(finite, z_thr, differentiates) -> tuple:
  """Pairwise tests of equal means; returns the disagreements with their blame."""
  pairs = []
  for a, b in itertools.combinations(finite, 2):
    diff = a.mean - b.mean
    scale = np.sqrt(a.se**2 + b.se**2)
    rtol = max(a.rtol, b.rtol)
    rounding = rtol * (
      np.abs(a.mean) + np.abs(b.mean) + max(np.max(np.abs(a.mean)), np.max(np.abs(b.mean)))
    )
    bad = _exceeds(diff, scale, z_thr, rounding)
    if np.any(bad):
      with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(scale > 0, np.abs(diff) / np.where(scale > 0, scale, 1.0), np.inf)
      pairs.append((a, b, float(np.max(z[bad]))))
  if not pairs:
    return ()
  probed: dict = {}

  def differentiates_once(m):
    if m.row.name not in probed:
      probed[m.row.name] = differentiates(m)
    return probed[m.row.name]

  count: dict = {}
  for a, b, _ in pairs:
    count[a.row.name] = count.get(a.row.name, 0) + 1
    count[b.row.name] = count.get(b.row.name, 0) + 1
  out = []
  for a, b, max_z in pairs:
    da, db = differentiates_once(a), differentiates_once(b)
    na, nb = a.row.name, b.row.name
    if da is not None and db is not None and da != db:
      (bad, good) = (na, nb) if da else (nb, na)
      cause = (
        f"{bad} differentiates f and {good} does not: {bad} is biased if f has jumps "
        "(a step, jnp.where(s > K, 1.0, 0.0), floor, sign, heaviside), whose "
        f"contribution a derivative of f cannot see; trust {good}"
      )
      blamed: tuple = (bad,)
    elif count[na] != count[nb]:
      bad, good = (na, nb) if count[na] > count[nb] else (nb, na)
      cause = (
        f"{bad} disagrees with {count[bad]} of the candidates and {good} with "
        f"{count[good]}: {bad} is the odd one out"
      )
      blamed = (bad,)
    else:
      cause = (
        "select cannot tell which of the two is wrong (both or neither "
        "differentiate f); check them against an exact gradient (exact_grad=)"
      )
      blamed = (na, nb)
    out.append(Disagreement(names=(na, nb), max_z=max_z, blamed=blamed, cause=cause))
  return tuple(out)


def _differentiates_f(est, m: _Measured, f, dist_fn, params, states) -> Optional[bool]:
  """Whether ``est``'s gradient uses ∂f/∂x: f with a NaN derivative must poison it.

  ``None`` when the probe itself fails (then the blame falls back on counts).
  """

  @jax.custom_jvp
  def probe(x):
    return f(x)

  @probe.defjvp
  def probe_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    y = f(x)
    if not jnp.issubdtype(jnp.result_type(y), jnp.floating):
      return y, np.zeros(jnp.shape(y), jax.dtypes.float0)
    # Linear in the tangent (so reverse mode transposes it): NaN · Σ ẋ.
    live = [
      jnp.sum(t)
      for t in jax.tree_util.tree_leaves(x_dot)
      if jnp.issubdtype(jnp.result_type(t), jnp.floating)
    ]
    y_dot = jnp.zeros_like(y)
    for t in live:
      y_dot = y_dot + jnp.asarray(jnp.nan, y.dtype) * t.astype(y.dtype)
    return y, y_dot

  state = states.get(m.row.name)
  try:

    def grad_of(k, p):
      s = est.init(p) if state is None else state
      return _flatten(est.estimate(k, probe, dist_fn, p, s).grad)

    g = np.asarray(jax.jit(grad_of)(jax.random.key(0), params))
  except Exception:  # a probe that fails says nothing either way
    return None
  return bool(np.any(np.isnan(g)))


def _check_candidates(candidates) -> tuple[list, list]:
  if not isinstance(candidates, Mapping):
    raise TypeError(
      f"`candidates` must be a mapping from names to GradientEstimators, e.g. "
      f"{{'pathwise': sg.pathwise(num_samples=8)}}; got {candidates!r} of type "
      f"{type(candidates).__name__}."
    )
  if not candidates:
    raise ValueError(
      "`candidates` is empty; pass at least one, e.g. {'score_function': "
      "sg.score_function(num_samples=8), 'pathwise': sg.pathwise(num_samples=8)}."
    )
  names, estimators = [], []
  for name, est in candidates.items():
    if not isinstance(name, str):
      raise TypeError(f"`candidates` keys must be strings (names); got {name!r}.")
    if not isinstance(est, GradientEstimator):
      hint = (
        " Call the factory: it takes keyword settings and returns the estimator, "
        "e.g. sg.pathwise(num_samples=8)."
        if callable(est)
        else ""
      )
      raise TypeError(
        f"`candidates[{name!r}]` must be a scoregrad.GradientEstimator (what the "
        f"factories return); got {est!r} of type {type(est).__name__}.{hint}"
      )
    names.append(name)
    estimators.append(est)
  return names, estimators


def _check_states(states, names) -> dict:
  if states is None:
    return {}
  if not isinstance(states, Mapping):
    raise TypeError(f"`states` must be a mapping {{name: state}} or None; got {states!r}.")
  unknown = [n for n in states if n not in names]
  if unknown:
    raise ValueError(
      f"`states` has entries {unknown} that are not candidates; candidates: {names}."
    )
  return dict(states)


def _keys_shape_tail(key) -> tuple:
  """() for a typed key, (2,) or (4,) for a raw one."""
  return tuple(jnp.shape(key))


def _flatten(tree) -> jax.Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.concatenate([jnp.ravel(jnp.asarray(l)) for l in leaves]) if leaves else jnp.zeros(0)


def _check_exact(exact_grad, params) -> np.ndarray:
  want = jax.tree_util.tree_structure(params)
  got = jax.tree_util.tree_structure(exact_grad)
  if want != got:  # type: ignore[operator]  # PyTreeDef defines __ne__; jaxlib's stub lacks it
    raise ValueError(f"`exact_grad` must have the structure of `params`, {want}; got {got}.")
  for p, e in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(exact_grad)):
    if jnp.shape(p) != jnp.shape(e):
      raise ValueError(
        f"`exact_grad` leaves must have the shapes of `params`: got a leaf of shape "
        f"{jnp.shape(e)} for a parameter of shape {jnp.shape(p)}."
      )
  return np.asarray(_flatten(exact_grad), np.float64)


def _measure(
  name, est, key, f, dist_fn, params, state, num_pilot, repeats, warmup_steps, exact_flat
) -> _Measured:
  k_warm, k_pilot = jax.random.split(key)

  def prepare(k, p):
    s = est.init(p) if state is None else state
    if warmup_steps:

      def step(s, kk):
        return est.estimate(kk, f, dist_fn, p, s).state, None

      s, _ = jax.lax.scan(step, s, jax.random.split(k, warmup_steps))
    return s

  def batch(keys, p, s):
    def one(k):
      out = est.estimate(k, f, dist_fn, p, s)
      return out.value, _flatten(out.grad)

    return jax.lax.map(one, keys)

  try:  # applicability: trace once, abstractly (no computation)
    s_shape = jax.eval_shape(prepare, k_warm, params)
    jax.eval_shape(batch, jax.random.split(k_pilot, 2), params, s_shape)
  except NotApplicableError as e:
    return _Measured(SelectionRow(name=name, applicable=False, reason=str(e)))

  s = jax.jit(prepare)(k_warm, params)
  per_batch = num_pilot // repeats
  keys = jax.random.split(k_pilot, num_pilot).reshape(
    (repeats, per_batch) + _keys_shape_tail(k_pilot)
  )
  compiled = jax.jit(batch).lower(keys[0], params, s).compile()
  jax.block_until_ready(compiled(keys[0], params, s))  # warm caches, untimed
  values, grads, times = [], [], []
  for r in range(repeats):
    t0 = _clock()
    v, g = jax.block_until_ready(compiled(keys[r], params, s))
    times.append(_clock() - t0)
    values.append(np.asarray(v, np.float64))
    grads.append(np.asarray(g, np.float64))
  dtype = jnp.result_type(g) if jnp.issubdtype(jnp.result_type(g), jnp.floating) else jnp.float32
  rtol = _ROUNDING_EPS * float(jnp.finfo(dtype).eps)
  g = np.concatenate(grads)  # (R, D)
  v = np.concatenate(values)  # (R,)
  r_count = g.shape[0]
  nonfinite = int(np.sum(~np.isfinite(v) | ~np.all(np.isfinite(g), axis=1)))
  q = np.sum((g - g.mean(axis=0)) ** 2, axis=1)  # (R,)
  variance = float(q.sum() / (r_count - 1))
  variance_se = float(q.std(ddof=1) / math.sqrt(r_count) * r_count / (r_count - 1))
  t = np.asarray(times) / per_batch
  seconds = float(np.median(t))
  mean = g.mean(axis=0)
  se = g.std(axis=0, ddof=1) / math.sqrt(r_count)
  bias_norm = floor = max_z = math.nan
  if exact_flat is not None:
    diff = mean - exact_flat
    bias_norm = float(np.linalg.norm(diff))
    floor = math.sqrt(variance / r_count)
    # Where the standard error is 0, z is inf if the mean differs beyond float
    # rounding (the rounding the bias check allows), else 0.
    beyond = np.abs(diff) > _rounding(rtol, exact_flat)
    with np.errstate(divide="ignore", invalid="ignore"):
      z = np.where(se > 0, np.abs(diff) / np.where(se > 0, se, 1.0), np.where(beyond, np.inf, 0.0))
    max_z = float(np.max(z)) if z.size else 0.0
  row = SelectionRow(
    name=name,
    applicable=True,
    variance=variance,
    variance_se=variance_se,
    seconds=seconds,
    seconds_spread=(float(np.percentile(t, 25)), float(np.percentile(t, 75))),
    work=variance * seconds,
    work_se=variance_se * seconds,
    value=float(np.mean(v)),
    bias_norm=bias_norm,
    bias_noise_floor=floor,
    bias_max_z=max_z,
    num_estimates=r_count,
    num_nonfinite=nonfinite,
  )
  return _Measured(row, mean, se, rtol)
