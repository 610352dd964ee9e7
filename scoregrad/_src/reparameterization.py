"""The pathwise (reparameterization) estimator."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from scoregrad._src import control_variates as _cv
from scoregrad._src import layers as _layers
from scoregrad._src import sampling as _sampling
from scoregrad._src import scale as _scale
from scoregrad._src.base import (
  Estimate,
  GradientEstimator,
  call_dist_fn,
  check_cost,
  check_estimate_inputs,
  describe,
  finish,
  stateless_init,
  tree_mean0,
)
from scoregrad._src.validation import check_bool, check_positive_int
from scoregrad.dists._base import check_reparameterized


class PathwiseState(NamedTuple):
  """Deprecated: the state of 0.1's ``pathwise`` with a control variate.

  ``pathwise`` now keeps ``EmptyState()``, and with a control variate a
  :class:`~scoregrad.control_variates.ControlVariateState`. Kept for one
  release so that code naming it still imports.
  """

  control_variate: object = ()


def pathwise(
  *,
  num_samples: int,
  per_sample: bool = False,
  control_variate: Optional[_cv.ControlVariate] = None,
  sampling: str = "iid",
  sharding: Optional[Any] = None,
  chunk_size: Optional[int] = None,
  moments: bool = False,
) -> GradientEstimator:
  r"""The pathwise (reparameterization) estimator of ∇θ E_{p(x;θ)}[f(x)].

  With x = g(ε; θ), ε ~ q independent of θ,

      ∇θ E_p[f(x)] = E_q[∇x f(g(ε; θ)) ∇θ g(ε; θ)] ≈ (1/n) Σ_i ∇θ f(g(ε_i; θ)).

  Requirements: the distribution must be reparameterized
  (``dist.reparameterized``: Normal, MultivariateNormalTriL, Exponential, Gamma
  and Laplace here)
  and f differentiable in x. Usually far lower variance than the score
  function for smooth f.

  Args:
    num_samples: samples per estimate (a Python int ≥ 1).
    per_sample: also return each sample's gradient via ``vmap(grad)``.
    control_variate: a :mod:`scoregrad.control_variates` control variate h:
      the estimate becomes (1/n) Σ_i ∇θ[f(x_i) − β h(x_i)] + β ∇θ E[h]
      (unbiased; zero variance for quadratic f with ``delta_method()``).
      Shorthand for ``scoregrad.with_control_variate(pathwise(...),
      control_variate)``. An estimated coefficient needs independent
      per-sample gradients, so it is refused with ``sampling="antithetic"``
      or ``"qmc"``.
    sampling: ``"iid"`` (default), ``"antithetic"`` (pairs ε, −ε; even
      ``num_samples``) or ``"qmc"`` (a randomly shifted rank-1 lattice through
      Φ⁻¹); the last two for Gaussian families (those defining
      ``from_standard_normal``: Normal and MultivariateNormalTriL), see
      :mod:`scoregrad.sampling`. All three are unbiased; with the last two the
      per-sample gradients of one estimate are dependent, so measure variance
      across keys, not from ``per_sample``.
    sharding: a ``jax.sharding.Sharding`` of the leading sample axis (the
      per-sample keys, or the noise, are generated sharded; see
      :func:`scoregrad.score_function`). Its sample-axis size must divide
      ``num_samples``.
    chunk_size: process the samples ``chunk_size`` at a time in a
      ``lax.scan`` (memory O(chunk_size × params)); must divide
      ``num_samples``; chunk c draws with ``jax.random.fold_in(key, c)``.
      With ``sampling="antithetic"`` pairs stay within a chunk (even
      ``chunk_size``); refused with ``"qmc"`` (it would change the point set).
    moments: fill ``Estimate.moments`` (:class:`scoregrad.GradientMoments`).

  Returns:
    ``GradientEstimator(init, estimate)``; ``estimate(key, f, dist_fn, params,
    state) -> Estimate``. The state is ``EmptyState()``, or a
    :class:`~scoregrad.control_variates.ControlVariateState` with a control
    variate.

  Raises:
    ValueError: at ``estimate`` if ``dist_fn(params)`` is not reparameterized,
      or not Gaussian with ``sampling="antithetic"``/``"qmc"``.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.pathwise(num_samples=100)
    >>> dist_fn = lambda p: sg.dists.Normal(p[0], p[1])
    >>> params = jnp.array([1.0, 1.0])
    >>> out = est.estimate(jax.random.key(0), jnp.sin, dist_fn, params, est.init(params))

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
    Mohamed et al., "Monte Carlo Gradient Estimation in Machine Learning",
    JMLR 2020, Section 5.
  """
  num_samples = check_positive_int("num_samples", num_samples)
  per_sample = check_bool("per_sample", per_sample)
  sampling = _sampling.check_sampling(sampling, num_samples)
  sharding = _scale.check_sharding(sharding, num_samples)

  def _estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_estimate_inputs(key, f, dist_fn, params)
    dist = call_dist_fn(dist_fn, params)
    check_reparameterized(dist, "dist_fn(params)")
    if sampling == "iid":
      keys = _scale.shard_samples(
        lambda k: jax.random.split(k, num_samples), sharding, num_samples
      )(key)
      draw = lambda p, k: call_dist_fn(dist_fn, p).sample(k)
    else:
      _sampling.check_gaussian(dist, sampling)
      keys = _scale.shard_samples(
        lambda k: _sampling.standard_normal_noise(
          k, sampling, num_samples, tuple(dist.event_shape), dist.dtype
        ),
        sharding,
        num_samples,
      )(key)
      draw = lambda p, eps: call_dist_fn(dist_fn, p).from_standard_normal(eps)
    f = check_cost(
      f,
      jax.eval_shape(draw, params, jax.tree_util.tree_map(lambda k: k[0], keys)),
      where="the pathwise estimator differentiates it",
      floating=True,
    )

    def one_cost(p, k):
      return f(draw(p, k))

    if per_sample:
      costs, per = jax.vmap(jax.value_and_grad(one_cost), in_axes=(None, 0))(params, keys)
      return finish(jnp.mean(costs), tree_mean0(per), state, per, per_sample_values=costs)

    def mean_cost(p):
      return jnp.mean(jax.vmap(one_cost, in_axes=(None, 0))(p, keys))

    value, grad = jax.value_and_grad(mean_cost)(params)
    return finish(value, grad, state, None)

  rebuild = _layers.rebuilder(
    pathwise, num_samples=num_samples, per_sample=per_sample, sampling=sampling, sharding=sharding
  )

  traits = _layers.resizable(
    f"pathwise(num_samples={num_samples}, sampling={sampling!r})",
    num_samples=num_samples,
    rebuild=rebuild,
    per_sample=per_sample,
    sharding=sharding,
    rows_coupled_by=None if sampling == "iid" else f"sampling={sampling!r}",
    check_chunk=lambda chunk_size: _sampling.check_chunk(sampling, chunk_size),
  )
  core = describe(GradientEstimator(init=stateless_init, estimate=_estimate), traits)
  return _layers.shorthands(
    core, control_variate=control_variate, chunk_size=chunk_size, moments=moments
  )
