"""Every notebook in notebooks/ executes top to bottom in a fresh kernel.

One test per ``notebooks/*.ipynb`` (new notebooks are picked up automatically),
run with the repository root as the working directory. Select them alone with
``pytest -m notebooks``, or leave them out with ``-m "not notebooks"``.

The kernel is this interpreter, always: a kernelspec written to a temporary
directory points at ``sys.executable``, and the kernel manager looks only
there. Resolving the name "python3" through the default Jupyter paths could
instead pick a user-level kernelspec (~/.local/share/jupyter/kernels) that
runs another Python without scoregrad installed.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError
import nbformat
import pytest
from traitlets import default

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300
KERNEL_NAME = "scoregrad-test-python"

pytestmark = pytest.mark.notebooks


def test_notebooks_found():
  """Guards against the parametrised test below silently collecting nothing."""
  assert NOTEBOOKS, f"no notebooks found in {REPO_ROOT / 'notebooks'}"


@pytest.fixture(scope="module")
def kernel_manager_class(tmp_path_factory):
  """A kernel manager class whose only kernelspec is this interpreter's ipykernel.

  nbclient creates (and afterwards shuts down) one manager per notebook from
  this class, so every notebook gets a fresh kernel.
  """
  kernels = tmp_path_factory.mktemp("kernels")
  spec_dir = kernels / KERNEL_NAME
  spec_dir.mkdir()
  spec = {
    "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    "display_name": f"Python ({sys.executable})",
    "language": "python",
  }
  (spec_dir / "kernel.json").write_text(json.dumps(spec))

  class ThisInterpreterKernelManager(AsyncKernelManager):
    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self):
      return KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)

  return ThisInterpreterKernelManager


FIGURE = re.compile(r"\bplt\.|\.subplots\(|\.plot\(")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_with_outputs(path):
  """Notebooks are committed executed, top to bottom, with their outputs and figures.

  git and the docs site (rendered without execution) show them as committed;
  `make notebooks` refreshes them, and the test below re-executes them.
  """
  nb = nbformat.read(path, as_version=4)
  code = [cell for cell in nb.cells if cell.cell_type == "code"]
  counts = [cell.execution_count for cell in code]
  assert counts == list(range(1, len(code) + 1)), (
    f"{path.name}: execution counts {counts} are not one top-to-bottom run; "
    "refresh the outputs with `make notebooks`."
  )
  errors = [
    i for i, cell in enumerate(code) if any(out.output_type == "error" for out in cell.outputs)
  ]
  assert not errors, f"{path.name}: code cells {errors} hold errors"
  no_figure = [
    i
    for i, cell in enumerate(code)
    if FIGURE.search(cell.source)
    and not any("image/png" in out.get("data", {}) for out in cell.outputs)
  ]
  assert not no_figure, f"{path.name}: code cells {no_figure} plot but hold no figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, kernel_manager_class):
  """Runs every cell in a fresh kernel (cwd = repository root); any error fails."""
  nb = nbformat.read(path, as_version=4)
  client = NotebookClient(
    nb,
    kernel_manager_class=kernel_manager_class,
    kernel_name=KERNEL_NAME,
    timeout=CELL_TIMEOUT_S,
    resources={"metadata": {"path": str(REPO_ROOT)}},
  )  # the kernel's cwd
  failure = None
  try:
    client.execute()
  except CellExecutionError as e:
    # The message holds the failing cell's source and its traceback.
    failure = f"{path.name} raised in a cell:\n{_strip_ansi(str(e))}"
  except CellTimeoutError as e:
    failure = f"{path.name}: a cell ran longer than {CELL_TIMEOUT_S} s:\n{e}"
  if failure is not None:  # Outside the except block: no chained traceback.
    pytest.fail(failure, pytrace=False)


def _strip_ansi(text: str) -> str:
  """Removes the colour codes of IPython's tracebacks, for readable logs."""
  return re.sub(r"\x1b\[[0-9;]*m", "", text)
