r"""Variance reduction as a layer: a control variate around ANY gradient estimator.

For a control variate h whose expectation under p(x; θ) is known in closed
form, and any coefficient β,

    ∇θ E_p[f] = ∇θ E_p[f − β h] + β ∇θ E_p[h].

:func:`with_control_variate` wraps an estimator so that it estimates the first
term (by running the wrapped estimator on the residual cost f − β h) and adds
the second exactly. It never looks inside the wrapped estimator: every
scoregrad estimator (score function, pathwise, measure-valued, ARM, DisARM,
Rao-Blackwellised, REBAR/RELAX, relaxations, exact) and any user-written
:class:`~scoregrad.GradientEstimator` gains control variates the same way.
``score_function(control_variate=...)``, ``pathwise(control_variate=...)``
and ``measure_valued(control_variate=...)`` are shorthands for it.

Three things need per-sample gradients of the wrapped estimator (it must be
built with ``per_sample=True``; the shorthands do that for you):

* **Estimated β** (``coefficient="per_leaf"`` / ``"per_coordinate"``): the
  wrapped estimator runs on f and on h with the same key (the same samples),
  giving per-sample gradients g_{f,i} and g_{h,i}; row i is corrected by
  β_{−i} (g_{h,i} − ∇E[h]) with β_{−i} fitted on the OTHER rows
  (:func:`~scoregrad.control_variates.leave_one_out_coefficients`). That is
  unbiased when β_{−i} does not depend on draw i, i.e. when each row of the
  rows used for fitting depends on its own draw only. Rows coupled through
  the other samples (a leave-one-out or optimal baseline, antithetic or QMC
  sampling) need ``fit_estimator``: an estimator with independent rows on the
  same key (the shorthand for ``score_function`` uses the same estimator
  without its baseline), or a fixed β.
* **An h that depends on θ** (``value_depends_on_params=True``, e.g. h(x; μ)
  built from the distribution's mean): the identity above then needs
  −β E[∇θ h(x; θ)] (x held fixed), estimated on independent draws x̃_i, one per
  row, so that each row stays one draw's gradient.

References:
  Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in
  Machine Learning", JMLR 2020, Section 7.4.
  Owen, "Monte Carlo theory, methods and examples", 2013, Chapter 8.9.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from scoregrad._src import control_variates as _cv
from scoregrad._src.base import (
  Estimate,
  GradientEstimator,
  call_dist_fn,
  finish,
  first_order_only,
  gradient_carrier,
  traits_of,
  tree_mean0,
)
from scoregrad._src.validation import check_bool, check_callable, check_estimator, check_key

PyTree = Any

# Folded into the key for the independent draws of the pathwise term of a
# θ-dependent h (the wrapped estimator keeps the key it is given, so its
# random numbers are those it would use without a control variate).
_DIRECT_TERM_STREAM = 0x5C0E


def _rows(out: Estimate, what: str, cv: _cv.ControlVariate) -> PyTree:
  if out.per_sample is None:
    raise ValueError(
      f"with_control_variate(control_variate={cv.name}) needs per-sample "
      f"gradients from the {what} ({'an estimated coefficient' if _cv.is_estimated(cv) else 'a control variate whose value depends on the parameters'}), "
      "but it returned Estimate.per_sample=None. Build it with "
      "per_sample=True (the control_variate= shorthands of score_function, "
      "pathwise and measure_valued do this for you)."
    )
  return out.per_sample


def _num_rows(rows: PyTree) -> int:
  return jax.tree_util.tree_leaves(rows)[0].shape[0]


def with_control_variate(
  estimator: GradientEstimator,
  control_variate: _cv.ControlVariate,
  *,
  per_sample: Optional[bool] = None,
  fit_estimator: Optional[GradientEstimator] = None,
) -> GradientEstimator:
  r"""Wraps ``estimator`` with a control variate: ĝ = ĝ_est[f − βh] + β ∇θ E[h].

  The wrapped estimator is run on the residual cost f − β h (h at the current
  distribution, held constant) and the closed-form gradient β ∇θ E_{p(x;θ)}[h]
  is added, which is unbiased for ∇θ E[f] whenever the wrapped estimator is.
  With β estimated it runs on f and on h separately, on the same samples,
  and combines their per-sample gradients with leave-one-out coefficients
  (see the module docstring). ``Estimate.value`` is the control-variate
  estimate mean(f − β h) + β E[h] of E[f] (with an estimated β: mean f), and
  the state is a :class:`~scoregrad.control_variates.ControlVariateState`
  holding the wrapped estimator's state and the control variate's.

  Requirements: those of the wrapped estimator for the cost f − β h (e.g.
  h differentiable in x for ``pathwise``), and a distribution for which the
  control variate's expectation is exact (checked: an error names the
  families it supports).

  Args:
    estimator: any :class:`~scoregrad.GradientEstimator`.
    control_variate: a :class:`~scoregrad.control_variates.ControlVariate`,
      e.g. ``delta_method()``.
    per_sample: ``None`` (default) passes the wrapped estimator's
      ``per_sample`` output through (corrected row by row); ``False`` drops it
      (for a wrapped estimator built with ``per_sample=True`` only because
      the control variate needs rows).
    fit_estimator: for an estimated β, an estimator whose per-sample rows
      (on the same key) are independent across samples, used only to fit β
      when ``estimator``'s rows are coupled (e.g. by a leave-one-out
      baseline). Default: ``estimator`` itself.

  Returns:
    ``GradientEstimator(init, estimate)``.

  Example:
    >>> import jax, jax.numpy as jnp, scoregrad as sg
    >>> est = sg.with_control_variate(sg.disarm(num_pairs=8),
    ...                               sg.control_variates.delta_method())
    >>> logits = jnp.array([0.3, -0.5])
    >>> dist_fn = lambda l: sg.dists.Bernoulli(logits=l)
    >>> out = est.estimate(jax.random.key(0), lambda b: jnp.sum((b - 0.45) ** 2),
    ...                    dist_fn, logits, est.init(logits))
    >>> # f is quadratic, so h = f and out.grad is the exact gradient.

  References:
    Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in
    Machine Learning", JMLR 2020, Section 7.4.
  """
  estimator = check_estimator(estimator, "estimator")
  cv = _cv.resolve(control_variate)
  if cv is None:
    raise TypeError(
      "`control_variate` must be a ControlVariate such as "
      "scoregrad.control_variates.delta_method(); got None."
    )
  if per_sample is not None:
    per_sample = check_bool("per_sample", per_sample)
  if fit_estimator is not None:
    fit_estimator = check_estimator(fit_estimator, "fit_estimator")
  estimated = _cv.is_estimated(cv)
  # Ask the estimator (its Traits) for what the control variate needs: rows,
  # and for an estimated coefficient rows that depend on their own draw only.
  traits = traits_of(estimator)
  if traits is not None and traits.fitness_shaping is not None:
    raise ValueError(
      f"`estimator` shapes its costs ({traits.name}): the utilities replace f − βh, "
      f"so adding the exact β∇E[h] of control_variate={cv.name} would not correct "
      "anything it estimates. A fitness-shaped estimator takes no control variate; "
      "drop one of them."
    )
  if traits is not None and traits.chunk_size is None and traits.rebuild is not None:
    if (estimated or cv.value_depends_on_params) and not traits.per_sample:
      estimator = traits.rebuild(per_sample=True)
      per_sample = False if per_sample is None else per_sample
    if estimated and fit_estimator is None and traits.rows_coupled_by is not None:
      if traits.fit_rows is None:
        raise ValueError(
          f"`control_variate={cv.name}` estimates its coefficient leave-one-out "
          "from per-sample gradients that must each depend on their own draw "
          f"only, but in `estimator` ({traits.name}) {traits.rows_coupled_by} "
          "couples them. Use a fixed float coefficient (e.g. "
          "delta_method()), or pass fit_estimator= an estimator with independent "
          "rows on the same key."
        )
      fit_estimator = traits.fit_rows()

  def init(params) -> _cv.ControlVariateState:
    return _cv.ControlVariateState(estimator=estimator.init(params), control_variate=cv.init())

  def estimate(key, f: Callable, dist_fn: Callable, params, state) -> Estimate:
    key = check_key(key)
    check_callable("f", f, "f(x) -> scalar cost of one sample")
    check_callable("dist_fn", dist_fn, "dist_fn(params) -> distribution")
    state = _cv.check_state(state, cv)
    dist = call_dist_fn(dist_fn, params)
    _cv.check_family(cv, dist)
    cv_state = state.control_variate
    dist_sg = jax.lax.stop_gradient(dist)
    dtype = jnp.result_type(float)

    def h(x):
      return jnp.asarray(cv.value(f, dist_sg, x, cv_state)).astype(dtype)

    expected_grad = jax.grad(
      lambda p: jnp.asarray(cv.expectation(f, call_dist_fn(dist_fn, p), cv_state)).astype(dtype)
    )(params)
    # E[h] for the value: differentiable in what f closes over, not in θ.
    expected = jnp.asarray(cv.expectation(f, dist_sg, cv_state)).astype(dtype)

    def direct_terms(num_rows):
      """∇θ h(x̃_i; θ), x̃_i held fixed, on independent draws (one per row)."""
      xs = jax.lax.stop_gradient(
        dist.sample(jax.random.fold_in(key, _DIRECT_TERM_STREAM), (num_rows,))
      )
      one = lambda p, x: jnp.asarray(cv.value(f, call_dist_fn(dist_fn, p), x, cv_state)).astype(
        dtype
      )
      return jax.vmap(jax.grad(one), in_axes=(None, 0))(params, xs)

    if not estimated:
      beta = float(cv.coefficient)
      out = estimator.estimate(key, lambda x: f(x) - beta * h(x), dist_fn, params, state.estimator)
      value = out.value + beta * expected
      if cv.value_depends_on_params:
        rows = _rows(out, "wrapped estimator", cv)
        direct = direct_terms(_num_rows(rows))
        per = jax.tree_util.tree_map(
          lambda g, d, e: g + beta * (e - d), rows, direct, expected_grad
        )
        grad = tree_mean0(per)
      else:
        grad = jax.tree_util.tree_map(lambda g, e: g + beta * e, out.grad, expected_grad)
        per = (
          None
          if out.per_sample is None
          else jax.tree_util.tree_map(lambda g, e: g + beta * e, out.per_sample, expected_grad)
        )
    else:
      out = estimator.estimate(key, f, dist_fn, params, state.estimator)
      h_out = estimator.estimate(key, h, dist_fn, params, state.estimator)
      per_f = _rows(out, "wrapped estimator", cv)
      per_h = _rows(h_out, "wrapped estimator", cv)
      n = _num_rows(per_f)
      if n < 3:
        raise ValueError(
          f"`control_variate={cv.name}` estimates its coefficient leave-one-out "
          f"from the other per-sample gradients, which needs at least 3 of them; "
          f"the wrapped estimator returned {n}. Use more samples or a fixed "
          "float coefficient."
        )
      direct = direct_terms(n) if cv.value_depends_on_params else None

      def centred(rows):  # g_{h,i} (+ its pathwise term) − ∇E[h]: mean zero.
        if direct is None:
          return jax.tree_util.tree_map(lambda g, e: g - e, rows, expected_grad)
        return jax.tree_util.tree_map(lambda g, d, e: g + d - e, rows, direct, expected_grad)

      per_h = centred(per_h)
      if fit_estimator is None:
        fit_f, fit_h = per_f, per_h
      else:
        fit_f = _rows(
          fit_estimator.estimate(key, f, dist_fn, params, fit_estimator.init(params)),
          "fit_estimator",
          cv,
        )
        fit_h = centred(
          _rows(
            fit_estimator.estimate(key, h, dist_fn, params, fit_estimator.init(params)),
            "fit_estimator",
            cv,
          )
        )
      beta = _cv.leave_one_out_coefficients(fit_f, fit_h, mode=cv.coefficient)
      per = jax.tree_util.tree_map(lambda g, b, c: g - b * c, per_f, beta, per_h)
      grad = tree_mean0(per)
      value = out.value
    if per_sample is False:
      per = None
    # Derivative-order rule: the combined gradient is first-order only (β and
    # h are fitted or expanded at the current θ), and `.value`'s derivative is
    # the combined gradient: out.value already carries out.grad (every
    # estimator's value carries its own gradient), the carrier adds the rest.
    name = f"with_control_variate(..., {cv.name})"
    grad = first_order_only(grad, params, name)
    if per is not None:
      per = first_order_only(per, params, name)
    value = value + gradient_carrier(
      params,
      jax.tree_util.tree_map(lambda g, o: g - o, grad, out.grad),
      name,
      jnp.result_type(value),
    )
    new_state = _cv.ControlVariateState(
      estimator=out.state,
      control_variate=cv.update(cv_state, f, dist_sg, jax.lax.stop_gradient(value)),
    )
    return finish(value, grad, new_state, per)

  return GradientEstimator(init=init, estimate=estimate)


def shorthand(core: GradientEstimator, control_variate) -> GradientEstimator:
  """The ``control_variate=`` keyword of an estimator factory, as the layer.

  ``core`` is the factory's estimator without the keyword; the layer asks it
  (its Traits) for per-sample rows and independent fitting rows as needed.
  """
  traits = traits_of(core)
  assert traits is not None
  cv = _cv.resolve(control_variate)
  _cv.check_num_samples(cv, traits.num_samples)
  return with_control_variate(core, cv, per_sample=traits.per_sample)
