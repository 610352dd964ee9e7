"""Stochastic computation graphs: sample sites in a program, the surrogate built for you.

Write the model as ONE program ``program(params, key)`` that draws its random
variables with :func:`sample` and reports its costs with :func:`cost` (and/or
returns a scalar cost). :func:`surrogate` turns it into a function
``(params, key) -> scalar`` whose value is the program's total cost, whose
``jax.grad`` is an unbiased gradient estimate of ∇θ E[cost] and whose higher
derivatives (``jax.hessian``) are unbiased too.

The surrogate (Schulman et al. 2015; DiCE, Foerster et al. 2018; baselines
of Mao et al. 2019). Let S be the score-function sites, τ_s = log p(x_s | pa_s; θ)
with the sample x_s held fixed, and for every cost term c let A(c) ⊆ S be the
score-function sites among the stochastic ancestors of c (found from the
program's data flow, through other sites' parameters, transitively). Then

    L = Σ_c □(Σ_{s ∈ A(c)} τ_s) · c  +  Σ_{s ∈ S} (1 − □(τ_s)) · □(Σ_{s' ∈ A(s)} τ_s') · ⊥b_s,

with □(τ) = exp(τ − ⊥τ) (value 1, ∇□ = □∇τ) and ⊥ the stop-gradient. A site's
log-probability multiplies only the costs downstream of it (dependency-aware
credit), so a cost that does not depend on a site adds no noise to that
site's score term. The k-th derivative of E[L] is ∇ᵏ E[cost] for every k:
□ of a set of ancestrally closed sites turns the sample into an importance
weight p_θ/p_θ₀ evaluated at θ = θ₀, and each baseline term has expectation
0 as a function of θ, because b_s depends only on non-descendants of s.

Per-site estimators (``sample(..., estimator=...)``, values from
:mod:`scoregrad.sites` or their names as strings), one module each behind
one protocol (:mod:`.protocol`: the runs a site needs, and the term it adds):

* ``"pathwise"`` (the default for reparameterized families): the sample is a
  differentiable function of θ, no score term;
* ``"score_function"`` (the default otherwise): the sample is held fixed and
  τ_s enters the magic boxes above, with the site's baseline;
* ``"exact"``: for a small discrete site (Bernoulli, Categorical), every
  configuration k is enumerated (the rest of the program runs once per
  configuration, vmapped) and weighted by its probability p_θ(x_s = k | pa_s):
  L = Σ_k p_k L_k, exact at every order in that site;
* ``"disarm"``: a factorised Bernoulli site gets DisARM (Dong et al. 2020).
  With m disarm sites the program runs m + 1 times per sample: run 0 draws
  every disarm site at b, run j + 1 redraws site j alone at its antithetic b̃
  (same noise everywhere else, so a downstream disarm site follows its new
  parents through its own uniforms); L is the mean over the m + 1 runs (each
  is a draw of the program) and site j's logits get
  ½ (C(b) − C(b̃)) (−1)^{b̃_i} 1[b_i ≠ b̃_i] σ(|α_i|) from runs 0 and j + 1, for
  the costs C downstream of it (for m = 1: the pair, L its mean). With
  ``"exact"`` sites, C in each run is the probability-weighted sum over
  their configurations. First-order only (a second derivative raises);
* ``"measure_valued"``: a site whose family has a weak derivative (Normal,
  Laplace, Bernoulli, Categorical, Poisson, Exponential, Gamma rate; Mohamed
  et al. 2020, Section 6) keeps its sample fixed (no score term) and its own
  parameters η get the weak-derivative estimate
  ∂η_j E[C] ≈ c_j (C(x ⊕_j x⁺_j) − C(x ⊕_j x⁻_j)), where C is the sum of
  the costs downstream of the site and C(x') reruns the rest of the program
  with the site's value replaced by x' and the same downstream noise (the
  same keys). The chain rule through η(params, parents) gives the gradient;
  everything else in the program keeps its own estimator. Costs about 2·d
  extra runs of the program per site of size d (Categorical: d·K);
  first-order only (a second derivative raises); not combined with
  ``"exact"`` or ``"disarm"`` sites;
* ``"rodeo"``: a factorised Bernoulli site gets RODEO (Shi et al. 2022): the
  program runs K times per sample, run r with the site's r-th of K
  independent draws (same noise everywhere else); L is the mean over the K
  runs and the site's logits get :func:`scoregrad.rodeo`'s estimate on the K
  draws, with f the costs downstream of the site and ∇f their derivative in
  the draw (the rest of the program rerun with the site's value open to
  ``jax.grad``). Its control variates (α, β, ρ) are learned in the state, so
  the surrogate is built with ``surrogate(program, rodeo=dict(num_samples=K,
  ...))`` and called as ``fn(params, key, state) -> (value, state)``. One
  such site per program, without exact, disarm or measure-valued sites;
  first-order only.

Loops (:mod:`.loops`): ``scoregrad.scan(body, init, xs)`` and
``scoregrad.fori_loop`` (static trip count) are ``jax.lax.scan`` whose body may
draw sites and report costs. A site in the body is one site with a leading
axis of T steps; the body's data flow (with the carry to a fixed point) tells,
for each cost and site of the loop, which loop sites it reads at the same step
and which at earlier steps, and each cost c_t gets the box of its causal
ancestors at step t, □(Σ_{T(c)} τ + Σ_{S*(c)} τ_{·,t} + Σ_{L*(c)} Σ_{t'<t} τ_{·,t'})
(the causal rule: a step's score never multiplies earlier costs), with
per-step baselines. Compiled once, never unrolled. Score-function and
pathwise sites only inside a loop.

Baselines per score-function site: ``baselines.leave_one_out()`` across the
``num_samples`` independent runs of the program (b_s for run i is the mean
over the other runs of the costs downstream of s), ``baselines.constant``,
``baselines.moving_average`` (stateful: then the surrogate takes and returns
a state), or a callable ``b(values) -> scalar`` of the values of the site's
non-descendant sites (a learned baseline; it is stop-gradiented).

Relation to other libraries: Pyro's ``TraceGraph_ELBO`` builds the same
dependency-aware surrogate (first order) for ELBOs with baselines per site;
NumPyro's ``TraceGraph_ELBO`` has no baselines. Storchastic (PyTorch; van
Krieken et al. 2021) adds per-site estimator choice and any-order
derivatives, which this module brings to JAX, with dependencies found from
the traced jaxpr rather than from a tensor wrapper.

References:
  Schulman, Heess, Weber & Abbeel, "Gradient Estimation Using Stochastic
  Computation Graphs", NeurIPS 2015.
  Foerster et al., "DiCE: The Infinitely Differentiable Monte Carlo
  Estimator", ICML 2018.
  Mao et al., "A Baseline for Any Order Gradient Estimation in Stochastic
  Computation Graphs", ICML 2019.
  van Krieken, Tomczak & ten Teije, "Storchastic: A Framework for General
  Stochastic Automatic Differentiation", NeurIPS 2021.
  Dong, Mnih & Tucker, "DisARM: An Antithetic Gradient Estimator for Binary
  Latent Variables", NeurIPS 2020.
  Shi, Zhou, Hwang, Titsias & Mackey, "Gradient Estimation with Discrete
  Stein Operators", NeurIPS 2022.
  Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in
  Machine Learning", JMLR 2020.


The package: :mod:`.runtime` (the handler stack: ``sample``, ``cost``),
:mod:`.analysis` (the dependencies from the jaxpr), :mod:`.protocol` (the
site-estimator protocol), one module per site estimator
(:mod:`.score_function_site` with the baselines, :mod:`.exact_site`,
:mod:`.disarm_site`, :mod:`.rodeo_site`, :mod:`.measure_valued_site`,
:mod:`.pathwise_site`), :mod:`.loops` (``scan``, ``fori_loop``: sites inside
a loop, per-step credit), :mod:`.plates` (``plate``: per-element credit along
conditionally independent axes), :mod:`.registry` (names → estimators) and
:mod:`.assembly` (``surrogate``).
"""

from scoregrad._src.graphs.assembly import Surrogate, surrogate
from scoregrad._src.graphs.loops import fori_loop, scan
from scoregrad._src.graphs.plates import plate
from scoregrad._src.graphs.registry import ESTIMATORS
from scoregrad._src.graphs.runtime import RETURN_NAME, cost, sample

__all__ = (
  "ESTIMATORS",
  "RETURN_NAME",
  "Surrogate",
  "cost",
  "fori_loop",
  "plate",
  "sample",
  "scan",
  "surrogate",
)
