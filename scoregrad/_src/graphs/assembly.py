"""``surrogate(program, ...)``: the DiCE surrogate of a program with sample sites.

The assembly, in four steps (each site's part lives in its estimator's module):

1. analyse the program (:mod:`.analysis`): its sites, costs and each one's
   stochastic ancestors;
2. ask each site estimator what runs it needs: enumerated configurations
   (exact), branches (DisARM's antithetic runs, RODEO's K draws), per-run
   records; run the program that way, vmapped, ``num_samples`` times;
3. the shared DiCE cost term Σ_c □(Σ_{s ∈ A(c)} τ_s)·c over the
   score-function sites, weighted by the enumerated configurations'
   probabilities; plus each site's own term (baselines, gradient carriers);
4. the NaN rule (:func:`scoregrad._src.base.finish`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional, Union, cast

import jax
import jax.numpy as jnp
import numpy as np

from scoregrad._src import baselines as _baselines
from scoregrad._src.base import finish
from scoregrad._src.graphs import analysis, loops, plates, runtime
from scoregrad._src.graphs.protocol import Program, Runs, RunView, Settings, joint_grid
from scoregrad._src.graphs.rodeo_site import check_rodeo
from scoregrad._src.graphs.score_function_site import check_baseline
from scoregrad._src.surrogates import magic_box
from scoregrad._src.validation import check_key, check_positive_int

BaselineSpec = Union[None, _baselines.Baseline, Callable[[dict], jax.Array]]

# Sites a caller may hold at chosen values (their estimator keeps the sample
# fixed and needs no runs of its own).
_FIXABLE = ("score_function", "measure_valued")


class Surrogate:
  """The DiCE surrogate of a program, returned by :func:`scoregrad.surrogate`.

  One call signature whatever the configuration:

  * ``loss(params, key, state) -> (value, new_state)``, with ``state =
    loss.init(params, key)`` (``{}`` when nothing keeps state);
  * ``loss(params, key) -> value``, the shorthand for surrogates that keep no
    state (a stateful baseline or a RODEO site needs the state: a TypeError).

  Use ``jax.grad(loss)(params, key)`` or ``jax.grad(loss, has_aux=True)(params,
  key, state)``. Methods: :meth:`init`, :meth:`graph`, :meth:`site_costs`.
  """

  def __init__(self, program, settings: Settings, per_site: Optional[Mapping], fixed: Mapping):
    self.program = program
    self.settings = settings
    self._per_site = per_site
    self._fixed = dict(fixed)
    self.__doc__ = (
      f"DiCE surrogate of {getattr(program, '__name__', 'program')} (scoregrad.surrogate)."
    )

  def __repr__(self):
    return f"scoregrad.surrogate({getattr(self.program, '__name__', 'program')})"

  def __call__(self, params, key, state=None):
    if state is None:
      return self._build(params, key, None)[0]
    if not isinstance(state, dict):
      raise TypeError(
        "`state` must be the dict returned by fn.init(params, key) (or the previous "
        f"call's state); got {state!r}."
      )
    return self._build(params, key, state)[:2]

  def init(self, params, key) -> dict:
    """The sites' state, ``{site name: state}`` for those that keep one (stateful
    baselines, RODEO's controls); ``{}`` if none (traces the program)."""
    g = analysis.analyse(self.program, params, check_key(key), self._fixed)
    states = {s.name: s.estimator.init(s.name, self.settings) for s in g.sites}
    return {n: st for n, st in states.items() if st is not None}

  def graph(self, params, key) -> dict:
    """The sites, their estimators and each cost's stochastic ancestors (for inspection)."""
    g = analysis.analyse(self.program, params, check_key(key), self._fixed)
    names = g.names
    return {
      "sites": {s.name: s.estimator.name for s in g.sites},
      "costs": {
        c: sorted((names[i] for i in a), key=names.index)
        for c, a in zip(g.cost_names, g.cost_ancestors)
      },
    }

  def site_costs(self, params, key, state=None) -> dict:
    """Regression data for learned baselines, all held fixed (stop-gradient).

    Returns a dict with ``"values"`` (every site's samples, leaves (n, K, ...)),
    ``"downstream"`` ({score-function site: (n, K) sum of the costs downstream of
    it}, the target a baseline of that site estimates) and ``"weights"`` ((n, K)
    probabilities of the exact sites' configurations); n = num_samples (1 if
    None), K = the exact sites' joint configurations (1 if none).
    """
    if state is None:
      state = self.init(params, key)
    return jax.lax.stop_gradient(self._build(params, key, state)[2])

  # -- the assembly --------------------------------------------------------------

  def _check(self, g, state) -> dict:
    names, settings = g.names, self.settings
    if self._per_site is not None:
      unknown = sorted(set(self._per_site) - set(names))
      if unknown:
        raise ValueError(
          f"`baseline` names sites {unknown} that the program does not have; its sites are {names}."
        )
      for n in self._per_site:
        est = g.sites[names.index(n)].estimator
        if not est.in_magic_box:
          raise ValueError(
            f"`baseline` for site {n!r}: baselines apply to score-function "
            f"sites only, and {n!r} uses {est.name!r}."
          )
    for n in self._fixed:
      if n not in names or g.sites[names.index(n)].estimator.name not in _FIXABLE:
        raise ValueError(
          f"`fixed_values` names site {n!r}, which "
          + (
            "the program does not have"
            if n not in names
            else f"uses estimator={g.sites[names.index(n)].estimator.name!r}"
          )
          + f"; sites of the program: {names}. Only {_FIXABLE} sites can be held at "
          "chosen values (the others enumerate or redraw their site)."
        )
    kinds: dict[str, list[int]] = {}
    for i, s in enumerate(g.sites):
      kinds.setdefault(s.estimator.name, []).append(i)
    for i, s in enumerate(g.sites):
      s.estimator.check_program(i, g, settings, kinds)
    if state is None:
      keeping = [s.name for s in g.sites if s.estimator.init(s.name, settings) is not None]
      if keeping:
        raise TypeError(
          f"This surrogate keeps state (sites {keeping}): call it as "
          "fn(params, key, state) -> (value, state), with state = fn.init(params, key) "
          "at the first step."
        )
    return kinds

  def _build(self, params, key, state):
    """(value, new state, regression data) of the surrogate at (params, key)."""
    key = check_key(key)
    g = analysis.analyse(self.program, params, key, self._fixed)
    if g.plating is not None:  # scoregrad.plate: per-element credit (plates.py)
      if g.loops:
        raise NotImplementedError(
          "scoregrad.surrogate: this program uses both scoregrad.plate and "
          "scoregrad.scan/fori_loop; their per-element and per-step credit are not "
          "combined yet. Write the loop without a plate (vectorise the plated sites "
          "inside the scan body as one site), or the plate without sg.scan."
        )
      return plates.build(self, params, key, state, g)
    kinds = self._check(g, state)
    plan = _plan(g, kinds, self.settings)
    runs = self._run(params, key, g, kinds, plan)
    # The shared DiCE term: cost c gets the magic box of its score-function ancestors.
    costs, dtype = runs.costs, runs.dtype
    if runs.score:
      ancestors = np.array(
        [[float(j in a) for j in runs.score] for a in g.cost_ancestors], np.float64
      ).reshape(len(g.cost_names), len(runs.score))
      taus = runs.log_probs[..., list(runs.score)]
      boxes = magic_box(taus @ jnp.asarray(ancestors, dtype).T)
      # A loop's costs get per-step boxes instead (the causal rule, loops.py).
      outside = jnp.asarray(1.0 - loops.in_loops(g), dtype)
      terms = jnp.sum(boxes * costs * outside, axis=-1) + loops.cost_terms(runs)
    else:
      terms = jnp.sum(costs, axis=-1)
    value = jnp.mean(jnp.sum(runs.weights * terms, axis=1))
    # Each site's own term: baselines, the carriers of DisARM/RODEO/MVD gradients.
    new_state = dict(state or {})
    for i, s in enumerate(g.sites):
      term, site_state = s.estimator.term(runs, i, (state or {}).get(s.name))
      value = value + term
      if site_state is not None:
        new_state[s.name] = site_state
    value = _nan_rule(value, params, dtype)
    info = {
      "values": runs.values,
      "weights": jax.lax.stop_gradient(runs.weights),
      "downstream": {
        g.names[i]: jax.lax.stop_gradient(costs) @ runs.downstream_mask(i) for i in runs.score
      },
    }
    return value, new_state, info

  def _run(self, params, key, g, kinds, plan: _Plan) -> Runs:
    """Every run the sites need, vmapped: num_samples × branches × configurations."""
    program, sites, names = self.program, g.sites, g.names
    prepared = [
      s.estimator.prepare(i, Program(program, params, key, g)) for i, s in enumerate(sites)
    ]

    def branches_of(run):
      if run is None:
        return {}
      return {
        names[t]: sites[t].estimator.branch(j, run)
        for kind in plan.branched
        for j, t in enumerate(kinds[kind])
      }

    def downstream(k, dtype):
      def of(i, differentiable=False):
        """x ↦ the sum of the costs downstream of site i: the rest of the program
        rerun with the site at x and the same keys (the same downstream noise),
        params held fixed; ``differentiable`` leaves x open to ``jax.grad``."""
        name, shape = names[i], sites[i].value.shape
        down = [c for c, a in zip(g.cost_names, g.cost_ancestors) if i in a]
        frozen = jax.lax.stop_gradient(params)

        def cost(x):
          rerun = runtime.run(
            program,
            frozen,
            k,
            self._fixed | {name: jnp.reshape(x, shape)},
            open_site=name if differentiable else None,
          )
          return sum((rerun.costs[c].astype(dtype) for c in down), jnp.zeros((), dtype))

        return cost, down

      return of

    def run_one(k, values, run=None):
      substitutes = self._fixed | {names[i]: v for i, v in zip(plan.enumerated, values)}
      h = runtime.run(program, params, k, substitutes, branches_of(run))
      if tuple(h.costs) != g.cost_names or list(h.sites) != names:
        raise ValueError(
          "The program must record the same sites and costs on every run "
          "(no Python branching on random values)."
        )
      costs = [h.costs[c] for c in g.cost_names]
      floats = [c for c in costs if jnp.issubdtype(c.dtype, jnp.floating)]
      dtype = jnp.result_type(*floats) if floats else jnp.result_type(float)
      log_probs = jnp.stack([h.sites[n].log_prob.astype(dtype) for n in names])
      records = tuple(
        s.estimator.record(RunView(h, k, dtype, s.name, prepared[i], downstream(k, dtype)), i)
        for i, s in enumerate(sites)
      )
      values_out = {n: h.sites[n].value for n in names}
      steps = loops.steps_of(h, dtype)
      return jnp.stack([c.astype(dtype) for c in costs]), log_probs, values_out, records, steps

    def per_configuration(k, run):
      if not plan.enumerated:
        return jax.tree_util.tree_map(lambda x: x[None], run_one(k, [], run))
      return jax.vmap(lambda *v: run_one(k, list(v), run))(*plan.configs)

    def per_key(k):
      # Leading axis K: the branches × the enumerated configurations (run-major).
      if plan.num_branches == 1:
        return per_configuration(k, None)
      out = jax.vmap(lambda r: per_configuration(k, r))(jnp.arange(plan.num_branches))
      return jax.tree_util.tree_map(
        lambda x: x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:]), out
      )

    if self.settings.num_samples is None:
      batch = jax.tree_util.tree_map(lambda x: x[None], per_key(key))
    else:
      batch = jax.vmap(per_key)(jax.random.split(key, self.settings.num_samples))
    costs, log_probs, values, records, steps = batch  # (n, K, m), (n, K, S), {(n, K, ...)}, ...
    dtype = costs.dtype
    log_w = sum((log_probs[..., i] for i in plan.enumerated), jnp.zeros(costs.shape[:2], dtype))
    if plan.num_branches > 1:
      log_w = log_w - jnp.log(jnp.asarray(plan.num_branches, dtype))
    weights = jnp.exp(log_w)
    if plan.enumerated:  # a configuration of probability 0 adds 0, even at an infinite cost
      costs = jnp.where((weights[..., None] == 0) & jnp.isinf(costs), 0.0, costs).astype(dtype)
    return Runs(
      g,
      self.settings,
      costs,
      log_probs,
      weights,
      values,
      dict(enumerate(records)),
      tuple(i for i, s in enumerate(sites) if s.estimator.in_magic_box),
      plan.enumerated,
      plan.counts,
      kinds,
      plan.num_branches,
      dtype,
      steps,
    )


class _Plan(NamedTuple):
  enumerated: tuple  # indices of the enumerated sites
  counts: tuple  # their configurations
  configs: list  # per enumerated site: (K, *shape), the joint grid
  branched: dict  # {estimator name: branches}: the one branched kind, if any
  num_branches: int


def _plan(g, kinds, settings) -> _Plan:
  """What runs the sites need: the enumerated sites' joint configurations, and the branches."""
  sites, names = g.sites, g.names
  enumerated = tuple(i for i, s in enumerate(sites) if s.estimator.enumerated)
  confs = [sites[i].estimator.configurations(sites[i].info) for i in enumerated]
  counts = tuple(c for c, _ in confs)
  grid = joint_grid([names[i] for i in enumerated], counts, settings.max_configurations)
  configs = [make()[grid[j]] for j, (_, make) in enumerate(confs)]
  branched = {
    kind: sites[idx[0]].estimator.num_branches(len(idx), settings) for kind, idx in kinds.items()
  }
  branched = {kind: b for kind, b in branched.items() if b > 1}
  if len(branched) > 1:
    raise ValueError(
      f"Sites of the estimators {sorted(branched)} each run the program several times "
      "per sample, and cannot be combined in one program yet. Use "
      "estimator='score_function' or 'exact' for the sites of all but one of them."
    )
  return _Plan(enumerated, counts, configs, branched, max(branched.values(), default=1))


def _nan_rule(value, params, dtype):
  """THE NaN rule (:func:`scoregrad._src.base.finish`) carried by the surrogate's value.

  Adds poison · Σ θ, with poison = 0 (NaN when the value is NaN) held fixed,
  so that a NaN value gives a NaN gradient for every parameter, however the
  costs depend on it (a cost's own pathwise term could otherwise be finite).
  An exact 0 otherwise: non-finite leaves enter as 0 (0·inf would be NaN; a
  ±inf or NaN leaf the costs depend on makes the value itself inf or NaN).
  """
  poison = finish(value, jnp.zeros((), dtype), None).grad
  for leaf in jax.tree_util.tree_leaves(params):
    if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
      real = jnp.real(leaf)
      value = value + poison * jnp.sum(jnp.where(jnp.isfinite(real), real, 0.0)).astype(dtype)
  return value


def surrogate(
  program: Callable[[Any, jax.Array], Any],
  *,
  num_samples: Optional[int] = None,
  baseline: Union[BaselineSpec, Mapping[str, BaselineSpec]] = None,
  max_configurations: int = 2**12,
  rodeo: Optional[Mapping[str, Any]] = None,
  fixed_values: Optional[Mapping[str, Any]] = None,
) -> Surrogate:
  r"""The DiCE surrogate of a program with sample sites.

  For ``program(params, key)`` that draws with :func:`scoregrad.sample` and
  reports costs with :func:`scoregrad.cost` (and/or returns a scalar cost),
  returns a :class:`Surrogate` ``loss`` with

  * ``loss(params, key)`` = the program's total cost (the mean over
    ``num_samples`` independent runs, summed exactly over ``"exact"`` sites);
  * ``jax.grad(loss)`` an unbiased estimate of ∇θ E[cost], with per-site
    estimators and dependency-aware credit:

        L = Σ_c □(Σ_{s ∈ A(c)} τ_s) · c + Σ_s (terms of the sites' estimators),

    τ_s = log p(x_s | pa_s; θ) of the score-function sites, A(c) those among
    the stochastic ancestors of c (found from the program's data flow),
    □(τ) = exp(τ − ⊥τ); a score-function site adds its baseline term (1 −
    □(τ_s))·□(Σ_{A(s)} τ)·⊥b_s, a DisARM, RODEO or measure-valued site a zero
    carrying its gradient (see :mod:`scoregrad.sites`);
  * ``jax.hessian(loss)`` (any order) unbiased too; with a ``"disarm"``,
    ``"measure_valued"`` or ``"rodeo"`` site, first derivatives only (a
    second derivative raises at trace time).

  One call signature whatever the configuration: ``loss(params, key, state)
  -> (value, state)`` with ``state = loss.init(params, key)``; stateless
  surrogates may also be called as ``loss(params, key) -> value``.
  The program's return value, when not None, is a cost named
  ``"<return value>"`` (in ``loss.graph``). The dependencies are read from the
  traced program (jaxpr data flow), never declared: each trace of the
  surrogate traces the program twice, once for the analysis and once for the
  runs (measure-valued sites add one trace each to find their active
  parameters). It works under ``jax.jit``, ``jax.vmap`` (over keys) and inside
  ``lax.scan`` training loops.

  Args:
    program: ``program(params, key) -> None or scalar cost``.
    num_samples: ``None`` (one run) or an int ≥ 1: the program runs
      ``num_samples`` times (vmapped over split keys) and the surrogate is the
      mean; needed by ``leave_one_out``.
    baseline: for the score-function sites: one spec for all of them or a dict
      ``{site name: spec}`` (absent sites: none). A spec is ``None``, a scalar
      :mod:`scoregrad.baselines` baseline (``leave_one_out()``,
      ``constant(c)``, ``moving_average(decay)``, ``learned(...)``), or a
      callable ``b(values) -> scalar`` receiving a dict of the samples of the
      site's non-descendant sites (held fixed). b_s estimates the sum of the
      costs downstream of s (with exact sites below s: its expectation over
      their configurations). Stateful baselines keep their state in
      ``loss.init(params, key)``.
    max_configurations: the most joint configurations of all ``"exact"``
      sites it will enumerate.
    rodeo: for ``estimator="rodeo"`` sites without settings of their own: a
      dict with ``num_samples`` (K ≥ 2 draws of the site per run) and
      optionally ``hidden_size`` (default 100), ``learning_rate`` (Adam,
      default 1e-3; 0 freezes the controls) or ``optimizer``, as in
      :func:`scoregrad.rodeo` (or ``sg.sites.rodeo(num_samples=K, ...)`` at
      the site). The state's entry for the site is a
      :class:`scoregrad.RodeoState`.
    fixed_values: ``{site name: value}``: score-function or measure-valued
      sites held at these values instead of being drawn, to evaluate the
      estimator at chosen samples (e.g. its exact variance by enumerating
      them).

  Returns:
    The :class:`Surrogate`, with ``init(params, key)`` (the sites' state),
    ``graph(params, key)`` (the sites, their estimators and which sites each
    cost depends on) and ``site_costs(params, key)`` (each site's samples and
    downstream costs, the regression data for a learned baseline).

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> def program(params, key):
    ...   k1, k2 = jax.random.split(key)
    ...   z = sg.sample("z", sg.dists.Bernoulli(logits=params["a"]), k1)
    ...   x = sg.sample("x", sg.dists.Normal(params["m"] * z, 1.0), k2)
    ...   sg.cost("fit", (x - 2.0) ** 2)
    ...   return 0.1 * z
    >>> loss = sg.surrogate(program, num_samples=8,
    ...                     baseline=sg.baselines.leave_one_out())
    >>> g = jax.grad(loss)({"a": jnp.array(0.0), "m": jnp.array(1.0)}, jax.random.key(0))

  References:
    Schulman et al. 2015; Foerster et al. 2018; Mao et al. 2019 (see
    :mod:`scoregrad._src.graphs`).
  """
  if not callable(program):
    raise TypeError(f"`program` must be a callable program(params, key); got {program!r}.")
  if num_samples is not None:
    num_samples = check_positive_int("num_samples", num_samples)
  max_configurations = check_positive_int("max_configurations", max_configurations)
  per_site = None
  if isinstance(baseline, Mapping):
    per_site = {
      n: check_baseline(n, b, num_samples) for n, b in cast(Mapping[str, Any], baseline).items()
    }
    none = _baselines.none()
    baseline_of = lambda name: per_site.get(name, none)
  else:
    default = check_baseline("every score-function site", baseline, num_samples)
    baseline_of = lambda name: default
  if fixed_values is not None and not isinstance(fixed_values, Mapping):
    raise TypeError(
      f"`fixed_values` must be None or a dict {{site name: value}}; got {fixed_values!r}."
    )
  fixed = {n: jax.lax.stop_gradient(jnp.asarray(v)) for n, v in dict(fixed_values or {}).items()}
  settings = Settings(
    num_samples, baseline_of, None if rodeo is None else check_rodeo(rodeo), max_configurations
  )
  return Surrogate(program, settings, per_site, fixed)
