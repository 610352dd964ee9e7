"""Exact gradients of expectations over small discrete spaces, by enumeration."""

from __future__ import annotations

import math
import os
from typing import Callable

import jax
import jax.numpy as jnp

from scoregrad._src.base import (
  Estimate,
  GradientEstimator,
  call_dist_fn,
  check_cost,
  evaluate_costs,
  finish,
  one_sample,
  stateless_init,
)
from scoregrad._src.discrete import logits as _common
from scoregrad._src.validation import check_key, check_positive_int

_CHUNK = 4096


def _memory_limit() -> int:
  """Bytes the enumeration may use: half the default device's memory
  (``bytes_limit`` where the backend reports it, else physical RAM)."""
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  (backends without stats)
    stats = {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"]) // 2
  return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def _check_memory(n: int, size: int) -> None:
  """Refuses, before allocating anything, an enumeration that cannot fit.

  Counts 8 bytes per logit per configuration (the 64-bit digits the
  enumeration is built from, at least as large as the configurations
  themselves) plus 24 per configuration for costs and weights.
  """
  needed = n * (8 * size + 24)
  limit = _memory_limit()
  if needed > limit:
    raise ValueError(
      f"`exact` would need about {needed / 2**30:,.1f} GiB to enumerate {n:,} "
      f"configurations, more than the {limit / 2**30:,.1f} GiB it allows itself "
      "(half of this device's memory). Use a sampling estimator: "
      "scoregrad.rao_blackwell(num_summed=..., num_samples=...), "
      "scoregrad.disarm(num_pairs=...) for Bernoulli, or "
      "scoregrad.score_function(num_samples=..., "
      "baseline=scoregrad.baselines.leave_one_out())."
    )


def exact(*, max_configurations: int = 2**16) -> GradientEstimator:
  r"""The exact gradient, by enumerating every configuration (zero variance).

  For a discrete distribution over a finite set 𝒳,

      E[f] = Σ_{x ∈ 𝒳} p(x; α) f(x),   ∇α E[f] = Σ_{x ∈ 𝒳} f(x) ∇α p(x; α),

  computed exactly (up to floating point) by differentiating
  Σ_x p(x; θ) f(x) with respect to ``params`` (f held fixed). This is the oracle the tests and benchmarks compare the
  sampling estimators against. f is evaluated once per configuration (in
  chunks of 4096), so the cost grows as 2^D for D bits.

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Bernoulli(logits=
  ...)`` or ``scoregrad.dists.Categorical(logits=...)`` with at most
  ``max_configurations`` configurations (checked from shapes, so under
  ``jit`` too). f may be a black box; it receives samples as
  ``score_function`` gives them (floats in {0., 1.} for Bernoulli, int32
  indices for Categorical).

  ``Estimate.value`` is E[f] exactly and is differentiable with respect to
  anything f closes over. ``Estimate.grad`` is itself differentiable with
  respect to ``params``: ``jax.jacobian`` of it gives the exact Hessian.

  Args:
    max_configurations: the largest space it will enumerate (Python int).

  Returns:
    ``GradientEstimator(init, estimate)``; the key is accepted and unused.

  Raises:
    ValueError: at ``estimate``, if the space is larger than
      ``max_configurations`` (saying how large and what to use instead).

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.exact()
    >>> logits = jnp.array([0.3, -0.7, 1.2])
    >>> out = est.estimate(jax.random.key(0), lambda b: jnp.mean((b - 0.45) ** 2),
    ...                    lambda l: sg.dists.Bernoulli(logits=l), logits,
    ...                    est.init(logits))
    >>> # out.grad == σ'(logits) (1 − 2·0.45) / 3
  """
  max_configurations = check_positive_int("max_configurations", max_configurations)

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    check_key(key)
    lg = _common.logits_and_pullback(dist_fn, params, estimator="exact")
    family, logits = lg.family, lg.logits
    n = family.num_configurations(logits.shape)
    if n > max_configurations:
      raise ValueError(
        f"`exact` would enumerate {family.describe_configurations(logits.shape)}, more than "
        f"max_configurations={max_configurations:,}. Use a sampling estimator "
        "instead: scoregrad.rao_blackwell(num_summed=..., num_samples=...) "
        "(sums the most probable configurations exactly), "
        "scoregrad.disarm(num_pairs=...) for Bernoulli, or "
        "scoregrad.score_function(num_samples=..., "
        "baseline=scoregrad.baselines.leave_one_out()). If f is cheap and "
        f"memory allows, raise it: exact(max_configurations={n})."
      )
    _check_memory(n, math.prod(logits.shape))
    configs = family.enumerate_configurations(logits.shape, logits.dtype)
    if n <= _CHUNK:
      costs = evaluate_costs(f, configs, dtype=logits.dtype)
    else:
      check_cost(f, one_sample(configs), where="exact evaluates f at every configuration")
      costs = jax.lax.map(
        lambda x: jnp.asarray(f(x)).astype(logits.dtype), configs, batch_size=_CHUNK
      )
    fixed_costs = jax.lax.stop_gradient(costs)
    infinite = jnp.isinf(fixed_costs)

    def expectation(p):
      # Differentiated with respect to params directly (not through the
      # stop-gradient logits) so that the gradient is differentiable again.
      probs = jnp.exp(call_dist_fn(dist_fn, p).log_prob(configs))
      # A configuration of probability exactly 0 contributes 0 to E[f] and to
      # every derivative (its probability's derivatives are 0 too), even at an
      # infinite cost, where 0·∞ would be NaN. (A NaN cost stays NaN.)
      skip = infinite & (jax.lax.stop_gradient(probs) == 0)
      return jnp.sum(probs * jnp.where(skip, 0, fixed_costs)), (probs, skip)

    (expected, (probs, skip)), grad = jax.value_and_grad(expectation, has_aux=True)(params)
    # Exact at every order: `expected` in params (one log_prob pass serves
    # value and gradient), the second term in what f closes over, with the
    # probabilities live so that the cross terms ∇p ∇cᵀ of a cost that closes
    # over params are kept (with ⊥p its Hessian lost them).
    live_costs = jnp.where(skip, 0, costs)
    closed_over = live_costs - jax.lax.stop_gradient(live_costs)
    value = expected + jnp.sum(probs * closed_over)
    return finish(value, grad, state, None)

  return GradientEstimator(init=stateless_init, estimate=estimate)
