"""Sphinx configuration of the API reference, built from the package's docstrings.

Build: ``sphinx-build -W --keep-going -b html docs/api <output dir>`` (from the repository root).
The examples in the docstrings are the doctests pytest runs (``--doctest-modules``); this
reference renders the same text and runs nothing.
"""

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The checkout, not an installed copy, is what the reference describes.
sys.path.insert(0, str(ROOT))
# Importing the trainer modules must not look for accelerators.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

project = "lamb_optax"
author = "lamb_optax authors"
copyright = "lamb_optax authors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

# Google-style docstrings (Args:, Returns:, Raises:, Example:).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "signature"
# Signatures name these aliases instead of spelling out the unions they stand for.
autodoc_type_aliases = {
    "MaskSpec": "lamb_optax.masks.MaskSpec",
    "StackedAxesSpec": "lamb_optax.masks.StackedAxesSpec",
    "Bounds": "lamb_optax.validation.Bounds",
    "PyTree": "PyTree",
    "optax.Schedule": "optax.Schedule",
    "optax.Params": "optax.Params",
    "optax.Updates": "optax.Updates",
    "chex.ArrayDType": "chex.ArrayDType",
    "chex.Array": "chex.Array",
    "chex.Numeric": "chex.Numeric",
}

html_theme = "alabaster"
html_static_path: list[str] = []
html_title = "lamb_optax API reference"
