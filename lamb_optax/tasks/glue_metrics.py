"""GLUE's official metrics, from sums that add across batches, and from whole prediction sets.

The trainer evaluates by adding per-batch sums (``Task.eval_sums``), so every metric it reports
must come out exact from sums: accuracy from hits and counts, F1 and Matthews correlation from
the 2×2 confusion counts, Pearson's r from the sums of x, y, x², y², xy. Spearman's ρ needs
every prediction (ranks): :func:`spearman` runs at the end, in ``python -m lamb_optax.tasks.glue
--workdir=DIR`` (:func:`lamb_optax.train.predict.predict`).

The sums are float32 on the device: Pearson's r from them is exact arithmetic but loses the
variance of predictions that are nearly constant (an untrained regression head); the predict
command computes every metric in float64 from the predictions themselves.

The definitions are scikit-learn's ``accuracy_score``, ``f1_score``, ``matthews_corrcoef`` and
SciPy's ``pearsonr``, ``spearmanr`` (as GLUE's and Hugging Face's evaluation scripts use them);
``tests/tasks/test_glue_metrics.py`` checks them against those libraries.

>>> f1_from_counts(tp=3, fp=1, fn=1)
0.75
>>> round(matthews_from_counts(tp=3, fp=1, fn=1, tn=5), 4)
0.5833
>>> pearson_from_sums(n=3, sx=6.0, sy=6.0, sxx=14.0, syy=14.0, sxy=14.0)
1.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def _safe(numerator: float, denominator: float) -> float:
  """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
  return float(numerator / denominator) if denominator else 0.0


def f1_from_counts(tp: float, fp: float, fn: float) -> float:
  """F1 of the positive class (label 1): 2 TP / (2 TP + FP + FN)."""
  return _safe(2 * tp, 2 * tp + fp + fn)


def matthews_from_counts(tp: float, fp: float, fn: float, tn: float) -> float:
  """Matthews correlation (CoLA's metric): 0 when a row or column of the matrix is empty."""
  denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return _safe(tp * tn - fp * fn, denominator)


def pearson_from_sums(n: float, sx: float, sy: float, sxx: float, syy: float,
                      sxy: float) -> float:
  """Pearson's r from sums (STS-B); 0 when either side is constant. Float64 on the host."""
  cov = n * sxy - sx * sy
  var_x, var_y = n * sxx - sx * sx, n * syy - sy * sy
  if var_x <= 0 or var_y <= 0:
    return 0.0
  return float(cov / math.sqrt(var_x * var_y))


def _ranks(values: np.ndarray) -> np.ndarray:
  """Ranks 1..n, ties given their average rank (as scipy.stats.rankdata)."""
  order = np.argsort(values, kind="mergesort")
  sorted_values = values[order]
  ranks = np.empty(len(values), np.float64)
  start = 0
  for end in range(1, len(values) + 1):
    if end == len(values) or sorted_values[end] != sorted_values[start]:
      ranks[order[start:end]] = (start + end + 1) / 2.0
      start = end
  return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
  """Pearson's r of two sequences (0 if either is constant)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return pearson_from_sums(len(x), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(),
                           (x * y).sum())


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman's ρ: Pearson's r of the (average-tie) ranks."""
  return pearson(_ranks(np.asarray(x, np.float64)), _ranks(np.asarray(y, np.float64)))


def classification_summary(sums: Mapping[str, float], metrics: Sequence[str]) -> dict[str, float]:
  """Loss, accuracy and the named extras (``f1``, ``matthews``) from classification sums."""
  s = {k: float(np.asarray(v)) for k, v in sums.items()}
  if not s.get("count"):
    return {}
  out = {"loss": s["loss_sum"] / s["count"], "accuracy": s["correct"] / s["count"]}
  if "f1" in metrics:
    out["f1"] = f1_from_counts(s["tp"], s["fp"], s["fn"])
  if "matthews" in metrics:
    out["matthews"] = matthews_from_counts(s["tp"], s["fp"], s["fn"], s["tn"])
  return out


def regression_summary(sums: Mapping[str, float]) -> dict[str, float]:
  """Mean squared error and Pearson's r from ``bert_heads.regression_sums``."""
  s = {k: float(np.asarray(v)) for k, v in sums.items()}
  if not s.get("count"):
    return {}
  return {"loss": s["loss_sum"] / s["count"],
          "pearson": pearson_from_sums(s["count"], s["sum_x"], s["sum_y"], s["sum_xx"],
                                       s["sum_yy"], s["sum_xy"])}
