"""Sentence (pair) classification and regression on the pooled [CLS]: the task behind GLUE and
the embedded docstring-kind task.

Features per example: ``input_ids``, ``segment_ids``, ``input_mask`` (``max_seq_length``),
``label`` (int32 class, or float32 score for regression) and ``weight`` (1; 0 on eval padding).
The loss is the mean cross-entropy (or squared error) over the global batch; evaluation reports
loss, accuracy and the task's extra metrics (F1, Matthews correlation, Pearson's r), all exact
from sums (:mod:`lamb_optax.tasks.glue_metrics`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from lamb_optax.models import bert_heads
from lamb_optax.tasks import finetuning
from lamb_optax.tasks import glue_metrics


@dataclasses.dataclass
class SequenceClassification(finetuning.FinetuneTask):
  """A :class:`lamb_optax.tasks.base.Task`: classification (or regression if one label)."""

  name: str
  label_names: Sequence[str]  # empty for regression
  metrics: Sequence[str]  # extras beyond loss/accuracy: "f1", "matthews", "pearson"
  label_center: float  # regression: middle of the label range (for exact float32 sums)
  baseline: dict  # e.g. {"majority_accuracy": 0.49}: reported with every evaluation

  @property
  def regression(self) -> bool:
    return not self.label_names

  def describe(self) -> str:
    c = self.encoder.bert_config
    sizes = ""
    if self.train is not None:
      sizes = f", {len(self.train['label'])} train / {len(self.eval['label'])} eval examples"
    head = "regression" if self.regression else f"{len(self.label_names)} classes"
    return (f"{self.name} ({head}{sizes}) on BERT ({c.num_layers} layers, hidden "
            f"{c.hidden_size}, {self.num_params() / 1e6:.1f}M params) from "
            f"{self.encoder.kind} {self.encoder.path or 'initialisation'}")

  def _sums(self, params, batch, dropout_rng) -> dict[str, jax.Array]:
    logits = self.model(params)(batch["input_ids"], batch["segment_ids"], batch["input_mask"],
                                dropout_rng=dropout_rng)
    if self.regression:
      return bert_heads.regression_sums(logits[:, 0], batch["label"], batch["weight"],
                                        self.label_center)
    return bert_heads.cross_entropy_and_confusion_sums(logits, batch["label"], batch["weight"])

  def summarise(self, sums: Mapping[str, float]) -> dict[str, float]:
    if self.regression:
      out = glue_metrics.regression_summary(sums)
    else:
      out = glue_metrics.classification_summary(sums, self.metrics)
    return {**out, **self.baseline} if out else out

  def batch_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    seq = self.max_seq_length
    spec = {k: jax.ShapeDtypeStruct((seq,), np.int32)
            for k in ("input_ids", "segment_ids", "input_mask")}
    spec["label"] = jax.ShapeDtypeStruct((), np.float32 if self.regression else np.int32)
    spec["weight"] = jax.ShapeDtypeStruct((), np.float32)
    return spec

  def predict(self, params, arrays: Mapping[str, np.ndarray], batch_size: int = 64) -> np.ndarray:
    """Logits (classification) or scores (regression) for every row of ``arrays``, on the host's
    first device; for metrics that need every prediction (Spearman)."""
    forward = jax.jit(lambda p, b: self.model(p)(b["input_ids"], b["segment_ids"],
                                                 b["input_mask"]))
    n = len(arrays["input_ids"])
    outputs = []
    for start in range(0, n, batch_size):
      rows = {k: arrays[k][start:start + batch_size] for k in ("input_ids", "segment_ids",
                                                                "input_mask")}
      pad = batch_size - len(rows["input_ids"])
      rows = {k: np.pad(v, ((0, pad), (0, 0))) for k, v in rows.items()}
      outputs.append(np.asarray(forward(params, rows))[:batch_size - pad])
    out = np.concatenate(outputs)
    return out[:, 0] if self.regression else out


def features(tokenizer, texts_a, texts_b, labels, max_seq_length: int,
             regression: bool = False) -> dict[str, np.ndarray]:
  """The task's arrays for a list of examples (``texts_b`` None for single sentences)."""
  arrays = finetuning.encode_pairs(tokenizer, texts_a, texts_b, max_seq_length)
  arrays["label"] = np.asarray(labels, np.float32 if regression else np.int32)
  arrays["weight"] = np.ones((len(arrays["label"]),), np.float32)
  return arrays


def majority_accuracy(train_labels: np.ndarray, eval_labels: np.ndarray) -> float:
  """Eval accuracy of always predicting the most frequent TRAIN label (the floor to beat).

  >>> majority_accuracy(np.array([0, 1, 1]), np.array([1, 0, 0, 0]))
  0.25
  """
  if not len(eval_labels):
    return 0.0
  majority = np.bincount(np.asarray(train_labels)).argmax()
  return float(np.mean(np.asarray(eval_labels) == majority))


def build_task(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *, name: str,
               label_names: Sequence[str], metrics: Sequence[str] = (),
               label_center: float = 0.0,
               load: Any | None = None) -> SequenceClassification:
  """The task; ``load(tokenizer) -> (train arrays, eval arrays)`` or None (no data).

  With data and ``finetune.num_train_epochs`` set, the run's length follows from the training
  set's size (:func:`lamb_optax.tasks.finetuning.apply_epochs`).
  """
  encoder = finetuning.resolve_encoder(config)
  num_labels = max(1, len(label_names))
  make_model = lambda rngs: bert_heads.BertForSequenceClassification(
      encoder.bert_config, num_labels, rngs=rngs)
  train = eval_ = None
  baseline = {}
  if load is not None:
    train, eval_ = load(encoder.tokenizer())
    finetuning.apply_epochs(config, len(train["label"]))
    if label_names:
      baseline = {"majority_accuracy": majority_accuracy(train["label"], eval_["label"])}
  return SequenceClassification.create(
      config, mesh, encoder, make_model, train, eval_, name=name, label_names=list(label_names),
      metrics=list(metrics), label_center=label_center, baseline=baseline)
