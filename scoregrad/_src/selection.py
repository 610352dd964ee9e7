"""Estimator selection: measure candidates on pilot draws and rank them by work-normalised variance."""

from __future__ import annotations

from collections.abc import Mapping
import math
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from scoregrad._src.base import GradientEstimator
from scoregrad._src.validation import (
  NotApplicableError,
  check_callable,
  check_key,
  check_positive_int,
)

PyTree = Any


class SelectionRow(NamedTuple):
  """One candidate's measurements (all floats are NaN for a skipped candidate).

  Attributes:
    name: the candidate's key in ``candidates``.
    applicable: False if the candidate raised
      :class:`~scoregrad.NotApplicableError` at trace time (then skipped).
    reason: why it was skipped (the error message); ``""`` otherwise.
    variance: tr Cov(ĝ), the total variance of ONE estimate ``Estimate.grad``
      (all coordinates of ``params``), from the independent pilot estimates.
    variance_se: its standard error (fourth-moment formula).
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
      coordinates (NaN without ``exact_grad``).
    num_estimates: R, the number of independent pilot estimates.
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


class Selection(NamedTuple):
  """What :func:`select` returns: the ranked table and the winner.

  Attributes:
    best: the name of the applicable candidate with the lowest ``work``
      (variance × time per estimate).
    estimator: ``candidates[best]``.
    rows: one :class:`SelectionRow` per candidate, applicable ones ranked by
      ``work`` (lowest first; a NaN or infinite variance ranks last), then the
      skipped ones in the order given.
    exact: whether an exact gradient was given (so the bias columns are filled).
  """

  best: str
  estimator: GradientEstimator
  rows: tuple
  exact: bool = False

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

  def to_markdown(self) -> str:
    """The ranked table as Markdown (skipped candidates listed with their reason)."""
    best_work = self.row(self.best).work
    headers = [
      "rank",
      "estimator",
      "tr Var(ĝ)",
      "time/estimate",
      "variance × time",
      "relative work",
    ]
    if self.exact:
      headers += ["‖bias‖", "noise floor", "max |z|"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    rank = 0
    for r in self.rows:
      if not r.applicable:
        continue
      rank += 1
      cells = [
        str(rank),
        r.name,
        f"{_fmt(r.variance)} ± {_fmt(r.variance_se)}",
        _fmt_seconds(r.seconds),
        _fmt(r.work),
        _fmt(r.work / best_work) if best_work > 0 else "n/a",
      ]
      if self.exact:
        cells += [_fmt(r.bias_norm), _fmt(r.bias_noise_floor), f"{r.bias_max_z:.1f}"]
      lines.append("| " + " | ".join(cells) + " |")
    skipped = [r for r in self.rows if not r.applicable]
    if skipped:
      lines.append("")
      lines.append("Skipped (not applicable):")
      for r in skipped:
        lines.append(f"- {r.name}: {r.reason.splitlines()[0] if r.reason else ''}")
    return "\n".join(lines)

  def __str__(self) -> str:
    return f"best: {self.best}\n\n" + self.to_markdown()


def _fmt(v: float) -> str:
  return "nan" if not np.isfinite(v) else f"{v:.3g}"


def _fmt_seconds(s: float) -> str:
  if not np.isfinite(s):
    return "nan"
  for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
    if s >= scale:
      return f"{s / scale:.3g} {unit}"
  return f"{s / 1e-9:.3g} ns"


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
) -> Selection:
  r"""Runs each candidate estimator on pilot draws and picks the most efficient.

  For each candidate it draws R = ``num_pilot`` independent estimates ĝ_r =
  ``estimate(key_r, f, dist_fn, params, state).grad`` (fresh keys, the same
  state) and measures

  * the total variance of one estimate, tr Cov(ĝ) = Σ_k Var(ĝ_k), the unbiased
    sample variance over the R estimates summed over every coordinate of
    ``params``, with its standard error;
  * the wall time of one estimate, t: the R estimates run as ``repeats``
    compiled batches of R/``repeats`` estimates each (``jax.lax.map``,
    sequential, one ``jax.jit``; compilation happens before timing, every
    batch is timed to ``block_until_ready``), t = median batch time / batch
    size;
  * with ``exact_grad``, the bias ‖mean_r ĝ_r − ∇‖ next to its noise floor
    √(tr Cov(ĝ)/R), and the largest per-coordinate z-score.

  and ranks them by the work-normalised variance tr Cov(ĝ) · t: averaging m
  independent estimates takes time m·t for variance tr Cov(ĝ)/m, so reaching
  a target variance ε costs tr Cov(ĝ)·t/ε seconds. For a mean of n i.i.d.
  per-sample terms, tr Cov(ĝ)·t = (n tr Cov(ĝ))·(t/n), the per-sample
  variance times the time per sample, so candidates with different
  ``num_samples`` compare fairly. The variance is measured across whole
  estimates, never from ``Estimate.per_sample``, so it is right for estimators
  whose samples are coupled (antithetic pairs, QMC, leave-one-out baselines).

  A candidate whose ``init`` or ``estimate`` raises
  :class:`~scoregrad.NotApplicableError` while being traced (``pathwise`` on a
  Bernoulli, a discrete estimator on a Normal, a relaxation on a cost without
  a derivative) is reported as skipped with the message; any other exception
  is a real error and propagates.

  This is a host-side measurement routine (it times compiled code), not a
  function to call under ``jax.jit``. Timings are of this machine and this
  problem size; the variance is of ``params`` as given (it changes during
  training, so re-select now and then on long runs).

  Args:
    candidates: a non-empty mapping from names to
      :class:`~scoregrad.GradientEstimator`\ s.
    key: a PRNG key; each candidate gets its own stream
      (``jax.random.fold_in`` of the key by its position), the same for a
      given candidate order.
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
      bias columns.

  Returns:
    A :class:`Selection` with ``.best`` (a name), ``.estimator``, ``.rows``
    (ranked :class:`SelectionRow`\ s), ``.skipped`` and ``.to_markdown()``
    (``str(selection)`` prints the table).

  Raises:
    ValueError: for empty ``candidates``, a bad ``num_pilot``/``repeats``, an
      ``exact_grad`` or ``states`` entry that does not match, or when no
      candidate applies (the reasons are listed).
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
    >>> result.best
    'pathwise'
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
  states = _check_states(states, names)
  exact_flat = None if exact_grad is None else _check_exact(exact_grad, params)

  rows = []
  for index, (name, est) in enumerate(zip(names, estimators)):
    k = jax.random.fold_in(key, index)
    rows.append(
      _measure(
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
    )

  measured = [r for r in rows if r.applicable]
  if not measured:
    reasons = "\n".join(f"- {r.name}: {r.reason}" for r in rows)
    raise ValueError(
      "select: no candidate applies to this problem (each raised "
      f"scoregrad.NotApplicableError):\n{reasons}\nAdd a candidate that does, e.g. "
      "scoregrad.score_function(num_samples=...), which needs only log_prob."
    )

  def rank_key(r):
    return r.work if np.isfinite(r.work) else math.inf

  ranked = sorted(measured, key=rank_key)  # stable: ties keep the given order
  skipped = [r for r in rows if not r.applicable]
  best = ranked[0].name
  return Selection(
    best=best,
    estimator=estimators[names.index(best)],
    rows=tuple(ranked + skipped),
    exact=exact_flat is not None,
  )


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
) -> SelectionRow:
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
    return SelectionRow(name=name, applicable=False, reason=str(e))

  s = jax.jit(prepare)(k_warm, params)
  per_batch = num_pilot // repeats
  keys = jax.random.split(k_pilot, num_pilot).reshape(
    (repeats, per_batch) + _keys_shape_tail(k_pilot)
  )
  compiled = jax.jit(batch).lower(keys[0], params, s).compile()
  jax.block_until_ready(compiled(keys[0], params, s))  # warm caches, untimed
  values, grads, times = [], [], []
  for r in range(repeats):
    t0 = time.perf_counter()
    v, g = jax.block_until_ready(compiled(keys[r], params, s))
    times.append(time.perf_counter() - t0)
    values.append(np.asarray(v, np.float64))
    grads.append(np.asarray(g, np.float64))
  g = np.concatenate(grads)  # (R, D)
  r_count = g.shape[0]
  q = np.sum((g - g.mean(axis=0)) ** 2, axis=1)  # (R,)
  variance = float(q.sum() / (r_count - 1))
  variance_se = float(q.std(ddof=1) / math.sqrt(r_count) * r_count / (r_count - 1))
  t = np.asarray(times) / per_batch
  seconds = float(np.median(t))
  bias_norm = floor = max_z = math.nan
  if exact_flat is not None:
    diff = g.mean(axis=0) - exact_flat
    bias_norm = float(np.linalg.norm(diff))
    floor = math.sqrt(variance / r_count)
    se = g.std(axis=0, ddof=1) / math.sqrt(r_count)
    with np.errstate(divide="ignore", invalid="ignore"):
      z = np.where(
        se > 0, np.abs(diff) / np.where(se > 0, se, 1.0), np.where(np.abs(diff) > 0, np.inf, 0.0)
      )
    max_z = float(np.max(z)) if z.size else 0.0
  return SelectionRow(
    name=name,
    applicable=True,
    variance=variance,
    variance_se=variance_se,
    seconds=seconds,
    seconds_spread=(float(np.percentile(t, 25)), float(np.percentile(t, 75))),
    work=variance * seconds,
    work_se=variance_se * seconds,
    value=float(np.mean(np.concatenate(values))),
    bias_norm=bias_norm,
    bias_noise_floor=floor,
    bias_max_z=max_z,
    num_estimates=r_count,
  )
