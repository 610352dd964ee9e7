"""scoregrad: Monte Carlo gradient estimation in JAX."""

from scoregrad import baselines
from scoregrad import diagnostics
from scoregrad import dists
from scoregrad import testing
from scoregrad.base import EmptyState
from scoregrad.base import Estimate
from scoregrad.base import GradientEstimator
from scoregrad.expectation import expectation
from scoregrad.pathwise import pathwise
from scoregrad.score_function import ScoreFunctionState
from scoregrad.score_function import score_function
from scoregrad.surrogate import dice
from scoregrad.surrogate import magic_box
from scoregrad.surrogate import score_function_surrogate

__version__ = "0.1.0"

__all__ = (
    "EmptyState",
    "Estimate",
    "GradientEstimator",
    "ScoreFunctionState",
    "baselines",
    "diagnostics",
    "dice",
    "dists",
    "expectation",
    "magic_box",
    "pathwise",
    "score_function",
    "score_function_surrogate",
    "testing",
)
