"""Test helpers shared across test modules (see the root conftest.py for device setup)."""
import pathlib
import sys

# Test modules import the float64 NumPy references in this directory (tests/reference/).
sys.path.insert(0, str(pathlib.Path(__file__).parent))
