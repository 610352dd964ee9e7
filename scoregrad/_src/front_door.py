"""The differentiable front door: ``expectation``."""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from scoregrad import dists as _dists
from scoregrad._src import baselines as _baselines
from scoregrad._src import scale as _scale
from scoregrad._src import surrogates as _surrogate
from scoregrad._src.base import (
  evaluate_costs,
  first_order_only,
  gradient_carrier,
)
from scoregrad._src.validation import check_key, check_positive_int
from scoregrad.dists._base import check_reparameterized

ESTIMATORS = ("score_function", "pathwise")


def expectation(
  f: Callable[[jax.Array], jax.Array],
  dist: Any,
  key: jax.Array,
  *,
  num_samples: int,
  estimator: str = "score_function",
  baseline: Optional[_baselines.Baseline] = None,
  sharding: Optional[Any] = None,
  chunk_size: Optional[int] = None,
) -> jax.Array:
  """A scalar whose value is the MC mean of f and whose derivatives estimate ∇E[f].

  Use it inside any loss: ``jax.grad`` of the result is the chosen estimator,
  ``jax.hessian`` (for ``"score_function"``) an unbiased second-order estimate
  (DiCE). ``f`` may close over the parameters being differentiated: its
  pathwise term is then included.

  Args:
    f: ``f(x) -> scalar``, the cost of ONE sample (vmapped inside).
    dist: a distribution built from the parameters being differentiated
      (scoregrad.dists, or NumPyro/distrax/TFP-on-JAX).
    key: a PRNG key.
    num_samples: Python int ≥ 1.
    estimator: ``"score_function"`` (default; any distribution) or
      ``"pathwise"`` (reparameterized distributions only).
    baseline: a stateless scalar baseline (score function only), e.g.
      ``scoregrad.baselines.leave_one_out()``.
    sharding: a ``jax.sharding.Sharding`` of the leading sample axis; under
      ``jax.jit`` the samples are generated and costed sharded and the mean
      (and the baseline's sums) reduced by collectives. Same value and
      derivatives as unsharded. See :func:`scoregrad.score_function`.
    chunk_size: process the samples ``chunk_size`` at a time in a
      checkpointed ``lax.scan`` (memory O(chunk_size × params) for the value
      and for ``jax.grad`` of it); must divide ``num_samples``. Chunk c draws
      with ``jax.random.fold_in(key, c)``, so the result is the mean over
      chunks of ``expectation(..., num_samples=chunk_size)`` under those keys:
      the same estimator (unbiased, every derivative order included), not the
      same samples as unchunked. ``leave_one_out()`` runs in two passes (the
      sum of all costs first), so each b_i is the mean of all other
      num_samples − 1 costs, as unchunked.

  Returns:
    A scalar array.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> def loss(logits, key):
    ...   return sg.expectation(lambda b: (b - 0.45) ** 2,
    ...                         sg.dists.Bernoulli(logits=logits), key,
    ...                         num_samples=32,
    ...                         baseline=sg.baselines.leave_one_out())
    >>> g = jax.grad(loss)(jnp.array(0.0), jax.random.key(0))
  """
  num_samples = check_positive_int("num_samples", num_samples)
  sharding = _scale.check_sharding(sharding, num_samples)
  chunk_size = _scale.check_chunk_size(chunk_size, num_samples, sharding, per_sample=False)
  key = check_key(key)
  dist = _dists.as_distribution(dist, name="dist")
  if estimator not in ESTIMATORS:
    raise ValueError(
      f"`estimator` must be one of {ESTIMATORS}; got estimator={estimator!r}. "
      "Other estimators (measure-valued, discrete) are used through their "
      "factories' .estimate(key, f, dist_fn, params, state)."
    )
  total_costs = None
  if estimator == "pathwise":
    if baseline is not None:
      raise ValueError(
        "`baseline` applies to the score-function estimator only; got "
        f"baseline={baseline!r} with estimator='pathwise'. Remove it."
      )
    check_reparameterized(dist, "dist")

    def one(k, n, total):
      del total
      return _pathwise(f, dist, k, n, sharding)

  else:
    baseline = _baselines.resolve(baseline)
    _baselines.check_num_samples(baseline, num_samples)
    _baselines.require_scalar(
      baseline,
      where="expectation()",
      stateless=True,
      instead="Use scoregrad.score_function(num_samples=..., baseline=...).estimate(...) "
      "and thread its state, or score_function_surrogate(..., baseline_state=...), "
      "or a stateless baseline such as leave_one_out().",
    )
    if chunk_size is not None:
      _scale.check_streamable_baseline(baseline)
      if baseline.uses_other_samples:
        # Two passes: the first sums every chunk's costs (same keys, same samples).
        def total_costs(k):
          samples = jax.lax.stop_gradient(_draw(dist, k, chunk_size, sharding))
          return jnp.sum(jax.lax.stop_gradient(evaluate_costs(f, samples, chunk_size)))

    def one(k, n, total):
      chunk_baseline = baseline if total is None else baseline.chunked(total, num_samples)
      return _score_function(f, dist, k, n, chunk_baseline, sharding)

  if chunk_size is None:
    return one(key, num_samples, None)
  return _scale.chunked_mean(
    lambda k, total: one(k, chunk_size, total),
    key,
    num_samples=num_samples,
    chunk_size=chunk_size,
    total_costs=total_costs,
  )


def _draw(dist, key, num_samples: int, sharding):
  draw = lambda k: dist.sample(k, (num_samples,))
  return _scale.shard_samples(draw, sharding, num_samples)(key)


def _pathwise(f, dist, key, num_samples: int, sharding) -> jax.Array:
  """The pathwise surrogate of ``num_samples`` draws: the mean cost."""
  samples = _draw(dist, key, num_samples, sharding)
  costs = evaluate_costs(
    f,
    samples,
    num_samples,
    floating=True,
    where="expectation(estimator='pathwise') differentiates it",
  )
  return jnp.mean(_scale.constrain(costs, sharding, num_samples))


def _score_function(f, dist, key, num_samples: int, baseline, sharding) -> jax.Array:
  """The DiCE surrogate of ``num_samples`` draws with a stateless scalar baseline."""
  samples = jax.lax.stop_gradient(_draw(dist, key, num_samples, sharding))
  costs = _scale.constrain(evaluate_costs(f, samples, num_samples), sharding, num_samples)
  b = baseline.values(jax.lax.stop_gradient(costs), None, baseline.init())
  surrogate = lambda d: jnp.mean(_surrogate.dice(jax.vmap(d.log_prob)(samples), costs, b))
  if getattr(dist, "score_function_order", None) != 1:
    return surrogate(dist)
  # log_prob differentiable once only (e.g. Laplace): first derivatives are
  # the score function's, higher ones are refused (the derivative-order rule).
  name = f"expectation on {type(dist).__name__} (its log_prob is differentiable once only)"
  grad = jax.grad(surrogate)(jax.lax.stop_gradient(dist))
  return jnp.mean(costs) + gradient_carrier(
    dist, first_order_only(grad, (dist, costs), name), name, costs.dtype
  )
