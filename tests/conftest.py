"""Shared test configuration.

Statistical tests use ``scoregrad.testing`` with an explicit false-failure
rate; the seeds only make runs reproducible — tolerances hold for any key.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib

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
# subprocesses, every benchmark's tiny run, the property-based conformance
# suite, and the individual tests listed in tests/slow_tier.txt (each took
# 3.6 s or more on 2 cores). `make test` runs the rest (notebooks and
# doctests included), which still covers every public function
# (tests/test_public_api.py::test_every_public_function_has_a_fast_test).
SLOW_FILES = (
  "tests/test_multiprocess.py::",
  "tests/test_sharding.py::",
  "tests/test_conformance.py::",
)
SLOW = SLOW_FILES + (
  "tests/test_benchmarks.py::test_every_benchmark_runs_at_tiny_size",
  "tests/test_discrete_benchmarks.py::test_discrete_benchmarks_small_run",
)
SLOW_TESTS = frozenset(
  line.strip()
  for line in (pathlib.Path(__file__).parent / "slow_tier.txt").read_text().splitlines()
  if line.strip() and not line.startswith("#")
)


def is_slow(nodeid: str) -> bool:
  return nodeid.startswith(SLOW) or nodeid in SLOW_TESTS


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if is_slow(item.nodeid):
      item.add_marker(pytest.mark.slow)
