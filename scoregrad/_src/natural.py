r"""Natural gradients: an estimate preconditioned by the exact Fisher information.

For a search distribution p(x; η(θ)) whose Fisher information in its own
coordinates η is known in closed form (a diagonal Normal: 1/σ² for each loc,
2/σ² for each scale), the Fisher information in the coordinates θ of
``params`` is the pull-back

    F(θ) = Jᵀ F_η J,   J = ∂η/∂θ,

and the natural gradient of E[f] is F(θ)⁻¹ ∇θ E[f]. It is invariant to the
parametrisation: the same search step in any coordinates θ. With θ = (loc,
log scale) of a diagonal Normal, F = diag(1/σ², 2) and

    F⁻¹ ∇θ = (σ² ∇_loc, ½ ∇_{log σ}),

which with rank-weight fitness shaping is the update of separable NES
(SNES): its mean step σ Σ_i u_i z_i and log-scale step ½ Σ_i u_i (z_i² − 1)
are n times (σ² ĝ_loc, ½ ĝ_{log σ}) for ĝ = (1/n) Σ_i u_i ∇θ log p(x_i).

F is exact (no Monte Carlo), so the preconditioned estimate F⁻¹ ĝ is
unbiased for the natural gradient whenever ĝ is for the gradient.

References:
  Amari, "Natural gradient works efficiently in learning", Neural
  Computation 1998.
  Wierstra, Schaul, Glasmachers, Sun, Peters & Schmidhuber, "Natural
  Evolution Strategies", JMLR 2014 (Sections 2.3 and 5.2, SNES).
  Schaul, Glasmachers & Schmidhuber, "High dimensions and heavy tails for
  natural evolution strategies", GECCO 2011 (SNES).
"""

from __future__ import annotations

from typing import Any

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp

from scoregrad._src.base import (
  Estimate,
  GradientEstimator,
  call_dist_fn,
  describe,
  first_order_only,
  traits_of,
)
from scoregrad._src.validation import NotApplicableError, check_estimator
from scoregrad.dists._base import families_with

PyTree = Any


STRUCTURES = ("dense", "diagonal")


def natural_gradient(
  estimator: GradientEstimator, *, damping: float = 0.0, structure: str = "dense"
) -> GradientEstimator:
  r"""``estimator`` whose gradient is preconditioned by the exact Fisher information.

  ``Estimate.grad`` becomes (F(θ) + λI)⁻¹ ĝ with F(θ) = Jᵀ F_η J the exact
  Fisher information of ``dist_fn(params)`` in the coordinates of
  ``params`` (J = ∂η/∂θ by forward-mode autodiff, F_η from the family's
  ``fisher_information``), so ``.grad`` is an unbiased estimate of the
  natural gradient F⁻¹ ∇θ E[f] when the wrapped estimator's is of ∇θ E[f]
  (λ = 0). Per-sample rows are preconditioned the same way (the map is
  linear), so ``with_moments(natural_gradient(e))`` streams their moments.
  ``.value`` is the wrapped estimator's (its derivative is the ordinary
  gradient); derivatives of ``.grad`` raise.

  With params {"loc", "log_scale"} and
  ``dist_fn = lambda p: Normal(p["loc"], exp(p["log_scale"]))``, F is
  diag(1/σ², 2) and the step is SNES's (see :mod:`scoregrad._src.natural`).

  Requirements: ``dist_fn(params)`` of a family with ``fisher_information``
  (scoregrad.dists.Normal); F(θ) invertible (θ has no redundant
  coordinates), or ``damping`` > 0. With ``structure="dense"`` F is formed,
  P × P for P parameter coordinates, and solved by Cholesky: meant for
  search distributions (P up to a few thousand), not network weights.

  Args:
    estimator: any :class:`~scoregrad.GradientEstimator` of ∇θ E[f].
    damping: λ ≥ 0 added to the diagonal of F.
    structure: ``"dense"`` (default, any parametrisation) or ``"diagonal"``:
      F's diagonal Σ_k w_k J_kj² only, O(P) instead of O(P³) — exact when
      each distribution coordinate η_k depends on at most one coordinate of
      θ (e.g. {"loc", "log_scale"} as above, SNES's separable form), which
      is checked on J at every call: otherwise the gradient is NaN (F is not
      diagonal there, and its diagonal would be a silent approximation).

  Returns:
    A ``GradientEstimator`` with the same ``init`` and state.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.natural_gradient(sg.score_function(
    ...     num_samples=64, fitness_shaping=sg.shaping.rank_weights()))
    >>> params = {"loc": jnp.ones(3), "log_scale": jnp.zeros(3)}
    >>> dist_fn = lambda p: sg.dists.Normal(p["loc"], jnp.exp(p["log_scale"]))
    >>> out = est.estimate(jax.random.key(0), lambda x: jnp.sum(x**2), dist_fn,
    ...                    params, est.init(params))

  References:
    Amari, "Natural gradient works efficiently in learning", Neural
    Computation 1998.
    Wierstra et al., "Natural Evolution Strategies", JMLR 2014.
  """
  estimator = check_estimator(estimator, "estimator")
  if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not damping >= 0:
    raise ValueError(
      f"`damping` must be a float >= 0 (added to the Fisher information's "
      f"diagonal); got damping={damping!r}."
    )
  damping = float(damping)
  if structure not in STRUCTURES:
    raise ValueError(
      f"`structure` must be one of {STRUCTURES}; got structure={structure!r}. "
      "'diagonal' is exact (and O(P)) when each distribution parameter depends on one "
      "params coordinate; 'dense' works for any parametrisation."
    )
  traits = traits_of(estimator)
  if traits is not None and traits.moments:
    raise ValueError(
      f"`estimator` already streams the moments of its per-sample gradients "
      f"({traits.name}); those would not be of the preconditioned rows. Apply "
      "with_moments outside: scoregrad.with_moments(scoregrad.natural_gradient(e))."
    )
  name = f"natural_gradient({traits.name if traits else 'estimator'})"

  def estimate(key, f, dist_fn, params, state) -> Estimate:
    out = estimator.estimate(key, f, dist_fn, params, state)
    if out.moments is not None:
      raise ValueError(
        "natural_gradient's estimator returned Estimate.moments, which would not be "
        "of the preconditioned rows. Apply with_moments outside natural_gradient."
      )
    precondition = fisher_solver(dist_fn, params, damping, structure)
    grad = first_order_only(precondition(out.grad), (params,), name)
    per = out.per_sample
    if per is not None:
      per = first_order_only(jax.vmap(precondition)(per), (params,), name)
    return out._replace(grad=grad, per_sample=per)

  result = GradientEstimator(init=estimator.init, estimate=estimate)
  if traits is None or traits.rebuild is None:
    return result
  inner_rebuild = traits.rebuild
  return describe(
    result,
    traits._replace(
      name=name,
      rebuild=lambda **settings: natural_gradient(
        inner_rebuild(**settings), damping=damping, structure=structure
      ),
      chunk_plan=None,
      fit_rows=None,
      shapes_costs=False,
    ),
  )


def _jacobian_and_weights(dist_fn, params: PyTree):
  """J = ∂η/∂θ (K, P) by forward mode, and the family's Fisher weights w (K,) in η."""
  dist = call_dist_fn(dist_fn, params)
  if not callable(getattr(dist, "fisher_information", None)):
    inner = getattr(dist, "dist", dist)
    raise NotApplicableError(
      "natural_gradient needs the exact Fisher information of the search "
      f"distribution, which scoregrad.dists.{' and '.join(families_with('fisher_information'))} "
      f"provide; `dist_fn(params)` is {type(inner).__name__}. Use one of those "
      "families, or precondition the gradient yourself."
    )
  flat, unravel = ravel_pytree(params)
  coordinates = lambda v: ravel_pytree(call_dist_fn(dist_fn, unravel(v)).fisher_coordinates())[0]
  jac = jax.lax.stop_gradient(jax.jacfwd(coordinates)(flat))
  weights = jax.lax.stop_gradient(ravel_pytree(dist.fisher_information())[0].astype(jac.dtype))
  return jac, weights


def fisher_information(dist_fn, params: PyTree) -> jax.Array:
  """The exact Fisher information F(θ) = Jᵀ F_η J of ``dist_fn(params)``, (P, P).

  P is the number of scalar coordinates of ``params`` (in
  ``jax.flatten_util.ravel_pytree`` order).

  Example:
    >>> import jax.numpy as jnp, scoregrad as sg
    >>> from scoregrad._src.natural import fisher_information
    >>> F = fisher_information(
    ...     lambda p: sg.dists.Normal(p[0], jnp.exp(p[1])), jnp.array([0.0, jnp.log(2.0)]))
    >>> F.round(4).tolist()   # diag(1/σ², 2) with σ = 2
    [[0.25, 0.0], [0.0, 2.0]]
  """
  jac, weights = _jacobian_and_weights(dist_fn, params)
  return jac.T @ (weights[:, None] * jac)


def fisher_solver(dist_fn, params: PyTree, damping: float = 0.0, structure: str = "dense"):
  """``precondition(g) = (F(θ) + λI)⁻¹ g`` for pytrees ``g`` like ``params``."""
  jac, weights = _jacobian_and_weights(dist_fn, params)
  if structure == "diagonal":
    # Exact iff no η_k depends on two θ coordinates: then F = diag(Σ_k w_k J_kj²).
    separable = jnp.all(jnp.sum(jac != 0, axis=1) <= 1)
    diagonal = jnp.sum(weights[:, None] * jnp.square(jac), axis=0) + damping
    diagonal = jnp.where(separable, diagonal, jnp.nan)

    def precondition_diagonal(g):
      flat, unravel = ravel_pytree(g)
      return unravel((flat.astype(diagonal.dtype) / diagonal).astype(flat.dtype))

    return precondition_diagonal
  fisher = jac.T @ (weights[:, None] * jac)
  fisher = fisher + damping * jnp.eye(fisher.shape[0], dtype=fisher.dtype)
  factor = jax.scipy.linalg.cho_factor(fisher)

  def precondition(g):
    flat, unravel = ravel_pytree(g)
    return unravel(jax.scipy.linalg.cho_solve(factor, flat.astype(fisher.dtype)).astype(flat.dtype))

  return precondition
