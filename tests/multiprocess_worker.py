"""One of 2 processes × 4 CPU devices running a sharded estimate; see tests/test_multiprocess.py.

Usage: ``python multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT``. Each
process joins ``jax.distributed`` on 127.0.0.1 (CPU collectives: gloo),
computes the estimate sharded over the global mesh of all processes'
devices, and the same estimate unsharded on its own first device (the
single-process answer), and prints both as JSON.
"""

import json
import os
import sys


def main(process_id: int, num_processes: int, port: int) -> None:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax

  jax.config.update("jax_num_cpu_devices", 4)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}",
    num_processes=num_processes,
    process_id=process_id,
    initialization_timeout=60,
  )
  import jax.numpy as jnp
  from jax.sharding import AxisType, NamedSharding
  from jax.sharding import PartitionSpec as P
  import numpy as np

  import scoregrad as sg

  n = 4096
  mesh = jax.make_mesh((jax.device_count(),), ("samples",), axis_types=(AxisType.Auto,))
  sharding = NamedSharding(mesh, P("samples"))
  params = {"loc": np.array([1.0, -0.5], np.float32), "log_scale": np.array([0.0, 0.3], np.float32)}
  dist_fn = lambda p: sg.dists.Normal(p["loc"], jnp.exp(p["log_scale"]))
  f = lambda x: jnp.sum(jnp.cos(x))

  def estimates(s):
    out = {}
    for name, est in (
      (
        "score_function_loo",
        sg.score_function(num_samples=n, baseline=sg.baselines.leave_one_out(), sharding=s),
      ),
      ("pathwise", sg.pathwise(num_samples=n, sharding=s)),
      ("measure_valued", sg.measure_valued(num_samples=n, sharding=s)),
    ):
      fn = jax.jit(lambda p, est=est: est.estimate(jax.random.key(11), f, dist_fn, p, est.init(p)))
      o = fn(params)
      # The result is replicated on every device; read this process's copy.
      local = lambda x: np.asarray(x.addressable_data(0), np.float64).tolist()
      out[name] = {"value": local(o.value), "grad": {k: local(v) for k, v in o.grad.items()}}
    return out

  sharded = estimates(sharding)
  with jax.default_device(jax.local_devices()[0]):
    single = estimates(None)
  print(
    "RESULT "
    + json.dumps(
      {
        "process": process_id,
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "sharded": sharded,
        "single": single,
      }
    ),
    flush=True,
  )
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(*(int(a) for a in sys.argv[1:4]))
