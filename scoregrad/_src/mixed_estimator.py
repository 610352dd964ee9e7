"""The mixed (pathwise-then-score-function) estimator: pathwise first derivatives,
score-function derivatives of the pathwise gradient beyond."""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from scoregrad._src import layers as _layers
from scoregrad._src import sampling as _sampling
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
  unit_box,
)
from scoregrad._src.validation import NotApplicableError, check_bool, check_positive_int
from scoregrad.dists._base import check_reparameterized, families_with


def mixed(
  *,
  num_samples: int,
  per_sample: bool = False,
  sampling: str = "iid",
  chunk_size: Optional[int] = None,
  moments: bool = False,
) -> GradientEstimator:
  r"""The mixed estimator: pathwise gradient, score-function derivatives of it.

  With x = T_θ(ε), ε ~ N(0, I), the pathwise gradient of one sample,
  written as a function of the sample x and θ,

      h(x; θ) = ∇θ T_θ(ε)ᵀ ∇x f(x),   ε = T_θ⁻¹(x),

  has E_p[h(x; θ)] = ∇θ E_p[f(x)] whenever f is continuous with a derivative
  almost everywhere (kinks allowed, jumps not). Differentiating that
  expectation once more by the log-derivative trick, with x held fixed,

      ∇²θ E_p[f] = E_p[h(x; θ) ∇θ log p(x; θ)ᵀ + ∂θ h(x; θ)|_x],

  needs ∇x f only, never ∇²x f: so it is unbiased for a kinked f (a call
  payoff max(s − K, 0), whose pathwise second derivative misses the kink's
  δ-term and is refused by :func:`scoregrad.pathwise`). ``Estimate.value``
  is a surrogate whose value is (1/n) Σ f(x_i), whose gradient is
  (1/n) Σ h(x_i; θ) (exactly :func:`scoregrad.pathwise`'s estimate on the
  same noise) and whose higher derivatives are those of the DiCE surrogate
  (1/n) Σ □(log p(x_i; θ)) h(x_i; θ): unbiased at every order, so
  ``jax.hessian`` of :func:`scoregrad.expectation` with this estimator is
  the mixed Hessian estimator. For the Black–Scholes call's gamma it is
  Broadie & Glasserman's e^{−rT} 1[S_T > K] (S_T/S₀²)(Z/(σ√T) − 1), with
  about 1/13 of the likelihood-ratio gamma's variance at S₀ = K = 100,
  σ = 0.2, T = 1 (``benchmarks/greeks.py``).

  Parameters that ``f`` closes over (a strike, a rate, inside ``jax.grad``)
  are differentiated too: at first order explicitly, ∂c f(x_i); at higher
  orders through the same DiCE surrogate, which needs f twice
  differentiable in them (a kinked f refuses those at trace time).

  Requirements: ``dist_fn(params)`` reparameterized with the family facts
  ``from_normal_noise``/``to_normal_noise`` (Normal, MultivariateNormalTriL,
  LogNormal), f continuous in x (a cost with a jump is refused: use
  :func:`scoregrad.score_function` or :func:`scoregrad.measure_valued`).

  Args:
    num_samples: samples per estimate (a Python int ≥ 1).
    per_sample: also return each sample's gradient h(x_i; θ) in
      ``Estimate.per_sample`` (and the costs in ``per_sample_values``).
    sampling: ``"iid"`` (default), ``"antithetic"`` (noise pairs ε, −ε; even
      ``num_samples``) or ``"qmc"`` (a randomly shifted rank-1 lattice through
      Φ⁻¹), as in :func:`scoregrad.pathwise`; unbiased at every order, the
      rows dependent with the last two.
    chunk_size: stream the samples in chunks; shorthand for
      :func:`scoregrad.chunked` (refused with ``"qmc"``).
    moments: fill ``Estimate.moments``/``value_moments``; shorthand for
      :func:`scoregrad.with_moments`.

  Returns:
    ``GradientEstimator(init, estimate)``; the state is ``EmptyState()``.

  Raises:
    NotApplicableError: at ``estimate`` for a family without
      ``to_normal_noise``.
    DiscontinuousCostError: at ``estimate`` for a cost with a jump in x.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> r, sigma, T, K = 0.05, 0.2, 1.0, 100.0
    >>> def price(s0, key):
    ...   terminal = sg.dists.LogNormal(jnp.log(s0) + (r - sigma**2 / 2) * T,
    ...                                 sigma * jnp.sqrt(T))
    ...   return sg.expectation(lambda s: jnp.exp(-r * T) * jnp.maximum(s - K, 0.0),
    ...                         terminal, key, estimator=sg.mixed(num_samples=10_000))
    >>> gamma = jax.hessian(price)(jnp.array(100.0), jax.random.key(0))  # ≈ 0.0188

  References:
    Broadie & Glasserman, "Estimating Security Price Derivatives Using
    Simulation", Management Science 1996 (the pathwise–likelihood-ratio
    combination for gamma).
    Glasserman, "Monte Carlo Methods in Financial Engineering", Springer
    2003, Section 7.3.3.
    Foerster et al., "DiCE: The Infinitely Differentiable Monte Carlo
    Estimator", ICML 2018 (the surrogate of the higher derivatives).
  """
  num_samples = check_positive_int("num_samples", num_samples)
  per_sample = check_bool("per_sample", per_sample)
  sampling = _sampling.check_sampling(sampling, num_samples)

  def _estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_estimate_inputs(key, f, dist_fn, params)
    dist = call_dist_fn(dist_fn, params)
    check_reparameterized(dist, "dist_fn(params)")
    if not callable(getattr(dist, "to_normal_noise", None)):
      inner = getattr(dist, "dist", dist)
      raise NotApplicableError(
        "scoregrad.mixed writes the pathwise gradient as a function of the sample "
        "x (through ε = T_θ⁻¹(x)), so it needs the family facts from_normal_noise/"
        f"to_normal_noise: scoregrad.dists.{' and '.join(families_with('to_normal_noise'))}"
        f"; `dist_fn(params)` is {type(inner).__name__}. Use scoregrad.score_function "
        "(every order, f need not be differentiable) for other families."
      )
    noise = _sampling.standard_normal_noise(
      key, sampling, num_samples, tuple(dist.event_shape), dist.dtype
    )
    xs = jax.lax.stop_gradient(dist.from_normal_noise(noise))
    example = jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype)
    cost = check_cost(
      f,
      example,
      where="the mixed estimator differentiates it once in x",
      floating=True,
    )
    cost_c, consts = jax.closure_convert(cost, example)
    consts = list(consts)
    value_fn, rows = _surrogate(cost_c, dist_fn)
    value = value_fn(params, consts, xs)
    costs, per, _ = rows(params, consts, xs)
    costs = jax.lax.stop_gradient(costs)
    grad = tree_mean0(per)
    if per_sample:
      return finish(value, grad, state, per, per_sample_values=costs)
    return finish(value, grad, state, None)

  rebuild = _layers.rebuilder(
    mixed, num_samples=num_samples, per_sample=per_sample, sampling=sampling
  )
  traits = _layers.resizable(
    f"mixed(num_samples={num_samples}, sampling={sampling!r})",
    num_samples=num_samples,
    rebuild=rebuild,
    per_sample=per_sample,
    sharding=None,
    rows_coupled_by=None if sampling == "iid" else f"sampling={sampling!r}",
    check_chunk=lambda chunk_size: _sampling.check_chunk(sampling, chunk_size),
  )
  core = describe(GradientEstimator(init=stateless_init, estimate=_estimate), traits)
  return _layers.shorthands(core, control_variate=None, chunk_size=chunk_size, moments=moments)


def _surrogate(cost: Callable, dist_fn: Callable):
  """``value_fn(params, consts, xs)`` and the per-sample ``rows`` it differentiates.

  ``value_fn``'s value is mean cost(x_i, *consts); its JVP is
  ⟨mean_i □_i h_i(params), dparams⟩ + ⟨mean_i □_i ∂c cost(x_i), dconsts⟩,
  written with JAX operations on the primals, so that an outer derivative
  differentiates the rows themselves (x_i fixed): the DiCE surrogate of
  E[h(x; θ)] (see :func:`mixed`). The boxes □_i = unit_box(log p(x_i; θ))
  are ones in value.
  """

  def rows(params, consts, xs):
    taus = jax.vmap(lambda x: call_dist_fn(dist_fn, params).log_prob(x))(xs)
    boxes = unit_box(taus)

    def one(x, box):
      value, (dx, dconsts) = jax.value_and_grad(lambda x_, c_: cost(x_, *c_), argnums=(0, 1))(
        x, consts
      )
      eps = call_dist_fn(dist_fn, params).to_normal_noise(x)

      def tangent(p):
        moved = call_dist_fn(dist_fn, p).from_normal_noise(eps)
        return jnp.sum(moved * dx.astype(moved.dtype))

      h = jax.grad(tangent)(params)
      scale = lambda leaf: box.astype(leaf.dtype) * leaf
      return value, jax.tree_util.tree_map(scale, h), jax.tree_util.tree_map(scale, dconsts)

    return jax.vmap(one)(xs, boxes)

  @jax.custom_jvp
  def value_fn(params, consts, xs):
    return jnp.mean(jax.vmap(lambda x: cost(x, *consts))(xs))

  @value_fn.defjvp
  def _value_jvp(primals, tangents):
    params, consts, xs = primals
    dparams, dconsts, _ = tangents
    costs, h, e = rows(params, consts, xs)
    value = jnp.mean(costs)
    out = jnp.zeros((), value.dtype)
    for rows_, ts in ((h, dparams), (e, dconsts)):
      for r, t in zip(jax.tree_util.tree_leaves(rows_), jax.tree_util.tree_leaves(ts)):
        out = out + jnp.sum(jnp.mean(r, axis=0) * t).astype(value.dtype)
    return value, out

  return value_fn, rows
