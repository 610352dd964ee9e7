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

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from scoregrad import _validation
from scoregrad import dists as _dists
from scoregrad._validation import check_callable
from scoregrad.base import call_dist_fn, check_params_floating

PyTree = Any

BERNOULLI = "bernoulli"
CATEGORICAL = "categorical"
_CLASS_NAMES = {BERNOULLI: "scoregrad.dists.Bernoulli(logits=...)",
                CATEGORICAL: "scoregrad.dists.Categorical(logits=...)"}


def family_of(dist: Any) -> str | None:
  """``"bernoulli"``, ``"categorical"`` or ``None`` for anything else."""
  if isinstance(dist, _dists.Bernoulli):
    return BERNOULLI
  if isinstance(dist, _dists.Categorical):
    return CATEGORICAL
  return None


def check_family(dist: Any, *, estimator: str, families: tuple[str, ...],
                 alternatives: str = "") -> str:
  """Returns the family of ``dist`` or raises an error that says what to use."""
  family = family_of(dist)
  if family in families:
    return family
  wanted = " or ".join(_CLASS_NAMES[f] for f in families)
  inner = getattr(dist, "dist", dist)  # foreign distributions are wrapped
  got = type(inner).__name__
  if family is not None:  # a discrete family this estimator does not support
    raise ValueError(
        f"`{estimator}` supports {wanted} only, but `dist_fn(params)` returned "
        f"a {got}. {alternatives}".rstrip())
  if getattr(dist, "reparameterized", False):
    why = (f"{got} is a continuous (reparameterized) distribution: use "
           "scoregrad.pathwise(num_samples=...) for it, or "
           "scoregrad.score_function(num_samples=...) which accepts any "
           "distribution.")
  else:
    why = (f"{got} is not one of scoregrad's logits-parameterised discrete "
           "distributions. If it is a Bernoulli or categorical distribution "
           "from another library, rebuild it as "
           f"{_CLASS_NAMES[families[0]]} inside `dist_fn`; otherwise use "
           "scoregrad.score_function(num_samples=...), which needs only "
           "log_prob.")
  raise ValueError(
      f"`{estimator}` estimates gradients for discrete distributions: "
      f"`dist_fn(params)` must return {wanted}; got {got}. {why}")


class Logits(NamedTuple):
  """The logits of ``dist_fn(params)`` (gradient-free) and how to pull back.

  Attributes:
    family: ``"bernoulli"`` or ``"categorical"``.
    logits: the logits, with ``stop_gradient`` applied.
    pullback: ``pullback(g_logits) -> g_params``, the vector-Jacobian product
      of ``params -> dist_fn(params).logits``.
  """

  family: str
  logits: jax.Array
  pullback: Callable[[jax.Array], PyTree]


def logits_and_pullback(dist_fn: Callable, params: PyTree, *, estimator: str,
                        families: tuple[str, ...] = (BERNOULLI, CATEGORICAL),
                        alternatives: str = "") -> Logits:
  """Calls ``dist_fn(params)``, checks its family, and linearises its logits."""
  check_callable("dist_fn", dist_fn, "dist_fn(params) -> distribution")
  check_params_floating(params)
  found = {}

  def get_logits(p):
    dist = call_dist_fn(dist_fn, p)
    found["family"] = check_family(dist, estimator=estimator, families=families,
                                   alternatives=alternatives)
    return dist.logits

  logits, vjp = jax.vjp(get_logits, params)

  def pullback(g):
    return vjp(jnp.asarray(g, logits.dtype))[0]

  return Logits(found["family"], jax.lax.stop_gradient(logits), pullback)


def uniform(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
  """Uniforms on the open interval (0, 1): safe inside logit and log(−log u)."""
  return jax.random.uniform(key, shape, dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)


def logit(u: jax.Array) -> jax.Array:
  """log u − log(1 − u), accurate near 0 and 1."""
  return jnp.log(u) - jnp.log1p(-u)


def gumbel(u: jax.Array) -> jax.Array:
  """A standard Gumbel draw −log(−log u) from a uniform u."""
  return -jnp.log(-jnp.log(u))


def score(family: str, logits: jax.Array, x: jax.Array) -> jax.Array:
  """∂ log p(x) / ∂ logits for one sample x (elementwise; shape of logits).

  Bernoulli: x − σ(l). Categorical (x holds indices): onehot(x) − softmax(l).
  """
  if family == BERNOULLI:
    return x.astype(logits.dtype) - jax.nn.sigmoid(logits)
  k = logits.shape[-1]
  return jax.nn.one_hot(x, k, dtype=logits.dtype) - jax.nn.softmax(logits, axis=-1)


def log_prob(family: str, logits: jax.Array, x: jax.Array) -> jax.Array:
  """log p(x) of one sample x (indices for Categorical), summed over the event."""
  if family == BERNOULLI:
    return jnp.sum(x * logits - jax.nn.softplus(logits))
  logp = jax.nn.log_softmax(logits, axis=-1)
  return jnp.sum(jnp.take_along_axis(logp, x[..., None], axis=-1))


def check_scalar_cost(f: Callable, example: PyTree, what: str) -> None:
  """Raises unless ``f(example)`` is a floating scalar (checked by shape only)."""
  check_callable("f", f, "f(x) -> scalar cost of one sample")
  out = jax.eval_shape(f, example)
  shape = getattr(out, "shape", None)
  if shape != ():
    raise ValueError(
        f"The cost `f(x)` must return a scalar for one sample x ({what}); it "
        f"returned {shape if shape is not None else type(out).__name__}. Reduce "
        "it to a scalar, e.g. `lambda x: jnp.sum(cost(x))`.")
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise TypeError(
        f"The cost `f(x)` must return a floating-point scalar ({what}), because "
        f"it is differentiated; it returned dtype {out.dtype}. Cast it, e.g. "
        "`lambda x: jnp.asarray(cost(x), jnp.float32)`.")


def costs_of(f: Callable, xs: jax.Array, dtype) -> jax.Array:
  """``vmap(f)`` over a leading sample axis, as ``dtype`` (no stop_gradient)."""
  check_callable("f", f, "f(x) -> scalar cost of one sample")
  out = jax.eval_shape(f, jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype))
  if getattr(out, "shape", None) != ():
    raise ValueError(
        "The cost `f(x)` must return a scalar for one sample x (it is vmapped "
        f"over the {xs.shape[0]} samples inside the estimator); it returned "
        f"{getattr(out, 'shape', type(out).__name__)}. Reduce it to a scalar, "
        "e.g. `lambda x: jnp.sum(cost(x))`.")
  return jnp.asarray(jax.vmap(f)(xs)).astype(dtype)


def expand_to(costs: jax.Array, like: jax.Array) -> jax.Array:
  """Reshapes per-sample values (n,) to broadcast against (n, *event)."""
  return jnp.reshape(costs, costs.shape + (1,) * (like.ndim - costs.ndim))


check_bool = _validation.check_bool


def finish(lg: Logits, per_logits: jax.Array, per_sample: bool):
  """Mean over samples, pulled back; plus pulled-back per-sample gradients."""
  grad = lg.pullback(jnp.mean(per_logits, axis=0))
  per = jax.vmap(lg.pullback)(per_logits) if per_sample else None
  return grad, per
