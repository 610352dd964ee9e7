"""Achieved memory bandwidth of the score-function estimator at n·d ≥ 10^8.

The estimate of a diagonal-Normal score function with n samples of d
dimensions is bandwidth-bound on a GPU: per sample coordinate it must at
least write the sample once and read it back in the backward pass (the
noise is generated in place), so we count 2 · n · d · 4 bytes (float32)
moved per estimate — a lower bound on the traffic, which makes the reported
GB/s a lower bound on what the hardware moved. The hand-written fused
REINFORCE gradient is measured the same way, side by side. The peak is
read from the device name (H100/H200/A100 table below) or given with
--peak-gbs.

    python benchmarks/bandwidth.py [--n 100000] [--d 1000] [--peak-gbs 4800]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

import scoregrad as sg

PEAK_GBS = {"H200": 4800.0, "H100": 3350.0, "A100": 2039.0, "L4": 300.0}


def _cost(x):
  return jnp.sum(x**2) + jnp.sum(jnp.sin(x))


def _time(fn, *args, repeats=20):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  times.sort()
  return times[len(times) // 2]


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--n", type=int, default=100_000)
  parser.add_argument("--d", type=int, default=1000)
  parser.add_argument("--peak-gbs", type=float, default=None)
  args = parser.parse_args()
  n, d = args.n, args.d
  device = jax.devices()[0]
  peak = args.peak_gbs
  if peak is None:
    peak = next((v for k, v in PEAK_GBS.items() if k in device.device_kind), float("nan"))
  params = {"loc": jnp.linspace(-1.0, 1.0, d), "scale": jnp.full((d,), 0.8)}
  dist_fn = lambda p: sg.dists.Normal(p["loc"], p["scale"])
  est = sg.score_function(num_samples=n)

  @jax.jit
  def scoregrad_grad(key, p):
    return est.estimate(key, _cost, dist_fn, p, est.init(p)).grad

  @jax.jit
  def hand_grad(key, p):
    eps = jax.random.normal(key, (n, d))
    x = jax.lax.stop_gradient(p["loc"] + p["scale"] * eps)
    c = jax.vmap(_cost)(x)
    lp = lambda q: jnp.sum(-0.5 * ((x - q["loc"]) / q["scale"]) ** 2 - jnp.log(q["scale"]), -1)
    return jax.grad(lambda q: jnp.mean(c * lp(q)))(p)

  key = jax.random.key(0)
  moved = 2.0 * n * d * 4
  print(f"device: {device.device_kind}; n = {n}, d = {d}, n·d = {n * d:.1e}")
  print(f"bytes counted per estimate: 2·n·d·4 = {moved / 1e9:.2f} GB (a lower bound)")
  for name, fn in (("scoregrad", scoregrad_grad), ("hand-written", hand_grad)):
    t = _time(fn, key, params)
    gbs = moved / t / 1e9
    print(
      f"{name:>12}: {t * 1e3:8.2f} ms  {gbs:8.1f} GB/s  {gbs / peak:6.1%} of {peak:.0f} GB/s peak"
    )


if __name__ == "__main__":
  main()
