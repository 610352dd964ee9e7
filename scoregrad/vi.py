"""Variational inference: the ELBO, IWAE and Rényi bounds with their gradient estimators.

``elbo(log_joint, dist, key, *, num_samples, gradient=...)`` and
``iwae(log_joint, dist, key, *, num_samples, gradient=...)`` return a scalar
whose value is the Monte Carlo bound and whose ``jax.grad`` is the chosen
estimator: ``"pathwise"``, ``"stl"`` (sticking the landing) or
``"score_function"`` for the ELBO; ``"pathwise"``, ``"dreg"`` (doubly
reparameterized) or ``"vimco"`` for IWAE; ``renyi`` gives the Rényi-α bounds
with ``"pathwise"`` and ``"dreg"``. Which gradient for which guide:

* reparameterized guide (Normal, LogNormal, Gamma, Beta, ...): ``"stl"`` for
  the ELBO, ``"dreg"`` for IWAE/Rényi (lower variance, first derivatives
  only); ``"pathwise"`` when higher derivatives are needed;
* guide that is not reparameterized (Bernoulli, Categorical, Poisson, ...):
  ``"score_function"`` (with ``baselines.leave_one_out()``) for the ELBO,
  ``"vimco"`` for IWAE.

See :mod:`scoregrad._src.vi` for the formulas.
"""

from scoregrad._src.vi import elbo, iwae, renyi

__all__ = ("elbo", "iwae", "renyi")
