"""The exact site: every configuration of a small discrete site is enumerated.

The rest of the program runs once per configuration k (vmapped) and its run
is weighted by p_θ(x_s = k | pa_s): L = Σ_k p_k L_k, exact at every order in
that site. With several exact sites the grid is their joint configurations
(``surrogate(..., max_configurations=)`` bounds it). A configuration of
probability zero contributes 0 whatever its cost (an infinite cost there is
not 0·∞ = NaN).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from scoregrad._src.graphs.protocol import SiteEstimator
from scoregrad.dists._base import families_with


@dataclasses.dataclass(frozen=True, repr=False)
class Exact(SiteEstimator):
  """``sg.sites.exact()``: enumerate the site (Bernoulli, Categorical, ...)."""

  name = "exact"
  enumerated = True

  def check(self, site, dist):
    if not (callable(getattr(dist, "enumerate_configurations", None)) and hasattr(dist, "logits")):
      raise ValueError(
        f"Site {site!r}: estimator='exact' enumerates a discrete distribution's "
        "configurations (one that cannot be enumerated is refused); got "
        f"{type(dist).__name__}. Families that support it: "
        f"{', '.join(families_with('enumerate_configurations'))}. Use "
        "estimator='score_function' instead."
      )

  def info(self, dist):
    return tuple(jnp.shape(dist.logits)), jnp.result_type(dist.logits), type(dist)

  def configurations(self, info):
    shape, dtype, family = info
    return (
      family.num_configurations(shape),
      lambda: family.enumerate_configurations(shape, dtype),
    )
