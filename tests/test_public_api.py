"""Every public name imports, and the fixed names of DESIGN.md exist."""

import inspect

import scoregrad as sg


def test_all_public_names_import():
  for name in sg.__all__:
    assert hasattr(sg, name), name
  for name in sg.dists.__all__:
    assert hasattr(sg.dists, name), name


def test_fixed_names_and_signatures():
  assert callable(sg.score_function) and callable(sg.pathwise) and callable(sg.expectation)
  # 0.1's five fields keep their positions; 0.2 appends the value's rows and
  # moments, then the kept samples and their costs (keep_samples=True).
  assert sg.Estimate._fields == (
    "value",
    "grad",
    "state",
    "per_sample",
    "moments",
    "per_sample_values",
    "value_moments",
    "samples",
    "costs",
  )
  assert sg.GradientEstimator._fields == ("init", "estimate")
  for factory in (sg.score_function, sg.pathwise):
    params = inspect.signature(factory).parameters
    assert all(p.kind is p.KEYWORD_ONLY for p in params.values())
    assert "num_samples" in params and "per_sample" in params
  for factory in (sg.score_function, sg.pathwise, sg.measure_valued):
    params = inspect.signature(factory).parameters
    assert {"sharding", "chunk_size", "moments"} <= set(params)
  assert "sharding" in inspect.signature(sg.expectation).parameters
  assert "baseline" in inspect.signature(sg.score_function).parameters
  est = sg.score_function(num_samples=2)
  assert list(inspect.signature(est.estimate).parameters) == [
    "key",
    "f",
    "dist_fn",
    "params",
    "state",
  ]
  sg.dists.Normal(0.0, 1.0)
  sg.dists.Bernoulli(logits=0.0)
  sg.dists.Categorical(logits=[0.0, 1.0])
  sg.baselines.leave_one_out()
  sg.baselines.moving_average(decay=0.9)
  assert callable(sg.dists.from_log_prob)


def test_py_typed_marker_shipped():
  import importlib.resources

  assert importlib.resources.files("scoregrad").joinpath("py.typed").is_file()


def test_every_public_function_has_a_fast_test():
  """`make test` (the fast tier) still exercises every public function.

  A name counts as covered when its docstring has an example (`make test` runs the
  doctests; none is in the slow tier) or when a test module with at least one test
  outside the slow tier (tests/conftest.py: SLOW prefixes, tests/slow_tier.txt)
  mentions it. Module granularity: a name used only by slow tests of a module that
  also has fast ones passes — the guard is against whole areas leaving `make test`.
  """
  import ast
  import importlib
  import pathlib
  import re

  import conftest

  from test_layout import PUBLIC_MODULES

  root = pathlib.Path(__file__).resolve().parent
  fast_sources = []
  for path in sorted(root.glob("test_*.py")):
    rel = f"tests/{path.name}"
    tree = ast.parse(path.read_text())
    tests = [
      n.name
      for n in tree.body
      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test_")
    ]
    fast = [
      t for t in tests if not conftest.is_slow(f"{rel}::{t}")
    ]  # a parametrized test with some slow cases keeps its fast ones
    if fast:
      fast_sources.append(path.read_text())
  text = "\n".join(fast_sources)
  missing = []
  for module in PUBLIC_MODULES:
    mod = importlib.import_module(module)
    for name in mod.__all__:
      obj = getattr(mod, name)
      if inspect.ismodule(obj) or inspect.isclass(obj) or not callable(obj):
        continue  # classes are the types the functions return (checked through them)
      if ">>>" in (inspect.getdoc(obj) or "") or re.search(rf"\b{re.escape(name)}\b", text):
        continue
      missing.append(f"{module}.{name}")
  assert not missing, f"public names with no test in `make test`: {missing}"
