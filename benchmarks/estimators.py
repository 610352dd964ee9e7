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
  EstimatorSpec(
    "score_function",
    lambda n: sg.score_function(num_samples=n, per_sample=True),
    ALL_FAMILIES,
    "score_function",
  ),
  EstimatorSpec(
    "score_function+leave_one_out",
    lambda n: sg.score_function(
      num_samples=n, per_sample=True, baseline=sg.baselines.leave_one_out()
    ),
    ALL_FAMILIES,
    "score_function",
  ),
  EstimatorSpec(
    "score_function+moving_average",
    lambda n: sg.score_function(
      num_samples=n, per_sample=True, baseline=sg.baselines.moving_average(decay=0.9)
    ),
    ALL_FAMILIES,
    "score_function",
  ),
  EstimatorSpec(
    "score_function+optimal",
    lambda n: sg.score_function(num_samples=n, per_sample=True, baseline=sg.baselines.optimal()),
    ALL_FAMILIES,
    "score_function",
  ),
  EstimatorSpec(
    "pathwise", lambda n: sg.pathwise(num_samples=n, per_sample=True), REPARAMETERIZED, "pathwise"
  ),
  # Discrete estimators (scoregrad.discrete). n evaluations of f per estimate:
  # ARM/DisARM use n/2 antithetic pairs; rao_blackwell sums n/2 configurations
  # and samples n/2 (at least 2, for the leave-one-out baseline); REBAR/RELAX/Gumbel-softmax/straight-through use n draws
  # (REBAR/RELAX also evaluate f and its gradient at 2 relaxed points per draw).
  # The relaxation-based ones differentiate f at relaxed inputs, which for
  # Categorical means one-hot inputs, so they are listed for "bernoulli" only
  # (f of float bits accepts values in [0, 1]); Gumbel-softmax and
  # straight-through are biased (kind "relaxed").
  EstimatorSpec(
    "arm",
    lambda n: sg.arm(num_samples=max(1, n // 2), per_sample=True),
    frozenset({"bernoulli"}),
    "discrete",
  ),
  EstimatorSpec(
    "disarm",
    lambda n: sg.disarm(num_pairs=max(1, n // 2), per_sample=True),
    frozenset({"bernoulli"}),
    "discrete",
  ),
  EstimatorSpec(
    "rao_blackwell+leave_one_out",
    lambda n: sg.rao_blackwell(
      num_summed=max(1, n // 2),
      num_samples=max(2, n - n // 2),
      per_sample=True,
      baseline=sg.baselines.leave_one_out(),
    ),
    frozenset({"bernoulli", "categorical"}),
    "discrete",
  ),
  EstimatorSpec(
    "rebar",
    lambda n: sg.rebar(num_samples=n, per_sample=True),
    frozenset({"bernoulli"}),
    "discrete",
  ),
  EstimatorSpec(
    "relax",
    lambda n: sg.relax(num_samples=n, per_sample=True),
    frozenset({"bernoulli"}),
    "discrete",
  ),
  EstimatorSpec(
    "gumbel_softmax(0.5)",
    lambda n: sg.gumbel_softmax(num_samples=n, temperature=0.5, per_sample=True),
    frozenset({"bernoulli"}),
    "relaxed",
  ),
  EstimatorSpec(
    "gumbel_softmax_st(0.5)",
    lambda n: sg.gumbel_softmax(
      num_samples=n, temperature=0.5, straight_through=True, per_sample=True
    ),
    frozenset({"bernoulli"}),
    "relaxed",
  ),
  EstimatorSpec(
    "straight_through",
    lambda n: sg.straight_through(num_samples=n, per_sample=True),
    frozenset({"bernoulli"}),
    "relaxed",
  ),
  # Measure-valued: n // 4 samples, i.e. n evaluations of f for ONE Gaussian
  # coordinate (2 for ∂μ, 2 for ∂σ); with d coordinates it uses 4·d per
  # sample (Bernoulli 2·d, Categorical K·d + 1, Poisson d + 1). Not "gamma":
  # it differentiates only the rate. Control variates (delta method, exact
  # for quadratic f) and pathwise sampling use n evaluations; the fitted
  # coefficient needs n >= 3. Exact variances: benchmarks/exact_variance_reduction.py.
  EstimatorSpec(
    "measure_valued",
    lambda n: sg.measure_valued(num_samples=max(1, n // 4), per_sample=True),
    frozenset({"normal", "bernoulli", "categorical", "poisson"}),
    "measure_valued",
  ),
  EstimatorSpec(
    "score_function+delta_method",
    lambda n: sg.score_function(
      num_samples=n, per_sample=True, control_variate=sg.control_variates.delta_method()
    ),
    REPARAMETERIZED,
    "score_function",
  ),
  EstimatorSpec(
    "score_function+delta_method(per_coordinate)",
    lambda n: sg.score_function(
      num_samples=max(3, n),
      per_sample=True,
      control_variate=sg.control_variates.delta_method(coefficient="per_coordinate"),
    ),
    REPARAMETERIZED,
    "score_function",
  ),
  EstimatorSpec(
    "pathwise+delta_method",
    lambda n: sg.pathwise(
      num_samples=n, per_sample=True, control_variate=sg.control_variates.delta_method()
    ),
    REPARAMETERIZED,
    "pathwise",
  ),
  EstimatorSpec(
    "pathwise+antithetic",
    lambda n: sg.pathwise(num_samples=max(2, n - n % 2), per_sample=True, sampling="antithetic"),
    frozenset({"normal", "mvn"}),
    "pathwise",
  ),
  EstimatorSpec(
    "pathwise+qmc",
    lambda n: sg.pathwise(num_samples=n, per_sample=True, sampling="qmc"),
    frozenset({"normal", "mvn"}),
    "pathwise",
  ),
  # The 2021-2023 discrete estimators, at n evaluations of f: ReinMax and
  # Gumbel-Rao (biased, "relaxed"; Gumbel-Rao with M = 16 conditional noise
  # draws per sample, which cost softmax Jacobians, not evaluations of f);
  # ARMS with n correlated samples (n >= 2; n = 2 is DisARM); the unordered
  # set estimator with k = n distinct samples (2 <= n <= configurations);
  # RODEO (learned Stein control variates; one gradient of f per sample).
  EstimatorSpec(
    "reinmax(1)",
    lambda n: sg.reinmax(num_samples=n, temperature=1.0, per_sample=True),
    frozenset({"bernoulli"}),
    "relaxed",
  ),
  EstimatorSpec(
    "gumbel_rao(0.5)",
    lambda n: sg.gumbel_rao(num_samples=n, num_inner=16, temperature=0.5, per_sample=True),
    frozenset({"bernoulli"}),
    "relaxed",
  ),
  EstimatorSpec(
    "arms", lambda n: sg.arms(num_samples=max(2, n)), frozenset({"bernoulli"}), "discrete"
  ),
  EstimatorSpec(
    "unordered_set",
    lambda n: sg.unordered_set(num_samples=max(2, n)),
    frozenset({"bernoulli"}),
    "discrete",
  ),
  EstimatorSpec(
    "rodeo",
    lambda n: sg.rodeo(num_samples=max(2, n), hidden_size=8),
    frozenset({"bernoulli"}),
    "discrete",
  ),
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


# Registers the exact variances of the measure-valued, control-variate and
# sampling rows above in benchmarks.quadrature.EXACT (the Mohamed et al. hook).
from benchmarks import exact_variance_reduction as _exact_variance_reduction  # noqa: E402,F401
