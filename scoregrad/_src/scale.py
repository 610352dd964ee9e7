r"""Scaling the sample axis: sharding across devices and processes, and streaming.

Two factory keywords, shared by the estimators that take them:

* ``sharding=`` — a :class:`jax.sharding.Sharding` of the leading sample axis
  (e.g. ``NamedSharding(mesh, PartitionSpec("samples"))``), or a bare
  ``PartitionSpec`` resolved against the mesh set with ``jax.set_mesh``. The
  estimator constrains what it draws (samples, per-sample keys, noise) and the
  costs to that sharding, so under ``jax.jit`` XLA generates each device's
  samples on that device, evaluates the cost there, and reduces the value,
  the gradient, leave-one-out / optimal baselines and estimated control-variate
  coefficients (all sums over the sample axis) with all-reduce collectives.
  No device holds every sample, and the estimate is the unsharded one to
  float tolerance (only the order of the sums changes). That relies on JAX's
  *partitionable* threefry (``jax.config.jax_threefry_partitionable``, the
  default since jax 0.5): the bits of ``jax.random.normal(key, (n, d))``
  row i then do not depend on how the array is split, so a sharded draw is
  bit-for-bit the unsharded draw. With it off, sharded draws are still exact
  samples of the right distribution but XLA may replicate the generation.
  The same program runs unchanged over many processes
  (``jax.distributed.initialize``) and on GPU/TPU meshes.

* ``chunk_size=`` — the ``num_samples`` samples are processed
  ``chunk_size`` at a time in a ``lax.scan``, so temporary memory is
  O(chunk_size × params) and ``num_samples`` can reach 10⁸ on one CPU. Chunk
  c draws its samples with the key ``jax.random.fold_in(key, c)``: the
  samples differ from the unchunked ones (same distribution, so the estimate
  is the same estimator, unbiased as before), and the chunked estimate is
  exactly (to float tolerance) the mean over chunks of the unchunked
  estimator with ``num_samples=chunk_size`` called with those keys — or, for
  ``baselines.leave_one_out()``, the unchunked leave-one-out estimate on the
  union of the chunks' samples, computed in two passes (first the sum of all
  costs, then each chunk's gradient with b_i = (Σ_j c_j − c_i)/(n − 1)).
  ``chunk_size`` must divide ``num_samples`` (no remainder chunk).

* ``moments=True`` — ``Estimate.moments`` carries the streamed first and
  second moments of the per-sample gradients (:class:`GradientMoments`,
  combined across chunks by Chan et al.'s parallel update), from which
  ``scoregrad.diagnostics.variance``, ``standard_error``, ``snr``,
  ``total_variance`` and ``bias`` compute without materialising the
  num_samples × params rows.

References:
  Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm for
  computing sample variances", COMPSTAT 1982; Welford, "Note on a method for
  calculating corrected sums of squares and products", Technometrics 1962.
  Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3",
  SC 2011 (counter-based threefry).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from scoregrad._src.base import Estimate, GradientEstimator, GradientMoments
from scoregrad._src.validation import check_bool, check_key, check_positive_int

PyTree = Any

_SHARDING_HINT = (
  "Pass a jax.sharding.Sharding of the leading sample axis, e.g. "
  "`mesh = jax.make_mesh((jax.device_count(),), ('samples',)); "
  "sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('samples'))`, "
  "or None for one device."
)


# -- sharding ----------------------------------------------------------------


def _spec_axes(spec: PartitionSpec) -> tuple:
  """Mesh axes that partition the leading (sample) axis under ``spec``."""
  entry = spec[0] if len(spec) else None
  if entry is None:
    return ()
  return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def _check_axes(spec, mesh, name: str) -> int:
  """The number of shards of the sample axis; raises for a mesh axis that does not exist."""
  axes = _spec_axes(spec)
  missing = [a for a in axes if a not in mesh.axis_names]
  if missing:
    raise ValueError(
      f"`{name}`: the sample axis is partitioned over mesh axis "
      f"{missing[0]!r}, which the mesh does not have (its axes are "
      f"{tuple(mesh.axis_names)}); got {name}={spec!r}. Name one of the "
      f"mesh's axes, e.g. PartitionSpec({mesh.axis_names[0]!r})."
    )
  return math.prod(mesh.shape[a] for a in axes)


def _check_divides(
  shards: int, num_samples: int, name: str, sharding, what: str = "num_samples"
) -> None:
  if num_samples % shards:
    lower = (num_samples // shards) * shards
    options = f"{lower} or {lower + shards}" if lower else f"{shards}"
    raise ValueError(
      f"`{name}` splits the sample axis into {shards} shards, which does not "
      f"divide {what}={num_samples}; got {name}={sharding!r}. Use "
      f"{what}={options} (a multiple of {shards}), or a mesh whose sample axis "
      f"divides {what}."
    )


def sample_shards(sharding, num_samples: int, name: str = "sharding") -> int:
  """How many shards ``sharding`` cuts the sample axis into (1 for ``None``)."""
  if sharding is None or isinstance(sharding, PartitionSpec):
    return 1  # a bare PartitionSpec is resolved against the mesh at estimate time
  if isinstance(sharding, NamedSharding):
    return _check_axes(sharding.spec, sharding.mesh, name)
  try:
    local = sharding.shard_shape((num_samples,))[0]
  except Exception as e:  # IndivisibleError and friends
    raise ValueError(
      f"`{name}={sharding!r}` cannot shard a sample axis of num_samples={num_samples}: {e}"
    ) from None
  return max(1, num_samples // max(local, 1))


def check_sharding(sharding, num_samples: int, name: str = "sharding"):
  """Validates the ``sharding`` factory argument (``None``, a Sharding or a PartitionSpec)."""
  if sharding is None:
    return None
  if isinstance(sharding, str):
    raise TypeError(
      f"`{name}` must be a jax.sharding.Sharding or PartitionSpec, not the "
      f"string {sharding!r}. Use jax.sharding.PartitionSpec({sharding!r}) inside "
      f"`with jax.set_mesh(mesh):`, or NamedSharding(mesh, PartitionSpec({sharding!r}))."
    )
  if not isinstance(sharding, (jax.sharding.Sharding, PartitionSpec)):
    raise TypeError(
      f"`{name}` must be a jax.sharding.Sharding; got {sharding!r} "
      f"of type {type(sharding).__name__}. {_SHARDING_HINT}"
    )
  _check_divides(sample_shards(sharding, num_samples, name), num_samples, name, sharding)
  return sharding


def _context_mesh():
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh is None or mesh.empty else mesh


def _is_explicit(mesh, axes) -> bool:
  types = dict(zip(mesh.axis_names, mesh.axis_types))
  return any(types.get(a) == jax.sharding.AxisType.Explicit for a in axes)


def _resolve(sharding, num_samples: int):
  """``(target, explicit)`` for one call: what to constrain to and how.

  ``explicit`` means the sample axis is an Explicit axis of the mesh set with
  ``jax.set_mesh``: the draw then runs under ``jax.sharding.auto_axes`` (so
  XLA still partitions the generation). An Explicit mesh outside such a
  context is used as the same devices with Auto axes.
  """
  context = _context_mesh()
  if isinstance(sharding, PartitionSpec):
    if context is None:
      raise ValueError(
        f"`sharding={sharding!r}` is a bare PartitionSpec, which needs a mesh: "
        "call the estimator inside `with jax.set_mesh(mesh):`, or pass "
        "NamedSharding(mesh, spec)."
      )
    shards = _check_axes(sharding, context, "sharding")
    _check_divides(shards, num_samples, "sharding", sharding)
    return sharding, _is_explicit(context, _spec_axes(sharding))
  if isinstance(sharding, NamedSharding):
    axes = _spec_axes(sharding.spec)
    if _is_explicit(sharding.mesh, axes):
      if context is not None and _is_explicit(context, axes):
        return sharding, True
      mesh = sharding.mesh
      auto = jax.sharding.Mesh(
        mesh.devices,
        mesh.axis_names,
        axis_types=(jax.sharding.AxisType.Auto,) * len(mesh.axis_names),
      )
      return NamedSharding(auto, sharding.spec), False
  return sharding, False


def shard_samples(draw: Callable, sharding, num_samples: int) -> Callable:
  """``draw`` (returning a pytree with leading sample axis) generating its output sharded.

  With ``sharding=None`` it returns ``draw`` itself (the default code path is
  untouched).
  """
  if sharding is None:
    return draw

  def sharded_draw(*args):
    target, explicit = _resolve(sharding, num_samples)
    if explicit:
      shapes = jax.eval_shape(draw, *args)
      return jax.sharding.auto_axes(
        draw, out_sharding=jax.tree_util.tree_map(lambda _: target, shapes)
      )(*args)
    return constrain_to(draw(*args), target)

  return sharded_draw


def constrain_to(tree: PyTree, target) -> PyTree:
  return jax.tree_util.tree_map(
    lambda x: jax.lax.with_sharding_constraint(x, target) if jnp.ndim(x) else x, tree
  )


def constrain(tree: PyTree, sharding, num_samples: int) -> PyTree:
  """Per-sample values (costs) pinned to the sample sharding; identity for ``None``."""
  if sharding is None:
    return tree
  target, explicit = _resolve(sharding, num_samples)
  if explicit:  # their type already carries the samples' sharding
    return tree
  return constrain_to(tree, target)


# -- streaming ----------------------------------------------------------------


def check_chunk_size(
  chunk_size,
  num_samples: int,
  sharding,
  *,
  per_sample: bool,
  name: str = "chunk_size",
  samples_name: str = "num_samples",
):
  """Validates ``chunk_size`` against ``num_samples`` (and the sharding of each chunk)."""
  if chunk_size is None:
    return None
  chunk_size = check_positive_int(name, chunk_size)
  if num_samples % chunk_size:
    divisors = [c for c in range(min(chunk_size, num_samples), 0, -1) if num_samples % c == 0]
    raise ValueError(
      f"`{name}` must divide {samples_name}={num_samples} (every chunk has the "
      f"same size; there is no remainder chunk); got {name}={chunk_size}. Use "
      f"{name}={divisors[0]}, or {samples_name}={(num_samples // chunk_size + 1) * chunk_size}."
    )
  if per_sample:
    raise ValueError(
      f"per_sample=True returns {samples_name} × params rows, which `{name}` exists "
      f"to avoid; got per_sample=True with {name}={chunk_size}. Use moments=True: "
      "Estimate.moments then carries the streamed mean and second moment of the "
      "per-sample gradients, and scoregrad.diagnostics.variance / snr / "
      "total_variance accept it."
    )
  if sharding is not None:
    _check_divides(
      sample_shards(sharding, chunk_size, "sharding"), chunk_size, "sharding", sharding, what=name
    )
  return chunk_size


def check_streamable_baseline(baseline, name: str = "baseline") -> None:
  """Stateless baselines stream; leave-one-out in two passes; the rest is refused."""
  if baseline.stateful:
    raise ValueError(
      f"`{name}={baseline.name}` keeps state across steps, which chunk_size does "
      "not thread through its chunks. Use baselines.leave_one_out() (streamed in "
      "two passes) or a constant, or drop chunk_size."
    )
  if baseline.uses_other_samples and baseline.chunked is None:
    raise ValueError(
      f"`{name}={baseline.name}` computes each sample's baseline from every other "
      "sample's score, which chunk_size cannot stream. Use "
      "baselines.leave_one_out() (streamed in two passes), or drop chunk_size."
    )


def _zeros(shapes):
  return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def rows_moments(rows: PyTree) -> GradientMoments:
  """Count, mean and sum of squared deviations of per-sample rows (leading axis)."""
  rows = jax.lax.stop_gradient(rows)
  n = jax.tree_util.tree_leaves(rows)[0].shape[0]
  mean = jax.tree_util.tree_map(lambda r: jnp.mean(r, axis=0), rows)
  m2 = jax.tree_util.tree_map(lambda r, m: jnp.sum(jnp.square(r - m), axis=0), rows, mean)
  return GradientMoments(count=jnp.asarray(n, jnp.int32), mean=mean, m2=m2)


def combine_moments(a: GradientMoments, b: GradientMoments) -> GradientMoments:
  """Chan et al.'s pairwise update of (count, mean, M2)."""
  count = a.count + b.count

  # The weights in the moments' own dtype: int32 / int32 is computed in
  # float32 by JAX, which would cap x64 moments at float32 precision.
  def share(x):
    return b.count.astype(x.dtype) / jnp.maximum(count, 1).astype(x.dtype)

  def mean(ma, mb):
    return ma + (mb - ma) * share(ma)

  def m2(sa, sb, ma, mb):
    return sa + sb + jnp.square(mb - ma) * (a.count.astype(ma.dtype) * share(ma))

  return GradientMoments(
    count=count,
    mean=jax.tree_util.tree_map(mean, a.mean, b.mean),
    m2=jax.tree_util.tree_map(m2, a.m2, b.m2, a.mean, b.mean),
  )


def with_moments(rows_estimator: GradientEstimator, *, per_sample: bool) -> GradientEstimator:
  """``rows_estimator`` (built with per_sample=True) with ``Estimate.moments`` filled in."""

  def estimate(key, f, dist_fn, params, state) -> Estimate:
    out = rows_estimator.estimate(key, f, dist_fn, params, state)
    values = out.per_sample_values
    return out._replace(
      per_sample=out.per_sample if per_sample else None,
      per_sample_values=values if per_sample else None,
      moments=rows_moments(out.per_sample),
      value_moments=None if values is None else rows_moments(values),
    )

  return GradientEstimator(init=rows_estimator.init, estimate=estimate)


def _no_moments(rows) -> GradientMoments:
  """Count-0 moments shaped like one row of ``rows`` (shapes with a leading axis)."""
  one = jax.tree_util.tree_map(lambda r: jax.ShapeDtypeStruct(r.shape[1:], r.dtype), rows)
  return GradientMoments(count=jnp.zeros((), jnp.int32), mean=_zeros(one), m2=_zeros(one))


def _first_pass(cost_sum: Callable, chunk_key: Callable, index: jax.Array) -> jax.Array:
  """The sum over chunks of ``cost_sum(chunk key)`` (a ``lax.scan``), gradient-free."""
  first = lambda c: cost_sum(chunk_key(c))
  zero = _zeros(jax.eval_shape(first, index[0]))
  total, _ = jax.lax.scan(lambda t, c: (t + first(c), None), zero, index)
  return jax.lax.stop_gradient(total)


def chunked(
  build: Callable[[Optional[jax.Array]], GradientEstimator],
  *,
  num_samples: int,
  chunk_size: int,
  moments: bool,
  total_costs: Optional[Callable] = None,
) -> Callable:
  """The ``estimate`` of a chunked estimator.

  ``build(total)`` makes the estimator of ONE chunk (``num_samples=
  chunk_size``, ``per_sample=moments``); ``total`` is ``None``, or with
  ``total_costs(key, f, dist_fn, params)`` (one chunk's sum of costs) the
  first pass's sum of all costs, for two-pass leave-one-out baselines. Chunk c
  uses the key ``fold_in(key, c)`` in both passes, so both see the same
  samples. The value and the gradient are means over chunks (sums in a
  ``lax.scan`` carry, O(params) memory); their derivatives follow through the
  scan.
  """
  num_chunks = num_samples // chunk_size

  def estimate(key, f, dist_fn, params, state) -> Estimate:
    key = check_key(key)
    chunk_key = lambda c: jax.random.fold_in(key, c)
    index = jnp.arange(num_chunks, dtype=jnp.uint32)
    total = None
    if total_costs is not None:
      total = _first_pass(lambda k: total_costs(k, f, dist_fn, params), chunk_key, index)
    inner = build(total)
    one = lambda c: inner.estimate(chunk_key(c), f, dist_fn, params, state)
    shapes = jax.eval_shape(one, index[0])

    # Checkpointed: reverse mode through the scan recomputes each chunk from
    # its key, so jax.grad of `.value` needs memory O(chunk), not O(n).
    # (Higher derivatives through the scan are right without it too; see
    # tests/test_loops.py.)
    with_values = moments and shapes.per_sample_values is not None

    @jax.checkpoint
    def body(carry, c):
      value, grad, mom, value_mom = carry
      out = one(c)
      grad = jax.tree_util.tree_map(jnp.add, grad, out.grad)
      if moments:
        # From count 0, Chan's update returns the chunk's own moments.
        mom = combine_moments(mom, rows_moments(out.per_sample))
      if with_values:
        value_mom = combine_moments(value_mom, rows_moments(out.per_sample_values))
      return (value + out.value, grad, mom, value_mom), None

    mom0 = _no_moments(shapes.per_sample) if moments else None
    value_mom0 = _no_moments(shapes.per_sample_values) if with_values else None
    carry0 = (
      jnp.zeros(shapes.value.shape, shapes.value.dtype),
      _zeros(shapes.grad),
      mom0,
      value_mom0,
    )
    (value, grad, mom, value_mom), _ = jax.lax.scan(body, carry0, index)
    scale = lambda x: x / jnp.asarray(num_chunks, jnp.result_type(x))
    return Estimate(
      scale(value), jax.tree_util.tree_map(scale, grad), state, None, mom, None, value_mom
    )

  return estimate


def refuse_with_control_variate(chunk_size, moments) -> None:
  if chunk_size is not None or moments:
    which = "chunk_size" if chunk_size is not None else "moments"
    raise ValueError(
      f"`{which}` is not supported together with `control_variate` yet; got "
      f"{which}={chunk_size if chunk_size is not None else moments!r}. Drop one of them "
      "(a chunked control variate is left for later)."
    )


def check_moments(moments) -> bool:
  return check_bool("moments", moments)
