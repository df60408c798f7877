"""SQuAD v1.1 fine-tuning (Rajpurkar et al., 2016) as a task of the trainer, and its prediction.

Data: ``finetune.data_dir`` holding the official ``train-v1.1.json`` and ``dev-v1.1.json``, or
(``data_dir=""``) TFDS ``squad/v1.1`` prepared in ``finetune.tfds_data_dir``. Features are
Google's (:mod:`lamb_optax.data.squad`): max_seq_length 384, doc_stride 128, max_query_length 64
by default. The loss is Google's: the mean of the start and end cross-entropies.

The trainer's evaluations report the dev windows' loss and how often the best start and end
tokens are exactly right (``span_accuracy``; windows without the answer point at [CLS]). The
paper's metrics need whole questions; after training,

  python -m lamb_optax.train.predict --workdir=DIR

restores DIR's latest checkpoint, predicts every dev question (n-best 20, max answer length 30,
mapped back to the original text), writes ``DIR/predictions.json`` in the official format and
prints the official exact match and F1 (also ``python scripts/squad_eval.py dev-v1.1.json
DIR/predictions.json``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lamb_optax.data import squad as squad_data
from lamb_optax.data import squad_metrics
from lamb_optax.models import bert_heads
from lamb_optax.tasks import finetuning

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class SquadData:
  examples: list  # eval examples (for predictions)
  features: list  # eval features
  stats: dict  # what reading found: questions, mismatched answers per split


@dataclasses.dataclass
class QuestionAnswering(finetuning.FinetuneTask):
  """A :class:`lamb_optax.tasks.base.Task`: start/end logits over every token."""

  squad: SquadData | None
  EVERY_TOKEN = True

  def describe(self) -> str:
    c = self.encoder.bert_config
    sizes = ""
    if self.train is not None:
      sizes = (f", {len(self.train['weight'])} train / {len(self.eval['weight'])} eval windows; "
               f"{self.squad.stats}")
    return (f"SQuAD v1.1 (max_seq_length {self.max_seq_length}{sizes}) on BERT "
            f"({c.num_layers} layers, hidden {c.hidden_size}, {self.num_params() / 1e6:.1f}M "
            f"params) from {self.encoder.kind} {self.encoder.path or 'initialisation'}")

  def _sums(self, params, batch, dropout_rng):
    start, end = self.model(params)(batch["input_ids"], batch["segment_ids"],
                                    batch["input_mask"], dropout_rng=dropout_rng)
    w = batch["weight"].astype(jnp.float32)

    def nll(logits, positions):
      log_probs = jax.nn.log_softmax(logits, axis=-1)
      return -jnp.take_along_axis(log_probs, positions[:, None].astype(jnp.int32), axis=-1)[:, 0]

    loss = 0.5 * (nll(start, batch["start_position"]) + nll(end, batch["end_position"]))
    exact = ((jnp.argmax(start, -1) == batch["start_position"])
             & (jnp.argmax(end, -1) == batch["end_position"]))
    return {"loss_sum": jnp.sum(w * loss), "span_correct": jnp.sum(w * exact),
            "count": jnp.sum(w)}

  def summarise(self, sums):
    s = {k: float(np.asarray(v)) for k, v in sums.items()}
    if not s.get("count"):
      return {}
    return {"loss": s["loss_sum"] / s["count"], "span_accuracy": s["span_correct"] / s["count"]}

  def batch_spec(self):
    seq = self.max_seq_length
    spec = {k: jax.ShapeDtypeStruct((seq,), np.int32)
            for k in ("input_ids", "segment_ids", "input_mask")}
    spec.update({k: jax.ShapeDtypeStruct((), np.int32) for k in ("start_position", "end_position")})
    spec["weight"] = jax.ShapeDtypeStruct((), np.float32)
    return spec

  def logits(self, params, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Start and end logits of every dev window, on the first device."""
    forward = jax.jit(lambda p, b: self.model(p)(b["input_ids"], b["segment_ids"],
                                                 b["input_mask"]))
    starts, ends = [], []
    n = len(self.eval["input_ids"])
    for i in range(0, n, batch_size):
      rows = {k: self.eval[k][i:i + batch_size] for k in ("input_ids", "segment_ids",
                                                          "input_mask")}
      pad = batch_size - len(rows["input_ids"])
      rows = {k: np.pad(v, ((0, pad), (0, 0))) for k, v in rows.items()}
      s, e = forward(params, rows)
      starts.append(np.asarray(s)[:batch_size - pad])
      ends.append(np.asarray(e)[:batch_size - pad])
    return np.concatenate(starts), np.concatenate(ends)


def _read(config: ml_collections.ConfigDict, train: bool):
  f = config.finetune
  stats = squad_data.ReadStats()
  if f.data_dir:
    name = "train-v1.1.json" if train else "dev-v1.1.json"
    path = os.path.join(f.data_dir, name)
    if not os.path.isfile(path):
      raise ValueError(f"No {name} in finetune.data_dir={f.data_dir!r}: download the official "
                       "SQuAD v1.1 files there, or set data_dir='' for TFDS squad/v1.1.")
    examples = squad_data.read_examples(path, train, stats)
  else:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    split = "train" if train else "validation"
    try:
      rows = tfds.data_source("squad/v1.1", split=split, data_dir=f.tfds_data_dir or None,
                              download=False)
    except Exception as e:  # not prepared, unknown
      raise ValueError(f"Cannot read TFDS squad/v1.1 {split}: {str(e).splitlines()[0]}. Prepare"
                       " it with `tfds build squad/v1.1 --file_format=array_record` (and set "
                       "finetune.tfds_data_dir), or set finetune.data_dir to the JSON files."
                       ) from e
    examples = squad_data.examples_from_tfds((rows[i] for i in range(len(rows))), train, stats,
                                             source=f"TFDS squad/v1.1 {split}")
  if stats.mismatched_answers:
    _log.warning("SQuAD %s: %d of %d answers do not match their answer_start (%s...)%s.",
                 "train" if train else "dev", stats.mismatched_answers, stats.questions,
                 stats.mismatched_ids[:3], "; skipped" if train else "")
  return examples, stats


def _limit(examples, n):
  return examples[:n] if n else examples


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
          workdir: str | None) -> QuestionAnswering:
  """The SQuAD v1.1 task; no data when ``workdir`` is None."""
  f = config.finetune
  encoder = finetuning.resolve_encoder(config)
  make_model = lambda rngs: bert_heads.BertForQuestionAnswering(encoder.bert_config, rngs=rngs)
  train = eval_ = data = None
  if workdir is not None:
    tokenizer = encoder.tokenizer()
    kwargs = dict(max_seq_length=f.max_seq_length, doc_stride=f.doc_stride,
                  max_query_length=f.max_query_length)
    train_examples, train_stats = _read(config, True)
    dev_examples, dev_stats = _read(config, False)
    train_examples = _limit(train_examples, f.max_train_examples)
    dev_examples = _limit(dev_examples, f.max_eval_examples)
    train_features = squad_data.convert(train_examples, tokenizer, is_training=True, **kwargs)
    dev_features = squad_data.convert(dev_examples, tokenizer, **kwargs)
    train = squad_data.feature_arrays(train_features, f.max_seq_length)
    eval_ = squad_data.feature_arrays(dev_features, f.max_seq_length)
    stats = {"train_mismatched_answers": train_stats.mismatched_answers,
             "dev_mismatched_answers": dev_stats.mismatched_answers}
    data = SquadData(dev_examples, dev_features, stats)
  return QuestionAnswering.create(config, mesh, encoder, make_model, train, eval_, squad=data)


def predict(workdir: str, restore_params: Callable[[str, Any], Any]) -> dict[str, float]:
  """Predicts every dev question with DIR's latest checkpoint; writes predictions.json; scores."""
  config, task, params = finetuning.restore_run(workdir, build, restore_params)
  starts, ends = task.logits(params)
  f = config.finetune
  predictions = squad_data.predict_answers(
      task.squad.examples, task.squad.features, starts, ends, task.encoder.tokenizer(),
      n_best_size=f.n_best_size, max_answer_length=f.max_answer_length)
  with open(os.path.join(workdir, "predictions.json"), "w", encoding="utf-8") as fh:
    json.dump(predictions, fh, ensure_ascii=False)
  return squad_metrics.evaluate(squad_data.as_official_json(task.squad.examples), predictions)
