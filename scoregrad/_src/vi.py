"""Variational objectives whose ``jax.grad`` is a chosen gradient estimator.

Each function returns a scalar (or, with ``num_outer``, a vector of
independent bounds) whose value is a Monte Carlo estimate of a variational
bound on log Z = log ∫ p(x, z) dz and whose derivative is the estimator named
by ``gradient``. Maximise it (minimise its negative).

With q = ``dist`` and log w(z) = log p(x, z) − log q(z):

* ``elbo``: E_q[log w(z)] (the evidence lower bound);
* ``iwae``: E[log (1/K) Σ_k w(z_k)] (Burda, Grosse & Salakhutdinov 2016),
  z_1..K ~ q independent; K = 1 is the ELBO and the bound tightens with K;
* ``renyi``: E[(1/(1−α)) log (1/K) Σ_k w(z_k)^{1−α}] (Li & Turner 2016):
  α = 0 is the IWAE bound, α → 1 the ELBO.

The estimators, for q's parameters θ (reparameterized z = z(θ, ε) unless
noted) and the model's parameters φ that ``log_joint`` closes over:

* ``"pathwise"``: the derivative of the Monte Carlo bound through z(θ, ε);
  unbiased at every order (a smooth function of θ and φ).
* ``"stl"`` (ELBO; sticking the landing, Roeder, Wu & Duvenaud 2017):
  (1/n) Σ_i ∂z[log p(x, z_i) − log q_θ̄(z_i)] ∂θ z_i, the pathwise gradient
  without the score term E_q[∂θ log q_θ(z)] = 0; its variance is zero when
  q is the posterior (log w is then constant in z).
* ``"dreg"`` (IWAE, Rényi; doubly reparameterized, Tucker, Lawson, Gu &
  Maddison 2019): the score term Σ_k ŵ_k ∂θ log q_θ(z_k) of the pathwise
  gradient is replaced by its reparameterized twin (Tucker's identity
  E_q[g(z) ∂θ log q(z)] = E_ε[∂z g(z) ∂θ z]), which gives

      Σ_k (α ŵ_k + (1 − α) ŵ_k²) ∂z log w(z_k) ∂θ z_k,
      ŵ = softmax((1 − α) log w),

  the IWAE case (α = 0) being Tucker et al.'s Σ_k w̃_k² ∂z log w ∂θ z.
  Unbiased for the bound's gradient; its signal-to-noise ratio does not
  decay with K as IWAE's pathwise gradient does (Rainforth et al. 2018).
* ``"score_function"`` (ELBO, any guide with a log_prob): the DiCE surrogate
  of :func:`scoregrad.expectation` on the cost log p(x, z) − log q_θ(z),
  which depends on θ directly too (its derivative is included); with a
  stateless ``baseline`` such as ``leave_one_out()``. Unbiased at every order.
* ``"vimco"`` (IWAE, any guide with a log_prob; Mnih & Rezende 2016): the
  score-function estimator with VIMCO's per-sample leave-one-out baselines
  (scoregrad's ``vimco`` estimator's), plus the derivative of the bound at
  fixed samples.

In every case φ gets the derivative of the bound at fixed samples
(Σ_k ŵ_k ∇φ log p(x, z_k) for IWAE), which is unbiased. ``"stl"``,
``"dreg"`` and ``"vimco"`` assemble their gradients from stop-gradient
pieces, so their second derivatives are refused (a clear
``NotImplementedError`` at trace time, the derivative-order rule).

References:
  Roeder, Wu & Duvenaud, "Sticking the Landing: Simple, Lower-Variance
  Gradient Estimators for Variational Inference", NeurIPS 2017.
  Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
  Tucker, Lawson, Gu & Maddison, "Doubly Reparameterized Gradient Estimators
  for Monte Carlo Objectives", ICLR 2019.
  Mnih & Rezende, "Variational Inference for Monte Carlo Objectives", ICML 2016.
  Li & Turner, "Rényi Divergence Variational Inference", NeurIPS 2016.
  Rainforth et al., "Tighter Variational Bounds are Not Necessarily Better",
  ICML 2018.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from scoregrad import dists as _dists
from scoregrad._src import baselines as _baselines
from scoregrad._src import front_door as _front_door
from scoregrad._src.base import gradient_carrier
from scoregrad._src.discrete.multi_sample import leave_one_out_bounds
from scoregrad._src.validation import NotApplicableError, check_key, check_positive_int

__all__ = ("elbo", "iwae", "renyi")

ELBO_GRADIENTS = ("pathwise", "stl", "score_function")
IWAE_GRADIENTS = ("pathwise", "dreg", "vimco")
RENYI_GRADIENTS = ("pathwise", "dreg")
_REPARAMETERIZED_ONLY = ("pathwise", "stl", "dreg")


def _check_gradient(function: str, gradient: Any, allowed: tuple[str, ...]) -> str:
  if not isinstance(gradient, str) or gradient not in allowed:
    others = {
      "elbo": " (IWAE's 'dreg' and 'vimco' are gradients of scoregrad.vi.iwae.)",
      "iwae": " (For sticking the landing use gradient='dreg', which is STL's "
      "multi-sample generalisation, or scoregrad.vi.elbo(..., gradient='stl'); "
      "for the score function with K = 1 use scoregrad.vi.elbo(..., "
      "gradient='score_function').)",
      "renyi": " (For a non-reparameterized guide use scoregrad.vi.elbo(..., "
      "gradient='score_function') or scoregrad.vi.iwae(..., gradient='vimco').)",
    }[function]
    raise ValueError(
      f"`gradient` of scoregrad.vi.{function} must be one of {allowed}; got "
      f"gradient={gradient!r}.{others}"
    )
  return gradient


def _check_reparameterized(dist, function: str, gradient: str, alternative: str) -> None:
  if getattr(dist, "reparameterized", False):
    return
  inner = type(getattr(dist, "dist", dist)).__name__
  raise NotApplicableError(
    f"scoregrad.vi.{function}(..., gradient={gradient!r}) differentiates the samples "
    f"z(θ, ε) of `dist`, but `dist` is {inner}, which is not reparameterized (its "
    "samples are not differentiable functions of its parameters, and JAX would "
    f"silently return a zero gradient through them). Use gradient={alternative!r}, "
    "which needs only dist.log_prob."
  )


def _check_log_joint(log_joint: Callable, example: Any, function: str) -> None:
  """``log_joint(z)`` must return a floating scalar for ONE sample z."""
  if not callable(log_joint):
    raise TypeError(
      f"`log_joint` of scoregrad.vi.{function} must be a function z -> log p(x, z) "
      f"for one sample z; got {log_joint!r} of type {type(log_joint).__name__}."
    )
  out = jax.eval_shape(lambda z: log_joint(z), example)
  shape = getattr(out, "shape", None)
  if shape != ():
    shown = example.shape if hasattr(example, "shape") else example
    raise ValueError(
      f"`log_joint(z)` must return a scalar, the log joint density of ONE sample z "
      f"(of shape {shown}); it returned "
      f"{shape if shape is not None else type(out).__name__}. scoregrad vmaps it over "
      "the samples itself: sum the log-likelihood over data points and latent "
      "dimensions, e.g. `lambda z: jnp.sum(log_lik(z)) + prior.log_prob(z)`."
    )
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise TypeError(
      f"`log_joint(z)` must return a floating-point scalar; it returned dtype "
      f"{out.dtype}, which has no derivative (an integer log joint, e.g. computed "
      "from integer data or constants it closes over, gives silent zero "
      "gradients). Cast its inputs to floats, e.g. jnp.asarray(data, jnp.float32)."
    )


def _log_weights(log_joint: Callable, dist, z) -> jax.Array:
  """log w = log p(x, z) − log q(z) for a batch of samples (leading axis)."""
  return jax.vmap(log_joint)(z) - dist.log_prob(z)


def _prepare(function, log_joint, dist, key, num_samples, gradient, allowed, minimum=1):
  num_samples = check_positive_int("num_samples", num_samples, minimum=minimum)
  key = check_key(key)
  dist = _dists.as_distribution(dist, name="dist")
  gradient = _check_gradient(function, gradient, allowed)
  return num_samples, key, dist, gradient


def elbo(
  log_joint: Callable[[jax.Array], jax.Array],
  dist: Any,
  key: jax.Array,
  *,
  num_samples: int,
  gradient: str = "pathwise",
  baseline: Optional[_baselines.Baseline] = None,
  chunk_size: Optional[int] = None,
  sharding: Optional[Any] = None,
) -> jax.Array:
  r"""The evidence lower bound E_q[log p(x, z) − log q(z)], differentiable by ``gradient``.

  The value is (1/n) Σ_i [log p(x, z_i) − log q(z_i)], z_i ~ q = ``dist``;
  ``jax.grad`` of it is the chosen estimator of the ELBO's gradient
  (see :mod:`scoregrad.vi` for the formulas):

  * ``"pathwise"`` (reparameterization; every derivative order unbiased);
  * ``"stl"`` (sticking the landing: the pathwise gradient without the
    score term of q, zero variance when q is the posterior; first
    derivatives only);
  * ``"score_function"`` (DiCE, for guides that are not reparameterized,
    e.g. discrete latents; optional stateless ``baseline``; every order).

  Requirements: ``"pathwise"`` and ``"stl"`` need a reparameterized ``dist``
  and ``log_joint`` differentiable in z. ``log_joint`` may close over model
  parameters: their gradient is included.

  Args:
    log_joint: ``log_joint(z) -> scalar``, log p(x, z) (up to a constant) of
      ONE latent sample z (vmapped inside).
    dist: the variational distribution q, built from the parameters being
      differentiated (scoregrad.dists, or NumPyro/distrax/TFP-on-JAX).
    key: a PRNG key.
    num_samples: n ≥ 1, a Python int.
    gradient: ``"pathwise"`` (default), ``"stl"`` or ``"score_function"``.
    baseline: a stateless scalar baseline for ``"score_function"``, e.g.
      ``scoregrad.baselines.leave_one_out()``.
    chunk_size, sharding: ``"pathwise"`` and ``"score_function"`` only:
      passed to :func:`scoregrad.expectation` (samples processed
      ``chunk_size`` at a time, or the sample axis sharded), same estimator.

  Returns:
    A scalar: maximise it, or minimise its negative.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> log_joint = lambda z: -0.5 * jnp.sum(z**2) - 0.5 * jnp.sum((1.0 - z) ** 2)
    >>> def loss(params, key):
    ...   q = sg.dists.Normal(params["loc"], jnp.exp(params["log_scale"]))
    ...   return -sg.vi.elbo(log_joint, q, key, num_samples=8, gradient="stl")
    >>> params = {"loc": jnp.zeros(2), "log_scale": jnp.zeros(2)}
    >>> g = jax.grad(loss)(params, jax.random.key(0))

  References:
    Roeder, Wu & Duvenaud, "Sticking the Landing", NeurIPS 2017.
    Ranganath, Gerrish & Blei, "Black Box Variational Inference", AISTATS 2014.
  """
  num_samples, key, dist, gradient = _prepare(
    "elbo", log_joint, dist, key, num_samples, gradient, ELBO_GRADIENTS
  )
  if gradient in _REPARAMETERIZED_ONLY:
    _check_reparameterized(dist, "elbo", gradient, "score_function")
    if baseline is not None:
      raise ValueError(
        f"`baseline` applies to gradient='score_function' only; got "
        f"baseline={baseline!r} with gradient={gradient!r}. Remove it."
      )
  example = jax.eval_shape(lambda k: dist.sample(k), key)
  _check_log_joint(log_joint, example, "elbo")
  cost = lambda z: log_joint(z) - dist.log_prob(z)
  layers: dict[str, Any] = dict(chunk_size=chunk_size, sharding=sharding)
  if gradient == "pathwise":
    return _front_door.expectation(
      cost, dist, key, num_samples=num_samples, estimator="pathwise", **layers
    )
  if gradient == "score_function":
    return _front_door.expectation(
      cost,
      dist,
      key,
      num_samples=num_samples,
      estimator="score_function",
      baseline=baseline,
      **layers,
    )
  if chunk_size is not None or sharding is not None:
    raise ValueError(
      "`chunk_size` and `sharding` apply to gradient='pathwise' and 'score_function' "
      f"of scoregrad.vi.elbo; got chunk_size={chunk_size!r}, sharding={sharding!r} with "
      "gradient='stl'. Remove them, or use gradient='pathwise'."
    )
  return _doubly_reparameterized(log_joint, dist, key, num_samples, alpha=None)


def iwae(
  log_joint: Callable[[jax.Array], jax.Array],
  dist: Any,
  key: jax.Array,
  *,
  num_samples: int,
  gradient: str = "pathwise",
  num_outer: Optional[int] = None,
) -> jax.Array:
  r"""The importance-weighted bound log (1/K) Σ_k p(x, z_k)/q(z_k), differentiable by ``gradient``.

  The value is L̂_K = logsumexp_k(log w_k) − log K with log w_k = log p(x,
  z_k) − log q(z_k), z_1..K ~ q = ``dist`` (Burda et al. 2016), whose
  expectation lower-bounds log Z and increases with K. ``jax.grad`` of it
  is the chosen estimator of ∇E[L̂_K] (see :mod:`scoregrad.vi`):

  * ``"pathwise"``: reparameterization; every derivative order unbiased.
    Its encoder signal-to-noise ratio falls like 1/√K (Rainforth et al. 2018).
  * ``"dreg"``: doubly reparameterized, Σ_k w̃_k² ∂z log w_k ∂θ z_k for
    q's parameters (Tucker et al. 2019), no SNR decay in K; first
    derivatives only. At K = 1 it is sticking the landing.
  * ``"vimco"``: the score function with VIMCO's leave-one-out baselines
    (Mnih & Rezende 2016), for guides that are not reparameterized (K ≥ 2);
    first derivatives only.

  Model parameters that ``log_joint`` closes over get Σ_k w̃_k ∇ log p(x, z_k)
  in every case.

  Args:
    log_joint: ``log_joint(z) -> scalar`` for ONE latent sample z.
    dist: the proposal/guide q, built from the parameters being differentiated.
    key: a PRNG key.
    num_samples: K ≥ 1 (≥ 2 for ``"vimco"``), a Python int.
    gradient: ``"pathwise"`` (default), ``"dreg"`` or ``"vimco"``.
    num_outer: ``None`` (default) for one bound, a scalar; or a Python int M
      for M independent K-sample bounds, shape (M,) (``jnp.mean`` of it for
      a loss; ``jax.jacrev`` of it gives M independent gradient estimates,
      for variance and SNR diagnostics).

  Returns:
    A scalar, or shape (num_outer,).

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> log_joint = lambda z: -0.5 * jnp.sum(z**2) - 0.5 * jnp.sum((1.0 - z) ** 2)
    >>> def loss(params, key):
    ...   q = sg.dists.Normal(params["loc"], jnp.exp(params["log_scale"]))
    ...   return -sg.vi.iwae(log_joint, q, key, num_samples=16, gradient="dreg")
    >>> params = {"loc": jnp.zeros(2), "log_scale": jnp.zeros(2)}
    >>> g = jax.grad(loss)(params, jax.random.key(0))

  References:
    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
    Tucker, Lawson, Gu & Maddison, "Doubly Reparameterized Gradient
    Estimators for Monte Carlo Objectives", ICLR 2019.
    Mnih & Rezende, "Variational Inference for Monte Carlo Objectives", ICML 2016.
  """
  gradient = _check_gradient("iwae", gradient, IWAE_GRADIENTS)
  if gradient == "vimco":
    num_samples = check_positive_int(
      "num_samples",
      num_samples,
      minimum=2,
      why="VIMCO's baseline for each sample comes from the other samples. For one "
      "sample the bound is the ELBO: use scoregrad.vi.elbo(..., "
      "gradient='score_function').",
    )
  num_samples, key, dist, gradient = _prepare(
    "iwae", log_joint, dist, key, num_samples, gradient, IWAE_GRADIENTS
  )
  return _multi_sample("iwae", log_joint, dist, key, num_samples, gradient, num_outer, alpha=0.0)


def renyi(
  log_joint: Callable[[jax.Array], jax.Array],
  dist: Any,
  key: jax.Array,
  *,
  num_samples: int,
  alpha: float,
  gradient: str = "pathwise",
  num_outer: Optional[int] = None,
) -> jax.Array:
  r"""The Rényi-α bound (1/(1−α)) log (1/K) Σ_k w_k^{1−α}, differentiable by ``gradient``.

  The variational Rényi bound of Li & Turner (2016) with K samples: α = 0 is
  the IWAE bound, α → 1 the ELBO (α = 1 itself is refused: use
  :func:`elbo`); for α > 0 the expectation lies between the two (for
  0 < α < 1) and for α < 0 it may exceed log Z. ``gradient``:

  * ``"pathwise"``: reparameterization; every derivative order unbiased.
  * ``"dreg"``: doubly reparameterized, Σ_k (α ŵ_k + (1 − α) ŵ_k²)
    ∂z log w_k ∂θ z_k with ŵ = softmax((1 − α) log w), for q's parameters
    (derived from Tucker et al.'s identity as their IWAE case); first
    derivatives only.

  Args:
    log_joint: ``log_joint(z) -> scalar`` for ONE latent sample z.
    dist: the guide q, reparameterized, built from the parameters.
    key: a PRNG key.
    num_samples: K ≥ 1, a Python int.
    alpha: α, a Python float other than 1.
    gradient: ``"pathwise"`` (default) or ``"dreg"``.
    num_outer: ``None`` or M independent bounds (shape (M,)), as in :func:`iwae`.

  Returns:
    A scalar, or shape (num_outer,).

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> log_joint = lambda z: -0.5 * jnp.sum(z**2) - 0.5 * jnp.sum((1.0 - z) ** 2)
    >>> q = lambda p: sg.dists.Normal(p, 1.0)
    >>> g = jax.grad(lambda p: sg.vi.renyi(log_joint, q(p), jax.random.key(0),
    ...                                    num_samples=8, alpha=0.5))(jnp.zeros(2))

  References:
    Li & Turner, "Rényi Divergence Variational Inference", NeurIPS 2016.
    Tucker, Lawson, Gu & Maddison, ICLR 2019.
  """
  if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
    raise TypeError(
      f"`alpha` must be a finite Python float; got alpha={alpha!r}. It is a setting "
      "of the bound (α = 0: IWAE; α → 1: the ELBO)."
    )
  if float(alpha) == 1.0:
    raise ValueError(
      "`alpha` = 1 makes the Rényi bound the ELBO (a 0/0 limit here): use "
      "scoregrad.vi.elbo(log_joint, dist, key, num_samples=..., gradient='stl' or "
      "'pathwise') instead."
    )
  num_samples, key, dist, gradient = _prepare(
    "renyi", log_joint, dist, key, num_samples, gradient, RENYI_GRADIENTS
  )
  return _multi_sample(
    "renyi", log_joint, dist, key, num_samples, gradient, num_outer, alpha=float(alpha)
  )


def _multi_sample(function, log_joint, dist, key, num_samples, gradient, num_outer, *, alpha):
  if gradient in _REPARAMETERIZED_ONLY:
    _check_reparameterized(dist, function, gradient, "vimco" if function == "iwae" else "pathwise")
  if num_outer is not None:
    num_outer = check_positive_int("num_outer", num_outer)
  example = jax.eval_shape(lambda k: dist.sample(k), key)
  _check_log_joint(log_joint, example, function)

  def one(k):
    if gradient == "pathwise":
      z = dist.sample(k, (num_samples,))
      return _bound(_log_weights(log_joint, dist, z), alpha)
    if gradient == "dreg":
      return _doubly_reparameterized(log_joint, dist, k, num_samples, alpha=alpha)
    return _vimco(log_joint, dist, k, num_samples)

  if num_outer is None:
    return one(key)
  return jax.vmap(one)(jax.random.split(key, num_outer))


def _bound(log_w: jax.Array, alpha: float) -> jax.Array:
  """(1/(1−α)) (logsumexp((1−α) log w) − log K); α = 0: the IWAE bound."""
  k = log_w.shape[0]
  if alpha == 0.0:
    return jax.nn.logsumexp(log_w) - math.log(k)
  return (jax.nn.logsumexp((1 - alpha) * log_w) - math.log(k)) / (1 - alpha)


def _doubly_reparameterized(log_joint, dist, key, num_samples, *, alpha):
  """STL (``alpha=None``: the ELBO) and DReG (IWAE ``alpha=0``, Rényi α).

  The value is the bound at the samples (held fixed); its first derivative is
  carried by :func:`gradient_carrier` on the anchors (z, log p(x, z̄)):

  * z (traced through the sampler, so in θ): cotangent c_k ∂z log w(z̄_k),
    with log w evaluated with q's parameters held fixed, c_k = 1/n (STL) or
    α ŵ_k + (1 − α) ŵ_k² (DReG);
  * log p(x, z̄_k) at the fixed samples (traced in what ``log_joint`` closes
    over): cotangent ŵ_k (1/n for the ELBO).

  Any second derivative reaching either anchor raises.
  """
  z = dist.sample(key, (num_samples,))
  fixed = jax.lax.stop_gradient(z)
  log_joint_fixed = jax.vmap(log_joint)(fixed)
  log_w = jax.lax.stop_gradient(log_joint_fixed - dist.log_prob(fixed))
  path = jax.vmap(jax.grad(lambda x: log_joint(x) - dist.log_prob(x)))(fixed)
  if alpha is None:
    name = "scoregrad.vi.elbo(..., gradient='stl')"
    value = jnp.mean(log_w)
    path_weights = jnp.full_like(log_w, 1.0 / num_samples)
    model_weights = path_weights
  else:
    name = "scoregrad.vi.iwae/renyi(..., gradient='dreg')"
    value = _bound(log_w, alpha)
    model_weights = jax.nn.softmax((1 - alpha) * log_w)
    path_weights = alpha * model_weights + (1 - alpha) * model_weights**2
  cotangent_z = jax.tree_util.tree_map(
    lambda g: g * jnp.reshape(path_weights, (-1,) + (1,) * (g.ndim - 1)).astype(g.dtype), path
  )
  carrier = gradient_carrier(
    (z, log_joint_fixed), (cotangent_z, model_weights), name, jnp.result_type(value)
  )
  return value + carrier


def _vimco(log_joint, dist, key, num_samples):
  """VIMCO (Mnih & Rezende 2016) on the IWAE bound, for any guide with a log_prob.

  value: L̂ at the fixed samples, differentiable in θ through log q(z̄) and in
  what ``log_joint`` closes over (the bound's derivative at fixed samples);
  plus the score term Σ_k (L̂ − L̂_{−k}) ∇θ log q(z̄_k) with VIMCO's
  leave-one-out bounds (:func:`leave_one_out_bounds`, shared with
  ``scoregrad.vimco``), carried first-order only.
  """
  fixed = jax.lax.stop_gradient(dist.sample(key, (num_samples,)))
  log_q = dist.log_prob(fixed)
  log_joint_fixed = jax.vmap(log_joint)(fixed)
  log_w = log_joint_fixed - log_q
  bound = _bound(log_w, 0.0)
  detached = jax.lax.stop_gradient(log_w)
  signal = _bound(detached, 0.0) - leave_one_out_bounds(detached)
  score = gradient_carrier(
    (log_q, log_joint_fixed),
    (signal, jnp.zeros_like(signal)),
    "scoregrad.vi.iwae(..., gradient='vimco')",
    jnp.result_type(bound),
  )
  # VIMCO's signal uses sample k itself (through L̂), so a DiCE form of this
  # term would be right at first order only: the carrier gives the first
  # derivative and refuses the second.
  return bound + score
