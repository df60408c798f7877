"""The structure of SQuAD v1.1 files, checked before any example is read or any answer scored.

A data file is ``{"data": [article, ...]}``; an article has ``paragraphs``; a paragraph has a
``context`` and ``qas``; a question has a unique ``id``, a ``question`` and ``answers``, each
answer a ``text`` at character ``answer_start`` of the context. A predictions file maps each
question id to its answer text. Every error names the file and the position in it
(``data[0].paragraphs[3].qas[1]``, with the question's id once it is known), so a damaged file
is refused with where to look instead of a bare ``KeyError`` in the middle of reading it.

>>> check_data({"data": [{"paragraphs": [{"context": "Paris.", "qas": [
...     {"id": "q1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 0}]},
...     {"id": "q1", "question": "Again?", "answers": []}]}]}]}, "dev.json")
Traceback (most recent call last):
...
ValueError: dev.json: question id 'q1' appears twice, at data[0].paragraphs[0].qas[0] and
data[0].paragraphs[0].qas[1]. Question ids must be unique ...
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_LAYOUT = ("SQuAD v1.1 files are laid out as {'data': [{'paragraphs': [{'context': str, 'qas': "
           "[{'id': str, 'question': str, 'answers': [{'text': str, 'answer_start': int}]}]}]}]}"
           " (the official train-v1.1.json / dev-v1.1.json).")


def load_json(path: str) -> Any:
  """The parsed JSON of ``path``; a file that is not JSON is refused naming the file and line."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}.") from None
  except UnicodeDecodeError as e:
    raise ValueError(f"{path} is not UTF-8 text ({e}); SQuAD files are UTF-8 JSON.") from None


def _field(node: Mapping, key: str, kind: type, source: str, where: str,
           qid: str | None = None) -> Any:
  value = node.get(key)
  if not isinstance(value, kind) or isinstance(value, bool):
    got = "nothing" if key not in node else f"{type(value).__name__} {value!r:.60}"
    question = f" (question id {qid!r})" if qid is not None else ""
    raise ValueError(f"{source}: {where}.{key}{question} must be a {kind.__name__}, got {got}. "
                     f"{_LAYOUT}")
  return value


def _mapping(node: Any, source: str, where: str) -> Mapping:
  if not isinstance(node, Mapping):
    raise ValueError(f"{source}: {where} must be an object, got {type(node).__name__} "
                     f"{node!r:.60}. {_LAYOUT}")
  return node


def check_data(dataset: Any, source: str, *, scoring: bool = False) -> None:
  """Raises a ValueError naming ``source`` and the position of the first structural problem of
  a parsed SQuAD file, or of a question id that appears twice (two questions with one id would
  collapse into one prediction). ``scoring=True`` checks only what scoring reads: the ids and
  the answers' texts."""
  if not isinstance(dataset, Mapping) or not isinstance(dataset.get("data"), list):
    raise ValueError(f"{source}: not a SQuAD file, no 'data' list at the top level. {_LAYOUT}")
  seen: dict[str, str] = {}
  for a, article in enumerate(dataset["data"]):
    where = f"data[{a}]"
    paragraphs = _field(_mapping(article, source, where), "paragraphs", list, source, where)
    for p, paragraph in enumerate(paragraphs):
      where = f"data[{a}].paragraphs[{p}]"
      if not scoring:
        _field(_mapping(paragraph, source, where), "context", str, source, where)
      qas = _field(_mapping(paragraph, source, where), "qas", list, source, where)
      for q, qa in enumerate(qas):
        where = f"data[{a}].paragraphs[{p}].qas[{q}]"
        qid = _field(_mapping(qa, source, where), "id", str, source, where)
        if qid in seen:
          raise ValueError(f"{source}: question id {qid!r} appears twice, at {seen[qid]} and "
                           f"{where}. Question ids must be unique (answers are scored by id): "
                           "rename one.")
        seen[qid] = where
        if not scoring:
          _field(qa, "question", str, source, where, qid)
        answers = _field(qa, "answers", list, source, where, qid)
        if scoring and not answers:
          raise ValueError(f"{source}: {where}.answers (question id {qid!r}) is empty: a "
                           "question is scored against its answers, so it needs at least one.")
        for i, answer in enumerate(answers):
          at = f"{where}.answers[{i}]"
          _field(_mapping(answer, source, at), "text", str, source, at, qid)
          if not scoring:
            start = _field(answer, "answer_start", int, source, at, qid)
            if start < 0:
              raise ValueError(f"{source}: {at}.answer_start (question id {qid!r}) is {start}; "
                               "it must be >= 0 (the answer's first character in the context).")


def check_unique_ids(ids: list[str], source: str) -> None:
  """Raises a ValueError naming ``source`` and the rows of the first id that appears twice."""
  first: dict[str, int] = {}
  for row, qid in enumerate(ids):
    if qid in first:
      raise ValueError(f"{source}: question id {qid!r} appears twice, at rows {first[qid]} and "
                       f"{row}. Question ids must be unique (answers are scored by id).")
    first[qid] = row


def check_predictions(predictions: Any, source: str) -> None:
  """Raises a ValueError unless ``predictions`` maps question ids (strings) to answer texts."""
  if not isinstance(predictions, Mapping):
    raise ValueError(
        f"{source} holds a JSON {type(predictions).__name__}, not an object: a predictions "
        "file maps each question id to its answer text, {\"<id>\": \"<answer>\", ...}, as "
        "`python -m lamb_optax.train.predict` writes predictions.json.")
  for qid, answer in predictions.items():
    if not isinstance(answer, str):
      raise ValueError(f"{source}: the prediction for question {qid!r} is "
                       f"{type(answer).__name__} {answer!r:.60}; each must be the answer's "
                       "text (a string).")
