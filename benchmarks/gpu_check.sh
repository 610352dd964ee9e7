#!/usr/bin/env bash
# The GPU check (issue 22): run from the repo root on a machine with an NVIDIA
# GPU, in under 10 minutes. It
#   1. uses the machine's own JAX if it already sees a GPU, else installs the
#      CUDA jax wheel from PyPI into .venv-gpu (needs network);
#   2. runs the test suite's fast tier on the GPU (the core estimators, the
#      layers, the derivative-order and loop rules);
#   3. runs the throughput benchmark (ratios against hand-written JAX);
#   4. prints the achieved memory bandwidth of the core estimator at
#      n·d ≥ 10^8 against the device's peak (benchmarks/bandwidth.py).
# Results go to ${OUT:-gpu_results}/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_results}"
mkdir -p "$out"
py=python3
if ! $py -c "import jax, sys; sys.exit(0 if jax.devices()[0].platform == 'gpu' else 1)" 2>/dev/null; then
  test -x .venv-gpu/bin/python || python3 -m venv .venv-gpu
  .venv-gpu/bin/python -m pip install --quiet --upgrade "jax[cuda13]" optax numpy pytest hypothesis scipy
  py=.venv-gpu/bin/python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
$py -c "import jax; print('devices:', jax.devices())" | tee "$out/devices.txt"
timeout 300 $py -m pytest -q -x -p no:cacheprovider -o addopts= \
  tests/test_score_function.py tests/test_pathwise.py tests/test_layers.py \
  tests/test_loops.py tests/test_dice.py 2>&1 | tee "$out/tests.txt" || echo "tests: exit $?"
timeout 180 $py -m benchmarks.run throughput --out "$out/throughput" 2>&1 | tee "$out/throughput.txt" || echo "throughput: exit $?"
timeout 120 $py benchmarks/bandwidth.py 2>&1 | tee "$out/bandwidth.txt"
