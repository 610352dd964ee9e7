"""Sequence helpers for policy gradients: cost-to-go, λ-returns, GAE.

Batch-major (n, T) arrays — n episodes by T steps — with a 0/1 ``mask``
(1 while the episode runs, 0 after it terminated; whatever the arrays hold at
masked steps is ignored) and a scalar discount γ ∈ [0, 1]. Each helper is one
reverse ``lax.scan`` over the steps. The names follow rlax (Hessel et al.
2020), which is time-major and unbatched; here costs replace rewards (pass
``-rewards``), to match ``score_function_surrogate``, which minimises.

References:
  Sutton & Barto, "Reinforcement Learning: An Introduction", 2nd ed., 2018
  (ch. 12, λ-returns).
  Schulman et al., "High-Dimensional Continuous Control Using Generalized
  Advantage Estimation", ICLR 2016.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

_BLOCK = 32


def cumulative_sum(x: jax.Array, *, reverse: bool = False) -> jax.Array:
  """Σ_{t'≤t} x_{t'} (or Σ_{t'≥t} with ``reverse``) along axis 1 of an (n, T) array.

  Blocked: a triangular matrix product within blocks of 32 steps, then a
  cumulative sum of the block totals. On CPU XLA lowers ``lax.cumsum`` to a
  ``reduce_window`` over the whole axis, about 2.5x slower at T = 1000; the
  blocked form is linear like it, so every derivative is the same. A NaN or
  infinite entry makes its whole block of 32 NaN (0·NaN in the product),
  not only the entries after it.
  """
  n, num_steps = x.shape
  if num_steps <= _BLOCK:
    return jax.lax.cumsum(x, axis=1, reverse=reverse)
  padded = -(-num_steps // _BLOCK) * _BLOCK
  blocks = jnp.pad(x, ((0, 0), (0, padded - num_steps))).reshape(n, padded // _BLOCK, _BLOCK)
  j = jnp.arange(_BLOCK)
  tri = (j[:, None] >= j[None, :]) if reverse else (j[:, None] <= j[None, :])
  within = jnp.einsum(
    "nbj,jk->nbk", blocks, tri.astype(x.dtype), precision=jax.lax.Precision.HIGHEST
  )
  totals = within[..., 0] if reverse else within[..., -1]
  offsets = jax.lax.cumsum(totals, axis=1, reverse=reverse) - totals
  return (within + offsets[..., None]).reshape(n, padded)[:, :num_steps]


def check_unit_interval(name: str, value, *, hint: str = ""):
  """A scalar in [0, 1]: (value as an array, None) when concrete; (array, traced
  validity flag) when traced (the caller turns an invalid value into NaN)."""
  if isinstance(value, bool):
    raise TypeError(f"`{name}` must be a float in [0, 1]; got {value!r}.")
  if jnp.ndim(value) != 0:
    raise ValueError(f"`{name}` must be a scalar in [0, 1]; got shape {jnp.shape(value)}.")
  if not isinstance(value, jax.core.Tracer):
    try:
      value_f = float(value)
    except (TypeError, ValueError):
      raise TypeError(f"`{name}` must be a float in [0, 1]; got {value!r}.") from None
    if not 0.0 <= value_f <= 1.0:  # also rejects NaN
      raise ValueError(f"`{name}` must be in [0, 1]; got {name}={value!r}.{hint}")
    return jnp.asarray(value_f), None
  value = jnp.asarray(value)
  return value, (value >= 0) & (value <= 1)


def check_nonnegative(name: str, value, *, strict: bool = False):
  """A scalar ≥ 0 (> 0 if ``strict``): (array, None) when concrete, (array, flag) traced."""
  bound = "> 0" if strict else ">= 0"
  if isinstance(value, bool) or jnp.ndim(value) != 0:
    raise ValueError(f"`{name}` must be a scalar {bound}; got {name}={value!r}.")
  if not isinstance(value, jax.core.Tracer):
    try:
      value_f = float(value)
    except (TypeError, ValueError):
      raise TypeError(f"`{name}` must be a float {bound}; got {value!r}.") from None
    if not (value_f > 0 or (value_f == 0 and not strict)):  # also rejects NaN
      raise ValueError(
        f"`{name}` must be {bound}; got {name}={value!r}. PPO's clip is ε in "
        "[1 − ε, 1 + ε], typically 0.1 to 0.3; a truncation caps ratios at c̄, typically 1 to 10."
      )
    return jnp.asarray(value_f), None
  value = jnp.asarray(value)
  return value, (value > 0) if strict else (value >= 0)


def check_discount(discount):
  return check_unit_interval(
    "discount",
    discount,
    hint=" γ weights step t by γ^t: typical values are 0.95 to 0.999; 1.0 is undiscounted.",
  )


def check_mask(mask, shape):
  """The (n, T) mask as bool, plus a traced validity flag (or None).

  A mask must hold only 0/1 (or bool) and be a prefix mask: 1 while the
  episode runs, then 0 for good. A hole (1, 0, 1) has two readings — the step
  after it counted, or the hole taken as termination — so it is refused:
  a clear error when the mask is concrete, a NaN result under ``jit`` (the
  flag), by the NaN rule for traced invalid settings.
  """
  if mask is None:
    return None, None
  if mask.__class__.__module__.startswith("numpy") or not isinstance(mask, jax.core.Tracer):
    concrete = np.asarray(mask)
    if concrete.shape != tuple(shape):
      raise ValueError(
        f"`mask` must have the shape of the per-step arrays, {tuple(shape)}; got "
        f"mask.shape={concrete.shape}."
      )
    if concrete.dtype != np.bool_:
      valid = (concrete == 0) | (concrete == 1)
      if not valid.all():
        bad = np.unique(concrete[~valid])[:5]
        raise ValueError(
          "`mask` must hold only 0/1 (or bool): 1 while an episode runs, 0 after it "
          f"terminated; got values {bad.tolist()}. Build it from the done flags, e.g. "
          "`mask = jnp.cumprod(1 - done, axis=1)` shifted by one step; to weight "
          "steps, scale the costs instead."
        )
    alive = concrete != 0
    holes = alive[:, 1:] & ~alive[:, :-1]
    if holes.any():
      i, t = (int(v) for v in np.argwhere(holes)[0])
      raise ValueError(
        "`mask` must be a prefix mask: 1 while an episode runs, then 0 for good; got a "
        f"hole in row {i} (mask[{i}, {t}] = 0, mask[{i}, {t + 1}] = 1, row "
        f"{concrete[i].astype(int).tolist()[:12]}). A 0 ends the episode, so no later "
        "step can count. For a step with no cost that does not end the episode, set "
        "its cost to 0; for a step with no action, set its log-prob to 0."
      )
    return jnp.asarray(alive), None
  mask = jnp.asarray(mask)
  if mask.shape != tuple(shape):
    raise ValueError(
      f"`mask` must have the shape of the per-step arrays, {tuple(shape)}; got "
      f"mask.shape={mask.shape}."
    )
  if mask.dtype == jnp.bool_:
    return mask, jnp.all(mask[:, 1:] <= mask[:, :-1])
  # One fused pass: each entry is 0, or 1 with a 1 before it (0/1 and prefix).
  rest, before = mask[:, 1:], mask[:, :-1]
  ok = jnp.all((rest == 0) | ((rest == 1) & (before == 1)))
  first = mask[:, 0]
  return mask != 0, ok & jnp.all((first == 0) | (first == 1))


def check_per_step(name: str, value, shape=None):
  value = jnp.asarray(value)
  if value.ndim != 2 or (shape is not None and value.shape != tuple(shape)):
    want = "(n, T), episodes by steps" if shape is None else f"{tuple(shape)}, like `costs`"
    raise ValueError(f"`{name}` must have shape {want}; got {name}.shape={value.shape}.")
  return value


def _prepare(costs, values, discount, mask, bootstrap_value):
  costs = check_per_step("costs", costs)
  if values is not None:
    values = check_per_step("values", values, costs.shape)
  gamma, discount_ok = check_discount(discount)
  alive, mask_ok = check_mask(mask, costs.shape)
  dtype = jnp.result_type(costs.dtype, jnp.float32)
  n = costs.shape[0]
  if bootstrap_value is None:
    boot = jnp.zeros((n,), dtype)
  else:
    boot = jnp.asarray(bootstrap_value, dtype)
    if boot.shape != (n,):
      raise ValueError(
        f"`bootstrap_value` must have shape ({n},): one value estimate of the state "
        f"after the last step per episode; got shape {boot.shape}."
      )
  if alive is None:
    alive = jnp.ones(costs.shape, bool)
  costs = jnp.where(alive, costs, 0.0).astype(dtype)
  if values is not None:
    values = jnp.where(alive, values, 0.0).astype(dtype)
  checks = [ok for ok in (discount_ok, mask_ok) if ok is not None]
  return costs, values, gamma.astype(dtype), alive, boot, checks


def _finish(out, checks):
  for ok in checks:
    out = jnp.where(ok, out, jnp.nan)
  return out


def _reverse_scan(step, init, xs):
  """Scans ``step`` from the last step to the first over time-major views of xs."""
  _, out = jax.lax.scan(step, init, jax.tree_util.tree_map(lambda x: x.T, xs), reverse=True)
  return out.T


def discounted_returns(
  costs: jax.Array,
  *,
  discount: float | jax.Array = 1.0,
  mask: Optional[jax.Array] = None,
  bootstrap_value: Optional[jax.Array] = None,
) -> jax.Array:
  """The discounted cost-to-go G_t = Σ_{t'≥t} γ^{t'−t} m_{t'} c_{t'} of each step.

  Computed backwards, G_t = m_t (c_t + γ G_{t+1}), from G_T = ``bootstrap_value``
  (0 by default: the episodes end within the T steps). This is the G_{i,t}
  whose γ^t-weighted products with ∇ log π_{i,t} make the causal gradient of
  ``score_function_surrogate`` on (n, T) inputs, and the target that its
  per-step baselines estimate.

  Args:
    costs: (n, T) per-step costs (``-rewards`` for rewards).
    discount: γ in [0, 1].
    mask: (n, T) of 0/1 or bool, 1 while the episode runs; steps with 0 count
      as zero cost and end the return (garbage there is ignored).
    bootstrap_value: (n,) an estimate of the cost-to-go after step T − 1, for
      episodes cut off by the horizon rather than terminated.

  Returns:
    (n, T) cost-to-go, 0 at masked steps.

  Example:
    >>> import jax.numpy as jnp, scoregrad as sg
    >>> sg.rl.discounted_returns(jnp.array([[1., 1., 1.]]), discount=0.5)
    Array([[1.75, 1.5 , 1.  ]], dtype=float32)

  References:
    Sutton & Barto, "Reinforcement Learning: An Introduction", 2018, §3.3.
  """
  costs, _, gamma, alive, boot, checks = _prepare(costs, None, discount, mask, bootstrap_value)

  def step(carry, x):
    c, m = x
    g = jnp.where(m, c + gamma * carry, 0.0)
    return g, g

  return _finish(_reverse_scan(step, boot, (costs, alive)), checks)


def lambda_returns(
  costs: jax.Array,
  values: jax.Array,
  *,
  discount: float | jax.Array = 1.0,
  lambda_: float | jax.Array = 1.0,
  mask: Optional[jax.Array] = None,
  bootstrap_value: Optional[jax.Array] = None,
) -> jax.Array:
  """λ-returns G^λ_t = c_t + γ [(1 − λ) V_{t+1} + λ G^λ_{t+1}] (costs, batch-major).

  ``values[i, t]`` is a critic's estimate V(s_{i,t}) of the cost-to-go from
  step t; V_T = G^λ_T = ``bootstrap_value`` (0 by default), and a step after
  termination contributes V = G^λ = 0. λ = 1 gives :func:`discounted_returns`
  (the critic then does not enter), λ = 0 the one-step TD target
  c_t + γ V_{t+1}.

  Args:
    costs: (n, T) per-step costs.
    values: (n, T) value estimates V(s_t), held constant by the caller
      (``jax.lax.stop_gradient``) when used as targets.
    discount: γ in [0, 1].
    lambda_: λ in [0, 1], the bias-variance trade-off of the targets.
    mask: (n, T) of 0/1 or bool, 1 while the episode runs.
    bootstrap_value: (n,) V of the state after the last step.

  Returns:
    (n, T) λ-returns, 0 at masked steps.

  Example:
    >>> import jax.numpy as jnp, scoregrad as sg
    >>> sg.rl.lambda_returns(jnp.ones((1, 3)), jnp.zeros((1, 3)), lambda_=0.0)
    Array([[1., 1., 1.]], dtype=float32)

  References:
    Sutton & Barto, "Reinforcement Learning: An Introduction", 2018, §12.1.
  """
  costs, values, gamma, alive, boot, checks = _prepare(
    costs, values, discount, mask, bootstrap_value
  )
  lam, lambda_ok = check_unit_interval("lambda_", lambda_)
  lam = lam.astype(costs.dtype)
  if lambda_ok is not None:
    checks.append(lambda_ok)

  def step(carry, x):
    g_next, v_next = carry
    c, v, m = x
    g = jnp.where(m, c + gamma * ((1 - lam) * v_next + lam * g_next), 0.0)
    return (g, v), g

  return _finish(_reverse_scan(step, (boot, boot), (costs, values, alive)), checks)


def generalized_advantage_estimation(
  costs: jax.Array,
  values: jax.Array,
  *,
  discount: float | jax.Array = 1.0,
  lambda_: float | jax.Array = 0.95,
  mask: Optional[jax.Array] = None,
  bootstrap_value: Optional[jax.Array] = None,
) -> jax.Array:
  """GAE advantages A_t = Σ_k (γλ)^k δ_{t+k}, δ_t = c_t + γ V_{t+1} − V_t (costs).

  Equal to ``lambda_returns(...) − values`` (0 at masked steps). In cost units
  a positive advantage means "worse than the critic expected". For λ = 1,
  A_t = G_t − V_t: the causal estimator with the critic as per-step baseline,
  which is what ``score_function_surrogate(log_probs, costs, mask=,
  discount=, baseline=values)`` computes, unbiased for any V that does not
  depend on the action a_t. For λ < 1 (or an inexact V bootstrapped in the
  middle of episodes) the advantages trade bias for variance; use them as
  ``jnp.mean(jnp.sum(mask * log_probs * jax.lax.stop_gradient(adv), axis=1))``,
  a first-order, biased actor-critic surrogate (the DESIGN's unbiasedness
  guarantee does not cover it).

  Args:
    costs: (n, T) per-step costs.
    values: (n, T) critic estimates V(s_t).
    discount: γ in [0, 1].
    lambda_: λ in [0, 1].
    mask: (n, T) of 0/1 or bool, 1 while the episode runs.
    bootstrap_value: (n,) V of the state after the last step (0 by default).

  Returns:
    (n, T) advantages, 0 at masked steps.

  Example:
    >>> import jax.numpy as jnp, scoregrad as sg
    >>> adv = sg.rl.generalized_advantage_estimation(
    ...     jnp.ones((2, 4)), jnp.zeros((2, 4)), discount=0.99, lambda_=0.9)

  References:
    Schulman et al., "High-Dimensional Continuous Control Using Generalized
    Advantage Estimation", ICLR 2016.
  """
  costs, values, gamma, alive, boot, checks = _prepare(
    costs, values, discount, mask, bootstrap_value
  )
  lam, lambda_ok = check_unit_interval("lambda_", lambda_)
  lam = lam.astype(costs.dtype)
  if lambda_ok is not None:
    checks.append(lambda_ok)

  def step(carry, x):
    a_next, v_next = carry
    c, v, m = x
    delta = c + gamma * v_next - v
    a = jnp.where(m, delta + gamma * lam * a_next, 0.0)
    return (a, jnp.where(m, v, 0.0)), a

  return _finish(_reverse_scan(step, (jnp.zeros_like(boot), boot), (costs, values, alive)), checks)
