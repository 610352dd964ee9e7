"""Checks of ``sharding=`` on 8 forced host devices; run by tests/test_sharding.py.

Run as a script in a fresh process (XLA_FLAGS must be set before jax starts):
it prints one JSON object of measurements, which the tests assert on.
"""

import json
import os
import re
import sys

if __name__ == "__main__":  # (pytest --doctest-modules imports this file: no side effects)
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  )
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

import scoregrad as sg

N = 4096  # num_samples: a size no other array dimension has


def auto_mesh(k=8, names=("samples",)):
  shape = (k,) if len(names) == 1 else k
  return jax.make_mesh(
    shape,
    names,
    axis_types=(AxisType.Auto,) * len(names),
    devices=jax.devices()[: int(np.prod(shape))],
  )


MESH = SHARD = None  # set in main(), on the 8 devices

normal_params = {"loc": jnp.array([1.0, -0.5, 0.3]), "log_scale": jnp.array([0.0, 0.2, -0.3])}
normal_fn = lambda p: sg.dists.Normal(p["loc"], jnp.exp(p["log_scale"]))
bern_params = jnp.array([0.3, -0.7, 1.2])
bern_fn = lambda l: sg.dists.Bernoulli(logits=l)
quad = lambda x: jnp.sum((x - 0.2) ** 2)
bern_cost = lambda b: jnp.sum((b - 0.45) ** 2)

# name -> (factory(sharding) -> estimator, cost, dist_fn, params)
CASES = {
  "score_function": (
    lambda s: sg.score_function(num_samples=N, sharding=s),
    quad,
    normal_fn,
    normal_params,
  ),
  "score_function_loo": (
    lambda s: sg.score_function(num_samples=N, baseline=sg.baselines.leave_one_out(), sharding=s),
    quad,
    normal_fn,
    normal_params,
  ),
  "score_function_optimal": (
    lambda s: sg.score_function(num_samples=N, baseline=sg.baselines.optimal(), sharding=s),
    quad,
    normal_fn,
    normal_params,
  ),
  "score_function_cv_estimated": (
    lambda s: sg.score_function(
      num_samples=N,
      control_variate=sg.control_variates.delta_method(coefficient="per_leaf"),
      sharding=s,
    ),
    lambda x: jnp.sum(jnp.cos(x)),
    normal_fn,
    normal_params,
  ),
  "pathwise": (
    lambda s: sg.pathwise(num_samples=N, sharding=s),
    lambda x: jnp.sum(jnp.sin(x)),
    normal_fn,
    normal_params,
  ),
  "pathwise_antithetic": (
    lambda s: sg.pathwise(num_samples=N, sampling="antithetic", sharding=s),
    lambda x: jnp.sum(jnp.sin(x)),
    normal_fn,
    normal_params,
  ),
  "measure_valued": (
    lambda s: sg.measure_valued(num_samples=N, sharding=s),
    quad,
    normal_fn,
    normal_params,
  ),
  "arm": (lambda s: sg.arm(num_samples=N, sharding=s), bern_cost, bern_fn, bern_params),
  "disarm": (lambda s: sg.disarm(num_pairs=N, sharding=s), bern_cost, bern_fn, bern_params),
  "score_function_chunked": (
    lambda s: sg.score_function(
      num_samples=N,
      chunk_size=N // 4,
      baseline=sg.baselines.leave_one_out(),
      moments=True,
      sharding=s,
    ),
    quad,
    normal_fn,
    normal_params,
  ),
}


def run(est, f, dist_fn):
  return jax.jit(lambda k, p: est.estimate(k, f, dist_fn, p, est.init(p)))


def max_diff(a, b):
  return max(
    float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def scale_of(a):
  return max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree_util.tree_leaves(a))


def gathered_sample_arrays(hlo: str, sizes):
  """The all-gather ops of ``hlo`` whose result has a dimension in ``sizes``."""
  bad = []
  for line in hlo.splitlines():
    m = re.search(r"=\s*(\S+)\s+all-gather(?:-start)?\(", line)
    if m:
      dims = [int(d) for d in re.findall(r"\d+", m.group(1).split("{")[0].split("]")[0])]
      if any(d in sizes for d in dims):
        bad.append(line.strip()[:160])
  return bad


def identity_and_hlo(out):
  key = jax.random.key(3)
  for name, (make, f, dist_fn, params) in CASES.items():
    plain = run(make(None), f, dist_fn)(key, params)
    sharded_fn = run(make(SHARD), f, dist_fn)
    sharded = sharded_fn(key, params)
    compiled = sharded_fn.lower(key, params).compile().as_text()
    entry = {
      "value_diff": max_diff(plain.value, sharded.value),
      "grad_diff": max_diff(plain.grad, sharded.grad),
      "scale": max(scale_of(plain.grad), scale_of(plain.value)),
      "gathered": gathered_sample_arrays(compiled, {N, N // 4, 2 * N}),
      "all_reduce": "all-reduce" in compiled,
    }
    if plain.moments is not None:
      entry["moments_diff"] = max_diff(plain.moments.m2, sharded.moments.m2)
      entry["moments_scale"] = scale_of(plain.moments.m2)
    out["identity"][name] = entry


def positive_control(out):
  """The all-gather detector on a program that does gather the samples (so it can fail)."""

  def gathers(key):
    x = jax.lax.with_sharding_constraint(jax.random.normal(key, (N, 3)), SHARD)
    x = jax.lax.with_sharding_constraint(x, NamedSharding(MESH, P()))
    return jnp.cumsum(x, axis=0)[-1]

  hlo = jax.jit(gathers).lower(jax.random.key(0)).compile().as_text()
  out["control_gathered"] = gathered_sample_arrays(hlo, {N})


def expectation_identity(out):
  key = jax.random.key(5)
  loc = jnp.array([0.4, -0.2])
  for estimator, baseline in (("score_function", sg.baselines.leave_one_out()), ("pathwise", None)):

    def loss(m, sharding, estimator=estimator, baseline=baseline):
      return sg.expectation(
        lambda x: jnp.sum(jnp.sin(x)),
        sg.dists.Normal(m, 1.0),
        key,
        num_samples=N,
        estimator=estimator,
        baseline=baseline,
        sharding=sharding,
      )

    plain = jax.jit(jax.value_and_grad(lambda m: loss(m, None)))(loc)
    fn = jax.jit(jax.value_and_grad(lambda m: loss(m, SHARD)))
    sharded = fn(loc)
    out["identity"]["expectation_" + estimator] = {
      "value_diff": max_diff(plain[0], sharded[0]),
      "grad_diff": max_diff(plain[1], sharded[1]),
      "scale": scale_of(plain),
      "all_reduce": True,
      "gathered": gathered_sample_arrays(fn.lower(loc).compile().as_text(), {N}),
    }


def memory(out):
  """Per-device temporary memory of one compiled score-function estimate vs devices."""
  n = 1 << 18
  key = jax.random.key(0)
  params = jnp.zeros(4)
  dist_fn = lambda l: sg.dists.Normal(l, 1.0)
  for k in (1, 2, 4, 8):
    sharding = None if k == 1 else NamedSharding(auto_mesh(k), P("samples"))
    est = sg.score_function(num_samples=n, sharding=sharding)
    compiled = run(est, lambda x: jnp.sum(x**2), dist_fn).lower(key, params).compile()
    out["memory"][str(k)] = int(compiled.memory_analysis().temp_size_in_bytes)


def params_sharded_and_modes(out):
  """Sharded params on a 2-D mesh; explicit-axis meshes; a bare PartitionSpec."""
  key = jax.random.key(7)
  d = 4
  params = {"loc": jnp.linspace(-1.0, 1.0, d), "log_scale": jnp.zeros(d)}
  f = lambda x: jnp.sum(jnp.cos(x))
  plain = run(
    sg.score_function(num_samples=N, baseline=sg.baselines.leave_one_out()), f, normal_fn
  )(key, params)
  mesh2 = jax.make_mesh((4, 2), ("samples", "model"), axis_types=(AxisType.Auto,) * 2)
  est = sg.score_function(
    num_samples=N,
    baseline=sg.baselines.leave_one_out(),
    sharding=NamedSharding(mesh2, P("samples")),
  )
  placed = jax.device_put(params, NamedSharding(mesh2, P("model")))
  sharded = run(est, f, normal_fn)(key, placed)
  out["modes"]["params_sharded"] = max_diff(plain.grad, sharded.grad) / scale_of(plain.grad)

  explicit = jax.make_mesh((8,), ("samples",))  # Explicit axes (jax's default)
  est = sg.score_function(
    num_samples=N,
    baseline=sg.baselines.leave_one_out(),
    sharding=NamedSharding(explicit, P("samples")),
  )
  outside = run(est, f, normal_fn)(key, params)
  out["modes"]["explicit_outside_set_mesh"] = max_diff(plain.grad, outside.grad) / scale_of(
    plain.grad
  )
  with jax.set_mesh(explicit):
    inside = run(est, f, normal_fn)(key, params)
    out["modes"]["explicit_inside_set_mesh"] = max_diff(plain.grad, inside.grad) / scale_of(
      plain.grad
    )
    spec = sg.score_function(
      num_samples=N, baseline=sg.baselines.leave_one_out(), sharding=P("samples")
    )
    bare = run(spec, f, normal_fn)(key, params)
    out["modes"]["partition_spec"] = max_diff(plain.grad, bare.grad) / scale_of(plain.grad)


def errors(out):
  def message(thunk):
    try:
      thunk()
    except Exception as e:  # recorded for the test to inspect
      return f"{type(e).__name__}: {e}"
    return None

  key, params = jax.random.key(0), normal_params
  out["errors"] = {
    "not_dividing": message(lambda: sg.score_function(num_samples=12, sharding=SHARD)),
    "not_dividing_pathwise": message(lambda: sg.pathwise(num_samples=12, sharding=SHARD)),
    "not_dividing_disarm": message(lambda: sg.disarm(num_pairs=12, sharding=SHARD)),
    "chunk_not_dividing_shards": message(
      lambda: sg.score_function(num_samples=64, chunk_size=4, sharding=SHARD)
    ),
    "named_missing_axis": message(lambda: NamedSharding(MESH, P("particles"))),
    "spec_missing_axis": message(
      lambda: _in_mesh(
        lambda: run(sg.score_function(num_samples=N, sharding=P("particles")), quad, normal_fn)(
          key, params
        )
      )
    ),
    "spec_without_mesh": message(
      lambda: run(sg.score_function(num_samples=N, sharding=P("samples")), quad, normal_fn)(
        key, params
      )
    ),
    "string": message(lambda: sg.score_function(num_samples=N, sharding="samples")),
  }


def _in_mesh(thunk):
  with jax.set_mesh(MESH):
    return thunk()


def main():
  global MESH, SHARD
  MESH = auto_mesh()
  SHARD = NamedSharding(MESH, P("samples"))
  out = {
    "identity": {},
    "memory": {},
    "modes": {},
    "devices": jax.device_count(),
    "partitionable": bool(jax.config.jax_threefry_partitionable),
  }
  identity_and_hlo(out)
  expectation_identity(out)
  positive_control(out)
  memory(out)
  params_sharded_and_modes(out)
  errors(out)
  json.dump(out, sys.stdout)


if __name__ == "__main__":
  main()
