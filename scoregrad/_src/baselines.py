"""Baselines: variance reduction for score-function estimators.

A baseline b subtracted from the cost leaves the estimator unbiased when b does
not depend on the sample it multiplies, since E[b ∇θ log p(x; θ)] = b ∇θ ∫p = 0:

    ĝ = (1/n) Σ_i (f(x_i) − b_i) ∇θ log p(x_i; θ).

Each baseline here is a :class:`Baseline` of pure functions; pass it to
``score_function(..., baseline=...)``, ``expectation(..., baseline=...)`` or
``score_function_surrogate(..., baseline=...)``. Stateful baselines keep their
state inside the estimator state.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from scoregrad._src.validation import check_positive_float, check_positive_int, safe_divide


class Baseline(NamedTuple):
  """A baseline as pure functions.

  Attributes:
    init: ``init() -> state``.
    values: ``values(costs, scores, state) -> b``: ``costs`` has shape (n,);
      ``scores`` is ``None`` unless ``per_coordinate`` (then the per-sample
      scores ∇θ log p(x_i), leaves of shape ``(n, *param.shape)``). Returns b of
      shape (n,), or for per-coordinate baselines a pytree like ``scores``.
      b_i must not depend on sample i.
    update: ``update(state, costs) -> state`` after the step.
    name: for messages.
    min_samples: the smallest ``num_samples`` it works with.
    per_coordinate: whether b differs per parameter coordinate.
    stateful: whether ``state`` must be threaded across steps.
    uses_other_samples: whether b_i is computed from the other samples of
      the same step (leave-one-out, optimal), which couples the per-sample
      gradients of one estimate.
    chunked: for baselines that use other samples and can be streamed
      (``chunk_size=``) in two passes: ``chunked(total, num_samples)``, given
      the sum of ALL ``num_samples`` costs, returns the baseline to apply to
      one chunk's costs so that its values equal this baseline's on the whole
      batch; ``None`` otherwise.
    scale_equivariant: whether ``values(costs * s) = values(costs) * s`` for a
      positive scale s per step (leave-one-out: a mean of other costs), which
      lets the sequence surrogate feed it γ^t G_t and skip computing G_t.
  """

  init: Callable[[], Any]
  values: Callable[[jax.Array, Any, Any], Any]
  update: Callable[[Any, jax.Array], Any]
  name: str
  min_samples: int = 1
  per_coordinate: bool = False
  stateful: bool = False
  uses_other_samples: bool = False
  chunked: Optional[Callable[[jax.Array, int], Baseline]] = None
  scale_equivariant: bool = False


def _no_update(state, costs):
  del costs
  return state


def none() -> Baseline:
  """No baseline (b = 0): plain REINFORCE."""
  return Baseline(
    init=lambda: (),
    values=lambda costs, scores, state: jnp.zeros_like(costs),
    update=_no_update,
    name="none()",
  )


def constant(value: float) -> Baseline:
  """A fixed baseline b = ``value`` for every sample (unbiased for any value).

  Example:
    >>> import scoregrad as sg
    >>> est = sg.score_function(num_samples=16, baseline=sg.baselines.constant(1.0))
  """
  try:
    value = float(value)
  except (TypeError, ValueError):
    raise TypeError(
      f"`value` of constant() must be a Python float; got {value!r}. For a "
      "baseline that changes during training use moving_average(decay=...)."
    ) from None
  return Baseline(
    init=lambda: (),
    values=lambda costs, scores, state: jnp.full_like(costs, value),
    update=_no_update,
    name=f"constant({value})",
  )


class MovingAverageState(NamedTuple):
  """Exponential moving average of past mean costs and the number of updates.

  Attributes:
    value: the moving average of past mean costs, before bias correction (the
      baseline used is value / (1 − decay^count)).
    count: how many finite updates have been folded in (an int32 scalar; while
      it is 0 the baseline is 0).
  """

  value: jax.Array
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count; a public field since 0.1


def moving_average(decay: float = 0.9, *, zero_debias: bool = True) -> Baseline:
  """b = exponential moving average of the mean cost of previous steps.

  Uses only past costs, so it is independent of the current samples and the
  estimator stays unbiased. At the first step (no history) b = 0. With
  ``zero_debias`` the average is divided by 1 − decay^t (as Adam does).
  Steps whose mean cost is NaN or infinite leave the average unchanged.

  For (n, T) sequences in ``score_function_surrogate`` keep one average per
  step: ``state = baseline.init((T,))``, advanced with the cost-to-go.

  Args:
    decay: weight of the old average, in [0, 1).
    zero_debias: correct the bias towards the zero initial value.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.score_function(num_samples=8,
    ...                         baseline=sg.baselines.moving_average(decay=0.9))
    >>> state = est.init(jnp.zeros(2))
  """
  decay = check_positive_float("decay", decay, allow_zero=True)
  if decay >= 1.0:
    raise ValueError(
      f"`decay` must be in [0, 1); got decay={decay}. decay=1 never updates "
      "the average; typical values are 0.9 to 0.99."
    )

  def init(shape=()):
    # shape (T,): one average per step, for (n, T) sequences in
    # score_function_surrogate (update then averages over samples only).
    return MovingAverageState(value=jnp.zeros(shape), count=jnp.zeros((), jnp.int32))

  def values(costs, scores, state):
    del scores
    if zero_debias:
      correction = 1.0 - decay ** state.count.astype(costs.dtype)
      b = jnp.where(state.count > 0, state.value / jnp.where(correction > 0, correction, 1.0), 0.0)
    else:
      b = state.value
    return jnp.broadcast_to(jnp.asarray(b, costs.dtype), costs.shape)

  def update(state, costs):
    # The state keeps its own dtype (a stable lax.scan carry whatever the
    # costs' dtype), and a step whose mean cost is not finite is skipped, as
    # optax.apply_if_finite skips updates: one NaN must not poison every
    # later baseline (that step's own gradient is NaN by the NaN rule).
    costs = jax.lax.stop_gradient(costs)
    # Average over the sample axis down to the state's shape: () for one
    # average, (T,) for one per step of (n, T) costs.
    axes = tuple(range(costs.ndim - state.value.ndim))
    mean = jnp.mean(costs, axis=axes).astype(state.value.dtype)
    finite = jnp.all(jnp.isfinite(mean))
    new_value = decay * state.value + (1.0 - decay) * jnp.where(finite, mean, 0.0)
    return MovingAverageState(
      value=jnp.where(finite, new_value, state.value),
      count=state.count + finite.astype(state.count.dtype),
    )

  return Baseline(
    init=init, values=values, update=update, name=f"moving_average(decay={decay})", stateful=True
  )


def leave_one_out(group_size: Optional[int] = None) -> Baseline:
  """b_i = mean of the other samples' costs (RLOO; Kool et al. 2019), or of its group's.

  With n samples the estimator becomes (1/(n−1)) Σ_i (f(x_i) − f̄) ∇ log p(x_i),
  unbiased because b_i uses only x_j, j ≠ i. Needs ``num_samples >= 2``.

  With ``group_size=G`` the n = B·G samples are read group-major — rows
  g·G, …, g·G + G − 1 are the G completions of prompt g, as language-model RL
  lays them out — and b_i is the mean of the other G − 1 costs of i's group
  only (RLOO of Ahmadian et al. 2024): unbiased again, since those costs are
  independent of sample i. The per-group form is what
  ``scoregrad.rl.group_advantages(..., method="rloo")`` returns. For (n, T)
  cost-to-go in ``score_function_surrogate`` it acts per step. n must be a
  multiple of G (checked when traced); with ``chunk_size=`` every chunk must
  be (a group never straddles chunks), so the two-pass streaming of the
  ungrouped form is not needed.

  Args:
    group_size: ``None`` (one group of all samples) or an int G >= 2.

  Example:
    >>> import jax.numpy as jnp, scoregrad as sg
    >>> b = sg.baselines.leave_one_out(group_size=2)
    >>> b.values(jnp.array([1., 3., 10., 20.]), None, ())
    Array([ 3.,  1., 20., 10.], dtype=float32)

  References:
    Kool, van Hoof & Welling, "Buy 4 REINFORCE Samples, Get a Baseline for
    Free!", ICLR 2019 workshop.
    Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization
    for Learning from Human Feedback in LLMs", ACL 2024.
  """
  if group_size is None:

    def values(costs, scores, state):
      del scores, state
      n = costs.shape[0]
      return (jnp.sum(costs, axis=0) - costs) / (n - 1)  # per step for (n, T)

    def chunked(total, num_samples):
      # Two-pass streaming: `total` is the first pass's sum of every cost.
      def chunk_values(costs, scores, state):
        del scores, state
        return (jnp.asarray(total, costs.dtype) - costs) / (num_samples - 1)

      return Baseline(
        init=lambda: (), values=chunk_values, update=_no_update, name="leave_one_out()"
      )

    return Baseline(
      init=lambda: (),
      values=values,
      update=_no_update,
      name="leave_one_out()",
      min_samples=2,
      uses_other_samples=True,
      chunked=chunked,
      scale_equivariant=True,
    )

  group_size = check_positive_int(
    "group_size",
    group_size,
    minimum=2,
    why="Leave-one-out needs another sample in each group to average; a group of one has "
    "none. Use group_size >= 2, or a baseline from past steps: moving_average(decay=0.9).",
  )
  name = f"leave_one_out(group_size={group_size})"

  def grouped(costs, scores, state):
    del scores, state
    return group_leave_one_out(costs, group_size, name=name)

  def chunked_groups(total, num_samples):
    # Groups lie inside chunks (checked per chunk): the first pass is not needed.
    del total, num_samples
    return Baseline(init=lambda: (), values=grouped, update=_no_update, name=name)

  return Baseline(
    init=lambda: (),
    values=grouped,
    update=_no_update,
    name=name,
    min_samples=group_size,
    uses_other_samples=True,
    chunked=chunked_groups,
    scale_equivariant=True,
  )


def check_group_size(n: int, group_size: int, *, name: str) -> None:
  """THE check that ``group_size`` divides the number of samples (trace time)."""
  if n % group_size:
    raise ValueError(
      f"`group_size={group_size}` of {name} must divide the number of samples, laid out "
      f"group-major (the G completions of each prompt in consecutive rows); got {n} "
      f"samples, {n % group_size} left over. Pass n = B·G samples (with chunk_size=, a "
      "chunk_size that is a multiple of group_size), or the group_size you sampled with."
    )


def group_leave_one_out(costs: jax.Array, group_size: int, *, name: str) -> jax.Array:
  """b_i = mean of the other costs of i's group, for group-major (n, ...) costs."""
  n = costs.shape[0]
  check_group_size(n, group_size, name=name)
  grouped = costs.reshape((n // group_size, group_size) + costs.shape[1:])
  others = (jnp.sum(grouped, axis=1, keepdims=True) - grouped) / (group_size - 1)
  return others.reshape(costs.shape)


class LearnedState(NamedTuple):
  """The learned baseline's value and its optimizer state.

  Attributes:
    value: the baseline φ, a scalar fitted to past costs.
    opt_state: the optax optimizer's state for φ.
  """

  value: jax.Array
  opt_state: Any


def learned(optimizer: Any = None, *, init_value: float = 0.0) -> Baseline:
  """A scalar baseline b = φ fitted to past costs by an optax optimizer.

  After each step φ takes one optimizer step on the regression loss
  mean_i (f(x_i) − φ)² of that step's costs (the learned-baseline recipe of
  Williams 1992 and Mnih & Gregor 2014, here without inputs). Since φ only
  uses past steps it is independent of the current samples: unbiased. Its
  state (φ and the optimizer state) lives in the estimator state.

  Args:
    optimizer: an ``optax.GradientTransformation``; default ``optax.adam(0.1)``.
    init_value: initial φ.

  Example:
    >>> import optax, scoregrad as sg
    >>> est = sg.score_function(num_samples=8,
    ...                         baseline=sg.baselines.learned(optax.sgd(0.5)))

  References:
    Mnih & Gregor, "Neural Variational Inference and Learning in Belief
    Networks", ICML 2014.
  """
  if optimizer is None:
    optimizer = optax.adam(0.1)
  if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
    raise TypeError(
      "`optimizer` must be an optax.GradientTransformation such as "
      f"optax.adam(0.1); got {optimizer!r}."
    )
  try:
    init_value = float(init_value)
  except (TypeError, ValueError):
    raise TypeError(f"`init_value` must be a Python float; got {init_value!r}.") from None

  def init():
    value = jnp.asarray(init_value)
    return LearnedState(value=value, opt_state=optimizer.init(value))

  def values(costs, scores, state):
    del scores
    return jnp.broadcast_to(jnp.asarray(state.value, costs.dtype), costs.shape)

  def update(state, costs):
    costs = jax.lax.stop_gradient(costs)
    grad = jax.grad(lambda v: jnp.mean((costs - v) ** 2))(state.value.astype(costs.dtype))
    updates, opt_state = optimizer.update(
      grad.astype(state.value.dtype), state.opt_state, state.value
    )
    return LearnedState(value=state.value + updates, opt_state=opt_state)

  return Baseline(init=init, values=values, update=update, name="learned()", stateful=True)


def optimal() -> Baseline:
  """The variance-minimising per-coordinate baseline, estimated leave-one-out.

  For coordinate k with score s_k = ∂_k log p(x), the baseline minimising the
  variance of (f − b_k) s_k is b*_k = E[f s_k²] / E[s_k²]. Estimating it from
  the same samples would bias the estimator, so sample i uses the other
  samples only: b_{k,i} = Σ_{j≠i} f_j s_{kj}² / Σ_{j≠i} s_{kj}² (0 where the
  denominator is 0). Needs ``num_samples >= 2``. First-order only: use it
  with ``score_function(...).estimate``, not inside ``expectation``.

  References:
    Greensmith, Bartlett & Baxter, "Variance Reduction Techniques for Gradient
    Estimates in Reinforcement Learning", JMLR 2004.
  """

  def values(costs, scores, state):
    del state

    def leaf(s):
      s2 = jnp.reshape(s, (s.shape[0], -1)) ** 2
      fs2 = costs[:, None] * s2
      num = jnp.sum(fs2, axis=0) - fs2
      den = jnp.sum(s2, axis=0) - s2
      return safe_divide(num, den).reshape(s.shape)

    return jax.tree_util.tree_map(leaf, scores)

  return Baseline(
    init=lambda: (),
    values=values,
    update=_no_update,
    name="optimal()",
    min_samples=2,
    per_coordinate=True,
    uses_other_samples=True,
  )


def resolve(baseline: Optional[Baseline]) -> Baseline:
  """``None`` -> :func:`none`; checks the type otherwise."""
  if baseline is None:
    return none()
  if not isinstance(baseline, Baseline):
    hint = ""
    if callable(baseline) and getattr(baseline, "__module__", "") == __name__:
      hint = f" Call the factory: baseline={baseline.__name__}()."
    raise TypeError(
      "`baseline` must be a scoregrad.baselines.Baseline such as "
      "leave_one_out(), moving_average(decay=0.9), constant(0.0), optimal() or "
      "learned(); "
      f"got {baseline!r}.{hint}"
    )
  return baseline


def check_num_samples(baseline: Baseline, num_samples: int) -> None:
  if num_samples < baseline.min_samples:
    raise ValueError(
      f"`baseline={baseline.name}` needs num_samples >= {baseline.min_samples} "
      f"(each sample's baseline comes from the other samples); got "
      f"num_samples={num_samples}. Use num_samples={baseline.min_samples} or "
      "more, or a baseline that uses past steps: moving_average(decay=0.9)."
    )


def require_scalar(
  baseline: Baseline, *, where: str, instead: str, stateless: bool = False
) -> None:
  """THE check that a baseline is scalar (and, if ``stateless``, keeps no state).

  ``where`` names the caller for the message, ``instead`` says what to use.
  """
  if baseline.per_coordinate:
    raise ValueError(
      f"`baseline={baseline.name}` is per-coordinate (it needs the per-sample "
      f"scores of the parameters) and cannot be used in {where}. {instead}"
    )
  if stateless and baseline.stateful:
    raise ValueError(
      f"`baseline={baseline.name}` keeps state across steps and cannot be used "
      f"in {where}, which keeps none. {instead}"
    )
