"""VIMCO: leave-one-out baselines for multi-sample (importance-weighted) objectives."""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from scoregrad._src import surrogates as _surrogate
from scoregrad._src.base import (
  Estimate,
  GradientEstimator,
  call_dist_fn,
  check_estimate_inputs,
  evaluate_costs,
  finish,
  first_order_only,
  gradient_carrier,
  stateless_init,
)
from scoregrad._src.validation import check_positive_int


def leave_one_out_bounds(log_weights: jax.Array) -> jax.Array:
  """L̂_{−k}: the bound with log w_k replaced by the mean of the others, (K,)."""
  k = log_weights.shape[0]
  others = (jnp.sum(log_weights) - log_weights) / (k - 1)
  replaced = jnp.where(jnp.eye(k, dtype=bool), others[:, None], log_weights[None, :])
  return jax.nn.logsumexp(replaced, axis=1) - math.log(k)


def vimco(*, num_samples: int) -> GradientEstimator:
  r"""VIMCO: the score-function estimator for a K-sample objective, with
  per-sample leave-one-out baselines.

  The objective is the multi-sample bound (for f = log w, e.g. log p(x, z) −
  log q(z) in variational inference)

      L(θ) = E_{x_1..K ~ p(·;θ)}[ L̂ ],   L̂ = log (1/K) Σ_k exp f(x_k),

  and its gradient through the sampling distribution is estimated by

      ĝ = Σ_k (L̂ − L̂_{−k}) ∇θ log p(x_k; θ),
      L̂_{−k} = log (1/K) (Σ_{j≠k} e^{f(x_j)} + e^{f̄_{−k}}),
      f̄_{−k} = (1/(K−1)) Σ_{j≠k} f(x_j),

  unbiased because L̂_{−k} does not depend on x_k. Computed as ``jax.grad``
  of a DiCE surrogate, so it works for any distribution with a
  differentiable ``log_prob`` (discrete or continuous) and any pytree
  ``params``.

  If f itself depends on parameters (the log-weight log p(x, z; φ) −
  log q(z; θ) does), the full gradient adds the pathwise term
  Σ_k w̃_k ∇f(x_k), w̃ = softmax(f(x_1..K)): ``Estimate.value`` (= L̂) is
  differentiable with respect to anything f closes over, with the samples
  held fixed, so ``jax.grad`` of it gives exactly that term. This estimates
  the gradient of the *maximised* bound; negate both for a loss.

  Requirements: log p(x; θ) differentiable in θ; f may be a black box.
  First-order only.

  Args:
    num_samples: K, the samples in the bound (Python int ≥ 2).

  Returns:
    ``GradientEstimator(init, estimate)``; ``estimate(key, f, dist_fn,
    params, state)`` with ``f(x) -> log w(x)`` for one sample.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.vimco(num_samples=8)
    >>> logits = jnp.zeros(3)
    >>> log_w = lambda b: -jnp.sum((b - 0.45) ** 2)
    >>> out = est.estimate(jax.random.key(0), log_w,
    ...                    lambda l: sg.dists.Bernoulli(logits=l), logits,
    ...                    est.init(logits))

  References:
    Mnih & Rezende, "Variational Inference for Monte Carlo Objectives",
    ICML 2016.
  """
  num_samples = check_positive_int(
    "num_samples",
    num_samples,
    minimum=2,
    why="VIMCO's baseline for each sample comes from the other samples.",
  )

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_estimate_inputs(key, f, dist_fn, params)
    samples = jax.lax.stop_gradient(call_dist_fn(dist_fn, params).sample(key, (num_samples,)))
    log_w = evaluate_costs(f, samples, num_samples)
    fixed = jax.lax.stop_gradient(log_w)
    bound = jax.nn.logsumexp(fixed) - math.log(num_samples)
    signal = bound - leave_one_out_bounds(fixed)  # L̂ − L̂_{−k}

    def surrogate(p):
      log_probs = jax.vmap(lambda x: call_dist_fn(dist_fn, p).log_prob(x))(samples)
      # Σ_k □(τ_k) s_k: gradient Σ_k s_k ∇τ_k (s_k held fixed).
      return jnp.sum(_surrogate.dice(log_probs, signal))

    # VIMCO's signals use sample k itself (through L̂), so the DiCE form above is
    # right at first order only: the gradient is marked first-order only and
    # the value carries it.
    grad = first_order_only(jax.grad(surrogate)(params), (params, log_w), "vimco")
    value = (
      jax.nn.logsumexp(log_w)
      - math.log(num_samples)
      + gradient_carrier(params, grad, "vimco", log_w.dtype)
    )
    return finish(value, grad, state, None, costs=log_w)

  return GradientEstimator(init=stateless_init, estimate=estimate)
