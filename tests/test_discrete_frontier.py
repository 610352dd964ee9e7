"""ReinMax, Gumbel-Rao, the unordered set estimator and ARMS, against exact answers.

* ARMS and the unordered set estimator are unbiased: their exact mean and
  variance come from enumerating what they depend on (the copula's bit
  patterns, in closed form by inclusion-exclusion; the unordered sets, with
  their probabilities from the Plackett-Luce sum over orderings, independent
  of the integrals the estimator uses), the exact mean is checked to be the
  enumerated gradient, and the estimator's draws are checked against that
  mean and variance.
* ReinMax and Gumbel-Rao are biased by design: their draws are checked
  against their own exact expectation (enumeration for ReinMax, whose
  estimate depends on the discrete sample only; conditional Gauss-Legendre
  quadrature for Gumbel-Rao), that expectation is checked to differ from the
  gradient by the documented bias, and Gumbel-Rao's is checked to equal
  straight-through Gumbel-softmax's with a lower variance.

Statistical assertions use false-failure rate RATE = 1e-6 each (Bonferroni
over coordinates inside scoregrad.testing; z ≈ 5.3 for one coordinate).
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import scoregrad as sg
from scoregrad._src.discrete.without_replacement import (
  log_set_probabilities,
  stochastic_beam_search,
)
from scoregrad.testing import assert_unbiased, assert_variance, z_threshold

import discrete_oracles as oracles

RATE = 1e-6
N = 40_000
B = oracles.BERNOULLI_PROBLEMS
BERN = oracles.bernoulli_dist
CAT = oracles.categorical_dist


def _draws(est, f, dist_fn, params, n=N, seed=1):
  """n independent estimates (one key each), jitted: the Estimate with a leading axis."""
  run = lambda k: est.estimate(k, f, dist_fn, params, est.init(params))
  return jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(seed), n))


def _assert_biased(mean, exact, var, n):
  """mean − exact is at least 20 standard errors in some coordinate."""
  se = np.sqrt(np.asarray(var) / n)
  assert np.max(np.abs(np.asarray(mean) - exact) / np.maximum(se, 1e-300)) > 20, (mean, exact)


# -- ARMS -------------------------------------------------------------------------------


def copula_pattern_probs(p: float, n: int) -> dict:
  """P(b_1..n = pattern) for one coordinate of the Dirichlet copula, every pattern.

  The more likely value goes where d_i < c: for p ≥ ½, b_i = 1 ⟺ d_i < c,
  c = 1 − (1 − p)^{1/(n−1)}, d ~ Dirichlet(1ⁿ) (uniform on the simplex), for
  which P(d_j ≥ c for all j in a set of size s) = max(0, 1 − s c)^{n−1};
  inclusion-exclusion over the ones gives the rest. For p < ½, the patterns
  of 1 − p with the bits flipped.
  """
  if p < 0.5:
    return {tuple(1 - b for b in k): w for k, w in copula_pattern_probs(1 - p, n).items()}
  c = 1 - (1 - p) ** (1 / (n - 1))
  out = {}
  for pattern in itertools.product([0, 1], repeat=n):
    m = sum(pattern)
    out[pattern] = sum(
      math.comb(m, t) * (-1) ** t * max(0.0, 1 - (n - m + t) * c) ** (n - 1) for t in range(m + 1)
    )
  return out


def arms_moments(prob, n: int):
  """Exact mean and variance of one ARMS estimate (Bernoulli), by enumerating the
  (2^n)^D joint patterns; the estimator written from the pair-sum definition."""
  p = oracles.sigmoid(prob.logits)
  d = len(p)
  patterns = [copula_pattern_probs(float(pi), n) for pi in p]
  keys = list(patterns[0])
  q2 = np.array([sum(w for pat, w in pc.items() if pat[0] == 1 and pat[1] == 1) for pc in patterns])
  rho = (q2 - p**2) / (p * (1 - p))
  mean, second = np.zeros(d), np.zeros(d)
  for choice in itertools.product(range(len(keys)), repeat=d):
    w = np.prod([patterns[c][keys[j]] for c, j in enumerate(choice)])
    if w <= 0:
      continue
    bits = np.array([keys[j] for j in choice], float).T  # (n, D)
    f = np.array([prob.f_np(b) for b in bits])
    g = np.zeros(d)
    for i in range(n):
      for j in range(n):
        if i != j:
          g += (f[i] - f[j]) * (bits[i] - p)
    g /= n * (n - 1) * (1 - rho)
    mean += w * g
    second += w * g**2
  return mean, second - mean**2


@pytest.mark.parametrize("n", [2, 3, 5])
def test_copula_patterns_are_a_distribution_with_bernoulli_marginals(n):
  for p in (0.1, 0.5, 0.83):
    probs = copula_pattern_probs(p, n)
    assert min(probs.values()) >= -1e-12
    np.testing.assert_allclose(sum(probs.values()), 1.0, atol=1e-12)
    for i in range(n):
      np.testing.assert_allclose(sum(w for k, w in probs.items() if k[i] == 1), p, atol=1e-12)


def test_arms_with_two_samples_is_disarm():
  """n = 2: the copula is u₂ = 1 − u₁ and ARMS is DisARM, moment for moment."""
  for prob in B.values():
    m_arms, v_arms = arms_moments(prob, 2)
    m_dis, v_dis = oracles.disarm_moments(prob)
    np.testing.assert_allclose(m_arms, m_dis, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(v_arms, v_dis, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("problem, n", [("separable", 3), ("coupled", 2), ("coupled", 4)])
def test_arms_unbiased_with_its_exact_variance(problem, n, dtype):
  prob = B[problem]
  mean, var = arms_moments(prob, n)
  _, exact = oracles.bernoulli_exact(prob)
  np.testing.assert_allclose(mean, exact, rtol=1e-9, atol=1e-14)  # unbiased, by enumeration
  out = _draws(sg.arms(num_samples=n), prob.f, BERN, jnp.asarray(prob.logits, dtype))
  assert out.grad.dtype == dtype
  assert_unbiased(out.grad, exact, false_failure_rate=RATE, exact_variance=var)
  assert_variance(out.grad, var, false_failure_rate=RATE)


def test_arms_exact_variance_against_leave_one_out_and_disarm():
  """Exact, at n evaluations of f: ARMS has less variance than the score
  function with the leave-one-out baseline in every coordinate. Against
  DisARM with n/2 pairs it wins on the separable problem and not everywhere
  on the coupled one (the figures are in the CHANGELOG and the report): the
  assertion is only what holds."""
  for prob in B.values():
    fin = oracles.finite_bernoulli(prob)
    for n in (3, 4):
      _, v = arms_moments(prob, n)
      _, v_loo = oracles.leave_one_out_moments(fin, n)
      assert np.all(v < v_loo), (prob.name, n, v, v_loo)
  _, v_dis = oracles.disarm_moments(B["separable"])
  for n in (3, 4, 5):
    _, v = arms_moments(B["separable"], n)
    assert np.all(n * v < 2 * v_dis), (n, n * v, 2 * v_dis)


def test_arms_categorical_unbiased():
  prob = oracles.categorical_problem()
  _, exact = oracles.categorical_exact(prob)
  out = _draws(sg.arms(num_samples=4), prob.f, CAT, jnp.asarray(prob.logits, jnp.float32))
  assert_unbiased(out.grad, exact, false_failure_rate=RATE)


# -- the unordered set estimator -------------------------------------------------------


def plackett_luce(probs, members, excluded=0.0) -> float:
  """P(the first |members| draws without replacement are ``members``, any order),
  from a domain whose excluded mass is ``excluded``: a sum over orderings."""
  total = 0.0
  for order in itertools.permutations(members):
    w, used = 1.0, excluded
    for j in order:
      w *= probs[j] / (1.0 - used)
      used += probs[j]
    total += w
  return total


def unordered_set_moments(fin: oracles.Finite, k: int):
  """Exact mean and variance of the unordered set estimator with its baseline:
  enumerate the k-subsets S, with p(S) and the leave-one/two-out probabilities
  from :func:`plackett_luce` (written from Kool et al. 2020, eq. for e^{USBL})."""
  probs, costs, scores = fin.probs, fin.costs, fin.scores
  mean = np.zeros(scores.shape[1])
  second = np.zeros_like(mean)
  total = 0.0
  for S in itertools.combinations(range(len(probs)), k):
    p_set = plackett_luce(probs, S)
    total += p_set
    g = np.zeros_like(mean)
    for s in S:
      rest = [x for x in S if x != s]
      p_without = plackett_luce(probs, rest, probs[s])
      baseline = probs[s] * costs[s]
      for t in rest:
        p_without_two = plackett_luce(probs, [x for x in rest if x != t], probs[s] + probs[t])
        baseline += probs[t] * p_without_two / p_without * costs[t]
      g += probs[s] * p_without / p_set * (costs[s] - baseline) * scores[s]
    mean += p_set * g
    second += p_set * g**2
  np.testing.assert_allclose(total, 1.0, rtol=1e-12)
  return mean, second - mean**2


def test_set_probabilities_match_plackett_luce():
  """The trapezoid integrals against the sum over orderings, in float64, for
  ordinary, tiny and almost-all-covering sets (relative error < 1e-9)."""
  set_probabilities = jax.jit(log_set_probabilities)
  with jax.enable_x64(True):
    cases = [
      [0.4, 0.3, 0.2, 0.1],
      [0.5, 0.25, 1e-6, 1e-9, 0.25 - 1e-6 - 1e-9],
      [0.7, 0.3 - 1e-10, 1e-10],  # S = first two covers all but 1e-10
      [1e-3] * 5 + [1 - 5e-3],
    ]
    for probs in cases:
      probs = np.asarray(probs)
      for k in range(2, len(probs)):
        for S in itertools.combinations(range(len(probs)), k):
          log_p = jnp.log(jnp.asarray(probs[list(S)]))
          masks = jnp.asarray([[1] * k] + [[int(i != j) for i in range(k)] for j in range(k)], bool)
          got = np.exp(np.asarray(set_probabilities(log_p, masks)))
          want = [plackett_luce(probs, S)] + [
            plackett_luce(probs, [x for x in S if x != s], probs[s]) for s in S
          ]
          np.testing.assert_allclose(got, want, rtol=1e-9)


def _finite(family):
  if family == "bernoulli":
    prob = B["coupled"]
    return oracles.finite_bernoulli(prob), prob.f, BERN, prob.logits
  prob = oracles.categorical_problem()
  return oracles.finite_categorical(prob), prob.f, CAT, prob.logits


@pytest.mark.parametrize("family, k", [("bernoulli", 3), ("categorical", 2), ("categorical", 4)])
def test_unordered_set_unbiased_with_its_exact_variance(family, k, dtype):
  fin, f, dist_fn, logits = _finite(family)
  mean, var = unordered_set_moments(fin, k)
  exact = fin.probs @ (fin.costs[:, None] * fin.scores)
  np.testing.assert_allclose(mean, exact, rtol=1e-9, atol=1e-13)  # unbiased, by enumeration
  out = _draws(sg.unordered_set(num_samples=k), f, dist_fn, jnp.asarray(logits, dtype), n=20_000)
  assert out.grad.dtype == dtype
  grads = np.asarray(out.grad, np.float64).reshape(out.grad.shape[0], -1)
  assert_unbiased(grads, exact, false_failure_rate=RATE, exact_variance=var)
  assert_variance(grads, var, false_failure_rate=RATE)
  # Estimate.value: the unordered set estimate of E[f], unbiased.
  value = fin.probs @ fin.costs
  sd = np.std(np.asarray(out.value, np.float64))
  assert abs(float(np.mean(out.value)) - value) < z_threshold(RATE) * sd / np.sqrt(len(out.value))


def test_unordered_set_samples_are_distinct():
  """Stochastic beam search: k distinct configurations, with their log-probabilities."""
  fin, _, _, logits = _finite("categorical")
  lp = sg.dists.Categorical.per_variable_log_probs(jnp.asarray(logits, jnp.float32))
  values, log_p = jax.vmap(lambda key: stochastic_beam_search(key, lp, 5))(
    jax.random.split(jax.random.key(0), 500)
  )
  codes = np.asarray(values[..., 0] * 3 + values[..., 1])  # configuration index (x₀, x₁)
  assert all(len(set(row)) == 5 for row in codes)
  np.testing.assert_allclose(np.asarray(log_p), np.log(fin.probs[codes]), rtol=1e-5, atol=1e-5)


def test_unordered_set_of_the_whole_domain_is_exact():
  fin, f, dist_fn, logits = _finite("categorical")
  exact = fin.probs @ (fin.costs[:, None] * fin.scores)
  out = _draws(sg.unordered_set(num_samples=9), f, dist_fn, jnp.asarray(logits, jnp.float32), n=8)
  np.testing.assert_allclose(
    np.asarray(out.grad).reshape(8, -1), np.broadcast_to(exact, (8, 6)), rtol=2e-4, atol=1e-5
  )


def test_unordered_set_beats_the_leave_one_out_score_function():
  """Exact variances at equal evaluations of f (k = 3): sampling without
  replacement on a peaked categorical wastes no evaluation on duplicates."""
  prob = oracles.categorical_problem()
  fin = oracles.finite_categorical(prob)
  _, v_us = unordered_set_moments(fin, 3)
  _, v_loo = oracles.leave_one_out_moments(fin, 3)
  assert np.sum(v_us) < np.sum(v_loo), (np.sum(v_us), np.sum(v_loo))


# -- ReinMax -------------------------------------------------------------------------


def reinmax_reference(g, probs, tempered, onehot):
  """The ReinMax gradient for one categorical variable, transcribed from the
  backward pass of the reference ``reinmax`` package (0.1.0)."""
  shifted = 0.5 * (tempered + onehot)
  a = 2 * g * shifted
  a = a - shifted * a.sum(-1, keepdims=True)
  b = -0.5 * g * probs
  b = b - probs * b.sum(-1, keepdims=True)
  out = a + b
  return out - out.mean(-1, keepdims=True)


def reinmax_moments_bernoulli(prob, temperature):
  p = oracles.sigmoid(prob.logits)
  pt = oracles.sigmoid(prob.logits / temperature)
  grad_f = oracles.cost_gradient_np(prob)
  mean, second = np.zeros_like(p), np.zeros_like(p)
  for b in oracles.all_bits(len(p)):
    w = oracles.bernoulli_prob(b, p)
    pi1 = 0.5 * (b + pt)
    g = (2 * pi1 * (1 - pi1) - 0.5 * p * (1 - p)) * grad_f(b)
    mean += w * g
    second += w * g**2
  return mean, second - mean**2


def reinmax_moments_categorical(prob, temperature):
  p = special.softmax(prob.logits, axis=-1)
  pt = special.softmax(prob.logits / temperature, axis=-1)
  k = p.shape[1]
  mean, second = np.zeros_like(p), np.zeros_like(p)
  with jax.enable_x64(True):
    grad_f = jax.grad(prob.f_onehot)
    for x in oracles.categorical_configs(prob):
      w = np.prod(p[np.arange(len(x)), x])
      d = np.eye(k)[x]
      g = reinmax_reference(np.asarray(grad_f(jnp.asarray(d))), p, pt, d)
      mean += w * g
      second += w * g**2
  return mean, second - mean**2


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_reinmax_bernoulli_expectation_and_bias(temperature, dtype):
  prob = B["coupled"]
  mean, var = reinmax_moments_bernoulli(prob, temperature)
  est = sg.reinmax(num_samples=N, temperature=temperature, per_sample=True)
  out = _draws(est, prob.f, BERN, jnp.asarray(prob.logits, dtype), n=1)
  rows = out.per_sample[0]
  assert rows.dtype == dtype
  assert_unbiased(rows, mean, false_failure_rate=RATE, exact_variance=var)
  assert_variance(rows, var, false_failure_rate=RATE)
  _assert_biased(mean, oracles.bernoulli_exact(prob)[1], var, N)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_reinmax_categorical_expectation_and_bias(temperature):
  """f(y) = (y₀ᵀ V y₁)² is quadratic in each variable: at τ = 1 ReinMax's mean
  is then the exact gradient (Heun's step is exact for quadratics, where
  straight-through is biased), at τ = 2 it is biased."""
  prob = oracles.categorical_problem()
  mean, var = reinmax_moments_categorical(prob, temperature)
  exact = oracles.categorical_exact(prob)[1]
  est = sg.reinmax(num_samples=N, temperature=temperature, per_sample=True)
  out = _draws(est, prob.f_onehot, CAT, jnp.asarray(prob.logits, jnp.float32), n=1)
  assert_unbiased(out.per_sample[0], mean, false_failure_rate=RATE, exact_variance=var)
  assert_variance(out.per_sample[0], var, false_failure_rate=RATE)
  if temperature == 1.0:
    # (rtol: the problem's jax cost holds V in float32, the enumeration in float64)
    np.testing.assert_allclose(mean, exact, rtol=1e-6, atol=1e-9)
    st_mean, st_var = oracles.straight_through_moments_categorical(prob)
    _assert_biased(st_mean, exact, st_var, N)
  else:
    _assert_biased(mean, exact, var, N)


def test_reinmax_matches_the_reference_formula_on_the_same_samples():
  """One K = 3 variable, f(y) = (y·a)² with distinct values at the vertices, so
  each estimate's value f(D) identifies its sample D; its gradient must be the
  reference package's backward formula at that D (float32 rounding)."""
  logits = np.array([0.5, -0.3, 1.0])
  a = np.array([1.0, -2.0, 0.5])
  f = lambda y: jnp.dot(y, jnp.asarray(a, y.dtype)) ** 2
  for temperature in (1.0, 1.7, 0.6):
    out = _draws(
      sg.reinmax(num_samples=1, temperature=temperature),
      f,
      CAT,
      jnp.asarray(logits, jnp.float32),
      n=300,
    )
    which = np.argmin(np.abs(np.asarray(out.value)[:, None] - a[None, :] ** 2), axis=1)
    assert len(set(which)) == 3  # every vertex drawn
    p, pt = special.softmax(logits), special.softmax(logits / temperature)
    for grad, x in zip(np.asarray(out.grad), which):
      d = np.eye(3)[x]
      want = reinmax_reference(2 * a[x] * a, p, pt, d)
      np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-6)


def test_reinmax_bias_table_in_the_docstring():
  """The REBAR-toy table of reinmax's docstring, exact (b enumerated)."""
  t = 0.45
  rows = {
    "exact": [0.016, 0.025, 0.016],
    "straight_through": [-0.080, 0.025, 0.112],
    1.0: [0.016, 0.025, 0.016],
    2.0: [-0.062, 0.025, 0.108],
    0.5: [0.109, 0.025, -0.095],
  }
  for i, theta in enumerate((0.2, 0.5, 0.8)):
    prob = oracles.BernoulliProblem(
      "one_bit",
      np.array([np.log(theta / (1 - theta))]),
      lambda b: float((b[0] - t) ** 2),
      None,
    )
    np.testing.assert_allclose(theta * (1 - theta) * (1 - 2 * t), rows["exact"][i], atol=5e-4)
    np.testing.assert_allclose(
      2 * (theta - t) * theta * (1 - theta), rows["straight_through"][i], atol=5e-4
    )
    grad_f = lambda b: 2 * (b - t)
    for tau in (1.0, 2.0, 0.5):
      p, pt = theta, oracles.sigmoid(prob.logits[0] / tau)
      m = sum(
        w * (2 * (b + pt) / 2 * (1 - (b + pt) / 2) - 0.5 * p * (1 - p)) * grad_f(b)
        for b, w in ((1.0, p), (0.0, 1 - p))
      )
      np.testing.assert_allclose(m, rows[tau][i], atol=5e-4)


def test_reinmax_small_temperature_is_finite():
  """τ < 1 is allowed (documented): the estimate stays finite even where
  softmax(θ/τ) rounds to the one-hot mode."""
  prob = oracles.categorical_problem()
  for tau in (1e-3,):
    out = _draws(
      sg.reinmax(num_samples=64, temperature=tau),
      prob.f_onehot,
      CAT,
      jnp.asarray(prob.logits, jnp.float32),
      n=4,
    )
    assert np.all(np.isfinite(np.asarray(out.grad)))


# -- Gumbel-Rao -------------------------------------------------------------------------


def gumbel_rao_moments_bernoulli(prob, temperature, num_inner, nodes=96):
  """Exact mean and variance of one Gumbel-Rao draw (Bernoulli), by quadrature:
  given D, ĝ_i = ∂_i f(D)·(1/M) Σ_m h(z̃_m,i), h(z) = σ(z/τ)(1 − σ(z/τ))/τ, with
  z̃ = α + logit(u), u uniform on the side of 1 − p that gives D_i; so
  E[ĝ|D] = ∂f(D) m₁(D), Var(ĝ|D) = ∂f(D)² (m₂ − m₁²)/M, m_k the conditional
  moments of h (1-D Gauss-Legendre per side), and D enumerated."""
  p = oracles.sigmoid(prob.logits)
  grad_f = oracles.cost_gradient_np(prob)

  def moments(alpha, lo, hi):
    u, w = oracles.smoothed_gauss_legendre(lo, hi, nodes)
    z = alpha + np.log(u) - np.log1p(-u)
    y = oracles.sigmoid(z / temperature)
    h = y * (1 - y) / temperature
    return w @ h / (hi - lo), w @ h**2 / (hi - lo)

  m1 = np.zeros((len(p), 2))
  m2 = np.zeros((len(p), 2))
  for i, (alpha, pi) in enumerate(zip(prob.logits, p)):
    m1[i, 1], m2[i, 1] = moments(alpha, 1 - pi, 1.0)
    m1[i, 0], m2[i, 0] = moments(alpha, 0.0, 1 - pi)
  mean, second = np.zeros_like(p), np.zeros_like(p)
  for b in oracles.all_bits(len(p)):
    w = oracles.bernoulli_prob(b, p)
    idx = b.astype(int)
    g = grad_f(b)
    c1, c2 = m1[np.arange(len(p)), idx], m2[np.arange(len(p)), idx]
    mean += w * g * c1
    second += w * (g**2) * (c1**2 + (c2 - c1**2) / num_inner)
  return mean, second - mean**2


@pytest.mark.parametrize("problem", sorted(B))
def test_gumbel_rao_oracle_with_one_inner_draw_is_straight_through_gumbel(problem):
  """Two independent quadratures: Gumbel-Rao with M = 1 has the distribution
  of straight-through Gumbel-softmax (mean and variance agree)."""
  prob = B[problem]
  m_gr, v_gr = gumbel_rao_moments_bernoulli(prob, 0.5, 1)
  m_st, v_st = oracles.gumbel_softmax_moments_bernoulli(prob, 0.5, True, nodes=48)
  np.testing.assert_allclose(m_gr, m_st, rtol=1e-6)
  np.testing.assert_allclose(v_gr, v_st, rtol=1e-6)


@pytest.mark.parametrize("problem", sorted(B))
def test_gumbel_rao_expectation_bias_and_lower_variance(problem, dtype):
  prob = B[problem]
  m_inner = 8
  mean, var = gumbel_rao_moments_bernoulli(prob, 0.5, m_inner)
  m_st, v_st = oracles.gumbel_softmax_moments_bernoulli(prob, 0.5, True, nodes=48)
  np.testing.assert_allclose(mean, m_st, rtol=1e-6)  # same mean (the same bias) ...
  assert np.all(var < 0.9 * v_st)  # ... and less variance, exactly
  params = jnp.asarray(prob.logits, dtype)
  est = sg.gumbel_rao(num_samples=N, num_inner=m_inner, temperature=0.5, per_sample=True)
  rows = _draws(est, prob.f, BERN, params, n=1).per_sample[0]
  assert rows.dtype == dtype
  assert_unbiased(rows, mean, false_failure_rate=RATE, exact_variance=var)
  assert_variance(rows, var, false_failure_rate=RATE)
  _assert_biased(mean, oracles.bernoulli_exact(prob)[1], var, N)
  # Measured at equal samples: straight-through Gumbel-softmax's variance is higher.
  st = sg.gumbel_softmax(num_samples=N, temperature=0.5, straight_through=True, per_sample=True)
  st_rows = _draws(st, prob.f, BERN, params, n=1, seed=2).per_sample[0]
  assert_variance(st_rows, v_st, false_failure_rate=RATE)
  assert np.all(np.var(np.asarray(rows), 0) < np.var(np.asarray(st_rows), 0))


def test_gumbel_rao_categorical_has_straight_through_gumbels_mean():
  """Categorical: the two means agree (z-test on the difference of two
  independent runs) and Gumbel-Rao's per-sample variance is lower."""
  prob = oracles.categorical_problem()
  params = jnp.asarray(prob.logits, jnp.float32)
  gr = sg.gumbel_rao(num_samples=N, num_inner=8, temperature=0.5, per_sample=True)
  st = sg.gumbel_softmax(num_samples=N, temperature=0.5, straight_through=True, per_sample=True)
  a = np.asarray(_draws(gr, prob.f_onehot, CAT, params, n=1).per_sample[0], np.float64)
  b = np.asarray(_draws(st, prob.f_onehot, CAT, params, n=1, seed=3).per_sample[0], np.float64)
  se = np.sqrt(a.var(0) / N + b.var(0) / N)
  assert np.all(np.abs(a.mean(0) - b.mean(0)) < z_threshold(RATE, a[0].size) * se)
  assert np.all(a.var(0) < b.var(0))


# -- the rules every estimator follows ------------------------------------------------

FACTORIES = {
  "reinmax": lambda: sg.reinmax(num_samples=4, temperature=1.0),
  "gumbel_rao": lambda: sg.gumbel_rao(num_samples=4, num_inner=3, temperature=0.5),
  "unordered_set": lambda: sg.unordered_set(num_samples=3),
  "arms": lambda: sg.arms(num_samples=4),
}
F = lambda b: jnp.sum((b - 0.45) ** 2)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_rules_first_order_nan_keys_and_no_recompilation(name):
  """(float64 is covered by the dtype-parametrised statistical tests above.)"""
  est = FACTORIES[name]()
  params = {"w": jnp.asarray([0.3, -0.7, 1.2], jnp.float32)}
  dist_fn = lambda p: BERN(p["w"] * 1.5)
  run = lambda p, k: est.estimate(k, F, dist_fn, p, est.init(p))
  key = jax.random.key(4)
  traces = []

  def grad_of(p, k):
    traces.append(1)
    return run(p, k).grad

  grad_fn = jax.jit(grad_of)
  direct = grad_fn(params, key)
  # Same key, same answer; one trace for new values; jit = eager.
  np.testing.assert_array_equal(direct["w"], grad_fn(params, key)["w"])
  grad_fn({"w": params["w"] * 0.5}, jax.random.key(5))
  assert len(traces) == 1
  np.testing.assert_allclose(run(params, key).grad["w"], direct["w"], rtol=1e-5, atol=1e-6)
  # Derivative-order rule: grad of value is the gradient; a second derivative refuses.
  through_value = jax.jit(jax.grad(lambda p: run(p, key).value))(params)
  np.testing.assert_allclose(through_value["w"], direct["w"], rtol=1e-5, atol=1e-7)
  with pytest.raises(NotImplementedError, match="first derivatives only"):
    jax.jit(jax.jacfwd(lambda p: run(p, key).grad))(params)
  with pytest.raises(NotImplementedError, match="first derivatives only"):
    jax.jit(jax.hessian(lambda p: run(p, key).value))(params)
  # NaN in, NaN out.
  out = jax.jit(lambda k: est.estimate(k, lambda b: F(b) * jnp.nan, dist_fn, params, ()))(key)
  assert np.isnan(out.value) and np.all(np.isnan(out.grad["w"]))


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_categorical_and_pytree_params(name):
  est = FACTORIES[name]()
  params = (jnp.zeros((2, 3)), jnp.ones(()))
  dist_fn = lambda p: CAT(p[0] * p[1])
  relaxed = name in ("reinmax", "gumbel_rao")
  v = jnp.arange(3.0)
  f = (lambda y: jnp.sum((y @ v - 1.0) ** 2)) if relaxed else (lambda x: jnp.sum(v[x] ** 2))
  out = jax.jit(lambda k: est.estimate(k, f, dist_fn, params, est.init(params)))(jax.random.key(0))
  assert out.grad[0].shape == (2, 3) and out.grad[1].shape == ()
  assert np.all(np.isfinite(out.grad[0]))


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
  "make, match",
  [
    (lambda: sg.arms(num_samples=1), r"`num_samples` must be >= 2; got num_samples=1.*DisARM"),
    (lambda: sg.arms(num_samples=2.0), r"Use num_samples=2"),
    (lambda: sg.unordered_set(num_samples=1), r"`num_samples` must be >= 2; got num_samples=1"),
    (lambda: sg.reinmax(num_samples=0, temperature=1.0), "num_samples=0"),
    (lambda: sg.gumbel_rao(num_samples=2, num_inner=0, temperature=1.0), "num_inner=0"),
    (lambda: sg.gumbel_rao(num_samples=0, num_inner=2, temperature=1.0), "num_samples=0"),
    (lambda: sg.gumbel_rao(num_samples=2, num_inner=2, temperature=1e-20), "machine epsilon"),
  ],
)
def test_settings_validated(make, match):
  with pytest.raises((ValueError, TypeError), match=match):
    make()


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf")])
@pytest.mark.parametrize("factory", ["reinmax", "gumbel_rao"])
def test_temperature_must_be_positive(factory, bad):
  kwargs = {"num_samples": 2, "temperature": bad}
  if factory == "gumbel_rao":
    kwargs["num_inner"] = 2
  with pytest.raises(
    ValueError, match=rf"`temperature` must be a finite number > 0; got temperature={bad!r}"
  ):
    getattr(sg, factory)(**kwargs)


def test_unordered_set_more_samples_than_categories():
  est = sg.unordered_set(num_samples=4)
  with pytest.raises(
    ValueError,
    match=r"`num_samples` of unordered_set must be at most.*3\^1 = 3 configurations.*"
    r"got num_samples=4.*num_samples=3",
  ):
    est.estimate(jax.random.key(0), lambda x: x.astype(jnp.float32), CAT, jnp.zeros(3), ())
  est = sg.unordered_set(num_samples=5)
  with pytest.raises(ValueError, match=r"2\^2 = 4 configurations of a Bernoulli"):
    est.estimate(jax.random.key(0), F, BERN, jnp.zeros(2), ())


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_non_discrete_distribution_refused(name):
  est = FACTORIES[name]()
  with pytest.raises(ValueError, match=rf"`{name}` estimates gradients for discrete"):
    est.estimate(jax.random.key(0), F, lambda p: sg.dists.Normal(p, 1.0), jnp.zeros(2), ())


@pytest.mark.parametrize("name", ["reinmax", "gumbel_rao"])
def test_relaxed_refuse_a_zero_derivative_cost(name):
  est = FACTORIES[name]()
  # Refused by the one cost check: as a jump (round is piecewise constant),
  # or, where the smoothness analysis is off, as an identically zero derivative.
  with pytest.raises(ValueError, match="has a jump in x|identically zero"):
    est.estimate(jax.random.key(0), lambda b: jnp.sum(jnp.round(b)), BERN, jnp.zeros(2), ())


# -- the discrete_toy rows ---------------------------------------------------------------


def test_discrete_toy_exact_moments_of_the_new_rows():
  """benchmarks/discrete_toy.py's one-bit formulas equal the D-dimensional
  oracles above on one bit (and ARMS with n = 2 is DisARM there)."""
  from benchmarks import discrete_toy

  t = 0.45
  for theta in (0.2, 0.5, 0.8):
    prob = oracles.separable_problem(target=t, logits=(np.log(theta / (1 - theta)),))
    np.testing.assert_allclose(
      discrete_toy.exact_moments("reinmax(1)", theta, t, 2),
      np.concatenate(reinmax_moments_bernoulli(prob, 1.0)),
      rtol=1e-10,
    )
    np.testing.assert_allclose(
      discrete_toy.exact_moments("gumbel_rao(0.5)", theta, t, 2),
      np.concatenate(gumbel_rao_moments_bernoulli(prob, 0.5, 16)),
      rtol=1e-6,
    )
    m, v = arms_moments(prob, 2)
    np.testing.assert_allclose(
      discrete_toy.exact_moments("arms", theta, t, 2), (m[0], 2 * v[0]), rtol=1e-9, atol=1e-15
    )
    mean, var = discrete_toy.exact_moments("unordered_set", theta, t, 2)
    assert var == 0 and mean == pytest.approx(discrete_toy.exact_gradient(theta, t), abs=1e-15)
