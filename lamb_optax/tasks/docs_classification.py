"""The offline downstream task: which kind of object does a standard-library docstring document?

Built from the same text as the embedded pretraining corpus (the docstrings of the pure-Python
standard library, read with :mod:`ast`, cleaned by :func:`lamb_optax.data.sources._clean_doc`),
with labels from the code's real structure, not invented:

* ``module``: the module's docstring;
* ``class``: a top-level class's;
* ``function``: a top-level function's;
* ``method``: a function defined in a class body.

Only the docstring's text is the input (no name, no signature). Train and validation are split
by *module file* (a CRC32 of its path, 20% held out), so no module's docstrings are on both
sides. The classes are unbalanced (methods are about half): every evaluation reports
``majority_accuracy``, the accuracy of always answering the training set's most frequent kind.
It needs no download and is deterministic for a given Python version.

>>> examples = docstring_examples()
>>> sorted({e.label for e in examples}) == sorted(KINDS)
True
"""

from __future__ import annotations

import ast
import dataclasses
import os
import sysconfig
import zlib

import jax
import ml_collections
import numpy as np

from lamb_optax.data import sources
from lamb_optax.tasks import classification

KINDS = ("module", "class", "function", "method")
VALIDATION_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class Docstring:
  module: str  # path relative to the standard library, e.g. "json/decoder.py"
  label: str  # one of KINDS
  text: str


def _text(node) -> str:
  doc = ast.get_docstring(node)
  return " ".join(sources._clean_doc(doc)) if doc else ""  # pylint: disable=protected-access


def _public_functions(body):
  return [n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
          and not n.name.startswith("_")]


def module_docstrings(path: str, relative: str) -> list[Docstring]:
  """The labelled docstrings of one module file, in source order."""
  tree = sources.parse_module(path)
  if tree is None:
    return []
  found = [("module", tree)]
  for node in tree.body:
    if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
      found.append(("class", node))
      found += [("method", m) for m in _public_functions(node.body)]
  found += [("function", f) for f in _public_functions(tree.body)]
  found.sort(key=lambda kn: getattr(kn[1], "lineno", 0))
  return [Docstring(relative, kind, text) for kind, node in found if (text := _text(node))]


def docstring_examples(max_modules: int | None = None) -> list[Docstring]:
  """Every labelled docstring of the standard library (as the embedded corpus reads it)."""
  root = sysconfig.get_paths()["stdlib"]
  files = sources._stdlib_files()[:max_modules]  # pylint: disable=protected-access
  examples = []
  for path in files:
    examples += module_docstrings(path, os.path.relpath(path, root).replace(os.sep, "/"))
  return examples


def in_validation(module: str) -> bool:
  """The split, by module file: a stable hash of its path."""
  return zlib.crc32(module.encode("utf-8")) % 1000 < VALIDATION_FRACTION * 1000


def split(examples: list[Docstring]) -> tuple[list[Docstring], list[Docstring]]:
  train = [e for e in examples if not in_validation(e.module)]
  validation = [e for e in examples if in_validation(e.module)]
  return train, validation


def _arrays(tokenizer, examples, max_seq_length, limit):
  if limit:
    examples = examples[:limit]
  return classification.features(tokenizer, [e.text for e in examples], None,
                                 [KINDS.index(e.label) for e in examples], max_seq_length)


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
          workdir: str | None) -> classification.SequenceClassification:
  """The task (``config.task = "docs_classification"``); no data when ``workdir`` is None."""
  f = config.finetune

  def load(tokenizer):
    train, validation = split(docstring_examples())
    rng = np.random.default_rng(0)  # a fixed order: max_train_examples takes a fair sample
    train = [train[i] for i in rng.permutation(len(train))]
    return (_arrays(tokenizer, train, f.max_seq_length, f.max_train_examples),
            _arrays(tokenizer, validation, f.max_seq_length, f.max_eval_examples))

  return classification.build_task(config, mesh, name="Docstring kind", label_names=KINDS,
                                    load=load if workdir is not None else None)
