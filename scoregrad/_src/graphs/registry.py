"""The site estimators by name, and resolving ``sg.sample(..., estimator=)``."""

from __future__ import annotations

from typing import Any

from scoregrad._src.graphs.disarm_site import DisARM
from scoregrad._src.graphs.exact_site import Exact
from scoregrad._src.graphs.measure_valued_site import MeasureValued
from scoregrad._src.graphs.pathwise_site import Pathwise
from scoregrad._src.graphs.protocol import SiteEstimator
from scoregrad._src.graphs.rodeo_site import Rodeo
from scoregrad._src.graphs.score_function_site import ScoreFunction

# The string aliases of ``sg.sample(..., estimator=...)``: each names the
# site estimator with its default settings (``sg.sites.<name>()``).
ALIASES: dict[str, type] = {
  cls.name: cls for cls in (ScoreFunction, Pathwise, Exact, DisARM, MeasureValued, Rodeo)
}
ESTIMATORS = tuple(ALIASES)


def resolve(site: str, dist, estimator: Any) -> SiteEstimator:
  """The site estimator for ``estimator`` (None, an alias or a value), checked against ``dist``."""
  if estimator is None:
    estimator = Pathwise() if getattr(dist, "reparameterized", False) else ScoreFunction()
  elif isinstance(estimator, str) and estimator in ALIASES:
    estimator = ALIASES[estimator]()
  elif not isinstance(estimator, SiteEstimator):
    raise ValueError(
      f"Site {site!r}: `estimator` must be one of {ESTIMATORS}, a site-estimator value "
      "from scoregrad.sites (e.g. sg.sites.disarm()), or None (pathwise "
      f"for reparameterized distributions, else score_function); got "
      f"estimator={estimator!r}."
      + (
        " Site estimators are in scoregrad.sites (sg.sites.score_function()), not the "
        "GradientEstimator factories (sg.score_function(...))."
        if hasattr(estimator, "estimate")
        else ""
      )
    )
  estimator.check(site, dist)
  return estimator
