"""BERT pretraining (masked LM + next sentence) as a task of the trainer.

Params are a plain nested dict (``nnx.to_pure_dict``), so checkpoints, masks and optimizer
states are ordinary pytrees; the NNX graph is merged back inside the jitted step. The losses are
the model's own (:func:`lamb_optax.models.bert.masked_lm_sums`, ``next_sentence_sums``), in sum
form, divided by the global batch's normalisers.

Data: the config's ``data.source`` (the embedded Python-docs corpus, built on first use, or a
dataset written by ``scripts/create_pretraining_data.py``), read by Grain. Each process loads
only its own rows of every global batch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from lamb_optax import data as data_lib
from lamb_optax import sharding
from lamb_optax.models import bert
from lamb_optax.models.bert_config import BertConfig
from lamb_optax.models.bert_config import flops_per_token
from lamb_optax.tasks.base import require_data

PyTree = Any


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> BertConfig:
  """The BERT preset of ``config.model`` with its overrides and the data's vocabulary."""
  overrides = {k: v for k, v in config.model.overrides.items() if v is not None}
  overrides.setdefault("vocab_size", vocab_size)
  overrides.setdefault("max_position_embeddings", max(512, config.data.max_seq_length))
  return BertConfig.preset(config.model.preset, dtype=config.model.dtype,
                           remat=config.model.remat, **overrides)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Datasets:
  """The train and held-out sources of a run, and what dynamic masking needs to know."""

  train: Any  # random-access source: len() and [i] -> dict of numpy features
  eval: Any
  vocab_size: int
  special: data_lib.SpecialIds | None
  continuation: np.ndarray | None
  masking: data_lib.MaskingConfig


def masking_config(config: ml_collections.ConfigDict) -> data_lib.MaskingConfig:
  return data_lib.MaskingConfig(
      max_seq_length=config.data.max_seq_length,
      max_predictions_per_seq=config.data.max_predictions_per_seq,
      whole_word_mask=config.data.whole_word_mask)


def packing_config(config: ml_collections.ConfigDict) -> data_lib.PackingConfig | None:
  """How training rows are packed (``data.pack_sequences``), or None for one example a row."""
  d = config.data
  if not d.pack_sequences:
    return None
  return data_lib.PackingConfig(
      max_seq_length=d.max_seq_length, max_predictions_per_seq=d.max_predictions_per_seq,
      max_examples_per_row=d.max_examples_per_row, window_rows=d.pack_window_rows)


def locate(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, str]:
  """``(dataset directory or TFDS name, vocab file or "")`` of a run; builds the embedded corpus
  on first use."""
  if config.data.source == "embedded":
    prepared = prepare_embedded_data(config, workdir)
    return prepared.directory, prepared.vocab_file
  return config.data.source, config.data.vocab_file


def prepare_embedded_data(config: ml_collections.ConfigDict,
                          workdir: str) -> data_lib.PreparedData:
  """Builds (or finds in its cache) the embedded corpus at the config's sequence length."""
  d = config.data
  # The embedded corpus is built with local file operations: beside a local workdir, else
  # (a gs:// workdir) in the user's cache; every host builds the same bytes.
  data_dir = d.data_dir or (os.path.join(workdir, "data") if "://" not in workdir else
                            os.path.expanduser("~/.cache/lamb_optax/data"))
  return data_lib.prepare_embedded(data_dir, masking=masking_config(config),
                                   dupe_factor=d.embedded_dupe_factor,
                                   max_documents=d.embedded_max_documents or None)


def prepare(config: ml_collections.ConfigDict, workdir: str) -> Datasets:
  """Finds (or, for the embedded corpus, builds) the run's data; fails before any compile."""
  d = config.data
  masking = masking_config(config)
  packing_config(config)  # its errors before any data is built
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
  metadata = getattr(train, "metadata", None)
  if metadata:
    data_lib.check_vocab_matches(metadata, vocab_size, dataset=directory)
  return Datasets(train, held_out, vocab_size, special, continuation, masking)


def _check_shapes(example: Mapping[str, np.ndarray], config: ml_collections.ConfigDict,
                  directory: str) -> None:
  seq, preds = len(example["input_ids"]), len(example["masked_lm_positions"])
  if (seq, preds) != (config.data.max_seq_length, config.data.max_predictions_per_seq):
    raise ValueError(
        f"{directory} holds examples of length {seq} with {preds} predictions, but the config "
        f"asks for data.max_seq_length={config.data.max_seq_length}, "
        f"data.max_predictions_per_seq={config.data.max_predictions_per_seq}. Set those to "
        f"({seq}, {preds}), or create the data again with scripts/create_pretraining_data.py.")


def _vocab_size_without_data(config: ml_collections.ConfigDict) -> int:
  """The vocabulary size when compiling without data: the override, else the embedded one."""
  if config.model.overrides.vocab_size is not None:
    return config.model.overrides.vocab_size
  if config.data.source == "embedded":
    return data_lib.EMBEDDED_VOCAB_SIZE
  return BertConfig.preset(config.model.preset).vocab_size


# ------------------------------------------------------------------------------------------------
# The task
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class BertPretraining:
  """BERT pretraining; implements :class:`lamb_optax.tasks.base.Task`."""

  config: ml_collections.ConfigDict
  bert_config: BertConfig
  mesh: jax.sharding.Mesh
  graphdef: Any
  abstract_state: Any  # nnx.State of Params, shapes only
  param_shardings: PyTree
  datasets: Datasets | None  # None when built without data (compiling only)

  def stacked_axes(self, params: PyTree) -> PyTree:
    return bert.stacked_axes(params)

  def describe(self) -> str:
    c = self.bert_config
    n = sum(x.size for x in jax.tree.leaves(self.abstract_state))
    return (f"BERT pretraining ({c.num_layers} layers, hidden {c.hidden_size}, vocab "
            f"{c.vocab_size}, {n / 1e6:.1f}M params)")

  def init_params(self) -> PyTree:
    """Fresh params, created directly with their shardings (never materialised whole)."""
    def init():
      model = bert.BertForPreTraining(self.bert_config, rngs=nnx.Rngs(self.config.seed))
      return nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return jax.jit(init, out_shardings=self.param_shardings)()

  def abstract_params(self) -> PyTree:
    return nnx.to_pure_dict(self.abstract_state)

  def model(self, params: PyTree) -> bert.BertForPreTraining:
    """The NNX model holding ``params``."""
    state = jax.tree.map(lambda x: x, self.abstract_state)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self.graphdef, state)

  def _sums(self, params, batch, dropout_rng) -> dict[str, jax.Array]:
    # The model's cheap path: the last layer runs only at [CLS] and the masked positions.
    mlm_logits, nsp_logits = self.model(params).pretraining_logits(batch, dropout_rng=dropout_rng)
    return {**bert.masked_lm_sums(mlm_logits, batch["masked_lm_ids"], batch["masked_lm_weights"]),
            **bert.next_sentence_sums(nsp_logits, batch["next_sentence_labels"],
                                      batch.get("next_sentence_weights")),
            # Tokens that are not padding, for the useful-token rates beside MFU.
            "real_tokens": jnp.sum(batch["input_mask"] != 0).astype(jnp.float32),
            "token_slots": jnp.asarray(batch["input_mask"].size, jnp.float32)}

  def normalizers(self, batch) -> dict[str, jax.Array]:
    """Denominators of the global batch's mean losses (Google adds 1e-5 to the MLM weight);
    NSP averages over examples: rows, or the packed examples of every row."""
    if "next_sentence_weights" in batch:
      examples = jnp.sum(batch["next_sentence_weights"].astype(jnp.float32))
    else:
      examples = jnp.asarray(batch["next_sentence_labels"].shape[0], jnp.float32)
    return {"mlm": jnp.sum(batch["masked_lm_weights"].astype(jnp.float32)) + 1e-5,
            "nsp": examples}

  def objective(self, params, batch, dropout_rng, normalizers):
    sums = self._sums(params, batch, dropout_rng)
    loss = sums["mlm_loss_sum"] / normalizers["mlm"] + sums["nsp_loss_sum"] / normalizers["nsp"]
    return loss, sums

  def eval_sums(self, params, batch):
    return self._sums(params, batch, None)

  def summarise(self, sums: Mapping[str, float]) -> dict[str, float]:
    s = {k: float(v) for k, v in sums.items()}
    out = {}
    if s.get("mlm_weight"):
      out["mlm_loss"] = s["mlm_loss_sum"] / s["mlm_weight"]
      out["mlm_accuracy"] = s["mlm_correct"] / s["mlm_weight"]
    if s.get("nsp_count"):
      out["nsp_loss"] = s["nsp_loss_sum"] / s["nsp_count"]
      out["nsp_accuracy"] = s["nsp_correct"] / s["nsp_count"]
    if out:
      out["loss"] = out.get("mlm_loss", 0.0) + out.get("nsp_loss", 0.0)
    if s.get("token_slots"):
      out["useful_token_fraction"] = s["real_tokens"] / s["token_slots"]
    return out

  def tokens_per_example(self) -> int:
    return self.config.data.max_seq_length

  def flops_per_example(self) -> float:
    """Per row; a packed row's MLM head runs at its wider prediction slots (its last layer at
    k [CLS] positions, not 1: (k-1)/seq of one layer more, left out)."""
    seq = self.config.data.max_seq_length
    packing = packing_config(self.config)
    predictions = (self.config.data.max_predictions_per_seq if packing is None
                   else packing.max_predictions_per_row)
    return flops_per_token(self.bert_config, seq, predictions) * seq

  def batch_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    packing = packing_config(self.config)
    if packing is not None:
      row = data_lib.packing.empty_row(packing)
      return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in row.items()}
    seq, preds = self.config.data.max_seq_length, self.config.data.max_predictions_per_seq
    spec = {name: ((seq,), np.int32) for name in ("input_ids", "input_mask", "segment_ids")}
    spec.update({name: ((preds,), np.int32) for name in ("masked_lm_positions", "masked_lm_ids")})
    spec["masked_lm_weights"] = ((preds,), np.float32)
    spec["next_sentence_labels"] = ((1,), np.int32)
    return {k: jax.ShapeDtypeStruct(shape, dtype) for k, (shape, dtype) in spec.items()}

  def _data(self) -> Datasets:
    return require_data(self.datasets)

  def train_iterator(self, per_process_batch_size: int):
    d, dynamic = self._data(), self.config.data.dynamic_masking
    dataset = data_lib.train_batches(
        d.train, batch_size=per_process_batch_size, seed=self.config.seed,
        shard_index=jax.process_index(), shard_count=jax.process_count(),
        dynamic_masking=d.masking if dynamic else None,
        vocab_size=d.vocab_size if dynamic else None,
        special=d.special if dynamic else None,
        continuation=d.continuation if dynamic else None,
        packing=packing_config(self.config),
        worker_count=self.config.data.worker_count)
    return iter(dataset)

  def eval_batches(self, per_process_batch_size: int, num_batches: int):
    if num_batches < 1:
      return []
    return data_lib.eval_batches(
        self._data().eval, batch_size=per_process_batch_size, shard_index=jax.process_index(),
        shard_count=jax.process_count(), num_batches=num_batches)


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
          workdir: str | None) -> BertPretraining:
  """The task for ``config``; its data is found (or built) in ``workdir`` unless it is None."""
  datasets = prepare(config, workdir) if workdir is not None else None
  vocab_size = datasets.vocab_size if datasets else _vocab_size_without_data(config)
  return build_model(config, mesh, vocab_size, datasets)


def build_model(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, vocab_size: int,
                datasets: Datasets | None = None) -> BertPretraining:
  """The task's model side for a known vocabulary (no data read)."""
  bert_config = model_config(config, vocab_size)
  abstract_model = nnx.eval_shape(lambda: bert.BertForPreTraining(bert_config, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract_model, nnx.Param)
  param_shardings = nnx.to_pure_dict(sharding.state_shardings(abstract_state, mesh))
  return BertPretraining(config, bert_config, mesh, graphdef, abstract_state, param_shardings,
                         datasets)
