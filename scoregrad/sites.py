"""Site estimators for ``scoregrad.sample(name, dist, key, estimator=...)``.

Each function returns a site-estimator value: how the site is drawn, what runs
of the program it needs and the term it adds to :func:`scoregrad.surrogate`
(one protocol, one module each). The strings ``"score_function"``,
``"pathwise"``, ``"exact"``, ``"disarm"``, ``"measure_valued"`` and
``"rodeo"`` remain aliases of these values with their default settings.

These are per-site methods inside a program; the ``GradientEstimator``
factories of the same names (``scoregrad.disarm(num_pairs=...)``, ...)
estimate ∇θ E[f] for one distribution and are not accepted here.

Example:
  >>> import jax, scoregrad as sg
  >>> def program(p, key):
  ...   k1, k2 = jax.random.split(key)
  ...   z = sg.sample("z", sg.dists.Bernoulli(logits=p), k1, estimator=sg.sites.disarm())
  ...   c = sg.sample("c", sg.dists.Bernoulli(logits=p * z), k2, estimator=sg.sites.exact())
  ...   return z + 2.0 * c
  >>> g = jax.grad(sg.surrogate(program))(0.3, jax.random.key(0))
"""

from __future__ import annotations

from typing import Any, Optional

from scoregrad._src.graphs.disarm_site import DisARM
from scoregrad._src.graphs.exact_site import Exact
from scoregrad._src.graphs.measure_valued_site import MeasureValued
from scoregrad._src.graphs.pathwise_site import Pathwise
from scoregrad._src.graphs.protocol import SiteEstimator
from scoregrad._src.graphs.rodeo_site import Rodeo, check_rodeo
from scoregrad._src.graphs.score_function_site import ScoreFunction

__all__ = (
  "SiteEstimator",
  "disarm",
  "exact",
  "measure_valued",
  "pathwise",
  "rodeo",
  "score_function",
)


def score_function() -> SiteEstimator:
  """The score function (REINFORCE/DiCE) at a site, any distribution; every order.

  The sample is held fixed and log p(x | parents; θ) multiplies the costs
  downstream of the site; its baseline is the surrogate's ``baseline=``.
  The default for families that are not reparameterized.
  """
  return ScoreFunction()


def pathwise() -> SiteEstimator:
  """The pathwise (reparameterization) estimator at a site; every order.

  Needs ``dist.reparameterized``; the default for such families.
  """
  return Pathwise()


def exact() -> SiteEstimator:
  """Enumerate a small discrete site (Bernoulli, Categorical): exact at every order.

  The rest of the program runs once per configuration, weighted by its
  probability; ``surrogate(..., max_configurations=)`` bounds the joint grid.
  """
  return Exact()


def disarm() -> SiteEstimator:
  """DisARM at a factorised Bernoulli site (Dong et al. 2020); first order only.

  With m disarm sites the program runs m + 1 times per sample (one antithetic
  run per site).
  """
  return DisARM()


def measure_valued() -> SiteEstimator:
  """The measure-valued (weak-derivative) estimator at a site; first order only.

  For families with a weak derivative (Normal, Laplace, Bernoulli,
  Categorical, Poisson, Exponential, Gamma rate); about 2·d reruns of the rest
  of the program per site of size d.
  """
  return MeasureValued()


def rodeo(
  *,
  num_samples: Optional[int] = None,
  hidden_size: int = 100,
  learning_rate: Optional[float] = None,
  optimizer: Any = None,
) -> SiteEstimator:
  """RODEO at a factorised Bernoulli site (Shi et al. 2022); first order, stateful.

  Args:
    num_samples: K ≥ 2 draws of the site per run; ``None`` takes the
      surrogate's ``rodeo=dict(num_samples=K, ...)``.
    hidden_size, learning_rate, optimizer: as in :func:`scoregrad.rodeo`
      (only with ``num_samples``).

  The control variates are learned in the surrogate's state
  (``loss.init(params, key)``; ``loss(params, key, state) -> (value, state)``).
  """
  if num_samples is None:
    if learning_rate is not None or optimizer is not None or hidden_size != 100:
      raise ValueError(
        "sg.sites.rodeo(): hidden_size, learning_rate and optimizer need num_samples "
        f"(K >= 2 draws); got num_samples=None, hidden_size={hidden_size!r}, "
        f"learning_rate={learning_rate!r}, optimizer={optimizer!r}."
      )
    return Rodeo()
  options: dict[str, Any] = {"num_samples": num_samples, "hidden_size": hidden_size}
  if learning_rate is not None:
    options["learning_rate"] = learning_rate
  if optimizer is not None:
    options["optimizer"] = optimizer
  return Rodeo(check_rodeo(options))
