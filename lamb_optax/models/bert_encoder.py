"""BERT's encoder in Flax NNX: embeddings, self-attention, the scanned layer stack and the
[CLS] pooler (Hugging Face's ``BertModel``), with the building blocks (dense layers with logical
axes, LayerNorm, GELU) that the pretraining heads (:mod:`lamb_optax.models.bert`) and the
fine-tuning heads (:mod:`lamb_optax.models.bert_heads`) share.

The layers are one ``BertLayer`` whose parameters carry a leading ``layers`` axis, run by
``jax.lax.scan`` (XLA compiles one layer, whatever the depth); the last layer can run at chosen
positions only (``last_layer_positions``), which is all a pretraining loss needs.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from lamb_optax.models import attention
from lamb_optax.models.bert_config import BertConfig
from lamb_optax.models.dropout import dropout as _dropout
from lamb_optax.sharding import LOGICAL_AXES_KEY
from lamb_optax.sharding import constrain

__all__ = ["BertEmbeddings", "BertEncoder", "BertLayer", "BertModel", "BertSelfAttention"]

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
    # index_in_dim rather than a[-1]: its transpose accumulates into the train step's
    # gradient refs (lamb_optax.train.step), a stride-less static slice's does not in jax 0.10.
    last_layer, last_key = jax.tree.map(
        lambda a: jax.lax.index_in_dim(a, -1, keepdims=False), (stacked, keys))
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
