"""Baselines: variance reduction for score-function estimators.

A baseline b subtracted from the cost leaves the estimator unbiased when b does
not depend on the sample it multiplies, since E[b ∇θ log p(x; θ)] = b ∇θ ∫p = 0.
Pass one to ``score_function(..., baseline=...)``, ``expectation(...,
baseline=...)``, ``rao_blackwell(..., baseline=...)`` or
``score_function_surrogate(..., baseline=...)``; stateful baselines keep their
state inside the estimator state.
"""

from scoregrad._src.baselines import (
  Baseline,
  LearnedState,
  MovingAverageState,
  constant,
  learned,
  leave_one_out,
  moving_average,
  none,
  optimal,
)

__all__ = (
  "Baseline",
  "LearnedState",
  "MovingAverageState",
  "constant",
  "learned",
  "leave_one_out",
  "moving_average",
  "none",
  "optimal",
)
