"""The unordered set estimator: k samples without replacement, with its built-in baseline."""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from scoregrad._src.base import Estimate, GradientEstimator, evaluate_costs, finish, stateless_init
from scoregrad._src.discrete import logits as _common
from scoregrad._src.validation import check_key, check_positive_int

_ALTERNATIVES = (
  "Other estimators for discrete variables: scoregrad.rao_blackwell(num_summed=..., "
  "num_samples=...), scoregrad.disarm(num_pairs=...), or scoregrad.exact()."
)

#: Trapezoid nodes in log t for the set probabilities (see :func:`log_set_probabilities`).
NODES = 256
#: The window in log t around −log R: the integrand is below e^{−30} of its peak outside.
_BELOW, _ABOVE = 30.0, 4.0


def _log1mexp(x: jax.Array) -> jax.Array:
  """log(1 − e^x) for x ≤ 0, accurate at both ends (Mächler 2012)."""
  x = jnp.minimum(x, 0.0)
  return jnp.where(x > -math.log(2.0), jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def stochastic_beam_search(key: jax.Array, log_probs: jax.Array, k: int) -> tuple:
  """k configurations without replacement from Π_v p_v(x_v), by Gumbel-top-k.

  Stochastic beam search (Kool, van Hoof & Welling 2019): the perturbed
  log-probability G(y) = log p(y) + Gumbel of every configuration y is
  generated top-down, variable by variable, each child's Gumbel conditioned
  on its parent's maximum (G_child = T − softplus(T − G̃ + log(1 − e^{G̃ − Z})),
  T the parent's, G̃ the child's unconditioned, Z the largest G̃ among the
  siblings), keeping the k largest at each level; the k configurations left
  are the top k of all G(y): a sample of k without replacement.

  Args:
    key: PRNG key.
    log_probs: (V, K) per-variable log-probabilities.
    k: the number of configurations (≤ K^V).

  Returns:
    ``(values, log_p)``: (k, V) int32 values and (k,) their log-probabilities.
  """
  num_vars, num_cats = log_probs.shape
  dtype = log_probs.dtype
  neg_inf = jnp.asarray(-jnp.inf, dtype)
  phi0 = jnp.full((k,), neg_inf).at[0].set(0.0)
  values0 = jnp.zeros((k, num_vars), jnp.int32)

  def level(carry, inputs):
    phi, g, values = carry
    v, lp, level_key = inputs
    live = jnp.isfinite(phi)[:, None] & jnp.isfinite(lp)[None, :]
    child_phi = jnp.where(live, phi[:, None] + lp[None, :], neg_inf)
    gt = jnp.where(live, child_phi + jax.random.gumbel(level_key, (k, num_cats), dtype), neg_inf)
    z = jnp.max(gt, axis=1, keepdims=True)
    safe = lambda x: jnp.where(live, x, 0.0)
    parent = safe(jnp.broadcast_to(g[:, None], gt.shape))
    shift = parent - safe(gt) + _log1mexp(safe(gt) - safe(jnp.broadcast_to(z, gt.shape)))
    child_g = jnp.where(live, parent - jax.nn.softplus(shift), neg_inf)
    top_g, flat = jax.lax.top_k(child_g.reshape(-1), k)
    parents, cats = flat // num_cats, flat % num_cats
    new_values = values[parents].at[:, v].set(cats.astype(jnp.int32))
    return (child_phi.reshape(-1)[flat], top_g, new_values), None

  keys = jax.random.split(key, num_vars)
  (phi, _, values), _ = jax.lax.scan(
    level, (phi0, jnp.zeros((k,), dtype), values0), (jnp.arange(num_vars), log_probs, keys)
  )
  return values, phi


def log_set_probabilities(log_p: jax.Array, masks: jax.Array) -> jax.Array:
  """log P(T is the set of the first |T| draws without replacement), for each mask.

  All the sets T ⊆ S of a sample S share the rest D ∖ S of mass R = 1 − Σ_S p:
  in the exponential race (x_j finishes at an Exp(p_j) time; Gumbel-top-k
  orders the same way) T comes first, from the domain without S ∖ T, iff all
  of T finish before the first of D ∖ S, so

      P(T) = ∫₀^∞ R e^{−Rt} Π_{s∈T} (1 − e^{−p_s t}) dt

  (Kool, van Hoof & Welling 2020, their u = e^{−Rt} form). Computed by the
  trapezoid rule in log t on a window around log(1/R) (the integrand is
  analytic in a strip of half-width π/2, so the error is ~e^{−π²/h}, h the
  node spacing), in log space; P = 1 when R = 0 (S is the whole domain).

  Args:
    log_p: (k,) log-probabilities of the sampled configurations.
    masks: (M, k) {0, 1} membership of each set T.

  Returns:
    (M,) log P(T).
  """
  dtype = log_p.dtype
  k = log_p.shape[0]
  log_rest = _log1mexp(jnp.minimum(jax.nn.logsumexp(log_p), 0.0))
  empty = ~jnp.isfinite(log_rest)  # R = 0: the sample is the whole domain
  log_rest = jnp.where(empty, 0.0, log_rest)
  offsets = jnp.linspace(-_BELOW, math.log(k + 1.0) + _ABOVE, NODES, dtype=dtype)
  h = offsets[1] - offsets[0]
  log_t = offsets - log_rest  # (N,)
  a = log_p[:, None] + log_t[None, :]  # log(p_s t), (k, N)
  # log(1 − e^{−p t}): ≈ log(p t) − p t/2 where p t is tiny (no underflow to log 0).
  small = a < -15.0
  exact = jnp.log(-jnp.expm1(-jnp.exp(jnp.where(small, 0.0, a))))
  factors = jnp.where(small, a - 0.5 * jnp.exp(a), exact)
  log_density = log_rest + log_t - jnp.exp(log_rest + log_t)  # R e^{−Rt}·t (dt = t dτ)
  terms = masks.astype(dtype) @ factors + log_density[None, :]
  # Trapezoid weights (h/2 at the ends; the ends are ~e^{−30} of the peak anyway).
  log_w = jnp.full((NODES,), jnp.log(h), dtype).at[jnp.array([0, -1])].add(-math.log(2.0))
  out = jax.nn.logsumexp(terms + log_w[None, :], axis=1)
  return jnp.where(empty, jnp.zeros_like(out), out)


def unordered_set_weights(log_p: jax.Array, costs: jax.Array) -> tuple:
  """The unordered set estimator's weights on the k scores, and those of its estimate of E[f].

  With p(S) the probability of the unordered sample S, p^{D∖s}(S ∖ s) that of
  S ∖ {s} from the domain without s (and similarly without {s, s'}),
  R(S, s) = p^{D∖s}(S ∖ s)/p(S) and R^{D∖s}(S, s') = p^{D∖{s,s'}}(S ∖ {s, s'})
  / p^{D∖s}(S ∖ s) (1 for s' = s), returns

      w_s = p(s) R(S, s) (f(s) − b_s),   b_s = Σ_{s'∈S} p(s') R^{D∖s}(S, s') f(s'),
  and kept_s = p(s) R(S, s) (the estimate of E[f] is Σ_s kept_s f(s)), as
  ``(w, kept)``.
  """
  k = log_p.shape[0]
  eye = jnp.eye(k, dtype=bool)
  without_one = ~eye  # row s: S ∖ {s}
  without_two = without_one[:, None, :] & without_one[None, :, :]  # [s, s']: S ∖ {s, s'}
  masks = jnp.concatenate(
    [jnp.ones((1, k), bool), without_one, without_two.reshape(k * k, k)], axis=0
  )
  logs = log_set_probabilities(log_p, masks)
  log_all, log_one, log_two = logs[0], logs[1 : k + 1], logs[k + 1 :].reshape(k, k)
  kept = jnp.exp(log_p + log_one - log_all)  # p(s) R(S, s)
  # R^{D∖s}(S, s') p(s'): s' ≠ s from the sets without two; s' = s is p(s).
  cross = jnp.exp(jnp.where(eye, log_p[None, :], log_p[None, :] + log_two - log_one[:, None]))
  baseline = cross @ costs
  return kept * (costs - baseline), kept


def unordered_set(*, num_samples: int) -> GradientEstimator:
  r"""The unordered set estimator: k distinct samples, with a built-in baseline.

  Draws a set S of k distinct configurations without replacement from
  p(x; θ) = Π_v p_v(x_v) (Gumbel-top-k on the joint configurations, by
  stochastic beam search over the variables, so K^V need not be enumerated)
  and estimates

      ∇θ E[f] ≈ Σ_{s∈S} p(s) R(S, s) (f(s) − b_s) ∇θ log p(s),
      R(S, s) = p^{D∖s}(S ∖ s) / p(S),
      b_s = Σ_{s'∈S} p(s') R^{D∖s}(S, s') f(s'),

  where p(S) is the probability that the unordered sample is S,
  p^{D∖s}(S ∖ s) that of S ∖ {s} drawn from the domain without s, and
  R^{D∖s}(S, s') = p^{D∖{s,s'}}(S ∖ {s, s'}) / p^{D∖s}(S ∖ s) (1 for s' =
  s): b_s is the unordered set estimate of E[f] from the other k − 1 samples
  given s was drawn, whose conditional expectation is E[f] for every s, so
  the baseline keeps the estimator unbiased. Every set probability is a
  one-dimensional integral over the k sampled probabilities and the rest
  mass R = 1 − Σ_S p(s), p(T) = ∫₀^∞ R e^{−Rt} Π_{s∈T}(1 − e^{−p_s t}) dt,
  computed by the trapezoid rule in log t (k² + k + 1 integrals of
  256 nodes, O(256·k³) work: practical up to k of a few hundred). The baseline needs k ≥ 2 (with k = 1 it would be p(s)f(s),
  which is not mean-zero); when S is the whole domain the estimate is the
  exact gradient. ``Estimate.value``
  is Σ_s p(s) R(S, s) f(s), the unordered set estimate of E[f] (unbiased).

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Categorical(logits=
  ...)`` or ``scoregrad.dists.Bernoulli(logits=...)`` (a factorised
  distribution; the domain is the joint configurations), with finite
  logits; f may be a black box; it receives int32 indices (Categorical) or
  floats in {0., 1.} (Bernoulli). k evaluations of f per estimate; the k
  samples are distinct, so it never wastes an evaluation on a duplicate
  (unlike i.i.d. sampling of a peaked distribution). Unbiased.

  First-order only: a derivative of ``.grad`` (or a second derivative of
  ``.value``) raises ``NotImplementedError``; ``.value`` is differentiable
  with respect to anything f closes over, with these weights. NaN costs make
  the value and the gradient NaN. There is no ``per_sample``: the k samples
  are dependent (drawn without replacement).

  Args:
    num_samples: k, the distinct samples per estimate (Python int ≥ 2, at
      most the number of configurations, e.g. K for one categorical
      variable; checked when ``estimate`` is traced).

  Returns:
    ``GradientEstimator(init, estimate)``.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.unordered_set(num_samples=3)
    >>> logits = jnp.array([1.0, 0.0, -1.0, 0.5])
    >>> values = jnp.arange(4.0)
    >>> out = est.estimate(jax.random.key(0), lambda x: values[x] ** 2,
    ...                    lambda l: sg.dists.Categorical(logits=l), logits,
    ...                    est.init(logits))

  References:
    Kool, van Hoof & Welling, "Estimating Gradients for Discrete Random
    Variables by Sampling without Replacement", ICLR 2020. Kool, van Hoof &
    Welling, "Stochastic Beams and Where to Find Them: The Gumbel-Top-k Trick
    for Sampling Sequences Without Replacement", ICML 2019.
  """
  num_samples = check_positive_int(
    "num_samples",
    num_samples,
    minimum=2,
    why="The unordered set estimator's baseline for each sample comes from the other "
    "k - 1 (with k = 1 it would be biased); for one sample use "
    "scoregrad.score_function(num_samples=1).",
  )
  k = num_samples

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_key(key)
    lg = _common.logits_and_pullback(
      dist_fn, params, estimator="unordered_set", alternatives=_ALTERNATIVES
    )
    family, logits = lg.family, lg.logits
    total = family.num_configurations(logits.shape)
    if k > total:
      raise ValueError(
        f"`num_samples` of unordered_set must be at most the number of configurations "
        f"of the distribution, {family.describe_configurations(logits.shape)}; got "
        f"num_samples={k}. It draws k distinct configurations without replacement, "
        f"so k is at most the number of categories (for one variable) or configurations: "
        f"use num_samples={total} (which gives the exact gradient), or "
        "scoregrad.exact() to enumerate them."
      )
    log_probs = family.per_variable_log_probs(logits)
    values, log_p = stochastic_beam_search(key, log_probs, k)
    samples = family.from_values(logits, values)
    costs = evaluate_costs(f, samples, dtype=logits.dtype)
    weights, kept = unordered_set_weights(log_p, jax.lax.stop_gradient(costs))
    scores = jax.vmap(lambda x: family.score_logits(logits, x))(samples)
    grad_logits = jnp.tensordot(jax.lax.stop_gradient(weights), scores, axes=1)
    # Σ_s p(s) R(S, s) f(s), the weights held fixed: differentiable in what f closes over.
    value = jnp.sum(jax.lax.stop_gradient(kept) * costs)
    grad, _, value = _common.finish(lg, grad_logits[None], False, value, costs)
    return finish(value, grad, state, None, costs=costs)

  return GradientEstimator(init=stateless_init, estimate=estimate)
