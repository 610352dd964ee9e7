"""Sequence helpers for policy gradients (batch-major (n, T), costs, masks).

Use them around ``scoregrad.score_function_surrogate`` on (n, T) inputs:
``discounted_returns`` is the cost-to-go that the causal gradient credits each
action with; ``lambda_returns`` and ``generalized_advantage_estimation`` give
actor-critic targets and advantages. Names follow rlax. For language-model RL
(G sampled completions per prompt, group-major): ``group_advantages`` (RLOO,
GRPO, Dr. GRPO) and ``kl_penalty`` (k1, k2, k3), each documented with the
gradient it estimates.
"""

from scoregrad._src.rl import discounted_returns, generalized_advantage_estimation, lambda_returns
from scoregrad._src.rl_lm import group_advantages, kl_penalty

__all__ = (
  "discounted_returns",
  "generalized_advantage_estimation",
  "group_advantages",
  "kl_penalty",
  "lambda_returns",
)
