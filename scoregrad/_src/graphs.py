"""Stochastic computation graphs: sample sites in a program, the surrogate built for you.

Write the model as ONE program ``program(params, key)`` that draws its random
variables with :func:`sample` and reports its costs with :func:`cost` (and/or
returns a scalar cost). :func:`surrogate` turns it into a function
``(params, key) -> scalar`` whose value is the program's total cost, whose
``jax.grad`` is an unbiased gradient estimate of ∇θ E[cost] and whose higher
derivatives (``jax.hessian``) are unbiased too.

The surrogate (Schulman et al. 2015; DiCE, Foerster et al. 2018; baselines
of Mao et al. 2019). Let S be the score-function sites, τ_s = log p(x_s | pa_s; θ)
with the sample x_s held fixed, and for every cost term c let A(c) ⊆ S be the
score-function sites among the stochastic ancestors of c (found from the
program's data flow, through other sites' parameters, transitively). Then

    L = Σ_c □(Σ_{s ∈ A(c)} τ_s) · c  +  Σ_{s ∈ S} (1 − □(τ_s)) · □(Σ_{s' ∈ A(s)} τ_s') · ⊥b_s,

with □(τ) = exp(τ − ⊥τ) (value 1, ∇□ = □∇τ) and ⊥ the stop-gradient. A site's
log-probability multiplies only the costs downstream of it (dependency-aware
credit), so a cost that does not depend on a site adds no noise to that
site's score term. The k-th derivative of E[L] is ∇ᵏ E[cost] for every k:
□ of a set of ancestrally closed sites turns the sample into an importance
weight p_θ/p_θ₀ evaluated at θ = θ₀, and each baseline term has expectation
0 as a function of θ, because b_s depends only on non-descendants of s.

Per-site estimators (``sample(..., estimator=...)``):

* ``"pathwise"`` (the default for reparameterized families): the sample is a
  differentiable function of θ, no score term;
* ``"score_function"`` (the default otherwise): the sample is held fixed and
  τ_s enters the magic boxes above, with the site's baseline;
* ``"exact"``: for a small discrete site (Bernoulli, Categorical), every
  configuration k is enumerated (the rest of the program runs once per
  configuration, vmapped) and weighted by its probability p_θ(x_s = k | pa_s):
  L = Σ_k p_k L_k, exact at every order in that site;
* ``"disarm"``: a factorised Bernoulli site gets DisARM (Dong et al. 2020).
  With m disarm sites the program runs m + 1 times per sample: run 0 draws
  every disarm site at b, run j + 1 redraws site j alone at its antithetic b̃
  (same noise everywhere else, so a downstream disarm site follows its new
  parents through its own uniforms); L is the mean over the m + 1 runs (each
  is a draw of the program) and site j's logits get
  ½ (C(b) − C(b̃)) (−1)^{b̃_i} 1[b_i ≠ b̃_i] σ(|α_i|) from runs 0 and j + 1, for
  the costs C downstream of it (for m = 1: the pair, L its mean). With
  ``"exact"`` sites, C in each run is the probability-weighted sum over
  their configurations. First-order only (a second derivative raises);
* ``"measure_valued"``: a site whose family has a weak derivative (Normal,
  Laplace, Bernoulli, Categorical, Poisson, Exponential, Gamma rate; Mohamed
  et al. 2020, Section 6) keeps its sample fixed (no score term) and its own
  parameters η get the weak-derivative estimate
  ∂η_j E[C] ≈ c_j (C(x ⊕_j x⁺_j) − C(x ⊕_j x⁻_j)), where C is the sum of
  the costs downstream of the site and C(x') reruns the rest of the program
  with the site's value replaced by x' and the same downstream noise (the
  same keys). The chain rule through η(params, parents) gives the gradient;
  everything else in the program keeps its own estimator. Costs about 2·d
  extra runs of the program per site of size d (Categorical: d·K);
  first-order only (a second derivative raises); not combined with
  ``"exact"`` or ``"disarm"`` sites;
* ``"rodeo"``: a factorised Bernoulli site gets RODEO (Shi et al. 2022): the
  program runs K times per sample, run r with the site's r-th of K
  independent draws (same noise everywhere else); L is the mean over the K
  runs and the site's logits get :func:`scoregrad.rodeo`'s estimate on the K
  draws, with f the costs downstream of the site and ∇f their derivative in
  the draw (the rest of the program rerun with the site's value open to
  ``jax.grad``). Its control variates (α, β, ρ) are learned in the state, so
  the surrogate is built with ``surrogate(program, rodeo=dict(num_samples=K,
  ...))`` and called as ``fn(params, key, state) -> (value, state)``. One
  such site per program, without exact, disarm or measure-valued sites;
  first-order only.

Baselines per score-function site: ``baselines.leave_one_out()`` across the
``num_samples`` independent runs of the program (b_s for run i is the mean
over the other runs of the costs downstream of s), ``baselines.constant``,
``baselines.moving_average`` (stateful: then the surrogate takes and returns
a state), or a callable ``b(values) -> scalar`` of the values of the site's
non-descendant sites (a learned baseline; it is stop-gradiented).

Relation to other libraries: Pyro's ``TraceGraph_ELBO`` builds the same
dependency-aware surrogate (first order) for ELBOs with baselines per site;
NumPyro's ``TraceGraph_ELBO`` has no baselines. Storchastic (PyTorch; van
Krieken et al. 2021) adds per-site estimator choice and any-order
derivatives, which this module brings to JAX, with dependencies found from
the traced jaxpr rather than from a tensor wrapper.

References:
  Schulman, Heess, Weber & Abbeel, "Gradient Estimation Using Stochastic
  Computation Graphs", NeurIPS 2015.
  Foerster et al., "DiCE: The Infinitely Differentiable Monte Carlo
  Estimator", ICML 2018.
  Mao et al., "A Baseline for Any Order Gradient Estimation in Stochastic
  Computation Graphs", ICML 2019.
  van Krieken, Tomczak & ten Teije, "Storchastic: A Framework for General
  Stochastic Automatic Differentiation", NeurIPS 2021.
  Dong, Mnih & Tucker, "DisARM: An Antithetic Gradient Estimator for Binary
  Latent Variables", NeurIPS 2020.
  Shi, Zhou, Hwang, Titsias & Mackey, "Gradient Estimation with Discrete
  Stein Operators", NeurIPS 2022.
  Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in
  Machine Learning", JMLR 2020.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NamedTuple, Optional, Union, cast

import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
import numpy as np
import optax

from scoregrad import dists as _dists
from scoregrad._src import baselines as _baselines
from scoregrad._src.base import check_state, gradient_carrier
from scoregrad._src.discrete import stein as _stein
from scoregrad._src.discrete.rebar_relax import control_optimizer
from scoregrad._src.surrogates import magic_box
from scoregrad._src.validation import check_key, check_positive_int
from scoregrad._src.weak_derivative import dependence, has_weak_derivative, weak_derivative_terms
from scoregrad.dists._base import check_reparameterized, families_with

ESTIMATORS = ("score_function", "pathwise", "exact", "disarm", "measure_valued", "rodeo")
RETURN_NAME = "<return value>"

# -- the handler stack ---------------------------------------------------------
#
# ``surrogate`` runs the program inside a handler that records every site and
# cost term. Outside any handler ``sample`` is a plain ``dist.sample(key)`` and
# ``cost`` returns its value: the program then runs forward as ordinary JAX.

_STACK: list[_Handler] = []
_FIXED: list[dict] = [{}]  # tests: hold chosen sites at chosen values (see _fixed)


class _fixed:
  """Private (for exact tests): sites named in ``values`` take those values,
  held fixed, instead of sampling, in every surrogate traced inside."""

  def __init__(self, values):
    self.values = dict(values)

  def __enter__(self):
    _FIXED.append(self.values)

  def __exit__(self, *exc):
    _FIXED.remove(self.values)
    return False


class _SiteRecord(NamedTuple):
  name: str
  estimator: str
  value: Any
  log_prob: jax.Array
  dist: Any
  pair: Any = None  # disarm: (logits, b, b̃)


class _Handler:
  """Records sites and costs of one run of the program; substitutes values."""

  def __init__(
    self,
    substitutes: Mapping[str, Any],
    branches: Optional[Mapping[str, Any]] = None,
    open_site: Optional[str] = None,
  ):
    self.substitutes = dict(substitutes)
    self.branches = dict(branches or {})
    self.open_site = open_site  # a substituted site left differentiable (RODEO's ∇f)
    self.sites: dict[str, _SiteRecord] = {}
    self.costs: dict[str, jax.Array] = {}
    self._keys: list[tuple[Any, str]] = []
    self._trace = jex_core.get_opaque_trace_state()

  def _check_trace(self, name: str, kind: str) -> None:
    if jex_core.get_opaque_trace_state() != self._trace:
      raise ValueError(
        f"The {kind} {name!r} is inside a jax.vmap, lax.scan, lax.cond or another "
        "transformation within the program; sg.sample and sg.cost must be called at "
        "the program's top level. Use vectorised distributions (one site for a whole "
        "array), a Python loop with one name per step, or surrogate(..., "
        "num_samples=...) for independent repetitions."
      )

  def __enter__(self):
    _STACK.append(self)
    return self

  def __exit__(self, *exc):
    _STACK.remove(self)
    return False

  def _check_name(self, name: str, kind: str) -> None:
    if name in self.sites or name in self.costs:
      other = "sample site" if name in self.sites else "cost term"
      raise ValueError(
        f"The name {name!r} is used twice in the program: a {kind} and an earlier "
        f"{other} are both called {name!r}. Every sg.sample and sg.cost needs its "
        'own name; in a Python loop use e.g. f"z{t}".'
      )

  def sample(self, name, dist, key, estimator):
    self._check_trace(name, "sample site")
    self._check_name(name, "sample site")
    for used, owner in self._keys:
      if used is key:
        raise ValueError(
          f"Site {name!r} was given the same key object as site {owner!r}: their "
          "samples would be correlated (identical noise). Split the key, e.g. "
          "`k1, k2 = jax.random.split(key)`, and give each site its own. (Reuse is "
          "detected for the same key object only; keys equal in value but "
          "computed separately cannot be told apart while tracing.)"
        )
    self._keys.append((key, name))
    estimator = _resolve_estimator(name, dist, estimator)
    pair = None
    if name in self.substitutes:
      value = self.substitutes[name]
    elif name in self.branches and estimator == "rodeo":  # RODEO: branch r, draw r
      value = dist.sample(jax.random.fold_in(key, self.branches[name]))
      pair = (jnp.asarray(dist.logits),)
    elif name in self.branches:  # disarm: branch 0 draws b, branch 1 its antithetic b̃
      logits = jnp.asarray(dist.logits)
      u = jax.random.uniform(key, logits.shape, logits.dtype)
      b, b_tilde = dist.antithetic_pair(u, jax.lax.stop_gradient(logits))
      value = jnp.where(self.branches[name] > 0, b_tilde, b)
      pair = (logits, b, b_tilde)
    elif name in _FIXED[-1]:
      value = jax.lax.stop_gradient(jnp.asarray(_FIXED[-1][name]))
    else:
      value = dist.sample(key)
    if estimator != "pathwise" and name != self.open_site:
      value = jax.lax.stop_gradient(value)
    log_prob = jnp.asarray(dist.log_prob(jax.lax.stop_gradient(value)))
    if log_prob.shape != ():
      raise ValueError(
        f"Site {name!r}: `dist.log_prob(x)` of one sample must be a scalar (summed "
        f"over the event); it has shape {log_prob.shape}. scoregrad.dists sum over "
        "every dimension of their parameters; wrap other distributions with "
        "scoregrad.dists.from_log_prob."
      )
    self.sites[name] = _SiteRecord(name, estimator, value, log_prob, dist, pair)
    return value

  def cost(self, name, value):
    self._check_trace(name, "cost term")
    self._check_name(name, "cost term")
    value = _check_scalar_cost(value, f"sg.cost({name!r}, value)")
    self.costs[name] = value
    return value


def _check_scalar_cost(value, where: str) -> jax.Array:
  try:
    arr = jnp.asarray(value)
  except TypeError:
    raise TypeError(
      f"{where}: a cost must be a scalar array; got {value!r} of type {type(value).__name__}."
    ) from None
  if arr.shape != ():
    raise ValueError(
      f"{where}: a cost must be a scalar; got shape {arr.shape}. Reduce it, e.g. "
      "`jnp.sum(...)`, or report several terms with their own sg.cost names "
      "(each term then gets only its own ancestors' credit)."
    )
  return arr


# The discrete per-site estimators: (family fact they need, what, alternatives).
_DISCRETE_SITES = {
  "exact": (
    "enumerate_configurations",
    "enumerates a discrete distribution's configurations (one that cannot be enumerated "
    "is refused)",
    "estimator='score_function' instead",
  ),
  "disarm": (
    "antithetic_pair",
    "needs a factorised Bernoulli",
    "estimator='score_function' or, for small sites, estimator='exact'",
  ),
  "rodeo": (
    "gibbs_flips",
    "needs a factorised Bernoulli",
    "estimator='score_function', 'disarm' (Bernoulli) or, for small sites, 'exact'",
  ),
}


def _resolve_estimator(name: str, dist, estimator: Optional[str]) -> str:
  if estimator is None:
    return "pathwise" if getattr(dist, "reparameterized", False) else "score_function"
  if estimator not in ESTIMATORS:
    raise ValueError(
      f"Site {name!r}: `estimator` must be one of {ESTIMATORS} or None (pathwise "
      f"for reparameterized distributions, else score_function); got "
      f"estimator={estimator!r}."
    )
  if estimator == "pathwise":
    check_reparameterized(dist, f"dist of site {name!r}")
  if estimator in _DISCRETE_SITES:
    fact, needs, instead = _DISCRETE_SITES[estimator]
    if not (callable(getattr(dist, fact, None)) and hasattr(dist, "logits")):
      raise ValueError(
        f"Site {name!r}: estimator={estimator!r} {needs}; got {type(dist).__name__}. "
        f"Families that support it: {', '.join(families_with(fact))}. Use {instead}."
      )
  if estimator == "measure_valued" and not has_weak_derivative(dist):
    raise ValueError(
      f"Site {name!r}: estimator='measure_valued' needs a weak-derivative "
      f"decomposition of the site's family; {type(dist).__name__} has none. "
      f"Families that have one: {', '.join(families_with('weak_derivative'))}. Use "
      "estimator='score_function' (any distribution) or 'pathwise' (reparameterized)."
    )
  if estimator == "score_function" and getattr(dist, "score_function_order", None) == 1:
    raise ValueError(
      f"Site {name!r}: {type(dist).__name__}.log_prob is differentiable once only, so "
      "the surrogate's higher derivatives would be silently wrong at a "
      "score-function site. Use estimator='pathwise' (it is reparameterized)."
    )
  return estimator


def sample(name: str, dist: Any, key: jax.Array, *, estimator: Optional[str] = None):
  """A sample site: draws ``x ~ dist`` and marks it for :func:`surrogate`.

  Inside ``surrogate(program)`` the site is recorded under ``name`` with its
  gradient estimator; outside any surrogate it is a plain
  ``dist.sample(key)`` (so the program also runs forward as ordinary JAX code,
  e.g. to simulate data), and ``estimator`` is only validated.

  Requirements: every site has its own name and its own key (split the
  program's key; passing one key object to two sites is an error). Sites may
  not be inside a ``jax.vmap``/``lax.scan``/``lax.cond`` within the program:
  use vectorised distributions, a Python loop, or ``surrogate(...,
  num_samples=...)``.

  Args:
    name: a unique string naming the site.
    dist: a distribution (scoregrad.dists, or NumPyro/distrax/TFP-on-JAX), whose
      parameters may depend on ``params`` and on earlier sites' samples.
    key: a PRNG key, used by this site only.
    estimator: ``None`` (pathwise if ``dist.reparameterized``, else
      score_function), ``"pathwise"``, ``"score_function"``, ``"exact"``
      (enumerate a small Bernoulli/Categorical site), ``"disarm"`` (a
      Bernoulli site; first-order only), ``"measure_valued"`` (a family
      with a weak derivative; first-order only) or ``"rodeo"`` (a Bernoulli
      site; needs ``surrogate(..., rodeo=dict(num_samples=K))``; first-order
      only).

  Returns:
    The sample (held fixed, i.e. stop-gradiented, unless pathwise).

  Example:
    >>> import jax, scoregrad as sg
    >>> x = sg.sample("x", sg.dists.Normal(0.0, 1.0), jax.random.key(0))
  """
  if not isinstance(name, str) or not name:
    raise TypeError(f"`name` of sg.sample must be a non-empty str; got {name!r}.")
  dist = _dists.as_distribution(dist, name=f"dist of site {name!r}")
  key = check_key(key, f"key of site {name!r}")
  if not _STACK:
    _resolve_estimator(name, dist, estimator)
    return dist.sample(key)
  return _STACK[-1].sample(name, dist, key, estimator)


def cost(name: str, value: Any) -> jax.Array:
  """A named scalar cost term of the program; returns ``value``.

  The surrogate's value is the sum of all cost terms (plus the program's
  return value when it is a scalar); each term gets credit only from the
  sites it depends on. Outside :func:`surrogate` it just returns ``value``.

  Example:
    >>> import scoregrad as sg
    >>> sg.cost("penalty", 0.5)
    0.5
  """
  if not isinstance(name, str) or not name:
    raise TypeError(f"`name` of sg.cost must be a non-empty str; got {name!r}.")
  if not _STACK:
    _check_scalar_cost(value, f"sg.cost({name!r}, value)")
    return value
  return _STACK[-1].cost(name, value)


# -- running the program -------------------------------------------------------


def _run(program, params, key, substitutes, branches=None, open_site=None) -> _Handler:
  with _Handler(substitutes, branches, open_site) as handler:
    out = program(params, key)
  if out is not None:
    out = _check_scalar_cost(
      out, "The program's return value (None, or a scalar cost added to the sg.cost terms)"
    )
    handler._check_name(RETURN_NAME, "return value")
    handler.costs[RETURN_NAME] = out
  if not handler.costs:
    raise ValueError(
      "The program reported no cost: return a scalar cost, or report terms with "
      "sg.cost(name, value)."
    )
  return handler


class _SiteInfo(NamedTuple):
  name: str
  estimator: str
  value: Any  # ShapeDtypeStruct pytree
  family: Any  # the distribution's class (for enumeration)
  logits_shape: Optional[tuple]
  logits_dtype: Any


class _Graph(NamedTuple):
  sites: tuple  # _SiteInfo, in program order
  cost_names: tuple
  ancestors: tuple  # per site: frozenset of indices of its stochastic ancestors
  cost_ancestors: tuple  # per cost: frozenset of site indices


def _abstract(tree):
  return jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree
  )


_CALLS = (
  "jit",
  "pjit",
  "closed_call",
  "core_call",
  "remat",
  "remat2",
  "checkpoint",
  "custom_jvp_call",
  "custom_vjp_call",
  "custom_vjp_call_jaxpr",
)


def _inner(eqn):
  """The sub-jaxpr of a call-like equation with the same inputs and outputs, or None."""
  if eqn.primitive.name not in _CALLS:
    return None
  for value in eqn.params.values():
    jaxpr = value.jaxpr if isinstance(value, jex_core.ClosedJaxpr) else value
    if (
      isinstance(jaxpr, jex_core.Jaxpr)
      and len(jaxpr.invars) == len(eqn.invars)
      and len(jaxpr.outvars) == len(eqn.outvars)
    ):
      return jaxpr
  return None


def _reach(jaxpr, labels: list) -> list:
  """Which input labels reach each output of ``jaxpr`` (data flow, conservative).

  An equation's outputs depend on all its inputs, except call-like equations
  (jit, checkpoint, custom_jvp/vjp), which are followed inside; loops and
  conditionals (scan, while, cond) are treated as one opaque equation, which
  can only add dependencies, never miss one (extra credit is still unbiased).
  """
  empty: frozenset[int] = frozenset()
  env = dict(zip(jaxpr.invars, labels))

  def read(v):
    return empty if isinstance(v, jex_core.Literal) else env.get(v, empty)

  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    sub = _inner(eqn)
    if sub is not None:
      outs = _reach(sub, ins)
    else:
      union = frozenset().union(*ins)
      outs = [union] * len(eqn.outvars)
    for v, l in zip(eqn.outvars, outs):
      env[v] = l
  return [read(v) for v in jaxpr.outvars]


def _analyse(program, params, key) -> _Graph:
  """Records the sites (shapes only) and finds their dependencies from the jaxpr."""
  params_a, key_a = _abstract(params), _abstract(key)
  found = []

  def record(p, k):
    h = _run(program, p, k, {})
    found.append(
      (
        [
          _SiteInfo(
            s.name,
            s.estimator,
            _abstract(s.value),
            type(s.dist),
            tuple(jnp.shape(s.dist.logits)) if s.estimator == "exact" else None,
            jnp.result_type(s.dist.logits) if s.estimator == "exact" else None,
          )
          for s in h.sites.values()
        ],
        tuple(h.costs),
      )
    )

  jax.eval_shape(record, params_a, key_a)
  sites, cost_names = found[0]
  names = [s.name for s in sites]

  def substituted(p, k, values):
    h = _run(program, p, k, dict(zip(names, values)))
    if tuple(h.costs) != cost_names or list(h.sites) != names:
      raise ValueError(
        "The program must record the same sites and costs on every run "
        "(no Python branching on random values)."
      )
    return [h.costs[c] for c in cost_names], [h.sites[n].log_prob for n in names]

  values = [s.value for s in sites]
  closed = jax.make_jaxpr(substituted)(params_a, key_a, values)
  n_fixed = len(jax.tree_util.tree_leaves((params_a, key_a)))
  labels: list[frozenset[int]] = [frozenset()] * n_fixed
  for i, v in enumerate(values):
    labels += [frozenset([i])] * len(jax.tree_util.tree_leaves(v))
  labels += [frozenset()] * (len(closed.jaxpr.invars) - len(labels))
  out = _reach(closed.jaxpr, labels)
  cost_deps, site_deps = out[: len(cost_names)], out[len(cost_names) :]
  ancestors: list[frozenset[int]] = []
  for i, deps in enumerate(site_deps):
    parents = deps - {i}
    ancestors.append(frozenset(parents).union(*[ancestors[j] for j in parents]))
  cost_ancestors = [frozenset(d).union(*[ancestors[j] for j in d]) for d in cost_deps]
  return _Graph(tuple(sites), cost_names, tuple(ancestors), tuple(cost_ancestors))


# -- the surrogate -------------------------------------------------------------

BaselineSpec = Union[None, _baselines.Baseline, Callable[[dict], jax.Array]]


def _check_baseline(name: str, spec, num_samples: Optional[int]):
  if spec is None or isinstance(spec, _baselines.Baseline):
    spec = _baselines.resolve(spec)
    _baselines.require_scalar(
      spec,
      where=f"surrogate() (site {name!r})",
      instead="Use leave_one_out(), constant(...), moving_average(...) or a callable "
      "baseline of the site's non-descendants.",
    )
    if spec.min_samples > 1 and num_samples is None:
      raise ValueError(
        f"`baseline={spec.name}` for site {name!r} averages over the other runs of the "
        "program: pass surrogate(..., num_samples=n) with n >= "
        f"{spec.min_samples}, or use moving_average(decay=0.9)."
      )
    if num_samples is not None:
      _baselines.check_num_samples(spec, num_samples)
    return spec
  if callable(spec):
    return spec
  raise TypeError(
    f"The baseline of site {name!r} must be a scoregrad.baselines.Baseline, a callable "
    f"`b(values) -> scalar` of the values of the site's non-descendant sites, or None; "
    f"got {spec!r}."
  )


class _RodeoConfig(NamedTuple):
  num_samples: int
  network: Callable
  control0: dict
  adapt: bool
  optimizer: Any

  def init(self):
    control = jax.tree_util.tree_map(
      lambda c: jnp.asarray(c, jnp.result_type(float)), self.control0
    )
    return _stein.RodeoState(
      control=control, opt_state=self.optimizer.init(control) if self.adapt else ()
    )


def _check_rodeo(rodeo) -> _RodeoConfig:
  allowed = {"num_samples", "hidden_size", "learning_rate", "optimizer"}
  if not isinstance(rodeo, Mapping) or "num_samples" not in rodeo or set(rodeo) - allowed:
    raise ValueError(
      "`rodeo` must be None or a dict with num_samples (K >= 2 draws of each rodeo "
      "site) and optionally hidden_size, learning_rate, optimizer (as in "
      f"scoregrad.rodeo); got rodeo={rodeo!r}."
    )
  k = _stein._check_num_samples(rodeo["num_samples"], "rodeo")
  network, rho = _stein.stein_network(rodeo.get("hidden_size", 100))
  adapt, optimizer = control_optimizer(
    rodeo.get("learning_rate"), rodeo.get("optimizer"), default=1e-3
  )
  return _RodeoConfig(k, network, {"alpha": 0.0, "beta": 0.0, "network": rho}, adapt, optimizer)


def _rodeo_carrier(name, family, config, draws, costs, cost_ancestors, i, state, new_state):
  """RODEO (Shi et al. 2022) for the logits of rodeo site ``i``: the zero that
  carries its gradient; writes the site's updated control state to ``new_state``.

  Each of the n runs holds K draws b_k of the site (the rest of the program with
  the same noise) with f_k the costs downstream of it and ∇f_k their
  derivative in b_k; ĝ is :func:`scoregrad.rodeo`'s estimate for the site's
  logits on those draws (unbiased for every control), and the controls (α, β,
  ρ) are learned by minimising the mean over runs of ‖ĝ‖² in logits space.
  """
  dtype = costs.dtype
  logits, b, grads = draws  # (n, K, *shape) each
  n, k = b.shape[0], b.shape[1]
  mask = jnp.asarray([float(i in a) for a in cost_ancestors], dtype)
  f = jax.lax.stop_gradient(costs @ mask)  # (n, K)
  flat = lambda x: jax.lax.stop_gradient(x).reshape(n, k, -1).astype(dtype)
  terms = _stein._rodeo_terms(config.network)
  site_logits = logits[:, 0]  # the same in every draw: the site's parents are shared
  shape = site_logits.shape[1:]

  def rows_of(control):
    ctrl = jax.tree_util.tree_map(lambda c: jnp.asarray(c).astype(dtype), control)
    one = lambda fi, gi, bi, li: terms(ctrl, _stein._Draws(fi, gi, bi, li, family))
    return jax.vmap(one)(
      f, flat(grads), flat(b), jax.lax.stop_gradient(site_logits).reshape(n, -1).astype(dtype)
    )  # (n, K, D)

  def objective(control):
    rows = rows_of(control)
    return jnp.mean(jnp.sum(jnp.square(jnp.mean(rows, axis=1)), axis=-1)), rows

  st = state[name]
  if config.adapt:
    (_, rows), g_control = jax.value_and_grad(objective, has_aux=True)(st.control)
    updates, opt_state = config.optimizer.update(g_control, st.opt_state, st.control)
    new_state[name] = _stein.RodeoState(optax.apply_updates(st.control, updates), opt_state)
  else:
    _, rows = objective(st.control)
  ghat = jnp.mean(rows, axis=1).reshape((n,) + shape)
  return gradient_carrier(site_logits, ghat / n, f"surrogate() with a rodeo site ({name!r})", dtype)


def surrogate(
  program: Callable[[Any, jax.Array], Any],
  *,
  num_samples: Optional[int] = None,
  baseline: Union[BaselineSpec, Mapping[str, BaselineSpec]] = None,
  max_configurations: int = 2**12,
  rodeo: Optional[Mapping[str, Any]] = None,
) -> Callable:
  r"""The DiCE surrogate of a program with sample sites: ``(params, key) -> scalar``.

  For ``program(params, key)`` that draws with :func:`sample` and reports costs
  with :func:`cost` (and/or returns a scalar cost), returns ``fn`` with

  * ``fn(params, key)`` = the program's total cost (the mean over
    ``num_samples`` independent runs, summed exactly over ``"exact"`` sites);
  * ``jax.grad(fn)`` an unbiased estimate of ∇θ E[cost], with per-site
    estimators and dependency-aware credit (see the module docstring for the
    surrogate L);
  * ``jax.hessian(fn)`` (any order) unbiased too; with a ``"disarm"``,
    ``"measure_valued"`` or ``"rodeo"`` site, first derivatives only (a
    second derivative raises at trace time).

  The program's return value, when not None, is a cost named
  ``"<return value>"`` (in ``fn.graph``).

  The dependencies are read from the traced program (jaxpr data flow), never
  declared. It works under ``jax.jit``, ``jax.vmap`` (over keys) and inside
  ``lax.scan`` training loops; the program is traced (not run) twice more to
  find the graph, at trace time.

  Args:
    program: ``program(params, key) -> None or scalar cost``.
    num_samples: ``None`` (one run) or an int ≥ 1: the program runs
      ``num_samples`` times (vmapped over split keys; a plate) and the
      surrogate is the mean; needed by ``leave_one_out``.
    baseline: for the score-function sites: one spec for all of them or a dict
      ``{site name: spec}`` (absent sites: none). A spec is ``None``, a scalar
      :mod:`scoregrad.baselines` baseline (``leave_one_out()``,
      ``constant(c)``, ``moving_average(decay)``), or a callable
      ``b(values) -> scalar`` receiving a dict of the samples of the site's
      non-descendant sites (held fixed). b_s estimates the sum of the costs
      downstream of s. With a stateful baseline the function is
      ``fn(params, key, state) -> (value, state)`` and ``fn.init(params, key)``
      gives the first state (use ``jax.grad(fn, has_aux=True)``).
    max_configurations: the most joint configurations of all ``"exact"``
      sites it will enumerate.
    rodeo: for a program with an ``estimator="rodeo"`` site: a dict with
      ``num_samples`` (K ≥ 2 draws of the site per run) and optionally
      ``hidden_size`` (default 100), ``learning_rate`` (Adam, default 1e-3;
      0 freezes the controls) or ``optimizer``, as in :func:`scoregrad.rodeo`.
      The function is then stateful: ``fn(params, key, state) -> (value,
      state)`` with ``state = fn.init(params, key)``, whose entry for the
      site is a :class:`scoregrad.RodeoState`.

  Returns:
    The surrogate function, with attributes ``init(params, key)`` (baseline
    state), ``graph(params, key)`` (a dict describing the sites, their
    estimators and which sites each cost depends on) and
    ``site_costs(params, key)`` (each site's samples and downstream costs, the
    regression data for a learned baseline).

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> def program(params, key):
    ...   k1, k2 = jax.random.split(key)
    ...   z = sg.sample("z", sg.dists.Bernoulli(logits=params["a"]), k1)
    ...   x = sg.sample("x", sg.dists.Normal(params["m"] * z, 1.0), k2)
    ...   sg.cost("fit", (x - 2.0) ** 2)
    ...   return 0.1 * z
    >>> loss = sg.surrogate(program, num_samples=8,
    ...                     baseline=sg.baselines.leave_one_out())
    >>> g = jax.grad(loss)({"a": jnp.array(0.0), "m": jnp.array(1.0)}, jax.random.key(0))

  References:
    Schulman et al. 2015; Foerster et al. 2018; Mao et al. 2019 (see module).
  """
  if not callable(program):
    raise TypeError(f"`program` must be a callable program(params, key); got {program!r}.")
  if num_samples is not None:
    num_samples = check_positive_int("num_samples", num_samples)
  max_configurations = check_positive_int("max_configurations", max_configurations)
  per_site = isinstance(baseline, Mapping)
  if per_site:
    specs = {
      n: _check_baseline(n, b, num_samples) for n, b in cast(Mapping[str, Any], baseline).items()
    }
  else:
    default = _check_baseline("every score-function site", baseline, num_samples)
  stateful_default = not per_site and isinstance(default, _baselines.Baseline) and default.stateful
  stateful = stateful_default or (
    per_site and any(isinstance(b, _baselines.Baseline) and b.stateful for b in specs.values())
  )
  rodeo_config = None if rodeo is None else _check_rodeo(rodeo)
  stateful = stateful or rodeo_config is not None

  def spec_of(name):
    if per_site:
      return specs.get(name, _baselines.none())
    return default

  def init(params, key):
    """The baselines' state, ``{site name: state}`` for the stateful ones (traces the
    program to find its score-function sites)."""
    g = _analyse(program, params, check_key(key))
    state = {
      s.name: spec_of(s.name).init()
      for s in g.sites
      if s.estimator == "score_function"
      and isinstance(spec_of(s.name), _baselines.Baseline)
      and spec_of(s.name).stateful
    }
    if rodeo_config is not None:
      state.update({s.name: rodeo_config.init() for s in g.sites if s.estimator == "rodeo"})
    return state

  def build(params, key, state):
    key = check_key(key)
    g = _analyse(program, params, key)
    sites = g.sites
    names = [s.name for s in sites]
    if per_site:
      unknown = sorted(set(specs) - set(names))
      if unknown:
        raise ValueError(
          f"`baseline` names sites {unknown} that the program does not have; its sites are {names}."
        )
    score = [i for i, s in enumerate(sites) if s.estimator == "score_function"]
    exact = [i for i, s in enumerate(sites) if s.estimator == "exact"]
    disarm = [i for i, s in enumerate(sites) if s.estimator == "disarm"]
    mvd = [i for i, s in enumerate(sites) if s.estimator == "measure_valued"]
    if mvd and (exact or disarm):
      raise ValueError(
        "estimator='measure_valued' sites cannot be combined with 'exact' or 'disarm' "
        f"sites in one program yet; got measure_valued sites {[names[i] for i in mvd]}, "
        f"exact sites {[names[i] for i in exact]} and disarm sites "
        f"{[names[i] for i in disarm]}. Use estimator='score_function' for one kind."
      )
    rodeo_sites = [i for i, s in enumerate(sites) if s.estimator == "rodeo"]
    if rodeo_sites and rodeo_config is None:
      raise ValueError(
        f"Site {names[rodeo_sites[0]]!r} uses estimator='rodeo', which learns its "
        "control variates in a state: build the surrogate with "
        "surrogate(program, rodeo=dict(num_samples=K)) (K >= 2 draws of the site; "
        "optional hidden_size, learning_rate, optimizer), get the state with "
        "fn.init(params, key) and call fn(params, key, state) -> (value, state)."
      )
    if len(rodeo_sites) > 1 or (rodeo_sites and (exact or disarm or mvd)):
      raise ValueError(
        "estimator='rodeo' is supported for one site per program, without 'exact', "
        f"'disarm' or 'measure_valued' sites; got rodeo sites "
        f"{[names[i] for i in rodeo_sites]}, exact {[names[i] for i in exact]}, disarm "
        f"{[names[i] for i in disarm]}, measure_valued {[names[i] for i in mvd]}. Use "
        "estimator='disarm' or 'score_function' for the others."
      )
    for i in rodeo_sites:
      if names[i] not in state:
        raise ValueError(
          f"`state` has no entry for the rodeo site {names[i]!r}: create it with "
          "fn.init(params, key)."
        )
      check_state(state[names[i]], _stein.RodeoState, f"the rodeo site {names[i]!r}")
    # Which of each measure-valued site's own parameters η depend on params
    # (structurally, through parents too); a family's fixed η must not.
    mvd_active = {}
    for i in mvd:
      canon_of = lambda p, n=names[i]: (
        _run(program, p, key, {}).sites[n].dist.weak_derivative_params()
      )
      etas = list(jax.eval_shape(canon_of, params))
      mvd_active[i] = dependence(lambda p, c=canon_of: tuple(c(p).values()), params)
      fixed = getattr(sites[i].family, "weak_derivative_fixed", ())
      for eta, on in zip(etas, mvd_active[i]):
        if on and eta in fixed:
          free = ", ".join(e for e in etas if e not in fixed)
          raise ValueError(
            f"Site {names[i]!r}: estimator='measure_valued' differentiates a "
            f"{sites[i].family.__name__} through its {free} only, but its {eta} "
            f"depends on `params`. Keep the {eta} constant, or use "
            "estimator='score_function' (or 'pathwise' where reparameterized)."
          )
    for n in specs if per_site else {}:
      if sites[names.index(n)].estimator != "score_function":
        raise ValueError(
          f"`baseline` for site {n!r}: baselines apply to score-function "
          f"sites only, and {n!r} uses {sites[names.index(n)].estimator!r}."
        )

    # The joint grid of the exact sites' configurations: (K, *shape) per site.
    counts = [sites[i].family.num_configurations(sites[i].logits_shape) for i in exact]
    total = math.prod(counts)
    if total > max_configurations:
      shown = ", ".join(f"{names[i]!r}: {c}" for i, c in zip(exact, counts))
      raise ValueError(
        f"The 'exact' sites have {total:,} joint configurations ({shown}), more than "
        f"max_configurations={max_configurations:,}. Use estimator='score_function' "
        "for some of them, or raise surrogate(..., max_configurations=...)."
      )
    grid = np.indices(counts).reshape(len(counts), -1) if exact else None
    configs = [
      sites[i].family.enumerate_configurations(sites[i].logits_shape, sites[i].logits_dtype)[
        grid[j]
      ]
      for j, i in enumerate(exact)
    ]

    # DisARM runs: run 0 draws every disarm site at b; run j + 1 redraws
    # disarm site j at its antithetic b̃ (same noise everywhere else). A rodeo
    # site: run r draws its r-th of K independent samples (same noise elsewhere).
    num_branches = len(disarm) + 1 if disarm else 1
    if rodeo_sites:
      num_branches = rodeo_config.num_samples

    def run_one(k, values, run=None):
      h = _run(
        program,
        params,
        k,
        dict(zip([names[i] for i in exact], values)),
        {names[d]: (run == j + 1).astype(jnp.int32) for j, d in enumerate(disarm)}
        | {names[i]: run for i in rodeo_sites},
      )
      costs = [h.costs[c] for c in g.cost_names]
      floats = [c for c in costs if jnp.issubdtype(c.dtype, jnp.floating)]
      dtype = jnp.result_type(*floats) if floats else jnp.result_type(float)
      taus = (
        jnp.stack([h.sites[names[i]].log_prob for i in score]).astype(dtype)
        if score
        else jnp.zeros((0,), dtype)
      )
      log_w = sum((h.sites[names[i]].log_prob for i in exact), jnp.zeros((), dtype))
      values_out = {n: h.sites[n].value for n in names}
      pair = tuple(h.sites[names[d]].pair for d in disarm)
      if disarm or rodeo_sites:
        log_w = log_w - jnp.log(jnp.asarray(num_branches, dtype))
      pair = pair + tuple(_rodeo_draw(h, i, k, dtype) for i in rodeo_sites)
      weak = tuple(_weak_derivative_site(h, i, k, dtype) for i in mvd)
      return jnp.stack([c.astype(dtype) for c in costs]), taus, log_w, values_out, pair, weak

    def downstream_of(i, k, dtype, differentiable=False):
      """x ↦ the sum of the costs downstream of site i: the rest of the program
      rerun with the site at x and the same keys (the same downstream noise),
      params held fixed; ``differentiable`` leaves x open to ``jax.grad``."""
      name, shape = names[i], sites[i].value.shape
      down = [c for c, a in zip(g.cost_names, g.cost_ancestors) if i in a]
      frozen = jax.lax.stop_gradient(params)

      def cost(x):
        rerun = _run(
          program,
          frozen,
          k,
          {name: jnp.reshape(x, shape)},
          open_site=name if differentiable else None,
        )
        return sum((rerun.costs[c].astype(dtype) for c in down), jnp.zeros((), dtype))

      return cost, down

    def _rodeo_draw(h, i, k, dtype):
      """(α, b, ∇C(b)) of the rodeo site i in one run: its logits, its draw and the
      derivative in the draw of the costs downstream of it (any derivative keeps
      RODEO unbiased)."""
      rec = h.sites[names[i]]
      cost, _ = downstream_of(i, k, dtype, differentiable=True)
      grad = jax.grad(cost)(jnp.asarray(rec.value, dtype))
      return rec.pair[0], rec.value, jax.lax.stop_gradient(grad)

    def _weak_derivative_site(h, i, k, dtype):
      """(η, ĝ) of measure-valued site i in one run: ĝ_j = c_j (C(x ⊕_j x⁺) − C(x ⊕_j x⁻))."""
      rec = h.sites[names[i]]
      canon = tuple(rec.dist.weak_derivative_params().values())
      cost, down = downstream_of(i, k, dtype)
      base = jnp.reshape(rec.value, (1, -1))
      fbase = jax.lax.stop_gradient(
        jnp.reshape(sum((h.costs[c].astype(dtype) for c in down), jnp.zeros((), dtype)), (1, 1))
      )
      # Its own stream: fold_in(k, ·) is independent of the program's splits of k.
      wd_key = jax.random.fold_in(k, 0x5C06 + i)
      terms = weak_derivative_terms(
        wd_key,
        lambda x: jnp.reshape(cost(x), (1,)),
        jax.lax.stop_gradient(rec.dist),
        mvd_active[i],
        True,
        base,
        fbase,
      )
      cot = tuple(
        jnp.zeros(c.shape, dtype)
        if t is None
        else jax.lax.stop_gradient(t[0, ..., 0]).astype(dtype)
        for t, c in zip(terms, canon)
      )
      return canon, cot

    def per_configuration(k, run):
      if not exact:
        return jax.tree_util.tree_map(lambda x: x[None], run_one(k, [], run))
      return jax.vmap(lambda *v: run_one(k, list(v), run))(*configs)

    def per_key(k):
      # Leading axis K: the disarm runs × the exact sites' configurations
      # (run-major), each weighted by exp(log_w).
      if not disarm and not rodeo_sites:
        return per_configuration(k, None)
      out = jax.vmap(lambda r: per_configuration(k, r))(jnp.arange(num_branches))
      return jax.tree_util.tree_map(
        lambda x: x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:]), out
      )

    if num_samples is None:
      rec = jax.tree_util.tree_map(lambda x: x[None], per_key(key))
    else:
      rec = jax.vmap(per_key)(jax.random.split(key, num_samples))
    costs, taus, log_w, values, pair, weak = rec  # (n, K, m), (n, K, s), (n, K), dict
    dtype = costs.dtype
    # A[c, j]: score site j is a stochastic ancestor of cost c.
    A = np.array(
      [
        [score[j] in g.cost_ancestors[c] for j in range(len(score))]
        for c in range(len(g.cost_names))
      ],
      dtype=np.float64,
    ).reshape(len(g.cost_names), len(score))
    P = np.array(
      [[score[j] in g.ancestors[score[i]] for j in range(len(score))] for i in range(len(score))],
      dtype=np.float64,
    ).reshape(len(score), len(score))
    A_, P_ = jnp.asarray(A, dtype), jnp.asarray(P, dtype)
    terms = jnp.sum(magic_box(taus @ A_.T) * costs, axis=-1)  # (n, K)
    weights = jnp.exp(log_w)
    new_state = dict(state)
    downstream = jax.lax.stop_gradient(costs) @ A_  # (n, K, s)
    info = {
      "values": values,
      "weights": jax.lax.stop_gradient(weights),
      "downstream": {names[i]: downstream[..., j] for j, i in enumerate(score)},
    }
    if score:
      b_cols = []
      for j, i in enumerate(score):
        spec = spec_of(names[i])
        r = downstream[..., j]
        if isinstance(spec, _baselines.Baseline):
          st = spec.init()
          if spec.stateful:
            if names[i] not in state:
              raise ValueError(
                f"`state` has no entry for site {names[i]!r}: create it with fn.init(params, key)."
              )
            st = state[names[i]]
          b = jax.vmap(
            lambda rk, spec=spec, st=st: spec.values(rk, None, st), in_axes=1, out_axes=1
          )(r)
          if spec.stateful:
            mixed = jnp.sum(jax.lax.stop_gradient(weights) * r, axis=1)
            new_state[names[i]] = spec.update(st, mixed)
        else:
          descendants = {t for t in range(len(sites)) if i in g.ancestors[t]} | {i}
          visible = {names[t]: values[names[t]] for t in range(len(sites)) if t not in descendants}
          b = jax.vmap(jax.vmap(lambda v, spec=spec: jnp.asarray(spec(v), dtype)))(visible)
          if b.shape != r.shape:
            raise ValueError(
              f"The callable baseline of site {names[i]!r} must return a "
              f"scalar; it returned shape {b.shape[2:]}."
            )
        b_cols.append(jax.lax.stop_gradient(b))
      bvals = jnp.stack(b_cols, axis=-1)
      terms = terms + jnp.sum((1.0 - magic_box(taus)) * magic_box(taus @ P_.T) * bvals, -1)
    value = jnp.mean(jnp.sum(weights * terms, axis=1))
    # THE NaN rule: a NaN cost never gives a finite gradient (a cost's own
    # pathwise term could otherwise be finite). Adds an exact 0 otherwise.
    poison = jax.lax.stop_gradient(jnp.where(jnp.isnan(value), jnp.nan, 0.0).astype(dtype))
    for leaf in jax.tree_util.tree_leaves(params):
      if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
        value = value + poison * jnp.sum(jnp.real(leaf)).astype(dtype)
    n_runs, n_configs = costs.shape[0], costs.shape[1] // num_branches
    for j, d in enumerate(disarm):
      # DisARM (Dong et al. 2020) for the logits α of site d: run 0 holds b, run
      # j + 1 its antithetic b̃ with the same noise elsewhere, and
      # ĝ_i = ½ (C(b) − C(b̃)) (−1)^{b̃_i} 1[b_i ≠ b̃_i] σ(|α_i|) for the costs C
      # downstream of it; carried by a zero whose derivative is ⟨∇α, ĝ⟩. With
      # exact sites, C(·) is Σ_k p_k C_k over their configurations in each
      # run (p_k of a configuration below d changes with d's value); α, b and
      # b̃ vary with the configurations above d only, so the difference is
      # taken configuration by configuration.
      mask = jnp.asarray([float(d in a) for a in g.cost_ancestors], dtype)
      per_run = lambda x: x.reshape((n_runs, num_branches, n_configs) + x.shape[2:])
      down = per_run(jax.lax.stop_gradient(weights * num_branches) * (costs @ mask))
      logits, b, b_tilde = (per_run(x)[:, 0] for x in pair[j])  # (n, K', *shape)
      diff = jax.lax.stop_gradient(down[:, 0] - down[:, j + 1])
      coef = (0.5 * diff).reshape(diff.shape + (1,) * (logits.ndim - 2))
      ghat = (
        coef
        * (1.0 - 2.0 * b_tilde)
        * (b != b_tilde).astype(dtype)
        * jax.nn.sigmoid(jnp.abs(jax.lax.stop_gradient(logits)))
      )
      value = value + gradient_carrier(
        logits, ghat / n_runs, f"surrogate() with a disarm site ({names[d]!r})", dtype
      )
    for j, i in enumerate(rodeo_sites):
      value = value + _rodeo_carrier(
        names[i],
        sites[i].family,
        rodeo_config,
        pair[len(disarm) + j],
        costs,
        g.cost_ancestors,
        i,
        state,
        new_state,
      )
    for (canon, cot), i in zip(weak, mvd):
      # The weak-derivative gradient of the site's own parameters, carried by
      # a zero whose derivative is ⟨∇η, ĝ⟩ averaged over the runs (the chain
      # rule through η(params, parents) does the rest).
      value = value + gradient_carrier(
        canon,
        jax.tree_util.tree_map(lambda t: t / n_runs, cot),
        f"surrogate() with a measure_valued site ({names[i]!r})",
        dtype,
      )
    return value, new_state, info

  fn: Any
  if stateful:

    def fn(params, key, state):
      if not isinstance(state, dict):
        raise TypeError(
          "`state` must be the dict returned by fn.init(params, key) (or the previous "
          f"call's state); got {state!r}."
        )
      return build(params, key, state)[:2]
  else:

    def fn(params, key):  # type: ignore[misc]
      return build(params, key, {})[0]

  def site_costs(params, key, state=None):
    """Regression data for learned baselines, all held fixed (stop-gradient).

    Returns a dict with ``"values"`` (every site's samples, leaves (n, K, ...)),
    ``"downstream"`` ({score-function site: (n, K) sum of the costs downstream of
    it}, the target a baseline of that site estimates) and ``"weights"`` ((n, K)
    probabilities of the exact sites' configurations); n = num_samples (1 if
    None), K = the exact sites' joint configurations (1 if none).
    """
    if stateful and state is None:
      state = init(params, key)
    return jax.lax.stop_gradient(build(params, key, state or {})[2])

  def graph(params, key):
    """The sites, their estimators and each cost's stochastic ancestors (for inspection)."""
    g = _analyse(program, params, check_key(key))
    names = [s.name for s in g.sites]
    return {
      "sites": {s.name: s.estimator for s in g.sites},
      "costs": {
        c: sorted((names[i] for i in a), key=names.index)
        for c, a in zip(g.cost_names, g.cost_ancestors)
      },
    }

  fn.init = init
  fn.graph = graph
  fn.site_costs = site_costs
  fn.__doc__ = f"DiCE surrogate of {getattr(program, '__name__', 'program')} (scoregrad.surrogate)."
  return fn
