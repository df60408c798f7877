"""SQuAD v1.1's official metrics: exact match and token F1, as ``evaluate-v1.1.py`` defines them.

An answer is normalised by lower-casing, removing punctuation (``string.punctuation``), removing
the articles a/an/the (as whole words) and collapsing whitespace; a prediction scores the best
over the question's ground truths; a question without a prediction scores 0; both figures are
percentages over all questions of the file.

>>> normalize_answer("  The  Eiffel-Tower! ")
'eiffeltower'
>>> f1_score("the big cat", "a cat")
0.6666666666666666
>>> evaluate([{"paragraphs": [{"qas": [{"id": "q", "answers": [{"text": "Paris"}]}]}]}],
...          {"q": "paris."})
{'exact_match': 100.0, 'f1': 100.0}
"""

from __future__ import annotations

import collections
import re
import string
import sys
from collections.abc import Mapping, Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
  """Lower case, no punctuation, no articles, single spaces (the official order)."""
  text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, ground_truth: str) -> bool:
  return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
  """Harmonic mean of token precision and recall after normalisation (0 if nothing shared)."""
  predicted, truth = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
  shared = sum((collections.Counter(predicted) & collections.Counter(truth)).values())
  if shared == 0:
    return 0.0
  precision, recall = shared / len(predicted), shared / len(truth)
  return 2 * precision * recall / (precision + recall)


def best_over_ground_truths(metric, prediction: str, ground_truths: Sequence[str]) -> float:
  return max(float(metric(prediction, truth)) for truth in ground_truths)


def evaluate(articles: Sequence[Mapping], predictions: Mapping[str, str]) -> dict[str, float]:
  """``{"exact_match", "f1"}`` in percent over every question of ``articles`` (the ``data``)."""
  total, exact, f1 = 0, 0.0, 0.0
  for article in articles:
    for paragraph in article["paragraphs"]:
      for qa in paragraph["qas"]:
        total += 1
        if qa["id"] not in predictions:
          print(f"Unanswered question {qa['id']} will receive score 0.", file=sys.stderr)
          continue
        truths = [answer["text"] for answer in qa["answers"]]
        exact += best_over_ground_truths(exact_match_score, predictions[qa["id"]], truths)
        f1 += best_over_ground_truths(f1_score, predictions[qa["id"]], truths)
  if not total:
    return {"exact_match": 0.0, "f1": 0.0}
  return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}
