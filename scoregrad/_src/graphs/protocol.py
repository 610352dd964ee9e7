"""The one protocol every site estimator implements (Storchastic's ``Method``).

A site estimator says two things, and the surrogate asks nothing else:

* **what runs it needs**: how its site is drawn in a run (:meth:`draw`, given
  the site's branch index when the estimator branches), how many runs of the
  program per sample it needs (:meth:`num_branches`, with :meth:`branch`
  giving each of its sites' branch index in run r), or which configurations
  to enumerate (:meth:`configurations`), and what it records in each run
  (:meth:`record`, e.g. DisARM's pair, RODEO's ∇f, the weak-derivative
  differences);
* **the term it adds to the surrogate** (:meth:`term`), from all the runs:
  a score-function site's baseline term, a zero carrying DisARM's, RODEO's or
  the measure-valued gradient, nothing for pathwise and exact sites (their
  effect is in the sample's differentiability and in the runs' weights).

Three class-level facts place a site in the shared DiCE cost term
Σ_c □(Σ_{s ∈ A(c)} τ_s)·c: ``in_magic_box`` (its τ_s enters the boxes: score
function), ``enumerated`` (its log-probability weights the runs: exact) and
``differentiable_value`` (its sample depends on θ: pathwise).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np


class Settings(NamedTuple):
  """The surrogate's configuration, as the site estimators see it."""

  num_samples: Optional[int]
  baseline_of: Callable[[str], Any]  # site name -> baseline spec
  rodeo: Any  # the surrogate-wide RODEO configuration, or None
  max_configurations: int


class Program(NamedTuple):
  """What :meth:`SiteEstimator.prepare` may use: the program at these params and key."""

  program: Callable
  params: Any
  key: jax.Array
  graph: Any  # analysis.Graph


class RunView(NamedTuple):
  """One run of the program, as :meth:`SiteEstimator.record` sees it."""

  handler: Any  # runtime.Handler: this run's sites and costs
  key: jax.Array  # this run's key
  dtype: Any
  name: str  # the site's name
  prepared: Any  # what this site's ``prepare`` returned
  downstream: Callable  # (site index, differentiable) -> (x ↦ C(x), names of the costs C)


class Runs(NamedTuple):
  """Every run, batched with leading axes (n, K), as :meth:`SiteEstimator.term` sees it.

  n = num_samples (1 if None); K = the branches (run-major) × the enumerated
  sites' joint configurations.
  """

  graph: Any  # analysis.Graph
  settings: Settings
  costs: jax.Array  # (n, K, m); ±inf at zero-probability configurations set to 0
  log_probs: jax.Array  # (n, K, S): every site's log-probability
  weights: jax.Array  # (n, K): the enumerated sites' probabilities / num_branches
  values: dict  # {site name: (n, K, *shape)}
  records: dict  # {site index: what its ``record`` returned, (n, K, ...)}
  score: tuple  # indices of the in_magic_box sites
  enumerated: tuple  # indices of the enumerated sites
  counts: tuple  # configurations per enumerated site
  kinds: dict  # {estimator name: [site indices]}
  num_branches: int
  dtype: Any
  steps: tuple = ()  # per sg.scan: ((n, K, S, T) log-probs, (n, K, C, T) costs)

  def downstream_mask(self, i: int) -> jax.Array:
    """(m,) 1 for the costs downstream of site ``i`` (it is among their ancestors)."""
    return jnp.asarray([float(i in a) for a in self.graph.cost_ancestors], self.dtype)

  def name(self, i: int) -> str:
    return self.graph.sites[i].name


@dataclasses.dataclass(frozen=True)
class SiteEstimator:
  """Base of the per-site gradient estimators (values from :mod:`scoregrad.sites`).

  Subclasses set ``name`` (also the string alias accepted by
  ``sg.sample(..., estimator=)``) and override what they need.
  """

  name: ClassVar[str] = ""
  in_magic_box: ClassVar[bool] = False
  enumerated: ClassVar[bool] = False
  differentiable_value: ClassVar[bool] = False
  first_order_only: ClassVar[bool] = False

  def __repr__(self) -> str:
    return f"scoregrad.sites.{self.name}()"

  # -- at the site, in every run ------------------------------------------------

  def check(self, site: str, dist) -> None:
    """Raises (naming the site and the families that qualify) if ``dist`` does not fit."""

  def info(self, dist) -> Any:
    """Static facts of the site's distribution that the analysis keeps (exact: logits)."""
    return None

  def draw(self, dist, key: jax.Array, branch) -> tuple[Any, Any]:
    """``(value, aux)`` of the site in a run; ``branch`` is its index when it branches."""
    del branch
    return dist.sample(key), None

  # -- what runs it needs -------------------------------------------------------

  def check_program(self, i: int, graph, settings: Settings, kinds: dict) -> None:
    """Refuses what this site cannot be combined with (``kinds``: {name: [site indices]})."""

  def prepare(self, i: int, program: Program) -> Any:
    """Static work before the runs (e.g. which parameters depend on ``params``)."""
    return None

  def configurations(self, info) -> Optional[tuple[int, Callable[[], jax.Array]]]:
    """Enumerated sites: ``(count, () -> (count, *shape) configurations)``."""
    return None

  def num_branches(self, count: int, settings: Settings) -> int:
    """Runs of the program per sample needed by ``count`` sites of this kind."""
    del count, settings
    return 1

  def branch(self, j: int, run: jax.Array) -> jax.Array:
    """The branch index of this kind's j-th site in run ``run``."""
    del j
    return run

  def record(self, view: RunView, i: int) -> Any:
    """What the site keeps from one run for its term (held fixed)."""
    return None

  # -- the term it adds ---------------------------------------------------------

  def init(self, site: str, settings: Settings) -> Any:
    """The site's state (None: it keeps none)."""
    return None

  def term(self, runs: Runs, i: int, state) -> tuple[jax.Array, Any]:
    """``(term added to the surrogate, new state or None)``."""
    return jnp.zeros((), runs.dtype), None


def weighted(weights: jax.Array, x: jax.Array) -> jax.Array:
  """``weights * x`` with 0 (not 0·inf = NaN) where a weight is 0 and x is ±inf.

  A configuration of probability zero contributes nothing to an expectation,
  whatever its cost (a NaN cost still gives NaN: the NaN rule).
  """
  dead = (weights == 0) & jnp.isinf(x)
  return jnp.where(dead, jnp.zeros((), x.dtype), weights * jnp.where(dead, 0, x))


def group_sum(x: jax.Array, runs: Runs, sites: list) -> jax.Array:
  """x (n, K) summed over the configurations of the enumerated ``sites`` (kept as axes).

  K is branches × the joint configurations (C order over the enumerated sites);
  the result has x's shape, constant along the summed sites' configurations.
  """
  if not sites:
    return x
  n = x.shape[0]
  grid = x.reshape((n, runs.num_branches) + tuple(runs.counts))
  axes = tuple(2 + runs.enumerated.index(e) for e in sites)
  summed = jnp.sum(grid, axis=axes, keepdims=True)
  return jnp.broadcast_to(summed, grid.shape).reshape(x.shape)


def configurations_of(sites: list, runs: Runs) -> int:
  return int(np.prod([runs.counts[runs.enumerated.index(e)] for e in sites], dtype=np.int64))


def joint_grid(names, counts, max_configurations: int, per: str = ""):
  """Indices (len(counts), K) of every joint configuration of the enumerated sites.

  ``names`` and ``counts``: the enumerated sites and their numbers of
  configurations; ``per`` qualifies the count in the error (" per element"
  inside a plate). Raises when K exceeds ``max_configurations``.
  """
  total = math.prod(counts)  # Python ints: no overflow for huge enumerations
  if total > max_configurations:
    shown = ", ".join(f"{n!r}: {c}" for n, c in zip(names, counts))
    raise ValueError(
      f"The 'exact' sites have {total:,} joint configurations{per} ({shown}), more than "
      f"max_configurations={max_configurations:,}. Use estimator='score_function' for "
      "some of them, or raise surrogate(..., max_configurations=...)."
    )
  return np.indices(counts).reshape(len(counts), -1) if len(counts) else np.zeros((0, 1), int)
