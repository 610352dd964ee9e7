"""Shared table of problems with exact gradients and exact per-sample variances.

Each problem gives ``dist_fn(params)``, a cost ``f``, ``params``, the exact
gradient of E[f] and — where derivable — the exact variance of ONE sample of
the plain score-function estimator g(x) = f(x) ∇θ log p(x; θ), per coordinate:

* Gaussian N(μ, σ²): with x = μ + σε, g_μ = f(x) ε/σ and g_σ = f(x)(ε² − 1)/σ,
  so E[g²] is a one-dimensional Gaussian integral, computed by adaptive
  quadrature (scipy.integrate.quad, absolute/relative error ≤ 1e-11); for
  cos(x) it is also checked against the closed form derived from
  E[ε^k e^{itε}] = (−i)^k φ^{(k)}(t), φ(t) = e^{−t²/2} (see test_problems).
* Bernoulli, Categorical: enumeration of every outcome (exact).
* Poisson: enumeration up to x = 200 (the omitted tail is < 1e-100 for λ ≤ 5).
* Exponential via ``from_log_prob``: closed form from E[x^k] = k!/λ^k.

Variance = E[g²] − (E[g])², where E[g] is the exact gradient.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate, special, stats

import scoregrad as sg


class Problem(NamedTuple):
  name: str
  dist_fn: Callable
  f: Callable
  params: Any
  exact_grad: Any  # numpy pytree like params
  score_variance: Any  # exact per-sample variance of plain REINFORCE, or None


def _gauss_expect(h, mu, sigma):
  """E[h(x)], x ~ N(mu, sigma^2), by adaptive quadrature."""
  val, err = integrate.quad(
    lambda x: h(x) * stats.norm.pdf(x, mu, sigma),
    -np.inf,
    np.inf,
    epsabs=1e-11,
    epsrel=1e-11,
    limit=500,
  )
  return val


def gaussian_problem(name, f_np, f_jnp, mu=1.0, sigma=1.0):
  s_mu = lambda x: (x - mu) / sigma**2
  s_sigma = lambda x: ((x - mu) ** 2 - sigma**2) / sigma**3
  g_mu = _gauss_expect(lambda x: f_np(x) * s_mu(x), mu, sigma)
  g_sigma = _gauss_expect(lambda x: f_np(x) * s_sigma(x), mu, sigma)
  v_mu = _gauss_expect(lambda x: (f_np(x) * s_mu(x)) ** 2, mu, sigma) - g_mu**2
  v_sigma = _gauss_expect(lambda x: (f_np(x) * s_sigma(x)) ** 2, mu, sigma) - g_sigma**2
  return Problem(
    name=name,
    dist_fn=lambda p: sg.dists.Normal(p["loc"], p["scale"]),
    f=f_jnp,
    params={"loc": jnp.asarray(mu), "scale": jnp.asarray(sigma)},
    exact_grad={"loc": np.float64(g_mu), "scale": np.float64(g_sigma)},
    score_variance={"loc": np.float64(v_mu), "scale": np.float64(v_sigma)},
  )


def bernoulli_problem(logits=(0.3, -0.7, 1.2), target=0.45):
  """D = 3 factorised Bernoulli, f(b) = mean_i (b_i − t)², by enumeration."""
  logits = np.asarray(logits, np.float64)
  p = special.expit(logits)
  grad = np.zeros(3)
  second = np.zeros(3)
  for bits in itertools.product([0.0, 1.0], repeat=3):
    b = np.asarray(bits)
    prob = np.prod(np.where(b == 1, p, 1 - p))
    fb = np.mean((b - target) ** 2)
    score = b - p  # ∂ log p / ∂ logits
    grad += prob * fb * score
    second += prob * (fb * score) ** 2
  return Problem(
    name="bernoulli",
    dist_fn=lambda l: sg.dists.Bernoulli(logits=l),
    f=lambda b: jnp.mean((b - target) ** 2),
    params=jnp.asarray(logits, jnp.float32),
    exact_grad=grad,
    score_variance=second - grad**2,
  )


def categorical_problem(logits=(0.5, -1.0, 0.0, 1.5), values=(2.0, -1.0, 0.5, 3.0)):
  logits = np.asarray(logits, np.float64)
  values_np = np.asarray(values)
  p = special.softmax(logits)
  grad = np.zeros(4)
  second = np.zeros(4)
  for k in range(4):
    score = np.eye(4)[k] - p
    grad += p[k] * values_np[k] * score
    second += p[k] * (values_np[k] * score) ** 2
  vals = jnp.asarray(values)
  return Problem(
    name="categorical",
    dist_fn=lambda l: sg.dists.Categorical(logits=l),
    f=lambda x: vals[x],
    params=jnp.asarray(logits, jnp.float32),
    exact_grad=grad,
    score_variance=second - grad**2,
  )


def poisson_problem(rate=2.5):
  """f(x) = x² ⇒ E = λ + λ², ∂/∂λ = 1 + 2λ; score x/λ − 1."""
  xs = np.arange(0, 201, dtype=np.float64)
  pmf = stats.poisson.pmf(xs, rate)
  g = xs**2 * (xs / rate - 1)
  mean = np.sum(pmf * g)
  assert abs(mean - (1 + 2 * rate)) < 1e-9
  return Problem(
    name="poisson",
    dist_fn=lambda r: sg.dists.Poisson(r),
    f=lambda x: x**2,
    params=jnp.asarray(rate),
    exact_grad=np.float64(1 + 2 * rate),
    score_variance=np.float64(np.sum(pmf * g**2) - mean**2),
  )


def exponential_user_problem(theta=0.3):
  """A user-written log-density: Exponential with rate λ = e^θ, f(x) = x².

  E[x²] = 2/λ² = 2e^{−2θ} ⇒ ∂/∂θ = −4e^{−2θ}. Score ∂θ log p = 1 − λx, so
  E[g²] = E[x⁴] − 2λE[x⁵] + λ²E[x⁶] = (24 − 240 + 720)/λ⁴ = 504/λ⁴ and
  Var = 504/λ⁴ − 16/λ⁴ = 488/λ⁴.
  """
  lam = math.exp(theta)

  def log_prob(t, x):
    return t - jnp.exp(t) * x

  def sample(t, key):
    return jax.random.exponential(key, dtype=jnp.result_type(t)) / jnp.exp(t)

  return Problem(
    name="user_exponential",
    dist_fn=sg.dists.from_log_prob(log_prob, sample),
    f=lambda x: x**2,
    params=jnp.asarray(theta),
    exact_grad=np.float64(-4 * math.exp(-2 * theta)),
    score_variance=np.float64(488 / lam**4),
  )


def all_problems():
  return [
    gaussian_problem("gaussian_quadratic", lambda x: (x - 2.0) ** 2, lambda x: (x - 2.0) ** 2),
    gaussian_problem("gaussian_cubic", lambda x: x**3 - x, lambda x: x**3 - x, mu=0.5, sigma=0.8),
    gaussian_problem("gaussian_cos", np.cos, jnp.cos),
    gaussian_problem(
      "gaussian_sin3", lambda x: np.sin(3 * x), lambda x: jnp.sin(3 * x), mu=-0.4, sigma=1.3
    ),
    bernoulli_problem(),
    categorical_problem(),
    poisson_problem(),
    exponential_user_problem(),
  ]


PROBLEMS = {p.name: p for p in all_problems()}
