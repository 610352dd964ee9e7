"""What an estimator that differentiates the cost needs of it: no jumps, and C² for Hessians.

The pathwise estimator (and every estimator whose unbiasedness rests on
∇x f: the relaxations, REBAR/RELAX) computes E[∇θ f(g(ε; θ))]. That equals
∇θ E[f(x)] only when f is continuous in x with a derivative almost
everywhere: a jump of size Δ on a surface S contributes the term
∫_S Δ · (∇θ x · n) p dS, which ``jax.grad`` of f cannot see (its derivative
is zero on each side). A digital option f(s) = 1[s > K] under the pathwise
estimator returns delta = vega = 0 exactly, while the true delta is
φ(d₂)/(S σ √T) (0.018762 for S = K = 100, r = 0.05, σ = 0.2, T = 1). In the
same way a *kink* (max(s − K, 0), abs, relu) is harmless for first
derivatives but makes f's derivative jump, so a second derivative (gamma:
exact φ(d₁)/(S σ √T), again 0.018762 there) is silently zero.

This module decides both structurally, at trace time, from the jaxpr of f
and of its forward-mode derivative (nothing is run), and is called from the
one place costs are checked (:func:`scoregrad._src.base.check_cost` with
``floating=True``):

* :func:`check_cost_smoothness` raises :class:`DiscontinuousCostError` when
  f has a jump (below), and returns f unchanged when f is smooth, or wrapped
  so that a *second* derivative of it with respect to x raises
  ``NotImplementedError`` when f is only C¹ (its derivative has a jump):
  the guard is on f's value, so second derivatives with respect to what f
  closes over (a strike K) are refused too.

**What is detected.** Every variable of the jaxpr gets one of three states:
independent of x, *continuous* in x (smooth or kinked), or *with a jump*.
A jump is created by an x-dependent operation whose value is piecewise
constant: a comparison or any other operation with a bool or integer result
(``>``, ``isfinite``, ``argmax``, ``astype(int)``), ``floor``, ``ceil``,
``round``, ``sign`` or ``rem``; and by a select (``jnp.where``, ``lax.cond``)
on an x-dependent predicate between branches that do not depend on x. It
propagates through every operation (``s + 1[s > K]`` has a jump), except
that

* a value gated by an order comparison of x — ``1[l > r] · v`` or
  ``jnp.where(l > r, v, 0)`` with v continuous — counts as continuous only
  when v is structurally l − r (or r − l, or l when r is 0), so that it is 0
  on both sides of the threshold: the kinks ``(s > K) * (s − K)``,
  ``jnp.where(s > K, s − K, 0.0)``, ``jnp.where(x > 0, x, 0)``. Any other
  gated value has a jump: the asset-or-nothing ``jnp.where(s > K, s, 0.0)``,
  the up-and-out barrier ``max(s_T − K, 0) · 1[max_t s_t < H]``;
* a select with an x-dependent predicate and two x-dependent branches
  (``leaky_relu``, ``elu``, Huber's loss), or one x-dependent branch against a
  non-zero constant (``jnp.interp``'s edges), a product of an x-dependent
  factor with a jump that is not an indicator of a comparison
  (``jnp.floor(x) * x``), count as continuous: structure cannot tell these
  from jumps;
* an x-dependent lookup (a gather or dynamic slice at an index computed
  from x) of a continuous or x-independent operand counts as continuous
  (``jnp.interp``, ``x[jnp.argmax(x)]``);
* ``stop_gradient`` hides its operand (numerical shifts as in logsumexp),
  and a select that passes x through only where x is NaN
  (``jnp.where(jnp.isnan(x), x, ...)``, as in ``jnp.heaviside``) counts as
  its other branch;
* a ``jax.custom_jvp``/``custom_vjp`` function is trusted: its output is
  continuous if an input is, and has a jump only if an input has.

So f is refused when the cost's value has a jump in this sense, or when
JAX's derivative of f is structurally independent of the tangent of x
while f's value depends on x (a derivative that is identically zero, as
:func:`scoregrad._src.discrete.relaxations.has_zero_derivative` decides for
the relaxations). Caught: ``jnp.where(s > K, 1.0, 0.0)``,
``(s > K).astype(float)``, ``jnp.heaviside(s − K, 0.5)``, ``jnp.floor``,
``jnp.sign``, ``jnp.round``, ``s + 1[s > K]``, ``lax.cond`` between
constants, ``stop_gradient(x)``, the asset-or-nothing ``jnp.where(s > K, s, 0.0)`` and
``(s > K) * s``, a barrier's knock-out indicator times its payoff. Not
caught (documented): a jump between two x-dependent branches
(``jnp.where(s > K, s, s − 1)``) or against a non-zero constant
(``jnp.where(s > K, s, 5.0)``), a conservative kink written otherwise
(``jnp.where(s > K, (s − K) ** 2, 0)`` is refused although continuous:
write it with ``jnp.maximum``), a lookup of a table at an index computed
from x (``table[jnp.floor(x).astype(int)]``).

f is C¹ only (second derivatives refused) when the jaxpr of its derivative
x ↦ ∂f(x)·t has a jump in the same sense, where in the derivative a
product with an x-dependent factor, a select on a comparison of x (other
than a NaN/inf guard, or a comparison of a positive-by-construction value
such as a sum of exponentials with 0) and a lookup at an x-dependent index
also keep or create a jump: ``max``, ``min``, ``clip``, ``abs``, ``relu``,
``jnp.where`` on a comparison of x, ``sort``, ``jnp.interp``. This is
conservative: a function with a continuous derivative written with such
selects (the smooth ``jax.scipy.stats.norm.cdf`` and ``jnp.sinc``, or
Huber's loss, whose second derivative jumps but has no delta) has its
second derivatives refused too, a clear error rather than a silent wrong
number.

If tracing f or its derivative fails, nothing is refused (f's own errors
surface where the estimator calls it).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.extend as jex
from jax.interpreters import ad, batching, mlir
import jax.numpy as jnp
import numpy as np

from scoregrad._src.derivative_order import _refuse_p
from scoregrad._src.validation import NotApplicableError

CONSTANT, CONTINUOUS, JUMP = 0, 1, 2


class DiscontinuousCostError(NotApplicableError):
  """The cost has a jump in x, which an estimator that differentiates f cannot see.

  A :class:`scoregrad.NotApplicableError` (a ``ValueError``), raised at trace
  time, so :func:`scoregrad.select` reports the candidate as skipped.
  """


class _State(NamedTuple):
  level: int  # CONSTANT, CONTINUOUS or JUMP
  origin: Optional[str] = None  # the primitive that created the jump
  nan_of: Optional[object] = None  # for `x != x`: the token of x


_C = _State(CONSTANT)
_S = _State(CONTINUOUS)

# Float-valued primitives whose value is piecewise constant (or, for rem, jumps).
_STEPS = frozenset({"floor", "ceil", "round", "sign", "rem", "nextafter"})
_HIDES = frozenset({"stop_gradient"})
_PRODUCTS = frozenset({"mul", "dot_general"})
_LOOKUPS = frozenset(
  {"gather", "dynamic_slice", "dynamic_update_slice", "scatter", "scatter-add", "scatter_add"}
)
_POSITIVE = frozenset({"exp", "exp2", "logistic"})
_KEEPS_POSITIVE = frozenset(
  {"add", "mul", "div", "reduce_sum", "max", "broadcast_in_dim", "reshape", "squeeze", "copy"}
  | {"convert_element_type", "expand_dims", "sqrt", "cumsum", "cumlogsumexp"}
)
_COMPARISONS = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})
# Predicates that only guard non-finite values (logaddexp's, logsumexp's).
_GUARDS = frozenset({"isnan", "isinf", "is_finite"})
_CALLS = frozenset(
  {"jit", "pjit", "closed_call", "core_call", "remat", "remat2", "checkpoint", "custom_lin"}
)


def _max(states) -> _State:
  best = _C
  for s in states:
    if s.level > best.level:
      best = s
  return _State(best.level, best.origin)


def _is_float(var) -> bool:
  return jnp.issubdtype(var.aval.dtype, jnp.inexact)


def _is_infinite_literal(v) -> bool:
  if not isinstance(v, jex.core.Literal):
    return False
  try:
    return bool(np.all(np.isinf(np.asarray(v.val))))
  except Exception:  # pylint: disable=broad-except
    return False


def _inner(eqn):
  inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
  if isinstance(inner, jex.core.ClosedJaxpr):
    return inner.jaxpr
  return inner if isinstance(inner, jex.core.Jaxpr) else None


_ORDER = frozenset({"lt", "le", "gt", "ge"})
_SAME_VALUE = frozenset(
  {"convert_element_type", "broadcast_in_dim", "reshape", "squeeze", "expand_dims", "copy"}
)


class _Structure:
  """What the value walk remembers across calls to tell a kink from a jump.

  Keyed by value tokens (a variable, or a literal): ``defs`` maps a value to
  the primitive and operand tokens that made it, ``compared`` an order
  comparison's output to its two operands.
  """

  def __init__(self):
    self.defs: dict = {}
    self.compared: dict = {}

  def strip(self, t):
    """The value ``t`` is a reshaped, broadcast or converted copy of."""
    while self.made_by(t) in _SAME_VALUE:
      t = self.defs[t][1][0]
    return t

  def made_by(self, t) -> Optional[str]:
    if isinstance(t, jex.core.Literal) or t is None:  # literals are unhashable, never defined
      return None
    found = self.defs.get(t)
    return found[0] if found else None

  def same(self, a, b, depth: int = 6) -> bool:
    """Is ``a`` the same value as ``b``: one variable, equal literals, or the same
    primitive with equal parameters applied to the same operands (``jnp.exp(z)``
    computed twice), compared ``depth`` equations deep."""
    a, b = self.strip(a), self.strip(b)
    if a is b:
      return True
    if isinstance(a, jex.core.Literal) and isinstance(b, jex.core.Literal):
      try:
        return bool(np.all(np.asarray(a.val) == np.asarray(b.val)))
      except Exception:  # pylint: disable=broad-except
        return False
    da, db = self.made_by(a), self.made_by(b)
    if depth == 0 or da is None or da != db:
      return False
    (_, args_a, params_a), (_, args_b, params_b) = self.defs[a], self.defs[b]
    try:
      if params_a != params_b:
        return False
    except Exception:  # pylint: disable=broad-except  (array-valued parameters)
      return False
    return len(args_a) == len(args_b) and all(
      self.same(x, y, depth - 1) for x, y in zip(args_a, args_b)
    )

  def is_zero(self, t) -> bool:
    t = self.strip(t)
    if not isinstance(t, jex.core.Literal):
      return False
    try:
      return bool(np.all(np.asarray(t.val) == 0))
    except Exception:  # pylint: disable=broad-except
      return False

  def vanishes_at(self, t, threshold) -> bool:
    """Is ``t`` structurally l − r (or r − l, or l when r is 0) for the comparison of l and r?

    Then ``1[l > r] · t`` and ``where(l > r, t, 0)`` are 0 on both sides of
    the threshold l = r: a kink (``(s > K) * (s − K)``), not a jump.
    """
    left, right = threshold
    t = self.strip(t)
    if self.made_by(t) == "neg":
      t = self.strip(self.defs[t][1][0])
    if self.made_by(t) == "sub":
      a, b = self.defs[t][1]
      return (self.same(a, left) and self.same(b, right)) or (
        self.same(a, right) and self.same(b, left)
      )
    return (self.same(t, left) and self.is_zero(right)) or (
      self.same(t, right) and self.is_zero(left)
    )

  def threshold(self, t):
    t = self.strip(t)
    return None if isinstance(t, jex.core.Literal) or t is None else self.compared.get(t)


def _gated(eqn, name: str, ins: list, tokens: list, structure: _Structure):
  """A value gated by an order comparison of x (select against 0, indicator product).

  ``jnp.where(l > r, v, 0)`` and ``1[l > r] · v`` with v continuous in x are
  continuous only if v is 0 at the threshold; structurally that is v = l − r
  (the kink ``jnp.where(s > K, s − K, 0)``). Anything else — an
  asset-or-nothing ``jnp.where(s > K, s, 0)``, a barrier
  ``max(s_T − K, 0) · 1[max_t s_t < H]``, a non-zero other branch — has a
  jump. Returns None where the rule does not apply (both branches depend on
  x, as in leaky_relu or Huber's loss: continuous, as before).
  """
  if name == "select_n":
    pred, cases = ins[0], ins[1:]
    threshold = structure.threshold(tokens[0])
    if threshold is None or not pred.level or pred.origin in _GUARDS:
      return None
    if any(c.level == JUMP for c in cases):
      return None
    dependent = [i for i, c in enumerate(cases) if c.level]
    if len(dependent) != 1:
      return None
    if not all(structure.is_zero(tokens[1 + i]) for i in range(len(cases)) if i not in dependent):
      return None  # a non-zero constant branch (jnp.interp's edges): continuous, as before
    if structure.vanishes_at(tokens[1 + dependent[0]], threshold):
      return [_S]
    return [_State(JUMP, "select_n")]
  if name == "mul" and len(ins) == 2:
    for i, j in ((0, 1), (1, 0)):
      threshold = structure.threshold(tokens[i])
      if threshold is not None and ins[i].level == JUMP and ins[j].level == CONTINUOUS:
        if structure.vanishes_at(tokens[j], threshold):
          return [_S]
        return [_State(JUMP, "mul")]
  return None


def _walk(
  jaxpr,
  states: list,
  tokens: list,
  lookups_jump: bool = False,
  structure: Optional[_Structure] = None,
) -> list:
  """The state of each output of ``jaxpr`` given its inputs' states (see the module doc).

  ``tokens`` identify the input values across calls (for the NaN pattern).
  ``lookups_jump`` is for the walk of f's derivative: there a lookup of an
  x-independent table at an x-dependent index has a jump (jnp.interp's slope
  jumps), a product with an x-dependent factor keeps the jump
  (1[x > K] · eˣ, the derivative of max(eˣ − K, 0)), and so does a select
  on a comparison of x (not on a NaN/inf guard) between x-dependent
  branches (the derivative of jnp.where(s > K, s − K, 0)).
  """
  structure = structure if structure is not None else _Structure()
  env: dict = {}
  tok: dict = {}
  for v, s, t in zip(jaxpr.invars, states, tokens):
    env[v], tok[v] = s, t

  def read(v):
    return _C if isinstance(v, jex.core.Literal) else env.get(v, _C)

  def token(v):
    # A literal is its own token (so a 0 passed into jnp.where's call is seen).
    return v if isinstance(v, jex.core.Literal) else tok.get(v, v)

  positive: set = set()  # variables > 0 by construction (exp, sums of exps)

  def is_positive(v):
    if isinstance(v, jex.core.Literal):
      try:
        return bool(np.all(np.asarray(v.val) > 0))
      except Exception:  # pylint: disable=broad-except
        return False
    return v in positive

  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    if name in _POSITIVE or (name in _KEEPS_POSITIVE and all(map(is_positive, eqn.invars))):
      positive.update(eqn.outvars)
    if (
      name in _COMPARISONS
      and any(map(is_positive, eqn.invars))
      and any(isinstance(v, jex.core.Literal) and not is_positive(v) for v in eqn.invars)
    ):
      outs = [_C]  # a positive value against 0 or below: constant (logsumexp's abs)
    else:
      in_tokens = [token(v) for v in eqn.invars]
      gated = None if lookups_jump else _gated(eqn, name, ins, in_tokens, structure)
      outs = (
        gated if gated is not None else _rule(eqn, name, ins, in_tokens, lookups_jump, structure)
      )
    for v in eqn.outvars:
      structure.defs[v] = (name, [token(u) for u in eqn.invars], eqn.params)
    if name in _ORDER and len(eqn.invars) == 2:
      structure.compared[eqn.outvars[0]] = (token(eqn.invars[0]), token(eqn.invars[1]))
    for v, s in zip(eqn.outvars, outs):
      if s.level > CONSTANT and not _is_float(v) and s.nan_of is None:
        s = _State(JUMP, s.origin if s.level == JUMP else name)
      env[v] = s
  return [read(v) for v in jaxpr.outvars]


def _rule(
  eqn, name: str, ins: list, tokens: list, lookups_jump: bool, structure: _Structure
) -> list:
  n_out = len(eqn.outvars)
  if not any(s.level for s in ins):
    return [_C] * n_out
  if name in _HIDES:
    return [_C] * n_out
  if name in _STEPS:
    return [_State(JUMP, ins[0].origin if ins[0].level == JUMP else name)] * n_out
  if name == "ne" and len(tokens) == 2 and tokens[0] is tokens[1] and tokens[0] is not None:
    return [_State(JUMP, "isnan", nan_of=tokens[0])]
  if name in _COMPARISONS and any(_is_infinite_literal(v) for v in eqn.invars):
    return [_State(JUMP, "isinf")]
  if name == "select_n":
    pred, cases = ins[0], ins[1:]
    if pred.nan_of is not None and len(cases) == 2 and tokens[2] is pred.nan_of:
      return [_max([cases[0]])]  # x passed through only where x is NaN
    if any(c.level == JUMP for c in cases):
      return [_max(cases)]
    if pred.level and all(c.level == CONSTANT for c in cases):
      return [_State(JUMP, pred.origin or "select_n")]
    if pred.level and lookups_jump and pred.origin not in _GUARDS:
      # In f's derivative, a branch on a comparison of x is a jump of f'.
      return [_State(JUMP, pred.origin or "select_n")]
    return [_max(cases)] if not pred.level else [_S]
  if name in _PRODUCTS and len(ins) == 2 and not lookups_jump:
    a, b = ins
    if JUMP in (a.level, b.level) and CONTINUOUS in (a.level, b.level):
      return [_S] * n_out
    return [_max(ins)] * n_out
  if name in _LOOKUPS:
    data = [s for s, v in zip(ins, eqn.invars) if _is_float(v)]
    index = [s for s, v in zip(ins, eqn.invars) if not _is_float(v)]
    data_state = _max(data)
    if any(s.level for s in index) and data_state.level != JUMP:
      if lookups_jump and data_state.level == CONSTANT:
        return [_State(JUMP, name)] * n_out
      return [_S] * n_out
    return [data_state] * n_out
  if name == "cond":
    index, operands = ins[0], ins[1:]
    per_branch = [
      _walk(b.jaxpr, operands, tokens[1:], lookups_jump, structure)
      for b in eqn.params.get("branches", ())
    ]
    if not per_branch:
      return [_max(ins)] * n_out
    outs = []
    for k in range(n_out):
      states = [b[k] for b in per_branch]
      if any(s.level == JUMP for s in states):
        outs.append(_max(states))
      elif index.level and all(s.level == CONSTANT for s in states):
        outs.append(_State(JUMP, index.origin or "cond"))
      else:
        outs.append(_S if index.level or any(s.level for s in states) else _C)
    return outs
  inner = _inner(eqn)
  if (
    name in _CALLS
    and inner is not None
    and len(inner.invars) == len(ins)
    and len(inner.outvars) == n_out
  ):
    return _walk(inner, ins, tokens, lookups_jump, structure)
  # Anything else (custom_jvp/custom_vjp calls, loops, unknown primitives):
  # the most severe state of its inputs.
  return [_max(ins)] * n_out


def _depends(jaxpr, flags: list) -> list:
  """For each output of ``jaxpr``: does it depend on the inputs flagged in ``flags``?

  Plain dataflow (stop_gradient included), following plain calls; any other
  equation with a flagged operand flags all its outputs.
  """
  live = {v for v, flag in zip(jaxpr.invars, flags) if flag}
  is_live = lambda v: not isinstance(v, jex.core.Literal) and v in live
  for eqn in jaxpr.eqns:
    ins = [is_live(v) for v in eqn.invars]
    if not any(ins):
      continue
    inner = _inner(eqn)
    if (
      eqn.primitive.name in _CALLS
      and inner is not None
      and len(inner.invars) == len(ins)
      and len(inner.outvars) == len(eqn.outvars)
    ):
      outs = _depends(inner, ins)
    else:
      outs = [True] * len(eqn.outvars)
    live.update(v for v, flag in zip(eqn.outvars, outs) if flag)
  return [is_live(v) for v in jaxpr.outvars]


def _float_split(example):
  leaves, treedef = jax.tree_util.tree_flatten(example)
  is_float = [jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) for leaf in leaves]
  return leaves, treedef, is_float


def _as_struct(leaf):
  return jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf))


class Smoothness(NamedTuple):
  """What the trace found: ``jump`` (the primitive that creates a jump in f's
  value, or ``"zero derivative"``), ``kink`` (the one in f's derivative)."""

  jump: Optional[str]
  kink: Optional[str]


def analyse(f: Callable, example: Any) -> Smoothness:
  """Traces f and x ↦ (f(x), ∂f(x)·t) at ``example``'s shapes; see the module doc."""
  leaves, treedef, is_float = _float_split(example)
  structs = [_as_struct(leaf) for leaf in leaves]
  floats = [s for s, fl in zip(structs, is_float) if fl]
  others = [s for s, fl in zip(structs, is_float) if not fl]
  if not floats:
    return Smoothness(None, None)

  def call(fl, ot):
    it_f, it_o = iter(fl), iter(ot)
    merged = [next(it_f) if flag else next(it_o) for flag in is_float]
    return jnp.asarray(f(jax.tree_util.tree_unflatten(treedef, merged)))

  def value_and_derivative(fl, ot, t):
    return jax.jvp(lambda v: call(v, ot), (fl,), (t,))

  try:
    primal = jax.make_jaxpr(call)(floats, others).jaxpr
    jvp = jax.make_jaxpr(value_and_derivative)(floats, others, floats).jaxpr
  except Exception:  # pylint: disable=broad-except  (f's own errors surface later)
    return Smoothness(None, None)
  nf, no = len(floats), len(others)
  if len(primal.outvars) != 1 or len(jvp.outvars) != 2:
    return Smoothness(None, None)
  fresh = lambda n: [object() for _ in range(n)]
  x_live = [_S] * nf + [_C] * no
  (value,) = _walk(primal, x_live, fresh(nf + no))
  jump = (value.origin or "select_n") if value.level == JUMP else None
  # The derivative's states with x live and t constant: its jumps are f's kinks.
  _, dy = _walk(jvp, x_live + [_C] * nf, fresh(2 * nf + no), lookups_jump=True)
  kink = (dy.origin or "select_n") if dy.level == JUMP else None
  if jump is None:
    y_uses_x = _depends(jvp, [True] * nf + [False] * (no + nf))[0]
    dy_uses_t = _depends(jvp, [False] * (nf + no) + [True] * nf)[1]
    if y_uses_x and not dy_uses_t:
      jump = "zero derivative"
  return Smoothness(jump, kink)


def _describe(f: Callable) -> str:
  name = getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or repr(f)
  return f"`f` ({name})"


def check_cost_smoothness(f: Callable, example: Any, *, where: str = "") -> Callable:
  """Raises if f has a jump in x; returns f, guarded against second derivatives if only C¹.

  ``example`` is one sample (arrays or ``ShapeDtypeStruct``s). At trace
  time, on shapes only.
  """
  found = analyse(f, example)
  context = f" ({where})" if where else ""
  if found.jump is not None:
    if found.jump == "zero derivative":
      how = "JAX's derivative of it is identically zero although its value depends on x"
    elif found.jump in ("select_n", "mul"):
      how = (
        f"a value is gated by a comparison of x (`{found.jump}`: jnp.where(l > r, v, 0) "
        "or 1[l > r] * v) and is not 0 where the comparison switches, e.g. an "
        "asset-or-nothing jnp.where(s > K, s, 0) or a barrier's knock-out "
        "max(s - K, 0) * (max(path) < H). A kink is recognised when v is l - r "
        "(jnp.where(s > K, s - K, 0)); if your f is continuous there, write it with "
        "jnp.maximum / jnp.minimum"
      )
    else:
      how = (
        f"its value depends on x through `{found.jump}`, which is piecewise constant "
        "(a comparison, jnp.where between constants, an integer or bool cast, floor, "
        "ceil, round, sign, heaviside...)"
      )
    raise DiscontinuousCostError(
      f"The cost {_describe(f)} has a jump in x{context}: {how}. An estimator that "
      "differentiates f needs f continuous in x (differentiable almost everywhere, "
      "no jumps): a jump contributes a term to ∇θ E[f(x)] (the jump's size times the "
      "rate at which θ moves the samples across it) that the derivative of f, zero "
      "on either side, cannot see, so the estimate would be silently wrong (for a "
      "digital option 1[s > K], pathwise gives delta = 0 instead of 0.0188). Use an "
      "estimator that does not differentiate f: "
      "scoregrad.score_function(num_samples=..., baseline=scoregrad.baselines."
      "leave_one_out()) (or sg.expectation(..., estimator='score_function')) or "
      "scoregrad.measure_valued(num_samples=...); or, if the jump is intended to be "
      "smoothed, write f with a continuous function (e.g. jax.nn.sigmoid((s - K) / h))."
    )
  if found.kink is not None:
    return _second_order_guarded(f, _kink_message(f, found.kink, where))
  return f


def _kink_message(f: Callable, kink: str, where: str) -> str:
  context = f" ({where})" if where else ""
  return (
    f"The cost {_describe(f)} is differentiable once but not twice in x{context}: "
    f"its derivative jumps (through `{kink}`: max, min, abs, relu, clip or a "
    "jnp.where between x-dependent branches, i.e. a kink), so a second derivative "
    "taken through f (jax.hessian of a pathwise expectation, jax.jacfwd/jacrev of "
    "pathwise `.grad`) would miss the kink's term and be silently wrong (for a "
    "call max(s - K, 0), gamma = 0 instead of 0.0188). scoregrad refuses: pathwise "
    "first derivatives need f in C¹ (kinks allowed), second derivatives need f in "
    "C². For second derivatives use scoregrad.expectation(..., "
    "estimator='score_function') or scoregrad.score_function(num_samples=...) "
    "(DiCE: unbiased at every order, f need not be differentiable), or a smooth "
    "cost (e.g. jax.nn.softplus in place of max)."
  )


# -- A second derivative through f refused -------------------------------------
#
# `_c1_p(y)` is y; its derivative is t · `_unit_p(y)`, where `_unit_p` is a
# primitive that evaluates to ones and raises when differentiated. So
# _c1(f(x)) has f's first derivatives (times one), and any second
# derivative through it differentiates `_unit_p` and raises at trace time.


def _raise(message: str):
  raise NotImplementedError(message)


def _unit_impl(x, *, message):
  del message
  return jnp.ones_like(x)


_unit_p = jex.core.Primitive("scoregrad_c1_unit")
_unit_p.def_impl(_unit_impl)
_unit_p.def_abstract_eval(lambda x, *, message: x)
mlir.register_lowering(_unit_p, mlir.lower_fun(_unit_impl, multiple_results=False))


def _unit_jvp(primals, tangents, *, message):
  # Not a raise here: JAX forms the tangents of everything an outer
  # derivative traces, used or not (jax.grad of a pathwise `.value` traces
  # the inner gradient's backward pass too). The tangent is the output of the
  # derivative-order rule's refusing primitive, which raises only when it is
  # used (transposed, evaluated or compiled), as `first_order_only` does.
  (x,), (t,) = primals, tangents
  seed = jnp.zeros_like(x) + 0.0 * ad.instantiate_zeros(t)
  return _unit_p.bind(x, message=message), _refuse_p.bind(seed, message=message)


ad.primitive_jvps[_unit_p] = _unit_jvp
batching.primitive_batchers[_unit_p] = lambda args, dims, *, message: (
  _unit_p.bind(args[0], message=message),
  dims[0],
)


def _c1_jvp(primals, tangents, *, message):
  (x,), (t,) = primals, tangents
  out = _c1_p.bind(x, message=message)
  if type(t) is ad.Zero:
    return out, t
  return out, t * _unit_p.bind(x, message=message)


_c1_p = jex.core.Primitive("scoregrad_c1")
_c1_p.def_impl(lambda x, *, message: x)
_c1_p.def_abstract_eval(lambda x, *, message: x)
mlir.register_lowering(_c1_p, lambda ctx, x, *, message: [x])
ad.primitive_jvps[_c1_p] = _c1_jvp
batching.primitive_batchers[_c1_p] = lambda args, dims, *, message: (
  _c1_p.bind(args[0], message=message),
  dims[0],
)


def _second_order_guarded(f: Callable, message: str) -> Callable:
  """f, with any second derivative taken through its value refused.

  The guard sits on f's output, so a second derivative with respect to what
  f closes over (the strike K of max(s − K, 0)) is refused as well as one
  through the samples.
  """

  @functools.wraps(f)
  def guarded(x):
    y = f(x)
    if jnp.issubdtype(jnp.result_type(y), jnp.inexact):
      return _c1_p.bind(jnp.asarray(y), message=message)
    return y

  return guarded
