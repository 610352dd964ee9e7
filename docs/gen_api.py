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
  (
    "scoregrad.numpyro",
    "scoregrad.numpyro",
    "An ELBO loss for numpyro.infer.SVI built on scoregrad.surrogate (numpyro optional).",
  ),
  ("scoregrad.compat", "scoregrad.compat", "Compatibility layers."),
  (
    "scoregrad.compat.optax_monte_carlo",
    "scoregrad.compat.optax_monte_carlo",
    "Drop-in replacement for the removed optax.monte_carlo.",
  ),
]


# The API landing table: the public names grouped by what a user wants to do,
# one line each (the first line of the docstring). A name is placed by its
# qualified name in GROUPS, else by its module in MODULE_GROUPS, else by
# kind (classes of the top-level module go to "Types, states and results");
# a public function placed nowhere stops the build with a message naming it.
GROUPS = {
  "Estimators": [
    "scoregrad.score_function",
    "scoregrad.pathwise",
    "scoregrad.measure_valued",
    "scoregrad.mixed",
    "scoregrad.select",
  ],
  "Front door and surrogates": [
    "scoregrad.expectation",
    "scoregrad.score_function_surrogate",
    "scoregrad.dice",
    "scoregrad.magic_box",
  ],
  "Stochastic computation graphs": [
    "scoregrad.sample",
    "scoregrad.cost",
    "scoregrad.plate",
    "scoregrad.scan",
    "scoregrad.fori_loop",
    "scoregrad.surrogate",
  ],
  "Layers (wrappers around any estimator)": [
    "scoregrad.chunked",
    "scoregrad.sharded",
    "scoregrad.with_moments",
    "scoregrad.with_control_variate",
    "scoregrad.with_fitness_shaping",
    "scoregrad.natural_gradient",
    "scoregrad.describe",
  ],
}
MODULE_GROUPS = {
  "scoregrad.discrete": "Estimators for discrete latent variables",
  "scoregrad.sites": "Stochastic computation graphs",
  "scoregrad.vi": "Variational objectives",
  "scoregrad.baselines": "Baselines and control variates",
  "scoregrad.control_variates": "Baselines and control variates",
  "scoregrad.dists": "Distributions",
  "scoregrad.diagnostics": "Diagnostics and testing",
  "scoregrad.testing": "Diagnostics and testing",
  "scoregrad.rl": "Reinforcement learning helpers",
  "scoregrad.sampling": "Sampling (antithetic, randomised QMC)",
  "scoregrad.compat": "Compatibility",
  "scoregrad.compat.optax_monte_carlo": "Compatibility",
  "scoregrad.numpyro": "Stochastic computation graphs",
  "scoregrad.shaping": "Evolution strategies: fitness shaping",
}
GROUP_ORDER = [
  "Estimators",
  "Estimators for discrete latent variables",
  "Front door and surrogates",
  "Stochastic computation graphs",
  "Variational objectives",
  "Baselines and control variates",
  "Layers (wrappers around any estimator)",
  "Distributions",
  "Diagnostics and testing",
  "Reinforcement learning helpers",
  "Sampling (antithetic, randomised QMC)",
  "Evolution strategies: fitness shaping",
  "Compatibility",
  "Types, states and results",
]


def _summary(obj) -> str:
  doc = inspect.getdoc(obj) or ""
  line = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
  return line.replace("|", "\\|")


def landing_groups() -> dict:
  """{group: [(indexed target, summary)]} over every public non-module name, in GROUP_ORDER."""
  placed: dict = {}
  where = {name: group for group, names in GROUPS.items() for name in names}
  exporters: dict = {}  # id(obj) -> every public module exporting it
  for module, _, _ in PUBLIC_MODULES:
    mod = importlib.import_module(module)
    for name in mod.__all__:
      exporters.setdefault(id(getattr(mod, name)), []).append(module)
  seen: dict = {}
  unplaced = []
  for module, _, _ in PUBLIC_MODULES:
    mod = importlib.import_module(module)
    for name in mod.__all__:
      obj = getattr(mod, name)
      if inspect.ismodule(obj) or id(obj) in seen:
        continue
      target = f"{module}.{name}"
      seen[id(obj)] = target
      by_module = [MODULE_GROUPS[m] for m in exporters[id(obj)] if m in MODULE_GROUPS]
      group = where.get(target) or (by_module[0] if by_module else None)
      if group is None and module == "scoregrad" and inspect.isclass(obj):
        group = "Types, states and results"
      if group is None:
        unplaced.append(target)
        continue
      order = GROUPS.get(group, [])
      rank = (inspect.isclass(obj), order.index(target) if target in order else len(order), name)
      placed.setdefault(group, []).append((rank, target, _summary(obj)))
  if unplaced:
    raise ValueError(
      f"docs/gen_api.py: public names {unplaced} have no group in the API landing "
      "table; add them to GROUPS (or their module to MODULE_GROUPS)."
    )
  unknown = set(placed) - set(GROUP_ORDER)
  if unknown:
    raise ValueError(f"docs/gen_api.py: groups {sorted(unknown)} are missing from GROUP_ORDER")
  return {g: [row[1:] for row in sorted(placed[g])] for g in GROUP_ORDER if g in placed}


def landing() -> str:
  """The API index page: the grouped table, then the per-module pages."""
  lines = [
    "API reference",
    "=============",
    "",
    "Every public name, grouped by task, one line each; the pages below hold the",
    "full entries (generated from the docstrings of the public modules' ``__all__``).",
    "Functions come first on each page, the states and result types they return after.",
    "",
  ]
  for group, rows in landing_groups().items():
    lines += [
      group,
      "-" * len(group),
      "",
      ".. list-table::",
      "   :widths: 30 70",
      "   :class: api-summary",
      "",
    ]
    for target, summary in rows:
      lines += [f"   * - :obj:`~{target}`", f"     - {summary or ' '}"]
    lines.append("")
  toc = "\n".join(f"   {m.replace('.', '_')}" for m, _, _ in PUBLIC_MODULES)
  lines += ["Modules", "-------", "", ".. toctree::", "   :maxdepth: 1", "", toc, ""]
  return "\n".join(lines)


def _order(module: str, mod, position: dict) -> list:
  """Functions first, then submodules, then exceptions and classes (states, results).

  Within each kind, names keep the landing table's order (``position``: the
  estimators first), then ``__all__``'s.
  """

  def rank(name):
    obj = getattr(mod, name)
    kind = 1 if inspect.ismodule(obj) else 2 if inspect.isclass(obj) else 0
    return kind, position.get(f"{module}.{name}", len(position))

  return sorted(mod.__all__, key=rank)


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
  position = {t: i for i, t in enumerate(t for rows in landing_groups().values() for t, _ in rows)}
  for name in _order(module, mod, position):
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
  index = landing()
  path = outdir / "index.rst"
  if not path.exists() or path.read_text() != index:
    path.write_text(index)
  return [path, *written]
