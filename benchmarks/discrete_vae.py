"""A discrete VAE on binarised digits, with exact gradients by enumeration.

Data: scikit-learn's bundled 8×8 digits (1797 images, no download), pixels
binarised at 8 of 16; a fixed split of 1497 training and 300 held-out
images. Model: a one-layer sigmoid belief network with K binary latents
(K ≤ 12, so the 2^K configurations can be enumerated):

    p(b) = Bernoulli(½)^K,   p(x | b) = Bernoulli(σ(b W + c)),
    q(b | x) = Bernoulli(σ(x V + d)),

the linear model of the REBAR and RELAX experiments. Per data point the cost
is f(b) = −log p(x, b) and the negative ELBO is E_q[f] − H[q]. Each row of
``benchmarks.estimators.ESTIMATORS`` for the "bernoulli" family estimates
∇_α E_q[f] for the encoder logits α of each data point (``jax.vmap`` over the
minibatch, one f per data point), pulled back to (V, d); the entropy
gradient is exact; the decoder gradient is pathwise — ∇_{W,c} f(b) at one
independent b ~ q per data point, unbiased and the same for every
estimator — so the comparison is of the encoder gradient only, where the
estimators differ. Stateful estimators (moving-average baseline, REBAR,
RELAX) share one state across the minibatch: the rows' updated states are
averaged after each step (exact for the moving average, which is linear; for
REBAR/RELAX it averages the rows' Adam steps on their variance objective).

Reported:

* **bias and variance on real data**: at a model pre-trained with the exact
  gradient, ``replicates`` independent estimates of the minibatch encoder
  gradient, against the exact gradient computed by enumerating the 2^K
  configurations (in matrix form, and cross-checked with ``scoregrad.exact``):
  relative bias ‖E ĝ − g‖/‖g‖ with its Monte Carlo noise floor
  √(tr Cov/R)/‖g‖, and the per-sample total variance n·tr Cov(ĝ_n);
* **ELBO training curves** with ``optax.adam`` from a common initialisation,
  the held-out ELBO and log-likelihood computed exactly by enumeration, next
  to training with the exact encoder gradient.

References:
  Tucker et al., "REBAR", NeurIPS 2017; Grathwohl et al., "Backpropagation
  through the Void", ICLR 2018; Dong, Mnih & Tucker, "DisARM", NeurIPS 2020
  (the linear sigmoid-belief-network VAE).
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import scoregrad as sg

from benchmarks import common, style
from benchmarks import estimators as estimators_table
from benchmarks.discrete_toy import compile_and_run

DESCRIPTION = (
  "Discrete VAE (linear sigmoid belief net) on binarised sklearn digits with "
  "≤ 12 latent bits: bias and variance of every Bernoulli estimator against the "
  "exact gradient (enumeration), and exact held-out ELBO curves with Adam."
)

FAMILY = "bernoulli"
NUM_PIXELS = 64

SIZES = {
  "tiny": {
    "latents": 4,
    "num_samples": 2,
    "batch_size": 8,
    "replicates": 16,
    "warmup_steps": 2,
    "pretrain_steps": 5,
    "steps": 10,
    "eval_points": 3,
    "learning_rate": 0.01,
    "test_points": 50,
  },
  "default": {
    "latents": 10,
    "num_samples": 4,
    "batch_size": 32,
    "replicates": 200,
    "warmup_steps": 30,
    "pretrain_steps": 200,
    "steps": 300,
    "eval_points": 11,
    "learning_rate": 0.01,
    "test_points": 300,
  },
  "full": {
    "latents": 12,
    "num_samples": 4,
    "batch_size": 50,
    "replicates": 2000,
    "warmup_steps": 100,
    "pretrain_steps": 2000,
    "steps": 5000,
    "eval_points": 51,
    "learning_rate": 0.003,
    "test_points": 300,
  },
}
SIZE_MINIMUM = {
  "latents": 1,
  "num_samples": 2,
  "batch_size": 1,
  "replicates": 8,
  "warmup_steps": 0,
  "pretrain_steps": 0,
  "steps": 1,
  "eval_points": 2,
  "test_points": 1,
}
MAX_LATENTS = 12


def load_data() -> tuple[np.ndarray, np.ndarray]:
  """(train, test) binarised digits, float32, a fixed split (1497 / 300)."""
  from sklearn.datasets import load_digits

  x = (load_digits().data > 7).astype(np.float32)
  order = np.random.default_rng(0).permutation(len(x))
  return x[order[300:]], x[order[:300]]


def init_params(key, latents: int, train: np.ndarray) -> dict:
  """Small random weights; the decoder bias at the logit of the pixel means."""
  k1, k2 = jax.random.split(key)
  mean = np.clip(train.mean(axis=0), 0.01, 0.99)
  return {
    "enc": {"V": 0.01 * jax.random.normal(k1, (NUM_PIXELS, latents)), "d": jnp.zeros((latents,))},
    "dec": {
      "W": 0.01 * jax.random.normal(k2, (latents, NUM_PIXELS)),
      "c": jnp.asarray(np.log(mean / (1 - mean)), jnp.float32),
    },
  }


def encoder_logits(enc, x):
  return x @ enc["V"] + enc["d"]


def cost(dec, x, b):
  """f(b) = −log p(x | b) − log p(b) for one data point (b may be relaxed)."""
  logits = b @ dec["W"] + dec["c"]
  log_lik = jnp.sum(x * logits - jax.nn.softplus(logits))
  return -log_lik + b.shape[-1] * math.log(2.0)


def entropy(alpha):
  """H[Bernoulli(σ(α))] summed over the last axis."""
  p = jax.nn.sigmoid(alpha)
  return jnp.sum(jax.nn.softplus(alpha) - p * alpha, axis=-1)


def all_configurations(latents: int) -> jnp.ndarray:
  bits = (np.arange(2**latents)[:, None] >> np.arange(latents - 1, -1, -1)) & 1
  return jnp.asarray(bits, jnp.float32)


def exact_terms(params, x, configs):
  """Per data point: exact −ELBO, log p(x), and ∂E_q[f]/∂α, by enumeration.

  Matrix form: the decoder logits of all 2^K configurations are computed once
  and shared by the minibatch.
  """
  alpha = encoder_logits(params["enc"], x)  # (B, K)
  dec_logits = configs @ params["dec"]["W"] + params["dec"]["c"]  # (M, P)
  log_lik = x @ dec_logits.T - jnp.sum(jax.nn.softplus(dec_logits), axis=1)  # (B, M)
  latents = configs.shape[1]
  f = -log_lik + latents * math.log(2.0)  # (B, M)
  log_q = alpha @ configs.T - jnp.sum(jax.nn.softplus(alpha), axis=1, keepdims=True)
  q = jnp.exp(log_q)
  expected_f = jnp.sum(q * f, axis=1)
  neg_elbo = expected_f - entropy(alpha)
  log_px = jax.nn.logsumexp(log_lik, axis=1) - latents * math.log(2.0)
  # ∂/∂α Σ_c q_c f_c = Σ_c q_c f_c (c − σ(α))
  grad_alpha = q * f @ configs - expected_f[:, None] * jax.nn.sigmoid(alpha)
  return neg_elbo, log_px, grad_alpha


def _pullback_encoder(x, g_alpha):
  """(V, d) gradient of mean_n E_q[f_n] from per-row ∂/∂α_n (linear encoder)."""
  b = x.shape[0]
  return {"V": x.T @ g_alpha / b, "d": jnp.mean(g_alpha, axis=0)}


def _bernoulli(alpha):
  return sg.dists.Bernoulli(logits=alpha)


def _row_estimates(est, keys, params, x, state):
  """vmap of est.estimate over the rows (shared state): ∂E_q[f_n]/∂α_n and states."""
  alpha = jax.lax.stop_gradient(encoder_logits(params["enc"], x))

  def one(key, xn, an):
    out = est.estimate(key, lambda b: cost(params["dec"], xn, b), _bernoulli, an, state)
    return out.grad, out.state

  grads, states = jax.vmap(one)(keys, x, alpha)
  new_state = jax.tree_util.tree_map(lambda s: jnp.mean(s, axis=0).astype(s.dtype), states)
  return grads, new_state


def _gradients(key, params, x, encoder_grad_alpha):
  """Full −ELBO gradient from an encoder ∂E_q[f]/∂α (B, K): + exact entropy
  term, + pathwise decoder term at one b ~ q per row."""
  alpha = encoder_logits(params["enc"], x)
  g_enc = _pullback_encoder(x, encoder_grad_alpha)
  g_entropy = jax.grad(lambda e: -jnp.mean(entropy(encoder_logits(e, x))))(params["enc"])
  b = jax.lax.stop_gradient(
    (jax.random.uniform(key, alpha.shape) < jax.nn.sigmoid(alpha)).astype(alpha.dtype)
  )
  g_dec = jax.grad(lambda d: jnp.mean(jax.vmap(lambda xn, bn: cost(d, xn, bn))(x, b)))(
    params["dec"]
  )
  return {"enc": jax.tree_util.tree_map(jnp.add, g_enc, g_entropy), "dec": g_dec}


def _train(
  key, params, train_x, encoder_estimate, est_state, *, steps, batch_size, learning_rate, eval_steps
):
  """Adam on the −ELBO; returns the parameters at ``eval_steps`` (0 = the start)."""
  opt = optax.adam(learning_rate)
  n_train = train_x.shape[0]

  def step(carry, k):
    p, opt_state, s = carry
    k_batch, k_est, k_dec = jax.random.split(k, 3)
    x = train_x[jax.random.randint(k_batch, (batch_size,), 0, n_train)]
    g_alpha, s = encoder_estimate(k_est, p, x, s)
    grads = _gradients(k_dec, p, x, g_alpha)
    updates, opt_state = opt.update(grads, opt_state, p)
    p = optax.apply_updates(p, updates)
    return (p, opt_state, s), p

  _, trajectory = jax.lax.scan(
    step, (params, opt.init(params), est_state), jax.random.split(key, steps)
  )
  with_start = jax.tree_util.tree_map(
    lambda p0, t: jnp.concatenate([p0[None], t]), params, trajectory
  )
  return jax.tree_util.tree_map(lambda t: t[eval_steps], with_start)


@jax.jit
def evaluate(params_at_eval, test_x, configs):
  """Exact held-out (ELBO, log p(x)), mean per image, at each saved parameter set."""

  def one(p):
    neg_elbo, log_px, _ = exact_terms(p, test_x, configs)
    return jnp.mean(-neg_elbo), jnp.mean(log_px)

  return jax.lax.map(one, params_at_eval)


def run(
  *,
  full: bool,
  seed: int,
  tiny: bool = False,
  sizes: dict | None = None,
  estimators: list[str] | None = None,
) -> dict:
  """Runs the benchmark at the preset sizes (or ``sizes``); see the module docstring."""
  sizes = common.sizes_for(SIZES, full, sizes, tiny)
  latents, n, batch = sizes["latents"], sizes["num_samples"], sizes["batch_size"]
  if latents > MAX_LATENTS:
    raise ValueError(
      f"discrete_vae: latents={latents} > {MAX_LATENTS}: the exact gradient "
      f"enumerates 2^latents configurations per data point."
    )
  specs = estimators_table.select(estimators, family=FAMILY)
  train_np, test_np = load_data()
  train_x = jnp.asarray(train_np)
  test_x = jnp.asarray(test_np[: sizes["test_points"]])
  configs = all_configurations(latents)
  base = jax.random.key(seed)
  k_init, k_pre, k_batch = jax.random.split(jax.random.fold_in(base, 1), 3)
  params0 = init_params(k_init, latents, train_np)
  steps = sizes["steps"]
  eval_steps = np.unique(np.linspace(0, steps, sizes["eval_points"]).round().astype(int))
  lr = sizes["learning_rate"]

  def exact_encoder(key, p, x, s):
    del key
    return exact_terms(p, x, configs)[2], s

  train_kwargs = dict(steps=steps, batch_size=batch, learning_rate=lr, eval_steps=eval_steps)

  # 1. pre-train with the exact gradient (common to all estimators), and the
  #    exact reference training curve from the initialisation.
  pretrained = compile_and_run(
    lambda k, p, tx: _pretrain(k, p, tx, exact_encoder, sizes["pretrain_steps"], batch, lr),
    k_pre,
    params0,
    train_x,
  )
  exact_curve = evaluate(
    compile_and_run(
      lambda k, p, tx: _train(k, p, tx, exact_encoder, (), **train_kwargs),
      jax.random.fold_in(base, 2),
      params0,
      train_x,
    ),
    test_x,
    configs,
  )

  # 2. the minibatch for the bias/variance study and its exact encoder gradient
  idx = jax.random.choice(k_batch, train_x.shape[0], (batch,), replace=False)
  x_study = train_x[idx]
  _, _, g_alpha_exact = exact_terms(pretrained, x_study, configs)
  exact_enc = _flatten(_pullback_encoder(x_study, g_alpha_exact))
  check = _check_against_scoregrad_exact(pretrained, x_study, g_alpha_exact)

  neg_elbo_pre, log_px_pre, _ = exact_terms(pretrained, test_x, configs)
  data = {
    "pretrained": pretrained,
    "x_study": x_study,
    "params0": params0,
    "train_x": train_x,
    "test_x": test_x,
    "configs": configs,
  }
  results = {
    "sizes": sizes,
    "family": FAMILY,
    "estimators": [s.name for s in specs],
    "data": {
      "name": "sklearn.datasets.load_digits, binarised at > 7",
      "train": int(train_x.shape[0]),
      "test": int(test_x.shape[0]),
      "pixels": NUM_PIXELS,
    },
    "eval_steps": eval_steps,
    "exact_curve": {"elbo": np.asarray(exact_curve[0]), "log_px": np.asarray(exact_curve[1])},
    "pretrained": {"elbo": float(jnp.mean(-neg_elbo_pre)), "log_px": float(jnp.mean(log_px_pre))},
    "exact_gradient_norm": float(np.linalg.norm(exact_enc)),
    "scoregrad_exact_max_abs_difference": check,
    "variance_definition": (
      "per-sample total variance n·tr Cov(ĝ_n) of the minibatch encoder gradient (V, d)"
    ),
    "rows": {},
  }

  for spec in common.progress(specs, desc="discrete_vae"):
    est = spec.make(n)
    stateful = bool(jax.tree_util.tree_leaves(est.init(jnp.zeros((latents,)))))
    warmup = sizes["warmup_steps"] if stateful else 0
    key = common.name_key(base, spec.name)
    k_var, k_train = jax.random.split(key)

    def encoder_estimate(k, p, x, s, est=est):
      return _row_estimates(est, jax.random.split(k, x.shape[0]), p, x, s)

    def study(kv, kt, data, est=est, warmup=warmup, encoder_estimate=encoder_estimate):
      state = est.init(jnp.zeros((latents,)))
      kv, warm = jax.random.split(kv)
      if warmup > 0:

        def wstep(s, k):
          return encoder_estimate(k, data["pretrained"], data["x_study"], s)[1], None

        state, _ = jax.lax.scan(wstep, state, jax.random.split(warm, warmup))
      draws = jax.vmap(
        lambda k: _flatten(
          _pullback_encoder(
            data["x_study"], encoder_estimate(k, data["pretrained"], data["x_study"], state)[0]
          )
        )
      )(jax.random.split(kv, sizes["replicates"]))
      at_eval = _train(
        kt,
        data["params0"],
        data["train_x"],
        encoder_estimate,
        est.init(jnp.zeros((latents,))),
        **train_kwargs,
      )
      return draws, at_eval

    draws, at_eval = compile_and_run(study, k_var, k_train, data)
    curve = evaluate(at_eval, test_x, configs)
    draws = np.asarray(draws, np.float64)
    r = draws.shape[0]
    mean = draws.mean(axis=0)
    total = common.variance_ci(draws, reduce="sum")
    norm = results["exact_gradient_norm"]
    elbo = np.asarray(curve[0], np.float64)
    results["rows"][spec.name] = {
      "kind": spec.kind,
      "stateful": stateful,
      "warmup_steps": warmup,
      "relative_bias": float(np.linalg.norm(mean - exact_enc) / norm),
      "relative_noise_floor": float(np.sqrt(total["variance"] / r) / norm),
      "variance": n * float(total["variance"]),
      "variance_lower": n * float(total["lower"]),
      "variance_upper": n * float(total["upper"]),
      "elbo_curve": elbo,
      "log_px_curve": np.asarray(curve[1], np.float64),
      "final_elbo": float(elbo[-1]),
      "diverged": bool(not np.all(np.isfinite(elbo))),
    }
  sf = results["rows"].get("score_function")
  for row in results["rows"].values():
    row["variance_ratio_to_score_function"] = (
      row["variance"] / sf["variance"] if sf and sf["variance"] > 0 else None
    )
  return results


def _pretrain(key, params, train_x, encoder_estimate, steps, batch_size, learning_rate):
  opt = optax.adam(learning_rate)

  def step(carry, k):
    p, opt_state = carry
    k_batch, k_dec = jax.random.split(k)
    x = train_x[jax.random.randint(k_batch, (batch_size,), 0, train_x.shape[0])]
    g_alpha, _ = encoder_estimate(None, p, x, ())
    updates, opt_state = opt.update(_gradients(k_dec, p, x, g_alpha), opt_state, p)
    return (optax.apply_updates(p, updates), opt_state), None

  (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
  return p


def _flatten(tree) -> jnp.ndarray:
  return jnp.concatenate([jnp.ravel(tree["V"]), jnp.ravel(tree["d"])])


def _check_against_scoregrad_exact(params, x, g_alpha) -> float:
  """max |matrix-form ∂/∂α − scoregrad.exact| over the minibatch (a self-check)."""
  est = sg.exact()
  alpha = encoder_logits(params["enc"], x)

  def one(xn, an):
    return est.estimate(
      jax.random.key(0), lambda b: cost(params["dec"], xn, b), _bernoulli, an, ()
    ).grad

  ours = jax.jit(jax.vmap(one))(x, alpha)
  diff = float(jnp.max(jnp.abs(ours - g_alpha)))
  scale = float(jnp.max(jnp.abs(g_alpha)))
  if not diff <= 1e-3 * max(scale, 1.0):
    raise AssertionError(
      f"exact gradients disagree: matrix form vs scoregrad.exact differ by {diff} (scale {scale})."
    )
  return diff


# -- reporting -------------------------------------------------------------------


_g = common.format_number


def headline(results: dict) -> str:
  s = results["sizes"]
  rows = []
  for name, r in results["rows"].items():
    rows.append(
      [
        name,
        f"{_g(r['relative_bias'])} ({_g(r['relative_noise_floor'])})",
        f"{_g(r['variance'])} [{_g(r['variance_lower'])}, {_g(r['variance_upper'])}]",
        _g(r["variance_ratio_to_score_function"]),
        f"{r['final_elbo']:.2f}" + (" (diverged)" if r["diverged"] else ""),
      ]
    )
  rows.append(["exact gradient", "0", "0", "0", f"{results['exact_curve']['elbo'][-1]:.2f}"])
  return "\n".join(
    [
      f"Binarised digits, K = {s['latents']} latent bits, n = {s['num_samples']} evaluations "
      f"of f per data point, minibatch {s['batch_size']}. Encoder gradient at a model "
      f"pre-trained for {s['pretrain_steps']} exact steps: relative bias (MC noise floor) "
      f"and per-sample total variance [95% CI]; held-out ELBO (exact) after {s['steps']} "
      f"Adam steps (lr {s['learning_rate']}) from a common initialisation.",
      "",
      common.markdown_table(
        [
          "estimator",
          "relative bias (noise floor)",
          "per-sample variance",
          "ratio to score_function",
          "final test ELBO",
        ],
        rows,
      ),
    ]
  )


def report(results: dict) -> str:
  s = results["sizes"]
  out = [
    f"Data: {results['data']['name']}; {results['data']['train']} training and "
    f"{results['data']['test']} held-out images. K = {s['latents']} latent bits "
    f"(2^{s['latents']} configurations enumerated for every exact quantity). "
    f"Pre-trained model (exact gradient, {s['pretrain_steps']} steps): held-out ELBO "
    f"{results['pretrained']['elbo']:.2f}, log p(x) {results['pretrained']['log_px']:.2f} "
    f"nats per image. Exact encoder gradient norm {_g(results['exact_gradient_norm'])}; "
    "the matrix-form exact gradient agrees with scoregrad.exact to "
    f"{_g(results['scoregrad_exact_max_abs_difference'])}.",
    "",
    f"Bias/variance: {s['replicates']} independent minibatch estimates (n = "
    f"{s['num_samples']} per data point; stateful estimators warmed up with "
    f"{s['warmup_steps']} estimates). Relative bias = ‖mean − exact‖/‖exact‖; for an "
    "unbiased estimator it is about the noise floor √(tr Cov/R)/‖exact‖ (it scatters "
    "around it: the 650 coordinates are strongly correlated). A ratio well above 1 is "
    "bias. (Per-coordinate z-scores are not reported: for saturated latents DisARM and "
    "ARM are zero in almost every draw and rarely large, so a few hundred draws give a "
    "near-zero standard error that is not to be trusted.)",
    "",
    common.markdown_table(
      [
        "estimator",
        "kind",
        "relative bias",
        "noise floor",
        "bias / floor",
        "per-sample variance [95% CI]",
        "ratio to SF",
        "final ELBO",
        "final log p(x)",
      ],
      [
        [
          name,
          r["kind"],
          _g(r["relative_bias"]),
          _g(r["relative_noise_floor"]),
          _g(r["relative_bias"] / r["relative_noise_floor"]),
          f"{_g(r['variance'])} [{_g(r['variance_lower'])}, {_g(r['variance_upper'])}]",
          _g(r["variance_ratio_to_score_function"]),
          f"{r['final_elbo']:.2f}",
          f"{r['log_px_curve'][-1]:.2f}",
        ]
        for name, r in results["rows"].items()
      ]
      + [
        [
          "exact gradient",
          "exact",
          "0",
          "0",
          "0",
          "0",
          "0",
          f"{results['exact_curve']['elbo'][-1]:.2f}",
          f"{results['exact_curve']['log_px'][-1]:.2f}",
        ]
      ],
    ),
    "",
    f"Training: optax.adam({s['learning_rate']}), minibatches of {s['batch_size']} drawn with "
    f"replacement, {s['steps']} steps from the same initialisation; held-out ELBO and "
    "log p(x) computed exactly.",
  ]
  return "\n".join(out)


def plot(results: dict, outdir: Path) -> list[Path]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = list(results["rows"])
  styles = {n: style.style(n) for n in names}
  steps = np.asarray(results["eval_steps"])
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [1.4, 1]})
  for name in names:
    st = styles[name]
    ax.plot(
      steps,
      results["rows"][name]["elbo_curve"],
      color=st.color,
      ls=st.linestyle,
      lw=1.3,
      label=name,
    )
  ax.plot(steps, results["exact_curve"]["elbo"], "k--", lw=2, label="exact gradient")
  ax.set_xlabel("Adam step")
  ax.set_ylabel("held-out ELBO (exact, nats per image)")
  finals = [results["rows"][n]["final_elbo"] for n in names] + [results["exact_curve"]["elbo"][-1]]
  lo = np.nanmin(np.asarray(finals, float))
  ax.set_ylim(
    lo - 0.3 * abs(results["exact_curve"]["elbo"][-1] - lo) - 1,
    results["exact_curve"]["elbo"][-1] + 1,
  )
  ax.grid(True, alpha=0.3)
  ax.set_title("ELBO during training (encoder gradient by each estimator)", fontsize=10)
  bias = np.asarray([results["rows"][n]["relative_bias"] for n in names])
  floor = np.asarray([results["rows"][n]["relative_noise_floor"] for n in names])
  var = np.asarray([results["rows"][n]["variance"] for n in names])
  # Each estimator is identified by its marker and colour (legend), not by text labels,
  # which overlapped where estimators have similar bias and variance.
  for name, v, b, fl in zip(names, var, bias, floor):
    st = styles[name]
    ax2.plot([v], [b], st.marker, color=st.color, ms=7, zorder=3, ls="none")
    ax2.plot([v], [fl], "_", color=st.color, ms=12, mew=2, zorder=3)
  ax2.set_xscale("log")
  ax2.set_yscale("log")
  ax2.set_xlabel("per-sample total variance of the encoder gradient")
  ax2.set_ylabel("relative bias ‖E ĝ − g‖/‖g‖ (dash: MC noise floor)")
  ax2.set_title("bias vs variance at the pre-trained model", fontsize=10)
  ax2.grid(True, alpha=0.3)
  s = results["sizes"]
  fig.suptitle(
    f"Discrete VAE on binarised digits, K = {s['latents']} bits, "
    f"n = {s['num_samples']} per data point",
    fontsize=10,
  )
  fig.tight_layout()
  handles = [plt.Line2D([], [], label=n, lw=1.3, **styles[n].kwargs()) for n in names]
  handles.append(plt.Line2D([], [], color="k", ls="--", lw=2, label="exact gradient"))
  style.legend_outside(fig, handles)
  path = common.save_figure(fig, Path(outdir) / "discrete_vae.png", dpi=100, bbox_inches="tight")
  plt.close(fig)
  return [path]


BENCHMARK = common.Benchmark(
  name="discrete_vae",
  description=DESCRIPTION,
  run=run,
  report=report,
  headline=headline,
  plot=plot,
  sizes=SIZES,
  size_minimum=SIZE_MINIMUM,
  family=FAMILY,
  takes_tiny=True,
  takes_estimators=True,
)
