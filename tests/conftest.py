"""Test helpers shared across test modules (see the root conftest.py for device setup).

The small pretraining corpus is a session fixture: every test that trains BERT in this process or
in trainer subprocesses reads the same one, built once per session (once per xdist worker).
"""
import pathlib
import sys

import pytest

# Test modules import the float64 NumPy references in this directory (tests/reference/).
sys.path.insert(0, str(pathlib.Path(__file__).parent))

import trainer_runs  # noqa: E402  (needs the sys.path entry above)


@pytest.fixture(scope="session")
def pretraining_data_dir(tmp_path_factory) -> str:
  """The embedded corpus cut to a few documents, as ``trainer_runs.SMALL`` runs read it."""
  directory = str(tmp_path_factory.mktemp("pretraining_data"))
  trainer_runs.prepare_small_data(directory)
  return directory
