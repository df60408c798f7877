"""BERT for pretraining (masked LM + next-sentence prediction) in Flax NNX.

The model is Devlin et al.'s BERT, parameter for parameter (so checkpoints go to and from
Hugging Face, see :mod:`lamb_optax.models.hf`), arranged for speed on accelerators:

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

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from lamb_optax.masks import path_to_str
from lamb_optax.models import attention
from lamb_optax.models.bert_config import BertConfig
from lamb_optax.models.bert_config import flops_per_token
from lamb_optax.models.dropout import dropout as _dropout
from lamb_optax.models.inputs import encoder_inputs
from lamb_optax.models.inputs import random_batch
from lamb_optax.models.inputs import validate_batch
from lamb_optax.sharding import LOGICAL_AXES_KEY
from lamb_optax.sharding import constrain

__all__ = [
    "BertConfig", "BertForPreTraining", "BertModel", "flops_per_token", "masked_lm_loss",
    "next_sentence_loss", "random_batch", "stacked_axes", "validate_batch",
]

# Where the scanned layers live in the parameter tree; their leaves have a leading layer axis.
STACKED_LAYERS_PATH = "bert/encoder/layers"

ATTENTION_CONTEXT = "attention_context"
_REMAT_POLICIES = {
    "none": jax.checkpoint_policies.everything_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        jax.checkpoint_policies.save_only_these_names(ATTENTION_CONTEXT)),
}
# Ops that take one layer out of the stacked tensors: never saved for the backward pass, which
# takes the layer again (saving them would copy every layer's weights into a residual stack).
_LAYER_INDEXING = ("dynamic_slice", "squeeze", "reshape")


def _layer_policy(remat: str):
  """The remat policy of a scanned layer: ``remat``'s, and never the indexed weights."""
  saveable = _REMAT_POLICIES[remat]
  return lambda prim, *args, **params: (
      prim.name not in _LAYER_INDEXING and saveable(prim, *args, **params))


def _axes(*names: str | None) -> dict[str, tuple[str | None, ...]]:
  return {LOGICAL_AXES_KEY: names}


def _kernel_init(config: BertConfig):
  # Google's BERT initialises every weight matrix and embedding from N(0, 0.02) truncated at 2σ.
  return nnx.initializers.truncated_normal(stddev=config.initializer_range)


def _numerics(config: BertConfig) -> dict[str, Any]:
  return dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype))


def _dense(config: BertConfig, features_in, features_out, axes_in, axes_out, rngs, axis=-1):
  """A Linear (2-D kernel) or LinearGeneral (multi-axis kernel) with logical axes."""
  kwargs = dict(
      kernel_init=_kernel_init(config), bias_init=nnx.initializers.zeros_init(),
      kernel_metadata=_axes(*axes_in, *axes_out), bias_metadata=_axes(*axes_out),
      rngs=rngs, **_numerics(config),
  )
  if isinstance(features_in, int) and isinstance(features_out, int):
    return nnx.Linear(features_in, features_out, **kwargs)
  return nnx.LinearGeneral(features_in, features_out, axis=axis, **kwargs)


def _layer_norm(config: BertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # Flax LayerNorm reduces in float32 whatever the compute dtype.
  return nnx.LayerNorm(
      config.hidden_size, epsilon=config.layer_norm_eps, scale_metadata=_axes("embed"),
      bias_metadata=_axes("embed"), rngs=rngs, **_numerics(config),
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gelu(approximate: bool, x: jax.Array) -> jax.Array:
  """GELU whose backward pass recomputes from its input: the exact GELU's autodiff would keep
  three intermediates the size of the MLP's hidden layer for every layer (a remat policy cannot
  say so inside the scanned layer's everything-saveable one)."""
  return jax.nn.gelu(x, approximate=approximate)


def _gelu_forward(approximate, x):
  return _gelu(approximate, x), x


def _gelu_backward(approximate, x, grad):
  return jax.vjp(lambda x: jax.nn.gelu(x, approximate=approximate), x)[1](grad)


_gelu.defvjp(_gelu_forward, _gelu_backward)


def _activation(config: BertConfig, x: jax.Array) -> jax.Array:
  return _gelu(config.hidden_act != "gelu", x)


def _split(key: jax.Array | None, num: int) -> list[jax.Array | None]:
  return [None] * num if key is None else list(jax.random.split(key, num))


def _gather(x: jax.Array, positions: jax.Array) -> jax.Array:
  """x[b, positions[b]] for every example b: (batch, length, ...) -> (batch, n, ...)."""
  return jnp.take_along_axis(x, positions[:, :, None].astype(jnp.int32), axis=1)


class BertEmbeddings(nnx.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config

    def embed(num, axes):
      return nnx.Embed(
          num, config.hidden_size, embedding_init=_kernel_init(config),
          embedding_metadata=_axes(*axes), rngs=rngs, **_numerics(config),
      )

    self.word_embeddings = embed(config.vocab_size, ("vocab", "embed"))
    self.position_embeddings = embed(config.max_position_embeddings, (None, "embed"))
    self.token_type_embeddings = embed(config.type_vocab_size, (None, "embed"))
    self.norm = _layer_norm(config, rngs)

  def __call__(self, input_ids, token_type_ids, dropout_rng=None, position_ids=None) -> jax.Array:
    """``position_ids`` (batch, length): each token's position; default 0, 1, ... per row
    (packed rows restart it at every example)."""
    if position_ids is None:
      positions = self.position_embeddings(jnp.arange(input_ids.shape[1]))[None]
    else:
      positions = self.position_embeddings(position_ids)
    x = (
        self.word_embeddings(input_ids)
        + positions
        + self.token_type_embeddings(token_type_ids)
    )
    x = _dropout(self.norm(x), self.config.hidden_dropout, dropout_rng)
    return constrain(x, ("batch", "length", "embed"))


class BertSelfAttention(nnx.Module):
  """Multi-head self-attention; Q/K/V kernels shaped (embed, heads, kv) for tensor parallelism.

  Q, K and V stay separate tensors (not one fused QKV kernel): LAMB takes one trust ratio per
  tensor, and Google's recipe has three.
  """

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    heads = (config.num_heads, config.head_dim)
    self.query = _dense(config, config.hidden_size, heads, ("embed",), ("heads", "kv"), rngs)
    self.key = _dense(config, config.hidden_size, heads, ("embed",), ("heads", "kv"), rngs)
    self.value = _dense(config, config.hidden_size, heads, ("embed",), ("heads", "kv"), rngs)
    self.output = _dense(
        config, heads, config.hidden_size, ("heads", "kv"), ("embed",), rngs, axis=(-2, -1)
    )

  def __call__(self, x, attention_mask, dropout_rng=None, queries=None,
               query_mask=None) -> jax.Array:
    """Attends from ``queries`` (default: every token of ``x``) to all tokens of ``x``.

    ``attention_mask`` (batch, length) is bool or segment numbers (see
    :mod:`lamb_optax.models.attention`); ``query_mask`` is the queries' (default: the same).
    """
    head_axes = ("batch", "length", "heads", "kv")
    q = constrain(self.query(x if queries is None else queries), head_axes)
    k = constrain(self.key(x), head_axes)
    v = constrain(self.value(x), head_axes)
    # Scores and softmax in float32 even when computing in bfloat16.
    context = attention.dot_product_attention(
        q, k, v, attention_mask, query_mask=query_mask, rate=self.config.attention_dropout,
        dropout_rng=dropout_rng, implementation=self.config.attention)
    if self.config.attention != "xla":
      # Saved by the "dots" remat policy like a matmul's output: recomputing it would run the
      # forward kernel again in the backward pass.
      context = checkpoint_name(context, ATTENTION_CONTEXT)
    return self.output(constrain(context, head_axes))


class BertLayer(nnx.Module):
  """One post-LayerNorm transformer block: attention, add & norm, GELU MLP, add & norm."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.attention = BertSelfAttention(config, rngs=rngs)
    self.attention_norm = _layer_norm(config, rngs)
    h, i = config.hidden_size, config.intermediate_size
    self.intermediate = _dense(config, h, i, ("embed",), ("mlp",), rngs)
    self.output = _dense(config, i, h, ("mlp",), ("embed",), rngs)
    self.output_norm = _layer_norm(config, rngs)

  def __call__(self, x, attention_mask, dropout_rng=None, positions=None) -> jax.Array:
    """The block's output at every token, or only at ``positions`` (batch, n) if given."""
    rate = self.config.hidden_dropout
    attention_key, attention_out_key, mlp_out_key = _split(dropout_rng, 3)
    queries = query_mask = None
    if positions is not None:
      queries = _gather(x, positions)
      query_mask = _gather(attention_mask[:, :, None], positions)[:, :, 0]
    attended = self.attention(x, attention_mask, attention_key, queries, query_mask)
    residual = x if queries is None else queries
    x = self.attention_norm(residual + _dropout(attended, rate, attention_out_key))
    hidden = constrain(_activation(self.config, self.intermediate(x)), ("batch", "length", "mlp"))
    x = self.output_norm(x + _dropout(self.output(hidden), rate, mlp_out_key))
    return constrain(x, ("batch", "length", "embed"))


class BertEncoder(nnx.Module):
  """``num_layers`` BertLayers stacked on a leading ``layers`` axis and run by ``lax.scan``."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config

    @nnx.split_rngs(splits=config.num_layers)
    @nnx.vmap(
        in_axes=(0,), out_axes=0,
        transform_metadata={nnx.PARTITION_NAME: "layers", LOGICAL_AXES_KEY: "layers"},
    )
    def make_layers(rngs: nnx.Rngs) -> BertLayer:
      return BertLayer(config, rngs=rngs)

    self.layers = make_layers(rngs)

  def __call__(self, x, attention_mask, dropout_rng=None, last_layer_positions=None):
    """Hidden states after the last layer: at every token, or at ``last_layer_positions``.

    With positions (batch, n), the last layer computes its queries, attention output and MLP
    only there (its keys and values still see every token), which gives exactly the same
    values at those positions for (n / length) of the work: the pretraining loss needs the
    last layer only at [CLS] and the masked tokens.
    """
    graphdef, stacked = nnx.split(self.layers)
    keys = None if dropout_rng is None else jax.random.split(dropout_rng, self.config.num_layers)

    def layer_at(hidden, index, stacked_and_keys):
      layer_state, key = jax.tree.map(
          lambda a: jax.lax.dynamic_index_in_dim(a, index, keepdims=False), stacked_and_keys)
      return nnx.merge(graphdef, layer_state)(hidden, attention_mask, key), None

    # The loop indexes the stacked tensors itself rather than scanning over them: scanning over
    # layers[:-1] would copy all but the last layer's weights every step (and pad their
    # gradients back), and the policy keeps the indexed weights out of the saved residuals.
    layer_at = jax.checkpoint(layer_at, prevent_cse=False,
                              policy=_layer_policy(self.config.remat))
    num_scanned = self.config.num_layers - (last_layer_positions is not None)
    if self.config.scan_layers:
      x, _ = jax.lax.scan(lambda hidden, index: layer_at(hidden, index, (stacked, keys)), x,
                          jnp.arange(num_scanned))
    else:  # the same layers, unrolled: no stacked residuals, compile time grows with depth
      for index in range(num_scanned):
        x, _ = layer_at(x, index, (stacked, keys))
    if last_layer_positions is None:
      return x
    last_layer, last_key = jax.tree.map(lambda a: a[-1], (stacked, keys))
    return nnx.merge(graphdef, last_layer)(x, attention_mask, last_key, last_layer_positions)


class BertModel(nnx.Module):
  """Embeddings, the scanned encoder and the [CLS] pooler (Hugging Face's ``BertModel``)."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embeddings = BertEmbeddings(config, rngs=rngs)
    self.encoder = BertEncoder(config, rngs=rngs)
    h = config.hidden_size
    self.pooler = _dense(config, h, h, ("embed",), (None,), rngs)

  def __call__(self, input_ids, token_type_ids, attention_mask, dropout_rng=None,
               last_layer_positions=None, position_ids=None) -> jax.Array:
    """``attention_mask``: 1 for real tokens, 0 for padding; with ``position_ids`` (packed
    rows) the example number of each token, 1..k, 0 for padding, and a token attends only
    within its own example (:mod:`lamb_optax.models.attention`)."""
    embed_key, encoder_key = _split(dropout_rng, 2)
    x = self.embeddings(input_ids, token_type_ids, embed_key, position_ids)
    # A boolean mask lets the attention share one key mask between all queries; segment
    # numbers need the per-query comparison.
    mask = attention_mask.astype(bool if position_ids is None else jnp.int32)
    return self.encoder(x, mask, encoder_key, last_layer_positions)

  def pool(self, hidden: jax.Array) -> jax.Array:
    """tanh(dense(hidden state of [CLS])), the sequence summary the NSP head classifies."""
    return jnp.tanh(self.pooler(hidden[:, 0]))


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
