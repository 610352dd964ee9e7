"""Shared plumbing of the discrete estimators.

Every estimator in :mod:`scoregrad.discrete` works in *logits space*: it calls
``dist_fn(params)``, checks that the result is a factorised
``scoregrad.dists.Bernoulli(logits=...)`` or ``scoregrad.dists.Categorical(
logits=...)``, estimates the gradient with respect to those logits, and pulls
it back to ``params`` with ``jax.vjp`` through ``dist_fn``. Any pytree of
parameters that feeds the logits therefore works, and the pull-back is exact
(it is the chain rule, applied to an unbiased logits gradient it stays
unbiased because it is linear).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from scoregrad._src.base import (
  call_dist_fn,
  check_params_floating,
  first_order_only,
  gradient_carrier,
)
from scoregrad._src.validation import NotApplicableError, check_callable
from scoregrad.dists._base import families_with

PyTree = Any

# What every estimator here asks of a family (see scoregrad.dists._base):
# the logits structure of Bernoulli and Categorical.
LOGITS_FACTS = (
  "perturb",
  "hard",
  "soft",
  "score_logits",
  "probs_of",
  "per_variable_log_probs",
  "enumerate_configurations",
)


def _wanted(needs) -> str:
  return " or ".join(
    f"scoregrad.dists.{n}(logits=...)"
    for n in families_with(needs[-1])
    if all(n in families_with(k) for k in needs)
  )


def check_family(
  dist: Any, *, estimator: str, needs: tuple[str, ...] = LOGITS_FACTS, alternatives: str = ""
) -> type[Any]:
  """Returns ``type(dist)`` if its family has the facts ``needs``, else a clear error."""
  family = type(dist)
  if all(callable(getattr(family, fact, None)) for fact in needs):
    return family
  wanted = _wanted(needs)
  inner = getattr(dist, "dist", dist)  # foreign distributions are wrapped
  got = type(inner).__name__
  if all(callable(getattr(family, fact, None)) for fact in LOGITS_FACTS):
    # A logits-parameterised discrete family that lacks what this estimator needs.
    raise NotApplicableError(
      f"`{estimator}` supports {wanted} only, but `dist_fn(params)` returned "
      f"a {got}. {alternatives}".rstrip()
    )
  if getattr(dist, "reparameterized", False):
    why = (
      f"{got} is a continuous (reparameterized) distribution: use "
      "scoregrad.pathwise(num_samples=...) for it, or "
      "scoregrad.score_function(num_samples=...) which accepts any "
      "distribution."
    )
  else:
    first = wanted.split(" or ")[0]
    why = (
      f"{got} is not one of scoregrad's logits-parameterised discrete "
      "distributions. If it is a Bernoulli or categorical distribution "
      f"from another library, rebuild it as {first} inside `dist_fn`; "
      "otherwise use scoregrad.score_function(num_samples=...), which needs "
      "only log_prob."
    )
  raise NotApplicableError(
    f"`{estimator}` estimates gradients for discrete distributions: "
    f"`dist_fn(params)` must return {wanted}; got {got}. {why}"
  )


class Logits(NamedTuple):
  """The logits of ``dist_fn(params)`` (gradient-free) and how to pull back.

  Attributes:
    family: the distribution's class (``Bernoulli``, ``Categorical``, or any
      family with the logits facts); the estimators call its static methods.
    logits: the logits, with ``stop_gradient`` applied.
    pullback: ``pullback(g_logits) -> g_params``, the vector-Jacobian product
      of ``params -> dist_fn(params).logits``.
    live: the logits as a (differentiable) function of ``params``: the anchor
      of the derivative-order rule (see :func:`finish`).
    estimator: the estimator's name, for messages.
  """

  family: type[Any]
  logits: jax.Array
  pullback: Callable[[jax.Array], PyTree]
  live: Optional[jax.Array] = None
  estimator: str = ""


def logits_and_pullback(
  dist_fn: Callable,
  params: PyTree,
  *,
  estimator: str,
  needs: tuple[str, ...] = LOGITS_FACTS,
  alternatives: str = "",
) -> Logits:
  """Calls ``dist_fn(params)``, checks its family, and linearises its logits."""
  check_callable("dist_fn", dist_fn, "dist_fn(params) -> distribution")
  check_params_floating(params)
  found = {}

  def get_logits(p):
    dist = call_dist_fn(dist_fn, p)
    found["family"] = check_family(
      dist, estimator=estimator, needs=needs, alternatives=alternatives
    )
    return dist.logits

  logits, vjp = jax.vjp(get_logits, params)

  def pullback(g):
    return vjp(jnp.asarray(g, logits.dtype))[0]

  return Logits(found["family"], jax.lax.stop_gradient(logits), pullback, logits, estimator)


def uniform(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
  """Uniforms on the open interval (0, 1): safe inside logit and log(−log u)."""
  return jax.random.uniform(key, shape, dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)


def relaxed_input(lg: Logits) -> jax.ShapeDtypeStruct:
  """What relaxed estimators pass to f: floats shaped like the logits."""
  return jax.ShapeDtypeStruct(lg.logits.shape, lg.logits.dtype)


def finish(lg: Logits, per_logits: jax.Array, per_sample: bool, value: jax.Array, costs: Any):
  """Mean over samples, pulled back; per-sample rows; the value carrying the gradient.

  The discrete estimators build their per-logit gradient from stop-gradient
  pieces, so they are first-order only: differentiating the returned
  gradient with respect to the logits (hence ``params``) or the raw
  ``costs`` (hence what f closes over) raises, and ``value`` gets a
  :func:`~scoregrad._src.base.gradient_carrier`, so that ``jax.grad`` of
  ``Estimate.value`` is this estimator's gradient rather than a silent zero.
  """
  per_logits = first_order_only(per_logits, (lg.live, costs), lg.estimator)
  mean_logits = jnp.mean(per_logits, axis=0)
  grad = lg.pullback(mean_logits)
  per = jax.vmap(lg.pullback)(per_logits) if per_sample else None
  value = value + gradient_carrier(lg.live, mean_logits, lg.estimator, value.dtype)
  return grad, per, value
