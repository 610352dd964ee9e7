"""The score-function (REINFORCE, log-derivative) estimator."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from scoregrad import baselines as _baselines
from scoregrad import control_variates as _cv
from scoregrad import surrogate as _surrogate
from scoregrad._validation import check_bool, check_positive_int
from scoregrad.base import (Estimate, GradientEstimator, call_dist_fn,
                            check_estimate_inputs, evaluate_costs, tree_mean0)


class ScoreFunctionState(NamedTuple):
  """State of :func:`score_function`: the baseline's and the control variate's.

  Attributes:
    baseline: the baseline's state.
    control_variate: the control variate's state (``()`` without one).
  """

  baseline: Any
  control_variate: Any = ()


def score_function(
    *,
    num_samples: int,
    baseline: Optional[_baselines.Baseline] = None,
    per_sample: bool = False,
    control_variate: Optional[_cv.ControlVariate] = None,
) -> GradientEstimator:
  r"""The score-function estimator of ∇θ E_{p(x;θ)}[f(x)].

  The log-derivative identity ∇θ p = p ∇θ log p gives

      ∇θ E_p[f(x)] = E_p[(f(x) − b) ∇θ log p(x; θ)]
                   ≈ (1/n) Σ_i (f(x_i) − b_i) ∇θ log p(x_i; θ),  x_i ~ p(·; θ),

  computed as ``jax.grad`` of the DiCE surrogate (:mod:`scoregrad.surrogate`).

  Requirements: log p(x; θ) differentiable in θ. Nothing on f (it may be a
  non-differentiable black box) nor on x (discrete or continuous). Its
  variance grows with the scale of f and the dimension of θ: use a baseline.

  Args:
    num_samples: samples per estimate (a Python int ≥ 1).
    baseline: a :mod:`scoregrad.baselines` baseline; default none.
    per_sample: also return each sample's gradient (leaves of shape
      ``(num_samples, *param.shape)``) in ``Estimate.per_sample``, computed
      with ``vmap(grad)`` (memory grows as num_samples × params).
    control_variate: a :mod:`scoregrad.control_variates` control variate h:
      the estimator becomes (1/n) Σ_i [(f(x_i) − β h(x_i) − b_i) ∇θ log p(x_i)
      − β ∇θ h(x_i)] + β ∇θ E[h] (unbiased). The baseline then acts on the
      residual costs f − β h (with an estimated coefficient, on f − h).

  Returns:
    ``GradientEstimator(init, estimate)`` with
    ``estimate(key, f, dist_fn, params, state) -> Estimate``. ``f(x)`` is the
    scalar cost of one sample; ``dist_fn(params)`` a distribution. NaN costs
    give NaN gradients (never a finite value).

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.score_function(num_samples=1000,
    ...                         baseline=sg.baselines.leave_one_out())
    >>> params = {"loc": jnp.array(1.0), "scale": jnp.array(1.0)}
    >>> dist_fn = lambda p: sg.dists.Normal(p["loc"], p["scale"])
    >>> out = est.estimate(jax.random.key(0), lambda x: x**2, dist_fn, params,
    ...                    est.init(params))
    >>> # out.grad ≈ {"loc": 2·loc, "scale": 2·scale}

  References:
    Williams, "Simple statistical gradient-following algorithms for
    connectionist reinforcement learning", Machine Learning 1992.
    Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in
    Machine Learning", JMLR 2020, Section 4.
  """
  num_samples = check_positive_int("num_samples", num_samples)
  baseline = _baselines.resolve(baseline)
  _baselines.check_num_samples(baseline, num_samples)
  per_sample = check_bool("per_sample", per_sample)
  cv = _cv.resolve(control_variate)
  if cv is not None:
    _cv.check_num_samples(cv, num_samples)

  def init(params) -> ScoreFunctionState:
    del params
    return ScoreFunctionState(baseline=baseline.init(),
                              control_variate=cv.init() if cv is not None else ())

  def estimate(key, f: Callable, dist_fn: Callable, params, state: ScoreFunctionState
               ) -> Estimate:
    key = check_estimate_inputs(key, f, dist_fn, params)
    samples = jax.lax.stop_gradient(call_dist_fn(dist_fn, params).sample(key, (num_samples,)))
    raw_costs = evaluate_costs(f, samples, num_samples)
    costs = jax.lax.stop_gradient(raw_costs)
    # The value stays differentiable in whatever f closes over (samples held
    # fixed), so jax.grad through `.value` never silently returns zero.
    value = jnp.mean(raw_costs)

    def log_prob(p, x):
      return call_dist_fn(dist_fn, p).log_prob(x)

    if cv is not None:
      return _estimate_with_control_variate(
          cv, baseline, per_sample, f, dist_fn, params, state, samples, costs, log_prob, value)

    new_state = ScoreFunctionState(baseline=baseline.update(state.baseline, costs))

    if baseline.per_coordinate:
      scores = jax.vmap(jax.grad(log_prob), in_axes=(None, 0))(params, samples)
      b = baseline.values(costs, scores, state.baseline)
      per = jax.tree_util.tree_map(
          lambda s, bk: (_expand(costs, s) - bk) * s, scores, b)
      return Estimate(value, tree_mean0(per), new_state, per if per_sample else None)

    b = baseline.values(costs, None, state.baseline)
    if per_sample:
      def one(x, c, bi):
        return jax.grad(lambda p: _surrogate.dice(log_prob(p, x), c, bi))(params)
      per = jax.vmap(one)(samples, costs, b)
      return Estimate(value, tree_mean0(per), new_state, per)

    def surrogate(p):
      log_probs = jax.vmap(log_prob, in_axes=(None, 0))(p, samples)
      return jnp.mean(_surrogate.dice(log_probs, costs, b))

    return Estimate(value, jax.grad(surrogate)(params), new_state, None)

  return GradientEstimator(init=init, estimate=estimate)


def _expand(costs, leaf):
  return jnp.reshape(costs, costs.shape + (1,) * (leaf.ndim - 1))


def _estimate_with_control_variate(cv, baseline, per_sample, f, dist_fn, params, state,
                                   samples, costs, log_prob, value) -> Estimate:
  """The score-function estimator with a control variate (see ``score_function``)."""
  dist = call_dist_fn(dist_fn, params)
  _cv.check_family(cv, dist)
  cv_state = state.control_variate
  dist_sg = jax.lax.stop_gradient(dist)
  h_values = jax.vmap(lambda x: cv.value(f, dist_sg, x, cv_state))(samples)
  h_values = jax.lax.stop_gradient(jnp.asarray(h_values, costs.dtype))
  expected_grad = _cv.expectation_grad(cv, f, dist_fn, params, cv_state)
  estimated = _cv.is_estimated(cv)
  beta = None if estimated else float(cv.coefficient)
  # The baseline acts on the residual f − β h (β = 1 when β is estimated).
  baseline_costs = costs - (1.0 if estimated else beta) * h_values
  new_state = ScoreFunctionState(
      baseline=baseline.update(state.baseline, baseline_costs),
      control_variate=cv.update(cv_state, f, dist_sg, samples, costs))

  if not estimated and not per_sample and not baseline.per_coordinate:
    b = baseline.values(baseline_costs, None, state.baseline)

    def surrogate(p):
      log_probs = jax.vmap(log_prob, in_axes=(None, 0))(p, samples)
      if cv.value_depends_on_params:
        d = call_dist_fn(dist_fn, p)
        h = jax.vmap(lambda x: cv.value(f, d, x, cv_state))(samples)
        residual = costs - beta * jnp.asarray(h, costs.dtype)
      else:
        residual = baseline_costs
      return jnp.mean(_surrogate.dice(log_probs, residual, b))

    grad = jax.tree_util.tree_map(lambda g, e: g + beta * e,
                                  jax.grad(surrogate)(params), expected_grad)
    return Estimate(value, grad, new_state, None)

  scores = jax.vmap(jax.grad(log_prob), in_axes=(None, 0))(params, samples)
  b = baseline.values(baseline_costs, scores if baseline.per_coordinate else None,
                      state.baseline)
  # f's term: (f − β h − b) ∇ log p for a fixed β (h's term added below), or
  # (f − b) ∇ log p when β is estimated (b fitted to f − h either way).
  f_costs = costs if estimated else baseline_costs
  if baseline.per_coordinate:
    per_f = jax.tree_util.tree_map(
        lambda s, bk: (_expand(f_costs, s) - bk) * s, scores, b)
  else:
    per_f = jax.tree_util.tree_map(
        lambda s: _expand(f_costs - b, s) * s, scores)
  direct = _cv.value_param_grad(cv, f, dist_fn, params, samples, cv_state, per_sample=True)
  if not estimated:
    per = jax.tree_util.tree_map(lambda g, dh, e: g - beta * dh + beta * e,
                                 per_f, direct, expected_grad)
  else:
    per_h = jax.tree_util.tree_map(
        lambda s, dh, e: _expand(h_values, s) * s + dh - e, scores, direct, expected_grad)
    raw_f = jax.tree_util.tree_map(lambda s: _expand(costs, s) * s, scores)
    per = _cv.apply(cv, per_f, per_h, raw_f)
  return Estimate(value, tree_mean0(per), new_state, per if per_sample else None)
