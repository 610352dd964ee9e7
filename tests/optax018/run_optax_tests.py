"""Runs optax 0.1.8's own ``monte_carlo`` tests against scoregrad's drop-in.

optax 0.1.8 ships ``optax/monte_carlo/stochastic_gradient_estimators_test.py``
and ``optax/monte_carlo/control_variates_test.py``. This script runs those two
files UNMODIFIED with the current interpreter (scoregrad's venv), after
pointing the names they import at scoregrad:

* ``optax.monte_carlo.stochastic_gradient_estimators``,
* ``optax.monte_carlo.control_variates`` and
* ``optax._src.utils`` (for ``multi_normal``)

all resolve to :mod:`scoregrad.compat.optax_monte_carlo`. The stand-in
``optax`` modules are in ``sys.modules`` only while the two test modules are
imported; the installed optax (0.2.x, which scoregrad itself uses) is put back
before any test runs, so nothing else sees them.

Usage::

  python tests/optax018/run_optax_tests.py [--optax-tests DIR] [-k PATTERN] [-v]

``DIR`` is an optax 0.1.8 installation's ``optax/monte_carlo`` folder (or the
``optax`` package folder, or the ``site-packages`` folder holding it). Without
it, the optax 0.1.8 wheel is downloaded with ``pip download`` (needs network
access to PyPI) into a temporary folder and the two test files are read from
it; optax 0.1.8 itself is never installed or imported.

The test files import ``absl.testing`` and ``chex`` (the ``optax018`` extra of
scoregrad's pyproject.toml). Exit status: 0 when every test passed (skips
allowed), 1 otherwise. Not collected by pytest (no ``test_`` prefix); run it
with ``make optax-conformance``.
"""

import argparse
import contextlib
import importlib.util
import pathlib
import subprocess
import sys
import tempfile
import time
import types
import unittest
import zipfile

OPTAX_VERSION = "0.1.8"
TEST_FILES = ("stochastic_gradient_estimators_test.py", "control_variates_test.py")
# The modules the test files import, each answered by scoregrad's drop-in.
REDIRECTED = (
  "optax.monte_carlo.stochastic_gradient_estimators",
  "optax.monte_carlo.control_variates",
  "optax._src.utils",
)


def find_test_files(location):
  """The two test files under ``location`` (monte_carlo, optax or site-packages).

  Args:
    location: a folder.

  Returns:
    A list of two paths, in the order of ``TEST_FILES``.

  Raises:
    FileNotFoundError: naming the folders searched.
  """
  root = pathlib.Path(location).expanduser().resolve()
  candidates = [root, root / "monte_carlo", root / "optax" / "monte_carlo"]
  for folder in candidates:
    paths = [folder / name for name in TEST_FILES]
    if all(p.is_file() for p in paths):
      return paths
  raise FileNotFoundError(
    f"--optax-tests={str(location)!r}: found neither {' nor '.join(TEST_FILES)} in "
    f"{', '.join(str(c) for c in candidates)}. Pass an optax {OPTAX_VERSION} "
    "installation's optax/monte_carlo folder (e.g. "
    "<venv>/lib/python3.11/site-packages/optax/monte_carlo), or omit the option to "
    "download the wheel from PyPI."
  )


def download_test_files(dest):
  """Downloads the optax 0.1.8 wheel into ``dest`` and extracts the test files.

  Args:
    dest: a folder (created if missing).

  Returns:
    A list of two paths, in the order of ``TEST_FILES``.
  """
  dest = pathlib.Path(dest)
  dest.mkdir(parents=True, exist_ok=True)
  cmd = [
    sys.executable,
    "-m",
    "pip",
    "download",
    "--quiet",
    "--no-deps",
    "--only-binary=:all:",
    "--dest",
    str(dest),
    f"optax=={OPTAX_VERSION}",
  ]
  print(f"downloading optax {OPTAX_VERSION}: {' '.join(cmd)}", flush=True)
  try:
    subprocess.run(cmd, check=True)
  except subprocess.CalledProcessError as e:
    raise SystemExit(
      f"`pip download optax=={OPTAX_VERSION}` failed (exit {e.returncode}); it needs "
      "network access to PyPI. Offline, pass --optax-tests with the monte_carlo "
      f"folder of an existing optax {OPTAX_VERSION} installation."
    ) from e
  wheels = sorted(dest.glob(f"optax-{OPTAX_VERSION}-*.whl"))
  if not wheels:
    raise SystemExit(f"pip download left no optax-{OPTAX_VERSION} wheel in {dest}.")
  out = dest / "optax" / "monte_carlo"
  out.mkdir(parents=True, exist_ok=True)
  with zipfile.ZipFile(wheels[0]) as wheel:
    for name in TEST_FILES:
      (out / name).write_bytes(wheel.read(f"optax/monte_carlo/{name}"))
  return [out / name for name in TEST_FILES]


def _stand_ins(compat):
  """Stand-in ``optax`` package modules whose leaves are ``compat``."""

  def package(name):
    module = types.ModuleType(name, f"Stand-in for {name}: scoregrad's optax drop-in.")
    module.__path__ = []  # a package, so that submodule imports resolve
    return module

  optax = package("optax")
  optax.__version__ = f"{OPTAX_VERSION} (scoregrad.compat.optax_monte_carlo)"
  src = package("optax._src")
  monte_carlo = package("optax.monte_carlo")
  optax._src, optax.monte_carlo = src, monte_carlo
  src.utils = compat
  monte_carlo.stochastic_gradient_estimators = compat
  monte_carlo.control_variates = compat
  modules = {"optax": optax, "optax._src": src, "optax.monte_carlo": monte_carlo}
  modules.update(dict.fromkeys(REDIRECTED, compat))
  return modules


@contextlib.contextmanager
def redirected_optax():
  """Within the block, ``import optax...`` finds scoregrad's stand-ins.

  Every ``sys.modules`` entry named ``optax`` or ``optax.*`` is removed on
  entry and restored exactly on exit.
  """
  from scoregrad.compat import optax_monte_carlo as compat

  saved = {k: v for k, v in sys.modules.items() if k == "optax" or k.startswith("optax.")}
  for k in saved:
    del sys.modules[k]
  stand_ins = _stand_ins(compat)
  sys.modules.update(stand_ins)
  try:
    yield
  finally:
    for k in [k for k in sys.modules if k == "optax" or k.startswith("optax.")]:
      del sys.modules[k]
    sys.modules.update(saved)


def import_test_module(path):
  """Imports one optax test file (as ``optax018_<stem>``) with optax redirected.

  Args:
    path: the test file.

  Returns:
    The module.
  """
  name = f"optax018_{pathlib.Path(path).stem}"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  with redirected_optax():
    sys.modules[name] = module
    spec.loader.exec_module(module)
  compat = sys.modules["scoregrad.compat.optax_monte_carlo"]
  for attr in ("sge", "control_variates", "utils"):  # the test files' import names
    if hasattr(module, attr) and getattr(module, attr) is not compat:
      raise RuntimeError(f"{path}: `{attr}` did not resolve to scoregrad's drop-in.")
  return module


class _Result(unittest.TextTestResult):
  """Records each test's wall time for the summary."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.times = {}
    self._start = None

  def startTest(self, test):
    self._start = time.perf_counter()
    super().startTest(test)

  def stopTest(self, test):
    name = f"{type(test).__name__}.{getattr(test, '_testMethodName', test.id())}"
    self.times[name] = time.perf_counter() - self._start
    super().stopTest(test)


def run(paths, patterns=(), verbosity=1):
  """Runs the test files; returns the unittest result.

  Args:
    paths: the test files.
    patterns: unittest ``-k`` patterns (substrings or fnmatch patterns of
      test ids); empty for all.
    verbosity: unittest verbosity.

  Returns:
    The ``unittest.TestResult``.
  """
  modules = [import_test_module(p) for p in paths]
  from absl import flags  # defined by the test files' absltest/chex imports

  if not flags.FLAGS.is_parsed():
    flags.FLAGS([sys.argv[0]])
  loader = unittest.TestLoader()
  if patterns:
    loader.testNamePatterns = [p if "*" in p else f"*{p}*" for p in patterns]
  suite = unittest.TestSuite(loader.loadTestsFromModule(m) for m in modules)
  runner = unittest.TextTestRunner(verbosity=verbosity, resultclass=_Result, stream=sys.stdout)
  return runner.run(suite)


def summary(result):
  """One line: ran/passed/failed/errors/skipped."""
  bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
  passed = result.testsRun - bad - len(result.skipped) - len(result.expectedFailures)
  return (
    f"optax {OPTAX_VERSION} monte_carlo tests against scoregrad.compat.optax_monte_carlo: "
    f"ran {result.testsRun}, passed {passed}, failed {len(result.failures)}, "
    f"errors {len(result.errors)}, skipped {len(result.skipped)}"
  )


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument(
    "--optax-tests",
    metavar="DIR",
    help=f"optax {OPTAX_VERSION}'s optax/monte_carlo folder (or optax/ or site-packages/); "
    "default: pip-download the wheel into a temporary folder (needs network)",
  )
  parser.add_argument(
    "-k",
    dest="patterns",
    action="append",
    default=[],
    help="only tests whose id matches (substring or fnmatch; repeatable)",
  )
  parser.add_argument("-v", "--verbose", action="store_true", help="one line per test")
  parser.add_argument(
    "--slowest", type=int, default=5, metavar="N", help="list the N slowest tests (default 5)"
  )
  args = parser.parse_args(argv)

  with tempfile.TemporaryDirectory(prefix="optax018_") as tmp:
    if args.optax_tests:
      paths = find_test_files(args.optax_tests)
    else:
      paths = download_test_files(tmp)
    print("test files: " + ", ".join(str(p) for p in paths), flush=True)
    result = run(paths, args.patterns, verbosity=2 if args.verbose else 1)

  slowest = sorted(result.times.items(), key=lambda kv: -kv[1])[: args.slowest]
  if slowest:
    print("slowest: " + "; ".join(f"{t:.1f}s {name}" for name, t in slowest))
  print(summary(result))
  ok = result.testsRun > 0 and result.wasSuccessful()
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
