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
import numpy as np

from scoregrad._src import base as _base
from scoregrad._src import baselines as _baselines
from scoregrad._src import rl as _rl
from scoregrad._src import validation as _validation


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


AGGREGATIONS = ("sequence", "token_mean", "constant")


def score_function_surrogate(
  log_probs: jax.Array,
  costs: jax.Array,
  *,
  baseline: Optional[_baselines.Baseline | jax.Array] = None,
  baseline_state: Any = None,
  mask: Optional[jax.Array] = None,
  discount: float | jax.Array = 1.0,
  aggregation: str = "sequence",
  max_length: Optional[int] = None,
  behavior_log_probs: Optional[jax.Array] = None,
  clip: Optional[float | jax.Array] = None,
  truncation: Optional[float | jax.Array] = None,
) -> jax.Array:
  """A scalar whose value is the mean cost and whose gradient is REINFORCE.

  For callers who already hold samples and their costs (RL rollouts, sampled
  completions of a language model, samples from a simulator). Three layouts:

  * ``log_probs`` (n,), ``costs`` (n,): ``log_probs[i] = log p(x_i; θ)``
    traced in θ (the samples held fixed) and ``costs[i]`` the cost of sample
    i. The value is mean(costs); ``jax.grad`` is
    (1/n) Σ_i (c_i − b_i) ∇ log p(x_i; θ) + (1/n) Σ_i ∇c_i.
  * ``log_probs`` (n, T), ``costs`` (n, T), batch-major: n episodes of T
    steps, ``log_probs[i, t] = log π(a_{i,t} | s_{i,t}; θ)`` and
    ``costs[i, t]`` the cost after step t. With γ = ``discount`` and m =
    ``mask``, the value is (1/n) Σ_i Σ_t γ^t m_{i,t} c_{i,t} and the gradient
    is causal: each action is credited only with the costs that follow it,

        (1/n) Σ_i Σ_t ∇ log π_{i,t} · γ^t (G_{i,t} − b_{i,t}),
        G_{i,t} = Σ_{t'≥t} γ^{t'−t} m_{i,t'} c_{i,t'}   (``rl.discounted_returns``).
  * ``log_probs`` (n, T), ``costs`` (n,): per-token log-probs of n sampled
    sequences (completions) with one cost each (a sequence-level reward,
    negated). ``aggregation="sequence"`` is the (n,) layout on
    log p(y_i) = Σ_t m_{i,t} log π_{i,t}; ``discount`` must be 1.

  The surrogate is multi-step DiCE with τ_{i,t} = m_{i,t} log π_{i,t} and the
  cumulative magic box □(Σ_{t'≤t} τ_{i,t'}) on each cost (Foerster et al.
  2018), plus Mao et al.'s (2019) baseline term:

      S = (1/n) Σ_i Σ_t γ^t [ □(C_{i,t}) m c_{i,t} + (□(C_{i,t−1}) − □(C_{i,t})) b_{i,t} ],
      C_{i,t} = Σ_{t'≤t} τ_{i,t'}.

  Every derivative of S is an unbiased estimate of the same derivative of the
  discounted expected cost (∇^k □(C_t) carries ∇^k p(h_t)/p(h_t) for the
  history up to t, and c_t depends only on that history). The baseline term
  has value 0 and zero expectation at every order, because b_{i,t} does not
  depend on a_{i,t} (nor on anything later). Steps with mask 0 contribute
  neither cost nor log-probability, whatever the arrays hold there (NaN
  included).

  **Aggregation over tokens** (``aggregation=``, for (n, T) log-probs; the
  per-token weights of ∇ log π_{i,t}):

  * ``"sequence"`` (default): Σ_t — the REINFORCE gradient above, unbiased
    for ∇E[c] at every order.
  * ``"constant"``: Σ_t / T_max with T_max = ``max_length`` (default T, the
    arrays' width) — Dr. GRPO's (Liu et al. 2025): every derivative of every
    order is exactly 1/T_max times the ``"sequence"`` one, so unbiased for
    ∇^k E[c] / T_max (the value stays mean cost).
  * ``"token_mean"``: Σ_t / L_i with L_i = Σ_t m_{i,t} each sequence's own
    length — GRPO's. Its expectation E[(c − b)/L · ∇ log p(y)] is not a
    multiple of ∇E[c] when lengths vary (it favours short sequences for
    costs below the baseline and long ones above): biased, first order only
    (a second derivative raises). tests/test_rl.py measures the bias by
    enumeration.

  **Off-policy samples** (``behavior_log_probs=``, same shape as
  ``log_probs``: log μ of the policy that drew the samples, held constant):
  each magic box becomes the importance weight of the history up to t,
  □(C_t) → W_t = exp(C_t − ⊥B_t), B_t = Σ_{t'≤t} m β_{t'} (per-decision
  importance sampling, Precup et al. 2000). Since E_μ[W_t(θ) h(history_t)] =
  E_π[h] for every θ, every derivative of S is unbiased for the derivative
  of the on-policy expected cost, baseline term included (E_μ[W_{t−1} b_t] =
  E_μ[W_t b_t]); the value is the importance-sampling estimate of the cost.
  The variance grows with the divergence of π from μ; the per-token forms
  below trade bias for it:

  * ``clip=ε``: PPO's clipped surrogate (Schulman et al. 2017) on the
    per-token ratio ρ_{i,t} = π/μ of step t alone, in cost form (the
    pessimistic max for a minimised cost): Σ_t max(ρ A, clip(ρ, 1 − ε,
    1 + ε) A) with A_{i,t} = γ^t (G_{i,t} − b_{i,t}) held constant.
  * ``truncation=c̄``: truncated importance sampling, Σ_t min(ρ, c̄) A ∇τ_t
    (IMPALA's ρ̄; the TIS of LM trainers).

  Both use ρ of one token, not W of the history, so they are biased except
  at θ = θ_old (π = μ, where the gradient is the on-policy one; a truncation
  c̄ ≥ 1 or any ε leaves it exact there) and first order only (a second
  derivative raises). Their gradient is aggregated as ``aggregation`` says;
  a cost's own dependence on θ enters as its on-policy pathwise term, and
  their value is the importance-sampling estimate of the cost, as above.

  Requirements: the samples/actions are held fixed; ``log_probs`` is traced in
  θ; a step's cost may depend on θ (its pathwise term is included) but not on
  later actions; ``mask[i, t]`` may depend only on the history before a_{i,t}
  (termination).

  Args:
    log_probs: shape (n,) or (n, T), log-probabilities traced in θ.
    costs: shape (n,), or (n, T) like ``log_probs`` (for rewards pass
      ``-rewards`` and minimise).
    baseline: ``None``; a scalar baseline from :mod:`scoregrad.baselines`
      (not the per-coordinate ``optimal()``) — for (n, T) costs it acts per
      step on the cost-to-go G (``leave_one_out()``: b_{i,t} = mean_{j≠i}
      G_{j,t}; ``leave_one_out(group_size=G)``: the mean over the other
      members of i's group, for group-major completions of B prompts;
      ``moving_average``: one average per step with state from
      ``baseline.init((T,))``); or an array of baseline values that you
      computed, shape (), (n,) or for sequences (n, T), e.g. a value network's
      V(s_{i,t}) ≈ E[G_{i,t}]. It is held constant (stop_gradient) and must
      not depend on sample i's current or later actions.
    baseline_state: the baseline's state, required for stateful baselines
      (``moving_average``); advance it with ``baseline.update(state, costs)``
      for (n,), or ``baseline.update(state, rl.discounted_returns(costs,
      mask=mask, discount=discount))`` for (n, T).
    mask: (n, T) of 0/1 or bool: 1 while the episode (completion) runs, 0
      after it terminated — a prefix mask. Values other than 0/1, or a hole
      (1, 0, 1), raise when concrete and give a NaN value under ``jit``.
    discount: γ in [0, 1] (per-step costs only); a Python float or a scalar
      array (out of range under ``jit``: NaN).
    aggregation: ``"sequence"``, ``"token_mean"`` or ``"constant"`` (above).
    max_length: T_max of ``"constant"`` (default: T).
    behavior_log_probs: log-probabilities of the samples under the policy
      that drew them, like ``log_probs``; ``None`` for on-policy samples.
    clip: PPO's ε ≥ 0 (needs ``behavior_log_probs``).
    truncation: c̄ > 0, the cap on per-token ratios (needs
      ``behavior_log_probs``; not together with ``clip``).

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
    >>> # Completions: 2 prompts x 2 samples, one reward each, RLOO per group.
    >>> def lm_loss(logits, tokens, rewards, alive):
    ...   logp = jax.nn.log_softmax(logits)[tokens]           # (4, 3)
    ...   return sg.score_function_surrogate(
    ...       logp, -rewards, mask=alive,
    ...       baseline=sg.baselines.leave_one_out(group_size=2))
    >>> tokens = jnp.array([[0, 1, 2], [1, 1, 0], [2, 0, 0], [1, 2, 1]])
    >>> alive = jnp.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    >>> g = jax.grad(lm_loss)(jnp.zeros(3), tokens, jnp.array([1., 0., 0., 1.]), alive)

  References:
    Foerster et al., "DiCE: The Infinitely Differentiable Monte Carlo
    Estimator", ICML 2018.
    Mao et al., "A Baseline for Any Order Gradient Estimation in Stochastic
    Computation Graphs", ICML 2019.
    Williams, "Simple Statistical Gradient-Following Algorithms for
    Connectionist Reinforcement Learning", Machine Learning 1992.
    Precup, Sutton & Singh, "Eligibility Traces for Off-Policy Policy
    Evaluation", ICML 2000.
    Schulman et al., "Proximal Policy Optimization Algorithms", 2017.
    Shao et al., "DeepSeekMath" (GRPO), 2024; Liu et al., "Understanding
    R1-Zero-Like Training: A Critical Perspective" (Dr. GRPO), 2025.
  """
  log_probs = jnp.asarray(log_probs)
  costs = jnp.asarray(costs)
  if aggregation not in AGGREGATIONS:
    raise ValueError(
      f"`aggregation` must be one of {AGGREGATIONS}; got aggregation={aggregation!r}. "
      '"sequence" sums each sequence\'s token terms (unbiased), "constant" divides by a '
      'fixed max_length (Dr. GRPO), "token_mean" by each sequence\'s length (GRPO, biased).'
    )
  per_token = _check_off_policy(log_probs, behavior_log_probs, clip, truncation)
  if log_probs.ndim == 1 and costs.ndim == 1 and costs.shape == log_probs.shape:
    given = [
      (name, shown)
      for name, shown, is_set in (
        (
          "mask",
          f"an array of shape {np.shape(mask) if mask is not None else ()}",
          mask is not None,
        ),
        ("aggregation", repr(aggregation), aggregation != "sequence"),
        ("max_length", repr(max_length), max_length is not None),
      )
      if is_set
    ]
    if given:
      name, shown = given[0]
      raise ValueError(
        f"`{name}` applies to sequences only (log_probs of shape (n, T)); got {name}="
        f"{shown} for inputs of shape {costs.shape}. Drop `{name}`, or pass per-token "
        "log-probs of shape (n, T)."
      )
    if not (isinstance(discount, (int, float)) and float(discount) == 1.0):
      raise ValueError(
        f"`discount` applies to sequences only (log_probs and costs of shape (n, T)); "
        f"got discount={discount!r} for inputs of shape {costs.shape}."
      )
    if behavior_log_probs is None:
      n = costs.shape[0]
      values = _baseline_values(
        baseline, baseline_state, jax.lax.stop_gradient(costs), n, array_shapes=((), (n,))
      )
      return jnp.mean(dice(log_probs, costs, values))
    return _sequence_surrogate(
      log_probs[:, None],
      costs,
      baseline,
      baseline_state,
      None,
      1.0,
      "sequence",
      None,
      jnp.asarray(behavior_log_probs)[:, None],
      per_token,
    )
  if log_probs.ndim != 2 or costs.shape not in (log_probs.shape, log_probs.shape[:1]):
    raise ValueError(
      "`log_probs` and `costs` must both have shape (n,), one entry per sample; or "
      "(n, T) for sequences with per-step costs; or log_probs (n, T) with costs (n,), "
      f"one cost per sequence; got log_probs.shape={log_probs.shape}, "
      f"costs.shape={costs.shape}."
    )
  return _sequence_surrogate(
    log_probs,
    costs,
    baseline,
    baseline_state,
    mask,
    discount,
    aggregation,
    max_length,
    None if behavior_log_probs is None else jnp.asarray(behavior_log_probs),
    per_token,
  )


def _check_off_policy(log_probs, behavior_log_probs, clip, truncation):
  """Validates the off-policy settings; returns (kind, value, traced flag) or None."""
  if behavior_log_probs is not None:
    shape = jnp.shape(behavior_log_probs)
    if shape != log_probs.shape:
      raise ValueError(
        "`behavior_log_probs` must have the shape of `log_probs` (one log-probability "
        "of each sampled token under the policy that drew it); got "
        f"behavior_log_probs.shape={shape}, log_probs.shape={log_probs.shape}."
      )
  given = [(k, v) for k, v in (("clip", clip), ("truncation", truncation)) if v is not None]
  if not given:
    return None
  if behavior_log_probs is None:
    raise ValueError(
      f"`{given[0][0]}` acts on importance ratios π/μ: pass `behavior_log_probs` "
      "(the log-probabilities under the policy that drew the samples), or drop "
      f"`{given[0][0]}` for on-policy samples."
    )
  if len(given) == 2:
    raise ValueError(
      "Pass one of `clip` (PPO's clipped ratio) and `truncation` (truncated "
      f"importance weights), not both; got clip={clip!r}, truncation={truncation!r}."
    )
  name, value = given[0]
  value, ok = _rl.check_nonnegative(name, value, strict=name == "truncation")
  return name, value, ok


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


def _sequence_surrogate(
  log_probs,
  costs,
  baseline,
  baseline_state,
  mask,
  discount,
  aggregation,
  max_length,
  behavior,
  per_token,
):
  n, num_steps = log_probs.shape
  sequence_cost = costs.ndim == 1
  alive, mask_ok = _rl.check_mask(mask, log_probs.shape)
  if sequence_cost:
    if not (isinstance(discount, (int, float)) and float(discount) == 1.0):
      raise ValueError(
        f"`discount` applies to per-step costs (shape (n, T)); got discount={discount!r} "
        f"with one cost per sequence, costs.shape={costs.shape}. Drop `discount`, or "
        "pass the costs per step."
      )
    gamma, discount_ok = jnp.asarray(1.0), None
  else:
    gamma, discount_ok = _rl.check_discount(discount)
  if max_length is not None:
    if aggregation != "constant":
      raise ValueError(
        f'`max_length` is the T_max of aggregation="constant"; got max_length={max_length!r} '
        f'with aggregation={aggregation!r}. Drop it, or use aggregation="constant".'
      )
    max_length = _validation.check_positive_int(
      "max_length", max_length, minimum=num_steps, why="It divides sequences of up to T steps."
    )
  checks = [ok for ok in (mask_ok, discount_ok) if ok is not None]
  if per_token is not None and per_token[2] is not None:
    checks.append(per_token[2])
  dtype = jnp.result_type(log_probs.dtype, costs.dtype, jnp.float32)
  gamma = gamma.astype(dtype)
  if alive is not None:
    # where, not a product: garbage (NaN, inf) after termination stays out.
    log_probs = jnp.where(alive, log_probs, 0.0)
    if behavior is not None:
      behavior = jnp.where(alive, behavior, 0.0)
    if not sequence_cost:
      costs = jnp.where(alive, costs, 0.0)
  if behavior is not None:
    behavior = jax.lax.stop_gradient(behavior)

  if sequence_cost:
    out = _sequence_level(log_probs, costs, baseline, baseline_state, n, behavior)
    weights, cost_terms = None, costs
  else:
    out, weights, cost_terms = _per_step(
      log_probs, costs, baseline, baseline_state, n, num_steps, gamma, alive, behavior
    )
  value, advantages = out
  if per_token is None and aggregation == "sequence":
    result = value
  elif per_token is None and aggregation == "constant":
    # Every derivative scaled by 1/T_max, the value kept.
    scale = 1.0 / (num_steps if max_length is None else max_length)
    result = jax.lax.stop_gradient(value) + (value - jax.lax.stop_gradient(value)) * scale
  else:
    result = _first_order(
      log_probs,
      cost_terms,
      advantages,
      weights,
      alive,
      behavior,
      aggregation,
      num_steps if max_length is None else max_length,
      per_token,
      jax.lax.stop_gradient(value),
    )
  for ok in checks:
    result = jnp.where(ok, result, jnp.nan)
  return result


def _sequence_level(log_probs, costs, baseline, baseline_state, n, behavior):
  """One cost per sequence: DiCE (or its importance-weighted form) on Σ_t τ_t."""
  tau = jnp.sum(log_probs, axis=1)
  values = _baseline_values(
    baseline, baseline_state, jax.lax.stop_gradient(costs), n, array_shapes=((), (n,))
  )
  if behavior is None:
    value = jnp.mean(dice(tau, costs, values))
  else:
    ratio = jnp.exp(tau - jnp.sum(behavior, axis=1))
    terms = ratio * costs
    if values is not None:
      terms = terms + (jax.lax.stop_gradient(ratio) - ratio) * jax.lax.stop_gradient(values)
    value = jnp.mean(terms)
  c = jax.lax.stop_gradient(costs)
  adv = c if values is None else c - jax.lax.stop_gradient(values)
  return (value, lambda: jnp.broadcast_to(adv[:, None], log_probs.shape))


def _per_step(log_probs, costs, baseline, baseline_state, n, num_steps, gamma, alive, behavior):
  """Per-step costs: the cumulative-box surrogate, and the advantages γ^t (G − b)."""
  weights = gamma ** jnp.arange(num_steps, dtype=log_probs.dtype)
  held = jax.lax.stop_gradient(costs)
  # γ^t G_t as a reverse cumulative sum (no sequential scan). A baseline that
  # scales with its targets (leave-one-out) gives γ^t b_t from it directly;
  # the others need G_t itself.
  discounted_to_go = _rl.cumulative_sum(held * weights, reverse=True)
  if baseline is None:
    scaled_b = None
  elif isinstance(baseline, _baselines.Baseline) and baseline.scale_equivariant:
    scaled_b = _baseline_values(
      baseline, baseline_state, discounted_to_go, n, array_shapes=((), (n,), (n, num_steps))
    )
  else:
    cost_to_go = _rl.discounted_returns(held, discount=gamma)
    scaled_b = _baseline_values(
      baseline, baseline_state, cost_to_go, n, array_shapes=((), (n,), (n, num_steps))
    )
    scaled_b = scaled_b * weights
  if scaled_b is not None:
    scaled_b = jax.lax.stop_gradient(scaled_b)
    if alive is not None and not isinstance(baseline, _baselines.Baseline):
      # A user's array may hold garbage after termination. A Baseline's values
      # come from the masked costs (finite), and after termination their term
      # (□(C_{t−1}) − □(C_t)) b_t is exactly 0 at every order (τ_t = 0 there).
      scaled_b = jnp.where(alive, scaled_b, 0.0)
  cumulative = _rl.cumulative_sum(log_probs)
  if behavior is None:
    box = magic_box(cumulative)
  else:
    box = jnp.exp(cumulative - _rl.cumulative_sum(behavior))
  if scaled_b is None:
    value = jnp.sum(jnp.mean(box * (costs * weights), axis=0))
  else:
    # Mao et al.'s term Σ_t (□(C_{t−1}) − □(C_t)) b_t with □(C_{−1}) = 1, summed
    # by parts: b_0 + Σ_t □(C_t) (b_{t+1} − b_t), b_T = 0 — the same function of
    # θ (b is constant), with the shift on b instead of on the boxes.
    # Its value, 0 up to rounding, is made exact: the surrogate's value is
    # the discounted mean cost (row totals of the cost-to-go) and its
    # derivatives are those of the terms.
    next_b = jnp.concatenate([scaled_b[:, 1:], jnp.zeros_like(scaled_b[:, :1])], axis=1)
    terms = jnp.sum(jnp.mean(box * (costs * weights + (next_b - scaled_b)), axis=0))
    value = jnp.mean(discounted_to_go[:, 0]) + (terms - jax.lax.stop_gradient(terms))

  def advantages():
    return discounted_to_go if scaled_b is None else discounted_to_go - scaled_b

  return (value, advantages), weights, costs


def _first_order(
  log_probs, costs, advantages, weights, alive, behavior, aggregation, max_length, per_token, value
):
  """The per-token forms (token_mean, clip, truncation): first order, via a carrier."""
  n, num_steps = log_probs.shape
  adv = jax.lax.stop_gradient(advantages())
  if alive is not None:
    adv = jnp.where(alive, adv, 0.0)
  if aggregation == "token_mean":
    lengths = jnp.full((n,), num_steps, log_probs.dtype)
    if alive is not None:
      lengths = jnp.sum(alive, axis=1).astype(log_probs.dtype)
    scale = jnp.where(lengths > 0, 1.0 / jnp.maximum(lengths, 1.0), 0.0)[:, None]
  elif aggregation == "constant":
    scale = jnp.asarray(1.0 / max_length, log_probs.dtype)
  else:
    scale = jnp.asarray(1.0, log_probs.dtype)
  held_behavior = None if behavior is None else jax.lax.stop_gradient(behavior)

  def loss(lp, c):
    if held_behavior is None:
      ratio = jnp.exp(lp - jax.lax.stop_gradient(lp))
    else:
      ratio = jnp.exp(lp - held_behavior)
    if per_token is None:
      terms = ratio * adv
    elif per_token[0] == "clip":
      eps = per_token[1].astype(lp.dtype)
      terms = jnp.maximum(ratio * adv, jnp.clip(ratio, 1.0 - eps, 1.0 + eps) * adv)
    else:  # truncation
      cap = per_token[1].astype(lp.dtype)
      capped = jax.lax.stop_gradient(jnp.minimum(ratio, cap) / ratio)
      terms = capped * ratio * adv
    if c.ndim == 1:  # one cost per sequence: its pathwise term
      path = c - jax.lax.stop_gradient(c)
    else:
      path = jnp.sum((c - jax.lax.stop_gradient(c)) * weights, axis=1)
    return jnp.mean(jnp.sum(terms * scale, axis=1) + path)

  anchor = (log_probs, costs)
  cotangent = jax.grad(loss, argnums=(0, 1))(
    jax.lax.stop_gradient(log_probs), jax.lax.stop_gradient(costs)
  )
  name = f'score_function_surrogate(aggregation="{aggregation}"'
  if per_token is not None:
    name += f", {per_token[0]}=..."
  name += ")"
  return value + _base.gradient_carrier(anchor, cotangent, name, value.dtype)
