"""The same sharded estimate across 2 processes × 4 CPU devices (jax.distributed, gloo).

Starts tests/multiprocess_worker.py twice on 127.0.0.1; each process computes
the estimate sharded over all 8 devices of both processes and, on one local
device, the single-process answer. About 20 s on 2 cores.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

WORKER = pathlib.Path(__file__).with_name("multiprocess_worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_give_the_single_process_answer():
  port = _free_port()
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    PYTHONPATH=os.pathsep.join(
      [str(WORKER.parents[1])] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    ),
  )
  env.pop("XLA_FLAGS", None)
  procs = [
    subprocess.Popen(
      [sys.executable, str(WORKER), str(i), "2", str(port)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  results = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=300)
      assert p.returncode == 0, err[-4000:]
      line = [l for l in out.splitlines() if l.startswith("RESULT ")][-1]
      results.append(json.loads(line[len("RESULT ") :]))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert sorted(r["process"] for r in results) == [0, 1]
  for r in results:
    assert r["devices"] == 8 and r["local_devices"] == 4
    for name, sharded in r["sharded"].items():
      single = r["single"][name]
      np.testing.assert_allclose(sharded["value"], single["value"], rtol=1e-5, atol=1e-6)
      for k in single["grad"]:
        np.testing.assert_allclose(sharded["grad"][k], single["grad"][k], rtol=1e-5, atol=1e-6)
  # Both processes hold the same (replicated) result.
  assert results[0]["sharded"] == results[1]["sharded"]
