"""GLUE fine-tuning (Wang et al., 2019) as a task of the trainer, and its official metrics.

``config.finetune.glue_task`` names the task (:data:`GLUE_TASKS`); its examples come from TFDS
``glue/<task>`` prepared in ``finetune.tfds_data_dir`` (``data_dir=""``), or from the GLUE TSV
files in ``finetune.data_dir`` (``train.tsv``, ``dev.tsv`` / ``dev_matched.tsv`` /
``dev_mismatched.tsv``, columns as Google's ``run_classifier.py`` reads them). Labels use TFDS's
order either way, so F1's positive class is 1 (MRPC: "equivalent").

The trainer's evaluations report each task's metrics exactly from sums (accuracy, F1, Matthews,
Pearson). Spearman needs every prediction: after training,

  python -m lamb_optax.train.predict --workdir=DIR

restores the latest checkpoint of DIR, scores the whole dev set with every metric of the task
and writes ``DIR/glue_<task>_dev.json`` (metrics) and ``DIR/glue_<task>_dev_predictions.tsv``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from lamb_optax.tasks import classification
from lamb_optax.tasks import finetuning
from lamb_optax.tasks import glue_metrics


@dataclasses.dataclass(frozen=True)
class GlueTask:
  """One GLUE task: where its data is and how it is scored."""

  tfds_name: str
  text_keys: tuple[str, ...]  # TFDS feature names of the one or two texts
  labels: tuple[str, ...]  # TFDS label order; empty = regression (STS-B)
  metrics: tuple[str, ...]  # beyond loss/accuracy; the first is the task's GLUE score
  eval_split: str  # TFDS split
  tsv_eval: str  # GLUE TSV file
  tsv_columns: tuple[int, ...]  # text column(s), then the label column (Google's processors)
  tsv_header: bool


_NLI = ("entailment", "not_entailment")
GLUE_TASKS = {
    "cola": GlueTask("glue/cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews",),
                     "validation", "dev.tsv", (3, 1), False),
    "sst2": GlueTask("glue/sst2", ("sentence",), ("negative", "positive"), ("accuracy",),
                     "validation", "dev.tsv", (0, 1), True),
    "mrpc": GlueTask("glue/mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
                     ("f1", "accuracy"), "validation", "dev.tsv", (3, 4, 0), True),
    "stsb": GlueTask("glue/stsb", ("sentence1", "sentence2"), (), ("pearson", "spearman"),
                     "validation", "dev.tsv", (7, 8, -1), True),
    "qnli": GlueTask("glue/qnli", ("question", "sentence"), _NLI, ("accuracy",), "validation",
                     "dev.tsv", (1, 2, -1), True),
    "rte": GlueTask("glue/rte", ("sentence1", "sentence2"), _NLI, ("accuracy",), "validation",
                    "dev.tsv", (1, 2, -1), True),
    "mnli_matched": GlueTask("glue/mnli", ("premise", "hypothesis"),
                             ("entailment", "neutral", "contradiction"), ("accuracy",),
                             "validation_matched", "dev_matched.tsv", (8, 9, -1), True),
    "mnli_mismatched": GlueTask("glue/mnli", ("premise", "hypothesis"),
                                ("entailment", "neutral", "contradiction"), ("accuracy",),
                                "validation_mismatched", "dev_mismatched.tsv", (8, 9, -1), True),
}
STSB_RANGE = (0.0, 5.0)


def canonical_name(name: str) -> str:
  """The :data:`GLUE_TASKS` key of a name, ignoring case, ``-`` and ``_`` (``SST-2`` = ``sst2``,
  ``MNLI-mismatched`` = ``mnli_mismatched``).

  >>> canonical_name("MNLI-mismatched")
  'mnli_mismatched'
  """
  squash = lambda s: s.lower().replace("-", "").replace("_", "")
  keys = {squash(k): k for k in GLUE_TASKS}
  if squash(name) not in keys:
    raise ValueError(f"Unknown GLUE task {name!r}; choose one of {', '.join(sorted(GLUE_TASKS))}"
                     " (finetune.glue_task).")
  return keys[squash(name)]


def glue_task(name: str) -> GlueTask:
  """The task of a GLUE name (see :func:`canonical_name`).

  >>> glue_task("SST-2").tfds_name
  'glue/sst2'
  >>> glue_task("squad")
  Traceback (most recent call last):
  ...
  ValueError: Unknown GLUE task 'squad'; choose one of cola, mnli_matched, mnli_mismatched, mrpc,
  qnli, rte, sst2, stsb (finetune.glue_task).
  """
  return GLUE_TASKS[canonical_name(name)]


# ------------------------------------------------------------------------------------------------
# Reading examples: (texts per example, label) lists
# ------------------------------------------------------------------------------------------------
Examples = tuple[list[tuple[str, ...]], list]


def _decode(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_tfds(task: GlueTask, split: str, data_dir: str | None = None) -> Examples:
  """Examples of a prepared TFDS GLUE split (read as a data source: no TensorFlow needed)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    source = tfds.data_source(task.tfds_name, split=split, data_dir=data_dir or None,
                              download=False)
  except Exception as e:  # DatasetNotFoundError, AssertionError (not prepared), unknown split
    raise ValueError(
        f"Cannot read TFDS {task.tfds_name} split {split!r} from data_dir="
        f"{data_dir or 'the TFDS default'}: {str(e).splitlines()[0]}. Prepare it once with "
        f"`tfds build {task.tfds_name} --file_format=array_record` (and set "
        "finetune.tfds_data_dir), or set finetune.data_dir to the GLUE TSV files.") from e
  texts, labels = [], []
  for i in range(len(source)):
    row = source[i]
    texts.append(tuple(_decode(row[k]) for k in task.text_keys))
    labels.append(_label(task, row["label"], f"TFDS {task.tfds_name} split {split!r} row {i}"))
  return texts, labels


def read_tsv(task: GlueTask, path: str) -> Examples:
  """Examples of a GLUE TSV file, columns as Google's ``run_classifier.py`` processors.

  Labels are mapped to TFDS's order (names such as ``entailment``, or MRPC/CoLA/SST-2's 0/1).
  """
  if not os.path.isfile(path):
    raise ValueError(f"No GLUE file {path!r}: finetune.data_dir must hold the task's TSV files "
                     f"(train.tsv, {task.tsv_eval}).")
  *text_columns, label_column = task.tsv_columns
  texts, labels = [], []
  with open(path, encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  for number, row in enumerate(rows[1:] if task.tsv_header else rows, start=1):
    try:
      text = tuple(row[c] for c in text_columns)
      raw = row[label_column]
    except IndexError:
      raise ValueError(f"{path} line {number + task.tsv_header}: {len(row)} columns, expected "
                       f"at least {max(task.tsv_columns) + 1}.") from None
    texts.append(text)
    labels.append(_label(task, raw, f"{path} line {number + task.tsv_header}"))
  return texts, labels


def _label(task: GlueTask, raw, where: str) -> float | int:
  """A label (TSV text, or TFDS's number) as TFDS's class index, or STS-B's score; anything
  else is refused here, not left to make the loss NaN (a label out of the head's range)."""
  if not task.labels:
    try:
      score = float(raw)
    except ValueError:
      score = math.nan
    low, high = STSB_RANGE
    if not low <= score <= high:  # also NaN and inf
      raise ValueError(f"{where}: label {str(raw)!r} is not an STS-B similarity score, a number "
                       f"in [{low:g}, {high:g}]. Fix that line of the file.")
    return score
  if isinstance(raw, str) and raw in task.labels:
    return task.labels.index(raw)
  text = str(raw)
  if text.isdigit() and int(text) < len(task.labels):
    return int(text)
  raise ValueError(f"{where}: label {text!r} is not one of this GLUE task's classes "
                   f"{list(task.labels)} (or 0..{len(task.labels) - 1}). Your own labels: the "
                   "text_classification task (configs/text_classification.py).")


def read_split(config: ml_collections.ConfigDict, task: GlueTask, train: bool) -> Examples:
  f = config.finetune
  if f.data_dir:
    return read_tsv(task, os.path.join(f.data_dir, "train.tsv" if train else task.tsv_eval))
  return read_tfds(task, "train" if train else task.eval_split, f.tfds_data_dir)


def _arrays(tokenizer, examples: Examples, task: GlueTask, max_seq_length: int, limit: int):
  texts, labels = examples
  if limit:
    texts, labels = texts[:limit], labels[:limit]
  second = [t[1] for t in texts] if len(task.text_keys) == 2 else None
  return classification.features(tokenizer, [t[0] for t in texts], second, labels,
                                 max_seq_length, regression=not task.labels)


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
          workdir: str | None) -> classification.SequenceClassification:
  """The GLUE task ``config.finetune.glue_task``; no data when ``workdir`` is None."""
  task = glue_task(config.finetune.glue_task)
  f = config.finetune

  def load(tokenizer):
    return (_arrays(tokenizer, read_split(config, task, True), task, f.max_seq_length,
                    f.max_train_examples),
            _arrays(tokenizer, read_split(config, task, False), task, f.max_seq_length,
                    f.max_eval_examples))

  sums_metrics = [m for m in task.metrics if m in ("f1", "matthews")]
  return classification.build_task(
      config, mesh, name=f"GLUE {f.glue_task}", label_names=task.labels, metrics=sums_metrics,
      label_center=sum(STSB_RANGE) / 2 if not task.labels else 0.0,
      load=load if workdir is not None else None)


# ------------------------------------------------------------------------------------------------
# Every metric from every prediction
# ------------------------------------------------------------------------------------------------
def score(task: GlueTask, outputs: np.ndarray, labels: Sequence) -> dict[str, float]:
  """All of the task's metrics from every dev prediction (logits, or scores for STS-B)."""
  labels = np.asarray(labels)
  if not task.labels:
    return {"pearson": glue_metrics.pearson(outputs, labels),
            "spearman": glue_metrics.spearman(outputs, labels)}
  predicted = np.argmax(outputs, axis=-1)
  out = {"accuracy": float(np.mean(predicted == labels))}
  if len(task.labels) == 2:
    p, y = predicted == 1, labels == 1
    tp, fp, fn, tn = (float(np.sum(m)) for m in (p & y, p & ~y, ~p & y, ~p & ~y))
    out["f1"] = glue_metrics.f1_from_counts(tp, fp, fn)
    out["matthews"] = glue_metrics.matthews_from_counts(tp, fp, fn, tn)
  return out


def predict(workdir: str, restore_params: Callable[[str, Any], Any]) -> dict[str, float]:
  """Scores the newest checkpoint of a GLUE run on its whole dev set; writes the results."""
  config, task, params = finetuning.restore_run(workdir, build, restore_params)
  task_def = glue_task(config.finetune.glue_task)
  outputs = task.predict(params, task.eval)
  metrics = score(task_def, outputs, task.eval["label"])
  name = config.finetune.glue_task
  with open(os.path.join(workdir, f"glue_{name}_dev.json"), "w", encoding="utf-8") as f:
    json.dump(metrics, f, indent=2)
  with open(os.path.join(workdir, f"glue_{name}_dev_predictions.tsv"), "w",
            encoding="utf-8") as f:
    f.write("index\tprediction\tlabel\n")
    for i, (o, y) in enumerate(zip(outputs, task.eval["label"], strict=True)):
      pred = float(o) if not task_def.labels else task_def.labels[int(np.argmax(o))]
      f.write(f"{i}\t{pred}\t{y}\n")
  return metrics
