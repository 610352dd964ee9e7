"""Gradient estimators for discrete distributions.

Each factory returns a ``GradientEstimator(init, estimate)`` with the usual
``estimate(key, f, dist_fn, params, state) -> Estimate``. The estimators other
than :func:`vimco` need ``dist_fn(params)`` to be a factorised
``scoregrad.dists.Bernoulli(logits=...)`` or ``scoregrad.dists.Categorical(
logits=...)``; they estimate the gradient with respect to those logits and pull
it back to ``params`` with ``jax.vjp`` through ``dist_fn``, so any pytree of
parameters works.

==================  ============  =========  ======================================
estimator           unbiased      families   what f must accept
==================  ============  =========  ======================================
exact               exact         B, C       samples (floats {0,1} / indices)
rao_blackwell       yes           B, C       samples
arm, disarm         yes           B, C       samples
double_cv, rodeo    yes           B          samples (f differentiated there)
rebar, relax        yes           B, C       floats in [0, 1] / one-hot floats
gumbel_softmax      no (biased)   B, C       floats in [0, 1] / one-hot floats
straight_through    no (biased)   B, C       floats (differentiable) / one-hot
vimco               yes           any        samples (f = log-weight)
reinmax             no (biased)   B, C       floats (differentiable) / one-hot
gumbel_rao          no (biased)   B, C       floats in {0, 1} / one-hot floats
unordered_set       yes           B, C       samples (k distinct)
arms                yes           B, C       samples
==================  ============  =========  ======================================

``Estimate.value`` of these estimators is differentiable with respect to what
f closes over (samples held fixed), which gives the pathwise part of a
gradient when f has parameters of its own (a decoder, a log-weight).
"""

from scoregrad._src.discrete.antithetic import arm
from scoregrad._src.discrete.antithetic import disarm
from scoregrad._src.discrete.enumeration import exact
from scoregrad._src.discrete.sum_and_sample import RaoBlackwellState
from scoregrad._src.discrete.sum_and_sample import rao_blackwell
from scoregrad._src.discrete.rebar_relax import RebarState
from scoregrad._src.discrete.rebar_relax import rebar
from scoregrad._src.discrete.rebar_relax import relax
from scoregrad._src.discrete.stein import DoubleCVState
from scoregrad._src.discrete.stein import RodeoState
from scoregrad._src.discrete.stein import double_cv
from scoregrad._src.discrete.stein import rodeo
from scoregrad._src.discrete.relaxations import gumbel_softmax
from scoregrad._src.discrete.relaxations import straight_through
from scoregrad._src.discrete.multi_sample import vimco
from scoregrad._src.discrete.heun_straight_through import reinmax
from scoregrad._src.discrete.rao_blackwell_gumbel import gumbel_rao
from scoregrad._src.discrete.without_replacement import unordered_set
from scoregrad._src.discrete.copula import arms

__all__ = (
  "DoubleCVState",
  "RaoBlackwellState",
  "RebarState",
  "RodeoState",
  "arm",
  "arms",
  "disarm",
  "double_cv",
  "exact",
  "gumbel_rao",
  "gumbel_softmax",
  "rao_blackwell",
  "rebar",
  "reinmax",
  "relax",
  "rodeo",
  "straight_through",
  "unordered_set",
  "vimco",
)
