"""The pathwise (reparameterization) estimator."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from scoregrad._validation import check_callable, check_key, check_positive_int
from scoregrad.base import (EmptyState, Estimate, GradientEstimator, call_dist_fn,
                            check_params_floating, tree_mean0)


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


def pathwise(*, num_samples: int, per_sample: bool = False) -> GradientEstimator:
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

  Returns:
    ``GradientEstimator(init, estimate)``; ``estimate(key, f, dist_fn, params,
    state) -> Estimate``.

  Raises:
    ValueError: at ``estimate`` if ``dist_fn(params)`` is not reparameterized.

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
  if not isinstance(per_sample, bool):
    raise TypeError(f"`per_sample` must be a bool; got per_sample={per_sample!r}.")

  def init(params) -> EmptyState:
    del params
    return EmptyState()

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_key(key)
    check_callable("dist_fn", dist_fn, "dist_fn(params) -> distribution")
    check_callable("f", f, "f(x) -> scalar cost of one sample")
    check_params_floating(params)
    check_reparameterized(call_dist_fn(dist_fn, params), "dist_fn(params)")
    keys = jax.random.split(key, num_samples)

    def one_cost(p, k):
      c = f(call_dist_fn(dist_fn, p).sample(k))
      if jnp.shape(c) != ():
        raise ValueError(
            "The cost `f(x)` must return a scalar for one sample x; it returned "
            f"shape {jnp.shape(c)}. Reduce it, e.g. `lambda x: jnp.sum(cost(x))`.")
      return c

    if per_sample:
      costs, per = jax.vmap(jax.value_and_grad(one_cost), in_axes=(None, 0))(params, keys)
      return Estimate(jnp.mean(costs), tree_mean0(per), state, per)

    def mean_cost(p):
      return jnp.mean(jax.vmap(one_cost, in_axes=(None, 0))(p, keys))

    value, grad = jax.value_and_grad(mean_cost)(params)
    return Estimate(value, grad, state, None)

  return GradientEstimator(init=init, estimate=estimate)
