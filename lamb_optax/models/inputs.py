"""Pretraining batches: the feature contract, its validation, and a synthetic batch for benchmarks.

A batch uses the feature names of Google's ``create_pretraining_data.py``:

================================  ==============  =======  =======================================
feature                           shape           dtype    meaning
================================  ==============  =======  =======================================
``input_ids``                     (B, S)          int32    WordPiece ids, padded with 0
``input_mask``                    (B, S)          int32    1 for real tokens, 0 for padding
``segment_ids``                   (B, S)          int32    0 for sentence A, 1 for sentence B
``masked_lm_positions``           (B, P)          int32    positions of the masked tokens
``masked_lm_ids``                 (B, P)          int32    their original ids
``masked_lm_weights``             (B, P)          float32  1 for real predictions, 0 for padding
``next_sentence_labels``          (B,) or (B, 1)  int32    0 = B follows A, 1 = B is random
================================  ==============  =======  =======================================

A *packed* batch (:mod:`lamb_optax.data.packing`: up to K examples per row) has the same
features with ``input_mask`` holding each token's example number (1..K, 0 for padding) and the
masked positions of all its examples, plus ``position_ids`` (B, S) restarting at every example,
and per example ``next_sentence_positions`` (its [CLS]), ``next_sentence_labels`` and
``next_sentence_weights`` (1 = an example, 0 = an empty slot), each (B, K).

Shapes are checked whenever the model is traced; values (ids inside the vocabulary, positions
inside the sequence) only on concrete arrays, since a jitted program cannot raise. Call
:func:`validate_batch` on host batches (e.g. the first one) to catch bad data early.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lamb_optax.models.bert_config import BertConfig
from lamb_optax.models.bert_config import default_max_predictions_per_seq

SEQUENCE_FEATURES = ("input_ids", "input_mask", "segment_ids")
PREDICTION_FEATURES = ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")
FEATURES = SEQUENCE_FEATURES + PREDICTION_FEATURES + ("next_sentence_labels",)
PACKED_ONLY_FEATURES = ("position_ids", "next_sentence_positions", "next_sentence_weights")


def _concrete(x: Any) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_range(name: str, x: Any, upper: int, what: str, fix: str) -> None:
  """Raises if a concrete integer array has values outside [0, upper)."""
  if x is None or not _concrete(x):
    return
  values = np.asarray(x)
  if values.size == 0:
    return
  low, high = int(values.min()), int(values.max())
  if low < 0 or high >= upper:
    bad = values[(values < 0) | (values >= upper)]
    raise ValueError(
        f"{name} has values outside [0, {upper}) ({what}): min {low}, max {high}, "
        f"{bad.size} bad entries, e.g. {bad[:5].tolist()}. {fix}"
    )


def check_encoder_inputs(config: BertConfig, input_ids, token_type_ids=None,
                         attention_mask=None, position_ids=None) -> None:
  """Checks the encoder's inputs: shapes always, id ranges when the arrays are concrete."""
  shape = np.shape(input_ids)
  if len(shape) != 2:
    raise ValueError(f"input_ids must be (batch, length), got shape {shape}.")
  for name, x in (("token_type_ids/segment_ids", token_type_ids),
                  ("attention_mask/input_mask", attention_mask), ("position_ids", position_ids)):
    if x is not None and np.shape(x) != shape:
      raise ValueError(f"{name} has shape {np.shape(x)}, but input_ids has {shape}.")
  if shape[1] > config.max_position_embeddings:
    raise ValueError(
        f"Sequence length {shape[1]} exceeds max_position_embeddings "
        f"{config.max_position_embeddings}: the model has no position embedding beyond it. "
        f"Truncate the inputs to {config.max_position_embeddings} tokens (create the data with "
        f"a shorter max_seq_length), or use a config with more positions."
    )
  dtype = input_ids.dtype if hasattr(input_ids, "dtype") else np.asarray(input_ids).dtype
  if not np.issubdtype(dtype, np.integer):
    raise ValueError(f"input_ids must be integers, got dtype {dtype}.")
  _check_range(
      "input_ids", input_ids, config.vocab_size, f"vocab_size is {config.vocab_size}",
      "Tokenize with the vocabulary the model was built for, or set BertConfig.vocab_size to "
      "the tokenizer's vocabulary size.",
  )
  _check_range(
      "token_type_ids/segment_ids", token_type_ids, config.type_vocab_size,
      f"type_vocab_size is {config.type_vocab_size}", "Use 0 for sentence A and 1 for sentence B.",
  )
  _check_range(
      "position_ids", position_ids, config.max_position_embeddings,
      f"max_position_embeddings is {config.max_position_embeddings}",
      "Positions count from 0 within each (packed) example.",
  )


def encoder_inputs(config: BertConfig, input_ids, token_type_ids=None, attention_mask=None,
                   position_ids=None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The encoder's inputs, checked (:func:`check_encoder_inputs`), as arrays, with the defaults
  filled in: ``token_type_ids`` 0 (all sentence A), ``attention_mask`` 1 (every token real).

  >>> ids, types, mask = encoder_inputs(BertConfig.tiny(), [[5, 6, 7]])
  >>> types.tolist(), mask.tolist()
  ([[0, 0, 0]], [[1, 1, 1]])
  """
  check_encoder_inputs(config, input_ids, token_type_ids, attention_mask, position_ids)
  input_ids = jnp.asarray(input_ids)
  if token_type_ids is None:
    token_type_ids = jnp.zeros_like(input_ids)
  if attention_mask is None:
    attention_mask = jnp.ones_like(input_ids)
  return input_ids, token_type_ids, attention_mask


def validate_batch(batch: Mapping[str, Any], config: BertConfig) -> None:
  """Raises ``ValueError`` naming the feature and the fix if ``batch`` is not a valid batch.

  >>> batch = random_batch(BertConfig.tiny(vocab_size=100), batch_size=2, max_seq_length=8)
  >>> validate_batch(batch, BertConfig.tiny(vocab_size=100))
  >>> validate_batch(batch, BertConfig.tiny(vocab_size=10))
  Traceback (most recent call last):
  ...
  ValueError: input_ids has values outside [0, 10) (vocab_size is 10):...
  """
  missing = [name for name in FEATURES if name not in batch]
  if missing:
    raise ValueError(
        f"Batch lacks features {missing} (has {sorted(batch)}). A pretraining batch needs "
        f"{list(FEATURES)}, as Google's create_pretraining_data.py writes them."
    )
  packed = [name for name in PACKED_ONLY_FEATURES if name in batch]
  if packed and len(packed) != len(PACKED_ONLY_FEATURES):
    raise ValueError(
        f"Batch has {packed} but not {sorted(set(PACKED_ONLY_FEATURES) - set(packed))}: a packed "
        f"batch (lamb_optax.data.packing) needs all of {list(PACKED_ONLY_FEATURES)}.")
  check_encoder_inputs(config, batch["input_ids"], batch["segment_ids"], batch["input_mask"],
                       batch.get("position_ids"))
  batch_size, max_seq_length = np.shape(batch["input_ids"])
  predictions = np.shape(batch["masked_lm_positions"])
  if len(predictions) != 2 or predictions[0] != batch_size:
    raise ValueError(
        f"masked_lm_positions must be (batch={batch_size}, predictions), got {predictions}."
    )
  for name in PREDICTION_FEATURES[1:]:
    if np.shape(batch[name]) != predictions:
      raise ValueError(
          f"{name} has shape {np.shape(batch[name])}, but masked_lm_positions has {predictions}."
      )
  labels_shape = np.shape(batch["next_sentence_labels"])
  if packed:
    _validate_packed(batch, batch_size, max_seq_length)
  elif labels_shape not in ((batch_size,), (batch_size, 1)):
    raise ValueError(
        f"next_sentence_labels must be ({batch_size},) or ({batch_size}, 1), got {labels_shape}."
    )
  _check_range(
      "masked_lm_positions", batch["masked_lm_positions"], max_seq_length,
      f"the sequence length is {max_seq_length}", "Positions index tokens of the same example.",
  )
  _check_range(
      "masked_lm_ids", batch["masked_lm_ids"], config.vocab_size,
      f"vocab_size is {config.vocab_size}", "Use the model's vocabulary for the labels.",
  )
  _check_range(
      "next_sentence_labels", batch["next_sentence_labels"], 2, "labels are 0 or 1",
      "Use 0 when B follows A and 1 when B is random.",
  )


def _validate_packed(batch: Mapping[str, Any], batch_size: int, max_seq_length: int) -> None:
  """The per-example NSP features of a packed batch: (batch, K) each, [CLS] inside the row."""
  slots = np.shape(batch["next_sentence_positions"])
  if len(slots) != 2 or slots[0] != batch_size:
    raise ValueError(f"next_sentence_positions must be (batch={batch_size}, examples per row), "
                     f"got {slots}.")
  for name in ("next_sentence_labels", "next_sentence_weights"):
    if np.shape(batch[name]) != slots:
      raise ValueError(f"In a packed batch {name} is one entry per example slot, shape {slots} "
                       f"like next_sentence_positions, got {np.shape(batch[name])}.")
  _check_range(
      "next_sentence_positions", batch["next_sentence_positions"], max_seq_length,
      f"the sequence length is {max_seq_length}", "Each is the row position of an example's [CLS].",
  )
  _check_range(
      "attention_mask/input_mask", batch["input_mask"], slots[1] + 1,
      f"a packed row holds at most {slots[1]} examples",
      "In a packed row input_mask is each token's example number, 1..K, 0 for padding.",
  )


def random_batch(
    config: BertConfig,
    batch_size: int,
    max_seq_length: int,
    max_predictions_per_seq: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
  """A well-formed synthetic pretraining batch (random ids), for benchmarks and smoke tests.

  Each example has a random length between half and all of ``max_seq_length`` (the rest
  padding), two segments, and up to ``max_predictions_per_seq`` masked positions among its real
  tokens (15% of them, padded with weight 0), as Google's data has.

  >>> batch = random_batch(BertConfig.tiny(), batch_size=4, max_seq_length=128)
  >>> batch["input_ids"].shape, batch["masked_lm_positions"].shape
  ((4, 128), (4, 20))
  """
  rng = np.random.default_rng(seed)
  p = (default_max_predictions_per_seq(max_seq_length) if max_predictions_per_seq is None
       else max_predictions_per_seq)
  batch = dict(
      input_ids=np.zeros((batch_size, max_seq_length), np.int32),
      input_mask=np.zeros((batch_size, max_seq_length), np.int32),
      segment_ids=np.zeros((batch_size, max_seq_length), np.int32),
      masked_lm_positions=np.zeros((batch_size, p), np.int32),
      masked_lm_ids=np.zeros((batch_size, p), np.int32),
      masked_lm_weights=np.zeros((batch_size, p), np.float32),
      next_sentence_labels=rng.integers(0, 2, (batch_size, 1)).astype(np.int32),
  )
  for b in range(batch_size):
    length = int(rng.integers(max(2, max_seq_length // 2), max_seq_length + 1))
    batch["input_ids"][b, :length] = rng.integers(1, config.vocab_size, length)
    batch["input_mask"][b, :length] = 1
    batch["segment_ids"][b, length // 2:length] = 1
    # Never mask position 0 ([CLS]); mask about 15% of the other real tokens.
    num = min(p, max(1, round(0.15 * length)), length - 1)
    positions = np.sort(rng.choice(np.arange(1, length), num, replace=False))
    batch["masked_lm_positions"][b, :num] = positions
    batch["masked_lm_ids"][b, :num] = batch["input_ids"][b, positions]
    batch["masked_lm_weights"][b, :num] = 1.0
  return batch
