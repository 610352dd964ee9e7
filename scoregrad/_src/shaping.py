r"""Fitness shaping: a transform of the costs of ONE estimate, across its samples.

An evolution strategy is a score-function estimator whose costs
c_i = f(x_i) are replaced, before they weight the scores ∇θ log p(x_i; θ),
by utilities u_i = s(c_1, …, c_n)_i that depend on the whole population of
the estimate (its ranks, its mean and spread):

    ĝ = (1/n) Σ_i u_i ∇θ log p(x_i; θ),   u = s(c).

**Bias.** ĝ is biased for ∇θ E_p[f]: its scale and direction follow the
utilities, not the costs. It is unbiased for a *shaped objective*. With
i.i.d. samples and a shaping that treats the samples symmetrically (every
shaping here), u_i depends on x_i and on the other n − 1 samples, which are
independent of x_i; so

    E[ĝ] = E_{x∼p_θ}[h_θ₀(x) ∇θ log p(x; θ)] = ∇θ E_{x∼p_θ}[h_θ₀(x)] at θ = θ₀,

with h_θ₀(x) = E[u_1 | x_1 = x], the expected utility of a point x among
n − 1 others drawn from the current distribution, held fixed while
differentiating. For centered ranks h_θ₀(x) = P_{x'∼p_θ₀}(f(x') < f(x)) +
½ P(f(x') = f(x)) − ½: the gradient of the probability of doing worse than
a fresh sample, which is invariant to every increasing transform of f. (With
antithetic sampling the partner of x_i is not independent of it, and this
identity holds only approximately.)

**Ties** get the mean of the ranks they span (like evosax, which ranks with
``jax.scipy.stats.rankdata``), so tied samples get equal utilities and the
result does not depend on the samples' order. **NaN** costs rank last (as
+∞); the estimator's NaN rule then makes its gradient NaN anyway.

The shapings are those of evosax 0.3 (``centered_rank``, ``standardize``,
``normalize`` and the SNES/xNES/CMA-style ``weights``), written as costs to
minimise: :func:`rank_weights` negates evosax's weights, which are utilities
to maximise. evosax's ``add_weight_decay`` is not a transform of the costs
(it adds λ‖x‖² to f): write it in f.

References:
  Wierstra, Schaul, Glasmachers, Sun, Peters & Schmidhuber, "Natural
  Evolution Strategies", JMLR 2014, Section 3.1 (fitness shaping).
  Salimans, Ho, Chen, Sidor & Sutskever, "Evolution Strategies as a Scalable
  Alternative to Reinforcement Learning", 2017 (centered ranks).
  Lange, "evosax: JAX-based Evolution Strategies", GECCO 2023 Companion.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scoregrad._src.validation import check_positive_int


class FitnessShaping(NamedTuple):
  """A fitness shaping: ``transform(costs) -> utilities`` for the (n,) costs of one estimate.

  Attributes:
    name: how messages name it, e.g. ``"centered_ranks()"``.
    transform: ``transform(costs)``, costs of shape ``(n,)`` to utilities of
      shape ``(n,)``; lower utility is better (they are costs to minimise).
    min_samples: the fewest samples it accepts (ranks and spreads need 2).
  """

  name: str
  transform: Callable[[jax.Array], jax.Array]
  min_samples: int = 2


def ranks(costs: jax.Array) -> jax.Array:
  """0-based ranks of ``costs`` (smallest first), ties given the mean of their ranks.

  rank_i = #{j : c_j < c_i} + ½ (#{j : c_j = c_i} − 1), computed by one sort
  and two binary searches (O(n log n)); NaN ranks last, as +∞. Equal to
  ``jax.scipy.stats.rankdata(costs) − 1`` (method ``"average"``).

  Example:
    >>> import jax.numpy as jnp, scoregrad as sg
    >>> sg.shaping.ranks(jnp.array([3.0, 1.0, 3.0, 2.0])).tolist()
    [2.5, 0.0, 2.5, 1.0]
  """
  costs = jnp.asarray(costs)
  rankable = jnp.where(jnp.isnan(costs), jnp.inf, costs)
  ordered = jnp.sort(rankable)
  below = jnp.searchsorted(ordered, rankable, side="left")
  upto = jnp.searchsorted(ordered, rankable, side="right")
  dtype = costs.dtype if jnp.issubdtype(costs.dtype, jnp.floating) else jnp.result_type(float)
  return (below + upto - 1).astype(dtype) / 2


def centered_ranks() -> FitnessShaping:
  r"""Centered ranks: u_i = rank_i / (n − 1) − ½ ∈ [−½, ½].

  The OpenAI-ES shaping (evosax's ``centered_rank_fitness_shaping_fn``):
  invariant to any increasing transform of f, bounded whatever the scale or
  outliers of f, mean zero (so no baseline is needed). As a shaping of
  :func:`scoregrad.score_function` it is biased for ∇E[f] and unbiased for
  ∇θ E_θ[P_{x'∼p_θ₀}(f(x') < f(x))] (see :mod:`scoregrad.shaping`).

  Requirements: at least 2 samples per estimate.

  Returns:
    A :class:`FitnessShaping`.

  Example:
    >>> import jax.numpy as jnp, scoregrad as sg
    >>> sg.shaping.centered_ranks().transform(jnp.array([10.0, -1.0, 3.0])).tolist()
    [0.5, -0.5, 0.0]

  References:
    Salimans et al., "Evolution Strategies as a Scalable Alternative to
    Reinforcement Learning", 2017.
  """

  def transform(costs):
    n = costs.shape[0]
    return ranks(costs) / (n - 1) - 0.5

  return FitnessShaping("centered_ranks()", transform)


def standardize(epsilon: float = 1e-8) -> FitnessShaping:
  r"""z-scores: u_i = (c_i − c̄) / √(s² + ε), s² the population variance (1/n).

  evosax's ``standardize_fitness_shaping_fn`` (``jax.nn.standardize`` with
  ε = 1e-8, NaN costs left out of the mean and variance). Invariant to
  affine transforms of f, not to monotone ones; a ratio of sample moments,
  so biased for ∇E[f] even up to scale.

  Args:
    epsilon: added to the variance (a float ≥ 0).

  Returns:
    A :class:`FitnessShaping`.

  Example:
    >>> import jax.numpy as jnp, scoregrad as sg
    >>> sg.shaping.standardize().transform(jnp.array([1.0, 3.0])).round(4).tolist()
    [-1.0, 1.0]
  """
  epsilon = _check_nonnegative("epsilon", epsilon)

  def transform(costs):
    # NaN costs are left out of the mean and variance (evosax's `where=`);
    # they stay NaN themselves.
    valid = ~jnp.isnan(costs)
    count = jnp.sum(valid)
    mean = jnp.sum(jnp.where(valid, costs, 0)) / count
    var = jnp.sum(jnp.where(valid, jnp.square(costs - mean), 0)) / count
    return (costs - mean) * jax.lax.rsqrt(var + jnp.asarray(epsilon, costs.dtype))

  return FitnessShaping(f"standardize(epsilon={epsilon!r})", transform)


def normalize(low: float = -1.0, high: float = 1.0) -> FitnessShaping:
  r"""Min–max scaling to [low, high]: u_i = low + (high − low)(c_i − min c)/(max c − min c).

  evosax's ``normalize_fitness_shaping_fn`` (defaults −1, 1; NaN ignored in
  the min and max; all costs equal → every u_i = (low + high)/2). Invariant
  to affine transforms of f; sensitive to its extremes.

  Args:
    low, high: the range (floats, low < high).

  Returns:
    A :class:`FitnessShaping`.

  Example:
    >>> import jax.numpy as jnp, scoregrad as sg
    >>> sg.shaping.normalize().transform(jnp.array([0.0, 5.0, 10.0])).tolist()
    [-1.0, 0.0, 1.0]
  """
  if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low < high):
    raise ValueError(
      f"`low` and `high` of normalize must be numbers with low < high; got low={low!r}, "
      f"high={high!r}. E.g. normalize(low=-1.0, high=1.0)."
    )

  def transform(costs):
    lo, hi = jnp.nanmin(costs), jnp.nanmax(costs)
    # evosax tests jnp.allclose(max, min) (rtol 1e-5, atol 1e-8): the same here.
    flat = jnp.abs(hi - lo) <= 1e-8 + 1e-5 * jnp.abs(lo)
    spread = jnp.where(flat, 1, hi - lo)
    scaled = low + (high - low) * (costs - lo) / spread
    return jnp.where(flat, jnp.full_like(costs, (low + high) / 2), scaled)

  return FitnessShaping(f"normalize(low={low!r}, high={high!r})", transform)


def rank_weights() -> FitnessShaping:
  r"""The NES/CMA recombination weights by rank, as costs: u_i = −w_{rank_i}.

  w_k = max(0, log(n/2 + 1) − log(k + 1)) / Σ_j max(0, log(n/2 + 1) − log(j + 1))
  − 1/n for the 0-based rank k (0 = lowest cost): the best half of the
  samples get positive, decreasing weights, the rest −1/n; Σ_k w_k = 0.
  evosax's ``weights_fitness_shaping_fn`` with the weights of its xNES/SNES
  (``get_weights``), which are utilities to maximise, negated here into costs
  to minimise (so ``score_function`` with this shaping followed by gradient
  descent moves as SNES does; see :func:`scoregrad.natural_gradient`). The
  weights are computed in float64 and rounded once, so they agree with
  evosax's (float32 throughout) to float32 rounding (≲ 3e-8). Tied
  costs get the weight at the floor of their mean rank, as evosax indexes
  ``weights[rank.astype(int32)]``; all costs NaN gives zero utilities.

  Requirements: at least 2 samples per estimate.

  Returns:
    A :class:`FitnessShaping`.

  Example:
    >>> import jax.numpy as jnp, scoregrad as sg
    >>> u = sg.shaping.rank_weights().transform(jnp.array([3.0, 1.0, 2.0, 4.0]))
    >>> bool(u[1] < u[2] < 0 < u[0] == u[3])   # best sample: most negative cost
    True

  References:
    Wierstra et al., "Natural Evolution Strategies", JMLR 2014, Section 3.1.
    Hansen, "The CMA Evolution Strategy: A Tutorial", 2016 (the weights).
  """

  def transform(costs):
    weights = jnp.asarray(recombination_weights(costs.shape[0]), costs.dtype)
    utilities = -weights[ranks(costs).astype(jnp.int32)]
    return jnp.where(jnp.all(jnp.isnan(costs)), jnp.zeros_like(utilities), utilities)

  return FitnessShaping("rank_weights()", transform)


def recombination_weights(n: int) -> np.ndarray:
  """The NES/CMA weights w_k of :func:`rank_weights` (k = 0 best), in float64 NumPy."""
  raw = np.maximum(np.log(n / 2 + 1) - np.log(np.arange(1, n + 1)), 0.0)
  return raw / raw.sum() - 1 / n


def _check_nonnegative(name: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
    raise ValueError(f"`{name}` must be a float >= 0; got {name}={value!r}.")
  return float(value)


def check_fitness_shaping(fitness_shaping, num_samples: int, samples_name: str = "num_samples"):
  """Validates the ``fitness_shaping`` argument (``None`` or a :class:`FitnessShaping`)."""
  if fitness_shaping is None:
    return None
  if not isinstance(fitness_shaping, FitnessShaping):
    raise TypeError(
      "`fitness_shaping` must be a scoregrad.shaping.FitnessShaping, e.g. "
      f"scoregrad.shaping.centered_ranks(); got fitness_shaping={fitness_shaping!r}."
    )
  num_samples = check_positive_int(samples_name, num_samples)
  if num_samples < fitness_shaping.min_samples:
    raise ValueError(
      f"`fitness_shaping={fitness_shaping.name}` transforms the costs across the "
      f"samples of one estimate and needs at least {fitness_shaping.min_samples} of "
      f"them; got {samples_name}={num_samples}. Use {samples_name}>="
      f"{fitness_shaping.min_samples} (evolution strategies use tens to thousands), "
      "or drop fitness_shaping."
    )
  return fitness_shaping


def apply(fitness_shaping, costs: jax.Array) -> jax.Array:
  """``fitness_shaping.transform(costs)`` (gradient-free), in the costs' dtype."""
  if fitness_shaping is None:
    return costs
  costs = jax.lax.stop_gradient(costs)
  return jax.lax.stop_gradient(fitness_shaping.transform(costs)).astype(costs.dtype)
