"""Text inputs for pretraining data: Google-format text files, TFDS text datasets, Python's docs.

Every source yields *documents*: lists of sentences (strings). Google's text format is one
sentence per line with a blank line between documents; raw paragraphs (TFDS text features, the
embedded corpus) go through :func:`split_sentences`, a small deterministic splitter.

The embedded corpus (:func:`python_docs_documents`) is English text that ships with every
CPython: the ``pydoc_data.topics`` help pages and the docstrings of the pure-Python standard
library, read from source with :mod:`ast` (nothing is imported, so no module's import side
effects run). It is deterministic for a given Python version.

>>> split_sentences("LAMB adapts per layer. It scales the update!  Why? e.g. this stays.")
['LAMB adapts per layer.', 'It scales the update!', 'Why? e.g. this stays.']
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import itertools
import os
import re
import sysconfig
from collections.abc import Iterator, Sequence

Document = list[str]

# A sentence ends at . ! or ? followed by whitespace and an upper-case letter, digit, quote or
# bracket; a few abbreviations are protected. Deterministic, no model, good enough for NSP.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9\"'(\[`])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "Mr.", "Dr.", "cf.", "No.", "approx.")
_MIN_SENTENCE_CHARS = 2
_RULE = re.compile(r"^[-=*~^+#_]{3,}$")
# Google's format has one sentence per line. A longer line is not a sentence (e.g. a whole book
# without newlines): tokenizing it whole took 5 GB of RAM for 37 MB, and every token past
# max_seq_length would be cut anyway. Lines are read at most this long, so memory stays bounded.
MAX_LINE_BYTES = 1 << 20


def split_sentences(text: str) -> list[str]:
  """Splits a paragraph of running text into sentences (whitespace collapsed)."""
  text = " ".join(text.split())
  if not text:
    return []
  pieces = _SENTENCE_END.split(text)
  sentences: list[str] = []
  for piece in pieces:
    # Re-join a split made right after an abbreviation ("e.g. This" is one sentence).
    if sentences and sentences[-1].endswith(_ABBREVIATIONS):
      sentences[-1] = f"{sentences[-1]} {piece}"
    else:
      sentences.append(piece)
  return [s for s in sentences if len(s) >= _MIN_SENTENCE_CHARS]


def paragraphs_to_sentences(text: str) -> list[str]:
  """Sentences of a text whose paragraphs are separated by blank lines."""
  sentences: list[str] = []
  for paragraph in re.split(r"\n\s*\n", text):
    sentences.extend(split_sentences(paragraph))
  return sentences


@dataclasses.dataclass
class InputStats:
  """What reading the inputs found: counts to report (the CLI prints them)."""
  files: int = 0
  documents: int = 0
  sentences: int = 0
  undecodable_lines: int = 0
  replaced_chars: int = 0  # U+FFFD put in place of bytes that were not valid UTF-8


def expand_input_patterns(input_file: str | Sequence[str]) -> list[str]:
  """Comma-separated paths/globs (or a list of them) -> sorted existing files.

  Raises:
    FileNotFoundError: a pattern matches nothing, naming it.
  """
  patterns = input_file.split(",") if isinstance(input_file, str) else list(input_file)
  files: list[str] = []
  for pattern in (p.strip() for p in patterns):
    if not pattern:
      continue
    matched = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else (
        [pattern] if os.path.exists(pattern) else [])
    matched = [m for m in matched if os.path.isfile(m)]
    if not matched:
      raise FileNotFoundError(f"Input {pattern!r} matches no file.")
    files.extend(matched)
  if not files:
    raise FileNotFoundError("No input files given.")
  return files


def read_text_documents(files: Sequence[str], stats: InputStats | None = None
                        ) -> Iterator[Document]:
  """Google's text format, streamed: one sentence per line, blank line between documents.

  Lines are read as bytes and decoded as UTF-8; invalid bytes become U+FFFD and are counted in
  ``stats`` rather than aborting a long run. Each file also ends a document. No line is read
  beyond :data:`MAX_LINE_BYTES`, so memory stays bounded whatever the input.

  Raises:
    ValueError: a file is empty (zero bytes), or a line is longer than ``MAX_LINE_BYTES``
      (naming the file and line).
  """
  stats = stats if stats is not None else InputStats()
  for path in files:
    if os.path.getsize(path) == 0:
      raise ValueError(f"Input file {path} is empty.")
    stats.files += 1
    document: Document = []
    with open(path, "rb") as f:
      for raw in _bounded_lines(f, path):
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError:
          line = raw.decode("utf-8", errors="replace")
          stats.undecodable_lines += 1
          stats.replaced_chars += line.count("\ufffd")
        line = line.strip()
        if line:
          document.append(line)
        elif document:
          stats.documents += 1
          stats.sentences += len(document)
          yield document
          document = []
    if document:
      stats.documents += 1
      stats.sentences += len(document)
      yield document


def _bounded_lines(f, path: str) -> Iterator[bytes]:
  """The lines of binary file ``f``, refusing (before reading it whole) one too long."""
  for number in itertools.count(1):
    raw = f.readline(MAX_LINE_BYTES + 1)
    if not raw:
      return
    if len(raw) > MAX_LINE_BYTES:
      raise ValueError(
          f"Line {number} of {path} is longer than {MAX_LINE_BYTES:,} bytes: this is not "
          "Google's text format (one sentence per line, a blank line between documents). "
          "Split the text into sentences, one per line, first.")
    yield raw


def tfds_text_documents(name: str, split: str, *, text_feature: str = "text",
                        data_dir: str | None = None,
                        stats: InputStats | None = None) -> Iterator[Document]:
  """Documents from a TFDS text dataset (e.g. ``wikipedia/20230601.en``) prepared in
  ``data_dir`` as array_record: one record = one document, split into sentences.

  Raises:
    ValueError: unknown dataset name or split, or no such text feature (naming what exists).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  stats = stats if stats is not None else InputStats()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # DatasetNotFoundError and registry errors
    raise ValueError(f"Unknown TFDS dataset {name!r} (data_dir={data_dir}): "
                     f"{str(e).splitlines()[0]}") from e
  if not builder.is_prepared():
    raise ValueError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir}. Prepare it "
                     "with `tfds build` (file_format=array_record) first.")
  splits = sorted(builder.info.splits.keys())
  if split.split("[", 1)[0] not in splits:
    raise ValueError(f"TFDS dataset {name!r} has no split {split!r}; it has {splits}.")
  features = list(builder.info.features.keys())
  if text_feature not in features:
    raise ValueError(f"TFDS dataset {name!r} has no feature {text_feature!r}; it has {features}.")
  source = builder.as_data_source(split)
  for i in range(len(source)):
    text = source[i][text_feature]
    if isinstance(text, bytes):
      decoded = text.decode("utf-8", errors="replace")
      stats.replaced_chars += decoded.count("\ufffd") - text.count("\ufffd".encode())
      text = decoded
    document = paragraphs_to_sentences(text)
    if document:
      stats.documents += 1
      stats.sentences += len(document)
      yield document


# ---------------------------------------------------------------------------------------------
# The embedded corpus: Python's own documentation.

# Directories of the standard library that hold tests, GUI code, vendored packages or tooling
# rather than library prose.
_SKIP_DIRS = frozenset({"test", "tests", "idlelib", "lib2to3", "tkinter", "turtledemo",
                        "site-packages", "dist-packages", "ensurepip", "__pycache__", "venv",
                        "pydoc_data", "unittest", "distutils", "encodings"})
_SKIP_MODULES = frozenset({"antigravity.py", "this.py", "turtle.py"})


def _stdlib_files() -> list[str]:
  root = sysconfig.get_paths()["stdlib"]
  files = []
  for directory, dirs, names in os.walk(root):
    dirs[:] = sorted(d for d in dirs
                     if d not in _SKIP_DIRS and not d.startswith(("_", ".", "config-")))
    files.extend(os.path.join(directory, n) for n in sorted(names)
                 if n.endswith(".py") and not n.startswith("_") and n not in _SKIP_MODULES)
  return files


def parse_module(path: str) -> ast.Module | None:
  """The syntax tree of a Python file, or None for one this Python cannot read or parse (the
  standard library of another version, a file that is not UTF-8)."""
  try:
    with open(path, encoding="utf-8") as f:
      return ast.parse(f.read())
  except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
    return None


def _module_text(path: str) -> str:
  """The module's docstring and those of its classes and functions, in source order."""
  tree = parse_module(path)
  if tree is None:
    return ""
  nodes = [n for n in ast.walk(tree)
           if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
           and not n.name.startswith("_")]
  nodes.sort(key=lambda n: n.lineno)
  docs = [ast.get_docstring(tree)] + [ast.get_docstring(n) for n in nodes]
  return "\n\n".join(d for d in docs if d)


def _clean_doc(text: str) -> list[str]:
  """Paragraphs -> sentences, dropping interactive examples and code-looking lines."""
  kept = []
  for line in text.splitlines():
    stripped = line.strip()
    if stripped.startswith((">>>", "...", "$ ", "%")) or _RULE.match(stripped):
      # Doctest/code lines and reST underlines end the paragraph instead of joining prose.
      line = ""
    kept.append(line)
  return paragraphs_to_sentences("\n".join(kept))


def python_docs_documents(max_documents: int | None = None
                          ) -> Iterator[tuple[str, Document]]:
  """The embedded corpus as ``(title, sentences)``: pydoc topics, then stdlib modules.

  >>> title, sentences = next(python_docs_documents(1))
  >>> title.startswith("topic:"), len(sentences) > 5
  (True, True)
  """
  count = 0
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  for name in sorted(topics.topics):
    if max_documents is not None and count >= max_documents:
      return
    sentences = _clean_doc(topics.topics[name])
    if len(sentences) >= 2:
      count += 1
      yield f"topic:{name}", sentences
  root = sysconfig.get_paths()["stdlib"]
  for path in _stdlib_files():
    if max_documents is not None and count >= max_documents:
      return
    sentences = _clean_doc(_module_text(path))
    if len(sentences) >= 2:
      count += 1
      yield "module:" + os.path.relpath(path, root).replace(os.sep, "/"), sentences
