"""Variance diagnostics, returned as arrays (never printed).

All functions take per-sample gradients — a pytree whose leaves have a leading
sample axis, as in ``Estimate.per_sample`` — and reduce over that axis, or
the streamed :class:`~scoregrad.GradientMoments` of ``Estimate.moments``
(from an estimator built with ``moments=True``, e.g. with ``chunk_size=``),
which give the same numbers without the num_samples × params rows.
"""

from __future__ import annotations

import typing
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from scoregrad._src.base import GradientMoments

PyTree = Any


def _moments(per_sample: PyTree, name: str = "per_sample") -> GradientMoments:
  """``per_sample`` as GradientMoments (computed from rows, or passed through)."""
  if isinstance(per_sample, GradientMoments):
    return per_sample
  _check_leading(per_sample, name)
  n = jax.tree_util.tree_leaves(per_sample)[0].shape[0]
  mean = jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=0), per_sample)
  return GradientMoments(n, mean, None)


def _check_leading(tree: PyTree, name: str) -> int:
  leaves = jax.tree_util.tree_leaves(tree)
  if not leaves:
    raise ValueError(
      f"`{name}` is an empty pytree; pass Estimate.per_sample "
      "from an estimator built with per_sample=True."
    )
  n = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
  if None in n or len(n) != 1:
    raise ValueError(
      f"Every leaf of `{name}` needs the same leading sample axis; got leading "
      f"sizes {sorted(map(str, n))}. Did you pass Estimate.grad instead of "
      "Estimate.per_sample?"
    )
  (size,) = typing.cast(set[int], n)  # None was ruled out above
  if size < 2:
    raise ValueError(f"`{name}` needs at least 2 samples to estimate a variance; got {size}.")
  return size


def variance(per_sample: PyTree) -> PyTree:
  """Unbiased per-coordinate variance of ONE sample's gradient estimate.

  The variance of the mean over n independent samples is this divided by n.
  ``per_sample`` may also be ``Estimate.moments`` (then m2 / (count − 1)).
  """
  if isinstance(per_sample, GradientMoments):
    return jax.tree_util.tree_map(
      lambda m2: m2 / (per_sample.count - 1).astype(m2.dtype), per_sample.m2
    )
  _check_leading(per_sample, "per_sample")
  return jax.tree_util.tree_map(lambda g: jnp.var(g, axis=0, ddof=1), per_sample)


def standard_error(per_sample: PyTree) -> PyTree:
  """Standard error of the mean of the per-sample gradients, per coordinate."""
  n: Any
  if isinstance(per_sample, GradientMoments):
    n = per_sample.count
  else:
    n = _check_leading(per_sample, "per_sample")
  return jax.tree_util.tree_map(
    lambda v: jnp.sqrt(v / jnp.asarray(n, v.dtype)), variance(per_sample)
  )


def snr(per_sample: PyTree) -> PyTree:
  """Per-sample signal-to-noise ratio ``|E[g]| / std[g]``, per coordinate.

  References:
    Rainforth et al., "Tighter Variational Bounds are Not Necessarily Better",
    ICML 2018.
  """
  if isinstance(per_sample, GradientMoments):
    return jax.tree_util.tree_map(
      lambda m, v: jnp.abs(m) / jnp.sqrt(v), per_sample.mean, variance(per_sample)
    )
  _check_leading(per_sample, "per_sample")
  return jax.tree_util.tree_map(
    lambda g: jnp.abs(jnp.mean(g, axis=0)) / jnp.std(g, axis=0, ddof=1), per_sample
  )


class BiasReport(NamedTuple):
  """Empirical bias of a gradient estimator against an exact gradient.

  Attributes:
    bias: mean(per_sample) − exact, per coordinate.
    standard_error: standard error of that mean.
    z: bias / standard_error.
  """

  bias: PyTree
  standard_error: PyTree
  z: PyTree


def bias(per_sample: PyTree, exact: PyTree) -> BiasReport:
  """Bias of the per-sample gradient estimates against ``exact``, with its SE."""
  se = standard_error(per_sample)
  b = jax.tree_util.tree_map(lambda m, e: m - e, _moments(per_sample).mean, exact)
  z = jax.tree_util.tree_map(lambda bi, s: bi / s, b, se)
  return BiasReport(bias=b, standard_error=se, z=z)


def total_variance(per_sample: PyTree) -> jax.Array:
  """Sum of per-coordinate variances (trace of the covariance) of one sample."""
  return jnp.asarray(sum(jnp.sum(v) for v in jax.tree_util.tree_leaves(variance(per_sample))))
