"""Exact per-sample variances of the measure-valued, control-variate and
variance-reduced-sampling rows of ``benchmarks.estimators.ESTIMATORS``.

Registered in :data:`benchmarks.quadrature.EXACT` (the hook of the Mohamed
et al. benchmark) when this module is imported, which
``benchmarks/estimators.py`` does. Every quantity is n·Var(ĝ_n) for an
estimate from n evaluations of f (the rows' ``make(n)`` settings below), for
x ~ N(μ, σ²), as one- or two-dimensional integrals computed with
:func:`benchmarks.quadrature.expect` (adaptive, error-controlled) — derived
per function. f″(μ) for the delta method comes from the complex-step
derivative of the cost's f′ (exact to rounding for the analytic costs here).

References:
  Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in
  Machine Learning", JMLR 2020, Sections 6 and 7.
  Paisley, Blei & Jordan, ICML 2012 (delta method).
  Owen, "Monte Carlo theory, methods and examples", 2013, Ch. 8 and 17.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
from scipy import special

import scoregrad as sg

from benchmarks import quadrature as q

#: f evaluations per sample of the "measure_valued" row for one Gaussian
#: coordinate: two for ∂μ (Weibull ±) and two for ∂σ (Maxwell, U·Maxwell).
MEASURE_VALUED_EVALUATIONS_PER_SAMPLE = 4


def measure_valued_samples(n: int) -> int:
  """``num_samples`` of the "measure_valued" row for a budget of n evaluations."""
  return max(1, n // MEASURE_VALUED_EVALUATIONS_PER_SAMPLE)


def antithetic_samples(n: int) -> int:
  """``num_samples`` of the "pathwise+antithetic" row: n rounded down to even (≥ 2)."""
  return max(2, n - n % 2)


_SQRT_2PI = math.sqrt(2 * math.pi)
_EDGES = (-8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0)


def _rayleigh_pdf(w):
  """Weibull(scale √2, shape 2): w e^{−w²/2} on w > 0."""
  return w * math.exp(-0.5 * w * w)


def _maxwell_pdf(m):
  """Double-sided Maxwell: m² φ(m)."""
  return m * m * math.exp(-0.5 * m * m) / _SQRT_2PI


# Gauss–Legendre nodes on [0, 1] for the inner integral over U (smooth integrand).
_GL = {
  k: ((np.polynomial.legendre.leggauss(k)[0] + 1) / 2, np.polynomial.legendre.leggauss(k)[1] / 2)
  for k in (96, 192)
}


def _inner_uniform(h, m):
  """(∫₀¹ h(u m) du, error estimate) by Gauss–Legendre with 192 nodes, checked against 96."""
  (u1, w1), (u2, w2) = _GL[96], _GL[192]
  coarse = float(np.sum(w1 * h(u1 * m)))
  fine = float(np.sum(w2 * h(u2 * m)))
  return fine, abs(fine - coarse)


@functools.lru_cache(maxsize=4096)
def _measure_valued_per_term(problem: q.Problem) -> q.Exact:
  """Mean and variance of ONE coupled measure-valued term per parameter.

  ∂μ: g(W) = (f(μ + σW) − f(μ − σW)) / (σ√(2π)), W ~ Weibull(√2, 2).
  ∂σ: g(M, U) = (f(μ + σM) − f(μ + σUM)) / σ, M double-sided Maxwell, U ~ U(0, 1);
  E g = (E f(μ + σM) − E f(μ + σZ)) / σ (UM ~ N(0, 1)), and with
  a(M) = f(μ + σM)/σ − E g and b(t) = f(μ + σt)/σ,
  E (g − E g)² = E_M[a² − 2a ∫₀¹ b(uM) du + ∫₀¹ b(uM)² du].
  """
  mu, sigma, f = problem.mu, problem.sigma, problem.f
  c = sigma * _SQRT_2PI
  loc_term = lambda w: (f(mu + sigma * w) - f(mu - sigma * w)) / c
  m_loc = q.expect(loc_term, _rayleigh_pdf, 0.0, math.inf, breakpoints=(1.0, 2.0, 4.0, 8.0))
  v_loc = q.expect(
    lambda w: (loc_term(w) - m_loc.value) ** 2,
    _rayleigh_pdf,
    0.0,
    math.inf,
    breakpoints=(1.0, 2.0, 4.0, 8.0),
  )

  b = lambda t: f(mu + sigma * np.asarray(t)) / sigma
  plus = q.expect(b, _maxwell_pdf, -math.inf, math.inf, breakpoints=_EDGES)
  minus = q.expect_normal(lambda x: f(x) / sigma, mu, sigma)
  mean_scale = plus.value - minus.value
  inner_err = [0.0]

  def conditional_second_moment(m):
    a = b(m) - mean_scale
    i1, e1 = _inner_uniform(b, m)
    i2, e2 = _inner_uniform(lambda t: b(t) ** 2, m)
    inner_err[0] = max(inner_err[0], e2 + 2 * abs(a) * e1)
    return a * a - 2 * a * i1 + i2

  v_scale = q.expect(
    conditional_second_moment, _maxwell_pdf, -math.inf, math.inf, breakpoints=_EDGES
  )
  return q.Exact(
    mean={"loc": m_loc.value, "scale": mean_scale},
    variance={"loc": v_loc.value, "scale": v_scale.value},
    abserr={
      "loc": v_loc.abserr + m_loc.abserr**2,
      "scale": v_scale.abserr + inner_err[0] + 2 * abs(mean_scale) * (plus.abserr + minus.abserr),
    },
  )


def measure_valued_exact(problem: q.Problem, run: q.RunSettings) -> q.Exact:
  """n·Var of the "measure_valued" row: m = n // 4 i.i.d. coupled terms, n·V/m."""
  per = _measure_valued_per_term(problem)
  scale = run.num_samples / measure_valued_samples(run.num_samples)
  return q.Exact(
    per.mean,
    {p: scale * v for p, v in per.variance.items()},
    {p: scale * e for p, e in per.abserr.items()},
  )


# -- the delta method -----------------------------------------------------------


def _taylor(problem: q.Problem):
  """f(μ), f′(μ), f″(μ); f″ by the complex step Im f′(μ + ih)/h."""
  mu, theta, cost = problem.mu, problem.theta, problem.cost
  h = 1e-30
  f2 = float(np.imag(cost.derivative(mu + 1j * h, theta, np)) / h)
  return problem.f(mu), problem.df(mu), f2


def score_function_delta_integrand(problem: q.Problem, x: float) -> dict:
  """(f − h)(x) ∇ log p(x) + ∇E[h], h the Taylor quadratic at μ held fixed:
  ∂μ E[h] = f′(μ), ∂σ E[h] = σ f″(μ)."""
  f0, f1, f2 = _taylor(problem)
  mu, sigma = problem.mu, problem.sigma
  residual = problem.f(x) - (f0 + f1 * (x - mu) + 0.5 * f2 * (x - mu) ** 2)
  s = problem.score(x)
  return {"loc": residual * s["loc"] + f1, "scale": residual * s["scale"] + sigma * f2}


def pathwise_delta_integrand(problem: q.Problem, x: float) -> dict:
  """∇θ (f − h)(μ + σz) + ∇E[h] with h′(x) = f′(μ) + f″(μ)(x − μ):
  ∂μ: f′(x) − f″(μ)(x − μ); ∂σ: (f′(x) − f′(μ) − f″(μ)(x − μ)) z + σ f″(μ)."""
  _, f1, f2 = _taylor(problem)
  mu, sigma = problem.mu, problem.sigma
  z = (x - mu) / sigma
  dfx = problem.df(x)
  return {"loc": dfx - f2 * (x - mu), "scale": (dfx - f1 - f2 * (x - mu)) * z + sigma * f2}


# -- antithetic and randomised-QMC sampling ---------------------------------------


@functools.lru_cache(maxsize=4096)
def _antithetic_pair_moments(problem: q.Problem) -> q.Exact:
  """Mean and variance of the pair mean q(z) = ½(g(μ + σz) + g(μ − σz)), g pathwise."""
  mu = problem.mu
  mean, var, err = {}, {}, {}
  for p in q.PARAMS:
    pair = lambda x, p=p: (
      0.5 * (q.pathwise_integrand(problem, x)[p] + q.pathwise_integrand(problem, 2 * mu - x)[p])
    )
    m = q.expect_normal(pair, mu, problem.sigma)
    v = q.expect_normal(lambda x: (pair(x) - m.value) ** 2, mu, problem.sigma)
    mean[p], var[p], err[p] = m.value, v.value, v.abserr + m.abserr**2
  return q.Exact(mean, var, err)


def antithetic_exact(problem: q.Problem, run: q.RunSettings) -> q.Exact:
  """m antithetic samples are m/2 i.i.d. pair means: Var ĝ = Var q/(m/2), times n."""
  pair = _antithetic_pair_moments(problem)
  factor = run.num_samples / (antithetic_samples(run.num_samples) / 2)
  return q.Exact(
    pair.mean,
    {p: factor * v for p, v in pair.variance.items()},
    {p: factor * e for p, e in pair.abserr.items()},
  )


@functools.lru_cache(maxsize=4096)
def _qmc_exact(problem: q.Problem, n: int) -> q.Exact:
  """One random shift Δ ~ U[0, 1) of the n lattice points p_i (dimension 1):
  ĝ(Δ) = (1/n) Σ_i g(μ + σ Φ⁻¹(frac(p_i + Δ))), E ĝ = E g and
  Var ĝ = ∫₀¹ (ĝ(Δ) − E g)² dΔ, integrated piecewise between the jumps at
  Δ = 1 − p_i (the ends of each piece carry Φ⁻¹'s integrable singularity).
  For the grid {j/n} ĝ has period 1/n."""
  points = sg.sampling.lattice_points(n, 1)[:, 0]
  edges = sorted(set([0.0, 1.0] + [1.0 - p for p in points if p > 0]))
  # In one dimension the points are the grid {k/n}: ĝ has period 1/n, so
  # one piece times n is the whole integral (the general case is kept in
  # case the point set changes).
  lattice = np.allclose(np.sort(points), np.arange(n) / n, rtol=0, atol=1e-14)
  if lattice:
    edges = [0.0, 1.0 / n]
  truth = q.true_gradient(problem)
  mean, var, err = {}, {}, {}
  for p in q.PARAMS:

    def estimate(d, p=p):
      x = problem.mu + problem.sigma * special.ndtri(np.mod(points + d, 1.0))
      return np.mean(q.pathwise_integrand(problem, x)[p])

    g = truth[p].value
    total, abserr = 0.0, 0.0
    for a, b in itertools.pairwise(edges):
      piece = q.expect(
        lambda d: (estimate(d) - g) ** 2, lambda d: 1.0, a, b, rel_tol=1e-8, abs_tol=1e-14
      )
      total += piece.value * (n if lattice else 1)
      abserr += piece.abserr * (n if lattice else 1)
    mean[p], var[p], err[p] = g, total, abserr + 2 * truth[p].abserr * math.sqrt(total)
  return q.Exact(mean, var, err)


def qmc_exact(problem: q.Problem, run: q.RunSettings) -> q.Exact:
  """n·Var of the "pathwise+qmc" row (one-dimensional Gaussian)."""
  n = run.num_samples
  e = _qmc_exact(problem, n)
  return q.Exact(
    e.mean, {p: n * v for p, v in e.variance.items()}, {p: n * v for p, v in e.abserr.items()}
  )


EXACT_FORMS = {
  "measure_valued": measure_valued_exact,
  "score_function+delta_method": q.from_integrand(score_function_delta_integrand),
  "pathwise+delta_method": q.from_integrand(pathwise_delta_integrand),
  "pathwise+antithetic": antithetic_exact,
  "pathwise+qmc": qmc_exact,
}

for _name, _exact in EXACT_FORMS.items():
  if q.exact_for(_name) is None:
    q.register(_name, _exact)
