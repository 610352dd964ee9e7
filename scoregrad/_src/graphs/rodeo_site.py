"""The RODEO site: a factorised Bernoulli site with discrete Stein control variates.

The program runs K times per sample, run r with the site's r-th of K
independent draws (same noise everywhere else); L is the mean over the K runs
and the site's logits get :func:`scoregrad.rodeo`'s estimate on the K draws,
with f the costs downstream of the site and ∇f their derivative in the draw
(the rest of the program rerun with the site's value open to ``jax.grad``;
any derivative keeps RODEO unbiased). Its control variates (α, β, ρ) are
learned in the state by minimising the mean over runs of ‖ĝ‖² in logits
space. One such site per program, without exact, disarm or measure-valued
sites; first-order only.

References:
  Shi, Zhou, Hwang, Titsias & Mackey, "Gradient Estimation with Discrete
  Stein Operators", NeurIPS 2022.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from scoregrad._src.base import check_state, gradient_carrier
from scoregrad._src.discrete import stein as _stein
from scoregrad._src.discrete.rebar_relax import control_optimizer
from scoregrad._src.graphs.protocol import Runs, SiteEstimator
from scoregrad.dists._base import families_with


class RodeoConfig(NamedTuple):
  num_samples: int
  network: Callable
  control0: dict
  adapt: bool
  optimizer: Any

  def init(self):
    control = jax.tree_util.tree_map(
      lambda c: jnp.asarray(c, jnp.result_type(float)), self.control0
    )
    return _stein.RodeoState(
      control=control, opt_state=self.optimizer.init(control) if self.adapt else ()
    )


def check_rodeo(rodeo) -> RodeoConfig:
  """Validates ``surrogate(..., rodeo=dict(num_samples=K, ...))``."""
  allowed = {"num_samples", "hidden_size", "learning_rate", "optimizer"}
  if not isinstance(rodeo, Mapping) or "num_samples" not in rodeo or set(rodeo) - allowed:
    raise ValueError(
      "`rodeo` must be None or a dict with num_samples (K >= 2 draws of each rodeo "
      "site) and optionally hidden_size, learning_rate, optimizer (as in "
      f"scoregrad.rodeo); got rodeo={rodeo!r}."
    )
  k = _stein.check_num_draws(rodeo["num_samples"], "rodeo")
  network, rho = _stein.stein_network(rodeo.get("hidden_size", 100))
  adapt, optimizer = control_optimizer(
    rodeo.get("learning_rate"), rodeo.get("optimizer"), default=1e-3
  )
  return RodeoConfig(k, network, {"alpha": 0.0, "beta": 0.0, "network": rho}, adapt, optimizer)


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class Rodeo(SiteEstimator):
  """``sg.sites.rodeo(...)``: RODEO for a factorised Bernoulli site (first order, stateful).

  ``config`` is None (use ``surrogate(..., rodeo=dict(...))``) or the site's own.
  """

  config: Optional[RodeoConfig] = None
  name = "rodeo"
  first_order_only = True

  def __repr__(self):
    return (
      "scoregrad.sites.rodeo()"
      if self.config is None
      else (f"scoregrad.sites.rodeo(num_samples={self.config.num_samples}, ...)")
    )

  def _config(self, settings) -> Optional[RodeoConfig]:
    return self.config if self.config is not None else settings.rodeo

  def check(self, site, dist):
    if not (callable(getattr(dist, "gibbs_flips", None)) and hasattr(dist, "logits")):
      raise ValueError(
        f"Site {site!r}: estimator='rodeo' needs a factorised Bernoulli; got "
        f"{type(dist).__name__}. Families that support it: "
        f"{', '.join(families_with('gibbs_flips'))}. Use estimator='score_function', "
        "'disarm' (Bernoulli) or, for small sites, 'exact'."
      )

  def draw(self, dist, key, branch):
    if branch is None:
      return dist.sample(key), None
    return dist.sample(jax.random.fold_in(key, branch)), jnp.asarray(dist.logits)

  def check_program(self, i, graph, settings, kinds):
    names = graph.names
    if self._config(settings) is None:
      raise ValueError(
        f"Site {names[i]!r} uses estimator='rodeo', which learns its "
        "control variates in a state: build the surrogate with "
        "surrogate(program, rodeo=dict(num_samples=K)) (K >= 2 draws of the site; "
        "optional hidden_size, learning_rate, optimizer), or give the site its own "
        "sg.sites.rodeo(num_samples=K), get the state with "
        "fn.init(params, key) and call fn(params, key, state) -> (value, state)."
      )
    rodeo = kinds.get("rodeo", [])
    others = {k: kinds.get(k, []) for k in ("exact", "disarm", "measure_valued")}
    if len(rodeo) > 1 or any(others.values()):
      raise ValueError(
        "estimator='rodeo' is supported for one site per program, without 'exact', "
        f"'disarm' or 'measure_valued' sites; got rodeo sites "
        f"{[names[t] for t in rodeo]}, exact {[names[t] for t in others['exact']]}, disarm "
        f"{[names[t] for t in others['disarm']]}, measure_valued "
        f"{[names[t] for t in others['measure_valued']]}. Use "
        "estimator='disarm' or 'score_function' for the others."
      )

  def num_branches(self, count, settings):
    return self._config(settings).num_samples

  def init(self, site, settings):
    config = self._config(settings)
    return None if config is None else config.init()

  def record(self, view, i):
    """(α, b, ∇C(b)) in one run: the logits, the draw and the derivative in the
    draw of the costs downstream of the site."""
    rec = view.handler.sites[view.name]
    cost, _ = view.downstream(i, True)
    grad = jax.grad(cost)(jnp.asarray(rec.value, view.dtype))
    return rec.aux, rec.value, jax.lax.stop_gradient(grad)

  def term(self, runs: Runs, i, state):
    name, dtype = runs.name(i), runs.dtype
    if state is None:
      raise ValueError(
        f"`state` has no entry for the rodeo site {name!r}: create it with fn.init(params, key)."
      )
    check_state(state, _stein.RodeoState, f"the rodeo site {name!r}")
    config = self._config(runs.settings)
    assert config is not None  # check_program refused a rodeo site without settings
    family = runs.graph.sites[i].family
    logits, b, grads = runs.records[i]  # (n, K, *shape) each
    n, k = b.shape[0], b.shape[1]
    f = jax.lax.stop_gradient(runs.costs @ runs.downstream_mask(i))  # (n, K)
    flat = lambda x: jax.lax.stop_gradient(x).reshape(n, k, -1).astype(dtype)
    site_logits = logits[:, 0]  # the same in every draw: the site's parents are shared
    shape = site_logits.shape[1:]
    flat_logits = jax.lax.stop_gradient(site_logits).reshape(n, -1).astype(dtype)

    def rows_of(control):
      ctrl = jax.tree_util.tree_map(lambda c: jnp.asarray(c).astype(dtype), control)
      one = lambda fi, gi, bi, li: _stein.rodeo_rows(config.network, ctrl, fi, gi, bi, li, family)
      return jax.vmap(one)(f, flat(grads), flat(b), flat_logits)  # (n, K, D)

    def objective(control):
      rows = rows_of(control)
      return jnp.mean(jnp.sum(jnp.square(jnp.mean(rows, axis=1)), axis=-1)), rows

    new_state = state
    if config.adapt:
      (_, rows), g_control = jax.value_and_grad(objective, has_aux=True)(state.control)
      updates, opt_state = config.optimizer.update(g_control, state.opt_state, state.control)
      new_state = _stein.RodeoState(optax.apply_updates(state.control, updates), opt_state)
    else:
      _, rows = objective(state.control)
    ghat = jnp.mean(rows, axis=1).reshape((n,) + shape)
    carrier = gradient_carrier(
      site_logits, ghat / n, f"surrogate() with a rodeo site ({name!r})", dtype
    )
    return carrier, new_state
