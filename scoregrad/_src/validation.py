"""Validation at the public boundary: clear errors that name the argument.

Every check here runs at trace time (on shapes, dtypes and Python values), so
it costs nothing inside a compiled function and works under ``jax.jit``.
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class NotApplicableError(ValueError):
  """An estimator does not apply to this problem (raised at trace time).

  Raised by an estimator's ``estimate`` (or ``init``) when the distribution
  that ``dist_fn(params)`` returns, or the cost ``f``, is outside what the
  estimator supports: ``pathwise`` on a Bernoulli, a discrete estimator on a
  Normal, a relaxation-based estimator whose ``f`` has no derivative. It is a
  ``ValueError`` (so ``except ValueError`` still catches it), raised before
  anything is computed; :func:`scoregrad.select` reports a candidate that
  raises it as skipped, with the message as the reason, and lets every other
  exception propagate. Estimators written outside scoregrad may raise it too.
  """


class NonFloatCostError(NotApplicableError, TypeError):
  """A :class:`NotApplicableError` for a cost without a floating-point derivative.

  Also a ``TypeError``, which the check raised before this class existed.
  """


def check_positive_int(name: str, value: Any, *, minimum: int = 1, why: str = "") -> int:
  """Returns ``value`` as an int, or raises a ``ValueError`` naming ``name``."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    try:
      is_int = float(value).is_integer()
    except (TypeError, ValueError):
      is_int = False
    hint = f" Use {name}={int(value)}." if is_int else ""
    raise TypeError(
      f"`{name}` must be a Python int >= {minimum}; got {value!r} of type "
      f"{type(value).__name__}.{hint} It is a setting of the estimator "
      "factory, so it must be a static Python value, not a traced array."
    )
  value = operator.index(value)
  if value < minimum:
    raise ValueError(
      f"`{name}` must be >= {minimum}; got {name}={value}.{(' ' + why) if why else ''}"
    )
  return value


def check_positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
  if isinstance(value, bool):
    raise TypeError(f"`{name}` must be a float; got {value!r}.")
  try:
    value_f = float(value)
  except (TypeError, ValueError):
    raise TypeError(
      f"`{name}` must be a Python float; got {value!r} of type {type(value).__name__}."
    ) from None
  if not np.isfinite(value_f) or value_f < 0 or (value_f == 0 and not allow_zero):
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"`{name}` must be a finite number {bound}; got {name}={value!r}.")
  return value_f


def check_key(key: Any, name: str = "key") -> jax.Array:
  """Accepts one PRNG key (typed ``jax.random.key``, or raw of the configured implementation)."""
  if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
    raise TypeError(
      f"`{name}` must be a JAX PRNG key, got the int {key!r}. Create one with "
      f"`{name} = jax.random.key({key})` and split it for every call."
    )
  if not hasattr(key, "dtype") or not hasattr(key, "shape"):
    raise TypeError(
      f"`{name}` must be a JAX PRNG key such as jax.random.key(0); got "
      f"{key!r} of type {type(key).__name__}."
    )
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(
        f"`{name}` must be a single PRNG key, got a batch of keys with shape "
        f"{key.shape}. Pass one key (e.g. keys[0]); to run several estimates, "
        "use jax.vmap over the keys."
      )
    return key
  # Raw keys take the shape of the configured PRNG implementation
  # (uint32[2] for threefry, uint32[4] for rbg/unsafe_rbg).
  raw_shape = _raw_key_shape()
  if key.dtype == jnp.uint32 and key.shape == raw_shape:
    return key
  if key.dtype == jnp.uint32 and key.ndim == len(raw_shape) + 1 and key.shape[1:] == raw_shape:
    raise ValueError(
      f"`{name}` must be a single PRNG key, got a batch of raw keys with shape "
      f"{key.shape}. Pass one key (e.g. keys[0]); to run several estimates, "
      "use jax.vmap over the keys."
    )
  raise TypeError(
    f"`{name}` must be a single JAX PRNG key (jax.random.key(seed), or a legacy "
    f"raw jax.random.PRNGKey(seed), uint32{list(raw_shape)} for the configured "
    f"PRNG implementation); got an array with dtype {key.dtype} and shape {key.shape}."
  )


def _raw_key_shape() -> tuple[int, ...]:
  """Shape of a raw key of the configured default PRNG implementation."""
  return tuple(jax.eval_shape(lambda: jax.random.PRNGKey(0)).shape)


def check_bool(name: str, value: Any) -> bool:
  """Returns ``value`` if it is a Python bool, else a ``TypeError`` naming ``name``."""
  if not isinstance(value, bool):
    raise TypeError(f"`{name}` must be a bool; got {name}={value!r}.")
  return value


def check_callable(name: str, value: Any, signature: str) -> None:
  if not callable(value):
    raise TypeError(
      f"`{name}` must be a callable `{signature}`; got {value!r} of type {type(value).__name__}."
    )


def check_estimator(estimator: Any, name: str) -> Any:
  """``estimator`` must be a GradientEstimator-like pair of ``init`` and ``estimate``."""
  if not (
    callable(getattr(estimator, "init", None)) and callable(getattr(estimator, "estimate", None))
  ):
    raise TypeError(
      f"`{name}` must be a scoregrad.GradientEstimator (a NamedTuple of init "
      "and estimate), e.g. scoregrad.score_function(num_samples=64); got "
      f"{estimator!r} of type {type(estimator).__name__}."
    )
  return estimator


def safe_divide(num, den):
  """num / den where den > 0, else 0 (no NaN in the unused branch's gradient)."""
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)
