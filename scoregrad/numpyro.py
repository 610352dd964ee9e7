"""NumPyro integration: an ELBO loss for ``numpyro.infer.SVI`` built on :func:`scoregrad.surrogate`.

NumPyro is optional: importing this module (and ``import scoregrad``) does
not import it; :class:`ELBO` imports it when a loss is evaluated, with a
clear error if it is missing.

Example:
  >>> import scoregrad as sg
  >>> loss = sg.numpyro.ELBO(num_particles=8, baseline=sg.baselines.leave_one_out())
"""

from scoregrad._src.numpyro_elbo import ELBO

__all__ = ("ELBO",)
