"""Distributions: pytrees with ``sample(key, sample_shape)``, ``log_prob(x)``
(summed over the event) and ``reparameterized``."""

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
from scoregrad.dists._user import UserDistribution
from scoregrad.dists._user import from_log_prob

__all__ = (
    "Bernoulli",
    "Categorical",
    "Distribution",
    "Exponential",
    "Gamma",
    "Laplace",
    "MultivariateNormalTriL",
    "Normal",
    "Poisson",
    "UserDistribution",
    "as_distribution",
    "checked_parameters",
    "from_log_prob",
)
