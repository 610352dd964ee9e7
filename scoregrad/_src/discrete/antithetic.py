"""Antithetic estimators for Bernoulli variables: ARM and DisARM."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from scoregrad._src.base import (Estimate, GradientEstimator, evaluate_costs, expand_to,
                                 stateless_init,
                                 finish)
from scoregrad._src.discrete import logits as _common
from scoregrad._src.validation import check_bool, check_key, check_positive_int

_CATEGORICAL_ALTERNATIVES = (
    "For categorical variables use scoregrad.rao_blackwell(num_summed=..., "
    "num_samples=...), scoregrad.rebar(...)/relax(...), or "
    "scoregrad.score_function(num_samples=..., "
    "baseline=scoregrad.baselines.leave_one_out()).")


_NEEDS = _common.LOGITS_FACTS + ("antithetic_pair",)


def _antithetic_pair(key, lg, num):
  """u ~ U(0,1)^{num×D} and the family's antithetic pair of samples from it."""
  u = _common.uniform(key, (num,) + lg.logits.shape, lg.logits.dtype)
  b, b_tilde = lg.family.antithetic_pair(u, lg.logits)
  return u, b, b_tilde


def arm(*, num_samples: int, per_sample: bool = False) -> GradientEstimator:
  r"""The augment-REINFORCE-merge (ARM) estimator for factorised Bernoullis.

  For b ~ Bernoulli(σ(α)) with independent coordinates and u ~ U(0, 1)^D,

      ∇α E[f(b)] = E_u[(f(1[u > σ(−α)]) − f(1[u < σ(α)])) (u − ½)],

  elementwise in u, averaged over ``num_samples`` draws of u. Each draw
  evaluates f at an antithetic pair (1 − u gives the first point from the
  second), so an estimate costs 2·num_samples evaluations of f. The gradient
  is estimated for the logits α of ``dist_fn(params)`` and pulled back to
  ``params`` with ``jax.vjp``, so any pytree of parameters works.

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Bernoulli(logits=
  ...)`` (any event shape; every coordinate independent). f may be a black
  box; it receives float samples in {0., 1.}. Unbiased; usually beaten by
  :func:`disarm`, which is its Rao-Blackwellisation at the same cost.

  ``Estimate.value`` is the mean of f over all 2·num_samples points; it is
  differentiable with respect to anything f closes over (samples held
  fixed). First-order only: ``Estimate.grad`` is not an unbiased estimate of
  higher derivatives when differentiated again.

  Args:
    num_samples: draws of u per estimate (Python int ≥ 1), each one
      antithetic pair of evaluations of f.
    per_sample: also return each draw's gradient (leading axis num_samples).

  Returns:
    ``GradientEstimator(init, estimate)``; ``estimate(key, f, dist_fn,
    params, state) -> Estimate``.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.arm(num_samples=16)
    >>> logits = jnp.zeros(3)
    >>> out = est.estimate(jax.random.key(0), lambda b: jnp.sum((b - 0.45) ** 2),
    ...                    lambda l: sg.dists.Bernoulli(logits=l), logits,
    ...                    est.init(logits))

  References:
    Yin & Zhou, "ARM: Augment-REINFORCE-Merge Gradient for Stochastic
    Binary Networks", ICLR 2019.
  """
  num_samples = check_positive_int("num_samples", num_samples)
  per_sample = check_bool("per_sample", per_sample)

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_key(key)
    lg = _common.logits_and_pullback(dist_fn, params, estimator="arm", needs=_NEEDS,
                                     alternatives=_CATEGORICAL_ALTERNATIVES)
    # u ~ U(0,1); 1[u > σ(−α)] = 1[1 − u < σ(α)] is the antithetic point.
    u, b, b_anti = _antithetic_pair(key, lg, num_samples)
    f_anti = evaluate_costs(f, b_anti, dtype=lg.logits.dtype)
    f_b = evaluate_costs(f, b, dtype=lg.logits.dtype)
    diff = jax.lax.stop_gradient(f_anti - f_b)
    per_logits = expand_to(diff, u) * (u - 0.5)
    grad, per, value = _common.finish(lg, per_logits, per_sample,
                                      jnp.mean(0.5 * (f_b + f_anti)), (f_b, f_anti))
    return finish(value, grad, state, per)

  return GradientEstimator(init=stateless_init, estimate=estimate)


def disarm(*, num_pairs: int, per_sample: bool = False) -> GradientEstimator:
  r"""The DisARM estimator for factorised Bernoullis (ARM, Rao-Blackwellised).

  With u ~ U(0, 1)^D, b = 1[u < σ(α)] and its antithetic b̃ = 1[1 − u <
  σ(α)] (both Bernoulli(σ(α)), coupled), coordinate i of the gradient with
  respect to the logits α is estimated by

      ĝ_i = ½ (f(b) − f(b̃)) (−1)^{b̃_i} 1[b_i ≠ b̃_i] σ(|α_i|),

  which is ARM's estimator with u integrated out given (b, b̃); averaged over
  ``num_pairs`` independent pairs (2·num_pairs evaluations of f). Never more
  variance than ARM, and zero contribution from coordinates where the pair
  agrees. Pulled back to ``params`` with ``jax.vjp``.

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Bernoulli(logits=
  ...)``. f may be a black box; it receives float samples in {0., 1.}.
  Unbiased. The categorical extension of DisARM is not implemented (it is
  not exact in the simple form); categorical variables raise an error that
  lists alternatives.

  ``Estimate.value`` is the mean of f over all 2·num_pairs points,
  differentiable with respect to anything f closes over. First-order only.

  Args:
    num_pairs: antithetic pairs per estimate (Python int ≥ 1).
    per_sample: also return each pair's gradient (leading axis num_pairs).

  Returns:
    ``GradientEstimator(init, estimate)``.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.disarm(num_pairs=8)
    >>> params = {"w": jnp.ones((2, 3))}
    >>> dist_fn = lambda p: sg.dists.Bernoulli(logits=jnp.sum(p["w"], 0))
    >>> out = est.estimate(jax.random.key(0), lambda b: jnp.sum((b - 0.45) ** 2),
    ...                    dist_fn, params, est.init(params))

  References:
    Dong, Mnih & Tucker, "DisARM: An Antithetic Gradient Estimator for
    Binary Latent Variables", NeurIPS 2020.
  """
  num_pairs = check_positive_int(
      "num_pairs", num_pairs,
      why="DisARM needs at least one antithetic pair (two evaluations of f).")
  per_sample = check_bool("per_sample", per_sample)

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_key(key)
    lg = _common.logits_and_pullback(dist_fn, params, estimator="disarm", needs=_NEEDS,
                                     alternatives=_CATEGORICAL_ALTERNATIVES)
    _, b, b_tilde = _antithetic_pair(key, lg, num_pairs)
    f_b = evaluate_costs(f, b, dtype=lg.logits.dtype)
    f_tilde = evaluate_costs(f, b_tilde, dtype=lg.logits.dtype)
    diff = jax.lax.stop_gradient(f_b - f_tilde)
    sign = 1.0 - 2.0 * b_tilde                       # (−1)^{b̃_i}
    differ = (b != b_tilde).astype(lg.logits.dtype)  # 1[b_i ≠ b̃_i]
    weight = jax.nn.sigmoid(jnp.abs(lg.logits))      # σ(|α_i|)
    per_logits = 0.5 * expand_to(diff, b) * sign * differ * weight
    grad, per, value = _common.finish(lg, per_logits, per_sample,
                                      jnp.mean(0.5 * (f_b + f_tilde)), (f_b, f_tilde))
    return finish(value, grad, state, per)

  return GradientEstimator(init=stateless_init, estimate=estimate)
