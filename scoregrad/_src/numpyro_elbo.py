"""``scoregrad.numpyro.ELBO``: a NumPyro ELBO loss built on :func:`scoregrad.surrogate`.

NumPyro's ``SVI(model, guide, optimizer, loss=...)`` calls
``loss.loss(rng_key, param_map, model, guide, *args, **kwargs)`` (and
``loss_with_mutable_state``) with the constrained parameters and
differentiates the result. This loss writes the pair (guide, model) as ONE
scoregrad program and returns the value of its DiCE surrogate, so that the
gradient SVI takes is scoregrad's estimator, with per-site estimators,
per-site baselines and per-element credit from NumPyro's plates:

* the guide runs first (NumPyro's ``seed``), each of its sample sites
  becoming an ``sg.sample`` site (drawn with the key NumPyro's seed handler
  gives it, inside ``sg.plate``s that mirror the site's
  ``cond_indep_stack``), and reporting the cost log q(x) (times the site's
  subsampling scale);
* the model then runs with the guide's values (and plates' subsamples)
  replayed, each of its sample sites reporting −log p(x) (observed sites
  with their data, ``numpyro.factor`` sites their factor);
* the surrogate's value is the mean over ``num_particles`` of Σ log q − Σ
  log p = −ELBO (NumPyro's loss convention), and its derivatives are the
  surrogate's: pathwise for reparameterized guide sites, score function with
  the site's baseline otherwise, or the estimator named in ``estimators``.

With the same ``rng_key`` the particles' keys and the guide's draws are
NumPyro's own (``Trace_ELBO`` splits the key the same way), so for guides
whose families sample as NumPyro's do (Normal) the value equals
``Trace_ELBO``'s.

Not supported (a clear error naming the site): enumeration markers
(``infer={"enumerate": ...}``; use ``estimators={"z": "exact"}`` on the
guide site instead), observed sites or ``numpyro.factor`` in the guide, model
latent sites the guide does not sample, stateful baselines (SVI keeps no
loss state).

References:
  Phan, Pradhan & Jankowiak, "Composable Effects for Flexible and Accelerated
  Probabilistic Programming in NumPyro", 2019.
  Schulman et al., "Gradient Estimation Using Stochastic Computation Graphs",
  NeurIPS 2015; Foerster et al., DiCE, ICML 2018; Mao et al., ICML 2019.
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from scoregrad._src import baselines as _baselines
from scoregrad._src.graphs import cost, plate, sample, surrogate
from scoregrad._src.validation import check_positive_int


def _numpyro():
  try:
    import numpyro  # noqa: F401  (the optional dependency)
    from numpyro import handlers
    from numpyro.primitives import Messenger
  except ImportError:
    raise ImportError(
      "scoregrad.numpyro.ELBO needs NumPyro, which is not installed: "
      "`pip install numpyro` (or `pip install scoregrad[numpyro]`)."
    ) from None
  return handlers, Messenger


class ELBO:
  """A NumPyro ELBO (``numpyro.infer.SVI(..., loss=ELBO(...))``) whose gradient is scoregrad's.

  The loss is −ELBO = E_q[Σ log q(x) − Σ log p(x, data)], estimated with
  ``num_particles`` independent runs of the guide and the model, and
  differentiated through the DiCE surrogate of :func:`scoregrad.surrogate`
  (the program is the guide followed by the model; see
  :mod:`scoregrad._src.numpyro_elbo`): guide sites in NumPyro plates get
  per-element credit and per-element baselines (:func:`scoregrad.plate`),
  each guide site its own estimator. Every derivative order is unbiased when
  every guide site's estimator allows it (score function, pathwise, exact).

  Args:
    num_particles: the number of particles (runs of guide and model) per step.
    baseline: for the score-function guide sites: one spec or ``{site: spec}``
      (``scoregrad.baselines.leave_one_out()`` needs num_particles ≥ 2,
      ``constant(c)``, None). Stateful baselines are refused (SVI keeps no
      loss state).
    estimators: ``{guide site name: estimator}``, values or names from
      :mod:`scoregrad.sites` (``"score_function"``, ``"exact"``,
      ``"disarm"``, ...); the others default to pathwise (reparameterized) or
      score function.
    max_configurations: as in :func:`scoregrad.surrogate`, for ``"exact"`` sites.

  Example:
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, optax
    >>> import scoregrad as sg
    >>> def model(x):
    ...   with numpyro.plate("data", x.shape[0]):
    ...     z = numpyro.sample("z", dist.Bernoulli(0.5))
    ...     numpyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)
    >>> def guide(x):
    ...   logits = numpyro.param("logits", jnp.zeros(x.shape[0]))
    ...   with numpyro.plate("data", x.shape[0]):
    ...     numpyro.sample("z", dist.Bernoulli(logits=logits))
    >>> svi = numpyro.infer.SVI(model, guide, optax.adam(0.1), loss=sg.numpyro.ELBO(
    ...   num_particles=4, baseline=sg.baselines.leave_one_out()))
    >>> result = svi.run(jax.random.key(0), 20, jnp.array([-1.0, 1.0, 1.2]), progress_bar=False)
  """

  # What numpyro.infer.SVI and other NumPyro code read from an ELBO.
  can_infer_discrete = True  # discrete guide sites: score function, exact, DisARM, ...

  def __init__(
    self,
    num_particles: int = 1,
    *,
    baseline: Any = None,
    estimators: Optional[Mapping[str, Any]] = None,
    max_configurations: int = 2**12,
  ):
    self.num_particles = check_positive_int("num_particles", num_particles)
    specs = baseline.values() if isinstance(baseline, Mapping) else [baseline]
    for spec in specs:
      if isinstance(spec, _baselines.Baseline) and spec.stateful:
        raise ValueError(
          f"scoregrad.numpyro.ELBO: baseline={spec.name} keeps state across steps, and "
          "NumPyro's SVI keeps no state for its loss. Use leave_one_out() (with "
          "num_particles >= 2), constant(c) or None."
        )
    if estimators is not None and not isinstance(estimators, Mapping):
      raise TypeError(
        "`estimators` must be None or a dict {guide site name: estimator}; got "
        f"estimators={estimators!r}."
      )
    self.baseline = baseline
    self.estimators = dict(estimators or {})
    self.max_configurations = max_configurations

  def __repr__(self):
    return f"scoregrad.numpyro.ELBO(num_particles={self.num_particles})"

  def surrogate(self, model, guide, *args, **kwargs):
    """The :class:`scoregrad.Surrogate` of (guide, model): ``fn(param_map, rng_key)``."""
    program = _program(model, guide, args, kwargs, self.estimators)
    return surrogate(
      program,
      num_samples=None if self.num_particles == 1 else self.num_particles,
      baseline=self.baseline,
      max_configurations=self.max_configurations,
    )

  def loss(self, rng_key, param_map, model, guide, *args, **kwargs):
    """−ELBO estimate (its derivatives: the surrogate's), as NumPyro's ``ELBO.loss``."""
    return self.surrogate(model, guide, *args, **kwargs)(param_map, rng_key)

  def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
    """``{"loss": loss, "mutable_state": None}`` (NumPyro's interface; no mutable sites)."""
    return {
      "loss": self.loss(rng_key, param_map, model, guide, *args, **kwargs),
      "mutable_state": None,
    }


def _program(model, guide, args, kwargs, estimators):
  handlers, messenger_base = _numpyro()

  class Bridge(messenger_base):
    """Turns NumPyro sample sites into scoregrad sites and costs."""

    def __init__(self, role, params, latents, plates):
      super().__init__()
      self.role, self.params, self.latents, self.plates = role, params, latents, plates

    def process_message(self, msg):
      kind, name = msg["type"], msg["name"]
      if kind == "param":
        if name in self.params:
          msg["value"] = self.params[name]
        return
      if kind == "plate":
        if self.role == "model" and name in self.plates:
          msg["value"] = self.plates[name]
        return
      if kind != "sample":
        return
      where = f"{self.role} site {name!r}"
      infer = msg.get("infer") or {}
      if infer.get("enumerate"):
        raise ValueError(
          f"scoregrad.numpyro.ELBO: the {where} has the enumeration marker "
          f"infer={{'enumerate': {infer['enumerate']!r}}}, which this ELBO does not "
          "read (it would be sampled silently). Remove the marker; to sum a discrete "
          "latent exactly, sample it in the guide with estimators={"
          f"{name!r}: 'exact'}}."
        )
      fn, scale = msg["fn"], msg.get("scale")
      frames = [(f.name, f.size, f.dim) for f in msg.get("cond_indep_stack") or ()]
      if self.role == "guide":
        if msg.get("is_observed"):
          raise ValueError(
            f"scoregrad.numpyro.ELBO: the guide site {name!r} is observed (an `obs=` "
            "value or numpyro.factor): the guide must only sample its latents. Move "
            "the factor or observation to the model."
          )
        if msg.get("sample_shape"):
          raise ValueError(
            f"scoregrad.numpyro.ELBO: the guide site {name!r} has sample_shape "
            f"{msg['sample_shape']}; use a plate (or num_particles) instead."
          )
        key = msg["kwargs"].get("rng_key")
        with _plates(frames):
          value = sample(name, fn, key, estimator=estimators.get(name))
          cost(f"log q({name})", _scaled(_block(fn.log_prob(value), frames), scale))
        msg["value"] = value
        self.latents[name] = value
      else:
        if msg.get("is_observed"):
          value = msg["value"]
        elif name in self.latents:
          value = self.latents[name]
          msg["value"] = value
        else:
          raise ValueError(
            f"scoregrad.numpyro.ELBO: the model's latent site {name!r} is not sampled "
            f"by the guide (guide sites: {sorted(self.latents)}). Sample it in the guide."
          )
        with _plates(frames):
          cost(f"-log p({name})", -_scaled(_block(fn.log_prob(value), frames), scale))

    def postprocess_message(self, msg):
      if self.role == "guide" and msg["type"] == "plate":
        self.plates[msg["name"]] = msg["value"]

  def program(params, key):
    model_seed, guide_seed = jax.random.split(key)
    latents: dict = {}
    plates: dict = {}
    with Bridge("guide", params, latents, plates), handlers.seed(rng_seed=guide_seed):
      guide(*args, **kwargs)
    unknown = sorted(set(estimators) - set(latents))
    if unknown:
      raise ValueError(
        f"scoregrad.numpyro.ELBO: `estimators` names {unknown}, which the guide does "
        f"not sample; its sample sites are {sorted(latents)}."
      )
    with Bridge("model", params, latents, plates), handlers.seed(rng_seed=model_seed):
      model(*args, **kwargs)

  return program


def _block(log_prob, frames):
  """NumPyro's log-probs (batch shape) summed over the batch axes left of the plates'."""
  lp = jnp.asarray(log_prob)
  length = max((-dim for _, _, dim in frames), default=0)
  return jnp.sum(lp, axis=tuple(range(lp.ndim - length))) if lp.ndim > length else lp


def _scaled(log_prob, scale):
  lp = jnp.asarray(log_prob)
  return lp if scale is None else lp * scale


@contextlib.contextmanager
def _plates(frames):
  with contextlib.ExitStack() as stack:
    for name, size, dim in frames:
      stack.enter_context(plate(name, int(size), dim=dim))
    yield
