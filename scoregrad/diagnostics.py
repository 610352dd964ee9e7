"""Variance diagnostics, returned as arrays (never printed).

All functions take per-sample gradients — a pytree whose leaves have a leading
sample axis, as in ``Estimate.per_sample`` — and reduce over that axis.
"""

from scoregrad._src.diagnostics import (
  BiasReport,
  bias,
  snr,
  standard_error,
  total_variance,
  variance,
)

__all__ = (
  "BiasReport",
  "bias",
  "snr",
  "standard_error",
  "total_variance",
  "variance",
)
