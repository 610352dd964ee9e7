"""Double control variates and RODEO: leave-one-out REINFORCE plus learned CVs.

Both estimators draw K ≥ 2 independent samples b_1..b_K of a factorised
Bernoulli q = Bernoulli(σ(α)), evaluate f and its derivative ∇f at each
(K evaluations of f, one backward pass), and start from the leave-one-out
REINFORCE estimate

    ĝ_LOO = (1/K) Σ_k (f(b_k) − (1/(K−1)) Σ_{j≠k} f(b_j)) s(b_k),   s(b) = b − σ(α).

They add control variates built from the *other* samples' values and
derivatives (a first-order Taylor expansion of f around each b_j), each with
zero mean given everything it depends on, so the estimate is unbiased for
every value of the control variates' parameters φ. φ (and the optax state of
its optimiser) live in the estimator state and are learned by minimising the
variance of the parameter gradient, E‖ĝ(φ)‖² (its gradient in φ equals that
of Var ĝ(φ), since E ĝ(φ) does not depend on φ), as REBAR/RELAX do.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from scoregrad._src.base import (
  Estimate,
  GradientEstimator,
  check_cost,
  check_state,
  finish,
  first_order_only,
  gradient_carrier,
)
from scoregrad._src.discrete import logits as _common
from scoregrad._src.discrete.rebar_relax import control_optimizer
from scoregrad._src.validation import check_bool, check_key, check_positive_int

PyTree = Any

_NEEDS = _common.LOGITS_FACTS + ("score_variance", "gibbs_flips")

_ALTERNATIVES = (
  "For categorical variables use scoregrad.disarm(num_pairs=...) or "
  "scoregrad.arm(num_samples=...) (stick-breaking coupling), "
  "scoregrad.rebar(...)/relax(...), scoregrad.rao_blackwell(num_summed=..., "
  "num_samples=...) or scoregrad.score_function(num_samples=..., "
  "baseline=scoregrad.baselines.leave_one_out())."
)


class DoubleCVState(NamedTuple):
  """State of :func:`double_cv`.

  Attributes:
    control: ``{"alpha": α}``, the weight of the Taylor control variate.
    opt_state: the optax state of the optimiser that learns α (``()`` when
      ``learning_rate=0``).
  """

  control: dict
  opt_state: Any


class RodeoState(NamedTuple):
  """State of :func:`rodeo`.

  Attributes:
    control: ``{"alpha": α, "beta": β, "network": ρ}``: the weights of the
      baseline and gradient Stein control variates and the parameters of the
      learned function h_ρ.
    opt_state: the optax state of the optimiser that learns them (``()``
      when ``learning_rate=0``).
  """

  control: dict
  opt_state: Any


class _Draws(NamedTuple):
  """The K draws, flattened to (K, D), with everything gradient-free."""

  f: jax.Array  # (K,)   f(b_k)
  grads: jax.Array  # (K, D) ∇f(b_k)
  b: jax.Array  # (K, D)
  logits: jax.Array  # (D,)
  family: Any  # the distribution class: its static score_logits/score_variance/gibbs_flips


def _check_num_samples(num_samples, name):
  num_samples = check_positive_int("num_samples", num_samples)
  if num_samples < 2:
    raise ValueError(
      f"`{name}` needs num_samples >= 2 (its baseline for each sample is built "
      f"from the others); got num_samples={num_samples!r}. Use num_samples=2 "
      "(the cost of one DisARM pair) or more."
    )
  return num_samples


def _leave_one_out(x):
  """Row k: mean of the other rows."""
  return (jnp.sum(x, axis=0) - x) / (x.shape[0] - 1)


def _make(
  *,
  name: str,
  num_samples: int,
  learning_rate,
  optimizer,
  per_sample,
  axis_name,
  control0: dict,
  state_cls: type,
  terms: Callable,
):
  per_sample = check_bool("per_sample", per_sample)
  if axis_name is not None and not isinstance(axis_name, str):
    raise TypeError(
      f"`axis_name` must be None or the str name of a jax.vmap/pmap axis; got "
      f"axis_name={axis_name!r}."
    )
  adapt, optimizer = control_optimizer(learning_rate, optimizer, default=1e-3)

  def init(params):
    del params
    control = jax.tree_util.tree_map(lambda c: jnp.asarray(c, jnp.result_type(float)), control0)
    return state_cls(control=control, opt_state=optimizer.init(control) if adapt else ())

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_key(key)
    check_state(state, state_cls, name)
    lg = _common.logits_and_pullback(
      dist_fn, params, estimator=name, needs=_NEEDS, alternatives=_ALTERNATIVES
    )
    family, logits = lg.family, lg.logits
    dtype = logits.dtype
    check_cost(
      f,
      _common.relaxed_input(lg),
      floating=True,
      where=f"{name} evaluates f and its derivative at the samples (floats in "
      "{0, 1} shaped like the logits)",
      smooth=False,  # unbiased for any f: ∇f only builds the control variates
    )
    u = _common.uniform(key, (num_samples,) + logits.shape, dtype)
    b = jax.lax.stop_gradient(family.hard(family.perturb(logits, u)))

    def cost(x):
      return jnp.asarray(f(x)).astype(dtype)

    f_b, grads = jax.vmap(jax.value_and_grad(cost))(b)
    draws = _Draws(
      jax.lax.stop_gradient(f_b),
      jax.lax.stop_gradient(grads).reshape(num_samples, -1),
      b.reshape(num_samples, -1),
      logits.reshape(-1),
      family,
    )

    def variance_objective(control):
      ctrl = jax.tree_util.tree_map(lambda c: jnp.asarray(c).astype(dtype), control)
      rows = terms(ctrl, draws).reshape((num_samples,) + logits.shape)
      g = lg.pullback(jnp.mean(rows, axis=0))
      total = sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(g))
      return total, (rows, g)

    if adapt:
      (_, (rows, grad)), g_control = jax.value_and_grad(variance_objective, has_aux=True)(
        state.control
      )
      if axis_name is not None:
        g_control = jax.lax.pmean(g_control, axis_name)
      updates, opt_state = optimizer.update(g_control, state.opt_state, state.control)
      new_state = state_cls(optax.apply_updates(state.control, updates), opt_state)
    else:
      _, (rows, grad) = variance_objective(state.control)
      new_state = state
    anchor = (lg.live, f_b, grads)
    grad = first_order_only(grad, anchor, name)
    per = jax.vmap(lg.pullback)(first_order_only(rows, anchor, name)) if per_sample else None
    value = jnp.mean(f_b) + gradient_carrier(lg.live, jnp.mean(rows, axis=0), name, dtype)
    return finish(value, grad, new_state, per)

  return GradientEstimator(init=init, estimate=estimate)


# --- double control variates -------------------------------------------------


def _double_cv_terms(ctrl, d: _Draws):
  alpha = ctrl["alpha"]
  s = d.family.score_logits(d.logits, d.b)  # (K, D)
  loo_grads = _leave_one_out(d.grads)  # mean_{j≠k} ∇f(b_j)
  c = alpha * jnp.sum(loo_grads * s, axis=-1)  # (K,) Taylor CV
  baseline = _leave_one_out(d.f + c)
  correction = alpha * d.family.score_variance(d.logits) * d.grads
  return (d.f - baseline + c)[:, None] * s - correction


def double_cv(
  *,
  num_samples: int,
  learning_rate: Optional[float] = None,
  optimizer: Optional[optax.GradientTransformation] = None,
  per_sample: bool = False,
  axis_name: Optional[str] = None,
) -> GradientEstimator:
  r"""Double control variates: leave-one-out REINFORCE plus a Taylor control variate.

  With K i.i.d. samples b_k ~ Bernoulli(σ(α)) (D coordinates), scores
  s_k = b_k − σ(α), f_k = f(b_k), derivatives ∇f_k = ∇f(b_k) (f differentiated
  at the binary point), their leave-one-out means ∇̄f_{−k} = (1/(K−1)) Σ_{j≠k}
  ∇f_j and the linear control variate c_k = a ⟨∇̄f_{−k}, s_k⟩ (a first-order
  Taylor expansion of f, with slope taken from the other samples), the
  gradient with respect to the logits α is

      ĝ = (1/K) Σ_k [f_k + c_k − (1/(K−1)) Σ_{j≠k} (f_j + c_j)] s_k
          − a σ(α)(1 − σ(α)) ⊙ (1/K) Σ_k ∇f_k,

  pulled back to ``params`` with ``jax.vjp``. It is unbiased for every a:
  E[s_k s_kᵀ] = diag σ(α)(1 − σ(α)) and ∇̄f_{−k} is independent of b_k, so
  E[c_k s_k] equals the expectation of the last term, and every c_j in the
  baseline of sample k is linear in s_j with a coefficient that does not
  depend on b_j, so E[c_j s_k] = 0. The weight a (the first control
  variate is the leave-one-out baseline; this is the second, "double", one)
  is learned in the state by minimising E‖ĝ‖² with Adam; it starts at 0,
  where ĝ is leave-one-out REINFORCE.

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Bernoulli(logits=
  ...)`` (any event shape, independent coordinates; Categorical raises).
  f receives float samples in {0., 1.} and is differentiated there with
  ``jax.grad`` (for a VAE, ∇f comes from the same backward pass as the
  decoder's gradient), so f must be traceable by JAX at float inputs. Any
  derivative keeps ĝ unbiased — a piecewise-constant f (JAX derivative 0)
  just gives leave-one-out REINFORCE — but only a derivative that predicts
  f(b) − f(b') well reduces the variance. Cost: K evaluations of f and K
  of its gradient.

  ``Estimate.value`` is the mean of f over the K samples, differentiable
  with respect to anything f closes over. First-order only.

  Args:
    num_samples: K ≥ 2 samples per estimate (Python int).
    learning_rate: Adam step size for a (default 1e-3, as in the paper's
      code); ``0`` keeps a fixed.
    optimizer: an optax optimiser instead of Adam (then omit
      ``learning_rate``).
    per_sample: also return the K rows whose mean is the estimate (leading
      axis K; they share baselines, so they are not independent).
    axis_name: average the gradient of a across this ``jax.vmap``/``pmap``
      axis (e.g. the examples of a minibatch) so a stays shared.

  Returns:
    ``GradientEstimator(init, estimate)`` with :class:`DoubleCVState` state.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.double_cv(num_samples=2)
    >>> logits = jnp.zeros(3)
    >>> out = est.estimate(jax.random.key(0), lambda b: jnp.sum((b - 0.45) ** 2),
    ...                    lambda l: sg.dists.Bernoulli(logits=l), logits,
    ...                    est.init(logits))
    >>> out.state.control["alpha"].shape
    ()

  References:
    Titsias & Shi, "Double Control Variates for Gradient Estimation in
    Discrete Latent Variable Models", AISTATS 2022.
  """
  num_samples = _check_num_samples(num_samples, "double_cv")
  return _make(
    name="double_cv",
    num_samples=num_samples,
    learning_rate=learning_rate,
    optimizer=optimizer,
    per_sample=per_sample,
    axis_name=axis_name,
    control0={"alpha": 0.0},
    state_cls=DoubleCVState,
    terms=_double_cv_terms,
  )


# --- RODEO ---------------------------------------------------------------------


def stein_network(hidden_size: int):
  """RODEO's default learned function h_ρ: R² → R², a one-hidden-layer MLP.

  h_ρ(t, v) = W₂ᵀ leaky_relu(w_t t + w_v v + c, 0.3) + b₂, applied
  elementwise to the Taylor increment t and the value v, as in the paper's
  code (there with 100 units). Initialised deterministically (no key) with
  spread-out units and a small nonzero output layer, so the gradients of the
  variance with respect to α, β and ρ are nonzero from the first step.

  Returns:
    ``(apply, params)`` with ``apply(rho, t, v) -> (*broadcast(t, v).shape, 2)``.
  """
  hidden_size = check_positive_int("hidden_size", hidden_size)
  h = jnp.arange(hidden_size, dtype=jnp.result_type(float))
  scale = 1.0 / math.sqrt(hidden_size)
  params = {
    "w_t": jnp.linspace(-1.0, 1.0, hidden_size),
    "w_v": 0.1 * jnp.cos(1.7 * h + 0.5),
    "c": jnp.sin(2.4 * h + 1.0),
    "w_out": 0.1 * scale * jnp.stack([jnp.sin(1.3 * h + 0.2), jnp.cos(0.7 * h + 0.4)], -1),
    "b_out": jnp.zeros((2,)),
  }

  def apply(rho, t, v):
    t, v = jnp.broadcast_arrays(t, v)
    pre = t[..., None] * rho["w_t"] + v[..., None] * rho["w_v"] + rho["c"]
    return jax.nn.leaky_relu(pre, 0.3) @ rho["w_out"] + rho["b_out"]

  return apply, params


def _rodeo_terms(network):
  def terms(ctrl, d: _Draws):
    k, dim = d.b.shape
    alpha, beta, rho = ctrl["alpha"], ctrl["beta"], ctrl["network"]
    s = d.family.score_logits(d.logits, d.b)  # (K, D)
    step, rate = d.family.gibbs_flips(d.logits, d.b)  # (K, D) each
    # Taylor increments of f around b_j, at b_k and at b_k's D neighbours:
    # t[k, j] = ⟨∇f_j, b_k − b_j⟩, t_nbr[k, j, i] = t[k, j] + step_{k,i} ∇f_{j,i}.
    own = jnp.sum(d.grads * d.b, axis=-1)  # ⟨∇f_j, b_j⟩
    t = d.b @ d.grads.T - own[None, :]  # (K, K)
    t_nbr = t[:, :, None] + step[:, None, :] * d.grads[None, :, :]
    v = d.f[None, :]
    out_x = network(rho, t, v)  # (K, K, 2)
    out_n = network(rho, t_nbr, v[:, :, None])  # (K, K, D, 2)
    # h_k = mean over the other samples j ≠ k of the network's outputs.
    weights = (1.0 - jnp.eye(k, dtype=d.f.dtype)) / (k - 1)
    h_x = jnp.einsum("kj,kjo->ko", weights, out_x)  # (K, 2)
    h_n = jnp.einsum("kj,kjio->kio", weights, out_n)  # (K, D, 2)
    # Gibbs Stein operator (A h)(x) = (1/D) Σ_i rate_i [h(x + step_i e_i) − h(x)].
    stein0 = jnp.mean(rate * (h_n[..., 0] - h_x[:, None, 0]), axis=-1)  # (K,)
    # ... applied to the vector function y ↦ h¹(y) s(y), s(x + step_i e_i) = s + step_i e_i.
    stein1 = (
      s * jnp.mean(rate * (h_n[..., 1] - h_x[:, None, 1]), axis=-1, keepdims=True)
      + rate * step * h_n[..., 1] / dim
    )  # (K, D)
    baseline = _leave_one_out(d.f + alpha * stein0)
    return (d.f - baseline)[:, None] * s + beta * stein1

  return terms


def rodeo(
  *,
  num_samples: int,
  hidden_size: int = 100,
  learning_rate: Optional[float] = None,
  optimizer: Optional[optax.GradientTransformation] = None,
  per_sample: bool = False,
  axis_name: Optional[str] = None,
) -> GradientEstimator:
  r"""RODEO: leave-one-out REINFORCE with learned discrete-Stein control variates.

  A Markov chain with kernel P that leaves q = Bernoulli(σ(α)) invariant gives
  the Stein operator (A h)(x) = Σ_y P(x, y)(h(y) − h(x)), with E_q[(A h)(x)] = 0
  for every function h. RODEO uses the Gibbs chain that resamples one
  uniformly chosen coordinate from its marginal:

      (A h)(x) = (1/D) Σ_i q_i(1 − x_i) [h(x^{(i)}) − h(x)],

  x^{(i)} being x with coordinate i flipped: D evaluations of h, none of f.
  With K i.i.d. samples b_k, f_k = f(b_k), ∇f_k = ∇f(b_k) and s(b) = b − σ(α),
  each sample gets a function built from the other samples' first-order
  Taylor expansions, h_k(y) = (1/(K−1)) Σ_{j≠k} h_ρ(⟨∇f_j, y − b_j⟩, f_j) ∈ R²
  (h_ρ the learned :func:`stein_network`; components h_k⁰, h_k¹), and

      ĝ = (1/K) Σ_k [(f_k − (1/(K−1)) Σ_{j≠k} (f_j + a (A h_j⁰)(b_j))) s(b_k)
                     + β (A [h_k¹ s])(b_k)],

  pulled back to ``params`` with ``jax.vjp``. Unbiased for every (a, β, ρ):
  h_j does not depend on b_j, so E[(A h_j⁰)(b_j) | b_{−j}] = 0 — which kills
  its product with s(b_k), k ≠ j — and E[(A [h_k¹ s])(b_k) | b_{−k}] = 0.
  (a, β, ρ) live in the state, start at a = β = 0 (leave-one-out REINFORCE)
  and are learned by minimising E‖ĝ‖² with Adam. For K = 2 this is the
  paper's ``discrete_stein_avg`` estimator, for K > 2 its
  ``discrete_stein_output_avg`` (network outputs averaged over j ≠ k).

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Bernoulli(logits=
  ...)`` (Categorical raises; the paper's experiments and its code are
  binary). f receives float samples in {0., 1.} and is differentiated there
  with ``jax.grad``; any derivative keeps ĝ unbiased (a piecewise-constant
  f only weakens the control variates). Cost: K evaluations of f and of its
  gradient, plus O(K² D · hidden_size) for the network.

  ``Estimate.value`` is the mean of f over the K samples, differentiable
  with respect to anything f closes over. First-order only.

  Args:
    num_samples: K ≥ 2 samples per estimate (Python int).
    hidden_size: hidden units of h_ρ (default 100, as in the paper's code).
    learning_rate: Adam step size for (a, β, ρ) (default 1e-3, as in the
      paper's code); ``0`` freezes them.
    optimizer: an optax optimiser instead of Adam.
    per_sample: also return the K rows whose mean is the estimate (not
      independent: they share baselines).
    axis_name: average the control-variate gradients across this
      ``jax.vmap``/``pmap`` axis so (a, β, ρ) stay shared.

  Returns:
    ``GradientEstimator(init, estimate)`` with :class:`RodeoState` state.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.rodeo(num_samples=2, hidden_size=16)
    >>> logits = jnp.zeros(3)
    >>> out = est.estimate(jax.random.key(0), lambda b: jnp.sum((b - 0.45) ** 2),
    ...                    lambda l: sg.dists.Bernoulli(logits=l), logits,
    ...                    est.init(logits))
    >>> sorted(out.state.control)
    ['alpha', 'beta', 'network']

  References:
    Shi, Zhou, Hwang, Titsias & Mackey, "Gradient Estimation with Discrete
    Stein Operators", NeurIPS 2022.
  """
  num_samples = _check_num_samples(num_samples, "rodeo")
  network, rho = stein_network(hidden_size)
  return _make(
    name="rodeo",
    num_samples=num_samples,
    learning_rate=learning_rate,
    optimizer=optimizer,
    per_sample=per_sample,
    axis_name=axis_name,
    control0={"alpha": 0.0, "beta": 0.0, "network": rho},
    state_cls=RodeoState,
    terms=_rodeo_terms(network),
  )


def check_num_draws(num_samples, name: str) -> int:
  """Validates the number of draws K >= 2 of a RODEO/double-CV estimate (``name`` for messages)."""
  return _check_num_samples(num_samples, name)


def rodeo_rows(network, control, f, grads, b, logits, family) -> jax.Array:
  """RODEO's gradient rows for the logits from K draws of one variable (Shi et al. 2022).

  Row k is (f_k − b_k) s(b_k) + β (A h¹s)(b_k), the leave-one-out Stein
  baseline b_k = mean_{j≠k}(f_j + α (A h⁰)(b_j)) with h built from the other
  draws by ``network`` (see :func:`rodeo`); the mean of the rows is RODEO's
  estimate, unbiased for every ``control``.

  Args:
    network: ``apply`` of :func:`stein_network`.
    control: ``{"alpha", "beta", "network"}`` (a :class:`RodeoState`'s control).
    f: (K,) the costs f(b_k). grads: (K, D) ∇f(b_k). b: (K, D) the draws.
    logits: (D,). family: the distribution class (its score_logits/gibbs_flips).

  Returns:
    (K, D) rows.
  """
  return _rodeo_terms(network)(control, _Draws(f, grads, b, logits, family))
