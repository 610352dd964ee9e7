"""The pathwise site: the sample is a differentiable function of θ (reparameterization).

No term of its own: ``jax.grad`` of the costs reaches θ through the sample
(x = g(θ, ε)), and a score-function site below it sees its parameters move
with θ. Needs a reparameterized family (``dist.reparameterized``).

References:
  Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
"""

from __future__ import annotations

import dataclasses

from scoregrad._src.graphs.protocol import SiteEstimator
from scoregrad.dists._base import check_reparameterized


@dataclasses.dataclass(frozen=True, repr=False)
class Pathwise(SiteEstimator):
  """``sg.sites.pathwise()``: differentiate through the sample (reparameterized families)."""

  name = "pathwise"
  differentiable_value = True

  def check(self, site, dist):
    check_reparameterized(dist, f"dist of site {site!r}")
