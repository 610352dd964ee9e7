"""Packaging promises that hold without building anything (fast).

`make wheel-check` (.ci/wheel_check.py, run by .ci/run) builds the sdist and
wheel, runs `twine check --strict` and installs the wheel into a bare venv to
run an estimate; this file checks the sources those steps rely on.
"""

import ast
import pathlib
import re
import sys
import tomllib

import scoregrad

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def _requirement_names(requirements):
  return {
    re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements
  }


def test_version_has_one_source():
  assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
  attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
  assert attr == "scoregrad.__version__"
  assert re.fullmatch(r"\d+\.\d+\.\d+", scoregrad.__version__)


def _imports(nodes) -> set:
  names = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      names |= {a.name.split(".")[0] for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names.add(node.module.split(".")[0])
  return names - set(sys.stdlib_module_names) - {"scoregrad", "__future__"}


def test_every_third_party_import_is_declared():
  """Module-level imports are runtime dependencies; an import inside a function (an
  optional dependency, imported when used: numpyro for scoregrad.numpyro.ELBO) is
  declared in an extra."""
  declared = _requirement_names(PROJECT["dependencies"])
  extras = set().union(*map(_requirement_names, PROJECT["optional-dependencies"].values()))
  eager, lazy = set(), set()
  for path in (ROOT / "scoregrad").rglob("*.py"):
    tree = ast.parse(path.read_text())
    functions = [
      n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    inside = {id(n) for f in functions for n in ast.walk(f)}
    nodes = list(ast.walk(tree))
    eager |= _imports(n for n in nodes if id(n) not in inside)
    lazy |= _imports(n for n in nodes if id(n) in inside)
  assert eager <= declared, f"imported at module level but not declared: {sorted(eager - declared)}"
  assert lazy <= declared | extras, f"imported but in no extra: {sorted(lazy - declared - extras)}"
  assert "numpyro" in lazy  # the check sees function-level imports


def test_lowest_versions_match_the_constraints_file():
  pins = dict(
    line.split("==")
    for line in (ROOT / ".ci" / "minimum-versions.txt").read_text().splitlines()
    if line and not line.startswith("#")
  )
  for requirement in PROJECT["dependencies"]:
    name, low = re.fullmatch(r"([a-z_-]+)>=([\d.]+)", requirement).groups()
    assert name in pins, f"{name} has no pin in .ci/minimum-versions.txt"
    assert tuple(map(int, pins[name].split("."))) >= tuple(map(int, low.split("."))), name
    assert pins[name].startswith(low), f"{name}: pyproject says >={low}, pinned {pins[name]}"


def test_metadata_pypi_shows():
  assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
  assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
  assert PROJECT["readme"] == "README.md" and PROJECT["authors"]
  assert len(PROJECT["keywords"]) >= 5
  assert any(c.startswith("Programming Language :: Python :: 3.11") for c in PROJECT["classifiers"])
  assert {"docs", "dev"} <= set(PROJECT["optional-dependencies"])


def test_sdist_ships_no_tests():
  manifest = (ROOT / "MANIFEST.in").read_text().splitlines()
  for folder in ("tests", "benchmarks", "notebooks"):
    assert f"prune {folder}" in manifest


def test_ci_runs_static_checks_before_the_tests():
  steps = [
    line.split()[1]
    for line in (ROOT / ".ci" / "run").read_text().splitlines()
    if line.startswith("make ")
  ]
  assert "lint" in steps and steps.index("lint") < steps.index("test"), steps
  makefile = (ROOT / "Makefile").read_text()
  lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
  for command in ("ruff check", "ruff format --check", "mypy scoregrad"):
    assert command in lint, command
  assert "notebooks/*.ipynb" in makefile.split("\nnotebooks:", 1)[1].split("\n\n", 1)[0]
