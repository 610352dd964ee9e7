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
* ``weak_derivative_params()`` (dict of the canonical parameters η, broadcast
  to the event), ``weak_derivative(key, fn, base, fbase, active, coupling)``
  (per-sample weak-derivative estimates for each η) and
  ``weak_derivative_fixed`` (names of η it cannot differentiate): the
  measure-valued estimator.
* The logits structure of discrete families (Bernoulli, Categorical):
  ``perturb``, ``hard``, ``soft``, ``conditional_noise``, ``probs_of``,
  ``score_logits``, ``per_variable_log_probs``, ``num_configurations``,
  ``enumerate_configurations``, ``from_values`` and, for Bernoulli,
  ``antithetic_pair``: the discrete estimators.

Adding a family is one file: subclass :class:`Distribution`, define
``event_shape``, ``_sample`` and ``log_prob``, and the facts above that hold
for it; every estimator that can use them then supports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, ClassVar, Optional, Sequence

import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np


def _as_float_array(name: str, value: Any) -> jax.Array:
  """Converts a parameter to a floating array (Python floats do not recompile)."""
  try:
    arr = jnp.asarray(value)
  except TypeError:
    raise TypeError(
        f"Distribution parameter `{name}` must be array-like; got {value!r} of "
        f"type {type(value).__name__}.") from None
  if not jnp.issubdtype(arr.dtype, jnp.floating):
    arr = arr.astype(jnp.result_type(float))
  return arr


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

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    jax.tree_util.register_pytree_node(
        cls,
        lambda d: (tuple(getattr(d, f.name) for f in dataclasses.fields(d)), None),
        lambda _, children: cls._unflatten(children))
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
    values = [getattr(self, f.name) for f in dataclasses.fields(self)]
    if any(isinstance(v, jax.core.Tracer) for v in values):
      return  # Under jit/grad/vmap: NaN-poisoned instead (see _poison).
    with jax.ensure_compile_time_eval():   # concrete values inside an outer trace, too
      valid = self._parameters_valid()
    if valid is not None and not bool(valid):
      shown = ", ".join(f"{f.name}={np.asarray(getattr(self, f.name))!r}"
                        for f in dataclasses.fields(self))
      raise ValueError(
          f"{type(self).__name__}: {self._constraint_description()} (and not NaN); "
          f"got {shown}. Map an unconstrained parameter into the support, e.g. "
          "jnp.exp(log_scale) or jax.nn.softplus(raw). Under jax.jit the same "
          "parameters give NaN log-densities, samples and gradients instead.")

  def _poison(self, values: jax.Array) -> jax.Array:
    """``values`` unchanged for valid parameters, NaN (value and derivatives) otherwise."""
    valid = self._parameters_valid()
    if valid is None:
      return values
    if _CHECKED[-1]:
      checkify.check(valid, f"{type(self).__name__}: {self._constraint_description()} "
                     "(traced parameters out of support, reported by "
                     "scoregrad.dists.checked_parameters)")
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
        "shape `sample_shape + event_shape`.")

  def log_prob(self, x: jax.Array) -> jax.Array:
    raise NotImplementedError(
        f"{type(self).__name__} must define `log_prob(x)` summed over the event.")

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
    if type(self).__init__ is wrapped:   # the most derived class checks, once
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
  """

  def __init__(self, dist: Any):
    self.dist = dist
    module = type(dist).__module__ or ""
    self._numpyro = module.startswith("numpyro")
    self.reparameterized = _foreign_reparameterized(dist)
    self.event_shape = tuple(dist.batch_shape) + tuple(dist.event_shape)

  def sample(self, key, sample_shape=()):
    shape = _sample_shape_tuple(sample_shape)
    if self._numpyro:
      return self.dist.sample(key, shape)
    return self.dist.sample(seed=key, sample_shape=shape)

  def log_prob(self, x):
    lp = jnp.asarray(self.dist.log_prob(x))
    n = len(tuple(self.dist.batch_shape))
    return jnp.sum(lp, axis=tuple(range(lp.ndim - n, lp.ndim))) if n else lp


def _foreign_reparameterized(dist) -> bool:
  if hasattr(dist, "has_rsample"):
    return bool(dist.has_rsample)
  rt = getattr(dist, "reparameterization_type", None)
  return rt is not None and "FULLY_REPARAMETERIZED" in str(rt).upper()


def all_families(cls=None) -> list[type]:
  cls = Distribution if cls is None else cls
  out = []
  for sub in cls.__subclasses__():
    out.append(sub)
    out.extend(all_families(sub))
  return out


def families_with(fact: str) -> tuple[str, ...]:
  """Names of the distribution classes that define ``fact``, in definition order
  (for error messages: they list what an estimator supports, new families included)."""
  names = [c.__name__ for c in all_families()
           if callable(getattr(c, fact, None)) and not c.__name__.startswith("_")]
  return tuple(dict.fromkeys(names))


def check_reparameterized(dist, name: str = "dist") -> None:
  """Raises unless ``dist`` samples differentiably (a zero gradient otherwise)."""
  if not getattr(dist, "reparameterized", False):
    raise ValueError(
        f"The pathwise estimator needs a reparameterized distribution, but "
        f"`{name}` is {type(getattr(dist, 'dist', dist)).__name__}, whose samples "
        "are not differentiable functions of its parameters: JAX would silently "
        "return a zero gradient through them (e.g. through jax.random.bernoulli). "
        "Use scoregrad.score_function(num_samples=...) instead, which needs only "
        "log_prob; for discrete variables see also the discrete estimators.")


def is_distribution(obj: Any) -> bool:
  return (callable(getattr(obj, "sample", None)) and callable(getattr(obj, "log_prob", None)))


def as_distribution(obj: Any, *, name: str = "dist") -> Any:
  """Returns ``obj`` in scoregrad's distribution protocol.

  scoregrad distributions (and any object with a ``reparameterized`` attribute,
  ``sample(key, sample_shape)`` and ``log_prob``) pass through unchanged.
  NumPyro, distrax and TFP-on-JAX distributions are wrapped (duck-typed: those
  packages are never imported here).

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
        "scoregrad.dists.from_log_prob(log_prob_fn, sample_fn).")
  if hasattr(obj, "batch_shape") and hasattr(obj, "event_shape") and (
      hasattr(obj, "has_rsample") or hasattr(obj, "reparameterization_type")):
    return _ForeignDistribution(obj)
  if hasattr(type(obj), "reparameterized") or hasattr(obj, "reparameterized"):
    return obj
  raise TypeError(
      f"`{name}` ({type(obj).__name__}) has `sample` and `log_prob` but scoregrad "
      "cannot tell whether its samples are reparameterized: give it a boolean "
      "`reparameterized` attribute, or build it with "
      "scoregrad.dists.from_log_prob(log_prob_fn, sample_fn, reparameterized=...).")
