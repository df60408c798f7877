r"""Fine-tuning on your own labelled text: N classes (or a score) from CSV, TSV or JSON Lines.

  python -m lamb_optax.train --config=configs/text_classification.py --workdir=W \
      --config.init_from=PRETRAINED \
      --config.finetune.train_file=train.csv --config.finetune.validation_file=dev.csv
  python -m lamb_optax.train.predict --workdir=W --input_file=test.csv --output_file=pred.csv

The files are read as Hugging Face's ``run_glue.py`` reads a user's files
(:mod:`lamb_optax.data.labelled_text`): a ``label`` column and a ``sentence`` or ``text`` column,
or a ``sentence1``/``sentence2`` pair. The classes are the training file's sorted labels, any
strings; a column of non-integer numbers is a regression (mean squared error). They are recorded
in ``W/labels.json`` (a resumed run must find the same classes; predict reads them from there).
Every file is read and checked before the first step: an unknown label in the validation file,
an empty text or a missing column is an error naming the file and line.

The model, loss and in-training metrics are :mod:`lamb_optax.tasks.classification`'s (loss,
accuracy, ``majority_accuracy``: always the most frequent training class). Predict writes every
input row with a ``prediction`` column (the label as the training file wrote it) and one
``prob_<class>`` column per class, in the format of the output file's extension, and scores
accuracy and macro-F1 (RMSE for regression) when the input has labels.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath

from lamb_optax.data import labelled_text
from lamb_optax.tasks import classification
from lamb_optax.tasks import finetuning

LABELS_FILE = "labels.json"
PREDICTION = "prediction"
PROBABILITY = "prob_"  # + class name: one column per class


# ------------------------------------------------------------------------------------------------
# Building the task
# ------------------------------------------------------------------------------------------------
def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
          workdir: str | None) -> classification.SequenceClassification:
  """The task on ``finetune.train_file`` / ``validation_file``; the classes are recorded in
  ``workdir/labels.json``. With ``workdir=None`` (compiling only) only the labels are read."""
  f = config.finetune
  if not f.train_file:
    raise ValueError("The text_classification task needs --config.finetune.train_file (CSV, TSV "
                     "or JSON Lines with a 'label' column and a 'sentence' or 'text' column).")
  train_table = labelled_text.read_table(f.train_file)
  schema = labelled_text.LabelSchema.from_training(train_table)
  if workdir is None:
    return _task(config, mesh, schema, f.train_file)
  train = _examples(schema, train_table, f.max_train_examples)
  eval_ = ([], np.zeros((0,), np.float32 if schema.regression else np.int32))
  if f.validation_file:
    eval_ = _examples(schema, labelled_text.read_table(f.validation_file), f.max_eval_examples)
  record_schema(workdir, schema, f.train_file)

  def load(tokenizer):
    return tuple(_features(tokenizer, schema, texts, labels, f.max_seq_length)
                 for texts, labels in (train, eval_))

  return _task(config, mesh, schema, f.train_file, load)


def _task(config, mesh, schema: labelled_text.LabelSchema, train_file: str, load=None):
  head = ", ".join(schema.classes[:8]) + (", ..." if len(schema.classes) > 8 else "")
  name = f"{os.path.basename(train_file) or 'text'} [{head or 'regression'}]"
  return classification.build_task(config, mesh, name=name, label_names=schema.classes,
                                    label_center=schema.label_center, load=load)


def _examples(schema: labelled_text.LabelSchema, table: labelled_text.Table, limit: int):
  """(texts, labels) of a labelled file, every row checked (before any is cut by ``limit``)."""
  texts, labels = schema.texts(table), schema.encode(table)
  return (texts[:limit], labels[:limit]) if limit else (texts, labels)


def _features(tokenizer, schema: labelled_text.LabelSchema, texts: Sequence[tuple[str, ...]],
              labels: np.ndarray, max_seq_length: int) -> dict[str, np.ndarray]:
  if not len(texts):  # no validation file: an empty eval set of the right shapes
    arrays = {k: np.zeros((0, max_seq_length), np.int32)
              for k in ("input_ids", "segment_ids", "input_mask")}
    return {**arrays, "label": labels, "weight": np.zeros((0,), np.float32)}
  second = [t[1] for t in texts] if len(schema.text_columns) == 2 else None
  return classification.features(tokenizer, [t[0] for t in texts], second, labels,
                                 max_seq_length, regression=schema.regression)


def record_schema(workdir: str, schema: labelled_text.LabelSchema, train_file: str) -> None:
  """Writes ``workdir/labels.json``, or checks that a resumed run's training file has the
  classes its checkpoints were trained for."""
  path = epath.Path(workdir) / LABELS_FILE
  if path.exists():
    recorded = labelled_text.LabelSchema.from_json(json.loads(path.read_text()))
    if (recorded.classes, recorded.text_columns) != (schema.classes, schema.text_columns):
      raise ValueError(
          f"{train_file} has classes {list(schema.classes)} and text {list(schema.text_columns)}"
          f", but {path} records {list(recorded.classes)} and {list(recorded.text_columns)}: "
          "the run in this workdir was trained for those. Use a new --workdir.")
    return
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**schema.to_json(), "train_file": train_file}, indent=2))


def read_schema(workdir: str) -> labelled_text.LabelSchema:
  path = epath.Path(workdir) / LABELS_FILE
  if not path.exists():
    raise FileNotFoundError(f"{workdir} has no {LABELS_FILE}: is it a text_classification run?")
  return labelled_text.LabelSchema.from_json(json.loads(path.read_text()))


# ------------------------------------------------------------------------------------------------
# Predicting and scoring
# ------------------------------------------------------------------------------------------------
def macro_f1(predicted: Sequence[int], labels: Sequence[int]) -> float:
  """The mean F1 over the classes present in ``labels`` or ``predicted`` (scikit-learn's
  ``f1_score(average="macro")``).

  >>> round(macro_f1([0, 0, 1, 2], [0, 1, 1, 2]), 4)  # F1 2/3, 2/3, 1
  0.7778
  """
  predicted, labels = np.asarray(predicted), np.asarray(labels)
  scores = []
  for c in np.union1d(predicted, labels):
    tp = np.sum((predicted == c) & (labels == c))
    denominator = np.sum(predicted == c) + np.sum(labels == c)
    scores.append(2 * tp / denominator)
  return float(np.mean(scores)) if scores else 0.0


def score(schema: labelled_text.LabelSchema, outputs: np.ndarray,
          labels: np.ndarray) -> dict[str, float]:
  """Accuracy and macro-F1 of logits, or mean squared error and its root of scores."""
  if schema.regression:
    mse = float(np.mean((outputs.astype(np.float64) - labels) ** 2))
    return {"mse": mse, "rmse": math.sqrt(mse), "examples": len(labels)}
  predicted = np.argmax(outputs, axis=-1)
  return {"accuracy": float(np.mean(predicted == labels)),
          "macro_f1": macro_f1(predicted, labels), "examples": len(labels)}


def prediction_records(schema: labelled_text.LabelSchema, table: labelled_text.Table,
                       outputs: np.ndarray) -> tuple[list[str], list[dict[str, Any]]]:
  """The output columns and rows: every input column, the prediction, the probabilities."""
  added = [PREDICTION] + [PROBABILITY + c for c in schema.classes]
  columns = [c for c in table.columns if c not in added] + added
  if schema.regression:
    return columns, [{**row.values, PREDICTION: float(o)} for row, o in
                     zip(table.rows, outputs, strict=True)]
  shifted = outputs.astype(np.float64) - outputs.max(axis=-1, keepdims=True)
  probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
  records = []
  for row, p in zip(table.rows, probabilities, strict=True):
    record = {**row.values, PREDICTION: schema.label_value(int(np.argmax(p)))}
    record.update({PROBABILITY + c: round(float(q), 6) for c, q in zip(schema.classes, p,
                                                                      strict=True)})
    records.append(record)
  return columns, records


def default_output(workdir: str, input_file: str) -> str:
  """``W/predictions_<input name>``: the input's name and format."""
  return os.path.join(workdir, "predictions_" + os.path.basename(input_file))


def predict(workdir: str, restore_params: Callable[[str, Any], Any],
            input_file: str | None = None, output_file: str | None = None) -> dict[str, float]:
  """Predicts every row of ``input_file`` (default: the run's validation file) with the newest
  checkpoint; writes ``output_file`` (default :func:`default_output`) and, when the input has
  labels, its metrics beside it (``<output>.metrics.json``)."""
  schema = read_schema(workdir)
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    input_file = input_file or json.load(f)["finetune"]["validation_file"]
  if not input_file:
    raise ValueError(f"The run in {workdir} had no validation file: pass --input_file.")
  output_file = output_file or default_output(workdir, input_file)
  labelled_text.file_format(output_file)  # a bad extension fails before the model is restored
  table = labelled_text.read_table(input_file)
  texts = schema.texts(table)
  labels = schema.encode(table) if labelled_text.LABEL in table.columns else None
  build_ = lambda config, mesh, _: _task(config, mesh, schema, "")
  config, task, params = finetuning.restore_run(workdir, build_, restore_params)
  arrays = _features(task.encoder.tokenizer(), schema, texts,
                     np.zeros((len(texts),), np.float32), config.finetune.max_seq_length)
  outputs = task.predict(params, arrays, batch_size=config.eval_batch_size or 64)
  labelled_text.write_table(output_file, *prediction_records(schema, table, outputs))
  print(f"Wrote {len(table.rows)} predictions of {input_file} to {output_file}.", flush=True)
  if labels is None:
    return {"examples": len(table.rows)}
  metrics = score(schema, outputs, labels)
  with open(os.path.splitext(output_file)[0] + ".metrics.json", "w", encoding="utf-8") as f:
    json.dump({"input_file": input_file, **metrics}, f, indent=2)
  return metrics
