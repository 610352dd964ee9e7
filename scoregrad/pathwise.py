"""The pathwise (reparameterization) estimator."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from scoregrad import control_variates as _cv
from scoregrad import sampling as _sampling
from scoregrad._validation import check_bool, check_positive_int
from scoregrad.base import (EmptyState, Estimate, GradientEstimator, call_dist_fn,
                            check_estimate_inputs, tree_mean0)


def check_reparameterized(dist, name: str = "dist") -> None:
  """Raises unless ``dist`` samples differentiably (a zero gradient otherwise)."""
  if not getattr(dist, "reparameterized", False):
    raise ValueError(
        f"The pathwise estimator needs a reparameterized distribution, but "
        f"`{name}` is {type(getattr(dist, 'dist', dist)).__name__}, whose samples "
        "are not differentiable functions of its parameters: JAX would silently "
        "return a zero gradient through them (e.g. through jax.random.bernoulli). "
        "Use scoregrad.score_function(num_samples=...) instead, which needs only "
        "log_prob; for discrete variables see also the discrete estimators.")


class PathwiseState(NamedTuple):
  """State of :func:`pathwise` with a control variate (without one: ``EmptyState``)."""

  control_variate: Any = ()


def pathwise(
    *,
    num_samples: int,
    per_sample: bool = False,
    control_variate: Optional[_cv.ControlVariate] = None,
    sampling: str = "iid",
) -> GradientEstimator:
  r"""The pathwise (reparameterization) estimator of ∇θ E_{p(x;θ)}[f(x)].

  With x = g(ε; θ), ε ~ q independent of θ,

      ∇θ E_p[f(x)] = E_q[∇x f(g(ε; θ)) ∇θ g(ε; θ)] ≈ (1/n) Σ_i ∇θ f(g(ε_i; θ)).

  Requirements: the distribution must be reparameterized
  (``dist.reparameterized``; Normal, MultivariateNormalTriL and Gamma here)
  and f differentiable in x. Usually far lower variance than the score
  function for smooth f.

  Args:
    num_samples: samples per estimate (a Python int ≥ 1).
    per_sample: also return each sample's gradient via ``vmap(grad)``.
    control_variate: a :mod:`scoregrad.control_variates` control variate h:
      the estimate becomes (1/n) Σ_i ∇θ[f(x_i) − β h(x_i)] + β ∇θ E[h]
      (unbiased; zero variance for quadratic f with ``delta_method()``).
    sampling: ``"iid"`` (default), ``"antithetic"`` (pairs ε, −ε; even
      ``num_samples``) or ``"qmc"`` (a randomly shifted rank-1 lattice through
      Φ⁻¹); the last two for Normal and MultivariateNormalTriL only, see
      :mod:`scoregrad.sampling`. All three are unbiased; with the last two the
      per-sample gradients of one estimate are dependent, so measure variance
      across keys, not from ``per_sample``.

  Returns:
    ``GradientEstimator(init, estimate)``; ``estimate(key, f, dist_fn, params,
    state) -> Estimate``. The state is ``EmptyState()``, or a
    :class:`PathwiseState` with a control variate.

  Raises:
    ValueError: at ``estimate`` if ``dist_fn(params)`` is not reparameterized,
      or not Gaussian with ``sampling="antithetic"``/``"qmc"``.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.pathwise(num_samples=100)
    >>> dist_fn = lambda p: sg.dists.Normal(p[0], p[1])
    >>> params = jnp.array([1.0, 1.0])
    >>> out = est.estimate(jax.random.key(0), jnp.sin, dist_fn, params, est.init(params))

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
    Mohamed et al., "Monte Carlo Gradient Estimation in Machine Learning",
    JMLR 2020, Section 5.
  """
  num_samples = check_positive_int("num_samples", num_samples)
  per_sample = check_bool("per_sample", per_sample)
  sampling = _sampling.check_sampling(sampling, num_samples)
  cv = _cv.resolve(control_variate)
  if cv is not None:
    _cv.check_num_samples(cv, num_samples)

  def init(params):
    del params
    if cv is None:
      return EmptyState()
    return PathwiseState(control_variate=cv.init())

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_estimate_inputs(key, f, dist_fn, params)
    dist = call_dist_fn(dist_fn, params)
    check_reparameterized(dist, "dist_fn(params)")
    if sampling == "iid":
      keys = jax.random.split(key, num_samples)
      draw = lambda p, k: call_dist_fn(dist_fn, p).sample(k)
    else:
      _sampling.check_gaussian(dist, sampling)
      keys = _sampling.standard_normal_noise(
          key, sampling, num_samples, tuple(dist.event_shape), dist.dtype)
      draw = lambda p, eps: _sampling.gaussian_from_noise(call_dist_fn(dist_fn, p), eps)

    def one_cost(p, k):
      c = f(draw(p, k))
      if jnp.shape(c) != ():
        raise ValueError(
            "The cost `f(x)` must return a scalar for one sample x; it returned "
            f"shape {jnp.shape(c)}. Reduce it, e.g. `lambda x: jnp.sum(cost(x))`.")
      return c

    if cv is not None:
      return _estimate_with_control_variate(
          cv, per_sample, f, dist_fn, params, state, keys, draw, one_cost)

    if per_sample:
      costs, per = jax.vmap(jax.value_and_grad(one_cost), in_axes=(None, 0))(params, keys)
      return Estimate(jnp.mean(costs), tree_mean0(per), state, per)

    def mean_cost(p):
      return jnp.mean(jax.vmap(one_cost, in_axes=(None, 0))(p, keys))

    value, grad = jax.value_and_grad(mean_cost)(params)
    return Estimate(value, grad, state, None)

  return GradientEstimator(init=init, estimate=estimate)


def _estimate_with_control_variate(cv, per_sample, f, dist_fn, params, state, keys, draw,
                                   one_cost) -> Estimate:
  """The pathwise estimator with a control variate (see ``pathwise``)."""
  dist = call_dist_fn(dist_fn, params)
  _cv.check_family(cv, dist)
  cv_state = state.control_variate
  dist_sg = jax.lax.stop_gradient(dist)
  samples = jax.lax.stop_gradient(jax.vmap(draw, in_axes=(None, 0))(params, keys))
  expected_grad = _cv.expectation_grad(cv, f, dist_fn, params, cv_state)

  def one_h(p, k):
    d = call_dist_fn(dist_fn, p)
    if not cv.value_depends_on_params:
      d = jax.lax.stop_gradient(d)
    return jnp.asarray(cv.value(f, d, draw(p, k), cv_state))

  if not _cv.is_estimated(cv):
    beta = float(cv.coefficient)

    def corrected(p, k):
      c = one_cost(p, k)
      return c - beta * one_h(p, k).astype(jnp.result_type(c)), c

    if per_sample:
      (_, costs), per = jax.vmap(jax.value_and_grad(corrected, has_aux=True),
                                 in_axes=(None, 0))(params, keys)
      per = jax.tree_util.tree_map(lambda g, e: g + beta * e, per, expected_grad)
      grad = tree_mean0(per)
    else:
      def mean_corrected(p):
        r, c = jax.vmap(corrected, in_axes=(None, 0))(p, keys)
        return jnp.mean(r), c
      (_, costs), grad = jax.value_and_grad(mean_corrected, has_aux=True)(params)
      grad = jax.tree_util.tree_map(lambda g, e: g + beta * e, grad, expected_grad)
      per = None
  else:
    costs, per_f = jax.vmap(jax.value_and_grad(one_cost), in_axes=(None, 0))(params, keys)
    per_h = jax.vmap(jax.grad(one_h), in_axes=(None, 0))(params, keys)
    per_h = jax.tree_util.tree_map(lambda g, e: g - e, per_h, expected_grad)
    per = _cv.apply(cv, per_f, per_h, per_f)
    grad = tree_mean0(per)
    if not per_sample:
      per = None
  costs = jax.lax.stop_gradient(costs)
  new_state = PathwiseState(control_variate=cv.update(cv_state, f, dist_sg, samples, costs))
  return Estimate(jnp.mean(costs), grad, new_state, per)
