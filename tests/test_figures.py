"""Benchmark figures: one style per estimator, labelled axes, nothing covering the data.

The plots are redrawn from the committed results (``benchmarks/results/*.json``)
with the same code ``make bench`` uses, and inspected before saving.
"""

import itertools
import json
import pathlib

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from benchmarks import (
  common,
  style,
)
from benchmarks.estimators import ESTIMATORS
from benchmarks.run import BENCHMARKS

RESULTS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "results"
WITH_RESULTS = [n for n in BENCHMARKS if (RESULTS / f"{n}.json").exists()]


def test_every_estimator_has_its_own_style():
  styles = {e.name: style.style(e.name) for e in ESTIMATORS}
  assert len(set(styles.values())) == len(styles)
  listed = [s for n, s in styles.items() if n in style.ESTIMATOR_STYLES]
  assert len({s.color for s in listed}) == len(listed), "bar charts show colour only"
  references = {style.style(n) for n in style.REFERENCE_STYLES}
  assert not references & set(styles.values())


def test_a_new_estimator_gets_a_distinct_style():
  new = style.style("some_future_estimator")
  assert new == style.style("some_future_estimator")  # deterministic
  assert (new.color, new.marker) not in {
    (s.color, s.marker) for s in style.ESTIMATOR_STYLES.values()
  }


@pytest.fixture
def figures(monkeypatch, tmp_path):
  """Replaces save_figure: draws each figure and keeps it for inspection."""
  kept = []

  def keep(fig, path, **kwargs):
    fig.canvas.draw()
    kept.append(fig)
    return pathlib.Path(path)

  monkeypatch.setattr(common, "save_figure", keep)
  monkeypatch.setattr(plt, "close", lambda *a, **k: None)
  yield kept
  monkeypatch.undo()
  plt.close("all")


def _overlap(a, b):
  return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("name", WITH_RESULTS)
def test_figure_is_labelled_and_uncovered(name, figures, tmp_path):
  results = json.loads((RESULTS / f"{name}.json").read_text())
  BENCHMARKS[name].plot(results, tmp_path)
  assert figures, f"{name}.plot saved no figure through common.save_figure"
  for fig in figures:
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for ax in axes:
      assert ax.get_ylabel().strip(), f"{name}: a panel titled {ax.get_title()!r} has no y label"
      texts = [t.get_window_extent(renderer) for t in ax.texts if t.get_text().strip()]
      for a, b in itertools.combinations(texts, 2):
        assert not _overlap(a, b), f"{name}: overlapping point labels in {ax.get_title()!r}"
    legends = [ax.get_legend() for ax in axes if ax.get_legend()] + list(fig.legends)
    for legend in legends:
      box = legend.get_window_extent(renderer)
      for ax in axes:
        assert not _overlap(box, ax.get_window_extent(renderer)), (
          f"{name}: a legend covers the panel {ax.get_title()!r}"
        )
    words = {t.get_text() for ax in axes for t in ax.get_yticklabels() + ax.get_xticklabels()}
    assert "SF" not in " ".join(words).split(), f"{name}: abbreviated estimator names"
