"""scoregrad: Monte Carlo gradient estimation in JAX."""

from scoregrad import baselines
from scoregrad import control_variates
from scoregrad import diagnostics
from scoregrad import discrete
from scoregrad import dists
from scoregrad import sampling
from scoregrad import testing
from scoregrad.base import EmptyState
from scoregrad.base import Estimate
from scoregrad.base import GradientEstimator
from scoregrad.discrete import RaoBlackwellState
from scoregrad.discrete import RebarState
from scoregrad.discrete import arm
from scoregrad.discrete import disarm
from scoregrad.discrete import exact
from scoregrad.discrete import gumbel_softmax
from scoregrad.discrete import rao_blackwell
from scoregrad.discrete import rebar
from scoregrad.discrete import relax
from scoregrad.discrete import straight_through
from scoregrad.discrete import vimco
from scoregrad.expectation import expectation
from scoregrad.measure_valued import MeasureValuedState
from scoregrad.measure_valued import measure_valued
from scoregrad.pathwise import PathwiseState
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
    "MeasureValuedState",
    "PathwiseState",
    "RaoBlackwellState",
    "RebarState",
    "ScoreFunctionState",
    "arm",
    "baselines",
    "control_variates",
    "diagnostics",
    "dice",
    "disarm",
    "discrete",
    "dists",
    "exact",
    "expectation",
    "gumbel_softmax",
    "magic_box",
    "measure_valued",
    "pathwise",
    "rao_blackwell",
    "rebar",
    "relax",
    "sampling",
    "score_function",
    "score_function_surrogate",
    "straight_through",
    "testing",
    "vimco",
)
