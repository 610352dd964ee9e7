"""The score-function (REINFORCE, log-derivative) estimator."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from scoregrad import baselines as _baselines
from scoregrad import surrogate as _surrogate
from scoregrad._validation import check_callable, check_key, check_positive_int
from scoregrad.base import (Estimate, GradientEstimator, call_dist_fn,
                            check_params_floating, evaluate_costs, tree_mean0)


class ScoreFunctionState(NamedTuple):
  """State of :func:`score_function`: the baseline's state."""

  baseline: Any


def score_function(
    *,
    num_samples: int,
    baseline: Optional[_baselines.Baseline] = None,
    per_sample: bool = False,
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
  if not isinstance(per_sample, bool):
    raise TypeError(f"`per_sample` must be a bool; got per_sample={per_sample!r}.")

  def init(params) -> ScoreFunctionState:
    del params
    return ScoreFunctionState(baseline=baseline.init())

  def estimate(key, f: Callable, dist_fn: Callable, params, state: ScoreFunctionState
               ) -> Estimate:
    key = check_key(key)
    check_callable("dist_fn", dist_fn, "dist_fn(params) -> distribution")
    check_params_floating(params)
    samples = jax.lax.stop_gradient(call_dist_fn(dist_fn, params).sample(key, (num_samples,)))
    costs = jax.lax.stop_gradient(evaluate_costs(f, samples, num_samples))

    def log_prob(p, x):
      return call_dist_fn(dist_fn, p).log_prob(x)

    new_state = ScoreFunctionState(baseline=baseline.update(state.baseline, costs))
    value = jnp.mean(costs)

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
