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


@jax.custom_jvp
def magic_box(tau: jax.Array) -> jax.Array:
  """DiCE's magic box □(τ) = exp(τ − stop_gradient(τ)): value 1, ∇□ = □ ∇τ.

  Implemented with a custom JVP that has exactly those derivatives at every
  order, but whose value (1) does not depend on τ: XLA can then drop the
  forward evaluation of τ = log p(x; θ) when only gradients are needed, which
  the literal exp(τ − ⊥τ) forbids (it costs a full extra pass over the
  samples; see benchmarks/throughput.py).
  """
  return jnp.ones_like(tau)


@magic_box.defjvp
def _magic_box_jvp(primals, tangents):
  (tau,), (tau_dot,) = primals, tangents
  box = magic_box(tau)  # Recursive: higher derivatives follow □' = □.
  return box, box * tau_dot


def dice(log_probs: jax.Array, costs: jax.Array,
         baseline_values: Optional[jax.Array] = None) -> jax.Array:
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
) -> jax.Array:
  """A scalar whose value is mean(costs) and whose gradient is REINFORCE.

  For callers who already hold samples and their costs (RL rollouts, samples
  from a simulator): ``log_probs[i] = log p(x_i; θ)`` must be traced in θ (the
  samples themselves held fixed), ``costs[i]`` the cost of sample i (it may
  depend on θ; its pathwise term is then included). ``jax.grad`` of the result
  is (1/n) Σ (c_i − b_i) ∇ log p(x_i; θ) + (1/n) Σ ∇c_i, and higher derivatives
  are unbiased too (DiCE).

  Args:
    log_probs: shape (n,), log-probabilities of the n samples, traced in θ.
    costs: shape (n,), the samples' costs.
    baseline: a scalar baseline from :mod:`scoregrad.baselines` (not the
      per-coordinate ``optimal()``, which needs the parameters: use
      ``score_function(...).estimate``), or an array of baseline values of
      shape (n,) or () that you computed (e.g. a value network's prediction);
      it is held constant (stop_gradient) and must not depend on sample i.
    baseline_state: the baseline's state, required for stateful baselines
      (``moving_average``); advance it with ``baseline.update(state, costs)``.

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
  """
  log_probs = jnp.asarray(log_probs)
  costs = jnp.asarray(costs)
  if log_probs.ndim != 1 or costs.shape != log_probs.shape:
    raise ValueError(
        "`log_probs` and `costs` must both have shape (n,), one entry per "
        f"sample; got log_probs.shape={log_probs.shape}, costs.shape={costs.shape}. "
        "Sum per-step log-probabilities and costs over each trajectory first.")
  n = costs.shape[0]
  if hasattr(baseline, "shape") and not isinstance(baseline, _baselines.Baseline):
    values = jnp.asarray(baseline)
    if values.shape not in ((), (n,)):
      raise ValueError(
          f"An array `baseline` must be a scalar or have shape ({n},), one value "
          f"per sample; got shape {values.shape}.")
    return jnp.mean(dice(log_probs, costs, jnp.broadcast_to(values, costs.shape)))
  baseline = _baselines.resolve(baseline)
  _baselines.check_num_samples(baseline, n)
  _baselines.require_scalar(
      baseline, where="score_function_surrogate()",
      instead="Use scoregrad.score_function(num_samples=..., baseline=...).estimate(...) "
              "instead, or a scalar baseline such as leave_one_out().")
  if baseline_state is None:
    if baseline.stateful:
      raise ValueError(
          f"`baseline={baseline.name}` keeps state across steps: pass "
          "`baseline_state` (from baseline.init()) and advance it with "
          "baseline.update(baseline_state, costs).")
    baseline_state = baseline.init()
  values = baseline.values(jax.lax.stop_gradient(costs), None, baseline_state)
  return jnp.mean(dice(log_probs, costs, values))
