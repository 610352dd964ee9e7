"""Distributions: pytrees with ``sample(key, sample_shape)``, ``log_prob(x)``
(summed over the event) and ``reparameterized``.

**The event convention.** A built-in distribution treats every axis of its
parameters as one event (like ``distrax.Independent`` over all axes):
``Normal(loc, scale)`` with ``loc.shape == (d,)`` is one ``d``-dimensional
distribution, ``sample(key)`` has shape ``(d,)`` and ``log_prob(x)`` is the
scalar ``Σ_j log N(x_j; loc_j, scale_j)``. ``sample(key, (n,))`` draws ``n``
such events, shape ``(n, d)``, and ``log_prob`` of them has shape ``(n,)``.
There is no batch shape: for a batch of independent distributions (one per
data point, say) use ``jax.vmap`` over the parameters, or fold the batch into
the event when the cost is a sum over it. Objects from NumPyro, distrax or
TFP-on-JAX are adapted the same way: their ``log_prob`` is summed over their
batch dimensions, so the whole object is one event.

Example:
  >>> import jax, jax.numpy as jnp
  >>> import scoregrad as sg
  >>> d = sg.dists.Normal(jnp.zeros(3), jnp.ones(3))
  >>> x = d.sample(jax.random.key(0), (5,))
  >>> x.shape, d.log_prob(x).shape
  ((5, 3), (5,))
"""

# Families are imported in the order error messages list them.
from scoregrad.dists._base import Distribution
from scoregrad.dists._base import as_distribution
from scoregrad.dists._base import checked_parameters
from scoregrad.dists.normal import Normal
from scoregrad.dists.multivariate_normal import MultivariateNormalTriL
from scoregrad.dists.bernoulli import Bernoulli
from scoregrad.dists.categorical import Categorical
from scoregrad.dists.poisson import Poisson
from scoregrad.dists.exponential import Exponential
from scoregrad.dists.gamma import Gamma
from scoregrad.dists.laplace import Laplace
from scoregrad.dists.lognormal import LogNormal
from scoregrad.dists.beta import Beta
from scoregrad.dists.dirichlet import Dirichlet
from scoregrad.dists.student_t import StudentT
from scoregrad.dists.von_mises import VonMises
from scoregrad.dists.binomial import Binomial
from scoregrad.dists.geometric import Geometric
from scoregrad.dists._user import UserDistribution
from scoregrad.dists._user import from_log_prob

__all__ = (
  "Bernoulli",
  "Beta",
  "Binomial",
  "Categorical",
  "Dirichlet",
  "Distribution",
  "Exponential",
  "Gamma",
  "Geometric",
  "Laplace",
  "LogNormal",
  "MultivariateNormalTriL",
  "Normal",
  "Poisson",
  "StudentT",
  "UserDistribution",
  "VonMises",
  "as_distribution",
  "checked_parameters",
  "from_log_prob",
)
