"""Sphinx configuration for the scoregrad site (`make docs`).

Why Sphinx rather than mkdocs-material + mkdocstrings: the docstrings are
written for Sphinx already (``:func:`` / ``:class:`` cross-references,
Google-style Args/Returns that napoleon renders, ``>>>`` examples), the
projects our users read (optax, distrax, numpyro, JAX itself) document this
way, and myst-nb renders the committed notebooks, outputs and figures
included, without executing them. `-W` turns every warning (a broken
reference, a malformed docstring, a missing page) into a failed build.
"""

import pathlib
import shutil
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))

import gen_api  # noqa: E402

import scoregrad  # noqa: E402

project = "scoregrad"
author = "The scoregrad authors"
copyright = "the scoregrad authors"
release = version = scoregrad.__version__

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx.ext.viewcode",
  "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "gen_api.py"]

# Notebooks are rendered from their committed outputs (`make notebooks`
# refreshes them; `make test` checks that they still execute).
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# Notebook markdown starts at "#" and the results reports use "##" after a
# title; neither is a broken link.
suppress_warnings = ["myst.header"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"exclude-members": "__init__, __new__"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" sections become field lists, not attribute directives that
# would duplicate the NamedTuple fields autodoc documents as members.
napoleon_use_ivar = True

html_theme = "furo"
html_title = f"scoregrad {release}"


def _prepare(app):
  """Generated sources: the API pages and copies of the notebooks."""
  gen_api.write(DOCS / "api")
  target = DOCS / "notebooks"
  target.mkdir(exist_ok=True)
  wanted = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
  for old in target.glob("*.ipynb"):
    if old.name not in wanted:
      old.unlink()
  for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
    copy = target / nb.name
    if not copy.exists() or copy.read_bytes() != nb.read_bytes():
      shutil.copyfile(nb, copy)


def setup(app):
  app.connect("builder-inited", _prepare)
