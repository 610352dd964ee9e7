"""Sample sites inside loops: ``scoregrad.scan`` and ``scoregrad.fori_loop``, with per-step credit.

A site drawn at every step of a loop (a Markov chain: an RL episode with a
stochastic environment, an Euler-discretised SDE, a hidden Markov model) is
ONE site of the program whose value has a leading axis of length T, and
whose per-step log-probabilities τ_{s,t} enter the surrogate step by step.
The loop is compiled once (one ``lax.scan``, never unrolled): its trace and
compile time do not depend on T.

The causal rule. For a cost c reported at every step (``sg.cost`` inside
the body) the analysis reads the body's data flow once, with the carry's
fixed point, and finds for every site s of the loop whether c at step t
depends on s at the same step t (S*(c)) and/or on s at earlier steps t' < t
through the carry (L*(c)), transitively; T(c) are the sites outside the loop
that c depends on. A step can only see the present and the past through the
carry, so the per-step surrogate is

    Σ_t □(Σ_{p ∈ T(c)} τ_p + Σ_{s ∈ S*(c)} τ_{s,t} + Σ_{s ∈ L*(c)} Σ_{t'<t} τ_{s,t'}) · c_t

in place of the whole-loop □(Σ_{A(c)} τ)·Σ_t c_t: a step's score multiplies the
costs at that step and after it (when they depend on it), never the earlier
ones. A cost outside the loop that depends on a loop site gets the whole
loop's Σ_t τ_{s,t} (the site's log-probability as one site). Each
score-function site of the loop adds the per-step baseline term of Mao et
al. (2019),

    Σ_t (1 − □(τ_{s,t})) · □(Λ_{s,t}) · ⊥b_{s,t},

with Λ_{s,t} the same causal sum over the ancestors of s at step t, and
b_{s,t} built from R_{s,t}, the costs that τ_{s,t} multiplies (the loop's
costs at t and after it, as the rule above says, plus the costs outside
the loop downstream of s): ``leave_one_out()`` gives b_{s,t} = the mean of
R_{s,t} over the other ``num_samples`` runs, per step. Every derivative of
every order is unbiased: each box is the importance weight of an
ancestrally closed set of (site, step) pairs, and each baseline term has
mean 0 at every order because b_{s,t} does not depend on x_{s,t}. For one
loop site, per-step costs and nothing else, this is exactly
:func:`scoregrad.score_function_surrogate` on the (n, T) log-probabilities
and costs (tests/test_graph_loops.py checks the identity at the same
samples, Hessian included); the boxes are the graph surrogate's
:func:`scoregrad.magic_box`, computed outside the loop on its stacked
outputs.

Why a drop-in and not ``jax.lax.scan`` itself: the handler stack records a
site when ``sg.sample`` runs, at trace time. Inside a ``lax.scan`` body the
site's value and log-probability are values of the body's own trace, and
they can leave the loop only as outputs of the body, which a user's body
does not return (the same holds for ``fori_loop``, ``while_loop`` and
``vmap``). :func:`scan` wraps the body so that it returns them too: the
per-step log-probabilities, costs and site values come out stacked, with no
rewriting of jaxprs and no patching of ``jax.lax``. Outside a surrogate it is
``jax.lax.scan``; a site inside a user's own ``lax.scan`` stays a clear error
pointing here.

Requirements: sites inside the loop use ``"score_function"`` or
``"pathwise"`` (others are refused, naming the site); every step's site has
the same shape (a loop's carry cannot change shape); per-step keys (split a
key into ``xs``, or ``jax.random.fold_in(key, t)``); one level of
``sg.scan`` (not nested); the loop's score-function sites take the baselines
``leave_one_out()``, ``constant(c)`` or none (per step), not stateful or
callable ones; no ``"exact"`` site downstream of a loop site; loop sites
cannot be held at ``fixed_values``.

References:
  Schulman, Heess, Weber & Abbeel, "Gradient Estimation Using Stochastic
  Computation Graphs", NeurIPS 2015 (the causal rule).
  Foerster et al., "DiCE: The Infinitely Differentiable Monte Carlo
  Estimator", ICML 2018.
  Mao et al., "A Baseline for Any Order Gradient Estimation in Stochastic
  Computation Graphs", ICML 2019.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
import numpy as np

from scoregrad._src import baselines as _baselines
from scoregrad._src.graphs import runtime
from scoregrad._src.graphs.protocol import Runs, weighted
from scoregrad._src.graphs.score_function_site import ScoreFunction
from scoregrad._src.surrogates import magic_box

_ALLOWED = ("score_function", "pathwise")


class LoopDist(NamedTuple):
  """Stands for a loop site's distribution outside the loop (its family, per step)."""

  family: Any
  length: int


class LoopInfo(NamedTuple):
  """The static structure of one loop, from the analysis' trace of its body."""

  sites: tuple  # global indices of the loop's sites, in body order
  costs: tuple  # names of the loop's costs, in body order
  length: int
  same: dict  # {site index or cost name: frozenset of loop sites at the same step}
  lag: dict  # {site index or cost name: frozenset of loop sites at earlier steps}


class LoopRecord(NamedTuple):
  """One loop of one run: its sites, costs, per-step log-probabilities and costs."""

  sites: tuple  # names
  costs: tuple  # names
  log_probs: dict  # {site name: (T,)}
  step_costs: dict  # {cost name: (T,)}
  info: Optional[LoopInfo]  # in the analysis' run only


@dataclasses.dataclass(frozen=True, repr=False)
class LoopScoreFunction(ScoreFunction):
  """A score-function site inside ``sg.scan``: per-step boxes and baselines (see the module)."""

  def __repr__(self) -> str:
    return "scoregrad.sites.score_function()"

  def init(self, site, settings):
    return None

  def check_program(self, i, graph, settings, kinds):
    name = graph.sites[i].name
    spec = settings.baseline_of(name)
    stateful = isinstance(spec, _baselines.Baseline) and spec.stateful
    if stateful or not isinstance(spec, _baselines.Baseline):
      shown = spec.name if isinstance(spec, _baselines.Baseline) else repr(spec)
      raise ValueError(
        f"Site {name!r} is inside sg.scan and its baseline is {shown}: a site inside a "
        "loop takes a per-step baseline, leave_one_out() (with num_samples >= 2), "
        "constant(c) or none. Stateful and callable baselines are not supported "
        "inside sg.scan yet; use baseline={" + repr(name) + ": sg.baselines.leave_one_out()}."
      )
    for e in kinds.get("exact", []):
      if i in graph.ancestors[e]:
        raise ValueError(
          f"Site {graph.sites[e].name!r} (estimator='exact') depends on site {name!r}, "
          "which is inside sg.scan: exact sites downstream of a loop site are not "
          "supported yet. Use estimator='score_function' for "
          f"{graph.sites[e].name!r}, or draw it before the loop."
        )

  def term(self, runs: Runs, i, state):
    return _site_term(runs, i), None


class _Step:
  """The handler of one step of a loop: records the body's sites and costs."""

  def __init__(self, outer, base: int, mark):
    self.outer = outer
    self.base = base
    self.mark = mark
    self.sites: dict[str, tuple] = {}  # name -> (estimator, value, log_prob, family)
    self.costs: dict[str, jax.Array] = {}
    self._keys: list[tuple[Any, str]] = []
    self._trace = jex_core.get_opaque_trace_state()

  def __enter__(self):
    runtime._STACK.append(self)
    return self

  def __exit__(self, *exc):
    runtime._STACK.remove(self)
    return False

  def _check(self, name: str, kind: str) -> None:
    if jex_core.get_opaque_trace_state() != self._trace:
      raise ValueError(
        f"The {kind} {name!r} is inside a jax.vmap, lax.scan, lax.cond or another "
        "transformation within the body of sg.scan; inside the body, sg.sample and "
        "sg.cost must be called at the body's top level (one level of sg.scan, not "
        "nested loops)."
      )
    if name in self.sites or name in self.costs:
      raise ValueError(
        f"The name {name!r} is used twice in the body of sg.scan. Every sg.sample and "
        "sg.cost needs its own name (one name stands for every step of the loop)."
      )
    self.outer.check_name(name, kind)

  def sample(self, name: str, dist, key, estimator):
    self._check(name, "sample site")
    if estimator.name not in _ALLOWED:
      raise ValueError(
        f"Site {name!r} is inside sg.scan and uses estimator={estimator.name!r}: sites "
        f"inside a loop support {_ALLOWED} only. Use estimator='score_function', or "
        "draw the site outside the loop (a Python loop with one name per step)."
      )
    if name in self.outer.substitutes or name in self.outer.branches:
      raise ValueError(
        f"`fixed_values` names site {name!r}, which is inside sg.scan: sites inside a "
        "loop cannot be held at chosen values."
      )
    for used, owner in self._keys:
      if used is key:
        raise ValueError(
          f"Site {name!r} was given the same key object as site {owner!r} in the body "
          "of sg.scan: their samples would be correlated. Split the step's key."
        )
    self._keys.append((key, name))
    if estimator.name == "score_function":
      estimator = LoopScoreFunction()
    value, _ = estimator.draw(dist, key, None)
    if not estimator.differentiable_value:
      value = jax.lax.stop_gradient(value)
    if self.mark is not None:
      value = self.mark(self.base + len(self.sites), value)
    log_prob = jnp.asarray(dist.log_prob(jax.lax.stop_gradient(value)))
    if log_prob.shape != ():
      raise ValueError(
        f"Site {name!r}: `dist.log_prob(x)` of one sample must be a scalar (summed "
        f"over the event); it has shape {log_prob.shape} at each step of sg.scan."
      )
    self.sites[name] = (estimator, value, log_prob, type(dist))
    return value

  def cost(self, name: str, value):
    self._check(name, "cost term")
    value = runtime.check_scalar_cost(value, f"sg.cost({name!r}, value) in sg.scan")
    self.costs[name] = value
    return value


def _shapes(tree):
  return [jnp.shape(x) for x in jax.tree_util.tree_leaves(tree)]


def _check_carry(carry, new_carry, step: _Step):
  """A carry whose shape changes across a step (a site whose shape would change too)."""
  before, after = _shapes(carry), _shapes(new_carry)
  same_tree = str(jax.tree_util.tree_structure(carry)) == str(
    jax.tree_util.tree_structure(new_carry)
  )
  if same_tree and before == after:
    return
  sites = ", ".join(f"{n!r}: {tuple(jnp.shape(v))}" for n, (_, v, _, _) in step.sites.items())
  raise ValueError(
    "The body of sg.scan returns a carry of another shape than it received "
    f"({before} -> {after}), so the loop's sites would change shape across steps "
    f"(sites at this step: {sites or 'none'}). Every step of a scan has the same "
    "shapes: pad the carry (and the sites) to a fixed size, or use a Python loop with "
    "one site name per step."
  )


def scan(
  body: Callable[[Any, Any], tuple[Any, Any]],
  init: Any,
  xs: Any = None,
  length: Optional[int] = None,
  *,
  unroll: int = 1,
):
  """``jax.lax.scan`` whose body may draw :func:`scoregrad.sample` sites and report costs.

  ``scan(body, init, xs, length)`` has the semantics of ``jax.lax.scan``:
  ``body(carry, x) -> (carry, y)``. Inside :func:`scoregrad.surrogate` a site
  named ``"a"`` in the body is one site of the program whose value has a
  leading axis of length T (the steps), and a ``sg.cost("r", r_t)`` in the
  body is one cost term Σ_t r_t with per-step credit: the score of the site
  at step t multiplies the costs at step t and after it that depend on it
  (read from the body's data flow), never earlier ones,

      Σ_t □(Σ_{p ∈ T(c)} τ_p + Σ_{s ∈ S*(c)} τ_{s,t} + Σ_{s ∈ L*(c)} Σ_{t'<t} τ_{s,t'}) · c_t,

  with per-step baselines (``leave_one_out()``: the mean over the other runs
  of what τ_{s,t} multiplies, per step). Every order of derivative is
  unbiased. Compiled once: no unrolling, so the trace and compile time do not
  depend on T. Outside a surrogate it is ``jax.lax.scan(body, init, xs,
  length)`` (sites are plain draws).

  Why a drop-in: see :mod:`scoregrad._src.graphs.loops` (a site inside a
  user's ``lax.scan`` body cannot hand its per-step log-probability out of
  the loop; this scan's body returns it).

  Requirements: the body's sites use ``"score_function"`` or ``"pathwise"``;
  their shapes are the same at every step; each step draws with its own key
  (e.g. ``xs=jax.random.split(key, T)``); not nested; per-step baselines
  ``leave_one_out()``, ``constant(c)`` or none.

  Args:
    body: ``body(carry, x) -> (carry, y)``.
    init: the initial carry.
    xs: the per-step inputs (leading axis T), or None with ``length``.
    length: the number of steps when ``xs`` is None.
    unroll: passed to ``jax.lax.scan``.

  Returns:
    ``(final carry, stacked ys)``, as ``jax.lax.scan``.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> def walk(theta, key):
    ...   def step(x, k):
    ...     x = sg.sample("x", sg.dists.Normal(x + theta, 1.0), k,
    ...                   estimator="score_function")
    ...     sg.cost("dist", x**2)
    ...     return x, None
    ...   sg.scan(step, 0.0, jax.random.split(key, 8))
    >>> loss = sg.surrogate(walk, num_samples=16,
    ...                     baseline=sg.baselines.leave_one_out())
    >>> g = jax.grad(loss)(0.1, jax.random.key(0))

  References:
    Schulman et al. 2015; Foerster et al. 2018; Mao et al. 2019 (see
    :mod:`scoregrad._src.graphs.loops`).
  """
  if not callable(body):
    raise TypeError(f"`body` of sg.scan must be a callable body(carry, x); got {body!r}.")
  if not runtime._STACK:
    return jax.lax.scan(body, init, xs, length=length, unroll=unroll)
  outer = runtime._STACK[-1]
  if isinstance(outer, _Step):
    raise ValueError(
      "sg.scan is nested inside the body of another sg.scan: one level of sg.scan is "
      "supported. Flatten the inner loop into the outer one's steps, or unroll it in "
      "Python with one site name per step."
    )
  if jex_core.get_opaque_trace_state() != outer._trace:
    raise ValueError(
      "sg.scan is inside a jax.vmap, lax.scan, lax.cond or another transformation "
      "within the program: call it at the program's top level."
    )
  base = len(outer.sites)
  steps: list[_Step] = []

  def run_body(carry, x, mark):
    with _Step(outer, base, mark) as step:
      new_carry, y = body(carry, x)
    _check_carry(carry, new_carry, step)
    return step, new_carry, y

  def wrapped(carry, x):
    step, new_carry, y = run_body(carry, x, outer.mark)
    steps.append(step)
    values = {n: v for n, (_, v, _, _) in step.sites.items()}
    lps = {n: lp for n, (_, _, lp, _) in step.sites.items()}
    return new_carry, (y, values, lps, dict(step.costs))

  carry, (ys, values, lps, costs) = jax.lax.scan(wrapped, init, xs, length=length, unroll=unroll)
  step = steps[-1]
  num_steps = int(jax.tree_util.tree_leaves(lps)[0].shape[0]) if lps else _length(xs, length)
  info = None
  if outer.mark is not None:
    info = _structure(run_body, init, xs, outer.mark, base, step, num_steps)
  for n, (estimator, _, _, family) in step.sites.items():
    outer.check_name(n, "sample site")
    outer.sites[n] = runtime.SiteRecord(
      n, estimator, values[n], jnp.sum(lps[n]), LoopDist(family, num_steps)
    )
  for n in step.costs:
    outer.check_name(n, "cost term")
    outer.costs[n] = jnp.sum(costs[n])
  outer.loops.append(LoopRecord(tuple(step.sites), tuple(step.costs), lps, costs, info))
  return carry, ys


def _length(xs, length) -> int:
  leaves = jax.tree_util.tree_leaves(xs)
  return int(length if length is not None else leaves[0].shape[0])


def fori_loop(lower: int, upper: int, body_fun: Callable[[Any, Any], Any], init_val: Any):
  """``jax.lax.fori_loop`` with a static trip count whose body may hold sites (see :func:`scan`).

  ``body_fun(i, val) -> val``, run for i = lower, ..., upper − 1, as
  :func:`scoregrad.scan` over ``jnp.arange(lower, upper)`` (sites and costs
  in the body get per-step credit). ``lower`` and ``upper`` must be Python
  ints (a static trip count: the loop is one ``lax.scan``).

  Args:
    lower: the first index (int).
    upper: one past the last index (int).
    body_fun: ``body_fun(i, val) -> val``.
    init_val: the initial value.

  Returns:
    The final value.

  Example:
    >>> import jax, scoregrad as sg
    >>> def chain(theta, key):
    ...   def step(i, x):
    ...     k = jax.random.fold_in(key, i)
    ...     x = sg.sample("x", sg.dists.Normal(x + theta, 1.0), k,
    ...                   estimator="score_function")
    ...     sg.cost("c", x**2)
    ...     return x
    ...   sg.fori_loop(0, 5, step, 0.0)
    >>> g = jax.grad(sg.surrogate(chain))(0.2, jax.random.key(1))
  """
  for name, v in (("lower", lower), ("upper", upper)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
      raise TypeError(
        f"sg.fori_loop needs a static trip count: `{name}` must be a Python int; got "
        f"{name}={v!r}. A traced bound would make the loop a while_loop, whose sites "
        "cannot get per-step credit; pass ints (e.g. the horizon as a constant)."
      )
  if upper < lower:
    raise ValueError(f"sg.fori_loop: `upper` must be >= `lower`; got {lower=}, {upper=}.")
  out, _ = scan(lambda val, i: (body_fun(i, val), None), init_val, jnp.arange(lower, upper))
  return out


# -- the analysis: the body's per-step data flow ------------------------------------


def _lagged(labels: frozenset) -> frozenset:
  """A label set as seen one step later: loop site i (same step) becomes ~i (earlier)."""
  return frozenset(~i if i >= 0 else i for i in labels)


def _structure(run_body, init, xs, mark, base, step: _Step, num_steps: int) -> LoopInfo:
  """S*(·) and L*(·) of the loop's sites and costs, from one trace of the body."""
  from scoregrad._src.graphs import analysis  # analysis imports this module

  names = list(step.sites)
  cost_names = list(step.costs)
  x0 = jax.tree_util.tree_map(
    lambda a: jax.ShapeDtypeStruct(jnp.shape(a)[1:], jnp.result_type(a)), xs
  )

  def probe(carry, x):
    s, new_carry, _ = run_body(carry, x, mark)
    return (
      jax.tree_util.tree_leaves(new_carry),
      [s.sites[n][2] for n in names],
      [s.costs[n] for n in cost_names],
    )

  closed = jax.make_jaxpr(probe)(analysis.abstract(init), x0)
  jaxpr = closed.jaxpr
  num_carry = len(jax.tree_util.tree_leaves(init))
  num_x = len(jaxpr.invars) - num_carry
  empty: frozenset[int] = frozenset()
  carry = [empty] * num_carry
  while True:
    out = analysis.reach(jaxpr, carry + [empty] * num_x)
    new = [c | _lagged(o) for c, o in zip(carry, out[:num_carry])]
    if new == carry:
      break
    carry = new
  direct = out[num_carry:]
  indices = [base + j for j in range(len(names))]
  keys: list = indices + cost_names
  same_d = {k: frozenset(i for i in d if i >= 0) for k, d in zip(keys, direct)}
  lag_d = {k: frozenset(~i for i in d if i < 0) for k, d in zip(keys, direct)}
  for i in indices:  # a site's log-probability reads its own value: not a parent
    same_d[i] = same_d[i] - {i}
  same = dict(same_d)
  lag = dict(lag_d)
  while True:  # transitive closure: one lagged edge on a path makes it lagged
    changed = False
    for k in keys:
      s_new = frozenset(same[k]).union(*[same[u] for u in same_d[k]])
      l_new = frozenset(lag[k]).union(
        *[lag[u] for u in same_d[k]], *[same[u] | lag[u] | {u} for u in lag_d[k]]
      )
      if s_new != same[k] or l_new != lag[k]:
        same[k], lag[k], changed = s_new, l_new, True
    if not changed:
      break
  return LoopInfo(tuple(indices), tuple(cost_names), num_steps, same, lag)


def holds_sites(eqn, site_primitive) -> bool:
  """Whether a loop equation's body (or anything inside it) tags a site."""

  def search(jaxpr) -> bool:
    for e in jaxpr.eqns:
      if e.primitive is site_primitive:
        return True
      for v in e.params.values():
        for sub in v if isinstance(v, (tuple, list)) else (v,):
          inner = sub.jaxpr if isinstance(sub, jex_core.ClosedJaxpr) else sub
          if isinstance(inner, jex_core.Jaxpr) and search(inner):
            return True
    return False

  body = eqn.params["jaxpr"]
  return search(body.jaxpr if isinstance(body, jex_core.ClosedJaxpr) else body)


def reach_scan(eqn, ins: list, reach) -> list:
  """The labels of a scan's outputs, following its body (carry to a fixed point)."""
  body = eqn.params["jaxpr"]
  body = body.jaxpr if isinstance(body, jex_core.ClosedJaxpr) else body
  nc, nk = eqn.params["num_consts"], eqn.params["num_carry"]
  consts, carry, xs = ins[:nc], list(ins[nc : nc + nk]), ins[nc + nk :]
  while True:
    out = reach(body, consts + carry + xs)
    new = [c | o for c, o in zip(carry, out[:nk])]
    if new == carry:
      break
    carry = new
  return carry + list(out[nk:])


# -- the surrogate's per-step terms --------------------------------------------------


def steps_of(handler, dtype) -> tuple:
  """Per loop of one run: ((S, T) log-probabilities, (C, T) costs), cast to ``dtype``."""
  out = []
  for rec in handler.loops:
    lps = [rec.log_probs[n].astype(dtype) for n in rec.sites]
    cs = [rec.step_costs[n].astype(dtype) for n in rec.costs]
    length = (lps + cs)[0].shape[0] if lps + cs else 0
    out.append((_stack(lps, length, dtype), _stack(cs, length, dtype)))
  return tuple(out)


def _stack(rows, length, dtype):
  return jnp.stack(rows) if rows else jnp.zeros((0, length), dtype)


def in_loops(graph) -> np.ndarray:
  """(m,) 1.0 for the costs reported inside a loop (their boxes are per step)."""
  inside = {c for info in graph.loops for c in info.costs}
  return np.array([float(c in inside) for c in graph.cost_names])


def _exclusive_cumsum(x):
  return jnp.cumsum(x, axis=-1) - x


def _causal(runs: Runs, info: LoopInfo, lps, key) -> jax.Array:
  """(n, K, T) Σ over the (site, step) ancestors of ``key`` (a loop site or cost) at step t."""
  g = runs.graph
  score = set(runs.score)
  own = set(info.sites)
  if isinstance(key, str):
    top_of = g.cost_ancestors[g.cost_names.index(key)]
  else:
    top_of = g.ancestors[key]
  top = [p for p in sorted(top_of) if p in score and p not in own]
  outside = sum((runs.log_probs[..., p] for p in top), jnp.zeros(runs.log_probs.shape[:2]))
  rows = {s: j for j, s in enumerate(info.sites)}
  same = [rows[s] for s in sorted(info.same[key]) if s in score]
  lag = [rows[s] for s in sorted(info.lag[key]) if s in score]
  total = jnp.broadcast_to(outside.astype(runs.dtype)[..., None], lps.shape[:2] + lps.shape[3:])
  if same:
    total = total + jnp.sum(lps[:, :, same], axis=2)
  if lag:
    total = total + _exclusive_cumsum(jnp.sum(lps[:, :, lag], axis=2))
  return total


def cost_terms(runs: Runs) -> jax.Array:
  """(n, K) Σ over the loops' costs of Σ_t □(causal ancestors at t) · c_t."""
  total = jnp.zeros(runs.costs.shape[:2], runs.dtype)
  for info, (lps, cs) in zip(runs.graph.loops, runs.steps):
    for j, c in enumerate(info.costs):
      box = magic_box(_causal(runs, info, lps, c))
      total = total + jnp.sum(box * cs[:, :, j], axis=-1)  # weighted by the runs' weights later
  return total


def _site_term(runs: Runs, i: int) -> jax.Array:
  """Σ_t (1 − □(τ_{s,t})) · □(Λ_{s,t}) · ⊥b_{s,t} for the loop site i."""
  g, dtype = runs.graph, runs.dtype
  name = runs.name(i)
  spec = _baselines.resolve(runs.settings.baseline_of(name))
  if spec.name == "none()":
    return jnp.zeros((), dtype)
  loop = next(j for j, info in enumerate(g.loops) if i in info.sites)
  info = g.loops[loop]
  lps, cs = runs.steps[loop]
  row = info.sites.index(i)
  tau = lps[:, :, row]  # (n, K, T)
  held = jax.lax.stop_gradient(cs)
  r = jnp.zeros_like(tau)
  for j, c in enumerate(info.costs):  # the loop's costs that τ_{s,t} multiplies
    if i in info.same[c]:
      r = r + held[:, :, j]
    if i in info.lag[c]:
      r = r + _exclusive_cumsum(held[:, :, j][..., ::-1])[..., ::-1]
  inside = set(info.costs)
  outside = [
    k for k, (c, a) in enumerate(zip(g.cost_names, g.cost_ancestors)) if c not in inside and i in a
  ]
  if outside:
    r = r + jnp.sum(jax.lax.stop_gradient(runs.costs)[..., outside], axis=-1)[..., None]
  n, k, t = r.shape
  flat = r.reshape(n, k * t)
  b = jax.vmap(lambda rk: spec.values(rk, None, spec.init()), in_axes=1, out_axes=1)(flat)
  b = jax.lax.stop_gradient(b.reshape(n, k, t))
  above = _causal(runs, info, lps, i)
  per_run = jnp.sum((1.0 - magic_box(tau)) * magic_box(above) * b, axis=-1)
  return jnp.mean(jnp.sum(weighted(runs.weights, per_run), axis=1))
