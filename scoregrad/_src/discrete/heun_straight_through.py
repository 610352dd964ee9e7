"""ReinMax: straight-through with a second-order (Heun) correction; biased, low variance."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from scoregrad._src import layers as _layers
from scoregrad._src.base import (
  Estimate,
  GradientEstimator,
  check_cost,
  finish,
)
from scoregrad._src.discrete import logits as _common
from scoregrad._src.discrete.relaxations import check_differentiable_cost
from scoregrad._src.validation import (
  check_bool,
  check_key,
  check_positive_float,
  check_positive_int,
)

_NEEDS = _common.LOGITS_FACTS + ("logits_of_probs",)


def reinmax(*, num_samples: int, temperature: float, per_sample: bool = False) -> GradientEstimator:
  r"""The ReinMax estimator (Liu et al. 2023); biased like straight-through, usually less.

  Draws D ~ p(·; θ) from the *untempered* distribution (one-hot D for
  Categorical, b ∈ {0, 1} for Bernoulli), evaluates f(D), and differentiates
  as if the sample were

      π₁ = (D + softmax(θ/τ)) / 2,   π₂ = 2 π₁ − ½ softmax(θ),
      y = D + π₂ − ⊥(π₂),

  where the Jacobian of π₁ is the softmax Jacobian *at π₁* (π₁ enters as
  softmax(θ + ⊥(log π₁ − θ))) and τ enters only through π₁ (held fixed).
  Per variable, with g = ∇f(D) and J(π) = diag(π) − ππᵀ,

      ĝ = 2 J(π₁) g − ½ J(softmax θ) g,

  for Bernoulli the two-category case J(π) = π(1 − π) with π = σ(·) the
  probability of 1. Straight-through is ĝ = J(softmax θ) g, the forward
  Euler step of ∇E[f]; ReinMax is Heun's (trapezoid) step: at τ = 1 its
  mean is exact for one variable and f quadratic (for one bit, E[ĝ] =
  p(1 − p)(f'(0) + f'(1))/2, the trapezoid rule for f(1) − f(0)), and for f
  multilinear in independent variables.
  Averaged over ``num_samples`` draws and pulled back to ``params``.

  Bias: E[ĝ] ≠ ∇E[f] in general. On the REBAR toy
  (one bit, f(b) = (b − 0.45)²), by enumeration of b:

      θ = σ(α)                    0.2       0.5      0.8
      exact ∂E/∂α                 0.016     0.025    0.016
      straight-through           −0.080     0.025    0.112
      reinmax τ = 1               0.016     0.025    0.016
      reinmax τ = 2              −0.062     0.025    0.108
      reinmax τ = 0.5             0.109     0.025   −0.095

  τ = 1 is exact here (f is quadratic in one variable); away from it the
  half-step point π₁ moves off the midpoint and the bias can exceed
  straight-through's. These are exact expectations (ĝ depends on b only);
  ``tests/test_discrete_frontier.py`` checks them and the estimator's mean
  against them, and ``benchmarks/discrete_toy.py`` reports the bias on a
  grid of θ.

  Temperature: any finite τ > 0 is allowed. ReinMax is designed for τ ≥ 1
  (Liu et al. work with τ ≥ 1, and the reference implementation is reported
  to refuse τ < 1; the backward pass of the PyPI ``reinmax`` 0.1.0 package
  itself does not check τ). Below 1, softmax(θ/τ) sharpens towards the mode
  and π₁ leaves the midpoint between D and softmax(θ) that makes the step
  second order, so the bias grows (the table); above 1 it grows too. Nothing
  breaks numerically for small τ: softmax(θ/τ) tends to the one-hot mode,
  π₁ stays a probability vector, and its zero entries get a zero Jacobian,
  so the estimate stays finite (tested at τ = 10⁻³). scoregrad therefore
  does not refuse τ < 1 and recommends τ = 1 unless tuned.

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Categorical(logits=
  ...)`` or ``scoregrad.dists.Bernoulli(logits=...)``; f differentiable, and
  for Categorical it receives one-hot float encodings of shape
  ``event_shape + (K,)`` (floats in {0., 1.} for Bernoulli). An f with an
  identically zero JAX derivative (jnp.round, comparisons, ...) is refused,
  as in :func:`scoregrad.straight_through`.

  ``Estimate.value`` is the mean of f(D), differentiable with respect to
  anything f closes over. First-order only: a derivative of ``.grad`` (or
  a second derivative of ``.value``) raises ``NotImplementedError``. A NaN
  cost makes the value and the gradient NaN.

  Args:
    num_samples: samples per estimate (Python int ≥ 1).
    temperature: τ > 0 (Python float); 1 unless tuned.
    per_sample: also return each sample's gradient.

  Returns:
    ``GradientEstimator(init, estimate)``.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.reinmax(num_samples=16, temperature=1.0)
    >>> logits = jnp.zeros((2, 4))                     # 2 variables, K = 4
    >>> values = jnp.arange(4.0)
    >>> f = lambda onehot: jnp.sum((onehot @ values - 1.5) ** 2)
    >>> out = est.estimate(jax.random.key(0), f,
    ...                    lambda l: sg.dists.Categorical(logits=l), logits,
    ...                    est.init(logits))

  References:
    Liu, Zhao, Xu, Lin, Wen, Zhou & Gao, "Bridging Discrete and
    Backpropagation: Straight-Through and Beyond", NeurIPS 2023.
  """
  num_samples = check_positive_int("num_samples", num_samples)
  temperature = check_positive_float("temperature", temperature)
  per_sample = check_bool("per_sample", per_sample)
  name = "reinmax"

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_key(key)
    lg = _common.logits_and_pullback(dist_fn, params, estimator=name, needs=_NEEDS)
    family, logits = lg.family, lg.logits
    check_cost(
      f, _common.relaxed_input(lg), floating=True, where="reinmax differentiates f at its samples"
    )
    check_differentiable_cost(f, _common.relaxed_input(lg), name)
    u = _common.uniform(key, (num_samples,) + logits.shape, logits.dtype)
    tempered = family.soft(logits, temperature)  # softmax(θ/τ), held fixed

    def one(ui):
      d = jax.lax.stop_gradient(family.hard(family.perturb(logits, ui)))
      pi1 = 0.5 * (d + tempered)
      at_pi1 = jax.lax.stop_gradient(family.logits_of_probs(pi1))

      def cost(l):
        p1 = family.probs_of(l + jax.lax.stop_gradient(at_pi1 - l))  # value π₁, Jacobian J(π₁)
        p2 = 2.0 * p1 - 0.5 * family.probs_of(l)
        return jnp.asarray(f(d + p2 - jax.lax.stop_gradient(p2))).astype(l.dtype)

      return jax.value_and_grad(cost)(logits)

    costs, per_logits = jax.vmap(one)(u)
    grad, per, value = _common.finish(lg, per_logits, per_sample, jnp.mean(costs), costs)
    return finish(value, grad, state, per, per_sample_values=costs)

  return _layers.stateless(
    reinmax, estimate, num_samples=num_samples, temperature=temperature, per_sample=per_sample
  )
