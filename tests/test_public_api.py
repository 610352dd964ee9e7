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
