"""Variance-reduced noise for pathwise estimation of Gaussians (antithetic, randomised QMC).

Used through ``scoregrad.pathwise(sampling="antithetic" | "qmc")``; the point
sets are public for inspection and reuse.
"""

from scoregrad._src.sampling import (
  SAMPLING_METHODS,
  antithetic_normal,
  halton_points,
  korobov_generator,
  lattice_points,
  randomized_qmc_normal,
)

__all__ = (
  "SAMPLING_METHODS",
  "antithetic_normal",
  "halton_points",
  "korobov_generator",
  "lattice_points",
  "randomized_qmc_normal",
)
