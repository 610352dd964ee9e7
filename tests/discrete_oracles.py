"""Exact answers for the discrete-estimator tests, in float64 NumPy.

Everything here is computed independently of ``scoregrad.discrete``:

* exact gradients of E[f] by enumerating every configuration;
* exact means and variances of each estimator, by enumerating (or exactly
  integrating over) the joint distribution of the random variables that the
  estimator uses:

  - ARM uses u ~ U(0,1)^D. The pair (1[u > σ(−α)], 1[u < σ(α)]) is constant
    on each cell of the grid cut at min(p_i, 1 − p_i) and max(p_i, 1 − p_i),
    so E[ĝ] and E[ĝ²] are sums over the 3^D cells of
    P(cell) Δf E[(u_i − ½)^k | cell_i], with the conditional moments of a
    uniform in closed form.
  - DisARM uses the coupled pair (b_i, b̃_i), which per coordinate is (1,1)
    w.p. max(0, 2p−1), (1,0) and (0,1) w.p. min(p, 1−p) each, (0,0) w.p.
    max(0, 1−2p): enumerate the 4^D joint outcomes.
  - score function with leave-one-out or the optimal baseline, VIMCO:
    enumerate the n-tuples of samples.
  - Rao-Blackwellised sum-and-sample: the summed part is fixed; enumerate
    the complement for the sampled part.
  - straight-through: a function of the discrete sample only; enumerate.
  - Gumbel-softmax (Bernoulli): tensor-product Gauss-Legendre quadrature over
    the uniforms (the integrand is smooth in u for a smooth f).
  - REBAR with one bit: two-dimensional Gauss-Legendre quadrature over (u, v),
    split at the jump u = 1 − p, after a polynomial substitution that
    flattens the endpoint singularities.
"""

from __future__ import annotations

import itertools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

import scoregrad as sg


def sigmoid(x):
  return special.expit(x)


class BernoulliProblem(NamedTuple):
  name: str
  logits: np.ndarray
  f_np: Callable  # numpy, one configuration (D,) -> float
  f: Callable  # jax, one sample -> scalar (works on relaxed floats)


def separable_problem(target=0.45, logits=(0.3, -0.7, 1.2)):
  """D = 3, f(b) = mean_i (b_i − t)² (the REBAR toy in three dimensions)."""
  return BernoulliProblem(
    "separable",
    np.asarray(logits, np.float64),
    lambda b: float(np.mean((b - target) ** 2)),
    lambda b: jnp.mean((b - target) ** 2),
  )


_W = np.array([0.8, -0.5, 1.3])


def coupled_problem(logits=(0.9, -0.4, 0.2)):
  """D = 3, f(b) = sin(2 w·b + 0.3) + b_0 b_2: coordinates interact."""
  w = jnp.asarray(_W)
  return BernoulliProblem(
    "coupled",
    np.asarray(logits, np.float64),
    lambda b: float(np.sin(2 * _W @ b + 0.3) + b[0] * b[2]),
    lambda b: jnp.sin(2 * jnp.dot(w.astype(b.dtype), b) + 0.3) + b[0] * b[2],
  )


BERNOULLI_PROBLEMS = {p.name: p for p in (separable_problem(), coupled_problem())}


def bernoulli_dist(logits):
  return sg.dists.Bernoulli(logits=logits)


def all_bits(d):
  return np.asarray(list(itertools.product([0.0, 1.0], repeat=d)))


def bernoulli_prob(b, p):
  return float(np.prod(np.where(b == 1, p, 1 - p)))


def bernoulli_exact(prob: BernoulliProblem):
  """(E[f], ∇_logits E[f]) by enumeration."""
  p = sigmoid(prob.logits)
  value, grad = 0.0, np.zeros_like(p)
  for b in all_bits(len(p)):
    w = bernoulli_prob(b, p)
    fb = prob.f_np(b)
    value += w * fb
    grad += w * fb * (b - p)
  return value, grad


def _uniform_moments(a, b):
  """E[(u − ½)] and E[(u − ½)²] for u ~ U(a, b)."""
  m1 = 0.5 * (a + b) - 0.5
  m2 = ((b - 0.5) ** 3 - (a - 0.5) ** 3) / (3 * (b - a))
  return m1, m2


def arm_moments(prob: BernoulliProblem, reached=None):
  """Exact mean and variance of ONE draw of ARM, per coordinate (3^D cells).

  ``reached(b, b̃) -> (D,)`` (optional) multiplies the terms (the
  stick-breaking Rao-Blackwellisation of categorical ARM)."""
  p = sigmoid(prob.logits)
  d = len(p)
  lo, hi = np.minimum(p, 1 - p), np.maximum(p, 1 - p)
  cells = [[(0.0, lo[i]), (lo[i], hi[i]), (hi[i], 1.0)] for i in range(d)]
  mean, second = np.zeros(d), np.zeros(d)
  for choice in itertools.product(range(3), repeat=d):
    bounds = [cells[i][c] for i, c in enumerate(choice)]
    prob_cell = np.prod([b - a for a, b in bounds])
    if prob_cell <= 0:
      continue
    mid = np.array([(a + b) / 2 for a, b in bounds])
    first_point = (mid > 1 - p).astype(float)  # 1[u > σ(−α)]
    second_point = (mid < p).astype(float)  # 1[u < σ(α)]
    delta = prob.f_np(first_point) - prob.f_np(second_point)
    keep = np.ones(d) if reached is None else reached(second_point, first_point)
    for i, (a, b) in enumerate(bounds):
      m1, m2 = _uniform_moments(a, b)
      mean[i] += prob_cell * delta * m1 * keep[i]
      second[i] += prob_cell * delta**2 * m2 * keep[i]
  return mean, second - mean**2


def disarm_moments(prob: BernoulliProblem, reached=None):
  """Exact mean and variance of ONE DisARM pair, per coordinate (4^D outcomes);
  ``reached`` as in :func:`arm_moments`."""
  p = sigmoid(prob.logits)
  d = len(p)
  outcomes = [
    ((1, 1), np.maximum(0, 2 * p - 1)),
    ((1, 0), np.minimum(p, 1 - p)),
    ((0, 1), np.minimum(p, 1 - p)),
    ((0, 0), np.maximum(0, 1 - 2 * p)),
  ]
  mean, second = np.zeros(d), np.zeros(d)
  for choice in itertools.product(range(4), repeat=d):
    w = np.prod([outcomes[c][1][i] for i, c in enumerate(choice)])
    if w <= 0:
      continue
    b = np.array([outcomes[c][0][0] for c in choice], float)
    bt = np.array([outcomes[c][0][1] for c in choice], float)
    g = (
      0.5 * (prob.f_np(b) - prob.f_np(bt)) * (-1.0) ** bt * (b != bt) * sigmoid(np.abs(prob.logits))
    )
    if reached is not None:
      g = g * reached(b, bt)
    mean += w * g
    second += w * g**2
  return mean, second - mean**2


class CategoricalProblem(NamedTuple):
  name: str
  logits: np.ndarray  # (V, K)
  table: np.ndarray  # f value of every configuration, shape (K,)*V
  f: Callable  # jax, int indices (V,) -> scalar
  f_onehot: Callable  # jax, one-hot (V, K) floats -> scalar (multilinear)


def categorical_problem():
  """Two variables with K = 3 and a non-separable cost f(x) = V[x_0, x_1]²;
  at relaxed (one-hot) inputs f(y) = (y_0ᵀ V y_1)², which is not multilinear
  (so straight-through is biased)."""
  logits = np.array([[0.5, -1.0, 0.2], [1.0, 0.0, -0.6]])
  v = np.array([[1.0, -0.5, 2.0], [0.3, 1.5, -1.0], [2.5, 0.0, 0.7]])
  t = jnp.asarray(v**2)
  vj = jnp.asarray(v)
  return CategoricalProblem(
    "categorical",
    logits,
    v**2,
    lambda x: t.astype(jnp.result_type(float))[x[0], x[1]],
    lambda y: (y[0] @ vj.astype(y.dtype) @ y[1]) ** 2,
  )


def categorical_dist(logits):
  return sg.dists.Categorical(logits=logits)


def categorical_configs(prob: CategoricalProblem):
  v, k = prob.logits.shape
  return [np.array(c) for c in itertools.product(range(k), repeat=v)]


def categorical_exact(prob: CategoricalProblem):
  p = special.softmax(prob.logits, axis=-1)
  value, grad = 0.0, np.zeros_like(p)
  for x in categorical_configs(prob):
    w = np.prod(p[np.arange(len(x)), x])
    fx = prob.table[tuple(x)]
    value += w * fx
    grad += w * fx * (np.eye(p.shape[1])[x] - p)
  return value, grad


# --- generic finite distributions (used for n-tuple enumerations) ----------


class Finite(NamedTuple):
  """A finite distribution: outcomes, probabilities, f values and scores."""

  probs: np.ndarray  # (M,)
  costs: np.ndarray  # (M,)
  scores: np.ndarray  # (M, P) ∂ log p / ∂ logits, flattened


def finite_bernoulli(prob: BernoulliProblem) -> Finite:
  p = sigmoid(prob.logits)
  bits = all_bits(len(p))
  return Finite(
    np.array([bernoulli_prob(b, p) for b in bits]), np.array([prob.f_np(b) for b in bits]), bits - p
  )


def finite_categorical(prob: CategoricalProblem) -> Finite:
  p = special.softmax(prob.logits, axis=-1)
  configs = categorical_configs(prob)
  k = p.shape[1]
  return Finite(
    np.array([np.prod(p[np.arange(len(x)), x]) for x in configs]),
    np.array([prob.table[tuple(x)] for x in configs]),
    np.array([(np.eye(k)[x] - p).ravel() for x in configs]),
  )


def leave_one_out_moments(fin: Finite, n: int):
  """Exact mean and variance of the score-function estimate with n samples and
  the leave-one-out baseline, (1/n) Σ_i (f_i − mean_{j≠i} f_j) s_i."""
  m = len(fin.probs)
  mean = np.zeros(fin.scores.shape[1])
  second = np.zeros_like(mean)
  for idx in itertools.product(range(m), repeat=n):
    idx = np.array(idx)
    w = np.prod(fin.probs[idx])
    c = fin.costs[idx]
    b = (c.sum() - c) / (n - 1)
    g = np.mean((c - b)[:, None] * fin.scores[idx], axis=0)
    mean += w * g
    second += w * g**2
  return mean, second - mean**2


def optimal_baseline_moments(fin: Finite, n: int):
  """Exact mean and variance of the score-function estimate with n samples and
  the per-coordinate optimal baseline estimated leave-one-out,
  (1/n) Σ_i (f_i − b_{k,i}) s_{k,i}, b_{k,i} = Σ_{j≠i} f_j s_{kj}² / Σ_{j≠i} s_{kj}²
  (0 where the denominator is 0)."""
  m = len(fin.probs)
  mean = np.zeros(fin.scores.shape[1])
  second = np.zeros_like(mean)
  for idx in itertools.product(range(m), repeat=n):
    idx = np.array(idx)
    w = np.prod(fin.probs[idx])
    c = fin.costs[idx]
    s2 = fin.scores[idx] ** 2
    num = (c[:, None] * s2).sum(axis=0) - c[:, None] * s2
    den = s2.sum(axis=0) - s2
    b = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    g = np.mean((c[:, None] - b) * fin.scores[idx], axis=0)
    mean += w * g
    second += w * g**2
  return mean, second - mean**2


def vimco_moments(fin: Finite, k: int):
  """Exact gradient of E[log mean_k exp f(x_k)] and the exact mean and variance
  of the VIMCO estimate, by enumerating the K-tuples."""
  m = len(fin.probs)
  grad = np.zeros(fin.scores.shape[1])
  mean = np.zeros_like(grad)
  second = np.zeros_like(grad)
  for idx in itertools.product(range(m), repeat=k):
    idx = np.array(idx)
    w = np.prod(fin.probs[idx])
    lw = fin.costs[idx]
    bound = special.logsumexp(lw) - np.log(k)
    total_score = fin.scores[idx].sum(axis=0)
    grad += w * bound * total_score  # ∇ Σ p(tuple) L = Σ p L ∇ log p(tuple)
    g = np.zeros_like(grad)
    for j in range(k):
      replaced = lw.copy()
      replaced[j] = np.mean(np.delete(lw, j))
      g += (bound - (special.logsumexp(replaced) - np.log(k))) * fin.scores[idx[j]]
    mean += w * g
    second += w * g**2
  return grad, mean, second - mean**2


def rao_blackwell_moments(fin: Finite, num_summed: int):
  """Exact mean and per-draw variance of sum-and-sample without a baseline.

  C = the num_summed most probable outcomes (the tests use logits without
  ties); one draw gives A + (1 − p(C)) f(x) s(x) with x ~ p(· | x ∉ C).
  """
  order = np.argsort(-fin.probs, kind="stable")
  summed, rest = order[:num_summed], order[num_summed:]
  a = np.sum((fin.probs * fin.costs)[summed, None] * fin.scores[summed], axis=0)
  p_rest = fin.probs[rest].sum()
  if len(rest) == 0:
    return a, np.zeros_like(a)
  q = fin.probs[rest] / p_rest
  terms = a + p_rest * fin.costs[rest, None] * fin.scores[rest]
  mean = q @ terms
  return mean, q @ terms**2 - mean**2


def straight_through_moments_bernoulli(prob: BernoulliProblem):
  """ĝ = ∇f(b) σ'(α) depends on b only: exact mean and variance by enumeration."""
  p = sigmoid(prob.logits)
  dsig = p * (1 - p)
  grad_f = jax.jit(jax.grad(prob.f))
  mean, second = np.zeros_like(p), np.zeros_like(p)
  with jax.enable_x64(True):
    for b in all_bits(len(p)):
      w = bernoulli_prob(b, p)
      g = np.asarray(grad_f(jnp.asarray(b))) * dsig
      mean += w * g
      second += w * g**2
  return mean, second - mean**2


def straight_through_moments_categorical(prob: CategoricalProblem):
  """ĝ_v = J_v^T ∇_{y_v} f(onehot), J_v = diag(p_v) − p_v p_v^T; by enumeration."""
  p = special.softmax(prob.logits, axis=-1)
  k = p.shape[1]
  mean, second = np.zeros_like(p), np.zeros_like(p)
  with jax.enable_x64(True):
    grad_f = jax.grad(prob.f_onehot)
    for x in categorical_configs(prob):
      w = np.prod(p[np.arange(len(x)), x])
      gy = np.asarray(grad_f(jnp.asarray(np.eye(k)[x])))
      g = np.stack([(np.diag(p[v]) - np.outer(p[v], p[v])) @ gy[v] for v in range(len(x))])
      mean += w * g
      second += w * g**2
  return mean, second - mean**2


def gumbel_softmax_moments_categorical(logits, f_onehot, temperature: float, nodes: int = 40):
  """Exact (quadrature) mean and variance of ONE Gumbel-softmax draw for a
  single categorical variable with K = 3: y = softmax((α + G(u))/λ),
  G(u) = −log(−log u), ĝ = J_yᵀ ∇f(y), by a 3-D Gauss-Legendre rule over u."""
  k = len(logits)
  assert k == 3
  x, w = gauss_legendre(0.0, 1.0, nodes)
  grids = np.meshgrid(x, x, x, indexing="ij")
  u = np.stack([g.ravel() for g in grids], axis=-1)
  weights = np.einsum("i,j,k->ijk", w, w, w).ravel()
  with jax.enable_x64(True):

    def g_of(ui):
      return jax.grad(
        lambda l: f_onehot(jax.nn.softmax((l - jnp.log(-jnp.log(ui))) / temperature))
      )(jnp.asarray(logits))

    g = np.asarray(jax.jit(jax.vmap(g_of))(jnp.asarray(u)))
  mean = weights @ g
  return mean, weights @ g**2 - mean**2


def gauss_legendre(a, b, n):
  x, w = np.polynomial.legendre.leggauss(n)
  return 0.5 * (b - a) * x + 0.5 * (b + a), 0.5 * (b - a) * w


def smoothed_gauss_legendre(a, b, n):
  """Gauss-Legendre after the substitution x = a + (b − a) φ(w),
  φ(w) = w³(10 − 15w + 6w²), φ'(w) = 30 w²(1 − w)²: it flattens power-law
  endpoint singularities such as (1 − v)^{1/2} (σ(z/λ) with λ = 2 near v = 1)."""
  w, wt = gauss_legendre(0.0, 1.0, n)
  phi = w**3 * (10 - 15 * w + 6 * w**2)
  dphi = 30 * w**2 * (1 - w) ** 2
  return a + (b - a) * phi, (b - a) * dphi * wt


def _panels(p_i, n):
  """Nodes/weights on (0, 1) split at 1 − p (where the hard sample flips)."""
  xa, wa = smoothed_gauss_legendre(0.0, 1 - p_i, n)
  xb, wb = smoothed_gauss_legendre(1 - p_i, 1.0, n)
  return np.concatenate([xa, xb]), np.concatenate([wa, wb])


def gumbel_softmax_moments_bernoulli(
  prob: BernoulliProblem, temperature: float, straight_through: bool, nodes: int = 48
):
  """Exact (quadrature) mean and variance of ONE Gumbel-softmax draw.

  ĝ_i(u) = ∂f/∂y_i(y or hard) · y_i (1 − y_i) / λ, y = σ((α + logit u)/λ);
  a D-dimensional tensor-product Gauss-Legendre rule over u, each axis split
  at 1 − p_i (smooth pieces).
  """
  p = sigmoid(prob.logits)
  d = len(p)
  axes = [_panels(p[i], nodes) for i in range(d)]
  grids = np.meshgrid(*[a[0] for a in axes], indexing="ij")
  weights = np.ones_like(grids[0])
  for i in range(d):
    shape = [1] * d
    shape[i] = -1
    weights = weights * axes[i][1].reshape(shape)
  u = np.stack([g.ravel() for g in grids], axis=-1)
  w = weights.ravel()
  with jax.enable_x64(True):
    z = jnp.asarray(prob.logits) + jnp.log(u) - jnp.log1p(-u)
    y = jax.nn.sigmoid(z / temperature)
    at = jnp.where(z > 0, 1.0, 0.0) if straight_through else y
    gf = jax.vmap(jax.grad(prob.f))(at)
    g = np.asarray(gf * y * (1 - y) / temperature)
  mean = w @ g
  return mean, w @ g**2 - mean**2


def rebar_one_bit_moments(
  logit: float, target: float, temperature: float, scale: float, nodes: int = 200
):
  """Exact (quadrature) mean and variance of ONE REBAR draw for one bit and
  f(b) = (b − t)², written out by hand:

    z = α + logit u, b = 1[z > 0], z̃ = z | b (from v), c(z) = η f(σ(z/λ)),
    ĝ = (f(b) − c(z̃))(b − σ(α)) + c'(z) − c'(z̃) ∂z̃/∂α,

  with c'(z) = η 2(σ(z/λ) − t) σ(z/λ)(1 − σ(z/λ))/λ and, for b = 1,
  z̃ = softplus(logit v + softplus α), ∂z̃/∂α = σ(logit v + softplus α) σ(α);
  for b = 0, z̃ = −softplus(logit v + softplus(−α)),
  ∂z̃/∂α = σ(logit v + softplus(−α)) σ(−α).
  """
  p = sigmoid(logit)
  uu, wu = _panels(p, nodes)
  vv, wv = smoothed_gauss_legendre(0.0, 1.0, 2 * nodes)
  U, V = np.meshgrid(uu, vv, indexing="ij")
  W = np.outer(wu, wv)
  f = lambda x: (x - target) ** 2
  softplus = lambda x: np.logaddexp(0.0, x)

  def c_and_slope(z):
    s = sigmoid(z / temperature)
    return scale * f(s), scale * 2 * (s - target) * s * (1 - s) / temperature

  z = logit + np.log(U) - np.log1p(-U)
  b = (z > 0).astype(float)
  t = np.log(V) - np.log1p(-V)
  zt = np.where(b == 1, softplus(t + softplus(logit)), -softplus(t + softplus(-logit)))
  dzt = np.where(b == 1, sigmoid(t + softplus(logit)) * p, sigmoid(t + softplus(-logit)) * (1 - p))
  _, dc_z = c_and_slope(z)
  c_zt, dc_zt = c_and_slope(zt)
  g = (f(b) - c_zt) * (b - p) + dc_z - dc_zt * dzt
  mean = np.sum(W * g)
  return mean, np.sum(W * g**2) - mean**2


# --- double control variates and RODEO (K-tuples enumerated) ----------------
#
# Both are deterministic functions of the K samples (given the control
# variate's parameters), so their exact mean and variance follow from
# enumerating the (2^D)^K tuples. Written from the papers' formulas with
# explicit loops over samples and neighbours (independent of stein.py).


def cost_gradient_np(prob: BernoulliProblem):
  """∇f at a binary point (f extended to floats), in closed form."""
  if prob.name == "separable":
    return lambda b: 2 * (b - 0.45) / len(b)
  return lambda b: 2 * _W * np.cos(2 * _W @ b + 0.3) + np.array([b[2], 0.0, b[0]])


def _tuple_moments(prob: BernoulliProblem, k: int, estimate):
  p = sigmoid(prob.logits)
  bits = all_bits(len(p))
  grad_f = cost_gradient_np(prob)
  fs = np.array([prob.f_np(b) for b in bits])
  gs = np.array([grad_f(b) for b in bits])
  ws = np.array([bernoulli_prob(b, p) for b in bits])
  mean = np.zeros(len(p))
  second = np.zeros_like(mean)
  for idx in itertools.product(range(len(bits)), repeat=k):
    idx = np.array(idx)
    g = estimate(bits[idx], fs[idx], gs[idx], p)
    w = np.prod(ws[idx])
    mean += w * g
    second += w * g**2
  return mean, second - mean**2


def double_cv_moments(prob: BernoulliProblem, k: int, alpha: float):
  def estimate(b, f, g, p):
    s = b - p
    c = np.array([alpha * np.dot(np.mean(np.delete(g, i, 0), 0), s[i]) for i in range(k)])
    total = np.zeros_like(p)
    for i in range(k):
      others = [j for j in range(k) if j != i]
      baseline = np.mean([f[j] + c[j] for j in others])
      total += (f[i] + c[i] - baseline) * s[i]
    return total / k - alpha * p * (1 - p) * np.mean(g, 0)

  return _tuple_moments(prob, k, estimate)


def stein_network_np(rho):
  rho = {n: np.asarray(v, np.float64) for n, v in rho.items()}

  def apply(t, v):
    pre = t * rho["w_t"] + v * rho["w_v"] + rho["c"]
    return np.where(pre > 0, pre, 0.3 * pre) @ rho["w_out"] + rho["b_out"]

  return apply


def rodeo_moments(prob: BernoulliProblem, k: int, control):
  alpha, beta = float(control["alpha"]), float(control["beta"])
  net = stein_network_np(control["network"])
  d = len(prob.logits)

  def estimate(b, f, g, p):
    def h(i, y):  # mean over j ≠ i of the network at the Taylor increment around b_j
      return np.mean([net(np.dot(g[j], y - b[j]), f[j]) for j in range(k) if j != i], 0)

    def stein(i, fn):  # Gibbs Stein operator at b_i applied to fn(y)
      x = b[i]
      out = 0.0
      for m in range(d):
        y = x.copy()
        y[m] = 1 - y[m]
        rate = p[m] if x[m] == 0 else 1 - p[m]
        out = out + rate * (fn(y) - fn(x)) / d
      return out

    a0 = [stein(j, lambda y, j=j: h(j, y)[0]) for j in range(k)]
    total = np.zeros_like(p)
    for i in range(k):
      baseline = np.mean([f[j] + alpha * a0[j] for j in range(k) if j != i])
      total += (f[i] - baseline) * (b[i] - p)
      total += beta * stein(i, lambda y, i=i: h(i, y)[1] * (y - p))
    return total / k

  return _tuple_moments(prob, k, estimate)


# --- categorical variables as stick-breaking bits (categorical ARM/DisARM) ---


class StickBreaking(NamedTuple):
  bits_problem: BernoulliProblem  # f as a function of the V(K−1) bits, logits η
  eta: np.ndarray  # (V, K − 1)
  to_x: Callable  # bits (V(K−1),) -> categorical indices (V,)
  reached: Callable  # (b, b̃) -> (V(K−1),) 1 where either path reaches the bit


def stick_breaking(prob: CategoricalProblem) -> StickBreaking:
  """Bit c of variable v is "x_v = c given x_v ≥ c": η_c = log P(x = c) − log P(x > c)."""
  v, k = prob.logits.shape
  p = special.softmax(prob.logits, axis=-1)
  tail = 1.0 - np.cumsum(p, axis=-1)
  eta = np.log(p[:, :-1]) - np.log(tail[:, :-1])

  def to_x(bits):
    bits = np.asarray(bits).reshape(v, k - 1)
    return np.array([next((c for c in range(k - 1) if row[c] == 1), k - 1) for row in bits])

  def reached(b, bt):
    out = []
    for row, row_t in zip(np.asarray(b).reshape(v, k - 1), np.asarray(bt).reshape(v, k - 1)):
      for c in range(k - 1):
        out.append(float(not row[:c].any() or not row_t[:c].any()))
    return np.array(out)

  problem = BernoulliProblem(
    "stick_breaking", eta.ravel(), lambda bits: float(prob.table[tuple(to_x(bits))]), None
  )
  return StickBreaking(problem, eta, to_x, reached)
