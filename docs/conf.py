"""Sphinx configuration for the scoregrad site (`make docs`).

Why Sphinx rather than mkdocs-material + mkdocstrings: the docstrings are
written for Sphinx already (``:func:`` / ``:class:`` cross-references,
Google-style Args/Returns that napoleon renders, ``>>>`` examples), the
projects our users read (optax, distrax, numpyro, JAX itself) document this
way, and myst-nb renders the committed notebooks, outputs and figures
included, without executing them. `-W` turns every warning (a broken
reference, a malformed docstring, a missing page) into a failed build.
"""

import importlib
import pathlib
import re
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
  # Serves MathJax 3 from _static/ instead of a CDN (offline reading).
  "sphinx-mathjax-offline",
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
html_static_path = ["_static"]
html_css_files = ["tables.css"]
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


def _public_paths():
  """{private qualified name: public one} for every public class and function."""
  paths = {"jax.jaxlib._jax.Array": "jax.Array", "jaxlib._jax.Array": "jax.Array"}
  for module, _, _ in gen_api.PUBLIC_MODULES:
    mod = importlib.import_module(module)
    for name in mod.__all__:
      obj = getattr(mod, name)
      home = getattr(obj, "__module__", None)
      if home and home.startswith("scoregrad._src") and hasattr(obj, "__qualname__"):
        paths.setdefault(f"{home}.{obj.__qualname__}", f"{module}.{name}")
  return paths


PUBLIC_PATHS = _public_paths()
_PRIVATE = re.compile("|".join(re.escape(k) for k in sorted(PUBLIC_PATHS, key=len, reverse=True)))


def _publicise(text):
  return _PRIVATE.sub(lambda m: PUBLIC_PATHS[m.group(0)], text) if text else text


def _skip_field_aliases(app, what, name, obj, skip, options):
  """NamedTuple fields are documented in the class docstring (Attributes:)."""
  doc = getattr(obj, "__doc__", None) or ""
  if doc.startswith("Alias for field number"):
    return True
  return None


def _public_docstring(app, what, name, obj, options, lines):
  lines[:] = [_publicise(line) for line in lines]


def _public_signature(app, what, name, obj, options, signature, return_annotation):
  return _publicise(signature), _publicise(return_annotation)


def setup(app):
  app.connect("builder-inited", _prepare)
  app.connect("autodoc-skip-member", _skip_field_aliases)
  # After napoleon (priority 500), which writes the attribute types.
  app.connect("autodoc-process-docstring", _public_docstring, priority=900)
  app.connect("autodoc-process-signature", _public_signature, priority=900)
