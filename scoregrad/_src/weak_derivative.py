"""The measure-valued (weak-derivative) estimator.

A density's derivative in one of its parameters θ_j is a signed measure, and
for the families here it splits into a constant times the difference of two
probability distributions (a *weak derivative* triple (c, p⁺, p⁻)):

    ∂θ_j p(x; θ) = c_j(θ) [p⁺_j(x; θ) − p⁻_j(x; θ)],

so that ∂θ_j E_p[f(x)] = c_j (E_{p⁺_j}[f] − E_{p⁻_j}[f]). For distributions
with independent coordinates, θ_j touches only coordinate j: the estimator
draws x ~ p, replaces coordinate j by a draw from p⁺_j (and by one from
p⁻_j), and takes the scaled difference of f at the two points. Nothing is
asked of f (no derivative, no continuity); it costs about two evaluations of
f per sample and per parameter coordinate.

Decompositions (Mohamed et al. 2020, Table 1 and Section 6; Pflug 1989):

==============  ===========  ==================  =====================  =========================
family          parameter    c                   p⁺                     p⁻
==============  ===========  ==================  =====================  =========================
Normal(μ, σ)    loc μ        1/(σ√(2π))          μ + σ·Weibull(√2, 2)   μ − σ·Weibull(√2, 2)
Normal(μ, σ)    scale σ      1/σ                 μ + σ·dsMaxwell(0, 1)  N(μ, σ²)
Bernoulli       logits ℓ     p(1 − p)            δ₁                     δ₀
Categorical     logits ℓ_k   π_k                 δ_k                    Categorical(π)
Poisson(λ)      rate λ       1                   1 + Poisson(λ)         Poisson(λ)
Exponential(λ)  rate λ       1/λ                 Exponential(λ)         Gamma(2, λ)
Gamma(α, β)     rate β       α/β                 Gamma(α, β)            Gamma(α + 1, β)
Laplace(μ, b)   loc μ        1/(2b)              μ + b·Exponential(1)   μ − b·Exponential(1)
Laplace(μ, b)   scale b      1/b                 μ ± b·Gamma(2, 1)      Laplace(μ, b)
==============  ===========  ==================  =====================  =========================

(Bernoulli and Categorical are exact: ∂p E[f] = f(1) − f(0), and for logits
∂ℓ_k E[f] = π_k (f(k) − E_π[f]).) *Coupling* draws p⁺ and p⁻ with common
random numbers: the same Weibull draw for both signs of the mean; U·M (U
uniform, M double-sided Maxwell, which is exactly N(0, 1)) for the scale; and
for Poisson, Exponential, Gamma and Categorical the base sample itself as
the p⁻ (resp. p⁺) point, the other one derived from it (x + 1; x + e/λ with
e ~ Exponential(1)). Coupling never changes the expectation.

References:
  Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in
  Machine Learning", JMLR 2020, Section 6.
  Pflug, "Sampling derivatives of probabilities", Computing 1989.
  Heidergott & Vázquez-Abad, "Measure-valued differentiation for Markov
  chains", J. Optim. Theory Appl. 2008.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
from jax.extend.core import Literal
import jax.numpy as jnp

from scoregrad._src import control_variates as _cv
from scoregrad._src import layers as _layers
from scoregrad._src import scale as _scale
from scoregrad._src.base import (
  Estimate,
  GradientEstimator,
  call_dist_fn,
  check_estimate_inputs,
  describe,
  evaluate_costs,
  finish,
  first_order_only,
  gradient_carrier,
  stateless_init,
  tree_mean0,
)
from scoregrad._src.validation import NotApplicableError, check_bool, check_positive_int
from scoregrad.dists._base import all_families


class MeasureValuedState(NamedTuple):
  """Deprecated: the state of 0.1's ``measure_valued`` with a control variate.

  ``measure_valued`` now keeps ``EmptyState()``, and with a control variate a
  :class:`~scoregrad.control_variates.ControlVariateState`. Kept for one
  release so that code naming it still imports.
  """

  control_variate: object = ()


def has_weak_derivative(dist) -> bool:
  return callable(getattr(dist, "weak_derivative", None)) and callable(
    getattr(dist, "weak_derivative_params", None)
  )


def check_weak_derivative(
  dist,
  *,
  estimator: str = "measure_valued",
  name: str = "dist_fn(params)",
  also: str = "",
  instead: str = "",
) -> None:
  """Raises, listing the families that have one, unless ``dist`` has a weak derivative."""
  if has_weak_derivative(dist):
    return
  inner = getattr(dist, "dist", dist)
  described = dict.fromkeys(
    c.weak_derivative_description
    for c in all_families()
    if callable(getattr(c, "weak_derivative", None))
  )
  supported = "; ".join([also] * bool(also) + [f"scoregrad.dists.{d}" for d in described])
  instead = instead or (
    "For other distributions use scoregrad.score_function(num_samples=...) "
    "(any distribution with a log_prob) or scoregrad.pathwise(num_samples=...) "
    "(reparameterized ones)."
  )
  raise NotApplicableError(
    f"{estimator} has no weak-derivative decomposition for `{name}` of type "
    f"{type(inner).__name__}. Supported: {supported}. {instead}"
  )


def dependence(fn: Callable, params) -> tuple:
  """For each output leaf of ``fn(params)``, whether it depends on ``params``.

  Structural (on the traced program), so it works under ``jax.jit``; a leaf
  that merely closes over constants is reported as independent.
  """
  jaxpr = jax.make_jaxpr(fn)(params).jaxpr
  live = set(jaxpr.invars)
  for eqn in jaxpr.eqns:
    if any(not isinstance(v, Literal) and v in live for v in eqn.invars):
      live.update(eqn.outvars)
  return tuple(not isinstance(v, Literal) and v in live for v in jaxpr.outvars)


def check_fixed_parameters(dist, active, *, estimator: str = "measure_valued") -> None:
  """Raises if a parameter the family cannot differentiate depends on ``params``."""
  names = tuple(dist.weak_derivative_params())
  for name, is_active in zip(names, active):
    if is_active and name in dist.weak_derivative_fixed:
      free = ", ".join(n for n in names if n not in dist.weak_derivative_fixed)
      raise ValueError(
        f"{estimator} differentiates a {type(dist).__name__} distribution through "
        f"its {free} only, but `dist_fn(params)` makes the {type(dist).__name__}'s "
        f"{name} depend on `params`. Keep the {name} constant (close over it in "
        "dist_fn), or use scoregrad.pathwise(num_samples=...) if the family is "
        "reparameterized, or scoregrad.score_function(num_samples=...)."
      )


def weak_derivative_terms(key, fn, dist, active, coupling, base, fbase):
  """Per-sample weak-derivative estimates for the canonical parameters.

  Returns a list (one per canonical parameter, in the family's order) of
  arrays of shape ``(n, *param.shape, M)`` (``None`` for parameters not
  differentiated), where ``fn`` returns M values per sample.
  """
  n = base.shape[0]
  flat = base.reshape(n, -1)
  raw = dist.weak_derivative(key, fn, flat, fbase, active, coupling)
  out = []
  for g, c in zip(raw, dist.weak_derivative_params().values()):
    out.append(None if g is None else g.reshape((n,) + c.shape + g.shape[-1:]))
  return out


def measure_valued(
  *,
  num_samples: int,
  coupling: bool = True,
  per_sample: bool = False,
  control_variate: Optional[_cv.ControlVariate] = None,
  sharding: Optional[Any] = None,
  chunk_size: Optional[int] = None,
  moments: bool = False,
) -> GradientEstimator:
  r"""The measure-valued (weak-derivative) estimator of ∇θ E_{p(x;θ)}[f(x)].

  With the weak derivative ∂η_j p = c_j (p⁺_j − p⁻_j) of each of the
  distribution's own parameters η (see the module docstring for the table),

      ∂η_j E_p[f] ≈ (1/n) Σ_i c_j [f(x_i ⊕_j x⁺_ij) − f(x_i ⊕_j x⁻_ij)],

  where x_i ~ p and x ⊕_j v replaces coordinate j of x by v, x⁺_ij ~ p⁺_j,
  x⁻_ij ~ p⁻_j. The gradient with respect to ``params`` follows by the chain
  rule through ``dist_fn``: ∇params = J_ηᵀ ∂η, one ``jax.vjp`` of the map
  params → η, so any pytree of params works.

  Requirements: ``dist_fn(params)``'s family defines a weak-derivative
  decomposition (``weak_derivative_params`` and ``weak_derivative``, see
  :mod:`scoregrad.dists`): Normal (loc, scale), Bernoulli (logits),
  Categorical (logits), Poisson (rate), Exponential (rate), Gamma (rate; its
  concentration must not depend on ``params``), Laplace (loc, scale), or a
  family you add. Nothing on f: it
  may be discontinuous or a black box. Cost: about 2·n·d evaluations of f for
  d coordinates (Categorical: n·d·K + n; coupled Poisson/Exponential/Gamma:
  n·d + n). Low variance for smooth or bounded f; independent of the scale
  of f's mean (no baseline needed).

  Args:
    num_samples: samples x_i per estimate (a Python int ≥ 1).
    coupling: draw p⁺ and p⁻ with common random numbers (default True; see
      the module docstring). Unbiased either way; it usually, not always,
      lowers the variance (for the Normal mean with a monotone f it raises it).
    per_sample: also return each sample's gradient, leaves
      ``(num_samples, *param.shape)``, in ``Estimate.per_sample``.
    control_variate: a :mod:`scoregrad.control_variates` control variate
      (e.g. ``delta_method()``), subtracted from f at the same points and
      added back through its closed-form expectation; unbiased. Shorthand for
      ``scoregrad.with_control_variate(measure_valued(...), control_variate)``.
    sharding: a ``jax.sharding.Sharding`` of the leading sample axis (the
      base samples and costs are generated sharded, the weak-derivative
      points follow them; see :func:`scoregrad.score_function`).
    chunk_size: process the samples ``chunk_size`` at a time in a
      ``lax.scan`` (memory O(chunk_size × params)); must divide
      ``num_samples``; chunk c draws with ``jax.random.fold_in(key, c)``.
    moments: fill ``Estimate.moments`` (:class:`scoregrad.GradientMoments`).

  Returns:
    ``GradientEstimator(init, estimate)``; ``estimate(key, f, dist_fn, params,
    state) -> Estimate``. The state is ``EmptyState()`` (a
    :class:`~scoregrad.control_variates.ControlVariateState` with a control
    variate).

  Raises:
    ValueError: at ``estimate``, for a distribution without a decomposition
      (the message lists the supported ones).

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.measure_valued(num_samples=1000)
    >>> params = {"loc": jnp.array([0.5, -1.0]), "log_scale": jnp.zeros(2)}
    >>> dist_fn = lambda p: sg.dists.Normal(p["loc"], jnp.exp(p["log_scale"]))
    >>> f = lambda x: jnp.sum(jnp.abs(x))   # not differentiable at 0: fine
    >>> out = est.estimate(jax.random.key(0), f, dist_fn, params, est.init(params))

  References:
    Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in
    Machine Learning", JMLR 2020, Section 6.
    Pflug, "Optimization of Stochastic Models", Kluwer 1996, Chapter 4.
  """
  num_samples = check_positive_int("num_samples", num_samples)
  coupling = check_bool("coupling", coupling)
  per_sample = check_bool("per_sample", per_sample)
  sharding = _scale.check_sharding(sharding, num_samples)

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_estimate_inputs(key, f, dist_fn, params)
    dist = call_dist_fn(dist_fn, params)
    check_weak_derivative(dist)

    def canon_fn(p):
      return tuple(call_dist_fn(dist_fn, p).weak_derivative_params().values())

    active = dependence(canon_fn, params)
    check_fixed_parameters(dist, active)
    canon, vjp_fn = jax.vjp(canon_fn, params)
    key_base, key_wd = jax.random.split(key)
    dist_sg = jax.lax.stop_gradient(dist)
    base = jax.lax.stop_gradient(
      _scale.shard_samples(lambda k: dist.sample(k, (num_samples,)), sharding, num_samples)(
        key_base
      )
    )
    costs = _scale.constrain(evaluate_costs(f, base, num_samples), sharding, num_samples)
    fixed = jax.lax.stop_gradient(costs)
    fn = lambda x: jnp.reshape(jnp.asarray(f(x), costs.dtype), (1,))
    terms = weak_derivative_terms(key_wd, fn, dist_sg, active, coupling, base, fixed[:, None])
    cotangents = tuple(
      jnp.zeros((num_samples,) + c.shape, c.dtype)
      if g is None
      else jax.lax.stop_gradient(g[..., 0]).astype(c.dtype)
      for g, c in zip(terms, canon)
    )
    # First-order only (the derivative-order rule): a derivative of the
    # gradient with respect to the family's parameters or the raw costs raises.
    cotangents = first_order_only(cotangents, (canon, costs), "measure_valued")
    mean_ct = tuple(jnp.mean(ct, axis=0) for ct in cotangents)
    # The value stays differentiable in what f closes over (samples fixed),
    # and its derivative in params is this estimator's gradient.
    value = jnp.mean(costs) + gradient_carrier(canon, mean_ct, "measure_valued", costs.dtype)
    if per_sample:
      per = jax.vmap(lambda ct: vjp_fn(ct)[0])(cotangents)
      return finish(value, tree_mean0(per), state, per, per_sample_values=costs)
    return finish(value, vjp_fn(mean_ct)[0], state, None)

  rebuild = _layers.rebuilder(
    measure_valued,
    num_samples=num_samples,
    coupling=coupling,
    per_sample=per_sample,
    sharding=sharding,
  )

  traits = _layers.resizable(
    f"measure_valued(num_samples={num_samples}, coupling={coupling})",
    num_samples=num_samples,
    rebuild=rebuild,
    per_sample=per_sample,
    sharding=sharding,
  )
  core = describe(GradientEstimator(init=stateless_init, estimate=estimate), traits)
  return _layers.shorthands(
    core, control_variate=control_variate, chunk_size=chunk_size, moments=moments
  )
