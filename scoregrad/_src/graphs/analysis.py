"""Dependency analysis of a traced program: which sites each site and each cost depends on.

The program is traced once (``jax.make_jaxpr``), with every site's value
tagged by an identity primitive that names the site; the data flow of that
jaxpr from each tag to each cost and to each site's log-probability gives the
direct dependencies (a tag starts a fresh label: a site's value counts as the
site, whatever it was computed from), and their transitive closure the
stochastic ancestors. The same trace records the sites' shapes. Nothing is
declared by the user.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional

import jax
from jax.extend import core as jex_core
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
import jax.numpy as jnp

from scoregrad._src.graphs import loops, plates, runtime
from scoregrad._src.graphs.protocol import SiteEstimator


class SiteInfo(NamedTuple):
  name: str
  estimator: SiteEstimator
  value: Any  # ShapeDtypeStruct pytree
  family: Any  # the distribution's class
  info: Any  # the estimator's static facts of the distribution (estimator.info)


class Graph(NamedTuple):
  sites: tuple  # SiteInfo, in program order
  cost_names: tuple
  ancestors: tuple  # per site: frozenset of indices of its stochastic ancestors
  cost_ancestors: tuple  # per cost: frozenset of site indices
  loops: tuple = ()  # loops.LoopInfo of each sg.scan: its per-step structure
  parents: tuple = ()  # per site: frozenset of the sites it depends on directly
  cost_parents: tuple = ()  # per cost: the same
  plating: Any = None  # plates.Plating, or None when the program has no plate

  @property
  def names(self) -> list:
    return [s.name for s in self.sites]

  def descendants(self, i: int) -> set:
    """Site i and the sites that depend on it."""
    return {t for t in range(len(self.sites)) if i in self.ancestors[t]} | {i}


# The tag: an identity on the site's value that exists only in the analysis'
# trace (never evaluated or compiled there), with the rules an identity needs
# should a program transform its sites' values internally.
_site_p = Primitive("scoregrad_site")
_site_p.def_impl(lambda x, *, index: x)
_site_p.def_abstract_eval(lambda x, *, index: x)
mlir.register_lowering(_site_p, lambda ctx, x, *, index: [x])
ad.deflinear2(_site_p, lambda ct, x, *, index: [ct])
batching.primitive_batchers[_site_p] = lambda args, dims, *, index: (
  _site_p.bind(args[0], index=index),
  dims[0],
)


def _mark(index: int, value):
  return jax.tree_util.tree_map(lambda v: _site_p.bind(jnp.asarray(v), index=index), value)


def abstract(tree):
  return jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree
  )


_CALLS = (
  "jit",
  "pjit",
  "closed_call",
  "core_call",
  "remat",
  "remat2",
  "checkpoint",
  "custom_jvp_call",
  "custom_vjp_call",
  "custom_vjp_call_jaxpr",
)


def _inner(eqn):
  """The sub-jaxpr of a call-like equation with the same inputs and outputs, or None."""
  if eqn.primitive.name not in _CALLS:
    return None
  for value in eqn.params.values():
    jaxpr = value.jaxpr if isinstance(value, jex_core.ClosedJaxpr) else value
    if (
      isinstance(jaxpr, jex_core.Jaxpr)
      and len(jaxpr.invars) == len(eqn.invars)
      and len(jaxpr.outvars) == len(eqn.outvars)
    ):
      return jaxpr
  return None


def reach(jaxpr, labels: list) -> list:
  """Which input labels reach each output of ``jaxpr`` (data flow, conservative).

  An equation's outputs depend on all its inputs, except call-like equations
  (jit, checkpoint, custom_jvp/vjp), which are followed inside; loops and
  conditionals (scan, while, cond) are treated as one opaque equation, which
  can only add dependencies, never miss one (extra credit is still unbiased),
  except a scan holding sites (``sg.scan``), followed inside with its carry
  to a fixed point.
  """
  empty: frozenset[int] = frozenset()
  env = dict(zip(jaxpr.invars, labels))

  def read(v):
    return empty if isinstance(v, jex_core.Literal) else env.get(v, empty)

  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    sub = _inner(eqn)
    if eqn.primitive is _site_p:  # a site's value: the site itself
      outs = [frozenset([eqn.params["index"]])]
    elif sub is not None:
      outs = reach(sub, ins)
    elif eqn.primitive.name == "scan" and loops.holds_sites(eqn, _site_p):
      outs = loops.reach_scan(eqn, ins, reach)
    else:
      union = frozenset().union(*ins)
      outs = [union] * len(eqn.outvars)
    for v, l in zip(eqn.outvars, outs):
      env[v] = l
  return [read(v) for v in jaxpr.outvars]


def analyse(program, params, key, fixed: Optional[Mapping[str, Any]] = None) -> Graph:
  """Records the sites (shapes only) and finds their dependencies, in one trace."""
  found = []

  def traced(p, k):
    h = runtime.run(program, p, k, dict(fixed or {}), mark=_mark)
    found.append(
      (
        [
          SiteInfo(s.name, s.estimator, abstract(s.value), type(s.dist), s.estimator.info(s.dist))
          for s in h.sites.values()
        ],
        tuple(h.costs),
        tuple(rec.info for rec in h.loops),
        plates.summary(h),
      )
    )
    return list(h.costs.values()), [s.log_prob for s in h.sites.values()]

  closed = jax.make_jaxpr(traced)(abstract(params), abstract(key))
  sites, cost_names, loop_infos, plating = found[0]
  out = reach(closed.jaxpr, [frozenset()] * len(closed.jaxpr.invars))
  cost_deps, site_deps = out[: len(cost_names)], out[len(cost_names) :]
  # The transitive closure, to a fixed point: a loop's site may depend on a
  # site later in its body through the carry (an earlier step of it).
  ancestors = [frozenset(deps - {i}) for i, deps in enumerate(site_deps)]
  while True:
    grown = [a.union(*[ancestors[j] for j in a]) - {i} for i, a in enumerate(ancestors)]
    if grown == ancestors:
      break
    ancestors = grown
  cost_ancestors = [frozenset(d).union(*[ancestors[j] for j in d]) for d in cost_deps]
  parents = tuple(frozenset(d) - {i} for i, d in enumerate(site_deps))
  return Graph(
    tuple(sites),
    cost_names,
    tuple(ancestors),
    tuple(cost_ancestors),
    loop_infos,
    parents,
    tuple(frozenset(d) for d in cost_deps),
    plating,
  )
