"""Language-model RL on a tiny transformer: RLOO, GRPO, Dr. GRPO and REINFORCE.

A decoder-only transformer policy in plain JAX (token and position
embeddings, ``layers`` pre-norm blocks of causal multi-head attention and a
4× MLP, a final layer norm and an unembedding onto the digits and the end
token) reads a prompt of L ~ U{1, …, ``max_prompt``} random digits from
{0, …, ``digits`` − 1}, left-aligned and padded, then a separator, and
samples a completion of up to T = ``max_prompt`` + 1 tokens. The task is to
copy the prompt and stop: the target is x_1 … x_L followed by the end token.
The reward is verifiable and lies in [0, 1]:

    r = (1 / (L + 1)) Σ_{t ≤ L} [y_t = target_t and no end token before t],

so 1 means an exact copy. The completion's mask is a prefix mask, 1 up to and
including its first end token, so lengths vary (1 … T) and the masks matter.

Each update samples ``group_size`` = G completions of each of ``prompts`` = B
prompts (n = B·G, group-major) and applies Adam to one of four estimators,
all through scoregrad's public API, at equal samples:

* ``reinforce``: ``score_function_surrogate(logp, -r, mask=m)`` — Σ_t over
  tokens, no baseline;
* ``rloo``: the same with ``baseline=sg.baselines.leave_one_out(group_size=G)``
  (Ahmadian et al. 2024) — unbiased for ∇E[r];
* ``grpo``: ``-sg.rl.group_advantages(r, G, method="grpo")`` with
  ``aggregation="token_mean"`` (Shao et al. 2024) — biased (the group's
  standard deviation and the per-length token average);
* ``dr_grpo``: ``method="dr_grpo"`` with ``aggregation="constant"``,
  ``max_length=T`` (Liu et al. 2025) — unbiased for (G − 1)/(G·T) · ∇E[r].

The whole training loop (sampling, rewards, gradient, Adam) is one
``jax.jit`` of a ``lax.scan``, seeds vectorised with ``vmap``. Sampling
recomputes the full forward pass at each of the T steps (no KV cache: the
sequences are at most 2·``max_prompt`` + 1 tokens long).

Reported:

* reward curves (mean reward of each update's n completions, ``seeds``
  seeds) and the exact-copy rate at the end of training;
* gradient bias and variance at the initialisation: ``replicates``
  independent batches give each estimator's mean gradient (with its standard
  error per coordinate); the reference ∇E[r] is the mean of a hand-written
  RLOO over ``reference_batches`` further independent batches (with its
  standard error). The rewards do not depend on θ, so each estimate is
  J^T w, J the Jacobian of the per-token log-probs and w = ∂S/∂log π the
  surrogate's per-token weights: one forward and one backward pass per batch
  give all four (checked against ``jax.grad`` of each loss on one batch). For each estimator: the cosine to the reference, the
  least-squares scale c* = ⟨ḡ, ∇⟩ / ‖∇‖², the relative error
  ‖ḡ − c ∇‖ / ‖c ∇‖ at the constant its theory gives (1 for reinforce and
  rloo, (G − 1)/(G·T) for dr_grpo) and at c* (for grpo, which has no such
  constant), beside the noise floor that error would have if the estimator
  were exactly unbiased for c ∇ (√(Σ_j SE²(ḡ_j) + c² SE²(∇_j)) / ‖c ∇‖),
  and the noise-corrected √max(0, ‖ḡ − c ∇‖² − floor²) / ‖c ∇‖. Variance:
  the per-sample variance n·Var(ĝ_n), mean over parameters, with a 95% CI;
  since the estimators' scales differ (dr_grpo's is 1/T and grpo's about
  1/s), it is also given divided by c*², the variance at reinforce's scale.
* time per update (sampling + gradient + Adam, jitted) of every estimator
  and of a hand-written JAX RLOO update with the same maths, in interleaved
  rounds of the same run; the ratio rloo / hand-written, for the whole
  update and for the gradient alone on a fixed batch (sampling, T forward
  passes, dominates the update); and the maximum difference of the two
  gradients on one batch.
* tokens/s: sampled completion tokens (n·T per update, including those after
  the end token, which the mask discards) per second of the jitted training
  loop, compilation excluded.

References:
  Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization
  for Learning from Human Feedback in LLMs", ACL 2024.
  Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in
  Open Language Models", 2024.
  Liu et al., "Understanding R1-Zero-Like Training: A Critical Perspective",
  2025.
  Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
"""

from __future__ import annotations

from pathlib import Path
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import scoregrad as sg

from benchmarks import common, style

DESCRIPTION = (
  "Tiny transformer policy copying digit prompts (variable lengths, end token): "
  "RLOO vs GRPO vs Dr. GRPO vs REINFORCE at equal samples; bias/variance at init, "
  "tokens/s, time vs hand-written JAX RLOO."
)

SIZES = {
  "tiny": {
    "digits": 3,
    "max_prompt": 3,
    "prompts": 2,
    "group_size": 2,
    "d_model": 8,
    "layers": 1,
    "heads": 1,
    "updates": 3,
    "seeds": 1,
    "learning_rate": 0.003,
    "replicates": 4,
    "reference_batches": 4,
    "timing_repeats": 2,
  },
  "default": {
    "digits": 5,
    "max_prompt": 7,
    "prompts": 16,
    "group_size": 4,
    "d_model": 32,
    "layers": 2,
    "heads": 2,
    "updates": 300,
    "seeds": 3,
    "learning_rate": 0.003,
    "replicates": 256,
    "reference_batches": 1024,
    "timing_repeats": 30,
  },
  "full": {
    "digits": 8,
    "max_prompt": 15,
    "prompts": 32,
    "group_size": 8,
    "d_model": 64,
    "layers": 2,
    "heads": 4,
    "updates": 1500,
    "seeds": 3,
    "learning_rate": 0.001,
    "replicates": 1000,
    "reference_batches": 8192,
    "timing_repeats": 60,
  },
}
SIZE_MINIMUM = {
  "digits": 2,
  "max_prompt": 1,
  "prompts": 1,
  "group_size": 2,
  "d_model": 1,
  "layers": 1,
  "heads": 1,
  "updates": 1,
  "seeds": 1,
  "learning_rate": 0.0,
  "replicates": 2,
  "reference_batches": 2,
  "timing_repeats": 1,
}

METHODS = ("reinforce", "rloo", "grpo", "dr_grpo")
REFERENCE = "hand_written_rloo"


# -- the task ----------------------------------------------------------------------


class Task:
  """Token layout: digits 0 … D−1, END = D, SEP = D + 1, PAD = D + 2.

  Actions are the D digits and END (A = D + 1). The model's input is the
  padded prompt (``max_prompt`` tokens), SEP and the first T − 1 completion
  tokens; the logits at positions max_prompt + t give token t of the
  completion.
  """

  def __init__(self, sizes: dict):
    self.digits = sizes["digits"]
    self.max_prompt = sizes["max_prompt"]
    self.horizon = self.max_prompt + 1  # T: up to max_prompt digits, then END
    self.end, self.sep, self.pad = self.digits, self.digits + 1, self.digits + 2
    self.vocab = self.digits + 3
    self.actions = self.digits + 1
    self.width = self.max_prompt + self.horizon  # input positions
    self.prompts = sizes["prompts"]
    self.group_size = sizes["group_size"]
    self.n = self.prompts * self.group_size

  def sample_prompts(self, key):
    """B prompts, each repeated G times (group-major): tokens (n, max_prompt), lengths (n,)."""
    k_len, k_dig = jax.random.split(key)
    lengths = jax.random.randint(k_len, (self.prompts,), 1, self.max_prompt + 1)
    digits = jax.random.randint(k_dig, (self.prompts, self.max_prompt), 0, self.digits)
    tokens = jnp.where(jnp.arange(self.max_prompt) < lengths[:, None], digits, self.pad)
    return (
      jnp.repeat(tokens, self.group_size, axis=0),
      jnp.repeat(lengths, self.group_size, axis=0),
    )

  def score(self, prompt, length, completion):
    """(reward, alive) of one completion (T,): alive[t] = no END before t."""
    t = jnp.arange(self.horizon)
    target = jnp.where(t < length, jnp.pad(prompt, (0, 1), constant_values=self.pad), self.end)
    is_end = completion == self.end
    alive = (jnp.cumsum(is_end) - is_end) == 0
    correct = (completion == target) & alive & (t <= length)
    return jnp.sum(correct) / (length + 1.0), alive


# -- the policy: a decoder-only transformer in plain JAX --------------------------


def init_policy(key, task: Task, sizes: dict):
  d, layers = sizes["d_model"], sizes["layers"]
  keys = iter(jax.random.split(key, 3 + 4 * layers))

  def dense(k, a, b, scale=1.0):
    return scale * jax.random.normal(k, (a, b)) / np.sqrt(a)

  def norm():
    return {"scale": jnp.ones((d,)), "bias": jnp.zeros((d,))}

  params = {
    "tok": 0.5 * jax.random.normal(next(keys), (task.vocab, d)),
    "pos": 0.5 * jax.random.normal(next(keys), (task.width, d)),
    "blocks": [],
    "norm": norm(),
    "out": dense(next(keys), d, task.actions),
  }
  for _ in range(layers):
    params["blocks"].append(
      {
        "norm1": norm(),
        "qkv": dense(next(keys), d, 3 * d),
        "proj": dense(next(keys), d, d, 0.5),
        "norm2": norm(),
        "up": dense(next(keys), d, 4 * d),
        "up_b": jnp.zeros((4 * d,)),
        "down": dense(next(keys), 4 * d, d, 0.5),
        "down_b": jnp.zeros((d,)),
      }
    )
  return params


def _layer_norm(x, p):
  mu = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
  return (x - mu) * jax.lax.rsqrt(var + 1e-5) * p["scale"] + p["bias"]


def forward(params, tokens, heads: int):
  """Logits over the A actions at every position of one sequence: (S,) -> (S, A)."""
  s = tokens.shape[0]
  h = params["tok"][tokens] + params["pos"][:s]
  d = h.shape[-1]
  causal = jnp.tril(jnp.ones((s, s), bool))
  for block in params["blocks"]:
    x = _layer_norm(h, block["norm1"])
    q, k, v = jnp.split((x @ block["qkv"]).reshape(s, 3 * heads, d // heads), 3, axis=1)
    scores = jnp.einsum("qhe,khe->hqk", q, k) / np.sqrt(d // heads)
    weights = jax.nn.softmax(jnp.where(causal, scores, -1e9), axis=-1)
    h = h + jnp.einsum("hqk,khe->qhe", weights, v).reshape(s, d) @ block["proj"]
    x = _layer_norm(h, block["norm2"])
    h = h + jax.nn.gelu(x @ block["up"] + block["up_b"]) @ block["down"] + block["down_b"]
  return _layer_norm(h, params["norm"]) @ params["out"]


def rollout(params, key, task: Task, heads: int):
  """n completions of B prompts × G: inputs (n, S), completions, alive (n, T), rewards (n,)."""
  k_prompt, k_sample = jax.random.split(key)
  prompts, lengths = task.sample_prompts(k_prompt)
  start = jnp.full((task.n, task.horizon), task.pad).at[:, 0].set(task.sep)
  inputs = jnp.concatenate([prompts, start], axis=1)  # (n, S): prompt, SEP, T − 1 slots
  batched = jax.vmap(lambda tokens: forward(params, tokens, heads))

  def step(inputs, xs):
    t, k = xs
    logits = jax.lax.dynamic_index_in_dim(batched(inputs), task.max_prompt + t, 1, False)
    token = jax.random.categorical(k, logits)
    nxt = jnp.minimum(task.max_prompt + 1 + t, task.width - 1)
    written = jax.lax.dynamic_update_index_in_dim(inputs, token, nxt, 1)
    inputs = jnp.where(t < task.horizon - 1, written, inputs)
    return inputs, token

  keys = jax.random.split(k_sample, task.horizon)
  inputs, completions = jax.lax.scan(step, inputs, (jnp.arange(task.horizon), keys))
  completions = completions.T  # (n, T)
  rewards, alive = jax.vmap(task.score)(prompts, lengths, completions)
  return inputs, completions, alive, rewards


def log_probs(params, inputs, completions, task: Task, heads: int):
  """(n, T) log π(y_t | prompt, y_<t), teacher-forced in one forward pass per sequence."""
  logits = jax.vmap(lambda tokens: forward(params, tokens, heads))(inputs)
  logp = jax.nn.log_softmax(logits[:, task.max_prompt :], axis=-1)
  return jnp.take_along_axis(logp, completions[..., None], axis=-1)[..., 0]


# -- the estimators ----------------------------------------------------------------


def surrogate(method: str, logp, alive, rewards, task: Task):
  """The method's surrogate (to minimise) on per-token log-probs (n, T): scoregrad's public API."""
  g = task.group_size
  if method == "reinforce":
    return sg.score_function_surrogate(logp, -rewards, mask=alive)
  if method == "rloo":
    return sg.score_function_surrogate(
      logp, -rewards, mask=alive, baseline=sg.baselines.leave_one_out(group_size=g)
    )
  if method == "grpo":
    advantages = sg.rl.group_advantages(rewards, g, method="grpo")
    return sg.score_function_surrogate(logp, -advantages, mask=alive, aggregation="token_mean")
  if method == "dr_grpo":
    advantages = sg.rl.group_advantages(rewards, g, method="dr_grpo")
    return sg.score_function_surrogate(
      logp, -advantages, mask=alive, aggregation="constant", max_length=task.horizon
    )
  raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def loss(method: str, params, batch, task: Task, heads: int):
  """The loss (to minimise) whose gradient is the method's estimate of −∇E[r]."""
  if method == REFERENCE:
    return hand_written_rloo_loss(params, batch, task, heads)
  inputs, completions, alive, rewards = batch
  return surrogate(
    method, log_probs(params, inputs, completions, task, heads), alive, rewards, task
  )


def hand_written_rloo_loss(params, batch, task: Task, heads: int):
  """RLOO by hand: A_i = r_i − mean of the other rewards of i's group, Σ_t over the mask."""
  inputs, completions, alive, rewards = batch
  logp = jnp.where(alive, log_probs(params, inputs, completions, task, heads), 0.0)
  grouped = rewards.reshape(-1, task.group_size)
  baseline = (jnp.sum(grouped, axis=1, keepdims=True) - grouped) / (task.group_size - 1)
  advantages = jax.lax.stop_gradient((grouped - baseline).reshape(-1))
  return -jnp.mean(advantages * jnp.sum(logp, axis=1))


def known_scale(method: str, task: Task) -> float | None:
  """c with E[ĝ] = c ∇E[r] (the estimators' theory), None where no constant exists."""
  if method in ("reinforce", "rloo", REFERENCE):
    return 1.0
  if method == "dr_grpo":
    return (task.group_size - 1) / (task.group_size * task.horizon)
  return None


def make_update(method, task, heads, optimizer):
  def update(carry, key):
    params, opt_state = carry
    batch = rollout(params, key, task, heads)
    grad = jax.grad(lambda p: loss(method, p, batch, task, heads))(params)
    updates, opt_state = optimizer.update(grad, opt_state, params)
    rewards = batch[3]
    return (optax.apply_updates(params, updates), opt_state), (
      jnp.mean(rewards),
      jnp.mean(rewards == 1.0),
    )

  return update


def train(method, key, task, sizes):
  """One seed: (mean reward, exact-copy rate) per update."""
  k_init, k_train = jax.random.split(key)
  params = init_policy(k_init, task, sizes)
  optimizer = optax.adam(sizes["learning_rate"])
  update = make_update(method, task, sizes["heads"], optimizer)
  _, curves = jax.lax.scan(
    update, (params, optimizer.init(params)), jax.random.split(k_train, sizes["updates"])
  )
  return curves


def _flat(tree):
  return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def _check_sizes(sizes):
  if sizes["d_model"] % sizes["heads"]:
    raise common.SizeError(
      f"lm_policy_gradient: d_model must be a multiple of heads; got "
      f"d_model={sizes['d_model']}, heads={sizes['heads']}."
    )


# -- the run -----------------------------------------------------------------------


def bias_rows(mean, se, ref, ref_se, scales):
  """Cosine, fitted scale and relative errors of mean gradients against the reference."""
  ref = np.asarray(ref, np.float64)
  ref_norm = float(np.linalg.norm(ref))
  rows = {}
  for name, m in mean.items():
    m = np.asarray(m, np.float64)
    fit = float(m @ ref) / ref_norm**2
    row = {
      "cosine": float(m @ ref) / (float(np.linalg.norm(m)) * ref_norm),
      "fitted_scale": fit,
      "known_scale": scales[name],
    }
    for label, c in (("known", scales[name]), ("fitted", fit)):
      if c is None:
        row[f"relative_error_{label}"] = None
        continue
      resid = float(np.sum((m - c * ref) ** 2))
      noise = float(np.sum(se[name] ** 2 + c**2 * ref_se**2))
      scale = abs(c) * ref_norm
      row[f"relative_error_{label}"] = np.sqrt(resid) / scale
      row[f"noise_floor_{label}"] = np.sqrt(noise) / scale
      row[f"corrected_error_{label}"] = np.sqrt(max(0.0, resid - noise)) / scale
    rows[name] = row
  return rows


def run(*, full: bool, seed: int, tiny: bool = False, sizes: dict | None = None) -> dict:
  """Runs the benchmark at the preset sizes (or ``sizes``); see the module docstring."""
  sizes = common.sizes_for(SIZES, full, sizes, tiny)
  _check_sizes(sizes)
  task = Task(sizes)
  heads = sizes["heads"]
  base = jax.random.key(seed)
  params0 = init_policy(jax.random.fold_in(base, 0), task, sizes)
  num_params = int(_flat(params0).size)
  results = {
    "sizes": sizes,
    "task": (
      f"copy a prompt of 1–{task.max_prompt} digits from {{0…{task.digits - 1}}} and end: "
      f"completions of up to T = {task.horizon} tokens, vocabulary {task.vocab} "
      f"({task.actions} actions)"
    ),
    "methods": list(METHODS),
    "reference": REFERENCE,
    "num_params": num_params,
    "completions_per_update": task.n,
    "horizon": task.horizon,
    "rows": {m: {} for m in METHODS},
  }

  # Gradient bias and variance at init: the same `replicates` batches for every method.
  # The rewards do not depend on θ, so each surrogate's gradient is J^T w with J the
  # Jacobian of the per-token log-probs and w = ∂S/∂log π (the per-token weights): one
  # forward and one backward pass (vectorised over the four w) give all four estimates.
  def grads_on(key):
    inputs, completions, alive, rewards = rollout(params0, key, task, heads)
    logp, pullback = jax.vjp(lambda p: log_probs(p, inputs, completions, task, heads), params0)
    w = jnp.stack(
      [jax.grad(lambda lp, m=m: surrogate(m, lp, alive, rewards, task))(logp) for m in METHODS]
    )
    return jax.vmap(lambda wk: _flat(pullback(wk)[0]))(w)

  rep_keys = jax.random.split(jax.random.fold_in(base, 1), sizes["replicates"])
  draws = common.jit(lambda ks: jax.lax.map(grads_on, ks, batch_size=32), fast_compile=tiny)(
    rep_keys
  )
  draws = -np.asarray(draws, np.float64)  # (R, M, P): estimates of +∇E[r]

  # Reference ∇E[r]: hand-written RLOO, independent batches, running sums.
  def ref_grad(key):
    batch = rollout(params0, key, task, heads)
    return -_flat(jax.grad(lambda p: hand_written_rloo_loss(p, batch, task, heads))(params0))

  chunk = min(32, sizes["reference_batches"])
  blocks = -(-sizes["reference_batches"] // chunk)

  def ref_sums(keys):
    def body(carry, ks):
      g = jax.vmap(ref_grad)(ks)
      return (carry[0] + g.sum(0), carry[1] + (g**2).sum(0)), None

    zero = jnp.zeros((num_params,))
    (s1, s2), _ = jax.lax.scan(body, (zero, zero), keys.reshape(blocks, chunk))
    return s1, s2

  ref_keys = jax.random.split(jax.random.fold_in(base, 2), blocks * chunk)
  s1, s2 = common.jit(ref_sums, fast_compile=tiny)(ref_keys)
  r_ref = blocks * chunk
  s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
  ref = s1 / r_ref
  ref_se = np.sqrt(np.maximum(s2 / r_ref - ref**2, 0.0) * r_ref / (r_ref - 1) / r_ref)
  results["reference_batches_used"] = r_ref
  results["reference_grad_norm"] = float(np.linalg.norm(ref))
  results["reference_relative_se"] = float(np.sqrt(np.sum(ref_se**2)) / np.linalg.norm(ref))

  r = draws.shape[0]
  mean = {m: draws[:, i].mean(axis=0) for i, m in enumerate(METHODS)}
  se = {m: draws[:, i].std(axis=0, ddof=1) / np.sqrt(r) for i, m in enumerate(METHODS)}
  rows = bias_rows(mean, se, ref, ref_se, {m: known_scale(m, task) for m in METHODS})
  for i, m in enumerate(METHODS):
    ci = common.variance_ci(draws[:, i], reduce="mean")
    fit2 = rows[m]["fitted_scale"] ** 2
    results["rows"][m].update(rows[m])
    results["rows"][m].update(
      {
        "variance_mean": task.n * ci["variance"],
        "variance_lower": task.n * ci["lower"],
        "variance_upper": task.n * ci["upper"],
        "variance_at_unit_scale": task.n * ci["variance"] / fit2,
      }
    )
  del draws

  # Same batch, same gradient: scoregrad's rloo vs the hand-written RLOO.
  batch = jax.jit(lambda k: rollout(params0, k, task, heads))(jax.random.fold_in(base, 3))
  g_sg = _flat(jax.grad(lambda p: loss("rloo", p, batch, task, heads))(params0))
  g_hw = _flat(jax.grad(lambda p: hand_written_rloo_loss(p, batch, task, heads))(params0))
  results["max_abs_grad_difference"] = float(jnp.max(jnp.abs(g_sg - g_hw)))
  results["max_abs_grad"] = float(jnp.max(jnp.abs(g_hw)))

  # The bias/variance draws' J^T w route against jax.grad of each loss, on that batch.
  def both_routes(batch):
    inputs, completions, alive, rewards = batch
    logp, pullback = jax.vjp(lambda p: log_probs(p, inputs, completions, task, heads), params0)
    routed = [
      _flat(pullback(jax.grad(lambda lp, m=m: surrogate(m, lp, alive, rewards, task))(logp))[0])
      for m in METHODS
    ]
    direct = [
      _flat(jax.grad(lambda p, m=m: loss(m, p, batch, task, heads))(params0)) for m in METHODS
    ]
    return jnp.max(jnp.abs(jnp.stack(routed) - jnp.stack(direct)))

  results["max_abs_route_difference"] = float(common.jit(both_routes, fast_compile=tiny)(batch))

  # Reward curves, seeds vectorised; each method's loop timed once compiled.
  seed_keys = jax.random.split(jax.random.fold_in(base, 4), sizes["seeds"])
  for method in common.progress(METHODS, desc="lm_policy_gradient training"):
    loop = common.jit(
      lambda ks, m=method: jax.vmap(lambda k: train(m, k, task, sizes))(ks), fast_compile=tiny
    )
    compiled = loop.lower(seed_keys).compile()
    t0 = time.perf_counter()
    reward, exact = common.block(compiled(seed_keys))
    wall = time.perf_counter() - t0
    reward, exact = np.asarray(reward, np.float64), np.asarray(exact, np.float64)
    last = max(1, min(10, sizes["updates"]))
    tokens = sizes["seeds"] * sizes["updates"] * task.n * task.horizon
    results["rows"][method].update(
      {
        "curve": reward,
        "exact_curve": exact,
        "final_reward_last10": reward[:, -last:].mean(axis=1),
        "final_exact_last10": exact[:, -last:].mean(axis=1),
        "training_wall_s": wall,
        "tokens_per_s": tokens / wall,
      }
    )

  # Time per update and per gradient: interleaved rounds, the same key and params.
  optimizer = optax.adam(sizes["learning_rate"])
  opt_state = optimizer.init(params0)
  key = jax.random.fold_in(base, 5)
  fns, grad_fns = {}, {}
  # --tiny (a smoke test) times rloo and the hand-written RLOO only, to save compilations.
  timed = ("rloo", REFERENCE) + (() if tiny else tuple(m for m in METHODS if m != "rloo"))
  for method in timed:
    step = jax.jit(make_update(method, task, heads, optimizer))
    fns[method] = lambda step=step: step((params0, opt_state), key)
  for method in ("rloo", REFERENCE):
    g = jax.jit(jax.grad(lambda p, b, m=method: loss(m, p, b, task, heads)))
    grad_fns[method] = lambda g=g: g(params0, batch)
  times = common.interleaved_times(fns, repeats=sizes["timing_repeats"])
  grad_times = common.interleaved_times(grad_fns, repeats=3 * sizes["timing_repeats"])
  for method, t in times.items():
    results["rows"].setdefault(method, {})["time_per_update"] = t
  for method, t in grad_times.items():
    results["rows"][method]["time_per_gradient"] = t
  results["time_ratio_to_hand_written"] = times["rloo"]["median_s"] / times[REFERENCE]["median_s"]
  results["gradient_time_ratio_to_hand_written"] = (
    grad_times["rloo"]["median_s"] / grad_times[REFERENCE]["median_s"]
  )
  return results


# -- reporting ---------------------------------------------------------------------

_g = common.format_number


def _err(row, label):
  if row.get(f"relative_error_{label}") is None:
    return "—"
  return (
    f"{_g(row[f'relative_error_{label}'])} (floor {_g(row[f'noise_floor_{label}'])}; "
    f"corrected {_g(row[f'corrected_error_{label}'])})"
  )


def headline(results: dict) -> str:
  s = results["sizes"]
  rows = []
  for m in results["methods"]:
    r = results["rows"][m]
    final = np.asarray(r["final_reward_last10"], float)
    exact = np.asarray(r["final_exact_last10"], float)
    rows.append(
      [
        m,
        f"{final.mean():.3f} ({', '.join(f'{f:.3f}' for f in final)})",
        f"{exact.mean():.2f}",
        f"{r['cosine']:.3f}",
        _err(r, "known"),
        _err(r, "fitted"),
        f"{_g(r['variance_at_unit_scale'])}",
        f"{1e3 * r['time_per_update']['median_s']:.2f}" if "time_per_update" in r else "—",
        f"{_g(r['tokens_per_s'], upper=1e12)}",
      ]
    )
  return "\n".join(
    [
      f"{results['task']}; {results['num_params']}-parameter transformer ({s['layers']} "
      f"layer(s), d = {s['d_model']}, {s['heads']} head(s)); n = {s['prompts']} prompts × "
      f"G = {s['group_size']} completions per update, Adam {s['learning_rate']}, "
      f"{s['updates']} updates, {s['seeds']} seed(s). Time per update of rloo / hand-written "
      f"JAX RLOO: **{results['time_ratio_to_hand_written']:.3f}×** (gradient alone on a fixed "
      f"batch: {results['gradient_time_ratio_to_hand_written']:.3f}×); gradients differ by at "
      f"most {_g(results['max_abs_grad_difference'])} (max |grad| {_g(results['max_abs_grad'])}).",
      "",
      common.markdown_table(
        [
          "estimator",
          "reward, mean of last 10 updates (per seed)",
          "exact copies (last 10)",
          "cos(E ĝ, ∇E[r]) at init",
          "‖E ĝ − c∇‖/‖c∇‖, c from theory",
          "same, c fitted",
          "n·Var(ĝ)/c*², mean over params",
          "ms / update",
          "tokens/s (training loop)",
        ],
        rows,
      ),
    ]
  )


def report(results: dict) -> str:
  s = results["sizes"]
  out = [
    headline(results),
    "",
    f"Bias at init: each estimator's mean over {s['replicates']} independent batches "
    f"(shared by the four), against ∇E[r] from a hand-written RLOO over "
    f"{results['reference_batches_used']} further batches (‖∇E[r]‖ = "
    f"{_g(results['reference_grad_norm'])}, relative SE {_g(results['reference_relative_se'])}). "
    "c from theory: 1 (reinforce, rloo), (G − 1)/(G·T) (dr_grpo), none (grpo). The floor is "
    "the relative error that noise alone gives an estimator exactly unbiased for c∇E[r]; "
    "'corrected' subtracts it in quadrature (≈ 0 when no bias is detected). "
    "Variance: n·Var(ĝ_n), mean over parameters, at each estimator's own scale [95% CI] and "
    "divided by c*² (c* = fitted scale) to compare at reinforce's scale.",
    "",
    common.markdown_table(
      ["estimator", "c from theory", "c* fitted", "n·Var(ĝ_n) [95% CI]", "n·Var / c*²"],
      [
        [
          m,
          "—" if r["known_scale"] is None else _g(r["known_scale"]),
          _g(r["fitted_scale"]),
          f"{_g(r['variance_mean'])} [{_g(r['variance_lower'])}, {_g(r['variance_upper'])}]",
          _g(r["variance_at_unit_scale"]),
        ]
        for m, r in ((m, results["rows"][m]) for m in results["methods"])
      ],
    ),
    "",
    "Time: medians over interleaved rounds (IQR), one jitted update = sampling (T forward "
    "passes) + gradient + Adam; the gradient alone on one fixed batch for rloo and the "
    "hand-written RLOO. Tokens/s: n·T sampled tokens per update (those after the end token "
    "included) over the wall time of the jitted, seed-vectorised training loop.",
    "",
    common.markdown_table(
      ["estimator", "update median ms", "IQR ms", "gradient median ms", "training wall s"],
      [
        [
          m,
          f"{1e3 * r['time_per_update']['median_s']:.3f}",
          f"{1e3 * r['time_per_update']['q25_s']:.3f}–{1e3 * r['time_per_update']['q75_s']:.3f}",
          f"{1e3 * r['time_per_gradient']['median_s']:.3f}" if "time_per_gradient" in r else "—",
          f"{r['training_wall_s']:.2f}" if "training_wall_s" in r else "—",
        ]
        for m, r in results["rows"].items()
        if "time_per_update" in r
      ],
    ),
  ]
  return "\n".join(out)


def plot(results: dict, outdir: Path) -> list[Path]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = results["methods"]
  styles = {n: style.style(n) for n in names}
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1.2]})
  for name in names:
    curve = np.asarray(results["rows"][name]["curve"], float)
    kw = styles[name].kwargs()
    x = np.arange(1, curve.shape[1] + 1)
    for c in curve:  # each seed, thin
      ax.plot(x, c, color=kw["color"], lw=0.6, alpha=0.3)
    ax.plot(
      x,
      curve.mean(axis=0),
      **kw,
      lw=1.8,
      ms=5,
      markevery=max(1, curve.shape[1] // 6),
      label=f"{name} (mean of {curve.shape[0]} seeds)",
    )
  ax.set_xlabel("update")
  ax.set_ylabel("mean reward of the update's completions")
  ax.set_title("reward curves (thin: each seed)", fontsize=10)
  ax.grid(alpha=0.3)
  v = [results["rows"][n]["variance_at_unit_scale"] for n in names]
  cos = [results["rows"][n]["cosine"] for n in names]
  y = np.arange(len(names))
  ax2.barh(y, v, color=[styles[n].color for n in names])
  for yi, vi, ci in zip(y, v, cos):
    ax2.text(vi, yi, f"  cos {ci:.3f}", va="center", fontsize=8)
  ax2.set_yticks(y, names, fontsize=8)
  ax2.invert_yaxis()
  ax2.set_xscale("log")
  ax2.xaxis.set_minor_formatter(plt.NullFormatter())
  ax2.set_xlim(right=max(v) * 8)  # room for the cosine labels
  ax2.set_xlabel("n·Var(ĝ_n)/c*², mean over parameters")
  ax2.set_ylabel("estimator")
  ax2.set_title("gradient variance at init (cosine to ∇E[r])", fontsize=10)
  ax2.grid(alpha=0.3, axis="x")
  s = results["sizes"]
  fig.suptitle(
    f"Tiny transformer copying digits (T ≤ {results['horizon']}): B = {s['prompts']} × "
    f"G = {s['group_size']}, Adam {s['learning_rate']}, {s['seeds']} seed(s)",
    fontsize=10,
  )
  fig.tight_layout()
  style.legend_outside(fig, ax, where="below", ncol=len(names))
  path = common.save_figure(
    fig, Path(outdir) / "lm_policy_gradient.png", dpi=110, bbox_inches="tight"
  )
  plt.close(fig)
  return [path]


BENCHMARK = common.Benchmark(
  name="lm_policy_gradient",
  description=DESCRIPTION,
  run=run,
  report=report,
  headline=headline,
  plot=plot,
  sizes=SIZES,
  size_minimum=SIZE_MINIMUM,
  takes_tiny=True,
)
