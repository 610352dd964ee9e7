"""Continuous relaxations (biased): Gumbel-softmax / concrete and straight-through.

These estimators differentiate f at continuous stand-ins for the discrete
samples, so f must accept floats: for Bernoulli it receives values in [0, 1]
of the event shape, for Categorical *one-hot encodings* (float arrays of shape
``event_shape + (K,)``, rows on the probability simplex) — not indices, unlike
the score-function-based estimators. They are biased: the mean of the estimate
is not ∇E[f(b)]. The tests measure the bias against exact enumeration and
quadrature, and the benchmarks report it; use them where low variance matters
more than exactness, and :func:`scoregrad.rebar` / :func:`scoregrad.relax` for
an unbiased estimator built on the same relaxation.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from scoregrad._src import layers as _layers
from scoregrad._src.base import (
  Estimate,
  GradientEstimator,
  check_cost,
  finish,
)
from scoregrad._src.discrete import logits as _common
from scoregrad._src.validation import (
  NotApplicableError,
  check_bool,
  check_key,
  check_positive_float,
  check_positive_int,
)


def gumbel_softmax(
  *, num_samples: int, temperature: float, straight_through: bool = False, per_sample: bool = False
) -> GradientEstimator:
  r"""The Gumbel-softmax (concrete) estimator; biased, low variance.

  With z = α + ε, ε logistic (Bernoulli) or Gumbel (Categorical) noise, the
  discrete sample is b = H(z) (1[z > 0] or one-hot(argmax z)) and the relaxed
  sample is y = σ(z/λ) or softmax(z/λ) at temperature λ. The estimate of the
  gradient with respect to the logits α is

      ĝ = (1/n) Σ_i ∇α f(y_i)                          (straight_through=False)
      ĝ = (1/n) Σ_i ∇α f(y_i + ⊥(b_i − y_i))          (straight_through=True)

  — the pathwise gradient of the relaxed objective E[f(y)], or with the
  straight-through variant f evaluated at the hard sample but differentiated
  as if it were y. Pulled back to ``params`` with ``jax.vjp``.

  Bias: E[ĝ] ≠ ∇E[f(b)] in general, and it can point the wrong way. On the
  REBAR toy (one bit, f(b) = (b − 0.45)², exact ∂E/∂α = θ(1 − θ)·0.1), by
  quadrature over the noise:

      θ = σ(α)                    0.2       0.5      0.8
      exact ∂E/∂α                 0.016     0.025    0.016
      λ = 0.5                    −0.019     0.021    0.050
      λ = 0.5, straight-through  −0.036     0.021    0.067
      λ = 0.1                     0.0066    0.025    0.025

  Lower temperatures shrink the bias slowly and raise the variance. (This
  table is checked in ``tests/test_discrete_benchmarks.py``;
  ``tests/test_discrete_relaxed.py`` checks the estimator's mean against
  such quadratures; ``benchmarks/discrete_toy.py`` and
  ``benchmarks/discrete_vae.py`` report the bias on a grid and on real data.)

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Bernoulli(logits=...)``
  or ``scoregrad.dists.Categorical(logits=...)``; f differentiable and
  defined at relaxed inputs (floats in [0, 1] for Bernoulli; for Categorical
  one-hot float encodings of shape ``event_shape + (K,)``). An f that JAX
  differentiates as a constant (it reaches its input only through
  jnp.round, floor, comparisons, integer casts, argmax, stop_gradient...)
  would give a silent zero gradient, and is refused at trace time with a
  ``ValueError`` (detected from the jaxpr of its derivative).

  ``Estimate.value`` is the mean of f at the *hard* samples b (an unbiased
  estimate of E[f(b)]), differentiable with respect to anything f closes
  over. First-order only.

  Args:
    num_samples: samples per estimate (Python int ≥ 1).
    temperature: λ > 0 (Python float). Lower: less bias, more variance.
      At least the machine epsilon of the logits' dtype (float32: 1.2e-7,
      bfloat16: 7.8e-3), below which the relaxation rounds to the hard
      sample and the gradient to zero: a ``ValueError`` otherwise.
    straight_through: evaluate f at the hard sample in the forward pass.
    per_sample: also return each sample's gradient.

  Returns:
    ``GradientEstimator(init, estimate)``.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.gumbel_softmax(num_samples=32, temperature=0.5)
    >>> logits = jnp.zeros((2, 4))                     # 2 variables, K = 4
    >>> values = jnp.arange(4.0)
    >>> f = lambda onehot: jnp.sum(onehot @ values)    # one-hot input
    >>> out = est.estimate(jax.random.key(0), f,
    ...                    lambda l: sg.dists.Categorical(logits=l), logits,
    ...                    est.init(logits))

  References:
    Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax",
    ICLR 2017.
    Maddison, Mnih & Teh, "The Concrete Distribution: A Continuous
    Relaxation of Discrete Random Variables", ICLR 2017.
  """
  num_samples = check_positive_int("num_samples", num_samples)
  temperature = check_temperature(
    check_positive_float("temperature", temperature), None, "gumbel_softmax"
  )
  straight_through = check_bool("straight_through", straight_through)
  per_sample = check_bool("per_sample", per_sample)
  name = "gumbel_softmax"

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_key(key)
    lg = _common.logits_and_pullback(dist_fn, params, estimator=name)
    family, logits = lg.family, lg.logits
    check_cost(
      f,
      _common.relaxed_input(lg),
      floating=True,
      where="relaxed estimators evaluate f at floats",
      smooth=False,  # check_differentiable_cost below
    )
    check_temperature(temperature, logits.dtype, name)
    check_differentiable_cost(f, _common.relaxed_input(lg), name)
    u = _common.uniform(key, (num_samples,) + logits.shape, logits.dtype)

    def one(ui):
      def relaxed_cost(l):
        z = family.perturb(l, ui)
        y = family.soft(z, temperature)
        b = jax.lax.stop_gradient(family.hard(z))
        if straight_through:
          y = y + jax.lax.stop_gradient(b - y)
        return jnp.asarray(f(y)).astype(logits.dtype), b

      (cost, b), g = jax.value_and_grad(relaxed_cost, has_aux=True)(logits)
      hard_cost = cost if straight_through else f(b)
      return jnp.asarray(hard_cost).astype(logits.dtype), g

    costs, per_logits = jax.vmap(one)(u)
    grad, per, value = _common.finish(lg, per_logits, per_sample, jnp.mean(costs), costs)
    return finish(value, grad, state, per, per_sample_values=costs)

  return _layers.stateless(
    gumbel_softmax,
    estimate,
    num_samples=num_samples,
    temperature=temperature,
    straight_through=straight_through,
    per_sample=per_sample,
  )


def straight_through(*, num_samples: int, per_sample: bool = False) -> GradientEstimator:
  r"""The straight-through estimator; biased, low variance.

  Draws b ~ p(·; α) and evaluates f(b) in the forward pass, but
  differentiates as if the sample were its mean: b is replaced by
  p + ⊥(b − p), with p = σ(α) (Bernoulli) or softmax(α) (Categorical,
  one-hot b), so

      ĝ = (1/n) Σ_i (∂f/∂b)(b_i) · ∂p/∂α.

  Biased: E[ĝ] = E[∇f(b)] ∂p/∂α, which equals ∇E[f(b)] when f is
  multilinear in independent variables (affine in each one) but not in
  general. On the REBAR toy (one bit, f(b) = (b − 0.45)²) its mean is
  2(θ − 0.45)θ(1 − θ) against the exact θ(1 − θ)·0.1: −0.080 instead of
  +0.016 at θ = 0.2. Its exact mean, by enumeration, is compared with the
  true gradient in ``tests/test_discrete_relaxed.py``.

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Bernoulli(logits=...)``
  or ``scoregrad.dists.Categorical(logits=...)``; f differentiable at the
  (float) sample; for Categorical f receives one-hot float encodings of
  shape ``event_shape + (K,)``. An f with an identically zero JAX
  derivative (jnp.round, comparisons, ...) is refused, as in
  :func:`gumbel_softmax`.

  ``Estimate.value`` is the mean of f(b_i), differentiable with respect to
  anything f closes over. First-order only.

  Args:
    num_samples: samples per estimate (Python int ≥ 1).
    per_sample: also return each sample's gradient.

  Returns:
    ``GradientEstimator(init, estimate)``.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.straight_through(num_samples=8)
    >>> out = est.estimate(jax.random.key(0), lambda b: jnp.sum((b - 0.45) ** 2),
    ...                    lambda l: sg.dists.Bernoulli(logits=l), jnp.zeros(3),
    ...                    est.init(jnp.zeros(3)))

  References:
    Bengio, Léonard & Courville, "Estimating or Propagating Gradients
    Through Stochastic Neurons for Conditional Computation", arXiv 2013.
  """
  num_samples = check_positive_int("num_samples", num_samples)
  per_sample = check_bool("per_sample", per_sample)

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_key(key)
    lg = _common.logits_and_pullback(dist_fn, params, estimator="straight_through")
    family, logits = lg.family, lg.logits
    check_cost(
      f,
      _common.relaxed_input(lg),
      floating=True,
      where="straight_through differentiates f at its float samples",
      smooth=False,  # check_differentiable_cost below
    )
    check_differentiable_cost(f, _common.relaxed_input(lg), "straight_through")
    u = _common.uniform(key, (num_samples,) + logits.shape, logits.dtype)

    def one(ui):
      b = jax.lax.stop_gradient(family.hard(family.perturb(logits, ui)))

      def cost(l):
        p = family.probs_of(l)
        return jnp.asarray(f(p + jax.lax.stop_gradient(b - p))).astype(l.dtype)

      return jax.value_and_grad(cost)(logits)

    costs, per_logits = jax.vmap(one)(u)
    grad, per, value = _common.finish(lg, per_logits, per_sample, jnp.mean(costs), costs)
    return finish(value, grad, state, per, per_sample_values=costs)

  return _layers.stateless(
    straight_through, estimate, num_samples=num_samples, per_sample=per_sample
  )


# -- What the relaxation needs of λ and f --------------------------------------


def check_temperature(temperature: float, dtype: Optional[Any], estimator: str) -> float:
  """Returns ``temperature``; raises unless σ(z/λ) / softmax(z/λ) is resolved in ``dtype``.

  The relaxed sample is computed from z = α + noise, a float with relative
  precision ε_machine, so near the decision boundary z = 0 the representable
  z are about ε_machine·max(1, |α|) apart. The relaxation goes from 0 to 1
  over a width ~λ, and its derivative underflows to exactly 0 beyond a few
  dozen λ (σ'(u) < tiny for |u| ≳ 87 in float32). For λ < ε_machine that
  window holds only a handful of representable z: the relaxed samples are
  the hard ones and the estimate is a silent 0. Hence λ ≥ ε_machine of
  ``dtype``: float64 2.2e-16, float32 1.2e-7, float16 9.8e-4, bfloat16
  7.8e-3 (``dtype=None``, at construction: float64's, the least of them).
  Above the floor a small λ is valid, only noisy: the variance grows like
  1/λ, most draws giving a zero gradient.
  """
  minimum = float(jnp.finfo(np.float64 if dtype is None else dtype).eps)
  if temperature < minimum:
    of = (
      "float64, the finest float dtype"
      if dtype is None
      else f"the logits' dtype {jnp.dtype(dtype).name}"
    )
    raise ValueError(
      f"`temperature` of {estimator} must be at least {minimum:.3g}, the machine "
      f"epsilon of {of}; got temperature={temperature!r}. The relaxed sample "
      "σ(z/λ) (softmax(z/λ) for Categorical) goes from 0 to 1 over a width ~λ, "
      "finer than the spacing of the floats z is computed in, so it rounds to the "
      "hard 0/1 (one-hot) sample, its derivative underflows to exactly zero, and "
      "the estimate would be a silent 0. Use a larger temperature (commonly 0.1 "
      "to 1; lower ones also raise the variance like 1/λ), float32/float64 "
      "logits, or an unbiased estimator that does not relax, e.g. "
      "scoregrad.disarm(num_pairs=...)."
    )
  return temperature


_PLAIN_CALLS = frozenset(
  {"jit", "pjit", "closed_call", "core_call", "remat", "remat2", "checkpoint"}
)


def _depends_on(jaxpr, inputs: list) -> list[bool]:
  """For each output of ``jaxpr``: does it depend on the inputs flagged in ``inputs``?

  Dataflow over the equations. Plain calls of a sub-jaxpr (jit, remat,
  closed_call: one input per operand, run once) are followed; any other
  equation with a flagged operand flags all its outputs (loops such as scan
  included: a conservative over-approximation, never an under-one).
  """
  live = {v for v, flagged in zip(jaxpr.invars, inputs) if flagged}
  is_live = lambda v: not isinstance(v, jex.core.Literal) and v in live
  for eqn in jaxpr.eqns:
    flags = [is_live(v) for v in eqn.invars]
    if not any(flags):
      continue
    inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    inner = getattr(inner, "jaxpr", inner)
    if (
      eqn.primitive.name in _PLAIN_CALLS
      and isinstance(inner, jex.core.Jaxpr)
      and len(inner.invars) == len(eqn.invars)
      and len(inner.outvars) == len(eqn.outvars)
    ):
      out_flags = _depends_on(inner, flags)
    else:
      out_flags = [True] * len(eqn.outvars)
    live.update(v for v, flagged in zip(eqn.outvars, out_flags) if flagged)
  return [is_live(v) for v in jaxpr.outvars]


def has_zero_derivative(f: Callable, example: Any) -> bool:
  """True when f depends on x but JAX differentiates it as a constant.

  Traces f and its forward-mode derivative t ↦ ∂f(x)·t at ``example``'s
  shapes (at trace time; nothing is run) and asks whether f's output depends
  on x while the derivative's output does not depend on t. That happens
  exactly when f reaches x only through operations whose derivative is
  zero: jnp.round, floor, ceil, sign, comparisons feeding a select, integer
  casts, argmax, stop_gradient. A constant f (whose true gradient is zero)
  is not flagged; nor is a derivative that is zero only at some inputs or
  for some coordinates; and if the trace fails the answer is False (the
  estimator then proceeds, and fails or not, as before).
  """

  def primal_and_tangent(x, t):
    y, dy = jax.jvp(lambda v: jnp.asarray(f(v)), (x,), (t,))
    return y, dy

  try:
    jaxpr = jax.make_jaxpr(primal_and_tangent)(example, example).jaxpr
  except Exception:  # pylint: disable=broad-except  (f's own errors surface later)
    return False
  n = len(jax.tree_util.tree_leaves(example))
  if len(jaxpr.invars) != 2 * n or len(jaxpr.outvars) != 2:
    return False
  primal_uses_x = _depends_on(jaxpr, [True] * n + [False] * n)[0]
  tangent_uses_t = _depends_on(jaxpr, [False] * n + [True] * n)[1]
  return primal_uses_x and not tangent_uses_t


def check_differentiable_cost(f: Callable, example: Any, estimator: str) -> None:
  """Raises if JAX's derivative of ``f`` at relaxed inputs is identically zero."""
  if has_zero_derivative(f, example):
    raise NotApplicableError(
      f"{estimator} differentiates the cost `f` at float inputs, but JAX's "
      "derivative of this f is identically zero: its output depends on the input "
      "only through operations with zero derivative, such as jnp.round, "
      "floor, ceil, sign, comparisons (x > 0.5) feeding jnp.where, integer casts, "
      "argmax or stop_gradient. The relaxation's gradient then vanishes, and the "
      "estimate would be a silent zero (for rebar/relax: a biased one, since its "
      "control variate's reparameterised gradient is missing). Use an estimator "
      "that never differentiates f: scoregrad.disarm(num_pairs=...), "
      "scoregrad.rao_blackwell(num_summed=..., num_samples=...) or "
      "scoregrad.score_function(num_samples=...); or give these estimators a "
      "differentiable f that agrees with the cost at 0/1 (one-hot) inputs, e.g. "
      "b instead of jnp.round(b)."
    )
