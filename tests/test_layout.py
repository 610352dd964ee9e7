"""The package layout promised by the 0.2 restructuring (issue 8).

* Implementation lives in ``scoregrad/_src``; public modules re-export it with
  an explicit ``__all__`` whose every name exists.
* No module is named like a public function (``scoregrad.pathwise`` is the
  function, and there is no module of that name to shadow it).
* Estimators ask the distribution for its family facts: no ``isinstance``
  on a built-in family and no family-name tags inside ``_src``.
* Names removed in 0.2 still work, with a DeprecationWarning.
"""

import ast
import importlib
from pathlib import Path
import pkgutil
import re

import pytest

import scoregrad as sg

ROOT = Path(sg.__file__).parent
PUBLIC_MODULES = [
  "scoregrad",
  "scoregrad.baselines",
  "scoregrad.control_variates",
  "scoregrad.diagnostics",
  "scoregrad.testing",
  "scoregrad.sampling",
  "scoregrad.shaping",
  "scoregrad.discrete",
  "scoregrad.dists",
  "scoregrad.compat",
  "scoregrad.compat.optax_monte_carlo",
  "scoregrad.numpyro",
  "scoregrad.rl",
  "scoregrad.sites",
  "scoregrad.vi",
]


def _all_modules():
  names = ["scoregrad"]
  for info in pkgutil.walk_packages([str(ROOT)], prefix="scoregrad."):
    names.append(info.name)
  return names


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_modules_declare_all(name):
  module = importlib.import_module(name)
  assert isinstance(module.__all__, tuple) and module.__all__, name
  for attr in module.__all__:
    assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"
  assert list(module.__all__) == sorted(set(module.__all__), key=module.__all__.index)


def test_every_non_private_module_is_listed_as_public():
  public = [n for n in _all_modules() if not any(p.startswith("_") for p in n.split("."))]
  assert sorted(public) == sorted(
    PUBLIC_MODULES + [n for n in public if n.startswith("scoregrad.dists.")]
  )


def test_no_module_is_named_like_a_public_function():
  functions = {
    n for n in sg.__all__ if callable(getattr(sg, n)) and not isinstance(getattr(sg, n), type)
  }
  functions |= {n for n in sg.discrete.__all__ if callable(getattr(sg.discrete, n))}
  for name in _all_modules():
    assert name.rsplit(".", 1)[-1] not in functions, name


FAMILIES = {
  "Normal",
  "MultivariateNormalTriL",
  "Bernoulli",
  "Categorical",
  "Poisson",
  "Exponential",
  "Gamma",
  "Laplace",
  "LogNormal",
  "Beta",
  "Dirichlet",
  "StudentT",
  "VonMises",
  "Binomial",
  "Geometric",
}


def test_estimators_do_not_branch_on_families():
  """No isinstance(dist, <family>) and no family tags in scoregrad/_src
  (the optax drop-in's own optax-0.1.8 Gaussian is the one exception: its
  draws are bespoke and it is recognised by its parameter layout, not by class)."""
  offenders = []
  for path in (ROOT / "_src").rglob("*.py"):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
      if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
        text = ast.unparse(node.args[1])
        if any(re.search(rf"\b{f}\b", text) for f in FAMILIES):
          offenders.append(f"{path.name}: {ast.unparse(node)}")
      if isinstance(node, ast.Compare) and any(
        isinstance(c, ast.Constant) and c.value in {f.lower() for f in FAMILIES}
        for c in node.comparators
      ):
        offenders.append(f"{path.name}: {ast.unparse(node)}")
  assert not offenders, offenders


def test_compat_uses_no_importlib_or_private_reach_ins():
  source = (ROOT / "_src" / "optax_compat.py").read_text()
  assert "importlib" not in source
  tree = ast.parse(source)
  modules = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom):
      for alias in node.names:
        assert not alias.name.startswith("_"), f"imports private {node.module}.{alias.name}"
        modules.add(alias.asname or alias.name)
    elif isinstance(node, ast.Import):
      modules.update(a.asname or a.name for a in node.names)
  for node in ast.walk(tree):
    if (
      isinstance(node, ast.Attribute)
      and node.attr.startswith("_")
      and not node.attr.startswith("__")
      and ast.unparse(node.value) in modules
    ):
      raise AssertionError(f"private reach-in {ast.unparse(node)}")


@pytest.mark.parametrize("name", ["PathwiseState", "MeasureValuedState"])
def test_removed_state_names_warn(name):
  with pytest.warns(DeprecationWarning, match=f"scoregrad.{name} is deprecated"):
    cls = getattr(sg, name)
  assert cls._fields == ("control_variate",)


def test_unknown_attribute_is_an_attribute_error():
  with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
    sg.nonexistent  # pylint: disable=pointless-statement
