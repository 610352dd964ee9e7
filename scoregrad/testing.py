"""Statistical assertions for gradient estimators, with stated false-failure rates.

A Monte Carlo estimate is random, so a test of it can fail by chance. These
helpers derive their tolerance from the standard error and a chosen
false-failure rate α (two-sided, Bonferroni-corrected over all coordinates).
"""

from scoregrad._src.testing import assert_unbiased, assert_variance, z_threshold

__all__ = (
  "assert_unbiased",
  "assert_variance",
  "z_threshold",
)
