r"""Layers: features that wrap ANY estimator, as optax wraps transformations.

``optax.MultiSteps(opt, k)`` or ``optax.apply_if_finite(opt, n)`` take a
transformation and return one; no optimizer takes ``every_k=``. The
cross-cutting features of scoregrad's estimators are layers of the same kind:

* :func:`chunked` — stream the samples ``chunk_size`` at a time through a
  ``lax.scan`` (memory O(chunk_size × params));
* :func:`sharded` — draw and cost the sample axis sharded across devices;
* :func:`with_moments` — fill ``Estimate.moments`` with the streamed moments of
  the per-sample gradients;
* :func:`scoregrad.with_control_variate` — a control variate around any
  estimator (in :mod:`scoregrad._src.variance_reduction`);
* :func:`with_fitness_shaping` — the costs of each estimate replaced by
  utilities computed across its samples (an evolution strategy);
* :func:`scoregrad.natural_gradient` — the gradient preconditioned by the
  exact Fisher information of the search distribution (in
  :mod:`scoregrad._src.natural`).

Each takes a :class:`~scoregrad.GradientEstimator` and returns one; they compose
in any order that means something (``chunked(with_moments(e), c)`` and
``with_moments(chunked(e, c))`` are the same estimator). A layer asks the
estimator what it needs to know through the :class:`~scoregrad.Traits` the
factories attach (can it be rebuilt with another ``num_samples``? are its
per-sample rows independent? how is it streamed in two passes?) and refuses
what the estimator cannot do with an error that names both; it never lists
estimators by name.

The factory keywords ``chunk_size=``, ``sharding=``, ``moments=`` and
``control_variate=`` are one-line shorthands for these layers (:func:`shorthands`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from scoregrad._src import scale as _scale
from scoregrad._src.base import GradientEstimator, Traits, describe, stateless_init, traits_of
from scoregrad._src.validation import check_estimator


def _traits(estimator: Any, layer: str, needs: str) -> Traits:
  estimator = check_estimator(estimator, "estimator")
  traits = traits_of(estimator)
  if traits is None:
    raise TypeError(
      f"scoregrad.{layer} needs to {needs}, and the estimator it was given does "
      f"not say how: {estimator!r} carries no scoregrad.Traits (it was not "
      "returned by a scoregrad factory, or was changed with _replace). Wrap the "
      f"factory's own output, e.g. scoregrad.{layer}(scoregrad.score_function("
      "num_samples=...), ...), or attach Traits to your estimator with "
      "scoregrad.describe(estimator, scoregrad.Traits(...))."
    )
  return traits


def _core(estimator: GradientEstimator, traits: Traits) -> tuple[GradientEstimator, Traits]:
  """The estimator under its chunking/moments layers, and its traits."""
  if traits.chunk_size is None and not traits.moments:
    return estimator, traits
  core = traits.rebuild(_layers=False)  # type: ignore[misc]
  return core, traits_of(core)  # type: ignore[return-value]


def _assemble(core: GradientEstimator, chunk_size: Optional[int], moments: bool):
  """``core`` streamed in chunks of ``chunk_size`` and/or with moments: ONE code path."""
  traits = traits_of(core)
  assert traits is not None and traits.chunk_size is None and not traits.moments
  if chunk_size is None and not moments:
    return core
  if chunk_size is None:
    rows = core if traits.per_sample else traits.rebuild(per_sample=True)  # type: ignore[misc]
    estimator = _scale.with_moments(rows, per_sample=traits.per_sample)
    name = f"with_moments({traits.name})"
  else:
    assert traits.chunk_plan is not None
    build, total_costs = traits.chunk_plan(chunk_size, moments)
    estimator = GradientEstimator(
      init=core.init,
      estimate=_scale.chunked(
        build,
        num_samples=traits.num_samples,
        chunk_size=chunk_size,
        moments=moments,
        total_costs=total_costs,
      ),
    )
    name = f"chunked({traits.name}, chunk_size={chunk_size})"
    if moments:
      name = f"with_moments({name})"
  rebuild = traits.rebuild

  def rebuild_layered(_layers: bool = True, **settings):
    inner = rebuild(**settings)  # type: ignore[misc]
    return _assemble(inner, chunk_size, moments) if _layers else inner

  return describe(
    estimator,
    traits._replace(
      name=name,
      rebuild=rebuild_layered,
      per_sample=traits.per_sample and chunk_size is None,
      chunk_size=chunk_size,
      moments=moments,
      fit_rows=None,
    ),
  )


def chunked(estimator: GradientEstimator, chunk_size: int) -> GradientEstimator:
  r"""``estimator`` with its samples processed ``chunk_size`` at a time in a ``lax.scan``.

  Temporary memory is O(chunk_size × params) instead of O(num_samples ×
  params), so ``num_samples`` can reach 10⁸ on one CPU. Chunk c draws its
  samples with ``jax.random.fold_in(key, c)``; the estimate is the mean over
  chunks of the estimator with ``num_samples=chunk_size`` under those keys
  (the same estimator — unbiased as before — not the same samples), except
  that a leave-one-out baseline is computed in two passes over the chunks
  (first the sum of all costs), so that each b_i is the mean of all the other
  num_samples − 1 costs, as unchunked. Derivatives of every order of
  ``.value`` follow through the (checkpointed) scan.

  Requirements: the estimator says how to be rebuilt with another sample
  count (every scoregrad factory's output does); ``chunk_size`` divides its
  ``num_samples`` (``num_pairs`` for DisARM); no ``per_sample`` rows (use
  :func:`with_moments`); a baseline that keeps state, or that needs every
  other sample's score (``optimal()``), cannot be streamed and is refused.

  Args:
    estimator: a :class:`~scoregrad.GradientEstimator` from a scoregrad factory
      (possibly already wrapped by :func:`with_moments` or :func:`sharded`).
    chunk_size: samples per chunk (a Python int dividing ``num_samples``).

  Returns:
    A ``GradientEstimator`` with the same ``init`` and state.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.chunked(sg.score_function(num_samples=4096,
    ...                  baseline=sg.baselines.leave_one_out()), chunk_size=512)
    >>> params = jnp.array([0.5, 1.0])
    >>> dist_fn = lambda p: sg.dists.Normal(p[0], p[1])
    >>> out = est.estimate(jax.random.key(0), jnp.square, dist_fn, params,
    ...                    est.init(params))

  References:
    Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm for
    computing sample variances", COMPSTAT 1982 (the streamed moments).
  """
  traits = _traits(estimator, "chunked", "rebuild the estimator with chunk_size samples")
  if traits.chunk_size is not None:
    raise ValueError(
      f"`estimator` is already chunked ({traits.name}); got chunk_size={chunk_size!r} "
      "for a second layer. Chunk once: scoregrad.chunked(estimator, chunk_size) on the "
      "unchunked estimator."
    )
  core, core_traits = _core(estimator, traits)
  if core_traits.chunk_plan is None:
    raise ValueError(
      f"{core_traits.name} cannot be streamed in chunks: it says no chunk plan "
      f"(got chunk_size={chunk_size!r}). Use it unchunked."
    )
  chunk_size = _scale.check_chunk_size(
    chunk_size,
    core_traits.num_samples,
    core_traits.sharding,
    per_sample=core_traits.per_sample,
    samples_name=core_traits.samples_name,
  )
  return _assemble(core, chunk_size, traits.moments)


def with_moments(estimator: GradientEstimator) -> GradientEstimator:
  r"""``estimator`` with ``Estimate.moments`` filled in.

  ``Estimate.moments`` is a :class:`~scoregrad.GradientMoments`: the count, the
  mean and the sum of squared deviations of the per-sample gradients (for a
  chunked estimator, combined across chunks by Chan et al.'s parallel update,
  so the num_samples × params rows never exist at once), from which
  :func:`scoregrad.diagnostics.variance`, ``standard_error``, ``snr`` and
  ``total_variance`` compute. ``Estimate.per_sample`` stays as the estimator
  had it.

  Args:
    estimator: a :class:`~scoregrad.GradientEstimator` from a scoregrad factory
      (possibly chunked or sharded).

  Returns:
    A ``GradientEstimator`` with the same ``init`` and state.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.with_moments(sg.pathwise(num_samples=256))
    >>> params = jnp.array([0.5, 1.0])
    >>> out = est.estimate(jax.random.key(0), jnp.sin,
    ...                    lambda p: sg.dists.Normal(p[0], p[1]), params, est.init(params))
    >>> variance = sg.diagnostics.variance(out.moments)
  """
  traits = _traits(estimator, "with_moments", "rebuild the estimator with per-sample rows")
  if traits.moments:
    return estimator
  core, _ = _core(estimator, traits)
  return _assemble(core, traits.chunk_size, True)


def sharded(estimator: GradientEstimator, sharding: Any) -> GradientEstimator:
  r"""``estimator`` with its sample axis generated and costed sharded across devices.

  ``sharding`` is a :class:`jax.sharding.Sharding` of the leading sample axis
  (e.g. ``NamedSharding(mesh, PartitionSpec("samples"))``), or a bare
  ``PartitionSpec`` resolved against the mesh set with ``jax.set_mesh``. Under
  ``jax.jit`` each device draws and costs its own samples and the sums over
  the sample axis (value, gradient, baselines, control-variate coefficients)
  become all-reduce collectives; the estimate equals the unsharded one to
  float tolerance (JAX's partitionable threefry makes a sharded draw the
  unsharded draw). See :mod:`scoregrad._src.scale` for the details.

  Args:
    estimator: a :class:`~scoregrad.GradientEstimator` from a scoregrad factory
      (possibly chunked: then each chunk is sharded, and the shards must
      divide ``chunk_size``).
    sharding: the sample axis's sharding; its number of shards must divide
      ``num_samples``.

  Returns:
    A ``GradientEstimator`` with the same ``init`` and state.

  Example:
    >>> import jax, scoregrad as sg
    >>> mesh = jax.make_mesh((jax.device_count(),), ("samples",))
    >>> sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("samples"))
    >>> est = sg.sharded(sg.score_function(num_samples=64), sharding)
  """
  traits = _traits(estimator, "sharded", "rebuild the estimator with a sharded sample axis")
  _, core_traits = _core(estimator, traits)
  if core_traits.sharding is not None:
    raise ValueError(
      f"`estimator` is already sharded ({core_traits.name}, sharding="
      f"{core_traits.sharding!r}); got sharding={sharding!r} for a second layer. "
      "Shard once."
    )
  sharding = _scale.check_sharding(sharding, core_traits.num_samples)
  if traits.chunk_size is not None:
    _scale.check_chunk_size(
      traits.chunk_size,
      core_traits.num_samples,
      sharding,
      per_sample=False,
      samples_name=core_traits.samples_name,
    )
  return _assemble(core_traits.rebuild(sharding=sharding), traits.chunk_size, traits.moments)  # type: ignore[misc]


def with_fitness_shaping(estimator: GradientEstimator, fitness_shaping: Any) -> GradientEstimator:
  r"""``estimator`` with the costs of each estimate replaced by shaped utilities.

  For the n costs c_i = f(x_i) of one estimate, the utilities u = s(c)
  (:mod:`scoregrad.shaping`: centered ranks, z-scores, min–max, NES/CMA rank
  weights) weight the scores instead: for the score function

      ĝ = (1/n) Σ_i (u_i − b_i) ∇θ log p(x_i; θ),

  the search gradient of an evolution strategy (OpenAI-ES with
  ``centered_ranks()`` and ``sampling="antithetic"``; SNES with
  ``rank_weights()`` and :func:`scoregrad.natural_gradient`). ĝ is biased for
  ∇θ E[f] and unbiased for the shaped objective E_θ[h_θ₀(x)], h_θ₀(x) the
  expected utility of x among n − 1 fresh samples (exact for i.i.d.
  samples; see :mod:`scoregrad.shaping`). ``.value`` stays the mean of the
  raw costs, and its first derivative is ĝ; second derivatives raise.

  Requirements: the estimator says it accepts a cost shaping (its Traits'
  ``shapes_costs``; ``score_function``'s do); at least 2 samples; not
  chunked (the shaping needs every cost of the estimate at once) and not
  already shaped.

  Args:
    estimator: a :class:`~scoregrad.GradientEstimator` from a factory whose
      traits accept shaping (possibly sharded or with moments).
    fitness_shaping: a :class:`~scoregrad.shaping.FitnessShaping`.

  Returns:
    A ``GradientEstimator`` with the same ``init`` and state.

  Example:
    >>> import jax, jax.numpy as jnp, optax, scoregrad as sg
    >>> est = sg.with_fitness_shaping(
    ...     sg.score_function(num_samples=64, sampling="antithetic"),
    ...     sg.shaping.centered_ranks())
    >>> params = {"loc": jnp.ones(3), "scale": jnp.ones(3)}
    >>> dist_fn = lambda p: sg.dists.Normal(p["loc"], p["scale"])
    >>> out = est.estimate(jax.random.key(0), lambda x: jnp.sum(x**2), dist_fn,
    ...                    params, est.init(params))

  References:
    Wierstra et al., "Natural Evolution Strategies", JMLR 2014, Section 3.1.
    Salimans et al., "Evolution Strategies as a Scalable Alternative to
    Reinforcement Learning", 2017.
  """
  from scoregrad._src import shaping as _shaping  # pylint: disable=g-import-not-at-top

  traits = _traits(estimator, "with_fitness_shaping", "rebuild the estimator with shaped costs")
  if not traits.shapes_costs:
    raise ValueError(
      f"{traits.name} does not accept a fitness shaping (its traits say "
      f"shapes_costs=False); got fitness_shaping={fitness_shaping!r}. Use "
      "scoregrad.score_function(num_samples=...), the estimator whose costs weight "
      "the scores."
    )
  if traits.chunk_size is not None:
    raise ValueError(
      f"`estimator` is chunked ({traits.name}), and fitness shaping transforms the "
      "costs across ALL samples of one estimate; got fitness_shaping="
      f"{getattr(fitness_shaping, 'name', fitness_shaping)}. Shape the unchunked estimator."
    )
  if traits.fitness_shaping is not None:
    raise ValueError(
      f"`estimator` is already shaped ({traits.name}); got fitness_shaping="
      f"{getattr(fitness_shaping, 'name', fitness_shaping)} for a second layer. Shape once."
    )
  _, core_traits = _core(estimator, traits)
  _shaping.check_fitness_shaping(fitness_shaping, core_traits.num_samples, core_traits.samples_name)
  return _assemble(core_traits.rebuild(fitness_shaping=fitness_shaping), None, traits.moments)  # type: ignore[misc]


def rebuilder(factory: Callable[..., GradientEstimator], **settings) -> Callable[..., Any]:
  """``rebuild(**changes)``: ``factory`` called with ``settings`` updated by ``changes``."""
  return lambda **changes: factory(**{**settings, **changes})


def resizable(
  name: str,
  *,
  num_samples: int,
  rebuild: Callable[..., GradientEstimator],
  per_sample: bool,
  sharding: Any,
  samples_name: str = "num_samples",
  rows_coupled_by: Optional[str] = None,
  check_chunk: Optional[Callable[[int], None]] = None,
) -> Traits:
  """The Traits of a stateless estimator whose chunks are the estimator at ``chunk_size``.

  ``rebuild(**settings)`` calls the factory with settings replaced;
  ``check_chunk(chunk_size)`` raises for a chunk size the estimator refuses.
  """

  def chunk_plan(chunk_size: int, rows: bool):
    if check_chunk is not None:
      check_chunk(chunk_size)
    return (lambda _: rebuild(**{samples_name: chunk_size, "per_sample": rows})), None

  return Traits(
    name=name,
    num_samples=num_samples,
    samples_name=samples_name,
    rebuild=rebuild,
    per_sample=per_sample,
    sharding=sharding,
    rows_coupled_by=rows_coupled_by,
    chunk_plan=chunk_plan,
  )


def stateless(factory: Callable[..., GradientEstimator], estimate: Callable, **settings):
  """``GradientEstimator(stateless_init, estimate)`` carrying the Traits of a stateless
  estimator with i.i.d. rows, rebuilt by ``factory(**settings)``.

  ``settings`` are the factory's keywords (``num_samples`` and ``per_sample``
  among them); the name lists them in order, ``per_sample`` aside.
  """
  shown = ", ".join(
    f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
    for k, v in settings.items()
    if k != "per_sample"
  )
  traits = resizable(
    f"{factory.__name__}({shown})",
    num_samples=settings["num_samples"],
    rebuild=rebuilder(factory, **settings),
    per_sample=settings["per_sample"],
    sharding=None,
  )
  return describe(GradientEstimator(init=stateless_init, estimate=estimate), traits)


def shorthands(
  core: GradientEstimator,
  *,
  control_variate: Any = None,
  chunk_size: Optional[int] = None,
  moments: bool = False,
) -> GradientEstimator:
  """The factory keywords ``control_variate=``, ``chunk_size=``, ``moments=`` as layers.

  ``core`` is the factory's plain estimator (``sharding=`` is one of its own
  settings: :func:`sharded` rebuilds it). One code path for keyword and layer.
  """
  from scoregrad._src import variance_reduction as _vr  # pylint: disable=g-import-not-at-top

  traits = traits_of(core)
  assert traits is not None
  moments = _scale.check_moments(moments)
  if chunk_size is not None:
    chunk_size = _scale.check_chunk_size(
      chunk_size,
      traits.num_samples,
      traits.sharding,
      per_sample=traits.per_sample,
      samples_name=traits.samples_name,
    )
  if control_variate is not None:
    _scale.refuse_with_control_variate(chunk_size, moments)
    return _vr.shorthand(core, control_variate)
  if chunk_size is not None:
    return chunked(with_moments(core) if moments else core, chunk_size)
  if moments:
    return with_moments(core)
  return core
