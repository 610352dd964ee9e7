"""Shared helper of the families' weak derivatives: f with one coordinate replaced."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Largest number of array elements materialised at once when f is evaluated at
# every (sample, coordinate) replacement; larger problems are chunked.
CHUNK_ELEMENTS = 1 << 22


def replace_eval(fn, base, values, event_shape):
  """out[i, j] = fn(base[i] with flat coordinate j set to values[i, j]).

  ``base`` and ``values`` have shape (n, d); ``fn`` maps one sample of
  ``event_shape`` to a vector (M,); the result has shape (n, d, M).
  """
  n, d = base.shape
  values = values.astype(base.dtype)

  def per_sample(args):
    x, v = args
    return jax.vmap(lambda j, vj: fn(x.at[j].set(vj).reshape(event_shape)))(jnp.arange(d), v)

  batch = max(1, CHUNK_ELEMENTS // max(1, d * d))
  if batch >= n:
    return jax.vmap(lambda x, v: per_sample((x, v)))(base, values)
  return jax.lax.map(per_sample, (base, values), batch_size=batch)


def flat_params(dist) -> list[jax.Array]:
  """The canonical parameters of ``dist``, each flattened over the event."""
  return [jnp.reshape(c, (-1,)) for c in dist.weak_derivative_params().values()]
