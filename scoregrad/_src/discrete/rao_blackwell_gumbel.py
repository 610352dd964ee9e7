"""Gumbel-Rao: straight-through Gumbel-softmax, Rao-Blackwellised over the noise given the sample."""

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
from scoregrad._src.discrete.relaxations import check_differentiable_cost, check_temperature
from scoregrad._src.validation import (
  check_bool,
  check_key,
  check_positive_float,
  check_positive_int,
)

_NEEDS = _common.LOGITS_FACTS + ("conditional_noise",)


def gumbel_rao(
  *, num_samples: int, num_inner: int, temperature: float, per_sample: bool = False
) -> GradientEstimator:
  r"""The Gumbel-Rao estimator: straight-through Gumbel-softmax with the noise integrated out.

  Straight-through Gumbel-softmax draws z = θ + G (G Gumbel; logistic for
  Bernoulli), evaluates f at the hard sample D = H(z) and differentiates
  through the relaxation: ĝ_ST = J_τ(z)ᵀ ∇f(D), J_τ(z) = ∂softmax(z/τ)/∂θ
  with G held fixed. Its expectation given D is unchanged if the noise is
  replaced by draws from its conditional distribution given D, so

      ĝ_GR = [(1/M) Σ_m J_τ(z̃_m)]ᵀ ∇f(D),   z̃_m ~ p(z | H(z) = D),

  (M = ``num_inner``) has the same mean as ĝ_ST — the same bias — and, by
  the Rao-Blackwell theorem, less variance: Var ĝ_GR = Var ĝ_ST −
  (1 − 1/M) E[Var(ĝ_ST | D)]. f and ∇f are evaluated once per outer sample
  (``num_samples`` of them); the M inner draws cost only softmax Jacobians.
  The conditional noise is the family's ``conditional_noise`` (REBAR's):
  for Categorical the maximum is an independent Gumbel at logsumexp(θ) and
  the others are Gumbels truncated below it; for Bernoulli the logistic
  noise restricted to the side of 0 that gives b. Averaged over the outer
  samples and pulled back to ``params``.

  Bias: that of straight-through Gumbel-softmax at the same τ (see
  :func:`scoregrad.gumbel_softmax`; ``tests/test_discrete_frontier.py``
  checks that the two means agree by quadrature and that the variance is
  lower, and ``benchmarks/discrete_toy.py`` reports both).

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Categorical(logits=
  ...)`` or ``scoregrad.dists.Bernoulli(logits=...)``; f differentiable, and
  for Categorical it receives one-hot float encodings of shape
  ``event_shape + (K,)`` (floats in {0., 1.} for Bernoulli). An f with an
  identically zero JAX derivative is refused, as in
  :func:`scoregrad.gumbel_softmax`.

  ``Estimate.value`` is the mean of f(D), differentiable with respect to
  anything f closes over. First-order only: a derivative of ``.grad`` (or a
  second derivative of ``.value``) raises ``NotImplementedError``. A NaN cost
  makes the value and the gradient NaN.

  Args:
    num_samples: outer samples D per estimate (Python int ≥ 1), each one
      evaluation of f and of its gradient.
    num_inner: M, conditional noise draws per outer sample (Python int ≥ 1;
      M = 1 is straight-through Gumbel-softmax in distribution).
    temperature: τ > 0 (Python float), at least the machine epsilon of the
      logits' dtype (as for :func:`scoregrad.gumbel_softmax`).
    per_sample: also return each outer sample's gradient.

  Returns:
    ``GradientEstimator(init, estimate)``.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.gumbel_rao(num_samples=8, num_inner=16, temperature=0.5)
    >>> logits = jnp.zeros((2, 4))
    >>> values = jnp.arange(4.0)
    >>> f = lambda onehot: jnp.sum((onehot @ values - 1.5) ** 2)
    >>> out = est.estimate(jax.random.key(0), f,
    ...                    lambda l: sg.dists.Categorical(logits=l), logits,
    ...                    est.init(logits))

  References:
    Paulus, Maddison & Krause, "Rao-Blackwellizing the Straight-Through
    Gumbel-Softmax Gradient Estimator", ICLR 2021.
  """
  num_samples = check_positive_int("num_samples", num_samples)
  num_inner = check_positive_int(
    "num_inner", num_inner, why="Gumbel-Rao averages M >= 1 conditional noise draws per sample."
  )
  temperature = check_temperature(
    check_positive_float("temperature", temperature), None, "gumbel_rao"
  )
  per_sample = check_bool("per_sample", per_sample)
  name = "gumbel_rao"

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_key(key)
    lg = _common.logits_and_pullback(dist_fn, params, estimator=name, needs=_NEEDS)
    family, logits = lg.family, lg.logits
    check_cost(
      f, _common.relaxed_input(lg), floating=True, where="relaxed estimators evaluate f at floats"
    )
    check_temperature(temperature, logits.dtype, name)
    check_differentiable_cost(f, _common.relaxed_input(lg), name)
    outer, inner = jax.random.split(key)
    u = _common.uniform(outer, (num_samples,) + logits.shape, logits.dtype)
    v = _common.uniform(inner, (num_samples, num_inner) + logits.shape, logits.dtype)

    def one(ui, vi):
      d = jax.lax.stop_gradient(family.hard(family.perturb(logits, ui)))
      # z̃_m − θ: the noise given D, held fixed (J_τ differentiates θ only).
      noise = jax.lax.stop_gradient(
        jax.vmap(lambda vm: family.conditional_noise(logits, vm, d))(vi) - logits
      )

      def cost(l):
        y = jnp.mean(jax.vmap(lambda e: family.soft(l + e, temperature))(noise), axis=0)
        return jnp.asarray(f(y + jax.lax.stop_gradient(d - y))).astype(l.dtype)

      return jax.value_and_grad(cost)(logits)

    costs, per_logits = jax.vmap(one)(u, v)
    grad, per, value = _common.finish(lg, per_logits, per_sample, jnp.mean(costs), costs)
    return finish(value, grad, state, per, per_sample_values=costs)

  return _layers.stateless(
    gumbel_rao,
    estimate,
    num_samples=num_samples,
    num_inner=num_inner,
    temperature=temperature,
    per_sample=per_sample,
  )
