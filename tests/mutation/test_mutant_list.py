"""The mutant list stays current: every mutant's original occurs exactly once in
its file, names are unique and the covering test files exist (issue 29: the
0.1 list went stale in the restructure, 11 of its originals no longer existed,
and nothing noticed). Cheap: reads files, runs no mutant.

If this fails after a change to the library, update the mutant's ``original``
(and ``replacement``) in ``tests/mutation/run_mutants.py`` to the new code, and
run it: ``python tests/mutation/run_mutants.py --only <name>``.
"""

import importlib.util
import pathlib

import pytest

_PATH = pathlib.Path(__file__).with_name("run_mutants.py")


def _runner():
  spec = importlib.util.spec_from_file_location("run_mutants", _PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_mutant_applies_to_the_current_code(capsys):
  runner = _runner()
  try:
    runner.check_mutants(runner.MUTANTS)
  except SystemExit:
    pytest.fail(capsys.readouterr().err)
  # The modules of issue 29 are covered.
  paths = {m.path for m in runner.MUTANTS}
  assert {"scoregrad/_src/selection.py", "scoregrad/_src/diagnostics.py"} <= paths


def test_a_stale_mutant_is_reported(capsys):
  runner = _runner()
  stale = runner.MUTANTS[0]._replace(original="this text is in no file")
  with pytest.raises(SystemExit) as info:
    runner.check_mutants((stale,))
  assert info.value.code == 2
  assert "occurs 0 times" in capsys.readouterr().err
