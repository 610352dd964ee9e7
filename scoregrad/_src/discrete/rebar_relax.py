"""REBAR and RELAX: unbiased estimators with a relaxation-based control variate.

Both learn their control variate's parameters φ — the temperature λ, the scale
η and, for RELAX, a network — by minimising the variance of their own
gradient estimate. Because the estimator is unbiased for every φ,
E[ĝ(φ)] does not depend on φ, so

    ∇φ Var[ĝ(φ)] = ∇φ E[‖ĝ(φ)‖²],

and ‖ĝ‖² of the current estimate is an unbiased single-sample objective.
φ and its optax optimiser state live in the estimator state, so a training
loop stays one ``lax.scan``: ``out = est.estimate(key, f, dist_fn, params,
state)`` returns the updated φ in ``out.state``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from scoregrad import dists as _dists
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
from scoregrad._src.discrete.relaxations import check_differentiable_cost, check_temperature
from scoregrad._src.validation import (
  check_bool,
  check_callable,
  check_key,
  check_positive_float,
  check_positive_int,
)

PyTree = Any


class RebarState(NamedTuple):
  """State of :func:`rebar` and :func:`relax`.

  Attributes:
    control: the control variate's parameters φ: a dict with
      ``"log_temperature"`` (log λ), ``"scale"`` (η) and, for :func:`relax`,
      ``"network"`` (the parameters of the learned term r).
    opt_state: the optax state of the optimiser that minimises the variance
      (``()`` when ``learning_rate=0``: nothing is learned).
  """

  control: dict
  opt_state: Any


def separable_network(hidden_size: int):
  """The default learned term of :func:`relax`: a sum of per-coordinate units.

  r_ρ(z) = Σ_j Σ_h a_h tanh(w_h s_j + c_h), s = σ(z) (Bernoulli) or
  softmax(z) (Categorical), summed over every coordinate j, so the same ρ
  works for any event shape. Initialised with a = 0 (RELAX starts as REBAR).

  Returns:
    ``(apply, params)`` with ``apply(params, z) -> scalar``.
  """
  hidden_size = check_positive_int("hidden_size", hidden_size)
  # Deterministic spread-out units (no key needed); c is not symmetric in h,
  # so no two units are mirror images that cancel.
  h = jnp.arange(hidden_size, dtype=jnp.result_type(float))
  params = {
    "w": jnp.linspace(-4.0, 4.0, hidden_size),
    "c": 2.0 * jnp.sin(2.4 * h + 1.0),
    "a": jnp.zeros((hidden_size,)),
  }

  def apply(rho, z, family=_dists.Bernoulli):
    s = family.probs_of(z)
    units = jnp.tanh(s[..., None] * rho["w"] + rho["c"])
    return jnp.sum(units * rho["a"])

  return apply, params


def control_optimizer(learning_rate, optimizer, *, default: float):
  """Validates ``learning_rate``/``optimizer``: ``(adapt, optax optimiser or None)``.

  Shared by the estimators that learn their control variate's parameters in
  their state (REBAR, RELAX, double CV, RODEO): Adam with ``learning_rate``
  (``default`` when None; ``0`` freezes the parameters), or a given optax
  optimiser.
  """
  if optimizer is not None:
    if learning_rate is not None:
      raise ValueError(
        f"Pass either `learning_rate` or `optimizer`, not both; got "
        f"learning_rate={learning_rate!r} and optimizer={optimizer!r}. Set the "
        "learning rate inside the optimiser, e.g. optimizer=optax.adam(1e-2)."
      )
    if not isinstance(optimizer, optax.GradientTransformation):
      raise TypeError(
        "`optimizer` must be an optax.GradientTransformation such as "
        f"optax.adam(1e-2); got {optimizer!r}."
      )
    return True, optimizer
  lr = (
    default
    if learning_rate is None
    else check_positive_float("learning_rate", learning_rate, allow_zero=True)
  )
  adapt = lr > 0
  optimizer = optax.adam(lr) if adapt else None
  return adapt, optimizer


def _make(
  *,
  name: str,
  num_samples,
  temperature,
  scale,
  learning_rate,
  optimizer,
  per_sample,
  axis_name,
  network_fn,
  network_params,
  network_default: bool,
):
  num_samples = check_positive_int("num_samples", num_samples)
  temperature = check_temperature(check_positive_float("temperature", temperature), None, name)
  try:
    scale = float(scale)
  except (TypeError, ValueError):
    raise TypeError(f"`scale` must be a Python float; got scale={scale!r}.") from None
  if not math.isfinite(scale):
    raise ValueError(f"`scale` must be finite; got scale={scale!r}.")
  per_sample = check_bool("per_sample", per_sample)
  if axis_name is not None and not isinstance(axis_name, str):
    raise TypeError(
      f"`axis_name` must be None or the str name of a jax.vmap/pmap axis; got "
      f"axis_name={axis_name!r}."
    )
  adapt, optimizer = control_optimizer(learning_rate, optimizer, default=1e-2)

  control0 = {"log_temperature": math.log(temperature), "scale": scale}
  if network_fn is not None:
    control0["network"] = network_params

  def init(params) -> RebarState:
    del params
    control = jax.tree_util.tree_map(lambda c: jnp.asarray(c, jnp.result_type(float)), control0)
    opt_state = optimizer.init(control) if adapt else ()
    return RebarState(control=control, opt_state=opt_state)

  def estimate(key, f: Callable, dist_fn: Callable, params, state: RebarState) -> Estimate:
    key = check_key(key)
    check_state(state, RebarState, name)
    lg = _common.logits_and_pullback(dist_fn, params, estimator=name)
    family, logits = lg.family, lg.logits
    dtype = logits.dtype
    check_cost(
      f,
      _common.relaxed_input(lg),
      floating=True,
      where=f"{name} evaluates f at relaxed float inputs (floats shaped like "
      "the logits: one-hot encodings for Categorical)",
      smooth=False,  # check_differentiable_cost below
    )
    check_temperature(temperature, dtype, name)
    check_differentiable_cost(f, _common.relaxed_input(lg), name)
    key_u, key_v = jax.random.split(key)
    shape = (num_samples,) + logits.shape
    u = _common.uniform(key_u, shape, dtype)
    v = _common.uniform(key_v, shape, dtype)

    def cost(x):
      return jnp.asarray(f(x)).astype(dtype)

    def per_sample_grads(control):
      ctrl = jax.tree_util.tree_map(lambda c: jnp.asarray(c).astype(dtype), control)
      lam = jnp.exp(ctrl["log_temperature"])
      eta = ctrl["scale"]

      def c(z):
        out = eta * cost(family.soft(z, lam))
        if network_fn is not None:
          if network_default:
            out = out + network_fn(ctrl["network"], z, family)
          else:
            out = out + jnp.asarray(network_fn(ctrl["network"], z)).astype(dtype)
        return out

      def one(ui, vi):
        z = family.perturb(logits, ui)
        b = jax.lax.stop_gradient(family.hard(z))
        f_b = cost(b)
        dc_z = jax.grad(lambda l: c(family.perturb(l, ui)))(logits)
        c_zt, dc_zt = jax.value_and_grad(lambda l: c(family.conditional_noise(l, vi, b)))(logits)
        g = (jax.lax.stop_gradient(f_b) - c_zt) * (b - family.probs_of(logits)) + dc_z - dc_zt
        return f_b, g

      return jax.vmap(one)(u, v)

    def variance_objective(control):
      f_b, per_logits = per_sample_grads(control)
      g = lg.pullback(jnp.mean(per_logits, axis=0))
      total = sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(g))
      return total, (f_b, per_logits, g)

    if adapt:
      (_, (f_b, per_logits, grad)), g_control = jax.value_and_grad(
        variance_objective, has_aux=True
      )(state.control)
      if axis_name is not None:
        g_control = jax.lax.pmean(g_control, axis_name)
      updates, opt_state = optimizer.update(g_control, state.opt_state, state.control)
      new_state = RebarState(optax.apply_updates(state.control, updates), opt_state)
    else:
      _, (f_b, per_logits, grad) = variance_objective(state.control)
      new_state = state
    anchor = (lg.live, f_b)
    grad = first_order_only(grad, anchor, name)
    per = jax.vmap(lg.pullback)(first_order_only(per_logits, anchor, name)) if per_sample else None
    value = jnp.mean(f_b) + gradient_carrier(lg.live, jnp.mean(per_logits, axis=0), name, dtype)
    return finish(value, grad, new_state, per)

  return GradientEstimator(init=init, estimate=estimate)


def rebar(
  *,
  num_samples: int = 1,
  temperature: float = 0.5,
  scale: float = 1.0,
  learning_rate: Optional[float] = None,
  optimizer: Optional[optax.GradientTransformation] = None,
  per_sample: bool = False,
  axis_name: Optional[str] = None,
) -> GradientEstimator:
  r"""The REBAR estimator: REINFORCE with a concrete-relaxation control variate.

  With z = α + ε (logistic noise for Bernoulli, Gumbel for Categorical), the
  sample b = H(z), a second draw z̃ ~ p(z | b) (the family's ``conditional_noise``)
  and the control variate c(z) = η f(σ_λ(z)) (σ_λ(z) = σ(z/λ), or
  softmax(z/λ) for Categorical), the gradient with respect to the logits α is

      ĝ = [f(b) − c(z̃)] ∇α log p(b) + ∇α c(z) − ∇α c(z̃),

  averaged over ``num_samples`` draws, then pulled back to ``params`` with
  ``jax.vjp``. It is unbiased for every λ > 0 and η: the last two terms are
  the reparameterised and the conditionally-reparameterised gradients of the
  same E[c(z)], and E_b[c(z̃) ∇ log p(b)] + E[∇ c(z̃)] = ∇ E[c(z)].
  λ and η are learned in the state by minimising the variance (the
  gradient of ‖ĝ‖² with respect to (log λ, η), pushed through the pull-back
  to ``params`` so the variance minimised is that of the parameter gradient)
  with an optax optimiser.

  Requirements: ``dist_fn(params)`` is ``scoregrad.dists.Bernoulli(logits=
  ...)`` or ``scoregrad.dists.Categorical(logits=...)``. f must be
  differentiable and defined at *relaxed* inputs: floats in [0, 1] for
  Bernoulli, and for Categorical one-hot float encodings of shape
  ``event_shape + (K,)`` (the hard sample is passed one-hot too). Each draw
  costs three evaluations of f and two of its gradient, and learning λ, η
  a second-order derivative.

  The unbiasedness rests on ∇α c(z) being the derivative of E[c(z)], so f
  must be continuous at relaxed inputs (differentiable almost everywhere):
  a piecewise-constant f, e.g. one that rounds or thresholds b, has JAX
  derivative 0, the two ∇c terms vanish and the estimate is biased (with
  f(σ_λ(z)) = f(b) it is exactly zero). When JAX differentiates f as a
  constant — its output reaches b only through jnp.round, floor, ceil,
  sign, comparisons, integer casts, argmax or stop_gradient — this is
  detected at trace time from f's jaxpr and raises a ``ValueError``
  naming ``f``; use :func:`scoregrad.disarm` or :func:`scoregrad.rao_blackwell`,
  which never differentiate f. A jump in only some coordinates or only on
  part of the domain (e.g. ``jnp.round(b[0]) + b[1]``) cannot be detected so
  and stays the caller's responsibility. ``temperature`` must be at least
  the machine epsilon of the logits' dtype (see
  :func:`scoregrad.gumbel_softmax`).

  ``Estimate.value`` is the mean of f(b), differentiable with respect to
  anything f closes over. First-order only.

  Args:
    num_samples: draws per estimate (Python int ≥ 1).
    temperature: initial λ > 0.
    scale: initial η.
    learning_rate: Adam step size for (log λ, η); default 1e-2. ``0`` keeps
      them fixed (and skips the second-order work).
    optimizer: an optax optimiser instead of Adam (then omit
      ``learning_rate``).
    per_sample: also return each draw's gradient.
    axis_name: when ``estimate`` runs under ``jax.vmap(..., axis_name=...)``
      (e.g. over the examples of a minibatch, each with its own f), the
      variance gradients are averaged across that axis so φ stays shared
      (the returned state is then identical along it).

  Returns:
    ``GradientEstimator(init, estimate)`` with :class:`RebarState` state.

  Example:
    >>> import jax, jax.numpy as jnp, optax, scoregrad as sg
    >>> est = sg.rebar(num_samples=4)
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> dist_fn = lambda l: sg.dists.Bernoulli(logits=l)
    >>> opt = optax.adam(0.05)
    >>> def step(carry, key):
    ...   logits, opt_state, est_state = carry
    ...   out = est.estimate(key, f, dist_fn, logits, est_state)
    ...   updates, opt_state = opt.update(out.grad, opt_state)
    ...   return (optax.apply_updates(logits, updates), opt_state, out.state), out.value
    >>> logits = jnp.zeros(1)
    >>> carry = (logits, opt.init(logits), est.init(logits))
    >>> carry, values = jax.lax.scan(step, carry, jax.random.split(jax.random.key(0), 50))

  References:
    Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein, "REBAR: Low-variance,
    unbiased gradient estimates for discrete latent variable models",
    NeurIPS 2017.
  """
  return _make(
    name="rebar",
    num_samples=num_samples,
    temperature=temperature,
    scale=scale,
    learning_rate=learning_rate,
    optimizer=optimizer,
    per_sample=per_sample,
    axis_name=axis_name,
    network_fn=None,
    network_params=None,
    network_default=False,
  )


def relax(
  *,
  num_samples: int = 1,
  temperature: float = 0.5,
  scale: float = 1.0,
  control_variate: Optional[Callable[[PyTree, jax.Array], jax.Array]] = None,
  control_variate_params: Optional[PyTree] = None,
  hidden_size: int = 16,
  learning_rate: Optional[float] = None,
  optimizer: Optional[optax.GradientTransformation] = None,
  per_sample: bool = False,
  axis_name: Optional[str] = None,
) -> GradientEstimator:
  r"""The RELAX estimator: REBAR's estimator with a learned control variate.

  The same estimator as :func:`rebar`,

      ĝ = [f(b) − c_φ(z̃)] ∇α log p(b) + ∇α c_φ(z) − ∇α c_φ(z̃),

  with the control variate c_φ(z) = η f(σ_λ(z)) + r_ρ(z), where r_ρ is a
  learned function of the perturbed logits z; φ = (λ, η, ρ) is learned by
  minimising the variance of the parameter gradient, as in :func:`rebar`.
  Unbiased for every φ.

  By default r_ρ is :func:`separable_network` (``hidden_size`` tanh units
  applied to every coordinate of σ(z) and summed), which works for any event
  shape. Pass ``control_variate(rho, z) -> scalar`` and its initial
  ``control_variate_params`` for a network that sees all of z at once (its
  input size is then yours to fix).

  Requirements: as :func:`rebar` (Bernoulli or Categorical; f
  continuous and differentiable at relaxed inputs, a constant-derivative f
  refused; for Categorical f receives one-hot float encodings of shape
  ``event_shape + (K,)``).

  Args:
    num_samples: draws per estimate (Python int ≥ 1).
    temperature: initial λ > 0.
    scale: initial η.
    control_variate: ``control_variate(rho, z) -> scalar``; default the
      separable network.
    control_variate_params: initial ρ (required with ``control_variate``).
    hidden_size: units of the default network.
    learning_rate: Adam step size for φ (default 1e-2; ``0`` freezes φ).
    optimizer: an optax optimiser instead of Adam.
    per_sample: also return each draw's gradient.
    axis_name: average the variance gradients over this vmapped axis (see
      :func:`rebar`).

  Returns:
    ``GradientEstimator(init, estimate)`` with :class:`RebarState` state
    (``state.control["network"]`` holds ρ).

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> net = lambda rho, z: jnp.tanh(z @ rho["w"]) * rho["a"]
    >>> est = sg.relax(num_samples=2, control_variate=net,
    ...                control_variate_params={"w": jnp.ones(3) / 3, "a": jnp.array(0.0)})
    >>> logits = jnp.zeros(3)
    >>> out = est.estimate(jax.random.key(0), lambda b: jnp.sum((b - 0.45) ** 2),
    ...                    lambda l: sg.dists.Bernoulli(logits=l), logits,
    ...                    est.init(logits))

  References:
    Grathwohl, Choi, Wu, Roeder & Duvenaud, "Backpropagation through the
    Void: Optimizing control variates for black-box gradient estimation",
    ICLR 2018.
  """
  if control_variate is None:
    if control_variate_params is not None:
      raise ValueError(
        "`control_variate_params` was given without `control_variate`; pass "
        "both (control_variate(rho, z) -> scalar and its initial rho), or "
        "neither to use the default separable network."
      )
    network_fn, network_params = separable_network(hidden_size)
    default = True
  else:
    check_callable("control_variate", control_variate, "control_variate(rho, z) -> scalar")
    if control_variate_params is None:
      raise ValueError(
        "`control_variate` needs its initial parameters: pass "
        "control_variate_params=... (a pytree of float arrays)."
      )
    network_fn, network_params, default = control_variate, control_variate_params, False
  return _make(
    name="relax",
    num_samples=num_samples,
    temperature=temperature,
    scale=scale,
    learning_rate=learning_rate,
    optimizer=optimizer,
    per_sample=per_sample,
    axis_name=axis_name,
    network_fn=network_fn,
    network_params=network_params,
    network_default=default,
  )
