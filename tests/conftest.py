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


# The slow tier (`make test-slow`, part of `make test-all` and of .ci/run):
# what is slow but needed — the multi-process and 8-device sharding
# subprocesses and every benchmark's tiny run. `make test` runs the rest
# (notebooks included), which still covers every public function.
SLOW = (
  "tests/test_multiprocess.py::",
  "tests/test_sharding.py::",
  "tests/test_benchmarks.py::test_every_benchmark_runs_at_tiny_size",
  "tests/test_discrete_benchmarks.py::test_discrete_benchmarks_small_run",
)


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if item.nodeid.startswith(SLOW):
      item.add_marker(pytest.mark.slow)
