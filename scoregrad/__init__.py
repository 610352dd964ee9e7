"""scoregrad: Monte Carlo gradient estimation in JAX."""

from scoregrad import baselines
from scoregrad import compat
from scoregrad import control_variates
from scoregrad import diagnostics
from scoregrad import discrete
from scoregrad import dists
from scoregrad import numpyro
from scoregrad import rl
from scoregrad import sampling
from scoregrad import shaping
from scoregrad import sites
from scoregrad import testing
from scoregrad import vi
from scoregrad._src.base import EmptyState
from scoregrad._src.base import Estimate
from scoregrad._src.base import EstimateFn
from scoregrad._src.base import GradientEstimator
from scoregrad._src.base import GradientMoments
from scoregrad._src.base import InitFn
from scoregrad._src.base import Traits
from scoregrad._src.base import describe
from scoregrad._src.control_variates import ControlVariateState
from scoregrad._src.discrete.antithetic import arm
from scoregrad._src.discrete.antithetic import disarm
from scoregrad._src.discrete.enumeration import exact
from scoregrad._src.discrete.multi_sample import vimco
from scoregrad._src.discrete.rebar_relax import RebarState
from scoregrad._src.discrete.rebar_relax import rebar
from scoregrad._src.discrete.rebar_relax import relax
from scoregrad._src.discrete.stein import DoubleCVState
from scoregrad._src.discrete.stein import RodeoState
from scoregrad._src.discrete.stein import double_cv
from scoregrad._src.discrete.stein import rodeo
from scoregrad._src.discrete.relaxations import gumbel_softmax
from scoregrad._src.discrete.relaxations import straight_through
from scoregrad._src.discrete.sum_and_sample import RaoBlackwellState
from scoregrad._src.discrete.sum_and_sample import rao_blackwell
from scoregrad._src.discrete.heun_straight_through import reinmax
from scoregrad._src.discrete.rao_blackwell_gumbel import gumbel_rao
from scoregrad._src.discrete.without_replacement import unordered_set
from scoregrad._src.discrete.copula import arms
from scoregrad._src.front_door import expectation
from scoregrad._src.layers import chunked
from scoregrad._src.layers import sharded
from scoregrad._src.layers import with_fitness_shaping
from scoregrad._src.layers import with_moments
from scoregrad._src.natural import natural_gradient
from scoregrad._src.graphs import cost
from scoregrad._src.graphs import fori_loop
from scoregrad._src.graphs import plate
from scoregrad._src.graphs import sample
from scoregrad._src.graphs import scan
from scoregrad._src.graphs import surrogate
from scoregrad._src.mixed_estimator import mixed
from scoregrad._src.reparameterization import pathwise
from scoregrad._src.score import ScoreFunctionState
from scoregrad._src.selection import Selection
from scoregrad._src.selection import SelectionRow
from scoregrad._src.selection import select
from scoregrad._src.score import score_function
from scoregrad._src.surrogates import dice
from scoregrad._src.surrogates import magic_box
from scoregrad._src.surrogates import score_function_surrogate
from scoregrad._src.validation import NotApplicableError
from scoregrad._src.variance_reduction import with_control_variate
from scoregrad._src.weak_derivative import measure_valued

__version__ = "0.1.0"

__all__ = (
  "ControlVariateState",
  "DoubleCVState",
  "EmptyState",
  "Estimate",
  "EstimateFn",
  "GradientEstimator",
  "GradientMoments",
  "InitFn",
  "NotApplicableError",
  "RaoBlackwellState",
  "RebarState",
  "RodeoState",
  "ScoreFunctionState",
  "Selection",
  "SelectionRow",
  "Traits",
  "arm",
  "arms",
  "baselines",
  "chunked",
  "compat",
  "control_variates",
  "cost",
  "describe",
  "diagnostics",
  "dice",
  "disarm",
  "discrete",
  "dists",
  "double_cv",
  "exact",
  "expectation",
  "fori_loop",
  "gumbel_rao",
  "gumbel_softmax",
  "magic_box",
  "measure_valued",
  "mixed",
  "natural_gradient",
  "numpyro",
  "pathwise",
  "plate",
  "rao_blackwell",
  "rebar",
  "reinmax",
  "relax",
  "rl",
  "rodeo",
  "sample",
  "sampling",
  "scan",
  "score_function",
  "score_function_surrogate",
  "select",
  "shaping",
  "sharded",
  "sites",
  "straight_through",
  "surrogate",
  "testing",
  "unordered_set",
  "vi",
  "vimco",
  "with_control_variate",
  "with_fitness_shaping",
  "with_moments",
)


def __getattr__(name):
  # Names removed from the API in 0.2, importable for one more release.
  if name in ("PathwiseState", "MeasureValuedState"):
    import warnings  # pylint: disable=g-import-not-at-top
    from scoregrad._src import reparameterization, weak_derivative  # pylint: disable=g-import-not-at-top

    warnings.warn(
      f"scoregrad.{name} is deprecated and will be removed in 0.3: pathwise and "
      "measure_valued keep EmptyState(), and with a control variate a "
      "scoregrad.ControlVariateState.",
      DeprecationWarning,
      stacklevel=2,
    )
    return getattr(reparameterization if name == "PathwiseState" else weak_derivative, name)
  raise AttributeError(f"module 'scoregrad' has no attribute {name!r}")
