"""The score-function (REINFORCE, log-derivative) estimator."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from scoregrad._src import baselines as _baselines
from scoregrad._src import control_variates as _cv
from scoregrad._src import layers as _layers
from scoregrad._src import scale as _scale
from scoregrad._src import surrogates as _surrogate
from scoregrad._src.base import (
  Estimate,
  GradientEstimator,
  Traits,
  call_dist_fn,
  check_estimate_inputs,
  check_state,
  describe,
  evaluate_costs,
  expand_to,
  finish,
  first_order_only,
  gradient_carrier,
  state_like_params,
  tree_mean0,
)
from scoregrad._src.validation import check_bool, check_positive_int


class ScoreFunctionState(NamedTuple):
  """State of :func:`score_function`: the baseline's.

  Attributes:
    baseline: the baseline's state (``()`` for stateless baselines).
    control_variate: unused since 0.2 (a control variate's state now lives in
      :class:`~scoregrad.ControlVariateState`); kept so that 0.1 code that
      constructs ``ScoreFunctionState(baseline, control_variate)`` still runs.
      Removed in 0.3.
  """

  baseline: Any
  control_variate: Any = ()


def score_function(
  *,
  num_samples: int,
  baseline: Optional[_baselines.Baseline] = None,
  per_sample: bool = False,
  control_variate: Optional[_cv.ControlVariate] = None,
  sharding: Optional[Any] = None,
  chunk_size: Optional[int] = None,
  moments: bool = False,
) -> GradientEstimator:
  r"""The score-function estimator of ∇θ E_{p(x;θ)}[f(x)].

  The log-derivative identity ∇θ p = p ∇θ log p gives

      ∇θ E_p[f(x)] = E_p[(f(x) − b) ∇θ log p(x; θ)]
                   ≈ (1/n) Σ_i (f(x_i) − b_i) ∇θ log p(x_i; θ),  x_i ~ p(·; θ),

  computed as ``jax.grad`` of the DiCE surrogate (:func:`scoregrad.dice`).

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
      the estimator becomes (1/n) Σ_i (f(x_i) − β h(x_i) − b_i) ∇θ log p(x_i)
      + β ∇θ E[h] (unbiased); the baseline then acts on the residual costs
      f − β h. Shorthand for ``scoregrad.with_control_variate(score_function(
      ...), control_variate)`` (with an estimated coefficient and a baseline
      that uses the other samples, β is fitted on the rows without the
      baseline, which are independent across samples).

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
  sharding = _scale.check_sharding(sharding, num_samples)
  core = _score_function(num_samples, baseline, per_sample, sharding)
  return _layers.shorthands(
    core, control_variate=control_variate, chunk_size=chunk_size, moments=moments
  )


def _score_function(num_samples: int, baseline, per_sample: bool, sharding) -> GradientEstimator:
  """The plain score-function estimator (settings validated), with its Traits."""

  def rebuild(**settings) -> GradientEstimator:
    return score_function(
      **{
        "num_samples": num_samples,
        "baseline": baseline,
        "per_sample": per_sample,
        "sharding": sharding,
        **settings,
      }
    )

  def chunk_plan(chunk_size: int, rows: bool):
    _scale.check_streamable_baseline(baseline)

    def build(total):
      chunk_baseline = baseline if total is None else baseline.chunked(total, num_samples)
      return rebuild(num_samples=chunk_size, per_sample=rows, baseline=chunk_baseline)

    def chunk_cost_sum(key, f, dist_fn, params):
      dist = call_dist_fn(dist_fn, params)
      samples = jax.lax.stop_gradient(_draw(dist, key, chunk_size, sharding))
      return jnp.sum(jax.lax.stop_gradient(evaluate_costs(f, samples, chunk_size)))

    return build, (chunk_cost_sum if baseline.uses_other_samples else None)

  traits = Traits(
    name=f"score_function(num_samples={num_samples}, baseline={baseline.name})",
    num_samples=num_samples,
    rebuild=rebuild,
    per_sample=per_sample,
    sharding=sharding,
    rows_coupled_by=f"baseline={baseline.name}" if baseline.uses_other_samples else None,
    fit_rows=(lambda: rebuild(baseline=None, per_sample=True))
    if baseline.uses_other_samples
    else None,
    chunk_plan=chunk_plan,
  )

  def init(params) -> ScoreFunctionState:
    return ScoreFunctionState(baseline=state_like_params(baseline.init(), params))

  def estimate(key, f: Callable, dist_fn: Callable, params, state: ScoreFunctionState) -> Estimate:
    key = check_estimate_inputs(key, f, dist_fn, params)
    check_state(state, ScoreFunctionState, "score_function")
    dist = call_dist_fn(dist_fn, params)
    samples = jax.lax.stop_gradient(_draw(dist, key, num_samples, sharding))
    # Families whose log_prob is only once differentiable (the family fact
    # score_function_order) get the first-order-only treatment below.
    first_order = getattr(dist, "score_function_order", None) == 1
    raw_costs = _scale.constrain(evaluate_costs(f, samples, num_samples), sharding, num_samples)
    costs = jax.lax.stop_gradient(raw_costs)

    def log_prob(p, x):
      return call_dist_fn(dist_fn, p).log_prob(x)

    def surrogate(p, b):
      log_probs = jax.vmap(log_prob, in_axes=(None, 0))(p, samples)
      return jnp.mean(_surrogate.dice(log_probs, costs, b))

    new_state = ScoreFunctionState(baseline=baseline.update(state.baseline, costs))

    def value_of(d):
      # mean f (differentiable in what f closes over, samples fixed) plus the
      # DiCE surrogate minus its own value: numerically mean f, and its
      # derivatives of every order in params are the score-function ones.
      return jnp.mean(raw_costs) + (d - jax.lax.stop_gradient(d))

    if baseline.per_coordinate:
      scores = jax.vmap(jax.grad(log_prob), in_axes=(None, 0))(params, samples)
      b = baseline.values(costs, scores, state.baseline)
      per = jax.tree_util.tree_map(lambda s, bk: (expand_to(costs, s) - bk) * s, scores, b)
      # The per-coordinate baseline is fitted to these very scores, so this
      # gradient is first-order only, and `.value` carries it (first order).
      name = f"score_function with a per-coordinate baseline ({baseline.name})"
      per = first_order_only(per, (params, raw_costs), name)
      grad = tree_mean0(per)
      value = jnp.mean(raw_costs) + gradient_carrier(params, grad, name, raw_costs.dtype)
      return finish(value, grad, new_state, per if per_sample else None)

    b = baseline.values(costs, None, state.baseline)
    if per_sample:

      def one(x, c, bi):
        return jax.value_and_grad(lambda p: _surrogate.dice(log_prob(p, x), c, bi))(params)

      # The per-sample surrogate values give the value's carrier too (one pass).
      d_rows, per = jax.vmap(one)(samples, costs, b)
      d, grad = jnp.mean(d_rows), tree_mean0(per)
    else:
      (d, grad), per = jax.value_and_grad(surrogate)(params, b), None
    if not first_order:
      return finish(value_of(d), grad, new_state, per)
    name = f"score_function on {type(dist).__name__} (its log_prob is differentiable once only)"
    grad = first_order_only(grad, (params, raw_costs), name)
    per = None if per is None else first_order_only(per, (params, raw_costs), name)
    value = jnp.mean(raw_costs) + gradient_carrier(params, grad, name, raw_costs.dtype)
    return finish(value, grad, new_state, per)

  return describe(GradientEstimator(init=init, estimate=estimate), traits)


def _draw(dist, key, num_samples: int, sharding):
  """``dist.sample(key, (num_samples,))``, generated sharded when ``sharding`` is set."""
  return _scale.shard_samples(lambda k: dist.sample(k, (num_samples,)), sharding, num_samples)(key)
