"""``sharding=``: 8 forced host devices, in a subprocess (tests/sharding_worker.py).

The worker compiles each estimator with and without a sharding of the sample
axis and reports the differences, the compiled HLO's all-gathers, per-device
temporary memory against the number of devices, and the error messages of bad
input; the tests below are the specification of what it must report.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

WORKER = pathlib.Path(__file__).with_name("sharding_worker.py")


@pytest.fixture(scope="module")
def report():
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    PYTHONPATH=os.pathsep.join(
      [str(WORKER.parents[1])] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    ),
  )
  env.pop("XLA_FLAGS", None)
  run = subprocess.run(
    [sys.executable, str(WORKER)], env=env, capture_output=True, text=True, timeout=600, check=False
  )
  assert run.returncode == 0, run.stderr[-4000:]
  return json.loads(run.stdout)


def test_worker_has_eight_partitionable_devices(report):
  assert report["devices"] == 8
  assert report["partitionable"]  # the identity below relies on it


CASES = (
  "score_function",
  "score_function_loo",
  "score_function_optimal",
  "score_function_cv_estimated",
  "pathwise",
  "pathwise_antithetic",
  "measure_valued",
  "arm",
  "disarm",
  "score_function_chunked",
  "expectation_score_function",
  "expectation_pathwise",
)


@pytest.mark.parametrize("name", CASES)
def test_sharded_equals_unsharded(report, name):
  # Same key, same samples (partitionable threefry): only the order of the
  # float32 sums differs, so the error is a few ulps of the largest term.
  r = report["identity"][name]
  tol = 1e-5 * max(1.0, r["scale"])
  assert r["value_diff"] <= tol and r["grad_diff"] <= tol, r
  if "moments_diff" in r:  # streamed second moments: also sums over samples
    assert r["moments_diff"] <= 1e-5 * r["moments_scale"], r


@pytest.mark.parametrize("name", CASES)
def test_no_all_gather_of_samples(report, name):
  r = report["identity"][name]
  assert r["gathered"] == [], r["gathered"]
  assert r["all_reduce"]  # the reductions are collectives


def test_all_gather_detector_sees_a_gather(report):
  # Positive control: a program that replicates the samples is caught.
  assert report["control_gathered"], "the HLO check cannot fail"


def test_per_device_memory_falls_as_one_over_devices(report):
  memory = {int(k): v for k, v in report["memory"].items()}
  for k in (2, 4, 8):
    ratio = memory[k] * k / memory[1]
    assert 0.8 < ratio < 1.25, (k, memory)


def test_sharded_params_explicit_meshes_and_partition_spec(report):
  for mode, rel in report["modes"].items():
    assert rel < 1e-5, (mode, rel)


def test_errors_name_the_argument(report):
  e = report["errors"]
  for case in ("not_dividing", "not_dividing_pathwise", "not_dividing_disarm"):
    assert e[case].startswith("ValueError") and "`sharding`" in e[case], e[case]
    assert "8 shards" in e[case] and "12" in e[case] and "16" in e[case]
  assert "`sharding`" in e["chunk_not_dividing_shards"]
  assert "chunk_size=4" in e["chunk_not_dividing_shards"]
  # A NamedSharding over a missing axis: jax refuses to build it, naming it.
  assert e["named_missing_axis"].startswith("ValueError") and "particles" in e["named_missing_axis"]
  # A bare PartitionSpec is checked against the mesh set with jax.set_mesh.
  assert "`sharding`" in e["spec_missing_axis"] and "'particles'" in e["spec_missing_axis"]
  assert "('samples',)" in e["spec_missing_axis"]
  assert "jax.set_mesh" in e["spec_without_mesh"]
  assert e["string"].startswith("TypeError") and "PartitionSpec('samples')" in e["string"]
