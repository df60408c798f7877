"""The trainer's input: which dataset a config names, and its batches as global ``jax.Array``s.

Each process loads only its own rows of every global batch (``lamb_optax.data.train_batches``
with ``shard_index=jax.process_index()``) and :func:`to_global` assembles the processes' rows
into one array sharded over the mesh's data axes, with
``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from lamb_optax import data as data_lib
from lamb_optax.train.config import BatchPlan

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Datasets:
  """The train and held-out sources of a run, and what dynamic masking needs to know."""

  train: Any  # random-access source: len() and [i] -> dict of numpy features
  eval: Any
  vocab_size: int
  special: Optional[data_lib.SpecialIds]
  continuation: Optional[np.ndarray]
  masking: data_lib.MaskingConfig


def _masking(config: ml_collections.ConfigDict) -> data_lib.MaskingConfig:
  return data_lib.MaskingConfig(
      max_seq_length=config.data.max_seq_length,
      max_predictions_per_seq=config.data.max_predictions_per_seq,
      whole_word_mask=config.data.whole_word_mask)


def locate(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, str]:
  """``(dataset directory or TFDS name, vocab file or "")`` of a run; builds the embedded corpus
  on first use."""
  if config.data.source == "embedded":
    prepared = prepare_embedded_data(config, workdir)
    return prepared.directory, prepared.vocab_file
  return config.data.source, config.data.vocab_file


def prepare(config: ml_collections.ConfigDict, workdir: str) -> Datasets:
  """Finds (or, for the embedded corpus, builds) the run's data; fails before any compile."""
  d = config.data
  masking = _masking(config)
  directory, vocab_file = locate(config, workdir)
  train = data_lib.load_pretraining_dataset(directory, d.train_split)
  held_out = data_lib.load_pretraining_dataset(directory, d.eval_split)
  _check_shapes(train[0], config, directory)
  if vocab_file:
    tokenizer = data_lib.load_wordpiece(vocab_file)
    vocab_size = tokenizer.get_vocab_size()
    special = data_lib.special_ids(tokenizer)
    continuation = data_lib.continuation_mask(tokenizer) if masking.whole_word_mask else None
  elif d.dynamic_masking:
    raise ValueError(f"data.dynamic_masking re-masks examples and needs the vocabulary: set "
                     f"data.vocab_file to the vocab.txt that {directory} was created with, or "
                     "set data.dynamic_masking=False to use the stored (static) masks.")
  else:
    vocab_size, special, continuation = config.model.overrides.vocab_size, None, None
    if vocab_size is None:
      raise ValueError("Without data.vocab_file the model's vocabulary size is unknown: set "
                       "data.vocab_file or model.overrides.vocab_size.")
  return Datasets(train, held_out, vocab_size, special, continuation, masking)


def prepare_embedded_data(config: ml_collections.ConfigDict,
                          workdir: str) -> data_lib.PreparedData:
  """Builds (or finds in its cache) the embedded corpus at the config's sequence length."""
  d = config.data
  # The embedded corpus is built with local file operations: beside a local workdir, else
  # (a gs:// workdir) in the user's cache; every host builds the same bytes.
  data_dir = d.data_dir or (os.path.join(workdir, "data") if "://" not in workdir else
                            os.path.expanduser("~/.cache/lamb_optax/data"))
  return data_lib.prepare_embedded(data_dir, masking=_masking(config),
                                   dupe_factor=d.embedded_dupe_factor,
                                   max_documents=d.embedded_max_documents or None)


def _check_shapes(example: Batch, config: ml_collections.ConfigDict, directory: str) -> None:
  seq, preds = len(example["input_ids"]), len(example["masked_lm_positions"])
  if (seq, preds) != (config.data.max_seq_length, config.data.max_predictions_per_seq):
    raise ValueError(
        f"{directory} holds examples of length {seq} with {preds} predictions, but the config "
        f"asks for data.max_seq_length={config.data.max_seq_length}, data.max_predictions_per_seq="
        f"{config.data.max_predictions_per_seq}. Set those to ({seq}, {preds}), or create the data again "
        "with scripts/create_pretraining_data.py.")


def train_iterator(datasets: Datasets, config: ml_collections.ConfigDict, plan: BatchPlan):
  """This process's rows of every global train batch; a checkpointable Grain iterator."""
  dynamic = config.data.dynamic_masking
  dataset = data_lib.train_batches(
      datasets.train, batch_size=plan.per_process_batch_size, seed=config.seed,
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      dynamic_masking=datasets.masking if dynamic else None,
      vocab_size=datasets.vocab_size if dynamic else None,
      special=datasets.special if dynamic else None,
      continuation=datasets.continuation if dynamic else None,
      worker_count=config.data.worker_count)
  return iter(dataset)


def eval_batches(datasets: Datasets, config: ml_collections.ConfigDict,
                 plan: BatchPlan) -> list[Batch]:
  """The first ``config.eval_batches`` held-out batches of this process (fixed masks)."""
  if config.eval_batches < 1:
    return []
  return data_lib.eval_batches(
      datasets.eval, batch_size=plan.per_process_eval_batch_size, shard_index=jax.process_index(),
      shard_count=jax.process_count(), num_batches=config.eval_batches)


def to_global(local_batch: Batch, sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
  """Assembles every process's rows into global arrays laid out by ``sharding``."""
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for name, value in local_batch.items()}
