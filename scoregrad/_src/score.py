"""The score-function (REINFORCE, log-derivative) estimator."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from scoregrad._src import baselines as _baselines
from scoregrad._src import control_variates as _cv
from scoregrad._src import derivative_order as _derivative_order
from scoregrad._src import layers as _layers
from scoregrad._src import sampling as _sampling
from scoregrad._src import scale as _scale
from scoregrad._src import shaping as _shaping
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
  unit_box,
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
  sampling: str = "iid",
  fitness_shaping: Optional[_shaping.FitnessShaping] = None,
  keep_samples: bool = False,
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

    sharding: a ``jax.sharding.Sharding`` of the sample axis; shorthand for
      :func:`scoregrad.sharded`.
    chunk_size: stream the samples in chunks; shorthand for
      :func:`scoregrad.chunked`.
    moments: fill ``Estimate.moments``/``value_moments``; shorthand for
      :func:`scoregrad.with_moments`.
    sampling: ``"iid"`` (default), ``"antithetic"`` (pairs μ ± Lε; even
      ``num_samples``) or ``"qmc"`` (a randomly shifted rank-1 lattice
      through Φ⁻¹), for Gaussian families (those with
      ``from_standard_normal``), as in :func:`scoregrad.pathwise`. Every
      sample is still distributed as p, so the estimator stays unbiased at
      every order; the rows are dependent, so measure variance across keys.
      Antithetic pairs cancel, in the location score (odd in ε), the part of
      f that is even about μ, and in the scale score (even in ε) the odd
      part: they help for near-linear f on the location and can raise the
      variance of other coordinates. Baselines that use the other samples
      (``leave_one_out``, ``optimal``) are refused with them (a sample's
      partner depends on it).
    fitness_shaping: a :mod:`scoregrad.shaping` transform of the costs
      across the samples of each estimate (``centered_ranks()``,
      ``standardize()``, ``normalize()``, ``rank_weights()``): the gradient
      becomes (1/n) Σ_i (u_i − b_i) ∇θ log p(x_i), u = shaping(c), an
      evolution strategy's. Biased for ∇E[f], unbiased for the shaped
      objective (see :mod:`scoregrad.shaping`); first derivatives only (a
      second derivative raises), and a cost that depends on ``params`` is
      refused when differentiated. ``.value`` stays the mean of the raw
      costs. Shorthand for :func:`scoregrad.with_fitness_shaping`. Needs
      num_samples ≥ 2; not with ``chunk_size`` or ``control_variate``.
    keep_samples: also return the samples and their raw costs in
      ``Estimate.samples`` / ``Estimate.costs`` (to track the best point
      found); off by default, when the estimate keeps neither.

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
  sampling = _sampling.check_sampling(sampling, num_samples)
  if sampling != "iid" and baseline.uses_other_samples:
    raise ValueError(
      f"`baseline={baseline.name}` computes each sample's baseline from the "
      f"other samples, and sampling={sampling!r} makes those depend on it, which "
      "would bias the gradient; got both. Use a baseline that does not (none, "
      "constant, moving_average) or sampling='iid'."
    )
  fitness_shaping = _shaping.check_fitness_shaping(fitness_shaping, num_samples)
  keep_samples = check_bool("keep_samples", keep_samples)
  if fitness_shaping is not None and control_variate is not None:
    raise ValueError(
      f"`fitness_shaping={fitness_shaping.name}` replaces the costs by utilities "
      "computed across the samples, and `control_variate` corrects the costs "
      f"f − βh with the exact ∇E[h]: the two do not compose (got control_variate="
      f"{getattr(control_variate, 'name', control_variate)!r}). Drop one of them."
    )
  core = _score_function(
    num_samples, baseline, per_sample, sharding, sampling, fitness_shaping, keep_samples
  )
  return _layers.shorthands(
    core, control_variate=control_variate, chunk_size=chunk_size, moments=moments
  )


def _score_function(
  num_samples: int,
  baseline,
  per_sample: bool,
  sharding,
  sampling: str,
  fitness_shaping=None,
  keep_samples: bool = False,
) -> GradientEstimator:
  """The plain score-function estimator (settings validated), with its Traits."""

  rebuild = _layers.rebuilder(
    score_function,
    num_samples=num_samples,
    baseline=baseline,
    per_sample=per_sample,
    sharding=sharding,
    sampling=sampling,
    fitness_shaping=fitness_shaping,
    keep_samples=keep_samples,
  )

  def chunk_plan(chunk_size: int, rows: bool):
    if fitness_shaping is not None:
      raise ValueError(
        f"`chunk_size={chunk_size}` with fitness_shaping={fitness_shaping.name}: the "
        "shaping transforms the costs across ALL samples of one estimate, and chunks "
        "would shape each chunk on its own. Drop chunk_size (or the shaping)."
      )
    if keep_samples:
      raise ValueError(
        f"`chunk_size={chunk_size}` with keep_samples=True: chunking exists not to "
        "hold all samples at once, and keep_samples returns them. Drop one of them."
      )
    _scale.check_streamable_baseline(baseline)
    _sampling.check_chunk(sampling, chunk_size)

    def build(total):
      chunk_baseline = baseline if total is None else baseline.chunked(total, num_samples)
      return rebuild(num_samples=chunk_size, per_sample=rows, baseline=chunk_baseline)

    def chunk_cost_sum(key, f, dist_fn, params):
      dist = call_dist_fn(dist_fn, params)
      samples = jax.lax.stop_gradient(_draw(dist, key, chunk_size, sharding))
      return jnp.sum(jax.lax.stop_gradient(evaluate_costs(f, samples, chunk_size)))

    return build, (chunk_cost_sum if baseline.uses_other_samples else None)

  traits = Traits(
    name=f"score_function(num_samples={num_samples}, baseline={baseline.name}"
    + ("" if sampling == "iid" else f", sampling={sampling!r}")
    + ("" if fitness_shaping is None else f", fitness_shaping={fitness_shaping.name}")
    + ")",
    num_samples=num_samples,
    rebuild=rebuild,
    per_sample=per_sample,
    sharding=sharding,
    rows_coupled_by=f"baseline={baseline.name}"
    if baseline.uses_other_samples
    else (
      f"fitness_shaping={fitness_shaping.name}"
      if fitness_shaping is not None
      else (None if sampling == "iid" else f"sampling={sampling!r}")
    ),
    fit_rows=(lambda: rebuild(baseline=None, per_sample=True))
    if baseline.uses_other_samples
    else None,
    chunk_plan=chunk_plan,
    shapes_costs=True,
    fitness_shaping=fitness_shaping,
  )

  def init(params) -> ScoreFunctionState:
    return ScoreFunctionState(baseline=state_like_params(baseline.init(), params))

  def estimate(key, f: Callable, dist_fn: Callable, params, state: ScoreFunctionState) -> Estimate:
    key = check_estimate_inputs(key, f, dist_fn, params)
    check_state(state, ScoreFunctionState, "score_function")
    dist = call_dist_fn(dist_fn, params)
    if sampling == "iid":
      samples = jax.lax.stop_gradient(_draw(dist, key, num_samples, sharding))
    else:
      _sampling.check_gaussian(dist, sampling)
      noise = _scale.shard_samples(
        lambda k: _sampling.standard_normal_noise(
          k, sampling, num_samples, tuple(dist.event_shape), dist.dtype
        ),
        sharding,
        num_samples,
      )(key)
      samples = jax.lax.stop_gradient(dist.from_standard_normal(noise))
    # Families whose log_prob is only once differentiable (the family fact
    # score_function_order) get the first-order-only treatment below.
    first_order = getattr(dist, "score_function_order", None) == 1
    raw_costs = _scale.constrain(evaluate_costs(f, samples, num_samples), sharding, num_samples)
    costs = jax.lax.stop_gradient(raw_costs)
    # Fitness shaping: the utilities replace the costs in the gradient (and
    # in the baseline); `.value` stays the mean of the raw costs.
    utilities = _shaping.apply(fitness_shaping, costs)

    def log_prob(p, x):
      return call_dist_fn(dist_fn, p).log_prob(x)

    def done(value, grad, per):
      out = finish(value, grad, new_state, per, per_sample_values=raw_costs)
      if keep_samples:
        out = out._replace(samples=samples, costs=costs)
      return out

    new_state = ScoreFunctionState(baseline=baseline.update(state.baseline, utilities))

    if baseline.per_coordinate:
      scores = jax.vmap(jax.grad(log_prob), in_axes=(None, 0))(params, samples)
      b = baseline.values(utilities, scores, state.baseline)
      per = jax.tree_util.tree_map(lambda s, bk: (expand_to(utilities, s) - bk) * s, scores, b)
      # The per-coordinate baseline is fitted to these very scores, so this
      # gradient is first-order only, and `.value` carries it (first order).
      name = f"score_function with a per-coordinate baseline ({baseline.name})"
      per = first_order_only(per, (params, raw_costs), name)
      grad = tree_mean0(per)
      value = _first_order_value(raw_costs, params, grad, name)
      return done(value, grad, per if per_sample else None)

    b = baseline.values(utilities, None, state.baseline)
    b = jnp.zeros_like(utilities) if b is None else jax.lax.stop_gradient(b)
    advantages = utilities - b
    # `.grad` is the gradient of Σ_i □(τ_i)(c_i − b_i) / n with the box as
    # `unit_box`: value 1 without evaluating τ, so XLA compiles exactly the
    # hand-written REINFORCE gradient (one backward pass of log p), and the
    # derivatives of `.grad` are still DiCE's (every order).
    if per_sample:
      row = lambda p, x, a: unit_box(log_prob(p, x)) * a
      per = jax.vmap(jax.grad(row), in_axes=(None, 0, 0))(params, samples, advantages)
      grad = tree_mean0(per)
    else:
      batch = lambda p: jax.vmap(log_prob, in_axes=(None, 0))(p, samples)
      grad = jax.grad(lambda p: jnp.mean(unit_box(batch(p)) * advantages))(params)
      per = None
    if not first_order and fitness_shaping is None:
      # `.value`: DiCE on the raw costs, (1/n) Σ □(τ_i) c_i + (1 − □(τ_i)) b_i:
      # numerically mean f (the box is exactly 1, so no τ is evaluated), and
      # its derivatives of every order are the score-function ones, with the
      # pathwise terms of anything f closes over and their cross terms.
      box = unit_box(jax.vmap(log_prob, in_axes=(None, 0))(params, samples))
      value = jnp.mean(box * raw_costs + (1.0 - box) * b)
      return done(value, grad, per)
    if fitness_shaping is not None:
      name = f"score_function with fitness_shaping={fitness_shaping.name}"
    else:
      name = f"score_function on {type(dist).__name__} (its log_prob is differentiable once only)"
    grad = first_order_only(grad, (params, raw_costs), name)
    per = None if per is None else first_order_only(per, (params, raw_costs), name)
    return done(_first_order_value(raw_costs, params, grad, name), grad, per)

  def _first_order_value(raw_costs, params, grad, name):
    """mean f whose first derivative is ``grad`` (and whose second raises)."""
    carrier = gradient_carrier(params, grad, name, raw_costs.dtype)
    if fitness_shaping is None:
      return jnp.mean(raw_costs) + carrier
    # The shaped utilities have no pathwise derivative: a cost that depends
    # on params is refused when `.value` is differentiated (never the
    # unshaped pathwise term mixed with a shaped score term).
    return jnp.mean(costs_only(raw_costs)) + carrier + _refuse_cost_derivative(raw_costs, name)

  return describe(GradientEstimator(init=init, estimate=estimate), traits)


def costs_only(raw_costs):
  return jax.lax.stop_gradient(raw_costs)


def _refuse_cost_derivative(raw_costs, name: str):
  """A zero whose derivative in ``raw_costs`` raises, naming the shaping."""
  message = (
    f"{name}: the cost f depends on the parameters being differentiated (f closes "
    "over them), and the shaped utilities (ranks, z-scores) have no pathwise "
    "derivative, so the derivative of `.value` would be the shaped score term "
    "plus an unshaped pathwise term. scoregrad refuses. Make f independent of "
    "the parameters (pass them through dist_fn), or drop fitness_shaping."
  )
  return _derivative_order._first_order_only(message, jnp.zeros((), raw_costs.dtype), (raw_costs,))


def _draw(dist, key, num_samples: int, sharding):
  """``dist.sample(key, (num_samples,))``, generated sharded when ``sharding`` is set."""
  return _scale.shard_samples(lambda k: dist.sample(k, (num_samples,)), sharding, num_samples)(key)
