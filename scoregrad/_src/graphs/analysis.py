"""Dependency analysis of a traced program: which sites each site and each cost depends on.

The program is run abstractly (``jax.eval_shape``) to record its sites, then
traced with every site's value substituted by an input of the jaxpr
(``jax.make_jaxpr``); the data flow of that jaxpr from the site inputs to each
cost and to each site's log-probability gives the direct dependencies, and
their transitive closure the stochastic ancestors. Nothing is declared by the
user.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional

import jax
from jax.extend import core as jex_core
import jax.numpy as jnp

from scoregrad._src.graphs import runtime
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

  @property
  def names(self) -> list:
    return [s.name for s in self.sites]

  def descendants(self, i: int) -> set:
    """Site i and the sites that depend on it."""
    return {t for t in range(len(self.sites)) if i in self.ancestors[t]} | {i}


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
  can only add dependencies, never miss one (extra credit is still unbiased).
  """
  empty: frozenset[int] = frozenset()
  env = dict(zip(jaxpr.invars, labels))

  def read(v):
    return empty if isinstance(v, jex_core.Literal) else env.get(v, empty)

  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    sub = _inner(eqn)
    if sub is not None:
      outs = reach(sub, ins)
    else:
      union = frozenset().union(*ins)
      outs = [union] * len(eqn.outvars)
    for v, l in zip(eqn.outvars, outs):
      env[v] = l
  return [read(v) for v in jaxpr.outvars]


def analyse(program, params, key, fixed: Optional[Mapping[str, Any]] = None) -> Graph:
  """Records the sites (shapes only) and finds their dependencies from the jaxpr."""
  params_a, key_a = abstract(params), abstract(key)
  fixed = dict(fixed or {})
  found = []

  def record(p, k):
    h = runtime.run(program, p, k, fixed)
    found.append(
      (
        [
          SiteInfo(s.name, s.estimator, abstract(s.value), type(s.dist), s.estimator.info(s.dist))
          for s in h.sites.values()
        ],
        tuple(h.costs),
      )
    )

  jax.eval_shape(record, params_a, key_a)
  sites, cost_names = found[0]
  names = [s.name for s in sites]

  def substituted(p, k, values):
    h = runtime.run(program, p, k, dict(zip(names, values)))
    if tuple(h.costs) != cost_names or list(h.sites) != names:
      raise ValueError(
        "The program must record the same sites and costs on every run "
        "(no Python branching on random values)."
      )
    return [h.costs[c] for c in cost_names], [h.sites[n].log_prob for n in names]

  values = [s.value for s in sites]
  closed = jax.make_jaxpr(substituted)(params_a, key_a, values)
  n_fixed = len(jax.tree_util.tree_leaves((params_a, key_a)))
  labels: list[frozenset[int]] = [frozenset()] * n_fixed
  for i, v in enumerate(values):
    labels += [frozenset([i])] * len(jax.tree_util.tree_leaves(v))
  labels += [frozenset()] * (len(closed.jaxpr.invars) - len(labels))
  out = reach(closed.jaxpr, labels)
  cost_deps, site_deps = out[: len(cost_names)], out[len(cost_names) :]
  ancestors: list[frozenset[int]] = []
  for i, deps in enumerate(site_deps):
    parents = deps - {i}
    ancestors.append(frozenset(parents).union(*[ancestors[j] for j in parents]))
  cost_ancestors = [frozenset(d).union(*[ancestors[j] for j in d]) for d in cost_deps]
  return Graph(tuple(sites), cost_names, tuple(ancestors), tuple(cost_ancestors))
