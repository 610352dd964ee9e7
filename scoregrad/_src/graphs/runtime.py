"""The effect-handler runtime of stochastic computation graphs: ``sample`` and ``cost``.

A program ``program(params, key)`` draws its random variables with
:func:`sample` and reports its cost terms with :func:`cost`. Outside any
handler they are a plain ``dist.sample(key)`` and the identity, so the
program also runs forward as ordinary JAX code. Inside :func:`run` (what the
analysis and the surrogate use) a :class:`Handler` records every site and cost
term, and substitutes values: the configurations of enumerated sites, the
values a caller holds fixed, and the branch index of a branched site
(DisARM's antithetic run, RODEO's r-th draw), which the site's estimator turns
into its value (:meth:`SiteEstimator.draw`).

Nothing here knows any particular site estimator: a site asks its estimator
how to draw, and records what the estimator returns.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
from jax.extend import core as jex_core
import jax.numpy as jnp

from scoregrad import dists as _dists
from scoregrad._src.graphs import plates, registry
from scoregrad._src.graphs.protocol import SiteEstimator
from scoregrad._src.validation import check_key

RETURN_NAME = "<return value>"

_STACK: list[Handler] = []


class SiteRecord(NamedTuple):
  """One site of one run: its estimator, value, log-probability and distribution."""

  name: str
  estimator: SiteEstimator
  value: Any
  log_prob: jax.Array
  dist: Any
  aux: Any = None  # what the estimator's draw returned besides the value


class Handler:
  """Records sites and costs of one run of the program; substitutes values.

  Args:
    substitutes: ``{site: value}`` taken instead of a draw (held fixed).
    branches: ``{site: traced int}``, the site's branch index in this run,
      passed to its estimator's ``draw``.
    open_site: a substituted site whose value is left differentiable (RODEO's ∇f).
    mark: ``mark(i, value) -> value``, applied to the i-th site's value (the
      dependency analysis tags values with it).
  """

  def __init__(
    self,
    substitutes: Mapping[str, Any],
    branches: Optional[Mapping[str, Any]] = None,
    open_site: Optional[str] = None,
    mark: Optional[Callable[[int, Any], Any]] = None,
  ):
    self.substitutes = dict(substitutes)
    self.mark = mark  # the analysis: tags site i's value in the traced program
    self.branches = dict(branches or {})
    self.open_site = open_site
    self.sites: dict[str, SiteRecord] = {}
    self.costs: dict[str, jax.Array] = {}
    self.loops: list = []  # loops.LoopRecord of each sg.scan / sg.fori_loop
    self._keys: list[tuple[Any, str]] = []
    # scoregrad.plate (plates.py): the active frames, every plate entered, and
    # {site or cost name: (plate names, element values, batch block length)}.
    self.plates: list = []
    self.plate_frames: dict = {}
    self.plating: dict = {}
    self._trace = jex_core.get_opaque_trace_state()

  def __enter__(self):
    _STACK.append(self)
    return self

  def __exit__(self, *exc):
    _STACK.remove(self)
    return False

  def _check_trace(self, name: str, kind: str) -> None:
    if jex_core.get_opaque_trace_state() != self._trace:
      raise ValueError(
        f"The {kind} {name!r} is inside a jax.vmap, lax.scan, lax.cond or another "
        "transformation within the program; sg.sample and sg.cost must be called at "
        "the program's top level. Use vectorised distributions (one site for a whole "
        "array), scoregrad.scan / scoregrad.fori_loop for a loop (sites drawn at "
        "every step, with per-step credit), a Python loop with one name per step, "
        "or surrogate(..., num_samples=...) for independent repetitions."
      )

  def check_name(self, name: str, kind: str) -> None:
    if name in self.plate_frames:
      raise ValueError(
        f"The name {name!r} names both a plate and a {kind}; give each its own name."
      )
    if name in self.sites or name in self.costs:
      other = "sample site" if name in self.sites else "cost term"
      raise ValueError(
        f"The name {name!r} is used twice in the program: a {kind} and an earlier "
        f"{other} are both called {name!r}. Every sg.sample and sg.cost needs its "
        'own name; in a Python loop use e.g. f"z{t}".'
      )

  def sample(self, name: str, dist, key, estimator: SiteEstimator):
    self._check_trace(name, "sample site")
    self.check_name(name, "sample site")
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
    aux = None
    if name in self.substitutes:
      value = self.substitutes[name]
    elif name in self.branches:
      value, aux = estimator.draw(dist, key, self.branches[name])
    else:
      value, aux = estimator.draw(dist, key, None)
    if not estimator.differentiable_value and name != self.open_site:
      value = jax.lax.stop_gradient(value)
    if self.mark is not None:
      value = self.mark(len(self.sites), value)
    log_prob = jnp.asarray(dist.log_prob(jax.lax.stop_gradient(value)))
    if log_prob.shape != ():
      raise ValueError(
        f"Site {name!r}: `dist.log_prob(x)` of one sample must be a scalar (summed "
        f"over the event); it has shape {log_prob.shape}. scoregrad.dists sum over "
        "every dimension of their parameters; wrap other distributions with "
        "scoregrad.dists.from_log_prob."
      )
    if self.plates:
      self.plating[name] = plates.site_elements(name, dist, value, self.plates)
    self.sites[name] = SiteRecord(name, estimator, value, log_prob, dist, aux)
    return value

  def cost(self, name: str, value):
    self._check_trace(name, "cost term")
    self.check_name(name, "cost term")
    if self.plates:
      names, elements, value = plates.cost_elements(name, value, self.plates)
      self.plating[name] = (names, elements, None)
    else:
      value = check_scalar_cost(value, f"sg.cost({name!r}, value)")
    self.costs[name] = value
    return value


def check_scalar_cost(value, where: str) -> jax.Array:
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


def sample(name: str, dist: Any, key: jax.Array, *, estimator: Any = None):
  """A sample site: draws ``x ~ dist`` and marks it for :func:`scoregrad.surrogate`.

  Inside ``surrogate(program)`` the site is recorded under ``name`` with its
  gradient estimator; outside any surrogate it is a plain
  ``dist.sample(key)`` (so the program also runs forward as ordinary JAX code,
  e.g. to simulate data), and ``estimator`` is only validated.

  Requirements: every site has its own name and its own key (split the
  program's key; passing one key object to two sites is an error). Sites may
  not be inside a ``jax.vmap``/``lax.scan``/``lax.cond`` within the program:
  use vectorised distributions, :func:`scoregrad.scan` (a loop whose steps
  draw sites, with per-step credit), a Python loop, or ``surrogate(...,
  num_samples=...)``.

  Args:
    name: a unique string naming the site.
    dist: a distribution (scoregrad.dists, or NumPyro/distrax/TFP-on-JAX), whose
      parameters may depend on ``params`` and on earlier sites' samples.
    key: a PRNG key, used by this site only.
    estimator: a site-estimator value from :mod:`scoregrad.sites`
      (``sg.sites.pathwise()``, ``score_function()``, ``exact()``,
      ``disarm()``, ``measure_valued()``, ``rodeo(...)``), its name as a
      string (``"pathwise"``, ``"score_function"``, ``"exact"``, ``"disarm"``,
      ``"measure_valued"``, ``"rodeo"``), or ``None``: pathwise if
      ``dist.reparameterized``, else score_function. ``exact`` enumerates a
      small Bernoulli/Categorical site; ``disarm`` (a Bernoulli site),
      ``measure_valued`` (a family with a weak derivative) and ``rodeo`` (a
      Bernoulli site) are first-order only.

  Returns:
    The sample (held fixed, i.e. stop-gradiented, unless pathwise).

  Example:
    >>> import jax, scoregrad as sg
    >>> x = sg.sample("x", sg.dists.Normal(0.0, 1.0), jax.random.key(0))
    >>> y = sg.sample("y", sg.dists.Bernoulli(logits=0.0), jax.random.key(1),
    ...               estimator=sg.sites.disarm())
  """
  if not isinstance(name, str) or not name:
    raise TypeError(f"`name` of sg.sample must be a non-empty str; got {name!r}.")
  dist = _dists.as_distribution(dist, name=f"dist of site {name!r}")
  key = check_key(key, f"key of site {name!r}")
  resolved = registry.resolve(name, dist, estimator)
  if not _STACK:
    return dist.sample(key)
  return _STACK[-1].sample(name, dist, key, resolved)


def cost(name: str, value: Any) -> jax.Array:
  """A named scalar cost term of the program; returns ``value``.

  The surrogate's value is the sum of all cost terms (plus the program's
  return value when it is a scalar); each term gets credit only from the
  sites it depends on. Outside :func:`scoregrad.surrogate` it just returns
  ``value``.

  Example:
    >>> import scoregrad as sg
    >>> sg.cost("penalty", 0.5)
    0.5
  """
  if not isinstance(name, str) or not name:
    raise TypeError(f"`name` of sg.cost must be a non-empty str; got {name!r}.")
  if not _STACK:
    if not plates.FORWARD:  # inside a plate a cost has one value per element
      check_scalar_cost(value, f"sg.cost({name!r}, value)")
    return value
  return _STACK[-1].cost(name, value)


def run(program, params, key, substitutes, branches=None, open_site=None, mark=None) -> Handler:
  """Runs ``program(params, key)`` once inside a recording :class:`Handler`."""
  with Handler(substitutes, branches, open_site, mark) as handler:
    out = program(params, key)
  if out is not None:
    out = check_scalar_cost(
      out, "The program's return value (None, or a scalar cost added to the sg.cost terms)"
    )
    handler.check_name(RETURN_NAME, "return value")
    handler.costs[RETURN_NAME] = out
  if not handler.costs:
    raise ValueError(
      "The program reported no cost: return a scalar cost, or report terms with "
      "sg.cost(name, value)."
    )
  return handler
