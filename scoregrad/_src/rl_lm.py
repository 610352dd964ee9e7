"""Policy gradients as language-model RL uses them: group advantages and KL penalties.

n = B·G sampled completions are laid out group-major: rows g·G … g·G + G − 1
are the G completions of prompt g. Rewards here are rewards (maximised), as
the papers write them; ``score_function_surrogate`` minimises costs, so pass
``-advantages`` or ``-rewards`` there.

References:
  Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization
  for Learning from Human Feedback in LLMs", ACL 2024 (RLOO).
  Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in
  Open Language Models", 2024 (GRPO).
  Liu et al., "Understanding R1-Zero-Like Training: A Critical Perspective",
  2025 (Dr. GRPO).
  Schulman, "Approximating KL Divergence", blog post, 2020 (k1, k2, k3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from scoregrad._src import baselines as _baselines
from scoregrad._src import rl as _rl
from scoregrad._src.validation import check_positive_float, check_positive_int

GROUP_METHODS = ("rloo", "grpo", "dr_grpo")
KL_ESTIMATORS = ("k1", "k2", "k3")


def group_advantages(
  rewards: jax.Array, group_size: int, *, method: str = "rloo", eps: float = 1e-4
) -> jax.Array:
  """Per-completion advantages from the rewards of each prompt's group of G samples.

  For group g with rewards r_1 … r_G, mean r̄ and standard deviation s
  (ddof = 1, as ``torch.std``):

  * ``"rloo"``: A_i = r_i − (1/(G−1)) Σ_{j≠i} r_j = G/(G−1) (r_i − r̄)
    (Ahmadian et al. 2024). The baseline uses only the other samples, so
    (1/n) Σ_i A_i ∇ log π(y_i) is **unbiased for ∇E[r]**.
  * ``"dr_grpo"``: A_i = r_i − r̄ (Liu et al. 2025). Since r_i − r̄ =
    (G−1)/G · (r_i − mean_{j≠i} r_j), its gradient estimates
    **(G − 1)/G · ∇E[r]**: unbiased up to that constant (which a learning
    rate absorbs).
  * ``"grpo"``: A_i = (r_i − r̄) / (s + eps) (Shao et al. 2024). The scale
    s depends on sample i itself and differs per group, so the gradient is
    **biased in a way no constant fixes**: groups whose rewards barely
    differ get weight 1/(s + eps), and the expectation is not parallel to
    ∇E[r] (tests/test_rl.py measures it by enumeration on 3-outcome
    policies: with G = 3 its expectation is 1.0° off the direction of ∇E[r]
    at 0.48 of its norm; with G = 2 and two prompts, 5.7° off at 0.32).

  A group whose rewards are all equal gets zero advantages (all methods).

  Args:
    rewards: (n,) rewards, n = B·G, group-major.
    group_size: G >= 2, completions per prompt.
    method: ``"rloo"``, ``"grpo"`` or ``"dr_grpo"``.
    eps: GRPO's ε > 0 added to s (TRL's default 1e-4).

  Returns:
    (n,) advantages, constant (stop-gradient). Use them as
    ``score_function_surrogate(log_probs, -advantages)`` (sequence-level,
    log_probs (n, T) with a mask) and minimise, or ``-mean(A · log p)``.

  Example:
    >>> import jax.numpy as jnp, scoregrad as sg
    >>> sg.rl.group_advantages(jnp.array([1., 0., 0., 1., 1., 1.]), 3)
    Array([ 1. , -0.5, -0.5,  0. ,  0. ,  0. ], dtype=float32)

  References:
    Ahmadian et al. 2024 (RLOO); Shao et al. 2024 (GRPO); Liu et al. 2025
    (Dr. GRPO).
  """
  if method not in GROUP_METHODS:
    raise ValueError(
      f"`method` must be one of {GROUP_METHODS}; got method={method!r}. "
      '"rloo" is unbiased, "dr_grpo" unbiased up to (G−1)/G, "grpo" biased.'
    )
  group_size = check_positive_int(
    "group_size",
    group_size,
    minimum=2,
    why="A group needs another completion to compare with; with one, every advantage is 0.",
  )
  eps = check_positive_float("eps", eps)
  rewards = jax.lax.stop_gradient(jnp.asarray(rewards))
  if rewards.ndim != 1:
    raise ValueError(
      f"`rewards` must have shape (n,), one reward per completion, group-major; got "
      f"rewards.shape={rewards.shape}."
    )
  name = f'group_advantages(method="{method}")'
  if method == "rloo":
    return rewards - _baselines.group_leave_one_out(rewards, group_size, name=name)
  _baselines.check_group_size(rewards.shape[0], group_size, name=name)
  grouped = rewards.reshape(-1, group_size)
  centred = grouped - jnp.mean(grouped, axis=1, keepdims=True)
  if method == "grpo":
    std = jnp.sqrt(jnp.sum(centred**2, axis=1, keepdims=True) / (group_size - 1))
    centred = centred / (std + eps)
  return centred.reshape(rewards.shape)


def kl_penalty(
  log_probs: jax.Array,
  ref_log_probs: jax.Array,
  mask: jax.Array | None = None,
  *,
  estimator: str = "k3",
) -> jax.Array:
  """Per-token estimates of KL(π_θ ‖ π_ref) from sampled tokens (Schulman 2020).

  With ℓ_t = log π_θ(y_t | y_<t) − log π_ref(y_t | y_<t) at the sampled
  token (y ~ π_θ) and ρ_t = exp(−ℓ_t) = π_ref/π_θ:

      k1 = ℓ,   k2 = ℓ²/2,   k3 = ρ − 1 − log ρ = ρ − 1 + ℓ   (≥ 0).

  Given the prefix, E[k1] = E[k3] = KL_t, the KL of the token distributions
  at that prefix, so Σ_t of either is unbiased for the sequence KL
  KL(π_θ ‖ π_ref) = E[Σ_t KL_t]; E[k2] is not the KL (it is the χ²-like
  second-order approximation), only close when π_θ ≈ π_ref.

  **Which gradient each use estimates** (y held fixed, differentiating in θ;
  s_t = ∇ log π_θ(y_t | y_<t), S_t = Σ_{t'≤t} s_t'):

  * *In the reward* — add β·k_t to the per-step costs of
    ``score_function_surrogate`` **without** ``stop_gradient``, so the
    surrogate credits it causally and adds its pathwise term ∇k_t: the
    gradient is that of E[Σ_t k_t], which is ∇KL for **k1 and k3
    (unbiased)** and the gradient of E[Σ_t k2_t] ≠ KL for **k2 (biased)**.
    (With ``stop_gradient`` — the reward treated as data, as trainers do —
    the pathwise term E[Σ_t ∇k_t] is dropped: zero for k1 (E[s_t] = 0, so
    still unbiased), but E[(1 − ρ_t) s_t] ≠ 0 for k3, which is then biased.)
  * *In the loss* — ``mean(Σ_t k_t)`` differentiated directly, no score term:
    k1: ∇k1 = s_t, E = 0 — **no gradient at all** in expectation;
    k2: ∇k2 = ℓ_t s_t, E = E[Σ_t ℓ_t s_t] — the KL gradient
    E[Σ_t s_t Σ_{t'≥t} ℓ_t'] without the credit of later tokens (exact for
    one token, biased for sequences);
    k3: ∇k3 = (1 − ρ_t) s_t, E = −Σ_t E_{y_<t ~ π_θ}[Σ_y π_ref(y | y_<t)
    ∇ log π_θ(y | y_<t)] — per token the gradient of the reverse
    KL(π_ref ‖ π_θ), not of KL(π_θ ‖ π_ref), and for sequences neither.

  tests/test_rl.py checks each statement by enumeration on an autoregressive
  categorical policy (vocabulary 3, length 3) and pins the bias of the
  biased forms, the relative error ‖E[ĝ] − ∇KL‖ / ‖∇KL‖ of the exact
  expected gradient there: k2 in the reward 0.23; k3 in the reward but
  detached 1.22; k2 in the loss 0.10; k3 in the loss 0.37 (k1 in the loss:
  exactly 0 expected gradient).

  Args:
    log_probs: (n, T) log π_θ of the sampled tokens, traced in θ.
    ref_log_probs: (n, T) log π_ref of the same tokens (held constant).
    mask: (n, T) prefix mask of 0/1 or bool, or ``None``; masked steps give 0.
    estimator: ``"k1"``, ``"k2"`` or ``"k3"``.

  Returns:
    (n, T) per-token estimates (0 at masked steps), differentiable in
    ``log_probs``.

  Example:
    >>> import jax.numpy as jnp, scoregrad as sg
    >>> lp = jnp.log(jnp.array([[0.5, 0.25]]))
    >>> ref = jnp.log(jnp.array([[0.25, 0.25]]))
    >>> sg.rl.kl_penalty(lp, ref, estimator="k1")
    Array([[0.6931472, 0.       ]], dtype=float32)

  References:
    Schulman, "Approximating KL Divergence", 2020,
    http://joschu.net/blog/kl-approx.html.
  """
  if estimator not in KL_ESTIMATORS:
    raise ValueError(
      f"`estimator` must be one of {KL_ESTIMATORS}; got estimator={estimator!r}. k1 and "
      "k3 are unbiased for the KL (k3 has lower variance and is never negative)."
    )
  log_probs = jnp.asarray(log_probs)
  ref_log_probs = jax.lax.stop_gradient(jnp.asarray(ref_log_probs))
  if log_probs.ndim != 2 or ref_log_probs.shape != log_probs.shape:
    raise ValueError(
      "`log_probs` and `ref_log_probs` must both have shape (n, T), one entry per "
      f"sampled token; got log_probs.shape={log_probs.shape}, "
      f"ref_log_probs.shape={ref_log_probs.shape}."
    )
  alive, mask_ok = _rl.check_mask(mask, log_probs.shape)
  diff = log_probs - ref_log_probs
  if estimator == "k1":
    out = diff
  elif estimator == "k2":
    out = 0.5 * diff**2
  else:
    out = jnp.expm1(-diff) + diff
  if alive is not None:
    out = jnp.where(alive, out, 0.0)
  if mask_ok is not None:
    out = jnp.where(mask_ok, out, jnp.nan)
  return out
