"""Property-based conformance suite: estimator × family × params pytree × dtype × transformation.

Hypothesis draws the family's parameters, the pytree that holds them (dict,
tuple or nested, with an unused leaf), the event size and the dtype; each
test checks one invariant for every estimator that applies:

* unbiased against the closed form: E[Σ x²] = Σ_j (Var x_j + (E x_j)²) for the
  continuous families (from moments checked against scipy in
  tests/test_dists.py and tests/test_pins.py), E[w·b + c b₀b₁] for Bernoulli
  bits and E[v_k] for Categorical;
* jit gives the same as eager, the same key the same result, vmap over
  params the same as a loop; unused leaves get exactly zero;
* the derivative-order rule (second derivatives unbiased or refused) and the
  NaN rule;
* no recompilation on new values (one trace for two parameter values);
* costs with jumps (step, floor, heaviside, jnp.where between constants) and
  kinks (max(x − K, 0), abs) under every estimator: refused at first order
  (jumps) or second order (kinks) by those that differentiate f, accepted by
  the others (issue 21);
* NumPyro instances of every built-in family give exactly the built-in's
  estimate (issue 21). These two are exact, not statistical: they add
  nothing to the false-failure budget below.

False-failure rate: each statistical assertion uses 1e-7 (Bonferroni over
coordinates inside scoregrad.testing). The default profile makes at most
6 examples × 4 statistical assertions (the discrete test makes two: the
gradient, and the Hessian where it is not refused) = 24 of them per run, so
a correct library fails by chance with probability below 3e-6 per run; the
deep profile (``make test-deep``: HYPOTHESIS_PROFILE=deep, 60 examples each)
below 3e-5. Examples are derived from a fixed database-less seed
(``derandomize=True``), so a run is reproducible; the seed is derived from the
test's source, so an edit to a test draws new examples: run ``make test-deep``
after editing this file.
"""

import os

import hypothesis
from hypothesis import given
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg
from scoregrad.testing import assert_unbiased

hypothesis.settings.register_profile(
  "default",
  max_examples=6,
  deadline=None,
  derandomize=True,
  database=None,
  suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.register_profile(
  "deep",
  max_examples=60,
  deadline=None,
  derandomize=True,
  database=None,
  suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

RATE = 1e-7
# Rounding slack relative to |exact| (zero-variance cases, e.g. the delta
# method on a linear cost, would otherwise test float rounding, not bias).
ROUNDING = {"float32": 1e-5, "float64": 1e-12}
KEYS = 512  # independent estimates per unbiasedness check
N = 16  # samples per estimate

# -- families: how two raw leaves (a, b) parameterise them ----------------------

CONTINUOUS = {
  "Normal": lambda a, b: sg.dists.Normal(a, jnp.exp(b)),
  "Laplace": lambda a, b: sg.dists.Laplace(a, jnp.exp(b)),
  "MultivariateNormalTriL": lambda a, b: sg.dists.MultivariateNormalTriL(a, jnp.diag(jnp.exp(b))),
  "Exponential": lambda a, b: sg.dists.Exponential(jnp.exp(a)),
  "Gamma": lambda a, b: sg.dists.Gamma(jnp.full_like(a, 2.5), jnp.exp(a)),
  "Poisson": lambda a, b: sg.dists.Poisson(jnp.exp(a)),
}
USES_B = {"Normal", "Laplace", "MultivariateNormalTriL"}
REPARAMETERIZED = {"Normal", "Laplace", "MultivariateNormalTriL", "Exponential", "Gamma"}
WEAK_DERIVATIVE = {"Normal", "Laplace", "Exponential", "Gamma", "Poisson"}
# The families of issue 24 (VonMises has no moments on the line: see test_new_families.py).
CONTINUOUS["LogNormal"] = lambda a, b: sg.dists.LogNormal(a, 0.5 * jnp.exp(b))
CONTINUOUS["Beta"] = lambda a, b: sg.dists.Beta(1 + jnp.exp(a), 1 + jnp.exp(b))
CONTINUOUS["Dirichlet"] = lambda a, b: sg.dists.Dirichlet(0.5 + jnp.exp(jnp.stack([a, b], -1)))
CONTINUOUS["StudentT"] = lambda a, b: sg.dists.StudentT(9 + jnp.exp(a), b, 1.0)
CONTINUOUS["Binomial"] = lambda a, b: sg.dists.Binomial(4.0, logits=a)
CONTINUOUS["Geometric"] = lambda a, b: sg.dists.Geometric(logits=a)
USES_B |= {"LogNormal", "Beta", "Dirichlet", "StudentT"}
REPARAMETERIZED |= {"LogNormal", "Beta", "Dirichlet", "StudentT"}
WEAK_DERIVATIVE |= {"LogNormal", "Binomial", "Geometric"}

CONTINUOUS_ESTIMATORS = {
  "score_function": (lambda: sg.score_function(num_samples=N), set(CONTINUOUS)),
  "score_function+leave_one_out": (
    lambda: sg.score_function(num_samples=N, baseline=sg.baselines.leave_one_out()),
    set(CONTINUOUS),
  ),
  "score_function+delta_method": (
    lambda: sg.score_function(num_samples=N, control_variate=sg.control_variates.delta_method()),
    set(CONTINUOUS),
  ),
  "pathwise": (lambda: sg.pathwise(num_samples=N), REPARAMETERIZED),
  "measure_valued": (lambda: sg.measure_valued(num_samples=N), WEAK_DERIVATIVE),
}
EVERY_ORDER = {"score_function", "score_function+leave_one_out", "pathwise", "exact"}

DISCRETE_ESTIMATORS = {
  "score_function+leave_one_out": lambda: sg.score_function(
    num_samples=N, baseline=sg.baselines.leave_one_out()
  ),
  "arm": lambda: sg.arm(num_samples=N),
  "disarm": lambda: sg.disarm(num_pairs=N),
  "rao_blackwell": lambda: sg.rao_blackwell(num_summed=2, num_samples=N),
  "measure_valued": lambda: sg.measure_valued(num_samples=N),
  "exact": lambda: sg.exact(),
  "disarm+delta_method": lambda: sg.with_control_variate(
    sg.disarm(num_pairs=N, per_sample=True), sg.control_variates.delta_method()
  ),
  "double_cv": lambda: sg.double_cv(num_samples=N),
  "rodeo": lambda: sg.rodeo(num_samples=N, hidden_size=8),
}
BERNOULLI_ONLY = {"disarm+delta_method", "double_cv", "rodeo"}
# The score function with a leave-one-out baseline is unbiased at every order
# on Bernoulli/Categorical logits (Mao et al. 2019); the rest refuse.
DISCRETE_EVERY_ORDER = {"score_function+leave_one_out"}

# -- params pytrees ---------------------------------------------------------------------

STRUCTURES = {
  "dict": (lambda a, b: {"a": a, "b": b, "unused": jnp.zeros_like(a)}, lambda p: (p["a"], p["b"])),
  "tuple": (lambda a, b: (a, b, jnp.zeros_like(b)), lambda p: (p[0], p[1])),
  "nested": (
    lambda a, b: {"outer": {"a": a}, "b": [b], "unused": (jnp.zeros(()),)},
    lambda p: (p["outer"]["a"], p["b"][0]),
  ),
}


@st.composite
def continuous_problems(draw, dtypes=("float32", "float64")):
  family = draw(st.sampled_from(sorted(CONTINUOUS)))
  d = draw(st.integers(1, 3))
  a = draw(st.lists(st.floats(-0.8, 0.8), min_size=d, max_size=d))
  b = draw(st.lists(st.floats(-0.4, 0.4), min_size=d, max_size=d))
  structure = draw(st.sampled_from(sorted(STRUCTURES)))
  dtype = draw(st.sampled_from(dtypes))
  name = draw(
    st.sampled_from(sorted(n for n, (_, fams) in CONTINUOUS_ESTIMATORS.items() if family in fams))
  )
  return family, np.array(a), np.array(b), structure, dtype, name


def _build(family, a, b, structure, dtype):
  pack, unpack = STRUCTURES[structure]
  params = pack(jnp.asarray(a, dtype), jnp.asarray(b, dtype))
  params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
  dist_fn = lambda p: CONTINUOUS[family](*unpack(p))
  return params, dist_fn


def _closed_form(dist_fn):
  """E[Σ x²] as a differentiable function of params, from the family's moments."""

  def expectation(p):
    d = dist_fn(p)
    return jnp.sum(jnp.diag(d.covariance())) + jnp.sum(jnp.square(d.mean()))

  return expectation


def square_cost(x):
  return jnp.sum(x**2)


def _x64(dtype):
  return jax.enable_x64(dtype == "float64")


@given(continuous_problems())
def test_unbiased_on_every_family_and_pytree(problem):
  family, a, b, structure, dtype, name = problem
  with _x64(dtype):
    params, dist_fn = _build(family, a, b, structure, dtype)
    est = CONTINUOUS_ESTIMATORS[name][0]()
    keys = jax.random.split(jax.random.key(0), KEYS)
    grads = jax.jit(
      jax.vmap(lambda k: est.estimate(k, square_cost, dist_fn, params, est.init(params)).grad)
    )(keys)
    exact = jax.grad(_closed_form(dist_fn))(params)
    for g, e in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(exact)):
      assert g.dtype == jnp.dtype(dtype)
    assert_unbiased(grads, exact, false_failure_rate=RATE, rtol=ROUNDING[dtype])
    # Unused leaves (and b for families that ignore it) get exactly zero. A
    # leaf is unused when the closed form ignores it at a shifted point too
    # (at a = 0 the exact gradient of a used location leaf is zero as well).
    shifted = jax.tree_util.tree_map(lambda x: x + 0.37, params)
    exact_elsewhere = jax.grad(_closed_form(dist_fn))(shifted)
    flat_g = jax.tree_util.tree_leaves(grads)
    flat_e = jax.tree_util.tree_leaves(exact_elsewhere)
    for g, e in zip(flat_g, flat_e):
      if np.all(np.asarray(e) == 0):
        np.testing.assert_array_equal(g, 0.0)


@given(continuous_problems())
def test_jit_eager_same_key_and_vmap(problem):
  family, a, b, structure, dtype, name = problem
  with _x64(dtype):
    params, dist_fn = _build(family, a, b, structure, dtype)
    est = CONTINUOUS_ESTIMATORS[name][0]()
    run = lambda p, k: est.estimate(k, square_cost, dist_fn, p, est.init(p))
    key = jax.random.key(7)
    jitted_run = jax.jit(run)
    eager, jitted, again = run(params, key), jitted_run(params, key), jitted_run(params, key)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == "float32" else dict(rtol=1e-9, atol=1e-10)
    for x, y, z in zip(
      jax.tree_util.tree_leaves(eager),
      jax.tree_util.tree_leaves(jitted),
      jax.tree_util.tree_leaves(again),
    ):
      np.testing.assert_allclose(x, y, **tol)
      np.testing.assert_array_equal(y, z)
    # vmap over (params, key) equals a Python loop over them.
    batch = jax.tree_util.tree_map(lambda x: jnp.stack([x, 0.9 * x, x + 0.1]), params)
    keys = jax.random.split(key, 3)
    vmapped = jax.jit(jax.vmap(lambda p, k: run(p, k).grad))(batch, keys)
    single = jax.jit(lambda p, k: run(p, k).grad)
    for i in range(3):
      one = single(jax.tree_util.tree_map(lambda x: x[i], batch), keys[i])
      for v, o in zip(jax.tree_util.tree_leaves(vmapped), jax.tree_util.tree_leaves(one)):
        np.testing.assert_allclose(v[i], o, **tol)


@given(continuous_problems())
def test_derivative_order_rule(problem):
  family, a, b, structure, dtype, name = problem
  with _x64(dtype):
    params, dist_fn = _build(family, a, b, structure, dtype)
    est = CONTINUOUS_ESTIMATORS[name][0]()
    run = lambda p, k: est.estimate(k, square_cost, dist_fn, p, est.init(p))
    flat = lambda h: jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(h)])
    hess = lambda k: flat(jax.jacfwd(lambda p: run(p, k).grad)(params))
    # The score function is right at every order only where log_prob is
    # smooth in the parameters (the family fact score_function_order).
    smooth = getattr(sg.dists, family).score_function_order is None
    if name not in EVERY_ORDER or (name.startswith("score_function") and not smooth):
      with pytest.raises(NotImplementedError, match="first derivatives only"):
        jax.jit(hess)(jax.random.key(0))
      return
    keys = jax.random.split(jax.random.key(1), KEYS)
    estimates = jax.jit(jax.vmap(hess))(keys)
    exact = flat(jax.hessian(_closed_form(dist_fn))(params))
    assert_unbiased(estimates, exact, false_failure_rate=RATE, rtol=ROUNDING[dtype])


@given(continuous_problems())
def test_nan_rule_and_no_recompilation(problem):
  family, a, b, structure, dtype, name = problem
  with _x64(dtype):
    params, dist_fn = _build(family, a, b, structure, dtype)
    est = CONTINUOUS_ESTIMATORS[name][0]()
    out = jax.jit(
      lambda k: est.estimate(
        k, lambda x: square_cost(x) * jnp.nan, dist_fn, params, est.init(params)
      )
    )(jax.random.key(0))
    assert np.isnan(out.value)
    assert all(np.all(np.isnan(g)) for g in jax.tree_util.tree_leaves(out.grad))
    traces = []

    @jax.jit
    def step(p, k):
      traces.append(1)
      return est.estimate(k, square_cost, dist_fn, p, est.init(p)).grad

    step(params, jax.random.key(0))
    step(jax.tree_util.tree_map(lambda x: x * 0.5, params), jax.random.key(1))
    assert len(traces) == 1


@given(continuous_problems(dtypes=("bfloat16",)))
def test_bfloat16_runs_and_keeps_its_dtype(problem):
  """bf16 is too coarse for unbiasedness checks; it must run, stay bf16 and be finite."""
  family, a, b, structure, dtype, name = problem
  params, dist_fn = _build(family, a, b, structure, dtype)
  est = CONTINUOUS_ESTIMATORS[name][0]()
  out = jax.jit(lambda k: est.estimate(k, square_cost, dist_fn, params, est.init(params)))(
    jax.random.key(0)
  )
  for g in jax.tree_util.tree_leaves(out.grad):
    assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))


# -- discrete families ------------------------------------------------------------------


@st.composite
def discrete_problems(draw):
  family = draw(st.sampled_from(["Bernoulli", "Categorical"]))
  names = (
    sorted(DISCRETE_ESTIMATORS)
    if family == "Bernoulli"
    else sorted(set(DISCRETE_ESTIMATORS) - BERNOULLI_ONLY)
  )
  name = draw(st.sampled_from(names))
  d = draw(st.integers(2, 3))
  logits = draw(st.lists(st.floats(-1.5, 1.5), min_size=d, max_size=d))
  weights = draw(st.lists(st.floats(-2.0, 2.0), min_size=d, max_size=d))
  c = draw(st.floats(-1.0, 1.0))
  structure = draw(st.sampled_from(sorted(STRUCTURES)))
  dtype = draw(st.sampled_from(["float32", "float64"]))
  return family, name, np.array(logits), np.array(weights), c, structure, dtype


@given(discrete_problems())
def test_discrete_unbiased_and_rules(problem):
  family, name, logits, weights, c, structure, dtype = problem
  with _x64(dtype):
    pack, unpack = STRUCTURES[structure]
    params = jax.tree_util.tree_map(
      lambda x: jnp.asarray(x, dtype), pack(jnp.asarray(logits), jnp.asarray(weights))
    )
    w = jnp.asarray(weights, dtype)
    if family == "Bernoulli":
      dist_fn = lambda p: sg.dists.Bernoulli(logits=unpack(p)[0])
      f = lambda bits: jnp.dot(w, bits) + c * bits[0] * bits[1]
      closed = lambda p: (lambda q: jnp.dot(w, q) + c * q[0] * q[1])(jax.nn.sigmoid(unpack(p)[0]))
    else:
      dist_fn = lambda p: sg.dists.Categorical(logits=unpack(p)[0])
      f = lambda k: w[k]
      closed = lambda p: jnp.dot(jax.nn.softmax(unpack(p)[0]), w)
    est = DISCRETE_ESTIMATORS[name]()
    run = lambda p, k: est.estimate(k, f, dist_fn, p, est.init(p))
    keys = jax.random.split(jax.random.key(2), KEYS)
    grads = jax.jit(jax.vmap(lambda k: run(params, k).grad))(keys)
    exact = jax.grad(closed)(params)
    if name == "exact":
      for g, e in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(exact)):
        np.testing.assert_allclose(g, np.broadcast_to(e, g.shape), rtol=1e-4, atol=1e-6)
    else:
      assert_unbiased(grads, exact, false_failure_rate=RATE, rtol=ROUNDING[dtype])
    # grad of value is the gradient; second derivatives unbiased or refused.
    key = jax.random.key(3)
    through_value = jax.jit(jax.grad(lambda p: run(p, key).value))(params)
    direct = jax.jit(lambda p: run(p, key).grad)(params)
    for x, y in zip(jax.tree_util.tree_leaves(through_value), jax.tree_util.tree_leaves(direct)):
      np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
    hess = lambda p: jax.jacfwd(lambda q: run(q, key).grad)(p)
    if name == "exact":
      flat = lambda h: jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(h)])
      np.testing.assert_allclose(
        flat(jax.jit(hess)(params)), flat(jax.hessian(closed)(params)), rtol=1e-3, atol=1e-5
      )
    elif name in DISCRETE_EVERY_ORDER:
      flat = lambda h: jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(h)])
      hess_at = lambda k: flat(jax.jacfwd(lambda q: run(q, k).grad)(params))
      estimates = jax.jit(jax.vmap(hess_at))(jax.random.split(jax.random.key(4), KEYS))
      exact_h = flat(jax.hessian(closed)(params))
      assert_unbiased(estimates, exact_h, false_failure_rate=RATE, rtol=ROUNDING[dtype])
    else:
      with pytest.raises(NotImplementedError, match="first derivatives only"):
        jax.jit(hess)(params)


# -- costs with jumps and kinks, for every estimator that differentiates f (issue 21) ---

K_THRESHOLD = 0.1
JUMP_COSTS = {
  "step": lambda x: jnp.sum(jnp.where(x > K_THRESHOLD, 1.0, 0.0)),
  "astype": lambda x: jnp.sum((x > K_THRESHOLD).astype(x.dtype)),
  "heaviside": lambda x: jnp.sum(jnp.heaviside(x - K_THRESHOLD, 0.5)),
  "floor": lambda x: jnp.sum(jnp.floor(x)),
  "x + step": lambda x: jnp.sum(x + (x > K_THRESHOLD)),
}
KINKED_COSTS = {
  "max(x - K, 0)": lambda x: jnp.sum(jnp.maximum(x - K_THRESHOLD, 0.0)),
  "where(x > K, x - K, 0)": lambda x: jnp.sum(jnp.where(x > K_THRESHOLD, x - K_THRESHOLD, 0.0)),
  "abs": lambda x: jnp.sum(jnp.abs(x - K_THRESHOLD)),
}
# Estimators that differentiate f (pathwise) refuse a jump at first order and a
# kink at second; those that do not differentiate f accept both.
DIFFERENTIATES_F = {"pathwise"}


@st.composite
def nonsmooth_problems(draw):
  family, a, b, structure, dtype, name = draw(continuous_problems())
  cost = draw(st.sampled_from(sorted(JUMP_COSTS) + sorted(KINKED_COSTS)))
  return family, a, b, structure, dtype, name, cost


@given(nonsmooth_problems())
def test_jumps_and_kinks_refused_where_f_is_differentiated(problem):
  """Non-statistical: no false-failure budget. Used to give pathwise zeros silently."""
  family, a, b, structure, dtype, name, cost = problem
  with _x64(dtype):
    params, dist_fn = _build(family, a, b, structure, dtype)
    est = CONTINUOUS_ESTIMATORS[name][0]()
    f = {**JUMP_COSTS, **KINKED_COSTS}[cost]
    run = lambda p, k: est.estimate(k, f, dist_fn, p, est.init(p))
    first = jax.jit(lambda p: run(p, jax.random.key(0)).grad)
    if name in DIFFERENTIATES_F and cost in JUMP_COSTS:
      with pytest.raises(sg.NotApplicableError, match="has a jump in x"):
        first(params)
      return
    g = first(params)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(g))
    if name in DIFFERENTIATES_F:  # a kink: second derivatives through f refused
      with pytest.raises(NotImplementedError, match="not twice"):
        jax.jit(jax.jacfwd(lambda p: run(p, jax.random.key(0)).grad))(params)


# -- foreign (NumPyro) instances of every built-in family (issue 21) -----------------

NUMPYRO = {
  "Normal": lambda nd, a, b: nd.Normal(a, jnp.exp(b)),
  "Laplace": lambda nd, a, b: nd.Laplace(a, jnp.exp(b)),
  "MultivariateNormalTriL": lambda nd, a, b: nd.MultivariateNormal(
    a, scale_tril=jnp.diag(jnp.exp(b))
  ),
  "Exponential": lambda nd, a, b: nd.Exponential(jnp.exp(a)),
  "Gamma": lambda nd, a, b: nd.Gamma(jnp.full_like(a, 2.5), jnp.exp(a)),
  "Poisson": lambda nd, a, b: nd.Poisson(jnp.exp(a)),
  "LogNormal": lambda nd, a, b: nd.LogNormal(a, 0.5 * jnp.exp(b)),
  "Beta": lambda nd, a, b: nd.Beta(1 + jnp.exp(a), 1 + jnp.exp(b)),
  "Dirichlet": lambda nd, a, b: nd.Dirichlet(0.5 + jnp.exp(jnp.stack([a, b], -1))),
  "StudentT": lambda nd, a, b: nd.StudentT(9 + jnp.exp(a), b, 1.0),
  "Binomial": lambda nd, a, b: nd.BinomialLogits(a, total_count=4),
  "Geometric": lambda nd, a, b: nd.GeometricLogits(a),
}


@given(continuous_problems(), st.booleans())
def test_numpyro_instances_get_the_builtin_family(problem, discrete):
  """A NumPyro instance gives exactly the built-in's estimate (same key): it is converted.

  Non-statistical (exact equality): no false-failure budget.
  """
  nd = pytest.importorskip("numpyro.distributions")
  family, a, b, structure, dtype, name = problem
  with _x64(dtype):
    params, dist_fn = _build(family, a, b, structure, dtype)
    pack, unpack = STRUCTURES[structure]
    est = CONTINUOUS_ESTIMATORS[name][0]()
    foreign_fn = lambda p: NUMPYRO[family](nd, *unpack(p))
    f = square_cost
    if discrete:  # the discrete families, with an estimator that needs their facts
      family = "Bernoulli" if a.size % 2 else "Categorical"
      builtin = getattr(sg.dists, family)
      foreign_cls = nd.Bernoulli if family == "Bernoulli" else nd.Categorical
      dist_fn = lambda p: builtin(logits=unpack(p)[0])
      foreign_fn = lambda p: foreign_cls(logits=unpack(p)[0])
      est = sg.disarm(num_pairs=4) if family == "Bernoulli" else sg.arm(num_samples=4)
      f = lambda x: jnp.sum(x * jnp.arange(1.0, 1.0 + x.size).reshape(x.shape))
    assert type(sg.dists.as_distribution(foreign_fn(params))) is type(dist_fn(params))
    run = lambda fn: jax.jit(lambda k: est.estimate(k, f, fn, params, est.init(params)))(
      jax.random.key(5)
    )
    ours, theirs = run(dist_fn), run(foreign_fn)
    for x, y in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
