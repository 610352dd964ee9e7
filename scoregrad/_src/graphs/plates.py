"""Plates: conditionally independent elements along an axis, with per-element credit.

``with scoregrad.plate(name, size):`` inside a program declares (NumPyro's
``numpyro.plate`` semantics) that the sites and costs inside are
conditionally independent along the plate's axis: element i of a site
depends on element i of the sites in the same plate (and on everything
outside it), never on element j ≠ i. The program keeps its vectorised
form (one site for the whole axis, no Python loop), and the surrogate
gives each element its own credit.

**Layout.** A plate occupies one axis of the *leading batch block* of the
values inside it, counted from the right as in NumPyro: ``dim=-1`` is the
last axis of the block, and plates without ``dim`` take the first free
position from the right (the outermost plate -1, a plate inside it -2).
With plates of dims -1..-L active, a site's value has shape
``batch + rest`` with ``len(batch) = L``, size ``subsample_size or size``
at each plate's axis and 1 at positions no active plate holds; a cost
inside has exactly the batch shape (one cost per element). The plate does
not broadcast anything: a distribution must already have the plate's size
along its axis (``Normal(loc, scale)`` with ``loc.shape == (N,)``).
Element log-densities come from the family
(:meth:`scoregrad.dists.Distribution.plate_log_prob`).

**The surrogate** (Schulman et al. 2015 with plates, as in Pyro's
``TraceGraph_ELBO``). For a site or cost u let P(u) be its plates, and for
a stochastic ancestor s of u let Q(s, u) ⊆ P(s) ∩ P(u) be the plates along
which u's elements depend on s's elements one to one: the intersection of
the plates of every node on every data-flow path from s to u (a path that
leaves a plate mixes its elements). Element j of u depends on the elements
i of s that agree with j on Q(s, u). With τ_s the element log-probs of a
score-function site and T_{s→u} = τ_s summed over P(s) \\ Q(s, u) and
broadcast over P(u) \\ Q(s, u),

    L = Σ_c Σ_j w_c[j] □(Σ_{s ∈ A(c)} T_{s→c}[j]) c[j]
        + Σ_s Σ_i w_s[i] (1 − □(τ_s[i])) □(Σ_{t ∈ A(s)} T_{t→s}[i]) ⊥b_s[i],

where w are the probabilities of the exact sites' configurations (below)
and b_s[i] is element i's baseline: with ``leave_one_out()``, the mean over
the OTHER ``num_samples`` runs of the costs downstream of element i,
R_s[i] = Σ_c Σ_{j ~ i} c[j] (a cost outside the plate counts whole). Every
element's term is DiCE's, so every derivative order is unbiased when the
plate's promise holds (the promise is the user's, as in NumPyro: a cost
inside a plate that mixes elements gets too little credit).

**Exact sites inside a plate** are enumerated per element: a Bernoulli
element has 2 configurations, so the program runs twice (every element at 0,
then every element at 1), not 2^N times, and element j of a cost downstream
of it is weighted by p(x_j = k). This needs every site and cost downstream
of it to be inside its plates with one-to-one dependence (a cost outside the
plate that depends on it would need the 2^N joint configurations: refused).
A cost c is weighted by the exact sites among its ancestors (exp of
T_{e→c}), and by 1/K_e for the others (its value is the same in their K_e
configurations).

**Subsampling.** ``plate(name, size, subsample_size=m, key=k)`` draws m of
the ``size`` indices without replacement from ``k`` (explicit: split it from
the program's key; every run of the program, e.g. each of ``num_samples``,
gets its own subsample when ``k`` comes from the run's key). The ``with``
statement returns the indices (``jnp.arange(size)`` without subsampling):
index the data with them. Every cost element inside the plate is scaled by
size/m, so the value and every derivative are unbiased over the subsample
too. With leave-one-out baselines, element i of different runs is then a
different datum (still a valid baseline, less effective).

Supported sites in a program with plates: ``score_function`` (baselines
``None``, ``constant``, ``leave_one_out``), ``pathwise`` and ``exact``;
the others, stateful and callable baselines are refused with a message.

References:
  Schulman, Heess, Weber & Abbeel, "Gradient Estimation Using Stochastic
  Computation Graphs", NeurIPS 2015.
  Foerster et al., "DiCE: The Infinitely Differentiable Monte Carlo
  Estimator", ICML 2018.
  Mao et al., "A Baseline for Any Order Gradient Estimation in Stochastic
  Computation Graphs", ICML 2019.
  Bingham et al., "Pyro: Deep Universal Probabilistic Programming", JMLR
  2019 (plates, ``TraceGraph_ELBO``); Phan, Pradhan & Jankowiak, "Composable
  Effects for Flexible and Accelerated Probabilistic Programming in
  NumPyro", 2019.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from scoregrad._src import baselines as _baselines
from scoregrad._src.graphs.protocol import joint_grid, weighted
from scoregrad._src.surrogates import magic_box
from scoregrad._src.validation import NotApplicableError, check_key

# The plates entered outside any surrogate (a forward run of the program).
FORWARD: list = []

# Site estimators that know what to do inside a plate.
SUPPORTED = ("score_function", "pathwise", "exact")


class Frame(NamedTuple):
  """One plate, as entered in one run."""

  name: str
  size: int
  subsample_size: int  # = size without subsampling
  dim: int  # negative: its position in the batch block, from the right
  indices: Any  # (subsample_size,) int array

  @property
  def scale(self) -> float:
    return self.size / self.subsample_size


class Plating(NamedTuple):
  """What the analysis keeps of the plates: per site and cost its plates, in axis order."""

  sites: dict  # {site name: tuple of plate names}
  costs: dict  # {cost name: tuple of plate names}
  sizes: dict  # {plate name: elements per run (subsample_size or size)}
  blocks: dict  # {site name: length of its value's batch block}


class plate:
  """``with scoregrad.plate(name, size) as idx:`` conditionally independent elements.

  The sites and costs inside are conditionally independent along the
  plate's axis (NumPyro's ``numpyro.plate``): :func:`scoregrad.surrogate`
  then gives element i of a score-function site credit only for element i
  of the costs inside the plate (plus the costs outside that depend on the
  site), with per-element baselines, and enumerates ``"exact"`` sites element
  by element (2 configurations for a Bernoulli element, not 2^N). See
  :mod:`scoregrad._src.graphs.plates` for the surrogate.

  Layout: a plate is one axis of the leading batch block of the values
  inside (``dim``, counted from the right as in NumPyro; by default the
  first free one, the outermost plate -1). A site's value has the plate's
  size there, a cost inside has exactly the batch block's shape (one value
  per element). Nothing is broadcast for you.

  Args:
    name: the plate's name (a plate re-entered later in the program must
      have the same size, subsample_size and dim; it is the same plate, with
      the same subsample).
    size: the number of elements (an int ≥ 1).
    subsample_size: ``None`` or m ≤ size: m indices drawn without
      replacement from ``key``; every cost inside is scaled by size/m.
    dim: ``None`` or a negative int, the plate's axis in the batch block.
    key: the PRNG key of the subsample (required with ``subsample_size``;
      split it from the program's key).

  Returns (from ``with ... as idx``):
    the element indices, ``jnp.arange(size)`` or the subsample's.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> data = jnp.array([0.0, 1.0, 1.0, 0.0])
    >>> def program(theta, key):
    ...   with sg.plate("data", 4):
    ...     z = sg.sample("z", sg.dists.Bernoulli(logits=jnp.full(4, theta)), key)
    ...     sg.cost("fit", (z - data) ** 2)
    >>> loss = sg.surrogate(program, num_samples=8, baseline=sg.baselines.leave_one_out())
    >>> g = jax.grad(loss)(0.0, jax.random.key(0))
  """

  def __init__(
    self,
    name: str,
    size: int,
    *,
    subsample_size: Optional[int] = None,
    dim: Optional[int] = None,
    key: Optional[jax.Array] = None,
  ):
    if not isinstance(name, str) or not name:
      raise TypeError(f"`name` of sg.plate must be a non-empty str; got {name!r}.")
    self.name = name
    self.size = _positive_int(f"plate {name!r}: `size`", size)
    if subsample_size is None:
      if key is not None:
        raise ValueError(
          f"plate {name!r}: `key` draws the subsample, and subsample_size is None; "
          "pass subsample_size=m or drop the key."
        )
      self.subsample_size = self.size
      self.key = None
    else:
      m = _positive_int(f"plate {name!r}: `subsample_size`", subsample_size)
      if m > self.size:
        raise ValueError(
          f"plate {name!r}: subsample_size={m} is larger than size={self.size}; use "
          "subsample_size <= size (or None for every element)."
        )
      if key is None:
        raise ValueError(
          f"plate {name!r}: subsample_size={m} needs `key=` (the subsample's PRNG key, "
          "split from the program's key), e.g. `k_plate, key = jax.random.split(key)`."
        )
      self.subsample_size = m
      self.key = check_key(key, f"key of plate {name!r}")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim >= 0):
      raise ValueError(
        f"plate {name!r}: `dim` must be None or a negative int (the plate's axis in the "
        f"batch block, counted from the right as in NumPyro); got dim={dim!r}."
      )
    self.dim = dim
    self._handler = None
    self._forward = False

  def _indices(self):
    if self.key is None:
      return jnp.arange(self.size)
    return jax.random.permutation(self.key, self.size)[: self.subsample_size]

  def __enter__(self):
    from scoregrad._src.graphs import runtime

    if not runtime._STACK:  # a forward run of the program: nothing recorded
      FORWARD.append(self.name)
      self._forward = True
      return self._indices()
    handler = runtime._STACK[-1]
    self._handler = handler
    return _enter(handler, self).indices

  def __exit__(self, *exc):
    if self._forward:
      FORWARD.pop()
      self._forward = False
    if self._handler is not None:
      frames = self._handler.plates
      if frames and frames[-1].name == self.name:
        frames.pop()
      self._handler = None
    return False


def _positive_int(where: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{where} must be an int >= 1; got {value!r}.")
  return int(value)


def _enter(handler, p: plate) -> Frame:
  active = handler.plates
  if any(f.name == p.name for f in active):
    raise ValueError(
      f"plate {p.name!r} is entered inside itself: a plate name is used once per "
      "nesting. Give the inner plate its own name."
    )
  if p.name in handler.sites or p.name in handler.costs:
    raise ValueError(
      f"The name {p.name!r} names both a plate and a sample site or cost; give the "
      "plate its own name."
    )
  taken = {f.dim for f in active}
  dim = p.dim
  if dim is None:
    dim = -1
    while dim in taken:
      dim -= 1
  elif dim in taken:
    other = next(f.name for f in active if f.dim == dim)
    raise ValueError(
      f"plate {p.name!r}: dim={dim} is already held by the enclosing plate {other!r}; "
      "give each nested plate its own dim (or leave dim=None)."
    )
  earlier = handler.plate_frames.get(p.name)
  if earlier is not None:
    if (earlier.size, earlier.subsample_size, earlier.dim) != (p.size, p.subsample_size, dim):
      raise ValueError(
        f"The plate name {p.name!r} is reused for a different plate: first size="
        f"{earlier.size}, subsample_size={earlier.subsample_size}, dim={earlier.dim}, "
        f"now size={p.size}, subsample_size={p.subsample_size}, dim={dim}. A plate "
        "re-entered must be the same plate; give a different plate its own name."
      )
    frame = earlier  # the same plate: the same subsample
  else:
    frame = Frame(p.name, p.size, p.subsample_size, dim, p._indices())
    handler.plate_frames[p.name] = frame
  active.append(frame)
  return frame


def _block(frames) -> tuple[int, tuple, tuple]:
  """(L, the batch block's shape, the plate names in axis order) of the active frames."""
  length = max(-f.dim for f in frames)
  shape = [1] * length
  names: list[Optional[str]] = [None] * length
  for f in frames:
    shape[length + f.dim] = f.subsample_size
    names[length + f.dim] = f.name
  return length, tuple(shape), tuple(n for n in names if n is not None)


def _describe(frames) -> str:
  return ", ".join(f"{f.name!r} (size {f.subsample_size}, dim {f.dim})" for f in frames)


def site_elements(name: str, dist, value, frames) -> tuple[tuple, jax.Array, int]:
  """(plate names, element log-probs over them, block length) of a site inside ``frames``."""
  length, shape, names = _block(frames)
  vshape = tuple(jnp.shape(value))
  if len(vshape) < length or vshape[:length] != shape:
    raise ValueError(
      f"Site {name!r} is inside the plates {_describe(frames)}, so its value's leading "
      f"axes must have shape {shape} (each plate's size at its dim, counted from the "
      f"right of the batch block); its value has shape {vshape}. Give its "
      "distribution the plate's size along that axis (the plate does not broadcast), "
      "or move the site out of the plate."
    )
  method = getattr(dist, "plate_log_prob", None)
  if not callable(method):
    raise ValueError(
      f"Site {name!r} is inside a plate, and its distribution "
      f"{type(dist).__name__} cannot give one log-density per element "
      "(plate_log_prob). Use a scoregrad.dists family, or move the site out of the plate."
    )
  try:
    lp = method(jax.lax.stop_gradient(value), length)
  except NotApplicableError as err:
    raise ValueError(
      f"Site {name!r} is inside the plates {_describe(frames)}, and its elements along "
      f"them are not independent: {err} Move the site out of the plate."
    ) from None
  return names, _squeeze(jnp.asarray(lp), frames), length


def _squeeze(x, frames):
  """x over the batch block, without the positions that no plate holds (size 1)."""
  length = max(-f.dim for f in frames)
  held = {length + f.dim for f in frames}
  return x.reshape(tuple(s for a, s in enumerate(x.shape) if a in held))


def cost_elements(name: str, value, frames) -> tuple[tuple, jax.Array, jax.Array]:
  """(plate names, scaled element costs, their sum) of a cost inside ``frames``."""
  _, shape, names = _block(frames)
  try:
    arr = jnp.asarray(value)
  except TypeError:
    raise TypeError(
      f"sg.cost({name!r}, value): a cost must be an array; got {value!r} of type "
      f"{type(value).__name__}."
    ) from None
  if tuple(arr.shape) != shape:
    raise ValueError(
      f"sg.cost({name!r}, value) is inside the plates {_describe(frames)}, so it must "
      f"have one value per element, shape {shape}; got shape {tuple(arr.shape)}. Sum "
      "over the other axes inside the plate, or report a summed cost outside the plate."
    )
  scale = math.prod(f.scale for f in frames)
  elems = _squeeze(arr, frames)
  if scale != 1.0:
    elems = elems * jnp.asarray(scale, jnp.result_type(elems, float))
  return names, elems, jnp.sum(elems)


def summary(handler) -> Optional[Plating]:
  """The plates of a run's sites and costs (None if the program has no plate)."""
  if not handler.plate_frames:
    return None
  rec = handler.plating
  return Plating(
    {n: rec[n][0] if n in rec else () for n in handler.sites},
    {n: rec[n][0] if n in rec else () for n in handler.costs},
    {n: f.subsample_size for n, f in handler.plate_frames.items()},
    {n: rec[n][2] if n in rec else 0 for n in handler.sites},
  )


# -- the surrogate of a plated program --------------------------------------------


def aligned(g) -> tuple[dict, dict]:
  """Q(s, u): for every site u (and cost) and stochastic ancestor s, the one-to-one plates.

  Q(s, u) = ∩ over the data-flow paths s → u of the plates of every node on
  the path (computed parent by parent: Q(s, u) = ∩_{parents p of u reached
  from s} Q(s, p) ∩ P(u), with Q(s, s) = P(s)).
  """
  pl = g.plating
  sp = [frozenset(pl.sites[s.name]) for s in g.sites]
  site_q: list[dict] = []
  for u in range(len(g.sites)):
    site_q.append(_q_of(u, g.parents[u], g.ancestors, sp, sp[u], site_q))
  cost_q = [
    _q_of(None, parents, g.ancestors, sp, frozenset(pl.costs[c]), site_q)
    for c, parents in zip(g.cost_names, g.cost_parents)
  ]
  return dict(enumerate(site_q)), dict(enumerate(cost_q))


def _q_of(u, parents, ancestors, sp, own, site_q) -> dict:
  q: dict[int, frozenset] = {}
  for p in parents:
    if p == u:
      continue
    for s in set(ancestors[p]) | {p}:
      via = sp[p] if s == p else site_q[p][s]
      q[s] = (q[s] & via & own) if s in q else (via & own)
  return q


class _Layout:
  """Moves element arrays between plate sets (leading axes (n, K) kept)."""

  def __init__(self, sizes: dict):
    self.sizes = sizes
    self.letters = {name: chr(ord("A") + i) for i, name in enumerate(sizes)}

  def transfer(self, x, frm: tuple, to: tuple, keep) -> jax.Array:
    """x over plates ``frm`` summed over frm \\ keep, then broadcast over ``to``."""
    kept = tuple(n for n in to if n in keep)
    sub = "yz" + "".join(self.letters[n] for n in frm)
    out = "yz" + "".join(self.letters[n] for n in kept)
    y = jnp.einsum(f"{sub}->{out}", x) if sub != out else x
    shape = y.shape[:2] + tuple(self.sizes[n] if n in keep else 1 for n in to)
    return jnp.broadcast_to(y.reshape(shape), y.shape[:2] + tuple(self.sizes[n] for n in to))


def check(g, settings) -> None:
  """Refuses what a plated program cannot do (naming the site and what to do)."""
  pl, names = g.plating, g.names
  for s in g.sites:
    if s.estimator.name not in SUPPORTED:
      raise ValueError(
        f"Site {s.name!r} uses estimator={s.estimator.name!r}, which is not supported in "
        f"a program with plates yet (supported there: {SUPPORTED}). Use "
        "estimator='score_function' or 'exact' for it, or write the program without "
        "scoregrad.plate."
      )
    if s.estimator.in_magic_box:
      spec = settings.baseline_of(s.name)
      if not isinstance(spec, _baselines.Baseline) or spec.stateful:
        raise ValueError(
          f"Site {s.name!r}: baseline {getattr(spec, 'name', spec)!r} is not supported in "
          "a program with plates yet (stateful and callable baselines would need one "
          "state or one input per element). Use leave_one_out(), constant(c) or None."
        )
  site_q, cost_q = aligned(g)
  for e, s in enumerate(g.sites):
    own = frozenset(pl.sites[s.name])
    if not (s.estimator.enumerated and own):
      continue
    below = [(names[u], site_q[u].get(e)) for u in range(len(g.sites)) if e in g.ancestors[u]]
    below += [(c, cost_q[j].get(e)) for j, c in enumerate(g.cost_names) if e in g.cost_ancestors[j]]
    for other, q in below:
      if q is None or not own <= q:
        raise ValueError(
          f"The 'exact' site {s.name!r} is inside the plates {sorted(own)} and is "
          f"enumerated element by element, but {other!r} depends on several of its "
          "elements (it is outside those plates, or reached through a node outside "
          "them); that would need every joint configuration. Move "
          f"{other!r} inside the plates, or use estimator='score_function' for "
          f"{s.name!r}."
        )


def build(sur, params, key, state, g):
  """(value, state, info) of the surrogate of a plated program (see the module doc)."""
  from scoregrad._src.graphs import assembly, runtime

  settings, program, names, sites = sur.settings, sur.program, g.names, g.sites
  pl = g.plating
  check(g, settings)
  sur._check(g, state)  # what every surrogate checks (baseline names, fixed values)
  site_q, cost_q = aligned(g)
  layout = _Layout(pl.sizes)
  # The exact sites' configurations: per element inside a plate, whole outside.
  exact = [i for i, s in enumerate(sites) if s.estimator.enumerated]
  counts, makers = [], []
  for i in exact:
    shape, dtype, family = sites[i].info
    vshape = sites[i].value.shape
    batch = pl.blocks[names[i]]
    counts.append(family.num_configurations(shape[batch:]))
    makers.append((family, shape[batch:], dtype, vshape, batch))
  grid = joint_grid([names[i] for i in exact], counts, settings.max_configurations, " per element")
  configs = []
  for j, (family, shape, dtype, vshape, batch) in enumerate(makers):
    conf = family.enumerate_configurations(shape, dtype)[grid[j]]  # (K, *rest)
    lead = (conf.shape[0],) + (1,) * batch
    configs.append(jnp.broadcast_to(conf.reshape(lead + conf.shape[1:]), (conf.shape[0],) + vshape))

  def run_one(k, values):
    subs = sur._fixed | {names[i]: v for i, v in zip(exact, values)}
    h = runtime.run(program, params, k, subs)
    if tuple(h.costs) != g.cost_names or list(h.sites) != names:
      raise ValueError(
        "The program must record the same sites and costs on every run "
        "(no Python branching on random values)."
      )
    floats = [c for c in h.costs.values() if jnp.issubdtype(c.dtype, jnp.floating)]
    dtype = jnp.result_type(*floats) if floats else jnp.result_type(float)
    costs = {c: _elems(h, c, h.costs[c]).astype(dtype) for c in g.cost_names}
    lps = {n: _elems(h, n, h.sites[n].log_prob).astype(dtype) for n in names}
    return costs, lps, {n: h.sites[n].value for n in names}

  def per_key(k):
    if not exact:
      return jax.tree_util.tree_map(lambda x: x[None], run_one(k, []))
    return jax.vmap(lambda *v: run_one(k, list(v)))(*configs)

  if settings.num_samples is None:
    batch = jax.tree_util.tree_map(lambda x: x[None], per_key(key))
  else:
    batch = jax.vmap(per_key)(jax.random.split(key, settings.num_samples))
  costs, lps, values = batch
  dtype = next(iter(costs.values())).dtype
  n = next(iter(costs.values())).shape[0]
  score = [i for i, s in enumerate(sites) if s.estimator.in_magic_box]
  ps = {i: pl.sites[names[i]] for i in range(len(sites))}
  count_of = dict(zip(exact, counts))

  def exponents(targets: tuple, anc, q, kinds):
    return [layout.transfer(lps[names[s]], ps[s], targets, q[s]) for s in kinds if s in anc]

  def log_weight(targets, anc, q, like):
    out = jnp.zeros(like.shape, dtype)
    for e in exact:
      if e in anc:
        out = out + layout.transfer(lps[names[e]], ps[e], targets, q[e])
      else:
        out = out - math.log(count_of[e])
    return out

  value = jnp.zeros((), dtype)
  weighted_costs = {}
  for j, c in enumerate(g.cost_names):
    pc, anc, q, x = pl.costs[c], g.cost_ancestors[j], cost_q[j], costs[c]
    box = magic_box(sum(exponents(pc, anc, q, score), jnp.zeros(x.shape, dtype)))
    w = jnp.exp(log_weight(pc, anc, q, x))
    value = value + jnp.sum(weighted(w, box * x)) / n
    weighted_costs[c] = jax.lax.stop_gradient(weighted(w, x))
  downstream = {}
  for s in score:
    spec = settings.baseline_of(names[s])
    if spec.name == "none()":
      continue
    own = ps[s]
    like = lps[names[s]]
    r = jnp.zeros(like.shape[:1] + like.shape[2:], dtype)  # (n, *P(s))
    for j, c in enumerate(g.cost_names):
      if s in g.cost_ancestors[j]:
        moved = layout.transfer(weighted_costs[c], pl.costs[c], own, cost_q[j][s])
        r = r + jnp.sum(moved, axis=1)
    downstream[names[s]] = r
    flat = r.reshape(n, -1)
    st = spec.init()
    b = jax.vmap(lambda col: spec.values(col, None, st), in_axes=1, out_axes=1)(flat)
    b = jax.lax.stop_gradient(jnp.asarray(b, dtype).reshape(r.shape))[:, None]
    anc = g.ancestors[s]
    above = sum(exponents(own, anc, site_q[s], score), jnp.zeros(like.shape, dtype))
    w = jnp.exp(log_weight(own, anc, site_q[s], like))
    per = (1.0 - magic_box(like)) * magic_box(above) * b
    value = value + jnp.sum(weighted(w, per)) / n
  value = assembly._nan_rule(value, params, dtype)
  info = {"values": values, "downstream": downstream, "weights": None}
  return value, dict(state or {}), info


def _elems(h, name, scalar):
  rec = h.plating.get(name)
  return scalar if rec is None else rec[1]
