"""The distribution protocol, its pytree base class and the foreign adapter.

A scoregrad distribution is any object with

* ``sample(key, sample_shape=()) -> x`` with shape ``sample_shape + event_shape``;
* ``log_prob(x) -> log p(x)`` summed over the event, so one sample gives a scalar
  and a batch of samples (leading dimensions) gives one value per sample;
* a class attribute ``reparameterized: bool`` — ``True`` when ``sample`` is a
  differentiable function of the parameters (pathwise gradients are valid).

Built-in distributions treat every dimension of their parameters as part of
the event (like ``distrax.Independent`` over all axes): ``Normal(loc, scale)``
with ``loc.shape == (d,)`` is one ``d``-dimensional distribution. Use
``jax.vmap`` for batches of distributions.

**Family facts.** What an estimator needs to know about a family lives on the
family's class (its file in ``scoregrad/dists/``), as optional methods; an
estimator asks for the method and refuses, with a message listing the
families that have it, when it is missing:

* ``mean()`` (event shape) and ``covariance()`` ((d, d) over the flattened
  event): the delta-method control variate.
* ``from_standard_normal(eps)`` / ``to_standard_normal(x)``: Gaussian families,
  x = loc + scale·ε; antithetic and randomised-QMC sampling, the optax drop-in.
* ``from_normal_noise(eps)`` / ``to_normal_noise(x)``: families whose samples
  are a smooth invertible transport x = T_θ(ε) of standard normal noise
  (Normal, MultivariateNormalTriL, LogNormal), the inverse differentiable in θ
  at fixed x: the mixed pathwise-then-score estimator (``scoregrad.mixed``).
* ``weak_derivative_params()`` (dict of the canonical parameters η, broadcast
  to the event), ``weak_derivative(key, fn, base, fbase, active, coupling)``
  (per-sample weak-derivative estimates for each η) and
  ``weak_derivative_fixed`` (names of η it cannot differentiate): the
  measure-valued estimator.
* The logits structure of discrete families (Bernoulli, Categorical):
  ``perturb``, ``hard``, ``soft``, ``conditional_noise``, ``probs_of`` (and its
  inverse ``logits_of_probs``),
  ``score_logits``, ``per_variable_log_probs``, ``num_configurations``,
  ``enumerate_configurations``, ``from_values``, the binary representation
  ``binary_logits``, ``from_binary`` and ``binary_reached`` (ARM/DisARM;
  stick-breaking for Categorical) and, for Bernoulli, ``antithetic_pair``,
  ``score_variance`` and ``gibbs_flips`` (double CV, RODEO): the discrete
  estimators.

**Foreign instances.** A NumPyro, distrax or TFP-on-JAX instance of a family
scoregrad has is converted to the built-in family by :func:`as_distribution`,
so that it gets every fact above (and scoregrad's log_prob: NumPyro 0.22's
``Bernoulli(logits=0).log_prob`` has a wrong gradient at exactly 0). The
conversion is a fact of the family too: a class attribute
``foreign_names: tuple[str, ...]`` (the foreign class names it accepts, e.g.
``("Normal",)``; NumPyro's ``BernoulliLogits``/``BernoulliProbs`` included)
and a classmethod ``from_foreign(dist) -> Distribution | None`` that builds
the built-in from the foreign instance's parameters (broadcast to its
``batch_shape + event_shape``: built-ins treat every dimension as event, as
the adapter sums log_prob over the batch), or returns ``None`` when it
cannot (then the instance is wrapped as before). A new family file wires
itself by defining both; :func:`foreign_parameter` and
:func:`foreign_full_shape` help. Foreign instances of other families are
wrapped, and estimators' messages name their foreign class.

Adding a family is one file: subclass :class:`Distribution`, define
``event_shape``, ``_sample`` and ``log_prob``, and the facts above that hold
for it; every estimator that can use them then supports it.
"""

from __future__ import annotations

from collections.abc import Mapping
import contextlib
import dataclasses
import functools
import operator
from typing import Any, ClassVar, Optional, Sequence

import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np

from scoregrad._src.validation import NotApplicableError


def _as_float_array(name: str, value: Any) -> jax.Array:
  """Converts a parameter to a floating array (Python floats do not recompile)."""
  try:
    arr = jnp.asarray(value)
  except TypeError:
    raise TypeError(
      f"Distribution parameter `{name}` must be array-like; got {value!r} of "
      f"type {type(value).__name__}."
    ) from None
  if not jnp.issubdtype(arr.dtype, jnp.floating):
    arr = arr.astype(jnp.result_type(float))
  return arr


def _fields(dist: Any) -> tuple[dataclasses.Field, ...]:
  """The dataclass fields (the parameters) of a built-in distribution."""
  return dataclasses.fields(dist)


class Distribution:
  """Base class for scoregrad's built-in distributions (registered pytrees).

  Subclasses are dataclasses whose fields are the parameters; they implement
  ``_sample(key, shape)`` returning samples with ``shape == sample_shape +
  event_shape`` and ``log_prob``.
  """

  reparameterized: ClassVar[bool] = False
  # Names of the parameters that must be > 0 (e.g. ``("scale",)``): checked at
  # construction when concrete, and NaN-poisoning log_prob and samples when
  # traced. Families with other constraints override ``_parameters_valid``.
  positive: ClassVar[tuple[str, ...]] = ()
  # Highest derivative order for which the score identity
  # ∇ᵏ E[f] = E[f · (∇ᵏ p)/p] holds with log_prob's own derivatives: None
  # when log_prob is smooth in the parameters (every order), 1 when it is
  # only once differentiable (Laplace: |x − μ| has no second derivative in
  # μ, so DiCE's second derivative would be silently wrong).
  score_function_order: ClassVar[Optional[int]] = None

  @property
  def not_reparameterized(self) -> tuple[str, ...]:
    """The components whose samples are not reparameterized, in the adapter's
    convention for joints: ``()`` when reparameterized, else one unnamed one
    (so a foreign instance converted to its built-in family answers alike)."""
    return () if self.reparameterized else ("",)

  # Foreign (NumPyro, distrax, TFP) class names that ``from_foreign`` converts;
  # see the module docstring.
  foreign_names: ClassVar[tuple[str, ...]] = ()

  @classmethod
  def from_foreign(cls, dist: Any) -> Optional[Distribution]:
    """This family built from a foreign instance of it, or None (see the module doc)."""
    del dist
    return None

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    jax.tree_util.register_pytree_node(
      cls,
      lambda d: (tuple(getattr(d, f.name) for f in dataclasses.fields(d)), None),
      lambda _, children: cls._unflatten(children),
    )
    # The support rule is applied here, once, to every family's own __init__
    # and log_prob (a family file never repeats it).
    if "__init__" in cls.__dict__:
      cls.__init__ = _checking_init(cls.__dict__["__init__"])
    if "log_prob" in cls.__dict__:
      cls.log_prob = _poisoning_log_prob(cls.__dict__["log_prob"])

  def _parameters_valid(self) -> Optional[jax.Array]:
    """A scalar bool: are all parameters inside their support? (None: no constraint)."""
    checks = [jnp.all(getattr(self, name) > 0) for name in self.positive]
    return jnp.all(jnp.stack(checks)) if checks else None

  def _constraint_description(self) -> str:
    return " and ".join(f"`{n}`" for n in self.positive) + " must be positive"

  def _check_concrete_parameters(self) -> None:
    values = [getattr(self, f.name) for f in _fields(self)]
    if any(isinstance(v, jax.core.Tracer) for v in values):
      return  # Under jit/grad/vmap: NaN-poisoned instead (see _poison).
    with jax.ensure_compile_time_eval():  # concrete values inside an outer trace, too
      valid = self._parameters_valid()
    if valid is not None and not bool(valid):
      shown = ", ".join(f"{f.name}={np.asarray(getattr(self, f.name))!r}" for f in _fields(self))
      raise ValueError(
        f"{type(self).__name__}: {self._constraint_description()} (and not NaN); "
        f"got {shown}. Map an unconstrained parameter into the support, e.g. "
        "jnp.exp(log_scale) or jax.nn.softplus(raw). Under jax.jit the same "
        "parameters give NaN log-densities, samples and gradients instead."
      )

  def _poison(self, values: jax.Array) -> jax.Array:
    """``values`` unchanged for valid parameters, NaN (value and derivatives) otherwise."""
    valid = self._parameters_valid()
    if valid is None:
      return values
    if _CHECKED[-1]:
      checkify.check(
        valid,
        f"{type(self).__name__}: {self._constraint_description()} "
        "(traced parameters out of support, reported by "
        "scoregrad.dists.checked_parameters)",
      )
    factor = jnp.where(valid, jnp.ones((), values.dtype), jnp.full((), jnp.nan, values.dtype))
    return values * jax.lax.stop_gradient(factor)

  @classmethod
  def _unflatten(cls, children):
    obj = object.__new__(cls)
    for field, child in zip(dataclasses.fields(cls), children):
      object.__setattr__(obj, field.name, child)
    return obj

  @property
  def event_shape(self) -> tuple[int, ...]:
    raise NotImplementedError(f"{type(self).__name__} must define the `event_shape` property.")

  @property
  def dtype(self):
    return jnp.result_type(*[getattr(self, f.name) for f in dataclasses.fields(self)])

  def sample(self, key: jax.Array, sample_shape: Sequence[int] = ()) -> jax.Array:
    """Draws samples of shape ``sample_shape + event_shape``."""
    if isinstance(sample_shape, int):
      sample_shape = (sample_shape,)
    x = self._sample(key, tuple(sample_shape) + tuple(self.event_shape))
    return self._poison(x) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x

  def _sample(self, key, shape):
    raise NotImplementedError(
      f"{type(self).__name__} must define `_sample(key, shape)` returning samples of "
      "shape `sample_shape + event_shape`."
    )

  def log_prob(self, x: jax.Array) -> jax.Array:
    raise NotImplementedError(
      f"{type(self).__name__} must define `log_prob(x)` summed over the event."
    )

  # Plates (``scoregrad.plate``): how the value's leading axes split into
  # independent elements. ``plate_event_ndim``: trailing axes of the value that
  # form one joint variable (Dirichlet's simplex: 1); ``plate_extra_dims``:
  # trailing axes every parameter has beyond the value's (Categorical's logits: 1).
  plate_event_ndim: ClassVar[int] = 0
  plate_extra_dims: ClassVar[int] = 0

  def plate_log_prob(self, x: jax.Array, batch_ndim: int) -> jax.Array:
    """Log-densities of the elements along the value's ``batch_ndim`` leading axes.

    The family is a product over the elements of its value (every built-in
    except along ``plate_event_ndim`` trailing axes), so
    ``log_prob(x) == plate_log_prob(x, k).sum()``; element ``i`` is the
    family with every parameter broadcast to the value's shape (plus
    ``plate_extra_dims``) and indexed at ``i``. Raises NotApplicableError when
    the leading axes are not independent elements.
    """
    x = jnp.asarray(x)
    if batch_ndim > x.ndim - self.plate_event_ndim:
      raise NotApplicableError(
        f"{type(self).__name__} with a value of shape {x.shape}: its trailing "
        f"{self.plate_event_ndim} axes are one joint variable, so at most "
        f"{x.ndim - self.plate_event_ndim} leading axes are independent elements; "
        f"{batch_ndim} were asked for."
      )
    leaves = []
    for f in _fields(self):
      leaf = jnp.asarray(getattr(self, f.name))
      extra = leaf.shape[leaf.ndim - self.plate_extra_dims :] if self.plate_extra_dims else ()
      leaves.append(jnp.broadcast_to(leaf, x.shape + tuple(extra)))
    cls = type(self)

    def one(x_i, *params):
      return cls._unflatten(params).log_prob(x_i)

    fn = one
    for _ in range(batch_ndim):
      fn = jax.vmap(fn)
    return fn(x, *leaves)

  def _sum_event(self, values: jax.Array) -> jax.Array:
    """Sums the trailing event dimensions of elementwise log-densities."""
    n = len(self.event_shape)
    return jnp.sum(values, axis=tuple(range(values.ndim - n, values.ndim))) if n else values


_CHECKED = [False]


@contextlib.contextmanager
def checked_parameters(enabled: bool = True):
  """Opt-in runtime check of traced parameters, inside ``jax.jit``, via checkify.

  Concrete out-of-support parameters always raise when a distribution is
  built; traced ones (under ``jit``/``grad``/``vmap``) give NaN by default.
  Functions *traced* inside this context also record a
  ``jax.experimental.checkify`` error for them, so that
  ``checkify.checkify(jax.jit(step))`` returns an error to ``.throw()``
  (a function traced inside the context must be run through ``checkify``).

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> from jax.experimental import checkify
    >>> with sg.dists.checked_parameters():
    ...   f = checkify.checkify(jax.jit(lambda s: sg.dists.Normal(0.0, s).log_prob(1.0)))
    ...   err, value = f(jnp.array(-1.0))
    >>> err.get() is not None
    True
  """
  _CHECKED.append(bool(enabled))
  try:
    yield
  finally:
    _CHECKED.pop()


def _checking_init(init):
  @functools.wraps(init)
  def wrapped(self, *args, **kwargs):
    init(self, *args, **kwargs)
    if type(self).__init__ is wrapped:  # the most derived class checks, once
      self._check_concrete_parameters()

  return wrapped


def _poisoning_log_prob(log_prob):
  @functools.wraps(log_prob)
  def wrapped(self, x):
    return self._poison(log_prob(self, x))

  return wrapped


def _sample_shape_tuple(sample_shape) -> tuple[int, ...]:
  if isinstance(sample_shape, int):
    return (sample_shape,)
  return tuple(sample_shape)


class _ForeignDistribution:
  """Wraps a NumPyro, distrax or TFP-on-JAX distribution in scoregrad's protocol.

  * ``sample(key, sample_shape)`` calls ``d.sample(key, sample_shape)`` for
    NumPyro and ``d.sample(seed=key, sample_shape=...)`` otherwise (distrax and
    TFP's convention).
  * ``log_prob(x)`` sums the foreign log-density over the batch dimensions, so
    the whole object is one event (like scoregrad's built-ins).
  * ``reparameterized`` from NumPyro's ``has_rsample`` or distrax/TFP's
    ``reparameterization_type``.

  Joint distributions (TFP's ``JointDistributionNamed``/``Sequential``/
  ``Coroutine``) are supported: their samples are pytrees (a dict, a list or
  a namedtuple of arrays) and ``batch_shape``, ``event_shape`` and
  ``reparameterization_type`` are structures with one entry per component.
  Then ``event_shape`` is the same structure (each component's batch shape
  followed by its event shape); ``log_prob`` sums over the batch dimensions,
  which must be the same for every component (TFP adds the components'
  log-densities with broadcasting, which would count a component once per
  element of another's batch); and ``reparameterized`` is ``True`` only when
  every component is fully reparameterized (``not_reparameterized`` names the
  others). A single ``batch_shape`` with a structured ``event_shape`` (TFP's
  ``...AutoBatched`` joints) applies to every component.
  """

  def __init__(self, dist: Any, name: str = "dist"):
    self.dist = dist
    module = type(dist).__module__ or ""
    self._numpyro = module.startswith("numpyro")
    batch = _foreign_shapes(dist.batch_shape, name, "batch_shape")
    event = _foreign_shapes(dist.event_shape, name, "event_shape")
    self._batch_ndims = _common_batch_ndims(dist, batch, name)
    self.event_shape = _joint_event_shape(batch, event)
    self.not_reparameterized = _foreign_not_reparameterized(dist)
    self.reparameterized = self.not_reparameterized is not None and not self.not_reparameterized

  def plate_log_prob(self, x, batch_ndim: int):
    """The foreign log-density per element of the leading ``batch_ndim`` batch axes
    (summed over the other batch axes): ``scoregrad.plate``."""
    lp = jnp.asarray(self.dist.log_prob(x))
    if lp.ndim < batch_ndim or self._batch_ndims < batch_ndim:
      raise NotApplicableError(
        f"the foreign {type(self.dist).__name__} has {self._batch_ndims} batch "
        f"dimensions, fewer than the plates' {batch_ndim}."
      )
    return jnp.sum(lp, axis=tuple(range(batch_ndim, lp.ndim)))

  def sample(self, key, sample_shape=()):
    shape = _sample_shape_tuple(sample_shape)
    if self._numpyro:
      return self.dist.sample(key, shape)
    return self.dist.sample(seed=key, sample_shape=shape)

  def log_prob(self, x):
    lp = jnp.asarray(self.dist.log_prob(x))
    n = self._batch_ndims
    if lp.ndim < n:
      raise ValueError(
        f"The log_prob of the foreign distribution {type(self.dist).__name__} has "
        f"shape {lp.shape}: fewer than its {n} batch dimensions, which scoregrad "
        "sums over (making the whole batch one event). Pass `log_prob` samples "
        "shaped sample_shape + batch_shape + event_shape, as its `sample` draws them."
      )
    return jnp.sum(lp, axis=tuple(range(lp.ndim - n, lp.ndim))) if n else lp


def _is_shape(value: Any) -> bool:
  """Is ``value`` one shape (a tuple/list/TensorShape of ints), not a structure of shapes?"""
  if isinstance(value, (str, bytes, Mapping)):
    return False
  try:
    dims = list(value)
  except TypeError:
    return False
  try:
    for d in dims:
      operator.index(d)
  except TypeError:
    return False
  return True


def _foreign_shapes(value: Any, name: str, attribute: str) -> Any:
  """A shape as a tuple of ints, or a structure (dict, list, ...) of such tuples."""

  def as_tuple(s):
    if not _is_shape(s):
      raise TypeError(
        f"`{name}`.{attribute} must be a shape (a tuple of ints or a TensorShape), "
        f"or for a joint distribution a dict/list/tuple of shapes, one per "
        f"component; got {value!r}. scoregrad reads it to sum log_prob over the "
        "batch dimensions: wrap the distribution with "
        "scoregrad.dists.from_log_prob(log_prob_fn, sample_fn) instead."
      )
    return tuple(operator.index(d) for d in s)

  return jax.tree_util.tree_map(as_tuple, value, is_leaf=lambda v: _is_shape(v) or v is None)


def _component_name(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _shape_components(shapes: Any) -> list[tuple[str, tuple[int, ...]]]:
  """``(component name, shape)`` pairs; one pair with name ``""`` for a single shape."""
  leaves = jax.tree_util.tree_flatten_with_path(
    shapes, is_leaf=lambda v: isinstance(v, tuple) and _is_shape(v)
  )[0]
  return [(_component_name(path), leaf) for path, leaf in leaves]


def _common_batch_ndims(dist, batch: Any, name: str) -> int:
  """The number of batch dimensions log_prob returns (the same for every component)."""
  components = _shape_components(batch)
  shapes = {shape for _, shape in components}
  if len(shapes) > 1:
    shown = ", ".join(f"{c}: {s}" for c, s in components)
    raise ValueError(
      f"`{name}` is a joint distribution ({type(dist).__name__}) whose components "
      f"have different batch shapes ({shown}). Its log_prob adds the components' "
      "log-densities with broadcasting, which counts a component once per element "
      "of another's batch, so its sum over the batch is not the joint log-density "
      "that the estimators need. Give every component the same batch shape, or make "
      "the batch dimensions part of each component's event (e.g. "
      "tfd.Independent(component, reinterpreted_batch_ndims=...), or "
      "JointDistributionNamedAutoBatched)."
    )
  return len(shapes.pop()) if shapes else 0


def _joint_event_shape(batch: Any, event: Any) -> Any:
  """``batch + event`` per component (a tuple for a single distribution)."""
  leaf = lambda v: isinstance(v, tuple) and _is_shape(v)
  if leaf(batch) and leaf(event):
    return batch + event
  if leaf(batch):  # one batch shape for every component (TFP's AutoBatched joints)
    return jax.tree_util.tree_map(lambda e: batch + e, event, is_leaf=leaf)
  if leaf(event):
    return jax.tree_util.tree_map(lambda b: b + event, batch, is_leaf=leaf)
  return jax.tree_util.tree_map(lambda b, e: b + e, batch, event, is_leaf=leaf)


def _foreign_not_reparameterized(dist) -> Optional[tuple[str, ...]]:
  """Names of the components that are not fully reparameterized (``()``: all are).

  ``None`` when the distribution does not say. A joint distribution's
  ``reparameterization_type`` is a structure with one entry per component
  (TFP); each entry is decided on its own, so the ``FULLY_REPARAMETERIZED``
  of one component never vouches for another.
  """
  if hasattr(dist, "has_rsample"):
    return () if bool(dist.has_rsample) else ("",)
  rt = getattr(dist, "reparameterization_type", None)
  if rt is None:
    return None
  leaves = jax.tree_util.tree_flatten_with_path(rt, is_leaf=lambda v: v is None)[0]
  if not leaves:
    return None
  full = lambda v: v is not None and "FULLY_REPARAMETERIZED" in str(v).upper()
  return tuple(_component_name(path) for path, v in leaves if not full(v))


def all_families(cls=None) -> list[type[Any]]:
  cls = Distribution if cls is None else cls
  out = []
  for sub in cls.__subclasses__():
    out.append(sub)
    out.extend(all_families(sub))
  return out


def families_with(fact: str) -> tuple[str, ...]:
  """Names of the distribution classes that define ``fact``, in definition order
  (for error messages: they list what an estimator supports, new families included)."""
  names = [
    c.__name__
    for c in all_families()
    if callable(getattr(c, fact, None)) and not c.__name__.startswith("_")
  ]
  return tuple(dict.fromkeys(names))


def check_reparameterized(dist, name: str = "dist") -> None:
  """Raises unless ``dist`` samples differentiably (a zero gradient otherwise)."""
  if not getattr(dist, "reparameterized", False):
    parts = [c for c in (getattr(dist, "not_reparameterized", None) or ()) if c]
    which = (
      f" (a joint distribution: its components {', '.join(map(repr, parts))} are "
      "not reparameterized, and pathwise needs every component to be)"
      if parts
      else ""
    )
    raise NotApplicableError(
      f"The pathwise estimator needs a reparameterized distribution, but "
      f"`{name}` is {type(getattr(dist, 'dist', dist)).__name__}{which}, whose samples "
      "are not differentiable functions of its parameters: JAX would silently "
      "return a zero gradient through them (e.g. through jax.random.bernoulli). "
      "Use scoregrad.score_function(num_samples=...) instead, which needs only "
      "log_prob; for discrete variables see also the discrete estimators."
    )


def foreign_parameter(dist: Any, name: str) -> Optional[jax.Array]:
  """A foreign distribution's parameter ``name`` as an array, or None if absent.

  Reads the attribute (NumPyro, distrax) or TFP's ``<name>_parameter()``.
  """
  value = getattr(dist, name, None)
  if value is None and callable(getattr(dist, f"{name}_parameter", None)):
    value = getattr(dist, f"{name}_parameter")()
  if value is None or callable(value):
    return None
  try:
    return jnp.asarray(value)
  except Exception:  # pylint: disable=broad-except  (a TFP LinearOperator, ...)
    return None


def foreign_binary_logits(dist: Any) -> Optional[jax.Array]:
  """A foreign two-outcome family's logits (Bernoulli, Binomial, Geometric), or None.

  Its ``logits``, or log p − log(1 − p) from its ``probs`` (read first for a
  ``...Probs`` class, whose ``logits`` would be derived from them anyway).
  """
  logits = None
  if not type(dist).__name__.endswith("Probs"):
    logits = foreign_parameter(dist, "logits")
  if logits is None:
    probs = foreign_parameter(dist, "probs")
    if probs is None:
      return None
    logits = jnp.log(probs) - jnp.log1p(-probs)
  return logits


def foreign_full_shape(dist: Any) -> Optional[tuple[int, ...]]:
  """``batch_shape + event_shape`` of a single (non-joint) foreign distribution."""
  try:
    batch, event = tuple(dist.batch_shape), tuple(dist.event_shape)
    return tuple(operator.index(d) for d in batch + event)
  except Exception:  # pylint: disable=broad-except
    return None


def _from_foreign(obj: Any) -> Optional[Any]:
  """The built-in family of a foreign instance, via the families' ``from_foreign``."""
  name = type(obj).__name__
  if name == "Independent" and getattr(obj, "base_dist", None) is not None:
    # Reinterpreting batch dimensions as event ones changes nothing here:
    # the whole object is one event either way.
    return _from_foreign(obj.base_dist)
  for family in all_families():
    if name in getattr(family, "foreign_names", ()):
      converted = family.from_foreign(obj)
      if converted is not None:
        return converted
  return None


_FOREIGN_CLASSES: dict[type, type] = {}


def _foreign_class(foreign: type) -> type:
  """A subclass of the adapter named like the foreign class, for messages."""
  if foreign not in _FOREIGN_CLASSES:
    package = (foreign.__module__ or "").split(".")[0]
    label = f"{package}.{foreign.__name__}" if package else foreign.__name__
    doc = _ForeignDistribution.__doc__
    _FOREIGN_CLASSES[foreign] = type(label, (_ForeignDistribution,), {"__doc__": doc})
  return _FOREIGN_CLASSES[foreign]


def is_distribution(obj: Any) -> bool:
  return callable(getattr(obj, "sample", None)) and callable(getattr(obj, "log_prob", None))


def as_distribution(obj: Any, *, name: str = "dist") -> Any:
  """Returns ``obj`` in scoregrad's distribution protocol.

  scoregrad distributions (and any object with a ``reparameterized`` attribute,
  ``sample(key, sample_shape)`` and ``log_prob``) pass through unchanged.
  NumPyro, distrax and TFP-on-JAX instances of a family scoregrad has are
  converted to the built-in family (its ``from_foreign``), the others are
  wrapped (duck-typed: those packages are never imported here), in a class
  named after the foreign one (``numpyro.Beta``) so that messages name it.

  Raises:
    TypeError: if ``obj`` has no ``sample``/``log_prob`` methods.
  """
  if isinstance(obj, (Distribution, _ForeignDistribution)):
    return obj
  if not is_distribution(obj):
    raise TypeError(
      f"`{name}` must be a distribution with `sample` and `log_prob` methods "
      f"(scoregrad.dists, NumPyro, distrax or TFP-on-JAX); got {obj!r} of type "
      f"{type(obj).__name__}. If you have a log-density function, wrap it with "
      "scoregrad.dists.from_log_prob(log_prob_fn, sample_fn)."
    )
  if (
    hasattr(obj, "batch_shape")
    and hasattr(obj, "event_shape")
    and (hasattr(obj, "has_rsample") or hasattr(obj, "reparameterization_type"))
  ):
    converted = _from_foreign(obj)
    if converted is not None:
      return converted
    return _foreign_class(type(obj))(obj, name)
  if hasattr(type(obj), "reparameterized") or hasattr(obj, "reparameterized"):
    return obj
  raise TypeError(
    f"`{name}` ({type(obj).__name__}) has `sample` and `log_prob` but scoregrad "
    "cannot tell whether its samples are reparameterized: give it a boolean "
    "`reparameterized` attribute, or build it with "
    "scoregrad.dists.from_log_prob(log_prob_fn, sample_fn, reparameterized=...)."
  )
