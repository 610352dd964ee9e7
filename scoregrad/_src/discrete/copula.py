"""ARMS: antithetic-REINFORCE-multi-sample, n ≥ 2 negatively correlated samples (Dirichlet copula)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from scoregrad._src.base import Estimate, GradientEstimator, evaluate_costs, finish, stateless_init
from scoregrad._src.discrete import logits as _common
from scoregrad._src.validation import check_key, check_positive_int

_ALTERNATIVES = (
  "Other estimators for discrete variables: scoregrad.disarm(num_pairs=...), "
  "scoregrad.rao_blackwell(num_summed=..., num_samples=...), or "
  "scoregrad.score_function(num_samples=..., baseline=scoregrad.baselines.leave_one_out())."
)

# The binary representation of ARM/DisARM (Categorical: stick-breaking bits).
_NEEDS = _common.LOGITS_FACTS + ("binary_logits", "from_binary", "binary_reached")


def copula_bits(key: jax.Array, eta: jax.Array, num_samples: int) -> jax.Array:
  """n bits per coordinate, each Bernoulli(σ(η)), jointly from a Dirichlet copula.

  d ~ Dirichlet(1, …, 1) over the n samples (independently per coordinate)
  and u_i = 1 − (1 − d_i)^{n−1} (the Beta(1, n − 1) CDF, so u_i ~ U(0, 1)).
  The *more likely* value, of probability q = σ(|η|) ≥ ½, is taken where
  u_i < q (computed as (n − 1) log(1 − d_i) > log(1 − q), without rounding
  u): the rarer value then goes to the samples with the largest d_i, of
  which two can coincide only if both exceed c = 1 − (1 − q)^{1/(n−1)}, the
  most negatively correlated orientation (for q ≥ 1 − 2^{1−n} never).
  Returns ``(n, *eta.shape)`` floats in {0, 1}.
  """
  e = jax.random.exponential(key, (num_samples,) + eta.shape, eta.dtype)
  d = e / jnp.sum(e, axis=0, keepdims=True)
  common = (num_samples - 1) * jnp.log1p(-d) > -jax.nn.softplus(jnp.abs(eta))
  return jnp.where(eta >= 0, common, ~common).astype(eta.dtype)


def decorrelation(eta: jax.Array, num_samples: int) -> jax.Array:
  """1 / (1 − ρ), ρ the correlation of two of the n copula bits of one coordinate.

  In terms of the more likely value (probability q = σ(|η|), taken where
  d_i < c, c = 1 − (1 − q)^{1/(n−1)}; see :func:`copula_bits`), the uniform
  Dirichlet gives P(d_i ≥ c, d_j ≥ c) = max(0, 1 − 2c)^{n−1}, hence
  P(one sample has it and the other not) = (1 − q) − max(0, 1 − 2c)^{n−1}
  and 1 − ρ = that / (q(1 − q)). Computed in logs: with a = softplus(|η|)
  /(n − 1), 1 − c = e^{−a} and (1 − 2c)/(1 − c) = 1 − expm1(a). For n = 2 it
  is σ(|η|) (DisARM's weight).
  """
  n = num_samples
  p = jax.nn.sigmoid(jnp.abs(eta))
  a = jax.nn.softplus(jnp.abs(eta)) / (n - 1)
  ratio = jnp.expm1(a)  # (1 − s)/s, s = 1 − c; 1 − 2c > 0 ⟺ ratio < 1
  inside = ratio < 1
  log_rest = (n - 1) * jnp.log1p(-jnp.where(inside, ratio, 0.0))
  # P(b_i = 1, b_j = 0) / (1 − p) = 1 − ((1 − 2c)/(1 − c))^{n−1}
  share = jnp.where(inside, -jnp.expm1(log_rest), 1.0)
  return p / share


def arms(*, num_samples: int) -> GradientEstimator:
  r"""ARMS: n ≥ 2 antithetically correlated samples with a leave-one-out baseline.

  Per coordinate c, the n samples' uniforms u_{1..n,c} come from a Dirichlet
  copula: d ~ Dirichlet(1ⁿ), u_i = 1 − (1 − d_i)^{n−1}, each u_i ~ U(0, 1)
  but negatively correlated, independently across coordinates; b_{i,c}
  takes its more likely value where u_i < max(p, 1 − p), p = σ(α_c), so
  each b_i is an exact Bernoulli(σ(α)) sample and the rarer value is spread
  over the samples (the copula's most antithetic orientation). With
  ρ_c = Corr(b_{i,c}, b_{j,c}) < 0 (in closed form, see below), coordinate c
  of the gradient with respect to the logits α is estimated by

      ĝ_c = 1 / (n (n − 1) (1 − ρ_c)) Σ_{i≠j} (f(b_i) − f(b_j)) (b_{i,c} − σ(α_c)),

  which for Bernoulli variables is (1/((n − 1)(1 − ρ_c))) Σ_i (f(b_i) − f̄)
  (b_{i,c} − σ(α_c)), the leave-one-out score function rescaled. Unbiased:
  E[f(b_i)(b_{i,c} − p)] = ∂E[f]/∂α_c, and since b_j depends on b_i only
  through coordinate c, E[f(b_j)(b_{i,c} − p)] = ρ_c ∂E[f]/∂α_c, so each pair
  term has mean (1 − ρ_c) ∂E[f]/∂α_c. The correlation: with q = max(p, 1 − p)
  and c' = 1 − (1 − q)^{1/(n−1)}, P(b_i ≠ b_j, b_i = 1) = (1 − q) − max(0,
  1 − 2c')^{n−1} and 1 − ρ = P(b_i = 1, b_j = 0)/(p(1 − p)). With n = 2 the copula is u₂ = 1 − u₁
  and ARMS is exactly DisARM (one pair); for n > 2 it extends it to n
  correlated samples, each evaluation of f entering every other's baseline.

  Categorical variables use the stick-breaking bits of :func:`disarm` (x the
  first of K − 1 independent bits Bernoulli(σ(η_k)), η_k = ℓ_k −
  logsumexp(ℓ_{k+1:})): ARMS is applied to the bits, the term of a pair (i, j)
  at a bit that neither sample reaches (f depends on it through neither) is
  dropped (its conditional mean is zero), and the η-gradient is pulled back
  to ℓ. The gradient is pulled back to ``params`` with ``jax.vjp``.

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Bernoulli(logits=...)``
  or ``scoregrad.dists.Categorical(logits=...)``; f may be a black box; it
  receives float samples in {0., 1.} (Bernoulli) or int32 indices
  (Categorical). n evaluations of f per estimate. Unbiased.

  ``Estimate.value`` is the mean of the n costs, differentiable with respect
  to anything f closes over. First-order only: a derivative of ``.grad`` (or
  a second derivative of ``.value``) raises ``NotImplementedError``. A NaN
  cost makes the value and the gradient NaN. There is no ``per_sample``: the
  n samples are drawn jointly, so the estimate is one draw (for several,
  ``jax.vmap`` over keys).

  Args:
    num_samples: n, the correlated samples per estimate (Python int ≥ 2).

  Returns:
    ``GradientEstimator(init, estimate)``.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.arms(num_samples=4)
    >>> logits = jnp.zeros(3)
    >>> out = est.estimate(jax.random.key(0), lambda b: jnp.sum((b - 0.45) ** 2),
    ...                    lambda l: sg.dists.Bernoulli(logits=l), logits,
    ...                    est.init(logits))

  References:
    Dimitriev & Zhou, "ARMS: Antithetic-REINFORCE-Multi-Sample Gradient for
    Binary Variables", ICML 2021. Dong, Mnih & Tucker, "Coupled Gradient
    Estimators for Discrete Latent Variables", NeurIPS 2021 (stick-breaking).
  """
  num_samples = check_positive_int(
    "num_samples",
    num_samples,
    minimum=2,
    why="ARMS correlates n >= 2 samples and uses the others as each one's baseline "
    "(num_samples=2 is DisARM with one pair).",
  )
  n = num_samples

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_key(key)
    lg = _common.logits_and_pullback(
      dist_fn, params, estimator="arms", needs=_NEEDS, alternatives=_ALTERNATIVES
    )
    family = lg.family
    eta, vjp = jax.vjp(family.binary_logits, lg.logits)
    bits = copula_bits(key, eta, n)
    costs = evaluate_costs(f, family.from_binary(bits), dtype=lg.logits.dtype)
    fixed = jax.lax.stop_gradient(costs)
    reached = family.binary_reached(bits)  # (n, *eta.shape)
    fb = fixed.reshape((n,) + (1,) * eta.ndim)
    # Σ_j (f_i − f_j) m_ij with m_ij = r_i + r_j − r_i r_j (either reaches), O(n):
    total_f = jnp.sum(fb, axis=0)
    reach_count = jnp.sum(reached, axis=0)
    reach_f = jnp.sum(fb * reached, axis=0)
    pair_sums = reached * (fb * (n - reach_count) - (total_f - reach_f)) + (
      fb * reach_count - reach_f
    )
    centred = bits - jax.nn.sigmoid(eta)
    g_eta = decorrelation(eta, n) * jnp.sum(centred * pair_sums, axis=0) / (n * (n - 1))
    per_logits = vjp(g_eta)[0][None]
    grad, _, value = _common.finish(lg, per_logits, False, jnp.mean(costs), costs)
    return finish(value, grad, state, None)

  return GradientEstimator(init=stateless_init, estimate=estimate)
