"""BERT for pretraining (masked LM + next-sentence prediction) in Flax NNX.

The model is Devlin et al.'s BERT, parameter for parameter (so checkpoints go to and from
Hugging Face, see :mod:`lamb_optax.models.hf`), arranged for speed on accelerators (the
encoder, :class:`BertModel`, is :mod:`lamb_optax.models.bert_encoder`; this module adds the
two heads, their losses and :func:`stacked_axes`):

* the encoder layers are one ``BertLayer`` whose parameters carry a leading ``layers`` axis, run
  by ``jax.lax.scan``: XLA compiles one layer, whatever the depth (optionally rematerialised);
* the MLM head runs only at the ``masked_lm_positions`` (gathered), not at every token;
* compute in ``config.dtype`` (e.g. bfloat16) with float32 parameters, softmax and losses;
* every parameter and the main activations carry logical axis names (``batch``, ``length``,
  ``embed``, ``heads``, ``kv``, ``mlp``, ``vocab``, ``layers``), which
  :mod:`lamb_optax.sharding` maps onto a device mesh.

Dropout is driven by an explicit ``dropout_rng`` key (none = deterministic), so a trainer that
checkpoints its key resumes bit-exactly and the model holds no RNG state: ``nnx.split(model,
nnx.Param)`` leaves nothing else behind.

>>> import numpy as np
>>> from flax import nnx
>>> model = BertForPreTraining(BertConfig.tiny(vocab_size=100), rngs=nnx.Rngs(0))
>>> batch = random_batch(model.config, batch_size=2, max_seq_length=16, seed=0)
>>> loss, metrics = model.pretraining_loss(batch)
>>> sorted(metrics)
['loss', 'mlm_accuracy', 'mlm_loss', 'mlm_weight', 'nsp_accuracy', 'nsp_loss']
>>> bool(abs(metrics["mlm_loss"] - np.log(100)) < 0.5)   # about uniform over the vocabulary
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lamb_optax.masks import path_to_str
from lamb_optax.models.bert_config import BertConfig
from lamb_optax.models.bert_config import flops_per_token
from lamb_optax.models.bert_encoder import BertModel
from lamb_optax.models.bert_encoder import _activation
from lamb_optax.models.bert_encoder import _axes
from lamb_optax.models.bert_encoder import _dense
from lamb_optax.models.bert_encoder import _gather
from lamb_optax.models.bert_encoder import _layer_norm
from lamb_optax.models.inputs import encoder_inputs
from lamb_optax.models.inputs import random_batch
from lamb_optax.models.inputs import validate_batch
from lamb_optax.sharding import constrain

__all__ = [
    "BertConfig", "BertForPreTraining", "BertModel", "flops_per_token", "masked_lm_loss",
    "next_sentence_loss", "random_batch", "stacked_axes", "validate_batch",
]

# Where the scanned layers live in the parameter tree; their leaves have a leading layer axis.
STACKED_LAYERS_PATH = "bert/encoder/layers"


class MaskedLMHead(nnx.Module):
  """Transform (dense, GELU, LayerNorm), then logits against the tied word embeddings + bias."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    h = config.hidden_size
    self.transform = _dense(config, h, h, ("embed",), (None,), rngs)
    self.norm = _layer_norm(config, rngs)
    self.bias = nnx.Param(
        jnp.zeros((config.vocab_size,), jnp.dtype(config.param_dtype)), **_axes("vocab")
    )

  def __call__(self, hidden: jax.Array, word_embeddings: jax.Array) -> jax.Array:
    h = self.norm(_activation(self.config, self.transform(hidden)))
    logits = jnp.einsum(
        "bph,vh->bpv", h, word_embeddings.astype(h.dtype), preferred_element_type=jnp.float32
    )
    logits = logits + self.bias[...].astype(jnp.float32)
    return constrain(logits, ("batch", None, "vocab"))


class BertForPreTraining(nnx.Module):
  """BERT with its masked-LM and next-sentence heads (Hugging Face's ``BertForPreTraining``)."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.bert = BertModel(config, rngs=rngs)
    self.mlm = MaskedLMHead(config, rngs=rngs)
    self.nsp = _dense(config, config.hidden_size, 2, ("embed",), (None,), rngs)

  def encode(
      self,
      input_ids: jax.Array,
      token_type_ids: jax.Array | None = None,
      attention_mask: jax.Array | None = None,
      *,
      dropout_rng: jax.Array | None = None,
      position_ids: jax.Array | None = None,
  ) -> jax.Array:
    """Last hidden state (batch, length, hidden) in ``config.dtype``.

    ``token_type_ids`` default to 0 and ``attention_mask`` (1 = real token) to all ones.
    Packed rows (:mod:`lamb_optax.data.packing`) pass ``position_ids`` and example numbers
    as ``attention_mask``. Dropout is applied iff ``dropout_rng`` is given.
    """
    input_ids, token_type_ids, attention_mask = encoder_inputs(
        self.config, input_ids, token_type_ids, attention_mask, position_ids)
    return self.bert(input_ids, token_type_ids, attention_mask, dropout_rng,
                     position_ids=position_ids)

  def mlm_logits(self, hidden: jax.Array, positions: jax.Array | None = None) -> jax.Array:
    """Float32 vocabulary logits at ``positions`` (batch, predictions), or at every position."""
    if positions is not None:
      hidden = _gather(hidden, positions)
    return self.mlm(hidden, self.bert.embeddings.word_embeddings.embedding[...])

  def nsp_logits(self, hidden: jax.Array) -> jax.Array:
    """Float32 next-sentence logits (batch, 2); class 0 = "B follows A", as Google and HF."""
    return self.nsp(self.bert.pool(hidden)).astype(jnp.float32)

  def _nsp_logits_at_cls(self, cls_hidden: jax.Array) -> jax.Array:
    """NSP logits (batch, k, 2) from hidden states at [CLS] tokens (batch, k, hidden)."""
    return self.nsp(jnp.tanh(self.bert.pooler(cls_hidden))).astype(jnp.float32)

  def __call__(
      self, input_ids, token_type_ids=None, attention_mask=None, masked_lm_positions=None, *,
      dropout_rng=None,
  ) -> tuple[jax.Array, jax.Array]:
    """(MLM logits, NSP logits); MLM logits at every position unless positions are given."""
    hidden = self.encode(input_ids, token_type_ids, attention_mask, dropout_rng=dropout_rng)
    return self.mlm_logits(hidden, masked_lm_positions), self.nsp_logits(hidden)

  def pretraining_logits(
      self, batch: Mapping[str, jax.Array], *, dropout_rng: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array]:
    """(MLM logits at ``masked_lm_positions``, NSP logits), both float32, for a batch.

    Equal to ``self(input_ids, segment_ids, input_mask, masked_lm_positions)`` without dropout,
    but cheaper: the last layer runs only at [CLS] and the masked positions (see
    ``BertEncoder``). With dropout the masks differ from the full computation's (they have
    other shapes), with the same distribution.

    A packed batch (with ``next_sentence_positions``, :mod:`lamb_optax.data.packing`) gives
    NSP logits (batch, examples per row, 2), one per packed example, from its own [CLS].
    """
    validate_batch(batch, self.config)  # includes encode()'s input checks
    positions = jnp.asarray(batch["masked_lm_positions"], jnp.int32)
    packed = "next_sentence_positions" in batch
    if packed:
      cls = jnp.asarray(batch["next_sentence_positions"], jnp.int32)
    else:
      cls = jnp.zeros_like(positions[:, :1])
    selected = self.bert(
        jnp.asarray(batch["input_ids"]), batch["segment_ids"], batch["input_mask"], dropout_rng,
        last_layer_positions=jnp.concatenate([cls, positions], axis=1),
        position_ids=batch["position_ids"] if packed else None,
    )
    word_embeddings = self.bert.embeddings.word_embeddings.embedding[...]
    num_cls = cls.shape[1]
    mlm_logits = self.mlm(selected[:, num_cls:], word_embeddings)
    if packed:
      return mlm_logits, self._nsp_logits_at_cls(selected[:, :num_cls])
    return mlm_logits, self.nsp_logits(selected)

  def pretraining_loss(
      self, batch: Mapping[str, jax.Array], *, dropout_rng: jax.Array | None = None
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MLM + NSP loss on a batch with Google's feature names, and metrics.

    Returns ``(loss, metrics)``: ``loss = mlm_loss + nsp_loss`` and the metrics ``loss``,
    ``mlm_loss`` (cross-entropy averaged over ``masked_lm_weights``), ``nsp_loss``,
    ``mlm_accuracy``, ``nsp_accuracy`` and ``mlm_weight`` (the sum of weights, to combine
    micro-batches exactly). All float32 scalars.
    """
    mlm_logits, nsp_logits = self.pretraining_logits(batch, dropout_rng=dropout_rng)
    mlm_loss, mlm_accuracy, mlm_weight = masked_lm_loss(
        mlm_logits, batch["masked_lm_ids"], batch["masked_lm_weights"]
    )
    nsp_loss, nsp_accuracy = next_sentence_loss(nsp_logits, batch["next_sentence_labels"],
                                                batch.get("next_sentence_weights"))
    loss = mlm_loss + nsp_loss
    metrics = dict(
        loss=loss, mlm_loss=mlm_loss, nsp_loss=nsp_loss, mlm_accuracy=mlm_accuracy,
        nsp_accuracy=nsp_accuracy, mlm_weight=mlm_weight,
    )
    return loss, metrics


def masked_lm_sums(logits, label_ids, weights) -> dict[str, jax.Array]:
  """Summed MLM cross-entropy, hits and weight, so micro-batches and devices combine exactly.

  Padding predictions have weight 0 (Google's ``masked_lm_weights``).
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  label_ids = label_ids.astype(jnp.int32)
  weights = weights.astype(jnp.float32)
  label_log_probs = jnp.take_along_axis(log_probs, label_ids[..., None], axis=-1)[..., 0]
  correct = (jnp.argmax(logits, axis=-1) == label_ids).astype(jnp.float32)
  return {"mlm_loss_sum": -jnp.sum(weights * label_log_probs),
          "mlm_correct": jnp.sum(weights * correct), "mlm_weight": jnp.sum(weights)}


def next_sentence_sums(logits, labels, weights=None) -> dict[str, jax.Array]:
  """Summed NSP cross-entropy, hits and example count; labels (batch,) or (batch, 1).

  Packed rows: logits (batch, k, 2), labels and ``weights`` (batch, k), weight 0 for an empty
  slot; the count is then the sum of the weights (the examples), not the rows.
  """
  labels = labels.reshape(-1).astype(jnp.int32)
  logits = logits.reshape(labels.shape[0], -1)
  weights = (jnp.ones(labels.shape, jnp.float32) if weights is None
             else weights.reshape(-1).astype(jnp.float32))
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  label_log_probs = jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  return {"nsp_loss_sum": -jnp.sum(weights * label_log_probs),
          "nsp_correct": jnp.sum(weights * correct), "nsp_count": jnp.sum(weights)}


def masked_lm_loss(logits, label_ids, weights) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(weighted mean cross-entropy, weighted accuracy, sum of weights) of the MLM predictions.

  As Google's ``get_masked_lm_output``: the mean divides by ``sum(weights) + 1e-5`` so an
  all-padding batch gives 0, not NaN.
  """
  sums = masked_lm_sums(logits, label_ids, weights)
  denominator = sums["mlm_weight"] + 1e-5
  return sums["mlm_loss_sum"] / denominator, sums["mlm_correct"] / denominator, sums["mlm_weight"]


def next_sentence_loss(logits, labels, weights=None) -> tuple[jax.Array, jax.Array]:
  """(mean cross-entropy, accuracy) of the NSP classifier; labels (batch,) or (batch, 1), or
  packed (see :func:`next_sentence_sums`)."""
  sums = next_sentence_sums(logits, labels, weights)
  return sums["nsp_loss_sum"] / sums["nsp_count"], sums["nsp_correct"] / sums["nsp_count"]


def stacked_axes(params: Any) -> Any:
  """``stacked_axes`` for ``lamb_optax.lamb``: 1 for the scanned encoder's leaves, else 0.

  Works on an NNX state (``nnx.split(model, nnx.Param)[1]``), its pure dict
  (``nnx.to_pure_dict``) or any pytree with the model's paths.

  >>> from flax import nnx
  >>> model = BertForPreTraining(BertConfig.tiny(vocab_size=100), rngs=nnx.Rngs(0))
  >>> axes = stacked_axes(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  >>> axes["bert"]["encoder"]["layers"]["intermediate"]["kernel"], axes["mlm"]["bias"]
  (1, 0)
  """

  def axes_of(path, _) -> int:
    return int((path_to_str(path) + "/").startswith(STACKED_LAYERS_PATH + "/"))

  return jax.tree_util.tree_map_with_path(axes_of, params)
