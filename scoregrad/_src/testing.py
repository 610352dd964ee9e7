"""Statistical assertions for gradient estimators, with stated false-failure rates.

A Monte Carlo estimate is random, so a test of it can fail by chance. These
helpers derive their tolerance from the standard error and a chosen
false-failure rate α (two-sided, Bonferroni-corrected over all coordinates):
a correct estimator fails with probability at most about α for any key
(asymptotically, by the central limit theorem).
"""

from __future__ import annotations

import statistics
from typing import Any, Optional

import jax
import numpy as np

PyTree = Any


def z_threshold(false_failure_rate: float, num_comparisons: int = 1) -> float:
  """Two-sided normal quantile for rate α shared over ``num_comparisons`` tests."""
  if not 0 < false_failure_rate < 1:
    raise ValueError(f"`false_failure_rate` must be in (0, 1); got {false_failure_rate}.")
  # The standard library's normal quantile: importing scipy.stats here cost
  # about 3 s of `import scoregrad`.
  return -statistics.NormalDist().inv_cdf(false_failure_rate / (2 * num_comparisons))


def _flat(tree: PyTree) -> list[np.ndarray]:
  return [np.asarray(x, dtype=np.float64) for x in jax.tree_util.tree_leaves(tree)]


def assert_unbiased(
  per_sample: PyTree,
  exact: PyTree,
  *,
  false_failure_rate: float = 1e-6,
  exact_variance: Optional[PyTree] = None,
  rtol: float = 0.0,
) -> None:
  """Asserts mean(per_sample) ≈ exact within z·SE (+ ``rtol·|exact|``) for every coordinate.

  Args:
    per_sample: pytree of independent draws of an unbiased estimator, leading
      axis = draws (e.g. ``Estimate.per_sample``, or grads from many keys).
    exact: the exact gradient, same structure without the leading axis.
    false_failure_rate: probability that a correct estimator fails.
    exact_variance: per-draw variance if known exactly (else estimated).
    rtol: extra slack relative to ``|exact|`` for floating-point rounding, for
      estimators whose variance can be (nearly) zero, where z·SE alone would
      test rounding rather than bias (e.g. 1e-5 in float32). Default 0.

  Raises:
    AssertionError: listing the coordinates outside tolerance.
  """
  draws = _flat(per_sample)
  exacts = _flat(exact)
  if len(draws) != len(exacts):
    raise ValueError("`per_sample` and `exact` must have the same pytree structure.")
  variances = (
    _flat(exact_variance)
    if exact_variance is not None
    else [np.var(d, axis=0, ddof=1) for d in draws]
  )
  total = sum(e.size for e in exacts)
  z = z_threshold(false_failure_rate, total)
  failures = []
  for i, (d, e, v) in enumerate(zip(draws, exacts, variances)):
    n = d.shape[0]
    se = np.sqrt(np.broadcast_to(v, e.shape) / n)
    err = np.abs(d.mean(axis=0) - e)
    bad = err > z * se + rtol * np.abs(e) + 1e-12
    if np.any(bad):
      failures.append(
        f"leaf {i}: mean {d.mean(axis=0)[bad]} vs exact {np.broadcast_to(e, bad.shape)[bad]}"
        f" (|error| {err[bad]} > {z:.2f} x SE {se[bad]})"
      )
  if failures:
    raise AssertionError(
      f"Estimator looks biased (false-failure rate {false_failure_rate:g}, "
      f"{total} coordinates):\n" + "\n".join(failures)
    )


def assert_variance(
  per_sample: PyTree, exact_variance: PyTree, *, false_failure_rate: float = 1e-6
) -> None:
  """Asserts the sample variance of the draws matches ``exact_variance``.

  The standard error of the sample variance s² is estimated from the fourth
  central moment, SE ≈ sqrt((m4 − s⁴) / n); it is itself random, so heavy
  tails call for many draws.
  """
  draws = _flat(per_sample)
  exacts = _flat(exact_variance)
  total = sum(e.size for e in exacts)
  z = z_threshold(false_failure_rate, total)
  failures = []
  for i, (d, e) in enumerate(zip(draws, exacts)):
    n = d.shape[0]
    centred = d - d.mean(axis=0)
    s2 = np.mean(centred**2, axis=0) * n / (n - 1)
    m4 = np.mean(centred**4, axis=0)
    se = np.sqrt(np.maximum(m4 - s2**2, 0.0) / n)
    err = np.abs(s2 - e)
    bad = err > z * se + 1e-12 * (1 + np.abs(e))
    if np.any(bad):
      failures.append(
        f"leaf {i}: variance {s2[bad]} vs exact {np.broadcast_to(e, bad.shape)[bad]}"
        f" (|error| {err[bad]} > {z:.2f} x SE {se[bad]})"
      )
  if failures:
    raise AssertionError(
      f"Variance mismatch (false-failure rate {false_failure_rate:g}):\n" + "\n".join(failures)
    )
