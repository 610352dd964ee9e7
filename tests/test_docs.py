"""The docs site covers the public API, the notebooks and the benchmark reports.

`make docs` builds it with warnings as errors and then checks the built HTML
(.ci/check_docs.py); these tests check its sources without Sphinx, fast:
the generated API pages hold an autodoc entry for every public name, every
public module has a page, and every benchmark report has a page.
"""

import importlib
import inspect
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))
import gen_api  # noqa: E402

from test_layout import PUBLIC_MODULES  # noqa: E402

DIRECTIVE = re.compile(r"^\.\. auto(?:class|function|data):: (\S+)$", re.M)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
  out = tmp_path_factory.mktemp("api")
  gen_api.write(out)
  return {p.stem: p.read_text() for p in out.glob("*.rst")}


def test_every_public_module_has_an_api_page():
  assert sorted(m for m, _, _ in gen_api.PUBLIC_MODULES) == sorted(PUBLIC_MODULES)


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_public_name_has_an_api_entry(pages, module):
  text = pages[module.replace(".", "_")]
  documented = set(DIRECTIVE.findall(text))
  mod = importlib.import_module(module)
  for name in mod.__all__:
    obj = getattr(mod, name)
    if inspect.ismodule(obj):
      assert f":doc:`{obj.__name__} <" in text, f"{module}.{name}"
    else:
      assert f"{module}.{name}" in documented, f"{module}.{name} has no autodoc entry"


def test_api_index_lists_every_page(pages):
  for module, _, _ in gen_api.PUBLIC_MODULES:
    assert f"   {module.replace('.', '_')}\n" in pages["index"]


def test_every_benchmark_report_has_a_page():
  reports = {p.stem for p in (ROOT / "benchmarks" / "results").glob("*.md")}
  pages = {p.stem for p in (ROOT / "docs" / "benchmarks").glob("*.md")} - {"index"}
  assert reports <= pages, f"no docs page for {sorted(reports - pages)}"
  index = (ROOT / "docs" / "benchmarks" / "index.md").read_text()
  for name in reports:
    assert f"\n{name}\n" in index, name
    assert (
      f"benchmarks/results/{name}.md" in (ROOT / "docs" / "benchmarks" / f"{name}.md").read_text()
    )


def test_api_landing_table_places_every_public_name_once(pages):
  """The index opens with the grouped table; every public class and function is in it once."""
  index = pages["index"]
  rows = re.findall(r"^   \* - :obj:`~(\S+)`$", index, re.M)
  assert len(rows) == len(set(rows))
  first: dict = {}
  for module, _, _ in gen_api.PUBLIC_MODULES:
    mod = importlib.import_module(module)
    for name in mod.__all__:
      obj = getattr(mod, name)
      if not inspect.ismodule(obj):
        first.setdefault(id(obj), f"{module}.{name}")
  assert sorted(rows) == sorted(first.values())
  assert index.index("scoregrad.score_function`") < index.index("scoregrad.Estimate`")
  assert index.index("Estimators\n") < index.index("Types, states and results\n")


def test_api_pages_put_functions_before_classes(pages):
  text = pages["scoregrad"]
  assert text.index(".. autofunction:: scoregrad.score_function") < text.index(
    ".. autoclass:: scoregrad.ControlVariateState"
  )


def test_landing_table_refuses_an_unplaced_public_function(monkeypatch):
  monkeypatch.setitem(gen_api.GROUPS, "Estimators", ["scoregrad.score_function"])
  monkeypatch.setattr(gen_api, "MODULE_GROUPS", {})
  with pytest.raises(ValueError, match=r"scoregrad\.pathwise.*add them to GROUPS"):
    gen_api.landing_groups()


sys.path.insert(0, str(ROOT / ".ci"))
import check_docs  # noqa: E402


@pytest.mark.parametrize(
  "html, problem",
  [
    # A $$ paired with the wrong partner: prose inside math, TeX outside it.
    (
      '<p><span class="math notranslate nohighlight">\\(when neither the expectation '
      "nor its gradient\\)</span> p = \\mathcal N(\\mu, 1)</p>",
      "prose inside a math element",
    ),
    ("<p>the score \\nabla_\\theta \\log p</p>", "TeX outside a math element"),
    ('<script src="https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js"></script>', "external"),
    ('<script src="//cdn.example.org/x.js"></script>', "external"),
  ],
)
def test_docs_check_catches_broken_maths_and_external_scripts(tmp_path, html, problem):
  (tmp_path / "page.html").write_text(f"<html><body>{html}</body></html>")
  problems = check_docs.check_pages(tmp_path)
  assert any(problem in p for p in problems), problems


def test_docs_check_accepts_well_formed_maths(tmp_path):
  html = (
    '<p>For <span class="math notranslate nohighlight">\\(p = \\mathcal N(\\mu, 1)\\)</span>:</p>'
    '<div class="math notranslate nohighlight">\\[c(z) = \\eta f(z) + r(z)\\text{ for RELAX and '
    "friends}\\]</div><pre>label = r'$\\nabla_\\theta$'</pre>"
    '<script src="_static/mathjax/tex-chtml.js"></script>'
  )
  (tmp_path / "page.html").write_text(f"<html><body>{html}</body></html>")
  assert check_docs.check_pages(tmp_path) == []


def test_docs_check_flags_private_paths_on_api_pages(tmp_path):
  (tmp_path / "api").mkdir()
  (tmp_path / "api" / "x.html").write_text("<p>moments (scoregrad._src.base.GradientMoments)</p>")
  assert "private path" in check_docs.check_pages(tmp_path)[0]
