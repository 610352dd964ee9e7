"""The REBAR/RELAX Bernoulli toy: minimise E[(b − t)²], b ~ Bernoulli(θ).

One bit with θ = σ(α) and f(b) = (b − t)² for t = 0.45 and t = 0.499: the
gradient ∂E/∂α = θ(1 − θ)(1 − 2t) is tiny next to f itself (f ≈ t² ≈ 0.2),
so this is a hard signal-to-noise problem for the score function (Tucker et
al. 2017; Grathwohl et al. 2018, Figure 1). Every estimator of
``benchmarks.estimators.ESTIMATORS`` for the "bernoulli" family is run, plus
Adam with the exact gradient as a reference.

Reported per estimator and target t:

* the **per-sample variance** n·Var(ĝ_n) of the gradient with respect to α, at
  a grid of θ, from ``replicates`` independent estimates (95% CI), next to the
  exact value where it is derivable for one bit (score function: enumeration;
  leave-one-out: enumeration of the n-tuples; ARM: integration over u cell by
  cell; DisARM: enumeration of the coupled pair; straight-through:
  enumeration; Gumbel-softmax: Gauss-Legendre quadrature over u;
  Rao-Blackwellised sum-and-sample: zero, since with one bit the complement
  of the summed configuration is a single point); REBAR and RELAX learn their
  control variate, so their variance is measured only;
* the **bias** E[ĝ] − ∂E/∂α: exact for the relaxations (biased by design),
  estimated with its standard error for all;
* **optimisation curves**: Adam on α from θ = ½, the exact objective
  E[f] − min E[f] = θ(1 − 2t) (the optimum is θ → 0) along the way, mean over
  seeds.

Stateful estimators (moving-average baseline, REBAR, RELAX) first adapt their
state with ``warmup_steps`` estimates at each θ (one chain); the replicates
then start from that state.

References:
  Tucker et al., "REBAR: Low-variance, unbiased gradient estimates for
  discrete latent variable models", NeurIPS 2017.
  Grathwohl et al., "Backpropagation through the Void", ICLR 2018.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import special

import scoregrad as sg

from benchmarks import common, style
from benchmarks import estimators as estimators_table

DESCRIPTION = (
  "REBAR/RELAX Bernoulli toy E[(b − t)²], t = 0.45 and 0.499: gradient "
  "variance vs θ for every Bernoulli estimator (exact where derivable), bias "
  "of the relaxations, Adam optimisation curves."
)

FAMILY = "bernoulli"

SIZES = {
  "tiny": {
    "num_samples": 2,
    "targets": (0.45, 0.499),
    "grid_points": 3,
    "replicates": 64,
    "warmup_steps": 3,
    "steps": 20,
    "seeds": 1,
    "eval_points": 5,
    "learning_rate": 0.05,
  },
  "default": {
    "num_samples": 2,
    "targets": (0.45, 0.499),
    "grid_points": 9,
    "replicates": 2000,
    "warmup_steps": 100,
    "steps": 600,
    "seeds": 3,
    "eval_points": 61,
    "learning_rate": 0.02,
  },
  "full": {
    "num_samples": 2,
    "targets": (0.45, 0.499),
    "grid_points": 39,
    "replicates": 20000,
    "warmup_steps": 300,
    "steps": 5000,
    "seeds": 10,
    "eval_points": 201,
    "learning_rate": 0.01,
  },
}
SIZE_MINIMUM = {
  "num_samples": 2,
  "grid_points": 2,
  "replicates": 8,
  "warmup_steps": 0,
  "steps": 1,
  "seeds": 1,
  "eval_points": 2,
}
# num_samples >= 2: the leave-one-out baseline and one antithetic pair need two.


def theta_grid(points: int) -> np.ndarray:
  """θ from 0.05 to 0.95."""
  return np.linspace(0.05, 0.95, points)


def _dist_fn(alpha):
  return sg.dists.Bernoulli(logits=alpha)


def _cost(t):
  return lambda b: jnp.sum((b - t) ** 2)


# -- exact answers for one bit ------------------------------------------------


def exact_gradient(theta, t):
  return theta * (1 - theta) * (1 - 2 * t)


def _f(b, t):
  return (b - t) ** 2


def _sf_moments(theta, t):
  """One draw of f(b)(b − θ): mean and variance."""
  second = theta * (_f(1, t) * (1 - theta)) ** 2 + (1 - theta) * (_f(0, t) * theta) ** 2
  g = exact_gradient(theta, t)
  return g, second - g**2


def _loo_moments(theta, t, n):
  """n·Var of (1/n) Σ_i (f_i − mean_{j≠i} f_j)(b_i − θ), over the 2^n tuples."""
  mean = second = 0.0
  for bits in itertools.product([0, 1], repeat=n):
    b = np.asarray(bits, float)
    w = np.prod(np.where(b == 1, theta, 1 - theta))
    c = _f(b, t)
    g = np.mean((c - (c.sum() - c) / (n - 1)) * (b - theta))
    mean += w * g
    second += w * g**2
  return mean, n * (second - mean**2)


def _arm_moments(theta, t):
  """One ARM draw (f(1[u > 1−θ]) − f(1[u < θ]))(u − ½), cell by cell in u."""
  lo, hi = min(theta, 1 - theta), max(theta, 1 - theta)
  mean = second = 0.0
  for a, b in ((0.0, lo), (lo, hi), (hi, 1.0)):
    if b <= a:
      continue
    mid = (a + b) / 2
    delta = _f(float(mid > 1 - theta), t) - _f(float(mid < theta), t)
    m1 = (a + b) / 2 - 0.5
    m2 = ((b - 0.5) ** 3 - (a - 0.5) ** 3) / (3 * (b - a))
    mean += (b - a) * delta * m1
    second += (b - a) * delta**2 * m2
  return mean, second - mean**2


def _disarm_moments(theta, t):
  """One DisARM pair: ½(1 − 2t)σ(|α|) with probability 2 min(θ, 1−θ), else 0."""
  m = min(theta, 1 - theta)
  value = 0.5 * (1 - 2 * t) * max(theta, 1 - theta)  # σ(|α|) = max(θ, 1 − θ)
  mean = 2 * m * value
  return mean, 2 * m * value**2 - mean**2


def _straight_through_moments(theta, t):
  """2(b − t) θ(1 − θ), b ~ Bernoulli(θ)."""
  s = theta * (1 - theta)
  return 2 * (theta - t) * s, 4 * s**2 * s


def _smoothed_gauss_legendre(a, b, n):
  """Gauss-Legendre after x = a + (b − a)φ(w), φ(w) = w³(10 − 15w + 6w²), which
  flattens the endpoint behaviour of σ((α + logit u)/λ) near u = 0 and 1."""
  w, wt = np.polynomial.legendre.leggauss(n)
  w, wt = 0.5 * (w + 1), 0.5 * wt
  phi = w**3 * (10 - 15 * w + 6 * w**2)
  return a + (b - a) * phi, (b - a) * 30 * w**2 * (1 - w) ** 2 * wt


def _gumbel_softmax_moments(theta, t, temperature, straight_through, nodes=200):
  """ĝ(u) = 2(y − t) y(1 − y)/λ (y → the hard b in the forward pass for the
  straight-through variant), y = σ((α + logit u)/λ); quadrature on the two
  pieces of (0, 1) split at u = 1 − θ, where b flips."""
  alpha = np.log(theta / (1 - theta))
  xa, wa = _smoothed_gauss_legendre(0.0, 1 - theta, nodes)
  xb, wb = _smoothed_gauss_legendre(1 - theta, 1.0, nodes)
  u, w = np.concatenate([xa, xb]), np.concatenate([wa, wb])
  z = alpha + np.log(u) - np.log1p(-u)
  y = special.expit(z / temperature)
  at = (z > 0).astype(float) if straight_through else y
  g = 2 * (at - t) * y * (1 - y) / temperature
  mean = w @ g
  return mean, w @ g**2 - mean**2


def _reinmax_moments(theta, t, temperature):
  """ReinMax for one bit: ĝ = (2π₁(1 − π₁) − ½θ(1 − θ))·2(b − t), π₁ = (b + σ(α/τ))/2."""
  alpha = np.log(theta / (1 - theta))
  tempered = special.expit(alpha / temperature)
  mean = second = 0.0
  for b, w in ((1.0, theta), (0.0, 1 - theta)):
    pi1 = 0.5 * (b + tempered)
    g = (2 * pi1 * (1 - pi1) - 0.5 * theta * (1 - theta)) * 2 * (b - t)
    mean += w * g
    second += w * g**2
  return mean, second - mean**2


def _gumbel_rao_moments(theta, t, temperature, num_inner, nodes=200):
  """Gumbel-Rao for one bit: given b, ĝ = 2(b − t)·mean_m h(z̃_m), h(z) =
  σ(z/λ)(1 − σ(z/λ))/λ, z̃ the logistic noise on b's side; E and Var of h given b
  by quadrature on that side of u = 1 − θ."""
  alpha = np.log(theta / (1 - theta))
  mean = second = 0.0
  for b, lo, hi, w in ((1.0, 1 - theta, 1.0, theta), (0.0, 0.0, 1 - theta, 1 - theta)):
    u, wu = _smoothed_gauss_legendre(lo, hi, nodes)
    y = special.expit((alpha + np.log(u) - np.log1p(-u)) / temperature)
    h = y * (1 - y) / temperature
    m1, m2 = wu @ h / (hi - lo), wu @ h**2 / (hi - lo)
    scale = 2 * (b - t)
    mean += w * scale * m1
    second += w * scale**2 * (m1**2 + (m2 - m1**2) / num_inner)
  return mean, second - mean**2


def exact_moments(name: str, theta: float, t: float, n: int):
  """(E[ĝ], n·Var(ĝ_n)) of the row ``name`` with n evaluations of f, or None."""
  pairs = max(1, n // 2)
  if name == "score_function":
    return _sf_moments(theta, t)
  if name == "score_function+leave_one_out":
    return _loo_moments(theta, t, n)
  if name == "arm":
    m, v = _arm_moments(theta, t)
    return m, n * v / pairs
  if name == "disarm":
    m, v = _disarm_moments(theta, t)
    return m, n * v / pairs
  if name == "rao_blackwell+leave_one_out":
    return exact_gradient(theta, t), 0.0
  if name == "straight_through":
    return _straight_through_moments(theta, t)
  if name == "gumbel_softmax(0.5)":
    return _gumbel_softmax_moments(theta, t, 0.5, False)
  if name == "gumbel_softmax_st(0.5)":
    return _gumbel_softmax_moments(theta, t, 0.5, True)
  if name == "reinmax(1)":
    return _reinmax_moments(theta, t, 1.0)
  if name == "gumbel_rao(0.5)":
    return _gumbel_rao_moments(theta, t, 0.5, 16)
  if name == "arms" and n == 2:  # ARMS with two samples is one DisARM pair
    m, v = _disarm_moments(theta, t)
    return m, n * v
  if name == "unordered_set" and n == 2:  # both configurations of the bit: exact
    return exact_gradient(theta, t), 0.0
  return None


# -- the study -----------------------------------------------------------------


def _study_fn(est, *, replicates, warmup_steps, steps, eval_steps, learning_rate):
  """jit: variance draws over (t, θ) and Adam trajectories over (t, seed)."""

  def draws(key, t, alpha):
    params = jnp.reshape(alpha, (1,))
    f = _cost(t)
    key, warm = jax.random.split(key)
    state = common.warmed_state(est, warm, f, _dist_fn, params, warmup_steps)
    return jax.vmap(lambda k: est.estimate(k, f, _dist_fn, params, state).grad[0])(
      jax.random.split(key, replicates)
    )

  def train(key, t):
    opt = optax.adam(learning_rate)
    f = _cost(t)
    params = jnp.zeros((1,))

    def step(carry, k):
      p, opt_state, est_state = carry
      out = est.estimate(k, f, _dist_fn, p, est_state)
      updates, opt_state = opt.update(out.grad, opt_state, p)
      p = optax.apply_updates(p, updates)
      return (p, opt_state, out.state), p[0]

    _, alphas = jax.lax.scan(
      step, (params, opt.init(params), est.init(params)), jax.random.split(key, steps)
    )
    return jnp.concatenate([jnp.zeros((1,)), alphas])[eval_steps]

  def study(var_keys, train_keys, targets, alphas):
    # var_keys (T, G), train_keys (T, S)
    grads = jax.vmap(lambda ks, t: jax.vmap(lambda k, a: draws(k, t, a))(ks, alphas))(
      var_keys, targets
    )
    trajectories = jax.vmap(lambda ks, t: jax.vmap(lambda k: train(k, t))(ks))(train_keys, targets)
    return grads, trajectories

  return study


#: XLA options for the studies: without LLVM's optimisation passes they compile
#: 3-4x faster on CPU, and compilation dominates these small programs (no
#: timings are reported here).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compile_and_run(fn, *args):
  """``jax.jit(fn)(*args)``, compiled with :data:`FAST_COMPILE`."""
  return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


def _exact_adam(t, steps, learning_rate, eval_steps):
  opt = optax.adam(learning_rate)

  def step(carry, _):
    p, s = carry
    th = jax.nn.sigmoid(p)
    g = th * (1 - th) * (1 - 2 * t)
    u, s = opt.update(g, s, p)
    p = optax.apply_updates(p, u)
    return (p, s), p[0]

  p0 = jnp.zeros((1,))
  _, alphas = jax.lax.scan(step, (p0, opt.init(p0)), None, length=steps)
  return np.asarray(jnp.concatenate([jnp.zeros((1,)), alphas])[eval_steps])


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
  n, r = sizes["num_samples"], sizes["replicates"]
  targets = np.asarray(sizes["targets"], np.float64)
  specs = estimators_table.select(estimators, family=FAMILY)
  thetas = theta_grid(sizes["grid_points"])
  alphas = np.log(thetas / (1 - thetas))
  steps = sizes["steps"]
  eval_steps = np.unique(np.linspace(0, steps, sizes["eval_points"]).round().astype(int))
  base = jax.random.key(seed)

  results = {
    "sizes": sizes,
    "family": FAMILY,
    "estimators": [s.name for s in specs],
    "thetas": thetas,
    "targets": targets,
    "eval_steps": eval_steps,
    "variance_definition": "per-sample variance n·Var(ĝ_n) of the estimate of ∂E[f]/∂α",
    "exact_gradient": [[exact_gradient(th, t) for th in thetas] for t in targets],
    "exact_adam_theta": [
      special.expit(_exact_adam(t, steps, sizes["learning_rate"], eval_steps)).tolist()
      for t in targets
    ],
    "rows": {},
  }
  for spec in common.progress(specs, desc="discrete_toy"):
    est = spec.make(n)
    stateful = bool(jax.tree_util.tree_leaves(est.init(jnp.zeros((1,)))))
    warmup = sizes["warmup_steps"] if stateful else 0
    key = common.name_key(base, spec.name)
    k_var, k_train = jax.random.split(key)
    study = _study_fn(
      est,
      replicates=r,
      warmup_steps=warmup,
      steps=steps,
      eval_steps=eval_steps,
      learning_rate=sizes["learning_rate"],
    )
    var_keys = jax.random.split(k_var, len(targets) * len(thetas)).reshape(
      len(targets), len(thetas)
    )
    train_keys = jax.random.split(k_train, len(targets) * sizes["seeds"]).reshape(
      len(targets), sizes["seeds"]
    )
    grads, trajectories = compile_and_run(
      study,
      var_keys,
      train_keys,
      jnp.asarray(targets, jnp.float32),
      jnp.asarray(alphas, jnp.float32),
    )
    grads = np.asarray(grads, np.float64)  # (T, G, R)
    row = {"kind": spec.kind, "stateful": stateful, "warmup_steps": warmup, "by_target": []}
    for ti, t in enumerate(targets):
      per_t = {
        "variance": [],
        "lower": [],
        "upper": [],
        "exact_variance": [],
        "bias": [],
        "bias_se": [],
        "exact_bias": [],
        "mean": [],
      }
      for gi, th in enumerate(thetas):
        d = grads[ti, gi]
        ci = common.variance_ci(d)
        per_t["variance"].append(n * float(ci["variance"]))
        per_t["lower"].append(n * float(ci["lower"]))
        per_t["upper"].append(n * float(ci["upper"]))
        per_t["mean"].append(float(d.mean()))
        per_t["bias"].append(float(d.mean() - exact_gradient(th, t)))
        per_t["bias_se"].append(float(d.std(ddof=1) / np.sqrt(len(d))))
        ex = exact_moments(spec.name, th, t, n)
        # rounding leaves ~1e-22 where the exact variance is 0 (DisARM at θ = ½)
        per_t["exact_variance"].append(
          None if ex is None else float(ex[1]) if abs(ex[1]) > 1e-18 else 0.0
        )
        per_t["exact_bias"].append(None if ex is None else float(ex[0] - exact_gradient(th, t)))
      traj = special.expit(np.asarray(trajectories[ti], np.float64))  # (S, E) θ
      per_t["theta_curve"] = traj
      per_t["final_theta"] = traj[:, -1]
      per_t["diverged"] = bool(not np.all(np.isfinite(traj)))
      row["by_target"].append(per_t)
    results["rows"][spec.name] = row
  return results


# -- reporting -------------------------------------------------------------------


def _g(v) -> str:
  return common.format_number(v, upper=1e4)


def _closest(thetas, value=0.5) -> int:
  return int(np.argmin(np.abs(np.asarray(thetas) - value)))


def headline(results: dict) -> str:
  s = results["sizes"]
  thetas = np.asarray(results["thetas"])
  mid = _closest(thetas)
  lines = [
    f"One bit, f(b) = (b − t)², n = {s['num_samples']} evaluations of f per estimate; "
    f"per-sample variance of ∂/∂α at θ = {thetas[mid]:.2f} (exact in brackets), "
    f"exact bias, and θ after {s['steps']} Adam steps (lr {s['learning_rate']}, "
    f"mean of {s['seeds']} seeds; the optimum is θ → 0).",
    "",
  ]
  for ti, t in enumerate(results["targets"]):
    ex_final = results["exact_adam_theta"][ti][-1]
    rows = []
    for name, row in results["rows"].items():
      r = row["by_target"][ti]
      rows.append(
        [
          name,
          f"{_g(r['variance'][mid])} ({_g(r['exact_variance'][mid])})",
          _g(r["exact_bias"][mid]),
          _g(float(np.mean(r["final_theta"]))) + (" (diverged)" if r["diverged"] else ""),
        ]
      )
    rows.append(["exact gradient", "0", "0", _g(ex_final)])
    lines += [
      f"**t = {t:g}**",
      "",
      common.markdown_table(["estimator", "variance (exact)", "bias (exact)", "final θ"], rows),
      "",
    ]
  return "\n".join(lines)


def report(results: dict) -> str:
  s = results["sizes"]
  thetas = np.asarray(results["thetas"])
  out = [
    f"Grid θ ∈ {{{', '.join(f'{x:.2f}' for x in thetas)}}}; {s['replicates']} independent "
    f"estimates of ∂E/∂α per θ with n = {s['num_samples']} evaluations of f each "
    f"(stateful estimators warmed up with {s['warmup_steps']} estimates first). "
    "Variance = per-sample variance n·Var(ĝ_n) with a 95% CI; 'exact' = derived for "
    "one bit (see the module docstring), n/a where not derivable. Bias = mean estimate "
    "− exact gradient (± SE); the exact bias is 0 for unbiased estimators and derived "
    f"for the relaxations. Training: optax.adam({s['learning_rate']}) on α from θ = ½ "
    f"for {s['steps']} steps, {s['seeds']} seeds.",
    "",
  ]
  for ti, t in enumerate(results["targets"]):
    out += [f"## t = {t:g} (∂E/∂α = θ(1 − θ)·{1 - 2 * t:.3g})", ""]
    headers = ["estimator"] + [f"θ={th:.2f}" for th in thetas]
    rows_v, rows_b = [], []
    for name, row in results["rows"].items():
      r = row["by_target"][ti]
      rows_v.append(
        [name]
        + [
          f"{_g(v)} [{_g(lo)}, {_g(hi)}] ({_g(e)})"
          for v, lo, hi, e in zip(r["variance"], r["lower"], r["upper"], r["exact_variance"])
        ]
      )
      rows_b.append(
        [name]
        + [
          f"{_g(b)} ± {_g(se)} ({_g(e)})"
          for b, se, e in zip(r["bias"], r["bias_se"], r["exact_bias"])
        ]
      )
    out += [
      "Per-sample variance [95% CI] (exact):",
      "",
      common.markdown_table(headers, rows_v),
      "",
      "Bias ± SE (exact):",
      "",
      common.markdown_table(headers, rows_b),
      "",
      "Final θ per seed:",
      "",
      common.markdown_table(
        ["estimator", "final θ"],
        [
          [name, ", ".join(_g(x) for x in row["by_target"][ti]["final_theta"])]
          for name, row in results["rows"].items()
        ]
        + [["exact gradient", _g(results["exact_adam_theta"][ti][-1])]],
      ),
      "",
    ]
  out.append(
    "With one bit the Rao-Blackwellised estimator sums one configuration and the "
    "complement is the other, so it is exact (zero variance) here; its advantage "
    "shrinks as the space grows (see discrete_vae)."
  )
  return "\n".join(out)


def plot(results: dict, outdir: Path) -> list[Path]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = list(results["rows"])
  styles = {n: style.style(n) for n in names}
  thetas = np.asarray(results["thetas"])
  targets = results["targets"]
  fig, axes = plt.subplots(3, len(targets), figsize=(6.5 * len(targets), 13), squeeze=False)
  steps = np.asarray(results["eval_steps"])
  for ti, t in enumerate(targets):
    ax_v, ax_m, ax_o = axes[0, ti], axes[1, ti], axes[2, ti]
    ax_m.plot(thetas, results["exact_gradient"][ti], color="k", lw=2, label="exact gradient")
    for name in names:
      st = styles[name]
      r = results["rows"][name]["by_target"][ti]
      v = np.asarray(r["variance"], float)
      ok = v > 0
      ax_v.plot(thetas[ok], v[ok], st.marker, color=st.color, ms=4, label=name)
      ex = np.asarray([np.nan if e is None else e for e in r["exact_variance"]], float)
      if np.any(ex > 0):
        ax_v.plot(
          thetas, np.where(ex > 0, ex, np.nan), color=st.color, ls=st.linestyle, lw=1, alpha=0.7
        )
      if results["rows"][name]["kind"] == "relaxed":
        ax_m.errorbar(
          thetas,
          r["mean"],
          yerr=2 * np.asarray(r["bias_se"]),
          ms=3,
          lw=1,
          label=name,
          **st.kwargs(),
        )
      curve = np.asarray(r["theta_curve"], float)
      ax_o.plot(steps, np.mean(curve, axis=0), color=st.color, ls=st.linestyle, lw=1.2, label=name)
    ax_o.plot(
      steps, results["exact_adam_theta"][ti], color="k", ls="--", lw=2, label="exact gradient"
    )
    ax_v.set_yscale("log")
    ax_v.set_title(
      f"t = {t:g}: per-sample variance of ∂/∂α (dots: measured, lines: exact;\n"
      "zero variance is off the log axis: rao_blackwell is exact for one bit)",
      fontsize=9,
    )
    ax_v.set_xlabel("θ")
    ax_v.set_ylabel("per-sample variance  n·Var(ĝ)")
    ax_m.axhline(0, color="0.6", lw=0.8)
    ax_m.set_ylabel("∂E[f]/∂α: exact, or E[ĝ] ± 2 SE")
    ax_m.set_title(
      f"t = {t:g}: mean of the biased estimators vs the exact gradient (±2 SE)", fontsize=9
    )
    ax_m.set_xlabel("θ")
    ax_o.set_yscale("log")
    ax_o.set_title(
      f"t = {t:g}: θ during Adam (mean over seeds); E[f] − min = θ(1 − 2t)", fontsize=9
    )
    ax_o.set_xlabel("Adam step")
    ax_o.set_ylabel("θ (mean over seeds)")
    for a in (ax_v, ax_m, ax_o):
      a.grid(True, alpha=0.3)
  fig.tight_layout()
  # One legend for all panels, outside them: dots/markers are measurements, lines are
  # exact values or training curves in the estimator's line style.
  handles = [plt.Line2D([], [], label=n, lw=1.2, **styles[n].kwargs()) for n in names]
  handles.append(plt.Line2D([], [], color="k", ls="--", lw=2, label="exact gradient"))
  style.legend_outside(fig, handles)
  path = common.save_figure(fig, Path(outdir) / "discrete_toy.png", dpi=100, bbox_inches="tight")
  plt.close(fig)
  return [path]


BENCHMARK = common.Benchmark(
  name="discrete_toy",
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
