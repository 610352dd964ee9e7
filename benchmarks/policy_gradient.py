"""Policy gradients on gymnax CartPole-v1: per-episode vs causal REINFORCE.

An MLP softmax policy π(a | s; θ) (4 → hidden → hidden → 2, tanh) is trained
with optax Adam; each update collects ``num_episodes`` episodes of at most
``horizon`` steps, forms the surrogate and applies Adam, all in one
``jax.jit`` + ``lax.scan`` (seeds vectorised with ``vmap``). Costs are minus
the rewards (1 per step the pole stays up), undiscounted, and ``mask``
marks the steps after termination (gymnax auto-resets; those steps are
garbage). Three estimators, each through scoregrad's public API only:

* ``per_episode``: ``score_function_surrogate(Σ_t m log π, Σ_t m c)`` — the
  whole return credited to every action (shape (n,));
* ``per_step``: ``score_function_surrogate(log π, c, mask=m)`` on (n, T) —
  each action credited only with the costs that follow it (reward-to-go);
* ``per_step+leave_one_out``: the same with
  ``baseline=sg.baselines.leave_one_out()``, per step on the cost-to-go.

Reported: learning curves (mean episode return per update, ``seeds`` seeds);
the per-sample gradient variance n·Var(ĝ_n) at the initialisation, mean
over the parameters, from ``replicates`` independent batches; the time per
update of ``per_step+leave_one_out`` against a hand-written JAX REINFORCE with
the same maths (reward-to-go, leave-one-out per step) in interleaved rounds
of the same run, and the maximum difference of their gradients; environment
steps per second of the whole jitted training loop (every stepped
environment transition counts, including those after termination).

References:
  Williams, "Simple Statistical Gradient-Following Algorithms for
  Connectionist Reinforcement Learning", Machine Learning 1992.
  Kool, van Hoof & Welling, "Buy 4 REINFORCE Samples, Get a Baseline for
  Free!", ICLR 2019 workshop.
  Lange, "gymnax: A JAX-based Reinforcement Learning Environment Library", 2022.
"""

from __future__ import annotations

import itertools
from pathlib import Path
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import scoregrad as sg

from benchmarks import common, style

DESCRIPTION = (
  "CartPole-v1 (gymnax), MLP softmax policy + Adam: per-episode vs per-step "
  "(causal) REINFORCE vs per-step + leave-one-out; variance at init, time vs "
  "hand-written JAX."
)

SIZES = {
  "tiny": {
    "num_episodes": 4,
    "horizon": 16,
    "updates": 3,
    "seeds": 1,
    "hidden": 8,
    "learning_rate": 0.01,
    "replicates": 8,
    "timing_repeats": 3,
  },
  "default": {
    "num_episodes": 16,
    "horizon": 500,
    "updates": 150,
    "seeds": 3,
    "hidden": 32,
    "learning_rate": 0.01,
    "replicates": 200,
    "timing_repeats": 60,
  },
  "full": {
    "num_episodes": 32,
    "horizon": 500,
    "updates": 500,
    "seeds": 5,
    "hidden": 64,
    "learning_rate": 0.01,
    "replicates": 1000,
    "timing_repeats": 100,
  },
}
SIZE_MINIMUM = {
  "num_episodes": 2,
  "horizon": 1,
  "updates": 1,
  "seeds": 1,
  "hidden": 1,
  "learning_rate": 0.0,
  "replicates": 2,
  "timing_repeats": 1,
}

VARIANTS = ("per_episode", "per_step", "per_step+leave_one_out")
REFERENCE = "hand_written"


def make_env():
  import gymnax  # the bench extra; scoregrad itself does not depend on it

  env, env_params = gymnax.make("CartPole-v1")
  return env, env_params


def init_policy(key, hidden: int):
  sizes = (4, hidden, hidden, 2)
  params = []
  for k, (a, b) in zip(jax.random.split(key, len(sizes) - 1), itertools.pairwise(sizes)):
    params.append({"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros((b,))})
  return params


def policy_logits(params, obs):
  h = obs
  for layer in params[:-1]:
    h = jnp.tanh(h @ layer["w"] + layer["b"])
  return h @ params[-1]["w"] + params[-1]["b"]


def rollout(env, env_params, params, key, num_episodes: int, horizon: int):
  """n episodes of up to ``horizon`` steps: obs (n, T, 4), actions, rewards, alive (n, T)."""
  k_reset, k_steps = jax.random.split(key)
  obs, state = jax.vmap(env.reset, in_axes=(0, None))(
    jax.random.split(k_reset, num_episodes), env_params
  )

  def step(carry, key):
    obs, state, alive = carry
    k_act, k_env = jax.random.split(key)
    actions = jax.random.categorical(k_act, policy_logits(params, obs))
    next_obs, state, reward, terminated, truncated, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
      jax.random.split(k_env, num_episodes), state, actions, env_params
    )
    out = (obs, actions, reward, alive)
    return (next_obs, state, alive & ~(terminated | truncated)), out

  carry = (obs, state, jnp.ones((num_episodes,), bool))
  _, (obs, actions, rewards, alive) = jax.lax.scan(step, carry, jax.random.split(k_steps, horizon))
  swap = lambda x: jnp.swapaxes(x, 0, 1)  # time-major scan -> batch-major (n, T)
  return swap(obs), swap(actions), swap(rewards), swap(alive)


def log_probs(params, obs, actions):
  logp = jax.nn.log_softmax(policy_logits(params, obs))
  return jnp.take_along_axis(logp, actions[..., None], axis=-1)[..., 0]


def surrogate(variant: str, params, obs, actions, rewards, alive):
  """The loss whose gradient is the variant's estimator (scoregrad public API)."""
  logp = log_probs(params, obs, actions)
  costs = -rewards
  if variant == "per_episode":
    return sg.score_function_surrogate(
      jnp.sum(jnp.where(alive, logp, 0.0), axis=1), jnp.sum(jnp.where(alive, costs, 0.0), axis=1)
    )
  if variant == "per_step":
    return sg.score_function_surrogate(logp, costs, mask=alive)
  if variant == "per_step+leave_one_out":
    return sg.score_function_surrogate(
      logp, costs, mask=alive, baseline=sg.baselines.leave_one_out()
    )
  if variant == REFERENCE:
    return hand_written_loss(params, obs, actions, rewards, alive)
  raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS + (REFERENCE,)}")


def hand_written_loss(params, obs, actions, rewards, alive):
  """REINFORCE with reward-to-go and a per-step leave-one-out baseline, by hand."""
  logp = jnp.where(alive, log_probs(params, obs, actions), 0.0)
  costs = jnp.where(alive, -rewards, 0.0)
  to_go = jnp.flip(jnp.cumsum(jnp.flip(costs, 1), axis=1), 1)
  n = costs.shape[0]
  baseline = (jnp.sum(to_go, axis=0, keepdims=True) - to_go) / (n - 1)
  advantage = jax.lax.stop_gradient(jnp.where(alive, to_go - baseline, 0.0))
  return jnp.mean(jnp.sum(logp * advantage, axis=1))


def make_update(variant, env, env_params, optimizer, num_episodes, horizon):
  def update(carry, key):
    params, opt_state = carry
    batch = rollout(env, env_params, params, key, num_episodes, horizon)
    grad = jax.grad(lambda p: surrogate(variant, p, *batch))(params)
    updates, opt_state = optimizer.update(grad, opt_state, params)
    params = optax.apply_updates(params, updates)
    episode_return = jnp.mean(jnp.sum(jnp.where(batch[3], batch[2], 0.0), axis=1))
    return (params, opt_state), episode_return

  return update


def train(variant, env, env_params, key, *, sizes):
  """One seed: returns (final params, mean episode return per update)."""
  k_init, k_train = jax.random.split(key)
  params = init_policy(k_init, sizes["hidden"])
  optimizer = optax.adam(sizes["learning_rate"])
  update = make_update(variant, env, env_params, optimizer, sizes["num_episodes"], sizes["horizon"])
  (params, _), curve = jax.lax.scan(
    update, (params, optimizer.init(params)), jax.random.split(k_train, sizes["updates"])
  )
  return params, curve


def _flat(tree):
  return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def run(*, full: bool, seed: int, tiny: bool = False, sizes: dict | None = None) -> dict:
  """Runs the benchmark at the preset sizes (or ``sizes``); see the module docstring."""
  sizes = common.sizes_for(SIZES, full, sizes, tiny)
  env, env_params = make_env()
  n, T = sizes["num_episodes"], sizes["horizon"]
  base = jax.random.key(seed)
  params0 = init_policy(jax.random.fold_in(base, 0), sizes["hidden"])
  num_params = int(_flat(params0).size)
  results = {
    "sizes": sizes,
    "env": "gymnax CartPole-v1",
    "variants": list(VARIANTS),
    "reference": REFERENCE,
    "num_params": num_params,
    "variance_definition": "per-sample variance n·Var(ĝ_n) at init, mean over parameters",
    "rows": {},
  }

  # Gradient variance at the initialisation: `replicates` independent batches.
  var_keys = jax.random.split(jax.random.fold_in(base, 1), sizes["replicates"])
  # --tiny (smoke test) skips the hand-written rows, whose numbers equal
  # per_step+leave_one_out's, to save compilations; it is still timed below.
  studied = VARIANTS if tiny else VARIANTS + (REFERENCE,)
  results["studied"] = list(studied)
  for variant in common.progress(studied, desc="policy_gradient variance"):
    grads = common.jit(
      lambda ks, v=variant: jax.vmap(
        lambda k: _flat(
          jax.grad(lambda p: surrogate(v, p, *rollout(env, env_params, p, k, n, T)))(params0)
        )
      )(ks),
      fast_compile=tiny,
    )(var_keys)
    grads = np.asarray(grads, np.float64)
    ci = common.variance_ci(grads, reduce="mean")
    results["rows"][variant] = {
      "variance_mean": n * ci["variance"],
      "variance_lower": n * ci["lower"],
      "variance_upper": n * ci["upper"],
    }

  # Same batch, same gradient: scoregrad's per-step+leave-one-out vs the hand-written one.
  batch = jax.jit(lambda k: rollout(env, env_params, params0, k, n, T))(jax.random.fold_in(base, 2))
  g_sg = _flat(jax.grad(lambda p: surrogate("per_step+leave_one_out", p, *batch))(params0))
  g_hw = _flat(jax.grad(lambda p: hand_written_loss(p, *batch))(params0))
  results["max_abs_grad_difference"] = float(jnp.max(jnp.abs(g_sg - g_hw)))
  results["max_abs_grad"] = float(jnp.max(jnp.abs(g_hw)))

  # Learning curves, seeds vectorised; timed as one jitted loop per variant.
  seed_keys = jax.random.split(jax.random.fold_in(base, 3), sizes["seeds"])
  for variant in common.progress(studied, desc="policy_gradient training"):
    loop = common.jit(
      lambda ks, v=variant: jax.vmap(lambda k: train(v, env, env_params, k, sizes=sizes)[1])(ks),
      fast_compile=tiny,
    )
    compiled = loop.lower(seed_keys).compile()
    t0 = time.perf_counter()
    curve = np.asarray(common.block(compiled(seed_keys)), np.float64)  # (seeds, updates)
    wall = time.perf_counter() - t0
    steps = sizes["seeds"] * sizes["updates"] * n * T
    results["rows"][variant].update(
      {
        "curve": curve,
        "final_return": curve[:, -1],
        "final_return_last10": curve[:, -10:].mean(axis=1),
        "training_wall_s": wall,
        "env_steps_per_s": steps / wall,
      }
    )

  # Time per update: one jitted update step, interleaved rounds.
  optimizer = optax.adam(sizes["learning_rate"])
  opt_state = optimizer.init(params0)
  key = jax.random.fold_in(base, 4)
  fns = {}
  for variant in ("per_step+leave_one_out", REFERENCE, "per_step", "per_episode"):
    step = jax.jit(make_update(variant, env, env_params, optimizer, n, T))
    fns[variant] = lambda step=step: step((params0, opt_state), key)
  times = common.interleaved_times(fns, repeats=sizes["timing_repeats"])
  for variant, t in times.items():
    results["rows"].setdefault(variant, {})["time_per_update"] = t
  results["time_ratio_to_hand_written"] = (
    times["per_step+leave_one_out"]["median_s"] / times[REFERENCE]["median_s"]
  )
  return results


# -- reporting -------------------------------------------------------------------

_g = common.format_number


def headline(results: dict) -> str:
  s = results["sizes"]
  rows = []
  for name in results["studied"]:
    r = results["rows"][name]
    final = np.asarray(r["final_return_last10"], float)
    rows.append(
      [
        name,
        f"{_g(r['variance_mean'])} [{_g(r['variance_lower'])}, {_g(r['variance_upper'])}]",
        f"{final.mean():.0f} ({', '.join(f'{f:.0f}' for f in final)})",
        f"{1e3 * r['time_per_update']['median_s']:.2f}",
        f"{_g(r['env_steps_per_s'], upper=1e12)}",
      ]
    )
  return "\n".join(
    [
      f"{results['env']}, {results['num_params']}-parameter MLP policy, n = {s['num_episodes']} "
      f"episodes × T = {s['horizon']} steps per update, Adam {s['learning_rate']}, "
      f"{s['updates']} updates, {s['seeds']} seed(s). Time per update of per_step+leave_one_out "
      f"/ hand-written JAX: **{results['time_ratio_to_hand_written']:.3f}×**; gradients differ "
      f"by at most {_g(results['max_abs_grad_difference'])} (max |grad| "
      f"{_g(results['max_abs_grad'])}).",
      "",
      common.markdown_table(
        [
          "estimator",
          "per-sample grad variance at init, mean over params [95% CI]",
          "return, mean of last 10 updates (per seed)",
          "ms / update",
          "env steps/s (training loop)",
        ],
        rows,
      ),
    ]
  )


def report(results: dict) -> str:
  out = [
    headline(results),
    "",
    "Variance: n·Var(ĝ_n) over independent batches at the same initial parameters "
    f"({results['sizes']['replicates']} replicates); the hand-written row computes the "
    "same estimator as per_step+leave_one_out. Time per update: median over interleaved "
    "rounds of one jitted rollout+gradient+Adam step (IQR below). Env steps/s: every "
    "stepped transition of the vmapped-over-seeds jitted training loop (including "
    "post-termination steps, which the mask discards), compilation excluded.",
    "",
    common.markdown_table(
      ["estimator", "median ms", "IQR ms", "training wall s"],
      [
        [
          name,
          f"{1e3 * r['time_per_update']['median_s']:.3f}",
          f"{1e3 * r['time_per_update']['q25_s']:.3f}–{1e3 * r['time_per_update']['q75_s']:.3f}",
          f"{r['training_wall_s']:.2f}",
        ]
        for name, r in results["rows"].items()
        if name in results["studied"]
      ],
    ),
  ]
  return "\n".join(out)


def plot(results: dict, outdir: Path) -> list[Path]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = results["studied"]
  styles = {n: style.style(n) for n in names}
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1.2]})
  for name in names:
    curve = np.asarray(results["rows"][name]["curve"], float)
    kw = styles[name].kwargs()
    # The hand-written reference computes per_step+leave_one_out's estimator on
    # the same keys: thinner and on top, so that both stay visible.
    reference = name == results["reference"]
    for k, c in enumerate(curve):
      ax.plot(
        np.arange(1, c.size + 1),
        c,
        **kw,
        lw=0.9 if reference else 1.3,
        alpha=0.85,
        ms=4,
        markevery=max(1, c.size // 6),
        zorder=3 if reference else 2,
        label=name if k == 0 else None,
      )
  ax.set_xlabel("update")
  ax.set_ylabel("mean episode return")
  ax.set_title("learning curves (one line per seed)", fontsize=10)
  ax.grid(alpha=0.3)
  v = [results["rows"][n]["variance_mean"] for n in names]
  lo = [results["rows"][n]["variance_lower"] for n in names]
  hi = [results["rows"][n]["variance_upper"] for n in names]
  y = np.arange(len(names))
  ax2.barh(
    y,
    v,
    xerr=[np.subtract(v, lo), np.subtract(hi, v)],
    capsize=3,
    color=[styles[n].color for n in names],
  )
  ax2.set_yticks(y, names, fontsize=8)
  ax2.invert_yaxis()
  ax2.set_xscale("log")
  ax2.set_xlabel("n·Var(ĝ_n), mean over parameters (95% CI)")
  ax2.set_ylabel("estimator")
  ax2.set_title("per-sample gradient variance at init", fontsize=10)
  ax2.grid(alpha=0.3, axis="x")
  s = results["sizes"]
  fig.suptitle(
    f"CartPole-v1 (gymnax): n = {s['num_episodes']} episodes × T = {s['horizon']}, "
    f"Adam {s['learning_rate']}, {s['seeds']} seed(s)",
    fontsize=10,
  )
  fig.tight_layout()
  style.legend_outside(fig, ax, where="below", ncol=len(names))
  path = common.save_figure(fig, Path(outdir) / "policy_gradient.png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  return [path]


BENCHMARK = common.Benchmark(
  name="policy_gradient",
  description=DESCRIPTION,
  run=run,
  report=report,
  headline=headline,
  plot=plot,
  sizes=SIZES,
  size_minimum=SIZE_MINIMUM,
  takes_tiny=True,
)
