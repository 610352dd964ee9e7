"""Compatibility layers for code written against other libraries' APIs.

* :mod:`scoregrad.compat.optax_monte_carlo` — a drop-in replacement for
  ``optax.monte_carlo`` (optax 0.1.8; removed from optax in 0.2.7).
"""

from scoregrad.compat import optax_monte_carlo

__all__ = ("optax_monte_carlo",)
