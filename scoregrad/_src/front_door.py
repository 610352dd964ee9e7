"""The differentiable front door: ``expectation``."""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from scoregrad import dists as _dists
from scoregrad._src import baselines as _baselines
from scoregrad._src import reparameterization as _reparameterization
from scoregrad._src import score as _score
from scoregrad._src.validation import check_estimator, check_key, check_positive_int

ESTIMATORS = ("score_function", "pathwise")


def expectation(
  f: Callable[[jax.Array], jax.Array],
  dist: Any,
  key: jax.Array,
  *,
  estimator: Any = "score_function",
  num_samples: Optional[int] = None,
  baseline: Optional[_baselines.Baseline] = None,
  sharding: Optional[Any] = None,
  chunk_size: Optional[int] = None,
) -> jax.Array:
  """A scalar whose value is the MC mean of f and whose derivatives estimate ∇E[f].

  Use it inside any loss: ``jax.grad`` of the result is the chosen
  estimator's gradient with respect to whatever ``dist``'s parameters were
  computed from, and higher derivatives are the estimator's own (every order
  for the score function with no or a leave-one-out baseline, and for
  pathwise; first order only, with a clear error beyond, for estimators
  whose gradient is assembled from stop-gradient pieces — the
  derivative-order rule). ``f`` may close over the parameters being
  differentiated: its pathwise term is then included.

  ``estimator`` is any :class:`~scoregrad.GradientEstimator` — the value is
  ``estimator.estimate(key, f, dist_fn, leaves, estimator.init(leaves)).value``
  where ``leaves`` are ``dist``'s floating-point pytree leaves and
  ``dist_fn`` rebuilds ``dist`` from them — or, as a shorthand kept from 0.1,
  one of the strings ``"score_function"`` (default) and ``"pathwise"`` together
  with ``num_samples=`` (and ``baseline=``, ``sharding=``, ``chunk_size=``),
  which builds ``score_function(...)`` or ``pathwise(...)``. The estimator
  runs from its initial state on every call (``expectation`` keeps no
  state): adaptive baselines and learned controls do not adapt here; thread
  ``Estimate.state`` through ``estimator.estimate`` for that.

  Args:
    f: ``f(x) -> scalar``, the cost of ONE sample (vmapped inside).
    dist: a distribution built from the parameters being differentiated
      (scoregrad.dists, or NumPyro/distrax/TFP-on-JAX): a pytree whose
      floating leaves are its parameters.
    key: a PRNG key.
    estimator: a ``GradientEstimator`` (e.g. ``sg.disarm(num_pairs=8)``), or
      ``"score_function"`` / ``"pathwise"`` with ``num_samples``.
    num_samples: with a string ``estimator``: Python int ≥ 1.
    baseline: with ``"score_function"``: a stateless scalar baseline, e.g.
      ``scoregrad.baselines.leave_one_out()``.
    sharding: with a string ``estimator``: a ``jax.sharding.Sharding`` of the
      sample axis (see :func:`scoregrad.sharded`).
    chunk_size: with a string ``estimator``: stream the samples in chunks
      (see :func:`scoregrad.chunked`; the result is the mean over chunks, with
      every derivative order, and ``leave_one_out()`` runs in two passes).

  Returns:
    A scalar array.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> def loss(logits, key):
    ...   return sg.expectation(lambda b: (b - 0.45) ** 2,
    ...                         sg.dists.Bernoulli(logits=logits), key,
    ...                         estimator=sg.disarm(num_pairs=16))
    >>> g = jax.grad(loss)(jnp.array(0.0), jax.random.key(0))
    >>> def loss2(logits, key):    # the 0.1 shorthand: any order (DiCE)
    ...   return sg.expectation(lambda b: (b - 0.45) ** 2,
    ...                         sg.dists.Bernoulli(logits=logits), key,
    ...                         num_samples=32,
    ...                         baseline=sg.baselines.leave_one_out())
    >>> h = jax.hessian(loss2)(jnp.array(0.0), jax.random.key(0))
  """
  key = check_key(key)
  adapted = _dists.as_distribution(dist, name="dist")
  shorthand = isinstance(estimator, str)
  if shorthand:
    estimator = _shorthand(estimator, num_samples, baseline, sharding, chunk_size)
  else:
    check_estimator(estimator, "estimator")
    given = {
      "num_samples": num_samples,
      "baseline": baseline,
      "sharding": sharding,
      "chunk_size": chunk_size,
    }
    extra = {k: v for k, v in given.items() if v is not None}
    if extra:
      name, value = next(iter(extra.items()))
      raise ValueError(
        f"`{name}={value!r}` is a setting of the string shorthand "
        "(estimator='score_function'/'pathwise'); with an estimator object "
        f"({estimator!r}) set it on the estimator instead, e.g. "
        "sg.score_function(num_samples=..., baseline=...), "
        "sg.chunked(estimator, chunk_size) or sg.sharded(estimator, sharding)."
      )
  first_order = getattr(adapted, "score_function_order", None) == 1
  if shorthand and _leaves_are_not_params(dist) and not first_order:
    # A distribution that is not a pytree (a user's duck-typed object closing
    # over traced parameters): the shorthands' `.value` is DiCE / the
    # reparameterized mean, differentiated through that closure, so no leaves
    # are needed (0.1 accepted such objects; estimator objects need leaves).
    params, dist_fn = (), (lambda _: dist)
  else:
    params, dist_fn = _as_params(dist)
  return estimator.estimate(key, f, dist_fn, params, estimator.init(params)).value


def _leaves_are_not_params(dist: Any) -> bool:
  leaves = jax.tree_util.tree_leaves(dist)
  return len(leaves) == 1 and leaves[0] is dist


def _shorthand(name: str, num_samples, baseline, sharding, chunk_size):
  """The 0.1 form ``estimator="score_function"|"pathwise"`` as an estimator object."""
  if name not in ESTIMATORS:
    raise ValueError(
      f"`estimator` must be a scoregrad.GradientEstimator (e.g. "
      f"sg.disarm(num_pairs=8), sg.measure_valued(num_samples=64)) or one of the "
      f"shorthands {ESTIMATORS}; got estimator={name!r}."
    )
  if num_samples is None:
    raise TypeError(
      f"expectation(estimator={name!r}) needs `num_samples=`: got none. Pass "
      f"num_samples=64, say, or an estimator object such as sg.{name}(num_samples=64)."
    )
  num_samples = check_positive_int("num_samples", num_samples)
  if name == "pathwise":
    if baseline is not None:
      raise ValueError(
        "`baseline` applies to the score-function estimator only; got "
        f"baseline={baseline!r} with estimator='pathwise'. Remove it."
      )
    return _reparameterization.pathwise(
      num_samples=num_samples, sharding=sharding, chunk_size=chunk_size
    )
  baseline = _baselines.resolve(baseline)
  _baselines.require_scalar(
    baseline,
    where="expectation()",
    stateless=True,
    instead="Use scoregrad.score_function(num_samples=..., baseline=...).estimate(...) "
    "and thread its state, or score_function_surrogate(..., baseline_state=...), "
    "or a stateless baseline such as leave_one_out().",
  )
  return _score.score_function(
    num_samples=num_samples, baseline=baseline, sharding=sharding, chunk_size=chunk_size
  )


def _as_params(dist: Any):
  """``dist``'s floating leaves, and the function that rebuilds ``dist`` from them."""
  leaves, treedef = jax.tree_util.tree_flatten(dist)
  where = [
    i
    for i, leaf in enumerate(leaves)
    if isinstance(leaf, (jax.Array, np.ndarray, float, np.floating))
    and jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
  ]
  if not where and len(leaves) == 1 and leaves[0] is dist:
    raise TypeError(
      f"`dist` ({type(dist).__name__}) is not a JAX pytree, so expectation cannot "
      "see the parameters it differentiates through. scoregrad.dists, NumPyro, "
      "distrax and TFP-on-JAX distributions are pytrees; register yours with "
      "jax.tree_util.register_pytree_node, or call "
      "estimator.estimate(key, f, dist_fn, params, state) directly."
    )

  def dist_fn(params):
    rebuilt = list(leaves)
    for i, value in zip(where, params):
      rebuilt[i] = value
    return jax.tree_util.tree_unflatten(treedef, rebuilt)

  return tuple(leaves[i] for i in where), dist_fn
