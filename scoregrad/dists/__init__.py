"""Distributions: pytrees with ``sample(key, sample_shape)``, ``log_prob(x)``
(summed over the event) and ``reparameterized``."""

from scoregrad.dists._base import Distribution
from scoregrad.dists._base import as_distribution
from scoregrad.dists.bernoulli import Bernoulli
from scoregrad.dists.categorical import Categorical
from scoregrad.dists.exponential import Exponential
from scoregrad.dists.from_log_prob import UserDistribution
from scoregrad.dists.from_log_prob import from_log_prob
from scoregrad.dists.gamma import Gamma
from scoregrad.dists.multivariate_normal import MultivariateNormalTriL
from scoregrad.dists.normal import Normal
from scoregrad.dists.poisson import Poisson

__all__ = (
    "Bernoulli",
    "Categorical",
    "Distribution",
    "Exponential",
    "Gamma",
    "MultivariateNormalTriL",
    "Normal",
    "Poisson",
    "UserDistribution",
    "as_distribution",
    "from_log_prob",
)
