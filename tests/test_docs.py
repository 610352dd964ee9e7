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
