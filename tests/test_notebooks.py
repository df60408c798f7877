"""Executes every colab/*.ipynb headless (nbclient), at test size, failing on any error.

How a notebook is made small enough to test: each notebook has exactly one code cell tagged
``parameters`` that holds its knobs (steps, sizes, ...) and reads the environment variable
``LAMB_OPTAX_NOTEBOOK_TEST``; when it is ``"1"`` the cell applies the notebook's own test-size
overrides, e.g.::

    STEPS = 200
    TEST_OVERRIDES = dict(STEPS=12)
    if os.environ.get("LAMB_OPTAX_NOTEBOOK_TEST") == "1":
        globals().update(TEST_OVERRIDES)

The harness runs every kernel with that variable set (Matplotlib on ipykernel's inline backend,
as on Colab), in a fresh temporary working directory, and fails when a cell raises, when a cell
runs longer than ``CELL_TIMEOUT_S``, or when the whole notebook takes longer than its budget:
the notebook's ``metadata.lamb_optax.test_time_budget_s`` (default ``DEFAULT_BUDGET_S``). New
notebooks in ``colab/`` are picked up automatically. Notebooks are stored without outputs
(checked here too).

Run one by hand: ``LAMB_OPTAX_NOTEBOOK_TEST=1 jupyter nbconvert --execute --to notebook
colab/NAME.ipynb --output /tmp/out.ipynb``.
"""

import json
import os
import pathlib
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
TEST_ENV = "LAMB_OPTAX_NOTEBOOK_TEST"
CELL_TIMEOUT_S = 300
DEFAULT_BUDGET_S = 120
KERNEL_NAME = "lamb_optax_test"


def _ids(paths):
  return [p.name for p in paths]


def _read(path):
  nbformat = pytest.importorskip("nbformat")
  return nbformat.read(path, as_version=4)


def _parameter_cells(nb):
  return [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]


def test_there_are_notebooks():
  assert NOTEBOOKS, "colab/ has no notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_clean_and_testable(path):
  """Valid, stored without outputs, one ``parameters`` cell that knows the test switch."""
  nbformat = pytest.importorskip("nbformat")
  nb = _read(path)
  nbformat.validate(nb)
  dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
           and (c.get("outputs") or c.get("execution_count") is not None)]
  assert not dirty, (f"{path.name}: cells {dirty} have outputs; store notebooks without them "
                     f"(`jupyter nbconvert --clear-output --inplace {path.relative_to(ROOT)}`).")
  params = _parameter_cells(nb)
  assert len(params) == 1 and params[0].cell_type == "code", (
      f"{path.name}: needs exactly one code cell tagged 'parameters' (found {len(params)}).")
  assert TEST_ENV in params[0].source, (
      f"{path.name}: its 'parameters' cell must read ${TEST_ENV} and shrink the run when it is "
      "'1' (see tests/test_notebooks.py).")
  first = nb.cells[0]
  badge = f"colab.research.google.com/github/lamb-optax/lamb_optax/blob/main/colab/{path.name}"
  assert first.cell_type == "markdown" and badge in first.source, (
      f"{path.name}: the first cell should be a markdown cell with the Open-in-Colab badge "
      f"linking to https://{badge}.")


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
  """A kernelspec that runs *this* interpreter, whatever 'python3' means on the machine."""
  pytest.importorskip("nbclient")
  pytest.importorskip("ipykernel")
  root = tmp_path_factory.mktemp("jupyter")
  spec = root / "kernels" / KERNEL_NAME
  spec.mkdir(parents=True)
  (spec / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "lamb_optax tests", "language": "python"}))
  return root


@pytest.mark.slow  # a kernel per notebook, each training at test size
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, kernel_dir, tmp_path, monkeypatch):
  nbclient = pytest.importorskip("nbclient")
  nb = _read(path)
  # The kernel inherits this environment (and the root conftest's CPU-only JAX settings).
  monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
  monkeypatch.setenv(TEST_ENV, "1")
  monkeypatch.delenv("MPLBACKEND", raising=False)  # ipykernel's inline backend, as on Colab
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])))
  client = nbclient.NotebookClient(
      nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME, allow_errors=False,
      resources={"metadata": {"path": str(tmp_path)}})
  start = time.perf_counter()
  try:
    client.execute()
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f"{path.name} raised:\n{e}", pytrace=False)
  elapsed = time.perf_counter() - start
  budget = nb.metadata.get("lamb_optax", {}).get("test_time_budget_s", DEFAULT_BUDGET_S)
  assert elapsed < budget, (
      f"{path.name} took {elapsed:.0f} s at test size (budget {budget} s): shrink its "
      f"TEST_OVERRIDES, or raise metadata.lamb_optax.test_time_budget_s if it must be slower.")
