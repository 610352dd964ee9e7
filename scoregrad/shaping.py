"""Fitness shaping for evolution strategies: transforms of the costs of one estimate.

Used through ``scoregrad.with_fitness_shaping(estimator, shaping)`` or its
shorthand ``scoregrad.score_function(..., fitness_shaping=shaping)``. A shaped
gradient is biased for ∇E[f] and unbiased for a shaped objective (see
:mod:`scoregrad._src.shaping`).
"""

from scoregrad._src.shaping import (
  FitnessShaping,
  centered_ranks,
  normalize,
  rank_weights,
  ranks,
  standardize,
)

__all__ = (
  "FitnessShaping",
  "centered_ranks",
  "normalize",
  "rank_weights",
  "ranks",
  "standardize",
)
