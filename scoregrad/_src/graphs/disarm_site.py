"""The DisARM site: a factorised Bernoulli site with antithetic pairs (Dong et al. 2020).

With m disarm sites the program runs m + 1 times per sample: run 0 draws
every disarm site at b, run j + 1 redraws site j alone at its antithetic b̃
(same noise everywhere else, so a downstream disarm site follows its new
parents through its own uniforms). L is the mean over the m + 1 runs (each is
a draw of the program), and site j's logits α get

    ĝ_i = ½ (C(b) − C(b̃)) (−1)^{b̃_i} 1[b_i ≠ b̃_i] σ(|α_i|)

from runs 0 and j + 1, for the costs C downstream of it (for m = 1: the pair,
L its mean), carried by a zero whose derivative is ⟨∇α, ĝ⟩. With exact
sites, C in each run is Σ_k p_k C_k over their configurations (p_k of a
configuration below the site changes with its value); α, b and b̃ vary with
the configurations above it only, so the difference is taken configuration
by configuration. First-order only (a second derivative raises).

References:
  Dong, Mnih & Tucker, "DisARM: An Antithetic Gradient Estimator for Binary
  Latent Variables", NeurIPS 2020.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from scoregrad._src.base import gradient_carrier
from scoregrad._src.discrete.antithetic import disarm_rows
from scoregrad._src.graphs.protocol import Runs, SiteEstimator, weighted
from scoregrad.dists._base import families_with


@dataclasses.dataclass(frozen=True, repr=False)
class DisARM(SiteEstimator):
  """``sg.sites.disarm()``: DisARM for a factorised Bernoulli site (first order)."""

  name = "disarm"
  first_order_only = True

  def check(self, site, dist):
    if not (callable(getattr(dist, "antithetic_pair", None)) and hasattr(dist, "logits")):
      raise ValueError(
        f"Site {site!r}: estimator='disarm' needs a factorised Bernoulli; got "
        f"{type(dist).__name__}. Families that support it: "
        f"{', '.join(families_with('antithetic_pair'))}. Use estimator='score_function' "
        "or, for small sites, estimator='exact'."
      )

  def draw(self, dist, key, branch):
    if branch is None:  # not branched (the analysis' shape run)
      return dist.sample(key), None
    logits = jnp.asarray(dist.logits)
    u = jax.random.uniform(key, logits.shape, logits.dtype)
    b, b_tilde = dist.antithetic_pair(u, jax.lax.stop_gradient(logits))
    return jnp.where(branch > 0, b_tilde, b), (logits, b, b_tilde)

  def num_branches(self, count, settings):
    return count + 1

  def branch(self, j, run):
    return (run == j + 1).astype(jnp.int32)

  def record(self, view, i):
    return view.handler.sites[view.name].aux

  def term(self, runs: Runs, i, state):
    j = runs.kinds[self.name].index(i)  # run j + 1 holds this site's antithetic draw
    n, b_count = runs.costs.shape[0], runs.num_branches
    per_run = lambda x: x.reshape((n, b_count, -1) + x.shape[2:])
    costs = runs.costs @ runs.downstream_mask(i)
    down = per_run(weighted(jax.lax.stop_gradient(runs.weights * b_count), costs))
    logits, b, b_tilde = (per_run(x)[:, 0] for x in runs.records[i])  # (n, K', *shape)
    diff = jax.lax.stop_gradient(down[:, 0] - down[:, j + 1])
    ghat = disarm_rows(diff, b, b_tilde, logits)
    return gradient_carrier(
      logits, ghat / n, f"surrogate() with a disarm site ({runs.name(i)!r})", runs.dtype
    ), None
