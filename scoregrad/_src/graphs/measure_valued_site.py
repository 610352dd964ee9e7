"""The measure-valued site: the weak derivative of the site's own parameters.

A site whose family has a weak derivative (Normal, Laplace, Bernoulli,
Categorical, Poisson, Exponential, Gamma rate; Mohamed et al. 2020, Section 6)
keeps its sample fixed (no score term) and its own parameters η get

    ∂η_j E[C] ≈ c_j (C(x ⊕_j x⁺_j) − C(x ⊕_j x⁻_j)),

where C is the sum of the costs downstream of the site and C(x') reruns the
rest of the program with the site's value replaced by x' and the same
downstream noise (the same keys). The chain rule through η(params, parents)
gives the gradient, carried by a zero whose derivative is ⟨∇η, ĝ⟩; everything
else keeps its own estimator. About 2·d extra runs of the program per site of
size d (Categorical: d·K); first-order only; not combined with exact or
disarm sites.

References:
  Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in
  Machine Learning", JMLR 2020.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from scoregrad._src.base import gradient_carrier
from scoregrad._src.graphs.protocol import Runs, SiteEstimator
from scoregrad._src.weak_derivative import dependence, has_weak_derivative, weak_derivative_terms
from scoregrad.dists._base import families_with


@dataclasses.dataclass(frozen=True, repr=False)
class MeasureValued(SiteEstimator):
  """``sg.sites.measure_valued()``: the weak-derivative estimator at a site (first order)."""

  name = "measure_valued"
  first_order_only = True

  def check(self, site, dist):
    if not has_weak_derivative(dist):
      raise ValueError(
        f"Site {site!r}: estimator='measure_valued' needs a weak-derivative "
        f"decomposition of the site's family; {type(dist).__name__} has none. "
        f"Families that have one: {', '.join(families_with('weak_derivative'))}. Use "
        "estimator='score_function' (any distribution) or 'pathwise' (reparameterized)."
      )

  def check_program(self, i, graph, settings, kinds):
    exact, disarm = kinds.get("exact", []), kinds.get("disarm", [])
    if exact or disarm:
      names = graph.names
      raise ValueError(
        "estimator='measure_valued' sites cannot be combined with 'exact' or 'disarm' "
        f"sites in one program yet; got measure_valued sites "
        f"{[names[t] for t in kinds['measure_valued']]}, exact sites "
        f"{[names[t] for t in exact]} and disarm sites {[names[t] for t in disarm]}. "
        "Use estimator='score_function' for one kind."
      )

  def prepare(self, i, program):
    """Which of the site's own parameters η depend on params (structurally, through
    parents too); a family's fixed η must not."""
    from scoregrad._src.graphs import runtime  # pylint: disable=g-import-not-at-top

    site = program.graph.sites[i]
    canon_of = lambda p: (
      runtime.run(program.program, p, program.key, {})
      .sites[site.name]
      .dist.weak_derivative_params()
    )
    etas = list(jax.eval_shape(canon_of, program.params))
    active = dependence(lambda p: tuple(canon_of(p).values()), program.params)
    fixed = getattr(site.family, "weak_derivative_fixed", ())
    for eta, on in zip(etas, active):
      if on and eta in fixed:
        free = ", ".join(e for e in etas if e not in fixed)
        raise ValueError(
          f"Site {site.name!r}: estimator='measure_valued' differentiates a "
          f"{site.family.__name__} through its {free} only, but its {eta} "
          f"depends on `params`. Keep the {eta} constant, or use "
          "estimator='score_function' (or 'pathwise' where reparameterized)."
        )
    return active

  def record(self, view, i):
    """(η, ĝ) in one run: ĝ_j = c_j (C(x ⊕_j x⁺) − C(x ⊕_j x⁻))."""
    h, dtype = view.handler, view.dtype
    rec = h.sites[view.name]
    canon = tuple(rec.dist.weak_derivative_params().values())
    cost, down = view.downstream(i, False)
    base = jnp.reshape(rec.value, (1, -1))
    fbase = jax.lax.stop_gradient(
      jnp.reshape(sum((h.costs[c].astype(dtype) for c in down), jnp.zeros((), dtype)), (1, 1))
    )
    # Its own stream: fold_in(k, ·) is independent of the program's splits of k.
    wd_key = jax.random.fold_in(view.key, 0x5C06 + i)
    terms = weak_derivative_terms(
      wd_key,
      lambda x: jnp.reshape(cost(x), (1,)),
      jax.lax.stop_gradient(rec.dist),
      view.prepared,
      True,
      base,
      fbase,
    )
    cot = tuple(
      jnp.zeros(c.shape, dtype) if t is None else jax.lax.stop_gradient(t[0, ..., 0]).astype(dtype)
      for t, c in zip(terms, canon)
    )
    return canon, cot

  def term(self, runs: Runs, i, state):
    canon, cot = runs.records[i]
    n = runs.costs.shape[0]
    # Averaged over the runs (the chain rule through η(params, parents) does the rest).
    return gradient_carrier(
      canon,
      jax.tree_util.tree_map(lambda t: t / n, cot),
      f"surrogate() with a measure_valued site ({runs.name(i)!r})",
      runs.dtype,
    ), None
