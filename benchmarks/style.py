"""One estimator → plot style map, shared by every benchmark plot.

Every series in every figure takes its colour, marker and line style from
:func:`style`, so an estimator looks the same in all plots and no two series
look alike (tab10 alone wraps at 10 series, which made `score_function` and
`pathwise+qmc` share a blue). Line style encodes the family:

* ``-``  score function (with any baseline or control variate),
* ``--`` pathwise (reparameterization),
* ``-.`` measure-valued,
* ``:``  unbiased discrete estimators (ARM, DisARM, Rao-Blackwell, REBAR, RELAX),
* dash-dot-dot: biased relaxations (Gumbel-softmax, straight-through);

colour and marker pick the estimator within the family; every estimator in
the table has its own colour (bar charts show colour only), and the pair
(colour, marker) stays unique for names added later. References (exact
gradients, hand-written JAX, optax's jacfwd) are black or grey.

A name that is not listed here (a row added to ``benchmarks/estimators.py``
later) gets a free (colour, marker) pair from its position in that table,
so it still differs from every listed estimator.
"""

from __future__ import annotations

from typing import NamedTuple
import zlib


class Style(NamedTuple):
  color: str
  marker: str
  linestyle: object

  def kwargs(self) -> dict:
    """Keyword arguments for ``Axes.plot`` / ``Axes.errorbar``."""
    return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}


SCORE, PATHWISE, MEASURE, DISCRETE = "-", "--", "-.", ":"
RELAXED = (0, (6, 2, 1, 2, 1, 2))  # dash-dot-dot

# tab10, Dark2 and seven extras: 24 colours, one per estimator; with distinct
# markers and line styles they stay apart in print and for common colour
# vision deficiencies.
TAB10 = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
]
DARK2 = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"]
# navy, maroon, teal, magenta, olive, purple, crimson
EXTRA = ["#000075", "#800000", "#469990", "#f032e6", "#808000", "#911eb4", "#e6194b"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*", "d", "H", "8"]

ESTIMATOR_STYLES: dict[str, Style] = {
  "score_function": Style(TAB10[0], "o", SCORE),
  "score_function+leave_one_out": Style(TAB10[1], "s", SCORE),
  "score_function+moving_average": Style(TAB10[2], "^", SCORE),
  "score_function+optimal": Style(TAB10[3], "D", SCORE),
  "score_function+delta_method": Style(TAB10[4], "v", SCORE),
  "score_function+delta_method(per_coordinate)": Style(TAB10[5], "P", SCORE),
  "pathwise": Style(TAB10[9], "o", PATHWISE),
  "pathwise+delta_method": Style(TAB10[8], "s", PATHWISE),
  "pathwise+antithetic": Style(TAB10[6], "^", PATHWISE),
  "pathwise+qmc": Style(EXTRA[0], "X", PATHWISE),
  "measure_valued": Style(TAB10[7], "h", MEASURE),
  "arm": Style(DARK2[0], "<", DISCRETE),
  "disarm": Style(DARK2[1], ">", DISCRETE),
  "rao_blackwell+leave_one_out": Style(DARK2[2], "p", DISCRETE),
  "rebar": Style(DARK2[3], "*", DISCRETE),
  "relax": Style(DARK2[4], "d", DISCRETE),
  "double_cv": Style(EXTRA[2], "o", DISCRETE),
  "rodeo": Style(EXTRA[3], "s", DISCRETE),
  "gumbel_softmax(0.5)": Style(DARK2[5], "H", RELAXED),
  "gumbel_softmax_st(0.5)": Style(DARK2[6], "8", RELAXED),
  "straight_through": Style(EXTRA[1], "X", RELAXED),
  # Policy gradients (benchmarks/policy_gradient.py): score-function
  # estimators on whole episodes (sequences of T actions).
  "per_episode": Style(EXTRA[4], "o", SCORE),
  "per_step": Style(EXTRA[5], "^", SCORE),
  "per_step+leave_one_out": Style(EXTRA[6], "s", SCORE),
  # Language-model RL (benchmarks/lm_policy_gradient.py): reinforce and rloo are
  # the score function without and with a leave-one-out baseline, styled alike.
  "reinforce": Style(TAB10[0], "o", SCORE),
  "rloo": Style(TAB10[1], "s", SCORE),
  "grpo": Style(TAB10[4], "*", SCORE),
  "dr_grpo": Style(TAB10[2], "X", SCORE),
}

# Reference series (not estimators from the table).
EXACT = Style("black", "", "--")
REFERENCE_STYLES: dict[str, Style] = {
  "exact gradient": EXACT,
  "exact": EXACT,
  "hand-written score_function (per-sample)": Style("0.35", "s", ":"),
  "hand-written score_function (batched)": Style("0.35", "s", "--"),
  "hand-written pathwise (per-sample)": Style("0.6", "D", ":"),
  "hand-written pathwise (batched)": Style("0.6", "D", "--"),
  "jacfwd (optax 0.1.8)": Style("0.35", "s", "--"),
  "hand_written": Style("0.35", "D", "--"),  # policy_gradient's hand-written JAX
}

_KIND_LINESTYLE = {
  "score_function": SCORE,
  "pathwise": PATHWISE,
  "measure_valued": MEASURE,
  "discrete": DISCRETE,
  "relaxed": RELAXED,
}


def _free_pairs() -> list[tuple[str, str]]:
  used = {(s.color, s.marker) for s in ESTIMATOR_STYLES.values()}
  return [(c, m) for m in MARKERS for c in TAB10 + DARK2 + EXTRA if (c, m) not in used]


def style(name: str) -> Style:
  """The style of the series called ``name`` (an estimator or a reference)."""
  if name in ESTIMATOR_STYLES:
    return ESTIMATOR_STYLES[name]
  if name in REFERENCE_STYLES:
    return REFERENCE_STYLES[name]
  from benchmarks.estimators import ESTIMATORS

  free = _free_pairs()
  names = [e.name for e in ESTIMATORS if e.name not in ESTIMATOR_STYLES]
  kinds = {e.name: e.kind for e in ESTIMATORS}
  if name in names:
    color, marker = free[names.index(name) % len(free)]
  else:
    color, marker = free[zlib.crc32(name.encode()) % len(free)]
  return Style(color, marker, _KIND_LINESTYLE.get(kinds.get(name, ""), "-"))


def legend_outside(
  fig, ax_or_handles=None, *, where: str = "right", ncol: int = 1, fontsize: float = 8, **kwargs
):
  """A figure legend outside every panel: to the right of them or below them.

  ``ax_or_handles``: an Axes whose handles to use, a list of handles, or None
  (all axes' handles, deduplicated by label). Save the figure with
  ``bbox_inches="tight"`` so that the legend is inside the PNG.
  """
  if ax_or_handles is None:
    seen = {}
    for ax in fig.axes:
      for h, label in zip(*ax.get_legend_handles_labels()):
        seen.setdefault(label, h)
    handles, labels = list(seen.values()), list(seen)
  elif isinstance(ax_or_handles, list):
    handles, labels = ax_or_handles, [h.get_label() for h in ax_or_handles]
  else:
    handles, labels = ax_or_handles.get_legend_handles_labels()
  if where == "right":
    return fig.legend(
      handles,
      labels,
      loc="center left",
      bbox_to_anchor=(1.0, 0.5),
      ncol=ncol,
      fontsize=fontsize,
      frameon=False,
      **kwargs,
    )
  return fig.legend(
    handles,
    labels,
    loc="upper center",
    bbox_to_anchor=(0.5, 0.0),
    ncol=ncol,
    fontsize=fontsize,
    frameon=False,
    **kwargs,
  )
