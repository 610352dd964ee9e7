"""THE derivative-order rule, and the primitives that keep it.

Every derivative of an estimate, of any order, is either unbiased or refused
with a clear error (DESIGN.md). Two tools:

* :func:`first_order_only` / :func:`gradient_carrier` mark gradients assembled
  from stop-gradient pieces (measure-valued, the discrete estimators,
  per-coordinate baselines): any further derivative raises at trace time.
* :func:`unit_box` is the magic box □(τ) = exp(τ − ⊥τ) as a primitive whose
  value is 1 without evaluating τ, with □'s derivatives of every order.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
import jax.numpy as jnp

PyTree = Any


# -- THE derivative-order rule -------------------------------------------------
#
# Every derivative of an estimate, of any order, is either unbiased or refused
# with a clear error. Estimators whose gradient is assembled from
# stop-gradient pieces (measure-valued, the discrete estimators, per-coordinate
# baselines) mark it with `first_order_only`; their `.value` gets
# `gradient_carrier`, whose first derivative is the estimator's gradient and
# whose second derivative is refused the same way.
#
# How: the marked gradient's tangent is the output of `_refuse_p`, a
# primitive that raises when it is transposed (reverse mode), differentiated,
# evaluated or compiled. JAX transposes and compiles only what an output
# needs, so `jax.grad(.value)` never touches it, while any derivative of
# `.grad` raises at trace or compile time. (Eager, un-jitted forward mode
# evaluates every tangent op by op, used or not: there `jax.jacfwd` of
# `.value` is refused too; under `jax.jit`, or with `jax.grad`, it works.)


def _refuse(*_, message, **__):
  raise NotImplementedError(message)


_refuse_p = Primitive("scoregrad_first_order_only")
_refuse_p.def_impl(lambda t, *, message: _refuse(message=message))
_refuse_p.def_abstract_eval(lambda t, *, message: t)
mlir.register_lowering(_refuse_p, lambda ctx, t, *, message: _refuse(message=message))
ad.primitive_jvps[_refuse_p] = lambda primals, tangents, *, message: _refuse(message=message)
ad.primitive_transposes[_refuse_p] = lambda ct, t, *, message: _refuse(message=message)
batching.primitive_batchers[_refuse_p] = lambda args, dims, *, message: (
  _refuse_p.bind(args[0], message=message),
  dims[0],
)


def _is_zero(t) -> bool:
  return isinstance(t, SymbolicZero)


def _live_leaves(tree):
  return [t for t in jax.tree_util.tree_leaves(tree, is_leaf=_is_zero) if not _is_zero(t)]


def higher_order_message(estimator: str) -> str:
  return (
    f"{estimator} estimates first derivatives only: its gradient is assembled "
    "from pieces that do not carry their own derivatives, so differentiating "
    "it again (jax.hessian, jax.jacfwd/jacrev or jax.grad of `.grad`, or a "
    "second derivative of `.value`) would be silently wrong, and scoregrad "
    "refuses. For derivatives of any order use "
    "scoregrad.score_function(num_samples=...) with no baseline or "
    "baselines.leave_one_out() (DiCE: unbiased at every order), "
    "scoregrad.pathwise(num_samples=...) for reparameterized families, or "
    "scoregrad.expectation(...). (If this was a first derivative of `.value` "
    "in eager jax.jacfwd, use jax.grad or jax.jit instead.)"
  )


# The primal of `_first_order_only` is `x` passed through `_guard_p`, which
# evaluates to `x` and raises when differentiated in its `anchor` operands.
# JAX's partial evaluation of `lax.scan`/`fori_loop` bodies (a derivative
# taken outside a loop whose body holds an estimate) inlines a custom JVP's
# primal for known inputs, dropping the rule; a plain `return x` would then
# make a second derivative through the loop a silent zero. The guard makes
# it the same clear error as everywhere else.


def _guard_jvp(primals, tangents, *, message):
  if any(type(t) is not ad.Zero for t in tangents[1:]):
    _refuse(message=message)
  return _guard_p.bind(*primals, message=message), ad.instantiate_zeros(tangents[0])


_guard_p = Primitive("scoregrad_first_order_guard")
_guard_p.def_impl(lambda x, *anchor, message: x)
_guard_p.def_abstract_eval(lambda x, *anchor, message: x)
mlir.register_lowering(_guard_p, lambda ctx, x, *anchor, message: [x])
ad.primitive_jvps[_guard_p] = _guard_jvp
batching.primitive_batchers[_guard_p] = lambda args, dims, *, message: (
  _guard_p.bind(*args, message=message),
  dims[0],
)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _first_order_only(message, x, anchor):
  anchors = [
    a for a in jax.tree_util.tree_leaves(anchor) if jnp.issubdtype(jnp.result_type(a), jnp.inexact)
  ]
  return jax.tree_util.tree_map(lambda p: _guard_p.bind(p, *anchors, message=message), x)


def _first_order_only_jvp(message, primals, tangents):
  x, _ = primals
  dx, danchor = tangents
  live = _live_leaves(danchor)
  if not live:  # differentiated in something else (e.g. REBAR's control): pass through
    return x, jax.tree_util.tree_map(
      lambda t, p: jnp.zeros_like(p) if _is_zero(t) else t, dx, x, is_leaf=_is_zero
    )
  # A tangent that depends on the anchor's tangent and refuses to be used.
  seed = sum(jnp.sum(t).real.astype(jnp.float32) for t in live) * 0.0
  return x, jax.tree_util.tree_map(
    lambda p: _refuse_p.bind(jnp.zeros_like(p) + seed.astype(p.dtype), message=message), x
  )


_first_order_only.defjvp(_first_order_only_jvp, symbolic_zeros=True)


def first_order_only(x: PyTree, anchor: PyTree, estimator: str) -> PyTree:
  """``x`` unchanged; using a derivative of it with respect to ``anchor`` raises.

  ``anchor`` holds what the estimate depends on (the distribution's
  parameters as functions of ``params``, the raw costs): a derivative of
  ``x`` that reaches it raises ``NotImplementedError``, naming ``estimator``
  and the alternatives.
  """
  return _first_order_only(higher_order_message(estimator), x, anchor)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _carrier(message, anchor, cotangent):
  del anchor, cotangent
  return jnp.zeros(())


def _carrier_jvp(message, primals, tangents):
  anchor, cotangent = primals
  danchor, _ = tangents
  cotangent = _first_order_only(message, cotangent, anchor)
  out = jnp.zeros(())
  leaves = jax.tree_util.tree_leaves(danchor, is_leaf=_is_zero)
  for d, c in zip(leaves, jax.tree_util.tree_leaves(cotangent)):
    if not _is_zero(d):
      out = out + jnp.vdot(d, c.astype(d.dtype)).real.astype(out.dtype)
  return jnp.zeros(()), out


_carrier.defjvp(_carrier_jvp, symbolic_zeros=True)


def gradient_carrier(anchor: PyTree, cotangent: PyTree, estimator: str, dtype=None) -> jax.Array:
  """A zero whose derivative is ⟨d anchor, cotangent⟩ (and whose second derivative raises).

  Added to ``Estimate.value`` by estimators whose samples do not depend
  differentiably on ``params``, so that ``jax.grad`` of ``.value`` is the
  estimator's own gradient (as DiCE makes it for the score function) and
  never a silent zero: the chain rule through ``anchor = η(params)`` and the
  estimator's per-η gradient ``cotangent`` give exactly ``Estimate.grad``.
  """
  out = _carrier(higher_order_message(estimator), anchor, jax.lax.stop_gradient(cotangent))
  return out if dtype is None else out.astype(dtype)


# -- the magic box at the fused limit -------------------------------------------
#
# DiCE's □(τ) = exp(τ − ⊥τ) has value 1 and ∂□ = □ ∂τ, so its derivatives of
# every order are □ times those of exp(τ) / exp(τ). Written literally
# (scoregrad.magic_box), XLA must evaluate τ to compute exp(τ − τ): one more
# forward pass of log p over the samples, and one (n, event) buffer, that a
# hand-written REINFORCE gradient does not pay. 0.1 avoided it with a custom
# JVP whose primal was ones_like(τ); JAX's partial evaluation of lax.scan /
# fori_loop bodies inlines a custom JVP's primal for known inputs and so
# dropped the second-order term inside loops. `unit_box` is instead a
# primitive: evaluated or compiled it is ones (τ's computation is then dead
# and XLA removes it), and its JVP rule, □(τ) · dτ, is written with the
# primitive itself, so every order of derivative — forward or reverse, inside
# loops, under vmap — is exp(τ − ⊥τ)'s. (Its value is 1 even where τ is ±inf
# or NaN; the estimators apply the NaN rule to the costs instead.)

_unit_box_p = Primitive("scoregrad_unit_box")
_unit_box_p.def_impl(lambda tau: jnp.ones_like(tau))
_unit_box_p.def_abstract_eval(lambda tau: jax.core.ShapedArray(tau.shape, tau.dtype))
mlir.register_lowering(
  _unit_box_p, mlir.lower_fun(lambda tau: jnp.ones_like(tau), multiple_results=False)
)
ad.primitive_jvps[_unit_box_p] = lambda primals, tangents: (
  _unit_box_p.bind(primals[0]),
  _unit_box_p.bind(primals[0]) * ad.instantiate_zeros(tangents[0]),
)
batching.primitive_batchers[_unit_box_p] = lambda args, dims: (_unit_box_p.bind(args[0]), dims[0])


def unit_box(tau: jax.Array) -> jax.Array:
  """□(τ) with value 1 and the derivatives of exp(τ − ⊥τ) at every order (see above)."""
  tau = jnp.asarray(tau)
  if not jnp.issubdtype(tau.dtype, jnp.inexact):
    tau = tau.astype(jnp.result_type(float))
  return _unit_box_p.bind(tau)
