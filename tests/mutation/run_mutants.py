"""Mutation testing of scoregrad's estimators, distributions, selection and diagnostics (issues 15, 29).

Each entry of ``MUTANTS`` is a plausible one-line bug: a file under
``scoregrad/``, an exact substring of it (which must occur exactly once), its
replacement, a description, and the tests that should notice (test files and
a ``-k`` expression). For every mutant the repository is copied to a fresh
temporary directory, the substring replaced there, and the covering tests run
against that copy with ``python -m pytest -x -q`` (one process; ``--workers N``
adds pytest-xdist's ``-n N``). The working tree is
never modified. The script prints one row per mutant (killed or not, and the
first failing test), then the kill rate and the survivors, and exits 0; it
exits 2 without running anything if a substring is missing or ambiguous, or
a selection collects no tests.

Not collected by pytest (its name has no ``test_`` prefix). Run it from the
repository root:

    python tests/mutation/run_mutants.py                  # all mutants, ~25 min on one core
    python tests/mutation/run_mutants.py --list           # the mutants, nothing run
    python tests/mutation/run_mutants.py --only loo-n     # some of them, by name
    python tests/mutation/run_mutants.py --only $(python tests/mutation/run_mutants.py --list | grep -o '^sel-[^ ]*')
    python tests/mutation/run_mutants.py --baseline       # first check the selections pass unmutated

The covering tests are narrow on purpose (each mutant's run takes seconds);
``--baseline`` runs every selection once on the unmutated copy, so that a
"killed" is not a test that fails anyway.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple, Optional

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# What a copy of the repository needs to run the tests (benchmarks/ is imported
# by some tests; pyproject.toml holds the pytest configuration).
COPIED = ("scoregrad", "tests", "benchmarks", "notebooks", "pyproject.toml", "README.md")
IGNORED = shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.egg-info", "results")
TIMEOUT_S = 600  # per mutant; a mutant that hangs the tests counts as killed


class Mutant(NamedTuple):
  """One plausible bug.

  Attributes:
    name: short unique id (for ``--only`` and the table).
    path: the file, relative to the repository root.
    original: an exact substring of the file; must occur exactly once.
    replacement: what replaces it.
    description: the bug, in words.
    tests: pytest arguments selecting files (or node ids) that cover it.
    k: a ``-k`` expression narrowing ``tests`` (or None).
  """

  name: str
  path: str
  original: str
  replacement: str
  description: str
  tests: tuple[str, ...]
  k: Optional[str] = None


SF = "scoregrad/_src/score.py"
SUR = "scoregrad/_src/surrogates.py"
BL = "scoregrad/_src/baselines.py"
CV = "scoregrad/_src/control_variates.py"
VR = "scoregrad/_src/variance_reduction.py"
PW = "scoregrad/_src/reparameterization.py"
SMP = "scoregrad/_src/sampling.py"
MV = "scoregrad/_src/weak_derivative.py"
ANTI = "scoregrad/_src/discrete/antithetic.py"
ENUM = "scoregrad/_src/discrete/enumeration.py"
MULTI = "scoregrad/_src/discrete/multi_sample.py"
REBAR = "scoregrad/_src/discrete/rebar_relax.py"
RELAXED = "scoregrad/_src/discrete/relaxations.py"
RB = "scoregrad/_src/discrete/sum_and_sample.py"
D = "scoregrad/dists/"
SEL = "scoregrad/_src/selection.py"
DIAG = "scoregrad/_src/diagnostics.py"

MUTANTS: tuple[Mutant, ...] = (
  # -- score function, DiCE, baselines -------------------------------------------------
  Mutant(
    "sf-percoord-baseline-sign",
    SF,
    "lambda s, bk: (expand_to(utilities, s) - bk) * s, scores, b)",
    "lambda s, bk: (expand_to(utilities, s) + bk) * s, scores, b)",
    "per-coordinate baseline added instead of subtracted (still unbiased)",
    ("tests/test_pins.py", "tests/test_score_function.py"),
    "optimal_baseline or (baselines_unbiased and optimal)",
  ),
  Mutant(
    "sf-per-sample-no-baseline",
    SF,
    "per = jax.vmap(jax.grad(row), in_axes=(None, 0, 0))(params, samples, advantages)",
    "per = jax.vmap(jax.grad(row), in_axes=(None, 0, 0))(params, samples, costs)",
    "per_sample=True path ignores the baseline (rows and grad lose it)",
    ("tests/test_score_function.py", "tests/test_benchmarks.py"),
    "leave_one_out or baselines_unbiased",
  ),
  Mutant(
    "dice-jvp-no-box",
    SUR,
    "return jnp.exp(tau - jax.lax.stop_gradient(tau))",
    "return 1.0 + tau - jax.lax.stop_gradient(tau)",
    "magic box derivative drops the box factor (first derivative unchanged)",
    ("tests/test_dice.py",),
    "magic_box or hessian",
  ),
  Mutant(
    "dice-baseline-sign",
    SUR,
    "terms = terms + (1.0 - box) * jax.lax.stop_gradient(baseline_values)",
    "terms = terms - (1.0 - box) * jax.lax.stop_gradient(baseline_values)",
    "DiCE baseline term with the wrong sign: (f + b) ∇log p (still unbiased)",
    ("tests/test_score_function.py", "tests/test_benchmarks.py"),
    "(baselines_unbiased and constant) or leave_one_out_exact_variance",
  ),
  Mutant(
    "loo-n",
    BL,
    "return (jnp.sum(costs, axis=0) - costs) / (n - 1)  # per step for (n, T)",
    "return (jnp.sum(costs, axis=0) - costs) / n  # per step for (n, T)",
    "leave-one-out mean divided by n instead of n − 1 (still unbiased)",
    ("tests/test_score_function.py", "tests/test_benchmarks.py", "tests/test_discrete_unbiased.py"),
    "leave_one_out",
  ),
  Mutant(
    "loo-includes-self",
    BL,
    "return (jnp.sum(costs, axis=0) - costs) / (n - 1)  # per step for (n, T)",
    "return jnp.broadcast_to(jnp.mean(costs, axis=0), costs.shape)",
    "leave-one-out baseline uses the mean of all costs, its own included",
    ("tests/test_score_function.py",),
    "baselines_unbiased and leave_one_out",
  ),
  Mutant(
    "moving-average-debias-off-by-one",
    BL,
    "correction = 1.0 - decay ** state.count.astype(costs.dtype)",
    "correction = 1.0 - decay ** (state.count + 1).astype(costs.dtype)",
    "zero-debias correction uses t + 1 updates",
    ("tests/test_score_function.py", "tests/test_benchmarks.py"),
    "moving_average",
  ),
  Mutant(
    "moving-average-decay-swapped",
    BL,
    "new_value = decay * state.value + (1.0 - decay) * jnp.where(finite, mean, 0.0)",
    "new_value = (1.0 - decay) * state.value + decay * jnp.where(finite, mean, 0.0)",
    "moving average weights old and new swapped",
    ("tests/test_score_function.py", "tests/test_benchmarks.py"),
    "moving_average",
  ),
  Mutant(
    "optimal-not-leave-one-out",
    BL,
    "num = jnp.sum(fs2, axis=0) - fs2",
    "num = jnp.sum(fs2, axis=0)",
    "optimal baseline's numerator includes sample i (biased)",
    ("tests/test_score_function.py", "tests/test_pins.py"),
    "(baselines_unbiased and optimal) or optimal_baseline_exact",
  ),
  Mutant(
    "learned-baseline-step-sign",
    BL,
    "return LearnedState(value=state.value + updates, opt_state=opt_state)",
    "return LearnedState(value=state.value - updates, opt_state=opt_state)",
    "learned baseline steps up the regression loss",
    ("tests/test_score_function.py",),
    "learned_baseline",
  ),
  # -- control variates ---------------------------------------------------------------
  Mutant(
    "delta-value-no-half",
    CV,
    "return f0 + g @ z + 0.5 * z @ (h @ z)",
    "return f0 + g @ z + z @ (h @ z)",
    "delta-method value loses the ½ of the quadratic term",
    ("tests/test_control_variates.py",),
    "zero_variance and pathwise",
  ),
  Mutant(
    "delta-trace-diagonal-only",
    CV,
    "trace = jnp.sum(h * covariance)",
    "trace = jnp.sum(jnp.diag(h) * jnp.diag(covariance))",
    "tr(HΣ) from the diagonals only (wrong for correlated Gaussians)",
    ("tests/test_control_variates.py", "tests/test_pins.py"),
    "multivariate_normal or MultivariateNormal",
  ),
  Mutant(
    "cv-coefficient-includes-self",
    CV,
    "sab = jnp.sum(a2 * b2, 0) - a2 * b2",
    "sab = jnp.sum(a2 * b2, 0)",
    "leave-one-out β's covariance includes sample i (biased)",
    ("tests/test_control_variates.py",),
    "leave_one_out_coefficients",
  ),
  Mutant(
    "cv-fixed-beta-sign",
    VR,
    "grad = jax.tree_util.tree_map(lambda g, e: g + beta * e, out.grad, expected_grad)",
    "grad = jax.tree_util.tree_map(lambda g, e: g - beta * e, out.grad, expected_grad)",
    "β ∇E[h] subtracted instead of added back",
    ("tests/test_control_variates.py",),
    "zero_variance_for_quadratic",
  ),
  Mutant(
    "cv-direct-term-sign",
    VR,
    "lambda g, d, e: g + beta * (e - d),",
    "lambda g, d, e: g + beta * (d - e),",
    "θ-dependent h: its pathwise term with the wrong sign",
    ("tests/test_control_variates.py",),
    "parameter_dependent",
  ),
  # -- pathwise and sampling ----------------------------------------------------------
  Mutant(
    "pathwise-stop-gradient",
    PW,
    "draw = lambda p, k: call_dist_fn(dist_fn, p).sample(k)",
    "draw = lambda p, k: jax.lax.stop_gradient(call_dist_fn(dist_fn, p).sample(k))",
    "pathwise samples detached from θ (gradient zero)",
    ("tests/test_pathwise.py", "tests/test_pins.py"),
    "gaussian_unbiased or sgd_steps",
  ),
  Mutant(
    "pathwise-key-reused",
    PW,
    "lambda k: jax.random.split(k, num_samples), sharding, num_samples",
    "lambda k: jnp.broadcast_to(k, (num_samples,)), sharding, num_samples",
    "every sample drawn with the same key (unbiased, no averaging)",
    ("tests/test_pathwise.py",),
    "gaussian_unbiased",
  ),
  Mutant(
    "antithetic-not-negated",
    SMP,
    "return jnp.concatenate([half, -half], axis=0)",
    "return jnp.concatenate([half, half], axis=0)",
    "antithetic noise pairs ε with ε, not −ε (unbiased, no variance reduction)",
    ("tests/test_sampling.py",),
    "antithetic",
  ),
  Mutant(
    "qmc-no-wrap",
    SMP,
    "u = u - jnp.floor(u)",
    "u = u",
    "shifted lattice not wrapped modulo 1 (clipped instead: biased)",
    ("tests/test_sampling.py", "tests/test_pins.py"),
    "qmc",
  ),
  # -- measure-valued -----------------------------------------------------------------
  Mutant(
    "mv-sum-not-mean",
    MV,
    "mean_ct = tuple(jnp.mean(ct, axis=0) for ct in cotangents)",
    "mean_ct = tuple(jnp.sum(ct, axis=0) for ct in cotangents)",
    "measure-valued gradient sums the samples instead of averaging",
    ("tests/test_measure_valued.py",),
    "grad_is_mean_of_per_sample or normal_unbiased",
  ),
  Mutant(
    "normal-mv-loc-constant",
    D + "normal.py",
    "out[0] = diff / (scale * math.sqrt(2 * math.pi))[None, :, None]",
    "out[0] = diff / (scale * math.sqrt(math.pi))[None, :, None]",
    "Normal loc weak derivative: c = 1/(σ√π) instead of 1/(σ√(2π))",
    ("tests/test_measure_valued.py",),
    "normal_unbiased",
  ),
  Mutant(
    "normal-mv-scale-coupling",
    D + "normal.py",
    "m_neg = jax.random.uniform(k_scale_neg, (n, dim), dtype) * m_pos",
    "m_neg = jax.random.uniform(k_scale_neg, (n, dim), dtype)",
    "coupled scale: p⁻ drawn as U instead of U·M (not N(0, 1))",
    ("tests/test_measure_valued.py",),
    "normal_unbiased and not uncoupled",
  ),
  Mutant(
    "laplace-mv-loc-constant",
    D + "laplace.py",
    "out[0] = diff / (2 * scale)[None, :, None]",
    "out[0] = diff / scale[None, :, None]",
    "Laplace loc weak derivative: c = 1/b instead of 1/(2b)",
    ("tests/test_laplace.py",),
    "measure_valued",
  ),
  Mutant(
    "laplace-mv-scale-inward",
    D + "laplace.py",
    "x_pos = base + jnp.where(centred >= 0, extra, -extra)",
    "x_pos = base + jnp.where(centred >= 0, -extra, extra)",
    "coupled Laplace scale pushes the sample towards μ, not away",
    ("tests/test_laplace.py",),
    "measure_valued",
  ),
  Mutant(
    "exponential-mv-rate",
    D + "exponential.py",
    "return [diff / rate[None, :, None]]",
    "return [diff * rate[None, :, None]]",
    "Exponential weak derivative: c = λ instead of 1/λ",
    ("tests/test_measure_valued.py",),
    "exponential_and_gamma",
  ),
  Mutant(
    "gamma-mv-uncoupled-shape",
    D + "gamma.py",
    "jnp.broadcast_to(conc + 1, (n, dim))",
    "jnp.broadcast_to(conc, (n, dim))",
    "uncoupled Gamma rate: p⁻ = Gamma(α, β) instead of Gamma(α + 1, β)",
    ("tests/test_measure_valued.py",),
    "exponential_and_gamma and uncoupled",
  ),
  Mutant(
    "poisson-mv-sign",
    D + "poisson.py",
    "return [replace_eval(fn, base, base + 1, event_shape) - fbase[:, None, :]]",
    "return [fbase[:, None, :] - replace_eval(fn, base, base + 1, event_shape)]",
    "coupled Poisson weak derivative with p⁺ and p⁻ swapped",
    ("tests/test_measure_valued.py",),
    "poisson",
  ),
  Mutant(
    "categorical-mv-weight",
    D + "categorical.py",
    "return [(pos - neg) * probs[None, :, :, None]]",
    "return [(pos - neg) * (probs * (1 - probs))[None, :, :, None]]",
    "Categorical weak derivative weighted by π(1 − π) (Bernoulli's) instead of π",
    ("tests/test_measure_valued.py",),
    "categorical",
  ),
  # -- distributions ------------------------------------------------------------------
  Mutant(
    "normal-log-prob-constant",
    D + "normal.py",
    "- 0.5 * math.log(2 * math.pi)",
    "- math.log(2 * math.pi)",
    "Normal log_prob normalising constant doubled (scores unchanged)",
    ("tests/test_dists.py",),
    "log_prob_against_scipy",
  ),
  Mutant(
    "normal-log-prob-no-log-scale",
    D + "normal.py",
    "lp = -0.5 * z**2 - jnp.log(self.scale) - 0.5",
    "lp = -0.5 * z**2 - 0.5",
    "Normal log_prob drops −log σ (score in σ wrong)",
    ("tests/test_score_function.py", "tests/test_pins.py"),
    "(unbiased_with_exact and gaussian_cos) or sgd_steps",
  ),
  Mutant(
    "mvn-sample-transposed",
    D + "multivariate_normal.py",
    "    eps = jax.random.normal(key, shape, dtype=self.dtype)\n"
    "    return self.loc + eps @ self.scale_tril.T",
    "    eps = jax.random.normal(key, shape, dtype=self.dtype)\n"
    "    return self.loc + eps @ self.scale_tril",
    "MVN samples use Lᵀ instead of L (covariance LᵀL)",
    ("tests/test_pathwise.py", "tests/test_dists.py"),
    "multivariate or sample_mean",
  ),
  Mutant(
    "bernoulli-log-prob-softplus-sign",
    D + "bernoulli.py",
    "x == 1, 0.0, (1 - x) * jax.nn.log_sigmoid(-l)",
    "x == 1, 0.0, (1 - x) * jax.nn.log_sigmoid(l)",
    "Bernoulli log_prob: (1 − x) log σ(ℓ) instead of log σ(−ℓ)",
    ("tests/test_score_function.py",),
    "unbiased_with_exact and bernoulli",
  ),
  Mutant(
    "categorical-log-prob-unnormalised",
    D + "categorical.py",
    "logp = jax.nn.log_softmax(self.logits, axis=-1)",
    "logp = self.logits",
    "Categorical log_prob uses raw logits (not log_softmax)",
    ("tests/test_score_function.py",),
    "unbiased_with_exact and categorical",
  ),
  Mutant(
    "poisson-log-prob-gammaln",
    D + "poisson.py",
    "jax.scipy.special.gammaln(x + 1)",
    "jax.scipy.special.gammaln(x)",
    "Poisson log_prob uses log Γ(x) instead of log x! (scores unchanged)",
    ("tests/test_dists.py",),
    "log_prob_against_scipy",
  ),
  # -- discrete estimators ------------------------------------------------------------
  Mutant(
    "arm-sign",
    ANTI,
    "expand_to(diff, pr.u) * (pr.u - 0.5) * pr.reached",
    "expand_to(diff, pr.u) * (0.5 - pr.u) * pr.reached",
    "ARM weight (½ − u) instead of (u − ½)",
    ("tests/test_discrete_unbiased.py",),
    "antithetic_unbiased and not disarm",
  ),
  Mutant(
    "disarm-no-abs",
    ANTI,
    "return 0.5 * expand_to(diff, b) * sign * differ * jax.nn.sigmoid(jnp.abs(eta))",
    "return 0.5 * expand_to(diff, b) * sign * differ * jax.nn.sigmoid(eta)",
    "DisARM weight σ(α) instead of σ(|α|) (right for α ≥ 0 only)",
    ("tests/test_discrete_unbiased.py",),
    "antithetic_unbiased and disarm",
  ),
  Mutant(
    "rebar-control-sign",
    REBAR,
    "(b - family.probs_of(logits)) + dc_z - dc_zt",
    "(b - family.probs_of(logits)) + dc_z + dc_zt",
    "REBAR adds ∇c(z̃) instead of subtracting it",
    ("tests/test_discrete_rebar.py", "tests/test_pins.py"),
    "rebar_one_bit_exact or rebar_relax_unbiased",
  ),
  Mutant(
    "bernoulli-conditional-noise",
    D + "bernoulli.py",
    "      jax.nn.softplus(t + jax.nn.softplus(logits)),",
    "      jax.nn.softplus(t + jax.nn.softplus(-logits)),",
    "z̃ | b = 1 drawn with softplus(−ℓ) (the b = 0 branch's)",
    ("tests/test_discrete_rebar.py", "tests/test_pins.py"),
    "rebar_one_bit_exact or rebar_relax_unbiased",
  ),
  Mutant(
    "categorical-gumbel-sign",
    D + "categorical.py",
    "return logits - jnp.log(-jnp.log(u))",
    "return logits + jnp.log(-jnp.log(u))",
    "Categorical perturbation with −Gumbel noise (argmax not ~ softmax)",
    ("tests/test_discrete_rebar.py", "tests/test_discrete_relaxed.py"),
    "categorical",
  ),
  Mutant(
    "gumbel-temperature-ignored",
    RELAXED,
    "y = family.soft(z, temperature)",
    "y = family.soft(z, 1.0)",
    "Gumbel-softmax relaxes at temperature 1 whatever λ is",
    ("tests/test_discrete_relaxed.py",),
    "gumbel_softmax_bernoulli",
  ),
  Mutant(
    "exact-mean-not-sum",
    ENUM,
    "return jnp.sum(probs * jnp.where(skip, 0, fixed_costs)), (probs, skip)",
    "return jnp.mean(probs * jnp.where(skip, 0, fixed_costs)), (probs, skip)",
    "exact gradient averages over configurations instead of summing",
    ("tests/test_discrete_unbiased.py",),
    "exact_matches_closed_form",
  ),
  Mutant(
    "rb-rest-is-p-of-c",
    RB,
    "rest = jnp.clip(-jnp.expm1(jax.nn.logsumexp(joint)), 0.0, 1.0)",
    "rest = jnp.clip(jnp.exp(jax.nn.logsumexp(joint)), 0.0, 1.0)",
    "sampled part weighted by p(C) instead of 1 − p(C)",
    ("tests/test_discrete_unbiased.py",),
    "rao_blackwell_unbiased",
  ),
  Mutant(
    "rb-summed-part-no-baseline",
    RB,
    "b_summed = jnp.mean(b)",
    "b_summed = jnp.zeros((), dtype)",
    "summed part ignores the baseline used by the sampled part",
    ("tests/test_discrete_unbiased.py",),
    "rao_blackwell_with_leave_one_out",
  ),
  Mutant(
    "rb-sample-not-outside",
    RB,
    "w = jnp.exp(lp) * jnp.clip(1.0 - covered, 0.0, 1.0)",
    "w = jnp.exp(lp)",
    "complement draws from p itself, not p(· | x ∉ C)",
    ("tests/test_discrete_unbiased.py",),
    "rao_blackwell_unbiased",
  ),
  Mutant(
    "vimco-others-mean-over-k",
    MULTI,
    "others = (jnp.sum(log_weights) - log_weights) / (k - 1)",
    "others = (jnp.sum(log_weights) - log_weights) / k",
    "VIMCO's f̄₋ₖ divides by K, not K − 1 (still unbiased)",
    ("tests/test_discrete_unbiased.py",),
    "vimco",
  ),
  # -- selection (issue 29: every reported number; issue 21: the checks) -------------
  Mutant(
    "sel-trace-over-r",
    SEL,
    "variance = float(q.sum() / (r_count - 1))",
    "variance = float(q.sum() / r_count)",
    "select's tr Cov divided by R instead of R − 1",
    ("tests/test_selection.py",),
    "hand_computation",
  ),
  Mutant(
    "sel-seconds-over-r",
    SEL,
    "t = np.asarray(times) / per_batch",
    "t = np.asarray(times) / num_pilot",
    "seconds per estimate off by a factor of `repeats` (batch time / R)",
    ("tests/test_selection.py",),
    "hand_computation",
  ),
  Mutant(
    "sel-variance-se-no-sqrt-r",
    SEL,
    "q.std(ddof=1) / math.sqrt(r_count) * r_count / (r_count - 1)",
    "q.std(ddof=1) * r_count / (r_count - 1)",
    "variance_se missing its 1/√R",
    ("tests/test_selection.py",),
    "hand_computation",
  ),
  Mutant(
    "sel-mean-not-median",
    SEL,
    "seconds = float(np.median(t))",
    "seconds = float(np.mean(t))",
    "seconds per estimate: the mean batch time, not the median",
    ("tests/test_selection.py",),
    "hand_computation",
  ),
  Mutant(
    "sel-se-ddof0",
    SEL,
    "se = g.std(axis=0, ddof=1) / math.sqrt(r_count)",
    "se = g.std(axis=0) / math.sqrt(r_count)",
    "per-coordinate standard error (bias z, checks) with ddof 0",
    ("tests/test_selection.py",),
    "hand_computation",
  ),
  Mutant(
    "sel-floor-no-r",
    SEL,
    "floor = math.sqrt(variance / r_count)",
    "floor = math.sqrt(variance)",
    "bias noise floor √(tr Cov) instead of √(tr Cov / R)",
    ("tests/test_selection.py",),
    "hand_computation",
  ),
  Mutant(
    "sel-relative-work-inverted",
    SEL,
    "return _fmt(work / best_work)",
    "return _fmt(best_work / work)",
    "relative work column best/work instead of work/best",
    ("tests/test_selection.py",),
    "hand_computation",
  ),
  Mutant(
    "sel-threshold-not-bonferroni-over-candidates",
    SEL,
    "z_thr = z_threshold(false_flag_rate, max(1, len(finite) * num_coords))",
    "z_thr = z_threshold(false_flag_rate, max(1, num_coords))",
    "bias threshold corrected over coordinates only, not candidates × coordinates",
    ("tests/test_selection.py",),
    "hand_computation",
  ),
  Mutant(
    "sel-rank-ignores-flag",
    SEL,
    "return (bool(r.flag), r.work if np.isfinite(r.work) else math.inf)",
    "return (False, r.work if np.isfinite(r.work) else math.inf)",
    "flagged candidates ranked by work with the others (a biased one can be best)",
    ("tests/test_selection.py",),
    "digital or flags_broken",
  ),
  Mutant(
    "sel-nonfinite-value-only",
    SEL,
    "nonfinite = int(np.sum(~np.isfinite(v) | ~np.all(np.isfinite(g), axis=1)))",
    "nonfinite = int(np.sum(~np.isfinite(v)))",
    "non-finite check looks at the values only, not the gradients",
    ("tests/test_selection.py",),
    "non_finite",
  ),
  Mutant(
    "sel-pair-scale-max",
    SEL,
    "scale = np.sqrt(a.se**2 + b.se**2)",
    "scale = np.maximum(a.se, b.se)",
    "pairwise test scaled by the larger SE instead of √(se_a² + se_b²)",
    ("tests/test_selection.py",),
    "cross_check_numbers",
  ),
  Mutant(
    "sel-blame-inverted",
    SEL,
    "(bad, good) = (na, nb) if da else (nb, na)",
    "(bad, good) = (nb, na) if da else (na, nb)",
    "a disagreement blamed on the candidate that does NOT differentiate f",
    ("tests/test_selection.py",),
    "digital or relaxations_without",
  ),
  Mutant(
    "sel-probe-constant-tangent",
    SEL,
    "y_dot = y_dot + jnp.asarray(jnp.nan, y.dtype) * t.astype(y.dtype)",
    "y_dot = jnp.full_like(y, jnp.nan)",
    "the differentiates-f probe's NaN tangent is not linear in ẋ (reverse mode drops it)",
    ("tests/test_selection.py",),
    "digital or relaxations_without",
  ),
  # -- diagnostics ----------------------------------------------------------------------
  Mutant(
    "diag-variance-ddof0",
    DIAG,
    "lambda g: jnp.var(g, axis=0, ddof=1), per_sample)",
    "lambda g: jnp.var(g, axis=0), per_sample)",
    "diagnostics.variance from rows with ddof 0",
    ("tests/test_diagnostics.py", "tests/test_pins.py"),
    "diagnostic",
  ),
  Mutant(
    "diag-moments-count",
    DIAG,
    "lambda m2: m2 / (per_sample.count - 1).astype(m2.dtype), per_sample.m2",
    "lambda m2: m2 / per_sample.count.astype(m2.dtype), per_sample.m2",
    "diagnostics.variance from moments: m2 / n instead of m2 / (n − 1)",
    ("tests/test_diagnostics.py",),
    None,
  ),
  Mutant(
    "diag-se-no-n",
    DIAG,
    "lambda v: jnp.sqrt(v / jnp.asarray(n, v.dtype)), variance(per_sample)",
    "lambda v: jnp.sqrt(v), variance(per_sample)",
    "standard_error is the standard deviation (no 1/√n)",
    ("tests/test_diagnostics.py", "tests/test_pins.py"),
    "diagnostic",
  ),
  Mutant(
    "diag-snr-ddof0",
    DIAG,
    "jnp.abs(jnp.mean(g, axis=0)) / jnp.std(g, axis=0, ddof=1)",
    "jnp.abs(jnp.mean(g, axis=0)) / jnp.std(g, axis=0)",
    "snr from rows with ddof 0",
    ("tests/test_diagnostics.py", "tests/test_pins.py"),
    "diagnostic",
  ),
  Mutant(
    "diag-snr-moments-variance",
    DIAG,
    "lambda m, v: jnp.abs(m) / jnp.sqrt(v), per_sample.mean, variance(per_sample)",
    "lambda m, v: jnp.abs(m) / v, per_sample.mean, variance(per_sample)",
    "snr from moments divides by the variance, not the standard deviation",
    ("tests/test_diagnostics.py",),
    None,
  ),
  Mutant(
    "diag-bias-sign",
    DIAG,
    "lambda m, e: m - e, _moments(per_sample).mean, exact",
    "lambda m, e: e - m, _moments(per_sample).mean, exact",
    "bias reported as exact − mean",
    ("tests/test_diagnostics.py", "tests/test_pins.py"),
    "diagnostic",
  ),
  Mutant(
    "diag-total-variance-mean",
    DIAG,
    "sum(jnp.sum(v) for v in jax.tree_util.tree_leaves(variance(per_sample)))",
    "sum(jnp.mean(v) for v in jax.tree_util.tree_leaves(variance(per_sample)))",
    "total_variance averages the coordinates instead of summing them",
    ("tests/test_diagnostics.py", "tests/test_pins.py"),
    "diagnostic",
  ),
  # -- issue 29's survivors outside select (tests in tests/test_pins.py) ----------------
  Mutant(
    "disarm-value-first-points",
    ANTI,
    "pair_values = 0.5 * (f_b + f_tilde)",
    "pair_values = f_b",
    "DisARM's value: mean f over the first point of each pair only",
    ("tests/test_pins.py",),
    "disarm_value",
  ),
  Mutant(
    "sequence-baseline-step-cost",
    SUR,
    "baseline, baseline_state, cost_to_go, n, array_shapes=((), (n,), (n, num_steps))",
    "baseline, baseline_state, jax.lax.stop_gradient(costs), n, "
    "array_shapes=((), (n,), (n, num_steps))",
    "sequence per-step baselines fitted to the step cost c_t, not the cost-to-go G_t",
    ("tests/test_pins.py",),
    "per_step",
  ),
)


def _fail(message: str) -> None:
  """Exits with status 2 (a broken mutant list or selection, not a survivor)."""
  print(f"run_mutants.py: {message}", file=sys.stderr)
  raise SystemExit(2)


def check_mutants(mutants) -> None:
  """Exits 2 unless names are unique and each original occurs exactly once."""
  problems = []
  names = [m.name for m in mutants]
  for name in sorted({n for n in names if names.count(n) > 1}):
    problems.append(f"duplicate mutant name {name!r}")
  for m in mutants:
    path = REPO_ROOT / m.path
    if not path.is_file():
      problems.append(f"{m.name}: no file {m.path}")
      continue
    count = path.read_text().count(m.original)
    if count != 1:
      problems.append(f"{m.name}: {m.original!r} occurs {count} times in {m.path} (need 1)")
    if m.original == m.replacement:
      problems.append(f"{m.name}: replacement equals the original")
    for t in m.tests:
      if not (REPO_ROOT / t.split("::")[0]).exists():
        problems.append(f"{m.name}: no test file {t}")
  if problems:
    _fail("bad mutant list:\n  " + "\n  ".join(problems))


def copy_repo(dest: pathlib.Path) -> None:
  for name in COPIED:
    src = REPO_ROOT / name
    if src.is_dir():
      shutil.copytree(src, dest / name, ignore=IGNORED)
    elif src.exists():
      shutil.copy2(src, dest / name)


def environment(root: pathlib.Path) -> dict:
  """Imports resolve to ``root``'s copy first (PYTHONPATH), on the CPU."""
  env = dict(os.environ)
  env["PYTHONPATH"] = str(root)
  env.setdefault("JAX_PLATFORMS", "cpu")
  env["PYTHONDONTWRITEBYTECODE"] = "1"
  return env


def check_imports_resolve_to_copy() -> None:
  with tempfile.TemporaryDirectory(prefix="scoregrad-mutant-") as tmp:
    root = pathlib.Path(tmp)
    copy_repo(root)
    out = subprocess.run(
      [sys.executable, "-c", "import scoregrad; print(scoregrad.__file__)"],
      cwd=root,
      env=environment(root),
      capture_output=True,
      text=True,
      check=True,
    )
    where = pathlib.Path(out.stdout.strip()).resolve()
    if root.resolve() not in where.parents:
      _fail(
        f"`import scoregrad` in the copy resolves to {where}, "
        f"not into {root}; mutants would not be tested."
      )


class Result(NamedTuple):
  killed: bool
  killer: str
  seconds: float
  detail: str


WORKERS = 0  # pytest-xdist workers per run (0: one process); set by --workers


def run_tests(root: pathlib.Path, tests, k: Optional[str]) -> Result:
  workers = ["-n", str(WORKERS)] if WORKERS else []
  cmd = [sys.executable, "-m", "pytest", "-x", "-q", *workers, "-p", "no:cacheprovider", *tests]
  if k:
    cmd += ["-k", k]
  start = time.perf_counter()
  try:
    proc = subprocess.run(
      cmd, cwd=root, env=environment(root), capture_output=True, text=True, timeout=TIMEOUT_S
    )
  except subprocess.TimeoutExpired:
    return Result(True, f"(timeout after {TIMEOUT_S} s)", time.perf_counter() - start, "")
  seconds = time.perf_counter() - start
  output = proc.stdout + proc.stderr
  summary = output.strip().splitlines()[-1] if output.strip() else ""
  if proc.returncode == 5:
    _fail(f"`{' '.join(cmd[3:])}` collected no tests:\n{output[-2000:]}")
  if proc.returncode == 0:
    return Result(False, "-", seconds, summary)
  # With -x under xdist pytest exits 2 (interrupted) after the first failure.
  failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
  if failed:
    return Result(True, failed[0], seconds, summary)
  # Collection or internal errors (e.g. the mutant broke an import) also kill it.
  return Result(True, f"(pytest exit {proc.returncode})", seconds, output[-1500:])


def run_baseline(mutants) -> None:
  """Every distinct selection passes on the unmutated copy (else exits 2)."""
  selections = list(dict.fromkeys((m.tests, m.k) for m in mutants))
  with tempfile.TemporaryDirectory(prefix="scoregrad-mutant-") as tmp:
    root = pathlib.Path(tmp)
    copy_repo(root)
    for tests, k in selections:
      result = run_tests(root, tests, k)
      print(
        f"baseline {' '.join(tests)} -k {k!r}: {result.detail} ({result.seconds:.0f} s)", flush=True
      )
      if result.killed:
        _fail(f"the unmutated selection fails ({result.killer}):\n{result.detail}")


def run_mutant(m: Mutant) -> Result:
  with tempfile.TemporaryDirectory(prefix="scoregrad-mutant-") as tmp:
    root = pathlib.Path(tmp)
    copy_repo(root)
    path = root / m.path
    text = path.read_text()
    assert text.count(m.original) == 1, m.name
    path.write_text(text.replace(m.original, m.replacement))
    return run_tests(root, m.tests, m.k)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
  parser.add_argument("--list", action="store_true", help="list the mutants and exit")
  parser.add_argument(
    "--baseline", action="store_true", help="first run every selection on the unmutated copy"
  )
  parser.add_argument(
    "--workers",
    type=int,
    default=0,
    metavar="N",
    help="run each selection with pytest-xdist's -n N (default 0: one process)",
  )
  args = parser.parse_args(argv)
  global WORKERS
  WORKERS = args.workers

  check_mutants(MUTANTS)
  mutants = MUTANTS
  if args.only:
    unknown = sorted(set(args.only) - {m.name for m in MUTANTS})
    if unknown:
      _fail(f"unknown mutant(s) {unknown}; see --list")
    mutants = tuple(m for m in MUTANTS if m.name in args.only)
  if args.list:
    for m in mutants:
      print(f"{m.name:36s} {m.path:42s} {m.description}")
    return 0
  check_imports_resolve_to_copy()
  if args.baseline:
    run_baseline(mutants)

  rows = []
  start = time.perf_counter()
  for i, m in enumerate(mutants, 1):
    result = run_mutant(m)
    rows.append((m, result))
    print(
      f"[{i:2d}/{len(mutants)}] {m.name:36s} {'killed' if result.killed else 'SURVIVED':8s} "
      f"{result.killer} ({result.seconds:.0f} s)",
      flush=True,
    )

  width = max(len(m.name) for m, _ in rows)
  print(f"\n{'mutant':{width}s}  killed  killing test")
  print(f"{'-' * width}  ------  ------------")
  for m, r in rows:
    print(f"{m.name:{width}s}  {'yes' if r.killed else 'no':6s}  {r.killer}")
  killed = sum(r.killed for _, r in rows)
  print(
    f"\nkill rate: {killed}/{len(rows)} = {killed / len(rows):.0%} "
    f"({time.perf_counter() - start:.0f} s)"
  )
  survivors = [(m, r) for m, r in rows if not r.killed]
  if survivors:
    print("survivors:")
    for m, r in survivors:
      print(
        f"  {m.name} ({m.path}): {m.description}; ran {' '.join(m.tests)} -k {m.k!r}: {r.detail}"
      )
  return 0


if __name__ == "__main__":
  sys.exit(main())
