"""Drop-in replacement for optax 0.1.8's ``optax.monte_carlo`` (removed in optax 0.2.7).

Change only the import::

    # from optax import monte_carlo
    from scoregrad.compat import optax_monte_carlo as monte_carlo

See :mod:`scoregrad._src.optax_compat` for the semantics of each function.
"""

from scoregrad._src.optax_compat import (
  MultiNormalDiagFromLogScale,
  control_delta_method,
  control_variates_jacobians,
  estimate_control_variate_coefficients,
  measure_valued_jacobians,
  moving_avg_baseline,
  multi_normal,
  pathwise_jacobians,
  score_function_jacobians,
)

__all__ = (
  "MultiNormalDiagFromLogScale",
  "control_delta_method",
  "control_variates_jacobians",
  "estimate_control_variate_coefficients",
  "measure_valued_jacobians",
  "moving_avg_baseline",
  "multi_normal",
  "pathwise_jacobians",
  "score_function_jacobians",
)
