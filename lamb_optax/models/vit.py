"""Vision Transformer (Dosovitskiy et al., 2021) in Flax NNX: ViT-S/16, ViT-B/16 and small ViTs.

* Patches are cut and flattened, then one Linear maps each to the width (the same parameters
  as the paper's stride-``p`` conv: ``p·p·C·D + D``); a learned [CLS] token and learned position
  embeddings; pre-LayerNorm blocks (LN, multi-head attention, residual; LN, GELU MLP,
  residual); a final LayerNorm and a linear head on the [CLS] token (zero-initialised, as the
  paper).
* The encoder blocks are one :class:`EncoderBlock` whose parameters carry a leading ``layers``
  axis (``nnx.vmap`` at init), run by ``jax.lax.scan``: XLA compiles one block whatever the
  depth, and :func:`stacked_axes` tells LAMB to take one trust ratio per block and tensor.
* Q, K, V are separate kernels (embed, heads, kv), as BERT's here: one trust ratio each.
* Logical axes as in :mod:`lamb_optax.models.bert` (``embed``, ``heads``, ``kv``, ``mlp``,
  ``layers``, ``classes``); dropout from an explicit key (none = deterministic).

>>> from flax import nnx
>>> model = ViT(ViTConfig.preset("tiny", image_size=8, patch_size=2, num_classes=10,
...                              in_channels=1), rngs=nnx.Rngs(0))
>>> model(jnp.zeros((2, 8, 8, 1))).shape
(2, 10)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lamb_optax.masks import path_to_str
from lamb_optax.models import config_presets
from lamb_optax.models.dropout import dropout as _dropout
from lamb_optax.sharding import LOGICAL_AXES_KEY
from lamb_optax.sharding import constrain

STACKED_LAYERS_PATH = "encoder/layers"

# (width, depth, heads, MLP width): ViT-S is Touvron et al.'s DeiT-S shape, ViT-B Dosovitskiy
# et al.'s Table 1; "tiny" is ours, for 8×8 digits on a CPU. S, B and L agree with
# google-research/big_vision big_vision/models/vit.py decode_variant (S 384/12/6/1536, B
# 768/12/12/3072, L 1024/24/16/4096; read at commit 0127fb6b337e). big_vision's ImageNet configs
# also add a pre-logits layer (rep_size=True: Dense(width) + tanh) that this model does not have.
_PRESETS = {
    "tiny": dict(hidden_size=64, num_layers=4, num_heads=4, mlp_size=128),
    "small": dict(hidden_size=384, num_layers=12, num_heads=6, mlp_size=1536),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, mlp_size=3072),
    "large": dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_size=4096),
}


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """Shape and numerics of a ViT; defaults are ViT-B/16 at 224 pixels, 1000 classes.

  >>> ViTConfig(image_size=224, patch_size=14).num_patches
  256
  >>> ViTConfig(image_size=30, patch_size=16)
  Traceback (most recent call last):
  ...
  ValueError: image_size 30 is not divisible by patch_size 16: ...
  """

  image_size: int = 224
  patch_size: int = 16
  in_channels: int = 3
  num_classes: int = 1000
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_size: int = 3072
  dropout: float = 0.0
  layer_norm_eps: float = 1e-6
  dtype: str = "float32"

  def __post_init__(self):
    if self.image_size % self.patch_size:
      raise ValueError(
          f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}: "
          f"use an image size that is a multiple of {self.patch_size} (e.g. "
          f"{self.patch_size * max(1, round(self.image_size / self.patch_size))}) or another "
          "patch size.")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads "
                       f"{self.num_heads}.")

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @classmethod
  def preset(cls, name: str, **overrides: Any) -> ViTConfig:
    """One of ``tiny`` (ours, for 8×8 digits), ``small`` (ViT-S), ``base``, ``large``, with any
    field overridden."""
    return config_presets.from_preset(cls, _PRESETS, name, overrides, "ViT")


def _axes(*names: str | None) -> dict[str, tuple[str | None, ...]]:
  return {LOGICAL_AXES_KEY: names}


def _dense(config, features_in, features_out, axes_in, axes_out, rngs, axis=-1, zero=False):
  kwargs = dict(
      kernel_init=(nnx.initializers.zeros_init() if zero else
                   nnx.initializers.xavier_uniform()),
      bias_init=nnx.initializers.zeros_init(),
      kernel_metadata=_axes(*axes_in, *axes_out), bias_metadata=_axes(*axes_out),
      dtype=jnp.dtype(config.dtype), rngs=rngs)
  if isinstance(features_in, int) and isinstance(features_out, int):
    return nnx.Linear(features_in, features_out, **kwargs)
  return nnx.LinearGeneral(features_in, features_out, axis=axis, **kwargs)


def _layer_norm(config: ViTConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps,
                       scale_metadata=_axes("embed"), bias_metadata=_axes("embed"),
                       dtype=jnp.dtype(config.dtype), rngs=rngs)


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """(batch, H, W, C) -> (batch, H/p · W/p, p·p·C), patches in row-major order, each (p, p, C)
  flattened: the layout of the paper's conv kernel (p, p, C, D) reshaped to (p·p·C, D).

  >>> patchify(jnp.arange(16.0).reshape(1, 4, 4, 1), 2)[0, 1].tolist()   # the top-right patch
  [2.0, 3.0, 6.0, 7.0]
  """
  b, h, w, c = images.shape
  p = patch_size
  x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


class EncoderBlock(nnx.Module):
  """Pre-LN block: x + MHA(LN(x)); x + MLP(LN(x)) with exact GELU."""

  def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
    self.config = config
    h, heads = config.hidden_size, (config.num_heads, config.head_dim)
    self.norm1 = _layer_norm(config, rngs)
    self.query = _dense(config, h, heads, ("embed",), ("heads", "kv"), rngs)
    self.key = _dense(config, h, heads, ("embed",), ("heads", "kv"), rngs)
    self.value = _dense(config, h, heads, ("embed",), ("heads", "kv"), rngs)
    self.out = _dense(config, heads, h, ("heads", "kv"), ("embed",), rngs, axis=(-2, -1))
    self.norm2 = _layer_norm(config, rngs)
    self.mlp_in = _dense(config, h, config.mlp_size, ("embed",), ("mlp",), rngs)
    self.mlp_out = _dense(config, config.mlp_size, h, ("mlp",), ("embed",), rngs)

  def attention(self, x: jax.Array) -> jax.Array:
    head_axes = ("batch", "length", "heads", "kv")
    q = constrain(self.query(x), head_axes)
    k = constrain(self.key(x), head_axes)
    v = constrain(self.value(x), head_axes)
    logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(logits * self.config.head_dim ** -0.5, axis=-1).astype(v.dtype)
    return self.out(jnp.einsum("bnqk,bknd->bqnd", probs, v))

  def __call__(self, x: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
    keys = [None] * 3 if dropout_rng is None else list(jax.random.split(dropout_rng, 3))
    rate = self.config.dropout
    x = x + _dropout(self.attention(self.norm1(x)), rate, keys[0])
    hidden = jax.nn.gelu(self.mlp_in(self.norm2(x)), approximate=False)
    hidden = _dropout(constrain(hidden, ("batch", "length", "mlp")), rate, keys[1])
    x = x + _dropout(self.mlp_out(hidden), rate, keys[2])
    return constrain(x, ("batch", "length", "embed"))


class Encoder(nnx.Module):
  """``num_layers`` EncoderBlocks stacked on a leading ``layers`` axis, run by ``lax.scan``."""

  def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
    self.config = config

    @nnx.split_rngs(splits=config.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0,
              transform_metadata={nnx.PARTITION_NAME: "layers", LOGICAL_AXES_KEY: "layers"})
    def make_layers(rngs: nnx.Rngs) -> EncoderBlock:
      return EncoderBlock(config, rngs=rngs)

    self.layers = make_layers(rngs)

  def __call__(self, x: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
    graphdef, stacked = nnx.split(self.layers)
    keys = None if dropout_rng is None else jax.random.split(dropout_rng, self.config.num_layers)

    def one_layer(hidden, layer_and_key):
      layer_state, key = layer_and_key
      return nnx.merge(graphdef, layer_state)(hidden, key), None

    return jax.lax.scan(one_layer, x, (stacked, keys))[0]


class ViT(nnx.Module):
  """Patch embedding, [CLS] + position embeddings, the scanned encoder, LN, linear head."""

  def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
    self.config = config
    h, p = config.hidden_size, config.patch_size
    self.patch_embedding = _dense(config, p * p * config.in_channels, h, (None,), ("embed",), rngs)
    self.cls_token = nnx.Param(jnp.zeros((1, 1, h)), **_axes(None, None, "embed"))
    self.pos_embedding = nnx.Param(
        nnx.initializers.normal(0.02)(rngs.params(), (1, config.num_patches + 1, h)),
        **_axes(None, None, "embed"))
    self.encoder = Encoder(config, rngs=rngs)
    self.final_norm = _layer_norm(config, rngs)
    self.head = _dense(config, h, config.num_classes, ("embed",), ("classes",), rngs, zero=True)

  def __call__(self, images: jax.Array, train: bool = False,
               dropout_rng: jax.Array | None = None) -> jax.Array:
    """Float32 logits (batch, classes) of images (batch, H, W, C); ``train`` is accepted for
    a common signature with :class:`lamb_optax.models.resnet.ResNet` (dropout follows the key)."""
    del train
    c = self.config
    if images.shape[1:] != (c.image_size, c.image_size, c.in_channels):
      raise ValueError(f"ViT built for images {(c.image_size, c.image_size, c.in_channels)} got "
                       f"{images.shape[1:]}; set the model's image_size/in_channels to the data's.")
    embed_key, encoder_key = (None, None) if dropout_rng is None else jax.random.split(dropout_rng)
    x = self.patch_embedding(patchify(images.astype(jnp.dtype(c.dtype)), c.patch_size))
    cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (x.shape[0], 1, x.shape[2]))
    x = jnp.concatenate([cls, x], axis=1) + self.pos_embedding[...].astype(x.dtype)
    x = constrain(_dropout(x, c.dropout, embed_key), ("batch", "length", "embed"))
    x = self.final_norm(self.encoder(x, encoder_key))
    return self.head(x[:, 0]).astype(jnp.float32)


def stacked_axes(params: Any) -> Any:
  """1 for the scanned encoder's leaves (under ``encoder/layers``), else 0; any path prefix
  before ``encoder`` (e.g. the trainer's ``params/``) is allowed.

  >>> from flax import nnx
  >>> m = ViT(ViTConfig.preset("tiny", image_size=8, patch_size=2), rngs=nnx.Rngs(0))
  >>> axes = stacked_axes(nnx.to_pure_dict(nnx.state(m, nnx.Param)))
  >>> axes["encoder"]["layers"]["mlp_in"]["kernel"], axes["head"]["kernel"]
  (1, 0)
  """

  def axes_of(path, _) -> int:
    return int(f"/{STACKED_LAYERS_PATH}/" in "/" + path_to_str(path) + "/")

  return jax.tree_util.tree_map_with_path(axes_of, params)


def flops_per_example(config: ViTConfig) -> float:
  """Training FLOPs per image (3 × forward; matmuls and attention scores).

  >>> round(flops_per_example(ViTConfig()) / 6 / 1e9, 1)  # ViT-B/16: 17.6 G multiply-adds
  17.6
  """
  n, h, m = config.num_patches + 1, config.hidden_size, config.mlp_size
  per_layer = 2 * n * (4 * h * h + 2 * h * m) + 2 * 2 * n * n * h
  patch = 2 * config.num_patches * config.patch_size ** 2 * config.in_channels * h
  return 3.0 * (config.num_layers * per_layer + patch + 2 * h * config.num_classes)
