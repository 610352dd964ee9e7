"""Exact gradients and variances of gradient estimators for a Gaussian input.

For x ~ N(μ, σ²) and a scalar cost f, every quantity here is a one-dimensional
integral against the Gaussian density, computed by adaptive Gauss–Kronrod
quadrature with error control (``scipy.integrate.quad``, QUADPACK QAGS/QAGI)
in float64. A quadrature that does not reach its tolerance raises instead of
returning a number.

"Variance" means the **per-sample variance** n·Var(ĝ_n) of an estimate ĝ_n
that uses n evaluations of f: for estimators that average n independent
per-sample terms it is the variance of one term and does not depend on n;
for estimators whose terms interact (leave-one-out baselines) it is what the
estimator as run delivers per evaluation, and it does depend on n.

The hook for new estimators is :data:`EXACT`: a mapping from the estimator's
name in ``benchmarks.estimators.ESTIMATORS`` to an :data:`ExactFn`. Register
one with :func:`register`; the Mohamed et al. benchmark then shows an exact
column for it with no other change. For an estimator whose per-sample term is
a function of one draw x ~ N(μ, σ²), :func:`from_integrand` builds the
``ExactFn``; for one that draws from other densities (e.g. the Weibull and
Maxwell draws of measure-valued gradients) write the ``ExactFn`` with
:func:`expect`, which integrates against any one-dimensional density.

References:
  Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in Machine
  Learning", JMLR 2020, Section 3 (the benchmark problems) and Sections 4–5.
  Piessens et al., "QUADPACK", Springer 1983 (the integrator).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Callable, Mapping, NamedTuple, Optional
import warnings

import numpy as np
from scipy import integrate

#: Parameter names of the Gaussian, as in ``{"loc": μ, "scale": σ}``.
PARAMS = ("loc", "scale")

#: Default relative and absolute tolerances of every quadrature.
REL_TOL = 1e-10
ABS_TOL = 1e-13


class QuadratureError(RuntimeError):
  """Adaptive quadrature did not reach its error tolerance."""


@dataclasses.dataclass(frozen=True)
class Cost:
  """A family of scalar costs f(x; θ) with its x-derivative.

  Attributes:
    name: identifier ("quadratic", ...).
    param: the name of θ in plots ("k", "w").
    formula: f as text, e.g. "(x - k)^2".
    value: ``value(x, theta, xp) -> f(x; θ)`` written with the array module
      ``xp`` (``numpy`` here, ``jax.numpy`` in the benchmark).
    derivative: ``derivative(x, theta, xp) -> ∂f/∂x`` (pathwise integrands).
  """

  name: str
  param: str
  formula: str
  value: Callable
  derivative: Callable


class Problem(NamedTuple):
  """E_{N(x; μ, σ²)}[f(x; θ)] for one cost and θ; hashable (results are cached)."""

  cost: Cost
  theta: float
  mu: float = 1.0
  sigma: float = 1.0

  def f(self, x):
    return self.cost.value(x, self.theta, np)

  def df(self, x):
    return self.cost.derivative(x, self.theta, np)

  def score(self, x) -> dict:
    """∇_{μ,σ} log N(x; μ, σ²) = ((x−μ)/σ², ((x−μ)²/σ² − 1)/σ)."""
    z = (x - self.mu) / self.sigma
    return {"loc": z / self.sigma, "scale": (z * z - 1.0) / self.sigma}


class Integral(NamedTuple):
  """A quadrature result and QUADPACK's estimate of its absolute error."""

  value: float
  abserr: float


class RunSettings(NamedTuple):
  """How the benchmark runs an estimator (what its exact variance depends on).

  Attributes:
    num_samples: evaluations of f per estimate, n.
    warmup_steps: estimates made at the same parameters, threading the
      estimator state, before the measured one (only for stateful estimators,
      e.g. moving-average baselines; 0 otherwise).
  """

  num_samples: int
  warmup_steps: int = 0


class Exact(NamedTuple):
  """Exact mean and per-sample variance of an estimator, per parameter.

  Attributes:
    mean: E[ĝ_n] for "loc" and "scale" (the true gradient when unbiased).
    variance: n·Var(ĝ_n) for "loc" and "scale".
    abserr: a bound on the quadrature error of ``variance``.
  """

  mean: dict
  variance: dict
  abserr: dict


#: ``exact(problem, run) -> Exact``.
ExactFn = Callable[[Problem, RunSettings], Exact]


def expect(
  h: Callable[[float], float],
  pdf: Callable[[float], float],
  lower: float,
  upper: float,
  *,
  breakpoints=(),
  rel_tol: float = REL_TOL,
  abs_tol: float = ABS_TOL,
  limit: int = 500,
) -> Integral:
  """∫ h(x) pdf(x) dx over [lower, upper] (infinite bounds allowed).

  Finite intervals are split at ``breakpoints`` (put them where the integrand
  has its mass or kinks). Raises :class:`QuadratureError` when QUADPACK
  reports that its tolerance was not met.
  """
  edges = [lower] + sorted(b for b in breakpoints if lower < b < upper) + [upper]
  total, err = 0.0, 0.0
  for a, b in itertools.pairwise(edges):
    with warnings.catch_warnings():
      warnings.simplefilter("error", integrate.IntegrationWarning)
      try:
        value, abserr = integrate.quad(
          lambda x: h(x) * pdf(x), a, b, epsabs=abs_tol, epsrel=rel_tol, limit=limit
        )
      except integrate.IntegrationWarning as w:
        raise QuadratureError(
          f"adaptive quadrature over [{a}, {b}] did not converge: {w}"
        ) from None
    if not np.isfinite(value):
      raise QuadratureError(f"quadrature over [{a}, {b}] gave {value}.")
    total += value
    err += abserr
  return Integral(float(total), float(err))


_SQRT_2PI = math.sqrt(2.0 * math.pi)
_Z_EDGES = (-8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0)


def _std_normal_pdf(z):
  return math.exp(-0.5 * z * z) / _SQRT_2PI


def expect_normal(h: Callable[[float], float], mu: float, sigma: float, **kw) -> Integral:
  """E[h(x)] for x ~ N(μ, σ²), integrating over z = (x − μ)/σ in pieces.

  The pieces (−∞, −8], [−8, −4], ..., [8, ∞) keep the adaptive rule from
  stepping over the mass of the density; the tails use QUADPACK's infinite
  interval transform.
  """
  return expect(
    lambda z: h(mu + sigma * z), _std_normal_pdf, -math.inf, math.inf, breakpoints=_Z_EDGES, **kw
  )


# -- the true gradient -------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def true_gradient(problem: Problem) -> dict:
  """∇_{μ,σ} E[f] = E[f(x) ∇ log p(x)] (score identity), as ``Integral`` per parameter."""
  return {
    p: expect_normal(lambda x, p=p: problem.f(x) * problem.score(x)[p], problem.mu, problem.sigma)
    for p in PARAMS
  }


# -- estimators whose per-sample term is a function of one Gaussian draw -------


Integrand = Callable[[Problem, float], Mapping[str, float]]


def from_integrand(integrand: Integrand) -> ExactFn:
  """The ``ExactFn`` of an estimator that averages i.i.d. terms g(x_i), x_i ~ N(μ, σ²).

  ``integrand(problem, x)`` returns {"loc": g_μ(x), "scale": g_σ(x)}. The
  mean is E[g]; the variance is computed centred, E[(g − E[g])²], so it loses
  no precision when the variance is small against the squared mean. It does
  not depend on n.
  """

  @functools.lru_cache(maxsize=4096)
  def per_problem(problem: Problem) -> Exact:
    mean, var, err = {}, {}, {}
    for p in PARAMS:
      m = expect_normal(lambda x: integrand(problem, x)[p], problem.mu, problem.sigma)
      v = expect_normal(
        lambda x: (integrand(problem, x)[p] - m.value) ** 2, problem.mu, problem.sigma
      )
      mean[p], var[p] = m.value, v.value
      err[p] = v.abserr + m.abserr**2  # the mean's error enters at second order
    return Exact(mean, var, err)

  def exact(problem: Problem, run: RunSettings) -> Exact:
    del run
    return per_problem(problem)

  return exact


def score_function_integrand(problem: Problem, x: float) -> dict:
  """Per-sample score-function term f(x) ∇ log p(x) (no baseline)."""
  fx = problem.f(x)
  return {p: fx * s for p, s in problem.score(x).items()}


def pathwise_integrand(problem: Problem, x: float) -> dict:
  """Per-sample pathwise term: x = μ + σz gives (f'(x), f'(x) z)."""
  dfx = problem.df(x)
  return {"loc": dfx, "scale": dfx * (x - problem.mu) / problem.sigma}


# -- score function with baselines built from the costs of other samples -------


class Moments(NamedTuple):
  """Moments of f and of one score coordinate s under N(μ, σ²).

  F = E[f], V = Var f, G = E[f s] (the gradient), A = E[(f−F)² s²],
  B = E[(f−F) s²], S2 = E[s²] (1/σ² for μ, 2/σ² for σ), with quadrature
  error estimates ``err_*``.
  """

  F: float
  V: float
  G: float
  A: float
  B: float
  S2: float
  err_F: float
  err_V: float
  err_G: float
  err_A: float
  err_B: float


@functools.lru_cache(maxsize=4096)
def moments(problem: Problem, param: str) -> Moments:
  """The :class:`Moments` of ``problem`` for the score coordinate ``param``."""
  mu, sigma = problem.mu, problem.sigma
  F = expect_normal(problem.f, mu, sigma)
  V = expect_normal(lambda x: (problem.f(x) - F.value) ** 2, mu, sigma)
  G = true_gradient(problem)[param]
  A = expect_normal(
    lambda x: (problem.f(x) - F.value) ** 2 * problem.score(x)[param] ** 2, mu, sigma
  )
  B = expect_normal(lambda x: (problem.f(x) - F.value) * problem.score(x)[param] ** 2, mu, sigma)
  S2 = (1.0 if param == "loc" else 2.0) / sigma**2
  return Moments(
    F.value,
    V.value,
    G.value,
    A.value,
    B.value,
    S2,
    F.abserr,
    V.abserr,
    G.abserr,
    A.abserr,
    B.abserr,
  )


def leave_one_out_exact(problem: Problem, run: RunSettings) -> Exact:
  r"""Exact n·Var of the score function with the leave-one-out baseline.

  ĝ_n = (1/n) Σ_i (f_i − b_i) s_i with b_i the mean of the other n−1 costs is
  the U-statistic of order 2 with kernel h(x, x') = ½ (f − f')(s − s'). Hoeffding's
  variance formula, Var U = 2/(n(n−1)) [2(n−2) ζ₁ + ζ₂], with
  ζ₁ = Var E[h | x] = ¼ (A − G²) and ζ₂ = Var h = ½ (A + V·S2) (moments as in
  :class:`Moments`; h is unchanged by shifting f, so f is centred first) gives

      n·Var ĝ_n = A − (n−2)/(n−1) · G² + V·S2/(n−1),

  which tends to Var[(f − E f) s] as n → ∞.

  References:
    Hoeffding, "A class of statistics with asymptotically normal
    distribution", Ann. Math. Statist. 1948.
    Kool, van Hoof & Welling, "Buy 4 REINFORCE Samples, Get a Baseline for
    Free!", ICLR 2019 workshop.
  """
  n = run.num_samples
  if n < 2:
    raise ValueError(f"leave-one-out needs num_samples >= 2; got {n}.")
  mean, var, err = {}, {}, {}
  for p in PARAMS:
    m = moments(problem, p)
    mean[p] = m.G
    var[p] = m.A - (n - 2) / (n - 1) * m.G**2 + m.V * m.S2 / (n - 1)
    err[p] = m.err_A + 2 * abs(m.G) * m.err_G + m.err_V * m.S2 / (n - 1)
  return Exact(mean, var, err)


def random_baseline_variance(
  problem: Problem, baseline_mean: float, baseline_variance_over_V: float
) -> Exact:
  r"""n·Var of (1/n) Σ (f_i − b) s_i for a random b independent of the x_i.

  Given b the terms are i.i.d. and E[ĝ | b] = G, so n·Var ĝ = E_b Var[(f − b) s]
  = A + 2(F − E b) B + ((F − E b)² + Var b) S2 − G². ``Var b`` is given as a
  multiple of V = Var f (b is built from past costs).
  """
  mean, var, err = {}, {}, {}
  for p in PARAMS:
    m = moments(problem, p)
    c = m.F - baseline_mean
    vb = baseline_variance_over_V * m.V
    mean[p] = m.G
    var[p] = m.A + 2 * c * m.B + (c * c + vb) * m.S2 - m.G**2
    err[p] = (
      m.err_A
      + 2 * abs(c) * m.err_B
      + 2 * abs(m.G) * m.err_G
      + (2 * abs(c) * m.err_F + baseline_variance_over_V * m.err_V) * m.S2
    )
  return Exact(mean, var, err)


def moving_average_exact(decay: float, *, zero_debias: bool = True) -> ExactFn:
  r"""Exact n·Var of the score function with ``baselines.moving_average(decay)``.

  The benchmark makes ``warmup_steps`` = T estimates at fixed parameters
  before the measured one, so the baseline is the (zero-debiased) average of T
  independent batch means m_t, each with mean F and variance V/n:

      b = Σ_t w_t m_t,  w_t = (1−d) d^{T−t} / (1 − d^T),  Σ w_t = 1,
      Σ w_t² = (1−d)(1+d^T) / ((1+d)(1−d^T)),

  so E b = F, Var b = (V/n) Σ w_t², and :func:`random_baseline_variance`
  applies. With T = 0 the baseline is 0 (plain score function). Without
  zero-debiasing E b = (1 − d^T) F and Var b = (V/n)(1−d)²(1−d^{2T})/(1−d²).
  """
  if not 0.0 <= decay < 1.0:
    raise ValueError(f"decay must be in [0, 1); got {decay}.")

  def exact(problem: Problem, run: RunSettings) -> Exact:
    T, n, d = run.warmup_steps, run.num_samples, decay
    if T == 0:
      return random_baseline_variance(problem, 0.0, 0.0)
    sum_w2 = (1 - d) ** 2 * (1 - d ** (2 * T)) / (1 - d * d)  # raw EMA weights
    if zero_debias:
      F = moments(problem, "loc").F
      return random_baseline_variance(problem, F, sum_w2 / (1 - d**T) ** 2 / n)
    F = moments(problem, "loc").F
    return random_baseline_variance(problem, (1 - d**T) * F, sum_w2 / n)

  return exact


# -- the registry: estimator name -> exact moments ----------------------------

#: Must match ``moving_average(decay=...)`` of the "score_function+moving_average"
#: row of ``benchmarks.estimators.ESTIMATORS`` (tests/test_benchmarks.py checks
#: the pair by simulation, and the benchmark flags any empirical/exact mismatch).
MOVING_AVERAGE_DECAY = 0.9

#: Estimator name -> ``exact(problem, run) -> Exact``. Estimators missing here
#: are reported with exact = n/a (e.g. the optimal per-coordinate baseline: a
#: ratio of sums over the other samples, whose exact finite-n variance has no
#: one-dimensional integral form).
EXACT: dict[str, ExactFn] = {
  "score_function": from_integrand(score_function_integrand),
  "pathwise": from_integrand(pathwise_integrand),
  "score_function+leave_one_out": leave_one_out_exact,
  "score_function+moving_average": moving_average_exact(MOVING_AVERAGE_DECAY),
}


def register(name: str, exact: ExactFn, *, overwrite: bool = False) -> None:
  """Registers the exact moments of the estimator called ``name`` in ESTIMATORS.

  Example (an estimator whose per-sample term is g(x), x ~ N(μ, σ²)):
    >>> from benchmarks import quadrature as q
    >>> q.register("my_estimator", q.from_integrand(
    ...     lambda problem, x: {"loc": problem.df(x), "scale": 0.0}))  # doctest: +SKIP
  """
  if not callable(exact):
    raise TypeError(f"`exact` must be callable as exact(problem, run); got {exact!r}.")
  if name in EXACT and not overwrite:
    raise ValueError(f"an exact form for {name!r} is already registered; pass overwrite=True.")
  EXACT[name] = exact


def exact_for(name: str) -> Optional[ExactFn]:
  """The registered ``ExactFn`` of estimator ``name``, or None."""
  return EXACT.get(name)
