"""A user's own labelled text, read the way Hugging Face's ``run_glue.py`` reads a user's files.

A file is CSV (``.csv``), TSV (``.tsv``) or JSON Lines (``.jsonl``; ``.json`` may also hold one
array of objects), chosen by its extension. It has a ``label`` column and the text in one column
``sentence`` or ``text``, or in a pair ``sentence1`` and ``sentence2``; other columns (an id)
are kept and ignored. CSV/TSV files have a header row and may be exported from a spreadsheet
(UTF-8, with or without a byte-order mark).

The classes are the sorted distinct labels of the training file (integers in numeric order);
a label column of numbers not all written as integers (``3.5``, JSON floats) makes the task a
regression. :class:`LabelSchema` holds that and encodes every other file against it; anything
that cannot be trained on (an unknown label, an empty text, a missing column, a bad extension)
is a ValueError naming the file and the line.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
>>> _ = open(path, "w").write("text,label\\ngood film,pos\\n\\"long, dull\\",neg\\n")
>>> table = read_table(path)
>>> schema = LabelSchema.from_training(table)
>>> schema.classes, schema.text_columns, schema.encode(table).tolist()
(('neg', 'pos'), ('text',), [1, 0])
>>> schema.texts(table)
[('good film',), ('long, dull',)]
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
LABEL = "label"
# The text columns in the order they are looked for (Hugging Face run_glue.py's names).
TEXT_COLUMNS = (("sentence1", "sentence2"), ("sentence",), ("text",))
_INTEGER = re.compile(r"[+-]?\d+")


@dataclasses.dataclass(frozen=True)
class Row:
  line: int  # the line of the file the row starts on (1 = a CSV's header)
  values: Mapping[str, Any]  # strings from CSV/TSV; JSON values from JSON Lines


@dataclasses.dataclass(frozen=True)
class Table:
  path: str
  columns: tuple[str, ...]
  rows: tuple[Row, ...]

  def where(self, row: Row) -> str:
    return f"{self.path} line {row.line}"


def file_format(path: str) -> str:
  """``csv``, ``tsv`` or ``jsonl`` by the extension of ``path``; a ValueError otherwise."""
  extension = os.path.splitext(path)[1].lower()
  if extension not in FORMATS:
    raise ValueError(f"{path}: unknown extension {extension!r}; a labelled text file is .csv, "
                     ".tsv, .jsonl or .json (JSON Lines).")
  return FORMATS[extension]


def read_table(path: str) -> Table:
  """Every row of a CSV, TSV or JSON Lines file (see the module docstring)."""
  kind = file_format(path)
  if not os.path.isfile(path):
    raise ValueError(f"{path}: no such file.")
  if kind == "jsonl":
    return _read_json(path)
  return _read_delimited(path, "\t" if kind == "tsv" else ",")


def _read_delimited(path: str, delimiter: str) -> Table:
  rows = []
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.reader(f, delimiter=delimiter)
    try:
      header = next(reader, None)
      if not header:
        raise ValueError(f"{path}: empty file; the first line must name the columns.")
      columns = tuple(name.strip() for name in header)
      line = reader.line_num + 1
      for fields in reader:
        if fields:  # blank lines are skipped, as pandas does
          if len(fields) != len(columns):
            raise ValueError(f"{path} line {line}: {len(fields)} fields where the header names "
                             f"{len(columns)} ({', '.join(columns)}).")
          rows.append(Row(line, dict(zip(columns, fields, strict=True))))
        line = reader.line_num + 1
    except csv.Error as e:
      raise ValueError(f"{path} line {reader.line_num}: {e}") from None
  return Table(path, columns, tuple(rows))


def _read_json(path: str) -> Table:
  with open(path, encoding="utf-8-sig") as f:
    text = f.read()
  if text.lstrip().startswith("["):  # one JSON array of objects
    try:
      records = [(None, r) for r in json.loads(text)]
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} line {e.lineno}: not valid JSON ({e.msg}).") from None
  else:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
      if line.strip():
        try:
          records.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
          raise ValueError(f"{path} line {number}: not a JSON object ({e.msg}).") from None
  columns: dict[str, None] = {}
  rows = []
  for index, (number, record) in enumerate(records):
    line = number if number is not None else index + 1  # an array: the record's index + 1
    if not isinstance(record, dict):
      raise ValueError(f"{path} line {line}: a {type(record).__name__}, not a JSON object.")
    columns.update(dict.fromkeys(record))
    rows.append(Row(line, record))
  return Table(path, tuple(columns), tuple(rows))


def text_columns(table: Table) -> tuple[str, ...]:
  """The text column(s) of a training file: ``sentence1``+``sentence2``, ``sentence`` or
  ``text``, the first found."""
  for names in TEXT_COLUMNS:
    if all(n in table.columns for n in names):
      return names
  raise ValueError(f"{table.path}: no text column; found columns {list(table.columns)}. Name "
                   "it 'sentence' or 'text' (or 'sentence1' and 'sentence2' for pairs).")


def _cell(table: Table, row: Row, column: str) -> Any:
  if column not in row.values or row.values[column] is None:
    raise ValueError(f"{table.where(row)}: no {column!r} value.")
  return row.values[column]


def _is_number(value: Any) -> bool:
  if isinstance(value, bool):
    return False
  if isinstance(value, (int, float)):
    return True
  try:
    float(value)
    return True
  except (TypeError, ValueError):
    return False


def _is_integer(value: Any) -> bool:
  return (isinstance(value, int) and not isinstance(value, bool)) or (
      isinstance(value, str) and bool(_INTEGER.fullmatch(value.strip())))


def _class_order(name: str) -> tuple:
  """Integers in numeric order first, then other names in string order."""
  return (0, int(name), "") if _INTEGER.fullmatch(name) else (1, 0, name)


@dataclasses.dataclass(frozen=True)
class LabelSchema:
  """The classes (or regression) and text columns a training file defines.

  ``label_type`` is ``"int"`` when the training file's labels were JSON integers (predictions
  are then written as integers to JSON Lines), ``"float"`` for regression, else ``"str"``.
  """

  classes: tuple[str, ...]  # empty for regression
  text_columns: tuple[str, ...]
  label_type: str = "str"
  label_center: float = 0.0  # regression: the training labels' mean (for exact float32 sums)

  @property
  def regression(self) -> bool:
    return not self.classes

  @classmethod
  def from_training(cls, table: Table) -> LabelSchema:
    """The schema of a training file; a ValueError if it has no label column, no text, or a
    single class."""
    if LABEL not in table.columns:
      raise ValueError(f"{table.path}: no {LABEL!r} column; found columns "
                       f"{list(table.columns)}. A training file needs a 'label' column.")
    if not table.rows:
      raise ValueError(f"{table.path}: no examples.")
    columns = text_columns(table)
    raw = [_label(table, row) for row in table.rows]
    if all(_is_number(v) for v in raw) and not all(_is_integer(v) for v in raw):
      values = [float(v) for v in raw]
      bad = next((r for r, v in zip(table.rows, values, strict=True) if not math.isfinite(v)),
                 None)
      if bad is not None:
        raise ValueError(f"{table.where(bad)}: label {bad.values[LABEL]!r} is not a finite "
                         "number (a regression label column).")
      return cls((), columns, "float", float(np.mean(values)))
    classes = tuple(sorted({str(v) for v in raw}, key=_class_order))
    if len(classes) < 2:
      raise ValueError(f"{table.path}: every label is {classes[0]!r}; a classifier needs at "
                       "least two classes.")
    json_ints = all(isinstance(v, int) for v in raw)
    return cls(classes, columns, "int" if json_ints else "str")

  def texts(self, table: Table) -> list[tuple[str, ...]]:
    """Every row's text(s); a ValueError naming the line for a missing column or empty text."""
    missing = [c for c in self.text_columns if c not in table.columns]
    if missing:
      raise ValueError(f"{table.path}: no column(s) {missing}; the training file's text is in "
                       f"{list(self.text_columns)}; found columns {list(table.columns)}.")
    out = []
    for row in table.rows:
      texts = tuple(str(_cell(table, row, c)) for c in self.text_columns)
      empty = [c for c, t in zip(self.text_columns, texts, strict=True) if not t.strip()]
      if empty:
        raise ValueError(f"{table.where(row)}: empty {empty[0]!r}; every example needs text.")
      out.append(texts)
    return out

  def encode(self, table: Table) -> np.ndarray:
    """The labels of ``table`` as class indices (int32) or scores (float32); a ValueError naming
    the line for a missing column or a label the training file does not have."""
    if LABEL not in table.columns:
      raise ValueError(f"{table.path}: no {LABEL!r} column; found columns {list(table.columns)}.")
    if self.regression:
      values = []
      for row in table.rows:
        value = _label(table, row)
        if not _is_number(value) or not math.isfinite(float(value)):
          raise ValueError(f"{table.where(row)}: label {value!r} is not a finite number (the "
                           "training file's labels are regression scores).")
        values.append(float(value))
      return np.asarray(values, np.float32)
    index = {c: i for i, c in enumerate(self.classes)}
    labels = []
    for row in table.rows:
      value = str(_label(table, row))
      if value not in index:
        raise ValueError(f"{table.where(row)}: label {value!r} is not one of the training "
                         f"file's classes {list(self.classes)}.")
      labels.append(index[value])
    return np.asarray(labels, np.int32)

  def label_value(self, index: int) -> str | int:
    """The label of class ``index`` as the training file wrote it (an int for JSON ints)."""
    name = self.classes[index]
    return int(name) if self.label_type == "int" else name

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, record: Mapping[str, Any]) -> LabelSchema:
    return cls(tuple(record["classes"]), tuple(record["text_columns"]), record["label_type"],
               float(record["label_center"]))


def _label(table: Table, row: Row) -> Any:
  value = _cell(table, row, LABEL)
  if isinstance(value, bool) or not isinstance(value, (str, int, float)):
    raise ValueError(f"{table.where(row)}: label {value!r} is a {type(value).__name__}; labels "
                     "are strings or numbers.")
  if isinstance(value, str) and not value.strip():
    raise ValueError(f"{table.where(row)}: empty label.")
  return value.strip() if isinstance(value, str) else value


def write_table(path: str, columns: Sequence[str], records: Sequence[Mapping[str, Any]]) -> None:
  """Writes ``records`` as CSV, TSV or JSON Lines, by the extension of ``path``."""
  kind = file_format(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if kind == "jsonl":
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(json.dumps({c: r.get(c) for c in columns}, ensure_ascii=False) + "\n"
                   for r in records)
    return
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.DictWriter(f, list(columns), delimiter="\t" if kind == "tsv" else ",",
                            lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
