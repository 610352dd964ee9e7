"""The score-function site (DiCE) and its baseline.

The sample x_s is held fixed and τ_s = log p(x_s | pa_s; θ) enters the magic
boxes of the costs downstream of it (the shared cost term of the surrogate).
Its own term is the baseline term of Mao et al. (2019):

    (1 − □(τ_s)) · □(Σ_{s' ∈ A(s)} τ_s') · ⊥b_s,

with □(τ) = exp(τ − ⊥τ). Its expectation is 0 as a function of θ, at every
order, when b_s does not depend on x_s: the factor (1 − p_θ(x_s)/p_θ₀(x_s))
has mean 0 over x_s given everything b_s depends on.

Exact sites below s. A run's costs are Σ_k w_k C_k over the configurations k
of the exact sites, and w_k = w_N(k_N) · w_D(k_D | x_s, ...) splits into the
exact sites that are not descendants of s (N) and those that are (D). w_D
depends on x_s, so a baseline weighted by it is not a baseline (a
configuration-wise leave-one-out weighted by w_k is biased). The term is
instead, per run,

    Σ_{k_N} w_N(k_N) · (1 − □(τ_s)) · □(Σ_{A(s)} τ) · ⊥b_s(k_N),

with b_s(k_N) built from R(k_N) = Σ_{k_D} w_D C (the expected downstream cost
of s in that run, all stop-gradient) of the OTHER runs (leave-one-out), of past
steps (moving_average, learned) or of the non-descendant sites (a callable).
With no exact site below s this is the plain term above, run by run.

Baselines: ``baselines.leave_one_out()`` across the ``num_samples`` runs,
``constant``, ``moving_average`` and ``learned`` (stateful: the probability-
weighted mean downstream cost of the step updates them), or a callable
``b(values) -> scalar`` of the values of the site's non-descendant sites.

References:
  Foerster et al., "DiCE: The Infinitely Differentiable Monte Carlo
  Estimator", ICML 2018.
  Mao et al., "A Baseline for Any Order Gradient Estimation in Stochastic
  Computation Graphs", ICML 2019.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp

from scoregrad._src import baselines as _baselines
from scoregrad._src.graphs.protocol import (
  Runs,
  SiteEstimator,
  configurations_of,
  group_sum,
  weighted,
)
from scoregrad._src.surrogates import magic_box


def check_baseline(name: str, spec, num_samples: Optional[int]):
  """Validates one site's baseline spec (``name`` for messages)."""
  if spec is None or isinstance(spec, _baselines.Baseline):
    spec = _baselines.resolve(spec)
    _baselines.require_scalar(
      spec,
      where=f"surrogate() (site {name!r})",
      instead="Use leave_one_out(), constant(...), moving_average(...) or a callable "
      "baseline of the site's non-descendants.",
    )
    if spec.min_samples > 1 and num_samples is None:
      raise ValueError(
        f"`baseline={spec.name}` for site {name!r} averages over the other runs of the "
        "program: pass surrogate(..., num_samples=n) with n >= "
        f"{spec.min_samples}, or use moving_average(decay=0.9)."
      )
    if num_samples is not None:
      _baselines.check_num_samples(spec, num_samples)
    return spec
  if callable(spec):
    return spec
  raise TypeError(
    f"The baseline of site {name!r} must be a scoregrad.baselines.Baseline, a callable "
    f"`b(values) -> scalar` of the values of the site's non-descendant sites, or None; "
    f"got {spec!r}."
  )


def _is_stateful(spec) -> bool:
  return isinstance(spec, _baselines.Baseline) and spec.stateful


@dataclasses.dataclass(frozen=True, repr=False)
class ScoreFunction(SiteEstimator):
  """``sg.sites.score_function()``: REINFORCE/DiCE, with the surrogate's baseline."""

  name = "score_function"
  in_magic_box = True

  def check(self, site, dist):
    if getattr(dist, "score_function_order", None) == 1:
      raise ValueError(
        f"Site {site!r}: {type(dist).__name__}.log_prob is differentiable once only, so "
        "the surrogate's higher derivatives would be silently wrong at a "
        "score-function site. Use estimator='pathwise' (it is reparameterized)."
      )

  def init(self, site, settings):
    spec = settings.baseline_of(site)
    return spec.init() if _is_stateful(spec) else None

  def term(self, runs: Runs, i, state):
    name, g, dtype = runs.name(i), runs.graph, runs.dtype
    spec = runs.settings.baseline_of(name)
    if isinstance(spec, _baselines.Baseline) and spec.name == "none()":
      return jnp.zeros((), dtype), None
    lp = runs.log_probs
    tau = lp[..., i]
    above = sum((lp[..., t] for t in runs.score if t in g.ancestors[i]), jnp.zeros_like(tau))
    below = [e for e in runs.enumerated if i in g.ancestors[e]]  # D: exact sites below s
    r = jax.lax.stop_gradient(runs.costs) @ runs.downstream_mask(i)  # (n, K)
    if below:
      w_below = jnp.exp(jax.lax.stop_gradient(sum(lp[..., e] for e in below)))
      r_expected = group_sum(weighted(w_below, r), runs, below)  # R(k_N), per run
      log_w_above = sum(
        (lp[..., e] for e in runs.enumerated if e not in below), jnp.zeros_like(tau)
      ) - math.log(runs.num_branches)
      w = jnp.exp(log_w_above) / configurations_of(below, runs)
    else:
      r_expected, w = r, runs.weights
    new_state = None
    if isinstance(spec, _baselines.Baseline):
      st = spec.init()
      if spec.stateful:
        if state is None:
          raise ValueError(
            f"`state` has no entry for site {name!r}: create it with fn.init(params, key)."
          )
        st = state
        # The step's mean downstream cost: probability-weighted over the
        # configurations, averaged over the branches (weights sum to 1 per run).
        mixed = jnp.sum(weighted(jax.lax.stop_gradient(runs.weights), r), axis=1)
        new_state = spec.update(st, mixed)
      b = jax.vmap(lambda rk: spec.values(rk, None, st), in_axes=1, out_axes=1)(r_expected)
    else:
      b = _callable_baseline(spec, runs, i, r_expected.shape)
    b = jax.lax.stop_gradient(b)
    per_run = (1.0 - magic_box(tau)) * magic_box(above) * b
    return jnp.mean(jnp.sum(weighted(w, per_run), axis=1)), new_state


def _callable_baseline(spec, runs: Runs, i: int, shape):
  name, g = runs.name(i), runs.graph
  descendants = g.descendants(i)
  visible = {s.name: runs.values[s.name] for t, s in enumerate(g.sites) if t not in descendants}
  if not visible:
    raise ValueError(
      f"The callable `baseline` of site {name!r} receives the values of the site's "
      "non-descendant sites, and this site has none (it is the first or only site, "
      "and every other site depends on it), so the callable would have no input. "
      f"Use a scoregrad.baselines baseline for {name!r} instead, e.g. "
      "baseline={...: moving_average(decay=0.9)} or constant(c), or leave_one_out() "
      "with num_samples >= 2."
    )
  b = jax.vmap(jax.vmap(lambda v: jnp.asarray(spec(v), runs.dtype)))(visible)
  if b.shape != shape:
    raise ValueError(
      f"The callable baseline of site {name!r} must return a scalar; it returned "
      f"shape {b.shape[2:]}."
    )
  return b
