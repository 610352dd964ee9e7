"""Derivatives taken outside a loop whose body holds an estimate.

JAX's partial evaluation of ``lax.scan``/``fori_loop`` bodies inlines a custom
JVP's primal for known inputs. Before 0.2, ``sg.magic_box`` was a custom JVP
with primal ``ones_like(τ)``, so ``jax.hessian`` of a surrogate summed in a
``lax.scan`` silently lost the ∇τ∇τᵀ term, and a first-order-only estimator's
``.value`` had a silent zero Hessian through a scan. These tests pin both:
the same samples give the same Hessian with and without the loop (a
deterministic identity, no tolerance beyond float rounding), and a refused
derivative stays refused inside a loop.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoregrad as sg

KEY = jax.random.key(0)
CHUNKS = 3


def _normal(p):
  return sg.dists.Normal(p[:2], jnp.exp(p[2:]))


def _bernoulli(logits):
  return sg.dists.Bernoulli(logits=logits)


def _value(estimator, f, dist_fn):
  def one(params, c):
    key = jax.random.fold_in(KEY, c)
    return estimator.estimate(key, f, dist_fn, params, estimator.init(params)).value

  return one


def _expectation(params, c):
  return sg.expectation(
    lambda x: jnp.sum(jnp.sin(x) + x**2),
    _normal(params),
    jax.random.fold_in(KEY, c),
    num_samples=16,
  )


def _unrolled(one):
  return lambda p: sum(one(p, jnp.uint32(c)) for c in range(CHUNKS))


def _scanned(one):
  def total(p):
    out, _ = jax.lax.scan(
      lambda t, c: (t + one(p, c), None), jnp.zeros(()), jnp.arange(CHUNKS, dtype=jnp.uint32)
    )
    return out

  return total


def _fori(one):
  return lambda p: jax.lax.fori_loop(
    0, CHUNKS, lambda i, t: t + one(p, i.astype(jnp.uint32)), jnp.zeros(())
  )


SMOOTH = {
  "score_function": _value(
    sg.score_function(num_samples=16), lambda x: jnp.sum(jnp.sin(x) + x**2), _normal
  ),
  "score_function+loo": _value(
    sg.score_function(num_samples=16, baseline=sg.baselines.leave_one_out()),
    lambda x: jnp.sum(jnp.sin(x) + x**2),
    _normal,
  ),
  "pathwise": _value(sg.pathwise(num_samples=16), lambda x: jnp.sum(jnp.sin(x) + x**2), _normal),
  "expectation": _expectation,
}


@pytest.mark.parametrize("loop", [_scanned, _fori], ids=["scan", "fori_loop"])
@pytest.mark.parametrize("name", sorted(SMOOTH))
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_hessian_through_a_loop_equals_the_unrolled_one(name, loop, jit):
  params = jnp.array([0.3, -0.5, -0.2, 0.1])
  wrap = jax.jit if jit else (lambda g: g)
  unrolled = wrap(jax.hessian(_unrolled(SMOOTH[name])))(params)
  looped = wrap(jax.hessian(loop(SMOOTH[name])))(params)
  assert np.all(np.isfinite(unrolled))
  np.testing.assert_allclose(looped, unrolled, rtol=1e-5, atol=1e-5)
  # The ∇τ∇τᵀ term is there: the Hessian is not diagonal.
  assert np.max(np.abs(unrolled - np.diag(np.diag(unrolled)))) > 1e-3


def test_magic_box_hessian_through_scan():
  def one(theta, c):
    x = jax.lax.stop_gradient(theta + jax.random.normal(jax.random.fold_in(KEY, c), (64, 2)))
    tau = -0.5 * jnp.sum((x - theta) ** 2, -1)
    return jnp.mean(sg.magic_box(tau) * jnp.sum(x**2, -1))

  theta = jnp.array([0.5, -1.2])
  np.testing.assert_allclose(
    jax.hessian(_scanned(one))(theta), jax.hessian(_unrolled(one))(theta), rtol=1e-5, atol=1e-5
  )


FIRST_ORDER = {
  "disarm": (sg.disarm(num_pairs=4), _bernoulli),
  "arm": (sg.arm(num_samples=4), _bernoulli),
  "measure_valued": (sg.measure_valued(num_samples=4), _normal),
}


@pytest.mark.parametrize("loop", [_scanned, _fori], ids=["scan", "fori_loop"])
@pytest.mark.parametrize("name", sorted(FIRST_ORDER))
def test_first_order_only_stays_refused_through_a_loop(name, loop):
  estimator, dist_fn = FIRST_ORDER[name]
  params = jnp.array([0.2, -0.4, 0.1, 0.3])
  one = _value(estimator, lambda x: jnp.sum((x - 0.3) ** 2), dist_fn)
  # First order through the loop is the estimator's own gradient.
  np.testing.assert_allclose(
    jax.grad(loop(one))(params), jax.grad(_unrolled(one))(params), rtol=1e-5, atol=1e-6
  )
  for second in (jax.hessian, jax.jacrev, lambda g: jax.jit(jax.hessian(g))):
    with pytest.raises(NotImplementedError, match="first derivatives only"):
      target = jax.grad(loop(one)) if second is jax.jacrev else loop(one)
      second(target)(params)
