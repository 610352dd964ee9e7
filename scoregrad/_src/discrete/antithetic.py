"""Antithetic estimators for Bernoulli and (stick-breaking) Categorical variables: ARM, DisARM."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from scoregrad._src import layers as _layers
from scoregrad._src import scale as _scale
from scoregrad._src.base import (
  Estimate,
  GradientEstimator,
  describe,
  evaluate_costs,
  expand_to,
  finish,
  stateless_init,
)
from scoregrad._src.discrete import logits as _common
from scoregrad._src.validation import check_bool, check_key, check_positive_int

_ALTERNATIVES = (
  "Other estimators for discrete variables: scoregrad.rao_blackwell(num_summed=..., "
  "num_samples=...), scoregrad.rebar(...)/relax(...), or "
  "scoregrad.score_function(num_samples=..., "
  "baseline=scoregrad.baselines.leave_one_out())."
)


_NEEDS = _common.LOGITS_FACTS + ("binary_logits", "from_binary", "binary_reached")


class _Pairs(NamedTuple):
  """Antithetic pairs of the family's bits and how to map back to the logits."""

  u: jax.Array  # (num, *bits) uniforms
  bits: jax.Array  # 1[u < σ(η)]
  anti: jax.Array  # 1[1 − u < σ(η)]
  eta: jax.Array  # the bits' logits η (Bernoulli: the logits)
  reached: jax.Array  # 1 where f can depend on the bit for at least one of the pair
  to_logits: Callable  # η-gradient rows -> logits-gradient rows


def _antithetic_pairs(key, lg, num, sharding=None) -> _Pairs:
  """u ~ U(0,1) over the family's independent bits, and the antithetic pair of bits.

  The bits are Bernoulli(σ(η)), η = ``family.binary_logits(logits)``; f sees
  ``family.from_binary(bits)``. For a bit that neither point of a pair
  reaches (Categorical: both stick-breaking paths stopped earlier) f depends
  on neither bit, and the ARM/DisARM term has conditional mean zero given the
  other bits: it is dropped (Rao-Blackwellisation; Bernoulli reaches every bit).
  """
  family = lg.family
  eta, vjp = jax.vjp(family.binary_logits, lg.logits)
  # Drawn sharded along the pair axis when `sharding` is given; everything
  # below is elementwise in u, so it stays where u lives.
  u = _scale.shard_samples(
    lambda k: _common.uniform(k, (num,) + eta.shape, eta.dtype), sharding, num
  )(key)
  p = jax.nn.sigmoid(eta)
  bits = (u < p).astype(eta.dtype)
  anti = (1.0 - u < p).astype(eta.dtype)
  reached = 1.0 - (1.0 - family.binary_reached(bits)) * (1.0 - family.binary_reached(anti))
  return _Pairs(u, bits, anti, eta, reached, jax.vmap(lambda g: vjp(g)[0]))


def arm(
  *,
  num_samples: int,
  per_sample: bool = False,
  sharding: Optional[Any] = None,
  chunk_size: Optional[int] = None,
  moments: bool = False,
) -> GradientEstimator:
  r"""The augment-REINFORCE-merge (ARM) estimator for factorised Bernoullis and Categoricals.

  For b ~ Bernoulli(σ(α)) with independent coordinates and u ~ U(0, 1)^D,

      ∇α E[f(b)] = E_u[(f(1[u > σ(−α)]) − f(1[u < σ(α)])) (u − ½)],

  elementwise in u, averaged over ``num_samples`` draws of u. Each draw
  evaluates f at an antithetic pair (1 − u gives the first point from the
  second), so an estimate costs 2·num_samples evaluations of f. The gradient
  is estimated for the logits α of ``dist_fn(params)`` and pulled back to
  ``params`` with ``jax.vjp``, so any pytree of parameters works.

  Categorical variables (K categories) are written as K − 1 independent
  stick-breaking bits, bit c ~ Bernoulli(σ(η_c)) meaning "x = c given x ≥ c",
  η_c = ℓ_c − logsumexp(ℓ_{c+1:}), x the first bit that is 1 (K − 1 if
  none), so that x ~ Categorical(softmax(ℓ)) exactly (Dong, Mnih & Tucker
  2021). ARM is applied to the bits, with the terms of bits that neither
  point of a pair reaches (both paths stopped earlier, so f does not depend
  on them; the term has conditional mean zero) dropped, and the η-gradient
  is pulled back to ℓ.

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Bernoulli(logits=
  ...)`` (any event shape; every coordinate independent) or
  ``scoregrad.dists.Categorical(logits=...)`` (independent variables over the
  last axis). f may be a black box; it receives float samples in {0., 1.}
  (Bernoulli) or int32 indices (Categorical). Unbiased; usually beaten by
  :func:`disarm`, which is its Rao-Blackwellisation at the same cost.

  ``Estimate.value`` is the mean of f over all 2·num_samples points; it is
  differentiable with respect to anything f closes over (samples held
  fixed). First-order only: ``Estimate.grad`` is not an unbiased estimate of
  higher derivatives when differentiated again.

  Args:
    num_samples: draws of u per estimate (Python int ≥ 1), each one
      antithetic pair of evaluations of f.
    per_sample: also return each draw's gradient (leading axis num_samples).
    sharding: a ``jax.sharding.Sharding`` of the leading sample axis: the
      uniforms (and so both points of each pair) are generated sharded, see
      :func:`scoregrad.score_function`.
    chunk_size: process the draws of u ``chunk_size`` at a time in a
      ``lax.scan`` (memory O(chunk_size × params)); must divide
      ``num_samples``; chunk c draws with ``jax.random.fold_in(key, c)``, so
      the estimate is the mean over chunks of ``arm(num_samples=chunk_size)``
      under those keys (the same estimator, not the same draws).
    moments: fill ``Estimate.moments`` (:class:`scoregrad.GradientMoments`)
      with the streamed moments of the per-draw gradients.

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
    Binary Networks", ICLR 2019. Dong, Mnih & Tucker, "Coupled Gradient
    Estimators for Discrete Latent Variables", NeurIPS 2021 (categorical).
  """
  num_samples = check_positive_int("num_samples", num_samples)
  per_sample = check_bool("per_sample", per_sample)
  sharding = _scale.check_sharding(sharding, num_samples)

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_key(key)
    lg = _common.logits_and_pullback(
      dist_fn, params, estimator="arm", needs=_NEEDS, alternatives=_ALTERNATIVES
    )
    # u ~ U(0,1); 1[u > σ(−η)] = 1[1 − u < σ(η)] is the antithetic point.
    pr = _antithetic_pairs(key, lg, num_samples, sharding)
    f_anti, f_b = _scale.constrain(
      (
        evaluate_costs(f, lg.family.from_binary(pr.anti), dtype=lg.logits.dtype),
        evaluate_costs(f, lg.family.from_binary(pr.bits), dtype=lg.logits.dtype),
      ),
      sharding,
      num_samples,
    )
    diff = jax.lax.stop_gradient(f_anti - f_b)
    per_logits = pr.to_logits(expand_to(diff, pr.u) * (pr.u - 0.5) * pr.reached)
    pair_values = 0.5 * (f_b + f_anti)
    grad, per, value = _common.finish(
      lg, per_logits, per_sample, jnp.mean(pair_values), (f_b, f_anti)
    )
    return finish(value, grad, state, per, per_sample_values=pair_values)

  rebuild = _layers.rebuilder(
    arm, num_samples=num_samples, per_sample=per_sample, sharding=sharding
  )

  traits = _layers.resizable(
    f"arm(num_samples={num_samples})",
    num_samples=num_samples,
    rebuild=rebuild,
    per_sample=per_sample,
    sharding=sharding,
  )
  core = describe(GradientEstimator(init=stateless_init, estimate=estimate), traits)
  return _layers.shorthands(core, chunk_size=chunk_size, moments=moments)


def disarm(
  *,
  num_pairs: int,
  per_sample: bool = False,
  sharding: Optional[Any] = None,
  chunk_size: Optional[int] = None,
  moments: bool = False,
) -> GradientEstimator:
  r"""The DisARM estimator (ARM, Rao-Blackwellised) for Bernoullis and Categoricals.

  With u ~ U(0, 1)^D, b = 1[u < σ(α)] and its antithetic b̃ = 1[1 − u <
  σ(α)] (both Bernoulli(σ(α)), coupled), coordinate i of the gradient with
  respect to the logits α is estimated by ::

      ĝ_i = ½ (f(b) − f(b̃)) (−1)^{b̃_i} 1[b_i ≠ b̃_i] σ(|α_i|),

  which is ARM's estimator with u integrated out given (b, b̃); averaged over
  ``num_pairs`` independent pairs (2·num_pairs evaluations of f). Never more
  variance than ARM, and zero contribution from coordinates where the pair
  agrees. Pulled back to ``params`` with ``jax.vjp``.

  Categorical variables use the stick-breaking coupling of Dong, Mnih &
  Tucker (2021): x ~ Categorical(softmax(ℓ)) is the first 1 among K − 1
  independent bits Bernoulli(σ(η_c)), η_c = ℓ_c − logsumexp(ℓ_{c+1:}) (K − 1
  if none); the pair of bit vectors (b, b̃) gives a coupled pair of
  categorical samples, ĝ above is computed for η, bits that neither sample
  reaches (both stopped earlier: f depends on neither, so the term has
  conditional mean zero) are dropped, and the result is pulled back to ℓ.
  Unbiased for Categorical exactly as for Bernoulli (it is DisARM for the
  function of the bits f(x(b))); the order of the categories
  affects the variance, not the mean.

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Bernoulli(logits=
  ...)`` or ``scoregrad.dists.Categorical(logits=...)``. f may be a black
  box; it receives float samples in {0., 1.} (Bernoulli) or int32 indices
  (Categorical). Unbiased.

  ``Estimate.value`` is the mean of f over all 2·num_pairs points,
  differentiable with respect to anything f closes over. First-order only.

  Args:
    num_pairs: antithetic pairs per estimate (Python int ≥ 1).
    per_sample: also return each pair's gradient (leading axis num_pairs).
    sharding: a ``jax.sharding.Sharding`` of the leading (pair) axis; its
      size must divide ``num_pairs``. See :func:`scoregrad.score_function`.
    chunk_size: process the pairs ``chunk_size`` at a time in a
      ``lax.scan`` (memory O(chunk_size × params)); counted in pairs, it
      must divide ``num_pairs``; chunk c draws with
      ``jax.random.fold_in(key, c)``, so the estimate is the mean over chunks
      of ``disarm(num_pairs=chunk_size)`` under those keys (the same
      estimator, not the same pairs).
    moments: fill ``Estimate.moments`` (:class:`scoregrad.GradientMoments`)
      with the streamed moments of the per-pair gradients.

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
    Binary Latent Variables", NeurIPS 2020; Dong, Mnih & Tucker, "Coupled
    Gradient Estimators for Discrete Latent Variables", NeurIPS 2021
    (categorical, stick-breaking).
  """
  num_pairs = check_positive_int(
    "num_pairs", num_pairs, why="DisARM needs at least one antithetic pair (two evaluations of f)."
  )
  per_sample = check_bool("per_sample", per_sample)
  sharding = _scale.check_sharding(sharding, num_pairs)

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_key(key)
    lg = _common.logits_and_pullback(
      dist_fn, params, estimator="disarm", needs=_NEEDS, alternatives=_ALTERNATIVES
    )
    pr = _antithetic_pairs(key, lg, num_pairs, sharding)
    b, b_tilde = pr.bits, pr.anti
    f_b, f_tilde = _scale.constrain(
      (
        evaluate_costs(f, lg.family.from_binary(b), dtype=lg.logits.dtype),
        evaluate_costs(f, lg.family.from_binary(b_tilde), dtype=lg.logits.dtype),
      ),
      sharding,
      num_pairs,
    )
    per_logits = pr.to_logits(disarm_rows(f_b - f_tilde, b, b_tilde, pr.eta) * pr.reached)
    pair_values = 0.5 * (f_b + f_tilde)
    grad, per, value = _common.finish(
      lg, per_logits, per_sample, jnp.mean(pair_values), (f_b, f_tilde)
    )
    return finish(value, grad, state, per, per_sample_values=pair_values)

  rebuild = _layers.rebuilder(disarm, num_pairs=num_pairs, per_sample=per_sample, sharding=sharding)

  traits = _layers.resizable(
    f"disarm(num_pairs={num_pairs})",
    num_samples=num_pairs,
    samples_name="num_pairs",
    rebuild=rebuild,
    per_sample=per_sample,
    sharding=sharding,
  )
  core = describe(GradientEstimator(init=stateless_init, estimate=estimate), traits)
  return _layers.shorthands(core, chunk_size=chunk_size, moments=moments)


def disarm_rows(diff: jax.Array, b: jax.Array, b_tilde: jax.Array, eta: jax.Array) -> jax.Array:
  """DisARM's gradient rows for the logits η of independent bits, from antithetic pairs.

  ĝ_i = ½ (f(b) − f(b̃)) (−1)^{b̃_i} 1[b_i ≠ b̃_i] σ(|η_i|) (Dong et al. 2020),
  for pairs b = 1[u < σ(η)], b̃ = 1[1 − u < σ(η)]. Everything is held fixed
  (stop-gradient): the rows are the estimate, to be carried to the parameters.

  Args:
    diff: (n, ...) f(b) − f(b̃) per pair (leading axes of ``b``).
    b, b_tilde: the pairs' bits, shape (n, ..., *bits).
    eta: the bits' logits, broadcastable to ``b``.

  Returns:
    Rows of ``b``'s shape.
  """
  diff, b, b_tilde, eta = jax.lax.stop_gradient((diff, b, b_tilde, eta))
  sign = 1.0 - 2.0 * b_tilde  # (−1)^{b̃_i}
  differ = (b != b_tilde).astype(b.dtype)  # 1[b_i ≠ b̃_i]
  return 0.5 * expand_to(diff, b) * sign * differ * jax.nn.sigmoid(jnp.abs(eta))
