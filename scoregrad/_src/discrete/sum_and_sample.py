"""Rao-Blackwellised sum-and-sample: sum the likeliest configurations, sample the rest."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from scoregrad._src import baselines as _baselines
from scoregrad._src.base import (
  Estimate,
  GradientEstimator,
  check_state,
  evaluate_costs,
  expand_to,
  finish,
  state_like_params,
)
from scoregrad._src.discrete import logits as _common
from scoregrad._src.validation import check_bool, check_key, check_positive_int


class RaoBlackwellState(NamedTuple):
  """State of :func:`rao_blackwell`: the baseline's state.

  Attributes:
    baseline: the state of the baseline applied to the sampled remainder.
  """

  baseline: object


def top_configurations(log_probs: jax.Array, k: int):
  """The k most probable configurations of independent variables, exactly.

  Beam search over the variables with beam width k is exact for a product
  distribution: a prefix outside the top k prefixes has k better prefixes,
  and each completed with the same suffix beats it. Ties are broken by
  ``lax.top_k``'s order.

  Args:
    log_probs: (V, K) per-variable log-probabilities.
    k: how many (≤ K^V).

  Returns:
    ``(configs, joint_log_probs)`` with shapes (k, V) int32 and (k,).
  """
  num_vars, num_cats = log_probs.shape
  scores = jnp.full((k,), -jnp.inf, log_probs.dtype).at[0].set(0.0)
  configs = jnp.zeros((k, num_vars), jnp.int32)

  def step(carry, inputs):
    scores, configs = carry
    v, lp = inputs
    candidates = (scores[:, None] + lp[None, :]).reshape(-1)
    top, index = jax.lax.top_k(candidates, k)
    parent, value = index // num_cats, (index % num_cats).astype(jnp.int32)
    configs = configs[parent].at[:, v].set(value)
    return (top, configs), None

  (scores, configs), _ = jax.lax.scan(step, (scores, configs), (jnp.arange(num_vars), log_probs))
  return configs, scores


def sample_outside(u: jax.Array, log_probs: jax.Array, configs: jax.Array) -> jax.Array:
  """One exact draw from p(x | x ∉ C) for a product distribution and a set C.

  Variables are drawn in order. With prefix x_{<v}, the mass of
  {x ∉ C, x_{≤v} = (x_{<v}, j)} is p(x_{<v}) p_v(j) [1 − Σ_c Π_{t>v} p_t(c_t)],
  the sum over configurations c ∈ C that agree with (x_{<v}, j); so x_v is
  drawn with weights p_v(j) (1 − covered_j), by inverting their cumulative
  sum at u_v. Exact up to floating-point rounding of those differences.

  Args:
    u: (V,) uniforms on (0, 1), one per variable.
    log_probs: (V, K) per-variable log-probabilities.
    configs: (k, V) the set C (int32).

  Returns:
    (V,) int32 values.
  """
  num_vars, num_cats = log_probs.shape
  chosen = log_probs[jnp.arange(num_vars)[None, :], configs]  # (k, V)
  # suffix[:, v] = Σ_{t ≥ v} log p_t(c_t); the column for v + 1 is what we need.
  suffix = jnp.flip(jnp.cumsum(jnp.flip(chosen, axis=1), axis=1), axis=1)
  after = jnp.concatenate([suffix[:, 1:], jnp.zeros_like(suffix[:, :1])], axis=1)
  categories = jnp.arange(num_cats)

  def step(match, inputs):
    u_v, lp, column, after_v = inputs
    agree = match[:, None] & (column[:, None] == categories[None, :])  # (k, K)
    covered = jnp.sum(jnp.where(agree, jnp.exp(after_v)[:, None], 0.0), axis=0)
    w = jnp.exp(lp) * jnp.clip(1.0 - covered, 0.0, 1.0)
    w = jnp.where(jnp.sum(w) > 0, w, jnp.exp(lp))  # rounding guard
    cdf = jnp.cumsum(w)
    j = jnp.minimum(jnp.sum(cdf <= u_v * cdf[-1]), num_cats - 1).astype(jnp.int32)
    return match & (column == j), j

  match0 = jnp.ones((configs.shape[0],), bool)
  _, x = jax.lax.scan(step, match0, (u, log_probs, configs.T, after.T))
  return x


def rao_blackwell(
  *,
  num_summed: int,
  num_samples: int,
  baseline: Optional[_baselines.Baseline] = None,
  per_sample: bool = False,
) -> GradientEstimator:
  r"""Rao-Blackwellised sum-and-sample score-function estimator.

  For a set C of ``num_summed`` configurations — the most probable ones,
  found exactly by beam search — the identity

      ∇E[f] = Σ_{c ∈ C} p(c) (f(c) − b) ∇ log p(c)
              + (1 − p(C)) E_{x ~ p(· | x ∉ C)}[(f(x) − b) ∇ log p(x)]

  is estimated by summing C exactly and drawing ``num_samples``
  configurations from p restricted to the complement (exactly, variable by
  variable: :func:`sample_outside`). Unbiased for any C chosen without the
  samples. Without a baseline its variance is (1 − p(C))²/n times the
  variance of f(x)∇log p(x) under p(· | x ∉ C), so it shines when p is
  concentrated (p(C) close to 1). With a baseline b_j for sample j (independent of it, e.g.
  ``leave_one_out()`` over the complement samples), the summed part uses the
  mean of the b_j, which keeps the estimate unbiased (the b-terms cancel in
  expectation because Σ_x ∇p(x) = 0). Gradients are taken for the logits and
  pulled back to ``params`` with ``jax.vjp``.

  If the whole space has at most ``num_summed`` configurations, the result
  is the exact gradient.

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Bernoulli(logits=
  ...)`` or ``scoregrad.dists.Categorical(logits=...)`` (C is a set of joint
  configurations of all variables). f may be a black box; it receives
  samples like ``score_function`` (floats in {0., 1.}; int32 indices).

  ``Estimate.value`` is Σ_C p f + (1 − p(C)) mean_j f(x_j), unbiased for
  E[f]. First-order only.

  Args:
    num_summed: size of C, the configurations summed exactly (Python int ≥ 1;
      the beam search costs O(V · num_summed · K)).
    num_samples: draws from the complement (Python int ≥ 1); f is evaluated
      num_summed + num_samples times.
    baseline: a scalar :mod:`scoregrad.baselines` baseline (not
      ``optimal()``); default none.
    per_sample: also return, for each draw j, the summed part plus draw j's
      term (their mean is ``grad``).

  Returns:
    ``GradientEstimator(init, estimate)`` with :class:`RaoBlackwellState`.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.rao_blackwell(num_summed=4, num_samples=4,
    ...                        baseline=sg.baselines.leave_one_out())
    >>> logits = jnp.array([2.0, -1.5, 3.0, 0.5])
    >>> out = est.estimate(jax.random.key(0), lambda b: jnp.sum((b - 0.45) ** 2),
    ...                    lambda l: sg.dists.Bernoulli(logits=l), logits,
    ...                    est.init(logits))

  References:
    Liu, Regier, Tripuraneni, Jordan & McAuliffe, "Rao-Blackwellized
    Stochastic Gradients for Discrete Distributions", ICML 2019.
  """
  num_summed = check_positive_int("num_summed", num_summed)
  num_samples = check_positive_int("num_samples", num_samples)
  baseline = _baselines.resolve(baseline)
  _baselines.check_num_samples(baseline, num_samples)
  _baselines.require_scalar(
    baseline,
    where="rao_blackwell",
    instead="Use a scalar baseline such as leave_one_out() or moving_average(decay=0.9).",
  )
  per_sample = check_bool("per_sample", per_sample)

  def init(params) -> RaoBlackwellState:
    return RaoBlackwellState(baseline=state_like_params(baseline.init(), params))

  def estimate(key, f: Callable, dist_fn: Callable, params, state: RaoBlackwellState) -> Estimate:
    key = check_key(key)
    check_state(state, RaoBlackwellState, "rao_blackwell")
    lg = _common.logits_and_pullback(dist_fn, params, estimator="rao_blackwell")
    family, logits = lg.family, lg.logits
    dtype = logits.dtype
    total = family.num_configurations(logits.shape)
    k = min(num_summed, total)
    complete = k == total
    log_probs = family.per_variable_log_probs(logits)
    configs, joint = top_configurations(log_probs, k)
    summed_x = family.from_values(logits, configs)
    p_summed = jnp.exp(joint)
    f_summed = evaluate_costs(f, summed_x, dtype=dtype)
    if complete:
      rest = jnp.zeros((), dtype)
    else:
      rest = jnp.clip(-jnp.expm1(jax.nn.logsumexp(joint)), 0.0, 1.0)  # 1 − p(C)
    u = _common.uniform(key, (num_samples, log_probs.shape[0]), dtype)
    drawn = jax.vmap(lambda uj: sample_outside(uj, log_probs, configs))(u)
    drawn_x = family.from_values(logits, drawn)
    f_drawn = evaluate_costs(f, drawn_x, dtype=dtype)
    fixed_drawn = jax.lax.stop_gradient(f_drawn)
    b = jnp.asarray(baseline.values(fixed_drawn, None, state.baseline), dtype)
    b_summed = jnp.mean(b)

    score = jax.vmap(lambda x: family.score_logits(logits, x))
    weights = p_summed * jax.lax.stop_gradient(f_summed - b_summed)
    summed_part = jnp.tensordot(weights, score(summed_x), axes=1)
    drawn_scores = score(drawn_x)
    drawn_part = rest * expand_to(fixed_drawn - b, drawn_scores) * drawn_scores
    per_logits = summed_part[None] + drawn_part
    per_value = jnp.sum(p_summed * f_summed) + rest * f_drawn
    grad, per, value = _common.finish(
      lg, per_logits, per_sample, jnp.mean(per_value), (f_summed, f_drawn)
    )
    new_state = RaoBlackwellState(
      baseline=baseline.update(state.baseline, jax.lax.stop_gradient(per_value))
    )
    return finish(value, grad, new_state, per)

  return GradientEstimator(init=init, estimate=estimate)
