"""Writes the API reference pages (docs/api/*.rst) from the public ``__all__`` lists.

Called by ``conf.py`` at the start of every build, so a name added to an
``__all__`` appears in the reference without editing the docs;
``tests/test_docs.py`` checks that every public name has an entry.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

# (module, page title, one-line description), in the order of the API index.
PUBLIC_MODULES = [
  (
    "scoregrad",
    "scoregrad",
    "Estimators, the differentiable front door, surrogates and core types.",
  ),
  ("scoregrad.dists", "scoregrad.dists", "Distributions and the distribution protocol."),
  ("scoregrad.baselines", "scoregrad.baselines", "Baselines for score-function estimators."),
  (
    "scoregrad.control_variates",
    "scoregrad.control_variates",
    "Control variates, composable with any estimator.",
  ),
  ("scoregrad.discrete", "scoregrad.discrete", "Estimators for discrete latent variables."),
  ("scoregrad.diagnostics", "scoregrad.diagnostics", "Variance, standard error, SNR and bias."),
  (
    "scoregrad.rl",
    "scoregrad.rl",
    "Returns, lambda-returns and advantages for policy-gradient losses.",
  ),
  (
    "scoregrad.vi",
    "scoregrad.vi",
    "Variational bounds (ELBO, IWAE, Renyi) with their gradient estimators.",
  ),
  (
    "scoregrad.testing",
    "scoregrad.testing",
    "Statistical assertions with standard-error tolerances.",
  ),
  ("scoregrad.sampling", "scoregrad.sampling", "Antithetic and randomised-QMC sampling."),
  (
    "scoregrad.shaping",
    "scoregrad.shaping",
    "Fitness shaping for evolution strategies (centered ranks, z-scores, NES weights).",
  ),
  ("scoregrad.sites", "scoregrad.sites", "Site estimators for sg.sample inside a program."),
  ("scoregrad.compat", "scoregrad.compat", "Compatibility layers."),
  (
    "scoregrad.compat.optax_monte_carlo",
    "scoregrad.compat.optax_monte_carlo",
    "Drop-in replacement for the removed optax.monte_carlo.",
  ),
]


def _entry(module: str, name: str, obj, seen: dict) -> str:
  """The autodoc directive for ``module.name``.

  An object re-exported by several public modules (``scoregrad.RebarState``
  is ``scoregrad.discrete.RebarState``) is indexed, and so cross-referenced,
  at its first page in PUBLIC_MODULES order; later pages show it in full too,
  with ``:no-index:`` and a pointer to the first.
  """
  target = f"{module}.{name}"
  first = seen.setdefault(id(obj), target) if not inspect.ismodule(obj) else target
  extra = ""
  if first != target:
    extra = "   :no-index:\n"
  if inspect.ismodule(obj):
    page = obj.__name__.replace(".", "_")
    return f".. rubric:: {name}\n\nThe submodule :doc:`{obj.__name__} <{page}>`.\n"
  note = f"\n   Also available as :obj:`{first}`.\n" if extra else ""
  if inspect.isclass(obj):
    return f".. autoclass:: {target}\n   :members:\n   :show-inheritance:\n{extra}{note}"
  if callable(obj):
    return f".. autofunction:: {target}\n{extra}{note}"
  return f".. autodata:: {target}\n   :no-value:\n{extra}{note}"


def page(module: str, title: str, description: str, seen: dict) -> str:
  mod = importlib.import_module(module)
  lines = [
    title,
    "=" * len(title),
    "",
    description,
    "",
    f".. module:: {module}",
    "",
    ".. contents:: On this page",
    "   :local:",
    "",
  ]
  for name in mod.__all__:
    lines.append(_entry(module, name, getattr(mod, name), seen))
  return "\n".join(lines)


def write(outdir: Path) -> list[Path]:
  """Writes one page per public module plus an index; returns the paths."""
  outdir.mkdir(parents=True, exist_ok=True)
  written, seen = [], {}
  for module, title, description in PUBLIC_MODULES:
    path = outdir / f"{module.replace('.', '_')}.rst"
    text = page(module, title, description, seen)
    if not path.exists() or path.read_text() != text:  # keep mtimes: incremental builds
      path.write_text(text)
    written.append(path)
  toc = "\n".join(f"   {m.replace('.', '_')}" for m, _, _ in PUBLIC_MODULES)
  index = (
    "API reference\n=============\n\nGenerated from the docstrings of every name in "
    "the public modules' ``__all__``.\n\n.. toctree::\n   :maxdepth: 1\n\n" + toc + "\n"
  )
  path = outdir / "index.rst"
  if not path.exists() or path.read_text() != index:
    path.write_text(index)
  return [path, *written]
