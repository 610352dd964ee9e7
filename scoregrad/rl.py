"""Sequence helpers for policy gradients (batch-major (n, T), costs, masks).

Use them around ``scoregrad.score_function_surrogate`` on (n, T) inputs:
``discounted_returns`` is the cost-to-go that the causal gradient credits each
action with; ``lambda_returns`` and ``generalized_advantage_estimation`` give
actor-critic targets and advantages. Names follow rlax.
"""

from scoregrad._src.rl import discounted_returns, generalized_advantage_estimation, lambda_returns

__all__ = (
  "discounted_returns",
  "generalized_advantage_estimation",
  "lambda_returns",
)
