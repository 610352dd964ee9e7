r"""Control variates: variance reduction with a function of known expectation.

For a control variate h with E_{p(x;θ)}[h] known in closed form and any
coefficient β, ∇θ E[f] = ∇θ E[f − β h] + β ∇θ E[h]. :func:`with_control_variate`
applies that identity to ANY :class:`scoregrad.GradientEstimator`; the
``control_variate=`` keyword of ``score_function``, ``pathwise`` and
``measure_valued`` is a shorthand for it.
"""

from scoregrad._src.control_variates import (
  ControlVariate,
  ControlVariateState,
  delta_method,
  from_functions,
  leave_one_out_coefficients,
)
from scoregrad._src.variance_reduction import with_control_variate

__all__ = (
  "ControlVariate",
  "ControlVariateState",
  "delta_method",
  "from_functions",
  "leave_one_out_coefficients",
  "with_control_variate",
)
