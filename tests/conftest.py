"""Shared test configuration.

Statistical tests use ``scoregrad.testing`` with an explicit false-failure
rate; the seeds only make runs reproducible — tolerances hold for any key.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import pytest

# Tests check mathematics (zero variance of exact control variates, exact
# gradients by enumeration), so float32 matrix products must be full float32:
# on GPUs JAX's default precision uses TF32 (~1e-3 relative error), which
# would show up as spurious variance. No effect on CPU.
jax.config.update("jax_default_matmul_precision", "highest")

if not hasattr(jax, "enable_x64"):
  # jax < 0.4.36 (`make test-min` runs at jax 0.4.30) has the context manager
  # under jax.experimental only; the tests use the current name.
  from jax.experimental import enable_x64 as _enable_x64

  jax.enable_x64 = _enable_x64


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
  """Runs a test in float32 and (with x64 enabled) in float64."""
  if request.param == "float64":
    with jax.enable_x64(True):
      yield jnp.float64
  else:
    yield jnp.float32


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield
