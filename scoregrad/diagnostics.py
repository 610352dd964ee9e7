"""Variance diagnostics, returned as arrays (never printed).

All functions take per-sample gradients — a pytree whose leaves have a leading
sample axis, as in ``Estimate.per_sample`` — and reduce over that axis.
"""

from scoregrad._src.diagnostics import BiasReport
from scoregrad._src.diagnostics import bias
from scoregrad._src.diagnostics import snr
from scoregrad._src.diagnostics import standard_error
from scoregrad._src.diagnostics import total_variance
from scoregrad._src.diagnostics import variance

__all__ = (
    "BiasReport",
    "bias",
    "snr",
    "standard_error",
    "total_variance",
    "variance",
)
