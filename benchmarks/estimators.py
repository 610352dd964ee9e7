"""The table of estimators every benchmark iterates over (public API only).

Add a row here and it appears in every benchmark whose distribution family it
supports — no benchmark-specific code.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import scoregrad as sg


class EstimatorSpec(NamedTuple):
  """A named estimator configuration.

  Attributes:
    name: label in tables and plots.
    make: ``make(num_samples) -> GradientEstimator`` using about
      ``num_samples`` evaluations of f per estimate.
    families: the distribution families it applies to ("normal", "mvn",
      "gamma", "bernoulli", "categorical", "poisson").
    kind: "score_function", "pathwise", "measure_valued", "discrete", ...
  """

  name: str
  make: Callable[[int], sg.GradientEstimator]
  families: frozenset
  kind: str


ALL_FAMILIES = frozenset({"normal", "mvn", "gamma", "bernoulli", "categorical", "poisson"})
REPARAMETERIZED = frozenset({"normal", "mvn", "gamma"})

ESTIMATORS: list[EstimatorSpec] = [
    EstimatorSpec("score_function", lambda n: sg.score_function(num_samples=n, per_sample=True),
                  ALL_FAMILIES, "score_function"),
    EstimatorSpec("score_function+leave_one_out",
                  lambda n: sg.score_function(num_samples=n, per_sample=True,
                                              baseline=sg.baselines.leave_one_out()),
                  ALL_FAMILIES, "score_function"),
    EstimatorSpec("score_function+moving_average",
                  lambda n: sg.score_function(num_samples=n, per_sample=True,
                                              baseline=sg.baselines.moving_average(decay=0.9)),
                  ALL_FAMILIES, "score_function"),
    EstimatorSpec("score_function+optimal",
                  lambda n: sg.score_function(num_samples=n, per_sample=True,
                                              baseline=sg.baselines.optimal()),
                  ALL_FAMILIES, "score_function"),
    EstimatorSpec("pathwise", lambda n: sg.pathwise(num_samples=n, per_sample=True),
                  REPARAMETERIZED, "pathwise"),
]


def by_name() -> dict[str, EstimatorSpec]:
  return {spec.name: spec for spec in ESTIMATORS}


def for_family(family: str) -> list[EstimatorSpec]:
  return [spec for spec in ESTIMATORS if family in spec.families]


def select(names: list[str] | None, family: str | None = None) -> list[EstimatorSpec]:
  """The specs named (all if None), restricted to ``family``; unknown names raise."""
  table = by_name()
  if names:
    unknown = [n for n in names if n not in table]
    if unknown:
      raise ValueError(f"unknown estimator(s) {unknown}; known: {sorted(table)}")
    specs = [table[n] for n in names]
  else:
    specs = list(ESTIMATORS)
  if family is not None:
    specs = [s for s in specs if family in s.families]
  return specs
