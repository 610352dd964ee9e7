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

import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.extend.core import Literal

from scoregrad import control_variates as _cv
from scoregrad import dists as _dists
from scoregrad._validation import check_bool, check_positive_int
from scoregrad.base import (Estimate, GradientEstimator, call_dist_fn,
                            check_estimate_inputs, evaluate_costs, tree_mean0)

# Largest number of array elements materialised at once when f is evaluated at
# every (sample, coordinate) replacement; larger problems are chunked.
_CHUNK_ELEMENTS = 1 << 22


class MeasureValuedState(NamedTuple):
  """State of :func:`measure_valued`: the control variate's state (``()`` if none)."""

  control_variate: Any = ()


# ---------------------------------------------------------------------------
# Evaluating f with one coordinate replaced.


def _replace_eval(fn, base, values, event_shape):
  """out[i, j] = fn(base[i] with flat coordinate j set to values[i, j]).

  ``base`` and ``values`` have shape (n, d); ``fn`` maps one sample of
  ``event_shape`` to a vector (M,); the result has shape (n, d, M).
  """
  n, d = base.shape
  values = values.astype(base.dtype)

  def per_sample(args):
    x, v = args
    return jax.vmap(lambda j, vj: fn(x.at[j].set(vj).reshape(event_shape)))(
        jnp.arange(d), v)

  batch = max(1, _CHUNK_ELEMENTS // max(1, d * d))
  if batch >= n:
    return jax.vmap(lambda x, v: per_sample((x, v)))(base, values)
  return jax.lax.map(per_sample, (base, values), batch_size=batch)


# ---------------------------------------------------------------------------
# The families: canonical parameters and weak-derivative samples.


class _Family(NamedTuple):
  cls: type
  names: tuple          # canonical parameter names (for messages)
  canonical: Callable   # dist -> tuple of arrays
  weak_derivative: Callable
  describe: str


def _bcast(x, shape):
  return jnp.broadcast_to(x, shape)


def _normal_canonical(d):
  shape = d.event_shape
  return (_bcast(d.loc, shape), _bcast(d.scale, shape))


def _normal_wd(key, fn, base, fbase, canon, active, coupling, event_shape):
  loc, scale = (c.reshape(-1) for c in canon)
  n, dim = base.shape
  dtype = loc.dtype
  k_mean_pos, k_mean_neg, k_scale_pos, k_scale_neg = jax.random.split(key, 4)
  out = [None, None]
  if active[0]:
    w_pos = jax.random.weibull_min(k_mean_pos, math.sqrt(2.0), 2.0, (n, dim), dtype)
    w_neg = w_pos if coupling else jax.random.weibull_min(
        k_mean_neg, math.sqrt(2.0), 2.0, (n, dim), dtype)
    diff = (_replace_eval(fn, base, loc + scale * w_pos, event_shape)
            - _replace_eval(fn, base, loc - scale * w_neg, event_shape))
    out[0] = diff / (scale * math.sqrt(2 * math.pi))[None, :, None]
  if active[1]:
    m_pos = jax.random.double_sided_maxwell(k_scale_pos, 0.0, 1.0, (n, dim), dtype)
    if coupling:
      m_neg = jax.random.uniform(k_scale_neg, (n, dim), dtype) * m_pos
    else:
      m_neg = jax.random.normal(k_scale_neg, (n, dim), dtype)
    diff = (_replace_eval(fn, base, loc + scale * m_pos, event_shape)
            - _replace_eval(fn, base, loc + scale * m_neg, event_shape))
    out[1] = diff / scale[None, :, None]
  return out


def _bernoulli_wd(key, fn, base, fbase, canon, active, coupling, event_shape):
  del key, fbase, coupling
  (logits,) = (c.reshape(-1) for c in canon)
  p = jax.nn.sigmoid(logits)
  if not active[0]:
    return [None]
  diff = (_replace_eval(fn, base, jnp.ones_like(base), event_shape)
          - _replace_eval(fn, base, jnp.zeros_like(base), event_shape))
  return [diff * (p * (1 - p))[None, :, None]]


def _categorical_canonical(d):
  return (d.logits,)


def _categorical_wd(key, fn, base, fbase, canon, active, coupling, event_shape):
  if not active[0]:
    return [None]
  (logits,) = canon
  k = logits.shape[-1]
  logits = logits.reshape(-1, k)
  probs = jax.nn.softmax(logits, axis=-1)
  n, dim = base.shape
  pos = jax.vmap(
      lambda m: _replace_eval(fn, base, jnp.full_like(base, m), event_shape),
      out_axes=2)(jnp.arange(k))                       # (n, d, K, M)
  if coupling:
    neg = fbase[:, None, None, :]                      # the base sample is a p⁻ draw
  else:
    y = jax.random.categorical(key, logits, axis=-1, shape=(n, dim))
    neg = _replace_eval(fn, base, y, event_shape)[:, :, None, :]
  return [(pos - neg) * probs[None, :, :, None]]


def _poisson_wd(key, fn, base, fbase, canon, active, coupling, event_shape):
  if not active[0]:
    return [None]
  (rate,) = (c.reshape(-1) for c in canon)
  n, dim = base.shape
  if coupling:
    return [_replace_eval(fn, base, base + 1, event_shape) - fbase[:, None, :]]
  k_pos, k_neg = jax.random.split(key)
  y_pos = jax.random.poisson(k_pos, rate, (n, dim)).astype(base.dtype)
  y_neg = jax.random.poisson(k_neg, rate, (n, dim)).astype(base.dtype)
  return [_replace_eval(fn, base, y_pos + 1, event_shape)
          - _replace_eval(fn, base, y_neg, event_shape)]


def _exponential_wd(key, fn, base, fbase, canon, active, coupling, event_shape):
  if not active[0]:
    return [None]
  (rate,) = (c.reshape(-1) for c in canon)
  n, dim = base.shape
  dtype = rate.dtype
  k_pos, k_neg = jax.random.split(key)
  if coupling:   # p⁺ = p is the base sample; p⁻ = base + Exponential(λ) = Gamma(2, λ).
    extra = jax.random.exponential(k_neg, (n, dim), dtype) / rate
    diff = fbase[:, None, :] - _replace_eval(fn, base, base + extra, event_shape)
  else:
    x_pos = jax.random.exponential(k_pos, (n, dim), dtype) / rate
    x_neg = jax.random.gamma(k_neg, jnp.full((n, dim), 2.0, dtype), dtype=dtype) / rate
    diff = (_replace_eval(fn, base, x_pos, event_shape)
            - _replace_eval(fn, base, x_neg, event_shape))
  return [diff / rate[None, :, None]]


def _gamma_canonical(d):
  shape = d.event_shape
  return (_bcast(d.concentration, shape), _bcast(d.rate, shape))


def _gamma_wd(key, fn, base, fbase, canon, active, coupling, event_shape):
  if not active[1]:
    return [None, None]
  conc, rate = (c.reshape(-1) for c in canon)
  n, dim = base.shape
  dtype = rate.dtype
  k_pos, k_neg = jax.random.split(key)
  if coupling:   # p⁺ = p is the base sample; p⁻ = base + Exponential(β) = Gamma(α + 1, β).
    extra = jax.random.exponential(k_neg, (n, dim), dtype) / rate
    diff = fbase[:, None, :] - _replace_eval(fn, base, base + extra, event_shape)
  else:
    x_pos = jax.random.gamma(k_pos, jnp.broadcast_to(conc, (n, dim)), dtype=dtype) / rate
    x_neg = jax.random.gamma(k_neg, jnp.broadcast_to(conc + 1, (n, dim)), dtype=dtype) / rate
    diff = (_replace_eval(fn, base, x_pos, event_shape)
            - _replace_eval(fn, base, x_neg, event_shape))
  return [None, diff * (conc / rate)[None, :, None]]


_FAMILIES = (
    _Family(_dists.Normal, ("loc", "scale"), _normal_canonical, _normal_wd,
            "Normal (loc: Weibull; scale: double-sided Maxwell)"),
    _Family(_dists.Bernoulli, ("logits",), lambda d: (d.logits,), _bernoulli_wd,
            "Bernoulli (logits)"),
    _Family(_dists.Categorical, ("logits",), _categorical_canonical, _categorical_wd,
            "Categorical (logits)"),
    _Family(_dists.Poisson, ("rate",), lambda d: (d.rate,), _poisson_wd, "Poisson (rate)"),
    _Family(_dists.Exponential, ("rate",), lambda d: (d.rate,), _exponential_wd,
            "Exponential (rate)"),
    _Family(_dists.Gamma, ("concentration", "rate"), _gamma_canonical, _gamma_wd,
            "Gamma (rate only; concentration held constant)"),
)

SUPPORTED_FAMILIES = tuple(fam.cls for fam in _FAMILIES)


def _family_of(dist) -> _Family:
  for fam in _FAMILIES:
    if isinstance(dist, fam.cls):
      return fam
  inner = getattr(dist, "dist", dist)
  supported = "; ".join(f"scoregrad.dists.{fam.describe}" for fam in _FAMILIES)
  raise ValueError(
      f"measure_valued has no weak-derivative decomposition for "
      f"`dist_fn(params)` of type {type(inner).__name__}. Supported: {supported}. "
      "For other distributions use scoregrad.score_function(num_samples=...) "
      "(any distribution with a log_prob) or scoregrad.pathwise(num_samples=...) "
      "(reparameterized ones).")


def _dependence(fn: Callable, params) -> tuple:
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


def weak_derivative_terms(key, fn, dist, fam: _Family, canon, active, coupling, base, fbase):
  """Per-sample weak-derivative estimates for the canonical parameters.

  Returns a list (one per canonical parameter) of arrays of shape
  ``(n, *param.shape, M)`` (``None`` for parameters not differentiated),
  where ``fn`` returns M values per sample.
  """
  event_shape = tuple(dist.event_shape)
  n = base.shape[0]
  flat = base.reshape(n, -1)
  raw = fam.weak_derivative(key, fn, flat, fbase, canon, active, coupling, event_shape)
  out = []
  for g, c in zip(raw, canon):
    out.append(None if g is None else g.reshape((n,) + c.shape + g.shape[-1:]))
  return out


def measure_valued(
    *,
    num_samples: int,
    coupling: bool = True,
    per_sample: bool = False,
    control_variate: Optional[_cv.ControlVariate] = None,
) -> GradientEstimator:
  r"""The measure-valued (weak-derivative) estimator of ∇θ E_{p(x;θ)}[f(x)].

  With the weak derivative ∂η_j p = c_j (p⁺_j − p⁻_j) of each of the
  distribution's own parameters η (see the module docstring for the table),

      ∂η_j E_p[f] ≈ (1/n) Σ_i c_j [f(x_i ⊕_j x⁺_ij) − f(x_i ⊕_j x⁻_ij)],

  where x_i ~ p and x ⊕_j v replaces coordinate j of x by v, x⁺_ij ~ p⁺_j,
  x⁻_ij ~ p⁻_j. The gradient with respect to ``params`` follows by the chain
  rule through ``dist_fn``: ∇params = J_ηᵀ ∂η, one ``jax.vjp`` of the map
  params → η, so any pytree of params works.

  Requirements: ``dist_fn(params)`` is one of Normal (loc, scale), Bernoulli
  (logits), Categorical (logits), Poisson (rate), Exponential (rate) or Gamma
  (rate; its concentration must not depend on ``params``). Nothing on f: it
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
      added back through its closed-form expectation; unbiased.

  Returns:
    ``GradientEstimator(init, estimate)``; ``estimate(key, f, dist_fn, params,
    state) -> Estimate`` with ``state`` a :class:`MeasureValuedState`.

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
  cv = _cv.resolve(control_variate)
  if cv is not None:
    _cv.check_num_samples(cv, num_samples)

  def init(params) -> MeasureValuedState:
    del params
    return MeasureValuedState(control_variate=cv.init() if cv is not None else ())

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_estimate_inputs(key, f, dist_fn, params)
    dist = call_dist_fn(dist_fn, params)
    fam = _family_of(dist)
    if cv is not None:
      _cv.check_family(cv, dist)
    cv_state = state.control_variate

    def canon_fn(p):
      return fam.canonical(call_dist_fn(dist_fn, p))

    active = _dependence(canon_fn, params)
    if fam.cls is _dists.Gamma and active[0]:
      raise ValueError(
          "measure_valued differentiates a Gamma distribution through its rate "
          "only, but `dist_fn(params)` makes the Gamma's concentration depend on "
          "`params`. Keep the concentration constant (close over it in dist_fn), "
          "or use scoregrad.pathwise(num_samples=...) (Gamma is reparameterized) "
          "or scoregrad.score_function(num_samples=...).")
    canon, vjp_fn = jax.vjp(canon_fn, params)
    canon = jax.lax.stop_gradient(canon)
    key_base, key_wd = jax.random.split(key)
    dist_sg = jax.lax.stop_gradient(dist)
    base = jax.lax.stop_gradient(dist.sample(key_base, (num_samples,)))
    costs = evaluate_costs(f, base, num_samples)

    if cv is None:
      fn = lambda x: jnp.reshape(jnp.asarray(f(x), costs.dtype), (1,))
      fbase = costs[:, None]
    else:
      def fn(x):
        return jnp.stack([jnp.asarray(f(x), costs.dtype),
                          jnp.asarray(cv.value(f, dist_sg, x, cv_state), costs.dtype)])
      hbase = jax.vmap(lambda x: cv.value(f, dist_sg, x, cv_state))(base)
      fbase = jnp.stack([costs, hbase.astype(costs.dtype)], axis=1)

    terms = weak_derivative_terms(key_wd, fn, dist, fam, canon, active, coupling, base, fbase)

    def cotangent(index, reduce):
      """The canonical cotangent from output ``index`` of fn (reduce: mean over samples)."""
      out = []
      for g, c in zip(terms, canon):
        if g is None:
          out.append(jnp.zeros(((num_samples,) if not reduce else ()) + c.shape, c.dtype))
        else:
          gi = g[..., index].astype(c.dtype)
          out.append(jnp.mean(gi, axis=0) if reduce else gi)
      return tuple(out)

    value = jnp.mean(costs)
    if cv is None:
      new_state = state
      if per_sample:
        per = jax.vmap(lambda ct: vjp_fn(ct)[0])(cotangent(0, False))
        return Estimate(value, tree_mean0(per), new_state, per)
      return Estimate(value, vjp_fn(cotangent(0, True))[0], new_state, None)

    new_state = MeasureValuedState(
        control_variate=cv.update(cv_state, f, dist_sg, base, costs))
    expected_grad = _cv.expectation_grad(cv, f, dist_fn, params, cv_state)
    if not _cv.is_estimated(cv) and not per_sample:
      beta = float(cv.coefficient)
      ct = jax.tree_util.tree_map(lambda a, b: a - beta * b,
                                  cotangent(0, True), cotangent(1, True))
      direct = _cv.value_param_grad(cv, f, dist_fn, params, base, cv_state, per_sample=False)
      grad = jax.tree_util.tree_map(lambda g, dh, eh: g - beta * dh + beta * eh,
                                    vjp_fn(ct)[0], direct, expected_grad)
      return Estimate(value, grad, new_state, None)

    per_f = jax.vmap(lambda ct: vjp_fn(ct)[0])(cotangent(0, False))
    per_h_wd = jax.vmap(lambda ct: vjp_fn(ct)[0])(cotangent(1, False))
    direct = _cv.value_param_grad(cv, f, dist_fn, params, base, cv_state, per_sample=True)
    per_h = jax.tree_util.tree_map(lambda a, b, e: a + b - e, per_h_wd, direct, expected_grad)
    per = _cv.apply(cv, per_f, per_h, per_f)
    return Estimate(value, tree_mean0(per), new_state, per if per_sample else None)

  return GradientEstimator(init=init, estimate=estimate)
