"""Throughput of the sequence surrogate against a hand-written causal REINFORCE surrogate.

``score_function_surrogate(log_probs, costs, mask=, discount=,
baseline=leave_one_out())`` on (n, T) against the surrogate a user would write
by hand for the same first-order gradient:

    D = reverse_cumsum(γ^t m c)                 (γ^t times the cost-to-go)
    A = D − (Σ_j D_j − D) / (n − 1)              (per-step leave-one-out)
    S = Σ_t mean_i m log π · ⊥A  (+ the value Σ_t γ^t mean_i m c)

A third entrant, the same hand-written surrogate with scoregrad's blocked
cumulative sum (``rl.cumulative_sum``, faster than ``lax.cumsum`` on CPU),
compares like with like: its ratio shows what the higher-order form itself
costs. Two settings per size: the surrogate alone (``jax.value_and_grad`` with
respect to the (n, T) log-probabilities) and a small MLP policy
(``value_and_grad`` with respect to its parameters, observations (n, T, 8),
4 actions). scoregrad's surrogate keeps every derivative order (its Hessian
is unbiased, tests/test_sequences.py); the hand-written one is first-order
only. Both are checked to agree (value and gradient) before timing. Timings
are interleaved rounds after compilation; the ratio is scoregrad / hand per
round, reported as min / median / max. Only ratios within one run mean
anything.

Run: ``python -m benchmarks.sequence_throughput [--tiny] [--repeats R]``.
Call :func:`measure` from another benchmark (it returns plain rows).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import scoregrad as sg
from scoregrad._src import rl as _rl

SIZES = ((64, 200), (256, 1000))
TINY_SIZES = ((8, 16),)
TARGET = 1.10
NUM_ACTIONS = 4
OBS_DIM = 8


def _batch(key, n, num_steps):
  k1, k2, k3, k4 = jax.random.split(key, 4)
  costs = jax.random.normal(k1, (n, num_steps))
  lengths = jax.random.randint(k2, (n,), num_steps // 2, num_steps + 1)
  mask = (jnp.arange(num_steps)[None, :] < lengths[:, None]).astype(jnp.float32)
  obs = jax.random.normal(k3, (n, num_steps, OBS_DIM))
  actions = jax.random.randint(k4, (n, num_steps), 0, NUM_ACTIONS)
  log_probs = jax.nn.log_softmax(jax.random.normal(k3, (n, num_steps, NUM_ACTIONS)))
  log_probs = jnp.take_along_axis(log_probs, actions[..., None], -1)[..., 0]
  return log_probs, costs, mask, obs, actions


def _mlp_params(key):
  k1, k2 = jax.random.split(key)
  return {
    "w1": jax.random.normal(k1, (OBS_DIM, 32)) / np.sqrt(OBS_DIM),
    "b1": jnp.zeros(32),
    "w2": jax.random.normal(k2, (32, NUM_ACTIONS)) / np.sqrt(32),
    "b2": jnp.zeros(NUM_ACTIONS),
  }


def _policy_log_probs(params, obs, actions):
  h = jnp.tanh(obs @ params["w1"] + params["b1"])
  logits = jax.nn.log_softmax(h @ params["w2"] + params["b2"])
  return jnp.take_along_axis(logits, actions[..., None], -1)[..., 0]


def hand_surrogate(log_probs, costs, mask, discount, cumsum=None):
  """Hand-written causal REINFORCE surrogate with the per-step leave-one-out baseline.

  ``cumsum(x)`` is the reverse cumulative sum along axis 1 (default
  ``lax.cumsum``); ``hand_blocked`` passes scoregrad's blocked one, to compare
  like with like.
  """
  n, num_steps = costs.shape
  live = mask > 0
  c = jnp.where(live, costs, 0.0)
  weights = discount ** jnp.arange(num_steps, dtype=costs.dtype)
  discounted = jax.lax.stop_gradient(c) * weights
  if cumsum is None:
    to_go = jax.lax.cumsum(discounted, axis=1, reverse=True)  # γ^t G_t
  else:
    to_go = cumsum(discounted)
  adv = to_go - (jnp.sum(to_go, axis=0) - to_go) / (n - 1)
  adv = jax.lax.stop_gradient(jnp.where(live, adv, 0.0))
  lp = jnp.where(live, log_probs, 0.0)
  value = jnp.sum(jnp.mean(c * weights, axis=0))
  score = jnp.sum(jnp.mean(lp * adv, axis=0))
  return value + score - jax.lax.stop_gradient(score)


def hand_blocked(log_probs, costs, mask, discount):
  return hand_surrogate(
    log_probs,
    costs,
    mask,
    discount,
    cumsum=lambda x: _rl.cumulative_sum(x, reverse=True),
  )


def scoregrad_surrogate(log_probs, costs, mask, discount):
  return sg.score_function_surrogate(
    log_probs, costs, mask=mask, discount=discount, baseline=sg.baselines.leave_one_out()
  )


def _max_rel(a, b):
  return max(
    float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-30))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def _block(tree):
  return jax.tree_util.tree_map(lambda x: x.block_until_ready(), tree)


def _interleaved_ratio(fns, repeats):
  for f in fns.values():
    _block(f())
    _block(f())
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, f in fns.items():
      t0 = time.perf_counter()
      _block(f())
      times[k].append(time.perf_counter() - t0)
  t = {k: np.asarray(v) for k, v in times.items()}
  ratios = t["scoregrad"] / t["hand_written"]
  blocked = t["scoregrad"] / t["hand_blocked"]
  return {
    "hand_blocked_median_s": float(np.median(t["hand_blocked"])),
    "ratio_to_hand_blocked_median": float(np.median(blocked)),
    "scoregrad_median_s": float(np.median(t["scoregrad"])),
    "hand_written_median_s": float(np.median(t["hand_written"])),
    "ratio_min": float(np.min(ratios)),
    "ratio_median": float(np.median(ratios)),
    "ratio_max": float(np.max(ratios)),
    "ratio_of_medians": float(np.median(t["scoregrad"]) / np.median(t["hand_written"])),
    "repeats": repeats,
  }


ENTRANTS = (
  ("scoregrad", scoregrad_surrogate),
  ("hand_written", hand_surrogate),
  ("hand_blocked", hand_blocked),
)


def measure(*, sizes=SIZES, repeats: int = 30, seed: int = 0, discount: float = 0.99) -> list:
  """Rows {setting, n, T, ratio_min/median/max, ...}: scoregrad / hand-written per round."""
  key = jax.random.key(seed)
  rows = []
  for n, num_steps in sizes:
    log_probs, costs, mask, obs, actions = _batch(key, n, num_steps)
    params = _mlp_params(key)
    # The batch is passed in (traced), as it is in a training step.
    alone = {
      name: jax.jit(jax.value_and_grad(lambda lp, c, m, f=f: f(lp, c, m, discount)))
      for name, f in ENTRANTS
    }
    policy = {
      name: jax.jit(
        jax.value_and_grad(
          lambda p, c, m, f=f: f(_policy_log_probs(p, obs, actions), c, m, discount)
        ),
      )
      for name, f in ENTRANTS
    }
    for setting, fns, arg in (
      ("surrogate alone", alone, log_probs),
      ("MLP policy", policy, params),
    ):
      agree = _max_rel(fns["scoregrad"](arg, costs, mask), fns["hand_written"](arg, costs, mask))
      timing = _interleaved_ratio(
        {k: (lambda f=f: f(arg, costs, mask)) for k, f in fns.items()}, repeats
      )
      rows.append(
        {
          "setting": setting,
          "n": n,
          "T": num_steps,
          "max_relative_difference": agree,
          "flagged": timing["ratio_median"] > TARGET,
          **timing,
        }
      )
  return rows


def report(rows) -> str:
  lines = [
    "| setting | n | T | ratio min / median / max | vs hand, blocked cumsum (median) "
    "| scoregrad ms | hand ms | max rel. diff |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    flag = " **> target**" if r["flagged"] else ""
    lines.append(
      f"| {r['setting']} | {r['n']} | {r['T']} | {r['ratio_min']:.2f} / "
      f"{r['ratio_median']:.2f} / {r['ratio_max']:.2f}{flag} | "
      f"{r['ratio_to_hand_blocked_median']:.2f} | "
      f"{1e3 * r['scoregrad_median_s']:.3f} | {1e3 * r['hand_written_median_s']:.3f} | "
      f"{r['max_relative_difference']:.1e} |"
    )
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true")
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--discount", type=float, default=0.99)
  args = parser.parse_args(argv)
  rows = measure(
    sizes=TINY_SIZES if args.tiny else SIZES,
    repeats=2 if args.tiny else args.repeats,
    discount=args.discount,
  )
  print(report(rows))


if __name__ == "__main__":
  main()
