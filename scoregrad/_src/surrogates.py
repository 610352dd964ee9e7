"""The one mechanism: the DiCE (magic-box) surrogate.

For samples x_i ~ p(·; θ) held fixed, τ_i = log p(x_i; θ), costs c_i (which may
themselves depend on θ) and baselines b_i independent of x_i,

    S(θ) = (1/n) Σ_i [ □(τ_i) c_i + (1 − □(τ_i)) b_i ],   □(τ) = exp(τ − ⊥(τ)),

where ⊥ is ``stop_gradient``. Its value is the Monte Carlo mean of c (□ = 1),
its gradient is the score-function estimator with a baseline,
(1/n) Σ_i [(c_i − b_i) ∇τ_i + ∇c_i], and its k-th derivative is an unbiased
estimate of the k-th derivative of E[c] because ∇^k □(τ) = □(τ) · (∇^k p / p)
term by term (Foerster et al. 2018). The baseline term (1 − □(τ_i)) b_i has
value 0 and zero expectation at every order (Mao et al. 2019), because
E[∇^k p(x)/p(x)] = ∇^k ∫p = 0 and b_i does not depend on x_i.

References:
  Foerster et al., "DiCE: The Infinitely Differentiable Monte Carlo
  Estimator", ICML 2018.
  Mao et al., "A Baseline for Any Order Gradient Estimation in Stochastic
  Computation Graphs", ICML 2019.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from scoregrad._src import baselines as _baselines
from scoregrad._src import rl as _rl


def magic_box(tau: jax.Array) -> jax.Array:
  """DiCE's magic box □(τ) = exp(τ − stop_gradient(τ)): value 1, ∇□ = □ ∇τ.

  Written literally, so that every derivative of every order is the one JAX
  derives for exp(τ − ⊥τ), under any transformation. (0.1 used a custom JVP
  whose primal was ``ones_like(τ)``, to let XLA skip evaluating τ; JAX's
  partial evaluation of ``lax.scan``/``fori_loop`` bodies inlines a custom
  JVP's primal for known inputs, so a Hessian taken through a loop silently
  lost the ∇τ∇τᵀ term. The literal form costs one fused elementwise
  evaluation of τ, within timing noise in benchmarks/throughput.py.)

  The value is exactly 1 for finite τ (τ − τ = 0), and NaN when τ is NaN or
  infinite (a sample of zero or infinite density): NaN in, NaN out.
  """
  return jnp.exp(tau - jax.lax.stop_gradient(tau))


def dice(
  log_probs: jax.Array, costs: jax.Array, baseline_values: Optional[jax.Array] = None
) -> jax.Array:
  """The per-sample DiCE terms □(τ_i) c_i + (1 − □(τ_i)) ⊥(b_i), shape (n,)."""
  box = magic_box(log_probs)
  terms = box * costs
  if baseline_values is not None:
    terms = terms + (1.0 - box) * jax.lax.stop_gradient(baseline_values)
  return terms


def score_function_surrogate(
  log_probs: jax.Array,
  costs: jax.Array,
  *,
  baseline: Optional[_baselines.Baseline | jax.Array] = None,
  baseline_state: Any = None,
  mask: Optional[jax.Array] = None,
  discount: float | jax.Array = 1.0,
) -> jax.Array:
  """A scalar whose value is the mean cost and whose gradient is REINFORCE.

  For callers who already hold samples and their costs (RL rollouts, samples
  from a simulator). Two layouts:

  * shape (n,): ``log_probs[i] = log p(x_i; θ)`` traced in θ (the samples held
    fixed) and ``costs[i]`` the cost of sample i. The value is mean(costs);
    ``jax.grad`` is (1/n) Σ_i (c_i − b_i) ∇ log p(x_i; θ) + (1/n) Σ_i ∇c_i.
  * shape (n, T), batch-major: n episodes of T steps, ``log_probs[i, t] =
    log π(a_{i,t} | s_{i,t}; θ)`` and ``costs[i, t]`` the cost after step t.
    With γ = ``discount`` and m = ``mask``, the value is
    (1/n) Σ_i Σ_t γ^t m_{i,t} c_{i,t} and the gradient is causal: each action
    is credited only with the costs that follow it (reward-to-go),

        (1/n) Σ_i Σ_t ∇ log π_{i,t} · γ^t (G_{i,t} − b_{i,t}),
        G_{i,t} = Σ_{t'≥t} γ^{t'−t} m_{i,t'} c_{i,t'}   (``rl.discounted_returns``).

  The surrogate is multi-step DiCE with τ_{i,t} = m_{i,t} log π_{i,t} and the
  cumulative magic box □(Σ_{t'≤t} τ_{i,t'}) on each cost (Foerster et al.
  2018), plus Mao et al.'s (2019) baseline term:

      S = (1/n) Σ_i Σ_t γ^t [ □(C_{i,t}) m c_{i,t} + (□(C_{i,t−1}) − □(C_{i,t})) b_{i,t} ],
      C_{i,t} = Σ_{t'≤t} τ_{i,t'}.

  Every derivative of S is an unbiased estimate of the same derivative of the
  discounted expected cost (∇^k □(C_t) carries ∇^k p(h_t)/p(h_t) for the
  history up to t, and c_t depends only on that history). The baseline term
  has value 0 and zero expectation at every order, because b_{i,t} does not
  depend on a_{i,t} (nor on anything later): its first derivative is the
  familiar −Σ_t γ^t b_t ∇τ_t of DiCE's Σ_t (1 − □(τ_t)) b_t, and its higher
  derivatives also reduce the variance of the Hessian terms (Mao et al.).
  Steps with mask 0 contribute neither cost nor log-probability, whatever
  the arrays hold there (NaN included). For T = 1 and no mask both layouts
  agree.

  Requirements: the samples/actions are held fixed; ``log_probs`` is traced in
  θ; a step's cost may depend on θ (its pathwise term is included) but not on
  later actions; ``mask[i, t]`` may depend only on the history before a_{i,t}
  (termination).

  Args:
    log_probs: shape (n,) or (n, T), log-probabilities traced in θ.
    costs: the same shape, the costs (for rewards pass ``-rewards`` and
      minimise).
    baseline: ``None``; a scalar baseline from :mod:`scoregrad.baselines`
      (not the per-coordinate ``optimal()``, which needs the parameters: use
      ``score_function(...).estimate``) — for (n, T) it acts per step on the
      cost-to-go G (``leave_one_out()``: b_{i,t} = mean_{j≠i} G_{j,t};
      ``moving_average``: one average per step with state from
      ``baseline.init((T,))``); or an array of baseline values that you
      computed, shape (), (n,) or for sequences (n, T), e.g. a value network's
      V(s_{i,t}) ≈ E[G_{i,t}]. It is held constant (stop_gradient) and must
      not depend on sample i's current or later actions.
    baseline_state: the baseline's state, required for stateful baselines
      (``moving_average``); advance it with ``baseline.update(state, costs)``
      for (n,), or ``baseline.update(state, rl.discounted_returns(costs,
      mask=mask, discount=discount))`` for (n, T).
    mask: (n, T) of 0/1 or bool (sequences only): 1 while the episode is
      running, 0 after it terminated. Non-0/1 values raise when concrete and
      give a NaN value under ``jit``.
    discount: γ in [0, 1] (sequences only); a Python float or a scalar array.

  Returns:
    A scalar surrogate to put in your loss.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> def loss(logits, actions, rewards):
    ...   logp = jax.vmap(lambda a: jax.nn.log_softmax(logits)[a])(actions)
    ...   return -sg.score_function_surrogate(
    ...       logp, rewards, baseline=sg.baselines.leave_one_out())
    >>> g = jax.grad(loss)(jnp.zeros(3), jnp.array([0, 1, 2, 1]),
    ...                    jnp.array([1., 0., 2., 0.]))
    >>> # Sequences: 2 episodes of 3 steps, the second ends after step 1.
    >>> def seq_loss(logits, actions, costs, alive):
    ...   logp = jax.nn.log_softmax(logits)[actions]          # (2, 3)
    ...   return sg.score_function_surrogate(
    ...       logp, costs, mask=alive, discount=0.9,
    ...       baseline=sg.baselines.leave_one_out())
    >>> actions = jnp.array([[0, 1, 2], [1, 1, 0]])
    >>> alive = jnp.array([[1, 1, 1], [1, 1, 0]])
    >>> g = jax.grad(seq_loss)(jnp.zeros(3), actions, jnp.ones((2, 3)), alive)

  References:
    Foerster et al., "DiCE: The Infinitely Differentiable Monte Carlo
    Estimator", ICML 2018.
    Mao et al., "A Baseline for Any Order Gradient Estimation in Stochastic
    Computation Graphs", ICML 2019.
    Williams, "Simple Statistical Gradient-Following Algorithms for
    Connectionist Reinforcement Learning", Machine Learning 1992.
  """
  log_probs = jnp.asarray(log_probs)
  costs = jnp.asarray(costs)
  if log_probs.ndim == 2 or costs.ndim == 2:
    return _sequence_surrogate(log_probs, costs, baseline, baseline_state, mask, discount)
  if log_probs.ndim != 1 or costs.shape != log_probs.shape:
    raise ValueError(
      "`log_probs` and `costs` must both have shape (n,), one entry per "
      f"sample, or both (n, T) for sequences; got log_probs.shape={log_probs.shape}, "
      f"costs.shape={costs.shape}."
    )
  if mask is not None:
    raise ValueError(
      f"`mask` applies to sequences only (log_probs and costs of shape (n, T)); "
      f"got mask with shape {jnp.shape(mask)} for inputs of shape {costs.shape}. "
      "Drop `mask`, or pass per-step arrays of shape (n, T)."
    )
  if not (isinstance(discount, (int, float)) and float(discount) == 1.0):
    raise ValueError(
      f"`discount` applies to sequences only (log_probs and costs of shape (n, T)); "
      f"got discount={discount!r} for inputs of shape {costs.shape}."
    )
  n = costs.shape[0]
  values = _baseline_values(
    baseline, baseline_state, jax.lax.stop_gradient(costs), n, array_shapes=((), (n,))
  )
  return jnp.mean(dice(log_probs, costs, values))


def _baseline_values(baseline, baseline_state, targets, n, *, array_shapes):
  """b for each entry of ``targets`` (costs, or cost-to-go for sequences), or None."""
  if hasattr(baseline, "shape") and not isinstance(baseline, _baselines.Baseline):
    values = jnp.asarray(baseline)
    if values.shape not in array_shapes:
      allowed = " or ".join(str(s) for s in array_shapes[1:])
      raise ValueError(
        f"An array `baseline` must be a scalar or have shape {allowed} (a value "
        f"per sample{' or per sample and step' if len(array_shapes) > 2 else ''}); "
        f"got shape {values.shape}."
      )
    return jnp.broadcast_to(
      values if values.ndim != 1 else values.reshape((n,) + (1,) * (targets.ndim - 1)),
      targets.shape,
    )
  baseline = _baselines.resolve(baseline)
  _baselines.check_num_samples(baseline, n)
  _baselines.require_scalar(
    baseline,
    where="score_function_surrogate()",
    instead="Use scoregrad.score_function(num_samples=..., baseline=...).estimate(...) "
    "instead, or a scalar baseline such as leave_one_out().",
  )
  if baseline_state is None:
    if baseline.stateful:
      shape_hint = "" if targets.ndim == 1 else f"((T,)) = init(({targets.shape[1]},))"
      raise ValueError(
        f"`baseline={baseline.name}` keeps state across steps: pass "
        f"`baseline_state` (from baseline.init{shape_hint or '()'}) and advance "
        "it with baseline.update(baseline_state, costs)"
        + (
          "."
          if targets.ndim == 1
          else " where costs is the cost-to-go, scoregrad.rl.discounted_returns(...)."
        )
      )
    baseline_state = baseline.init()
  values = baseline.values(targets, None, baseline_state)
  if jnp.shape(values) != targets.shape:
    raise ValueError(
      f"`baseline={baseline.name}` gave values of shape {jnp.shape(values)} for "
      f"costs of shape {targets.shape}; for (n, T) sequences a per-step state "
      f"comes from baseline.init(({targets.shape[-1]},))."
    )
  return values


def _sequence_surrogate(log_probs, costs, baseline, baseline_state, mask, discount):
  if log_probs.ndim != 2 or costs.shape != log_probs.shape:
    raise ValueError(
      "For sequences `log_probs` and `costs` must both have shape (n, T), "
      f"samples by steps (batch-major); got log_probs.shape={log_probs.shape}, "
      f"costs.shape={costs.shape}. Give both one entry per step, or sum each "
      "trajectory and pass shape (n,)."
    )
  n, num_steps = costs.shape
  gamma, discount_ok = _rl.check_discount(discount)
  alive, mask_ok = _rl.check_mask(mask, costs.shape)
  dtype = jnp.result_type(log_probs.dtype, costs.dtype, jnp.float32)
  gamma = gamma.astype(dtype)
  if alive is not None:
    # where, not a product: garbage (NaN, inf) after termination stays out.
    log_probs = jnp.where(alive, log_probs, 0.0)
    costs = jnp.where(alive, costs, 0.0)
  weights = gamma ** jnp.arange(num_steps, dtype=dtype)
  cost_to_go = _rl.discounted_returns(jax.lax.stop_gradient(costs), discount=gamma)
  values = _baseline_values(
    baseline, baseline_state, cost_to_go, n, array_shapes=((), (n,), (n, num_steps))
  )
  cumulative = jnp.cumsum(log_probs, axis=1)
  box = magic_box(cumulative)
  terms = box * costs
  if values is not None:
    before = jnp.concatenate([jnp.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], axis=1)
    values = jax.lax.stop_gradient(values)
    if alive is not None:
      values = jnp.where(alive, values, 0.0)
    terms = terms + (magic_box(before) - box) * values
  out = jnp.sum(jnp.mean(terms, axis=0) * weights)
  for ok in (mask_ok, discount_ok):
    if ok is not None:
      out = jnp.where(ok, out, jnp.nan)
  return out
