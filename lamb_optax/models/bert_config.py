"""BERT hyper-parameters (``BertConfig``), the standard presets, and training FLOPs per token."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from lamb_optax.models import config_presets

# Activations the original checkpoints use, by their Hugging Face names: "gelu" is the exact (erf)
# GELU of Google's BERT; "gelu_new"/"gelu_pytorch_tanh" the tanh approximation.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh")
REMAT_POLICIES = ("none", "full", "dots")
ATTENTION_IMPLEMENTATIONS = ("xla", "pallas")  # lamb_optax.models.attention.IMPLEMENTATIONS

# (hidden, layers, heads, intermediate): BERT-Tiny/Mini are Google's small BERTs (Turc et al.,
# 2019, "Well-Read Students Learn Better"); Base and Large are Devlin et al. (2019).
_PRESETS = {
    "tiny": dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512),
    "mini": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Shape, regularisation and numerics of a BERT encoder with pretraining heads.

  Defaults are BERT-Base (uncased vocabulary). ``dtype`` is the compute dtype (``"bfloat16"``
  for speed on TPU/GPU); parameters are kept in ``param_dtype``; losses and softmaxes are always
  computed in float32. ``remat`` rematerialises each scanned layer in the backward pass:
  ``"full"`` saves only the layer inputs, ``"dots"`` also keeps matmul outputs.
  ``scan_layers`` runs the layers as one ``lax.scan`` (compile time independent of depth: the
  default, and what TPU pod configs want); False unrolls them into straight-line code, which
  saves the scan's stacked residual buffers (faster on CPU, ~10% for BERT-Base) at the cost of a
  compile time that grows with depth. Parameters are stacked per layer either way, so
  checkpoints do not depend on it. ``attention`` chooses the attention's implementation
  (:mod:`lamb_optax.models.attention`): ``"xla"`` (the scores in HBM; the default) or
  ``"pallas"`` (one fused TPU kernel per head, with dropout; Pallas' interpreter off a TPU). Both
  give the same dropout masks, and the same values up to rounding.

  >>> BertConfig.preset("large").num_layers
  24
  >>> BertConfig.preset("tiny", vocab_size=1000).vocab_size
  1000
  >>> BertConfig(hidden_size=100, num_heads=12)
  Traceback (most recent call last):
  ...
  ValueError: hidden_size 100 is not divisible by num_heads 12...
  """

  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  hidden_act: str = "gelu"
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"
  scan_layers: bool = True
  attention: str = "xla"

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"BertConfig.{name} must be a positive int, got {value!r}.")
    if self.hidden_size % self.num_heads:
      raise ValueError(
          f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}: each "
          f"head gets hidden_size / num_heads dimensions. Choose num_heads among the divisors of "
          f"{self.hidden_size} (e.g. {self.hidden_size // 64 or 1} for 64-dim heads)."
      )
    for name in ("hidden_dropout", "attention_dropout"):
      rate = getattr(self, name)
      if not 0.0 <= rate < 1.0:
        raise ValueError(f"BertConfig.{name} must be in [0, 1), got {rate!r}.")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(
          f"BertConfig.hidden_act must be one of {ACTIVATIONS}, got {self.hidden_act!r}.")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"BertConfig.remat must be one of {REMAT_POLICIES}, got {self.remat!r}.")
    if self.attention not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f"BertConfig.attention must be one of {ATTENTION_IMPLEMENTATIONS}, "
                       f"got {self.attention!r}.")
    if not isinstance(self.scan_layers, bool):
      raise ValueError(f"BertConfig.scan_layers must be True or False, got {self.scan_layers!r}.")
    if not self.layer_norm_eps > 0 or not self.initializer_range > 0:
      raise ValueError("BertConfig.layer_norm_eps and initializer_range must be positive.")
    for name in ("dtype", "param_dtype"):
      try:
        dtype = jnp.dtype(getattr(self, name))
      except TypeError:
        raise ValueError(f"BertConfig.{name} is not a dtype: {getattr(self, name)!r}.") from None
      if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"BertConfig.{name} must be a floating dtype, got {dtype}.")
      # Store the canonical name so configs compare, hash and serialise as plain data.
      object.__setattr__(self, name, dtype.name)

  @classmethod
  def preset(cls, name: str, **overrides: Any) -> BertConfig:
    """One of ``tiny``, ``mini``, ``base``, ``large``, with any field overridden."""
    return config_presets.from_preset(cls, _PRESETS, name, overrides, "BERT")

  @classmethod
  def tiny(cls, **overrides: Any) -> BertConfig:
    """BERT-Tiny: 2 layers, hidden 128, 2 heads (4.4M parameters); for CPU tests."""
    return cls.preset("tiny", **overrides)

  @classmethod
  def mini(cls, **overrides: Any) -> BertConfig:
    """BERT-Mini: 4 layers, hidden 256, 4 heads (11.2M parameters)."""
    return cls.preset("mini", **overrides)

  @classmethod
  def base(cls, **overrides: Any) -> BertConfig:
    """BERT-Base: 12 layers, hidden 768, 12 heads (110M parameters)."""
    return cls.preset("base", **overrides)

  @classmethod
  def large(cls, **overrides: Any) -> BertConfig:
    """BERT-Large: 24 layers, hidden 1024, 16 heads (340M parameters)."""
    return cls.preset("large", **overrides)

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  def replace(self, **changes: Any) -> BertConfig:
    """A copy with some fields changed (validated again)."""
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def default_max_predictions_per_seq(max_seq_length: int) -> int:
  """Google's ``max_predictions_per_seq`` for a sequence length: 20 at 128, 80 at 512."""
  return max(1, round(max_seq_length * 20 / 128))


def flops_per_token(
    config: BertConfig,
    max_seq_length: int,
    max_predictions_per_seq: int | None = None,
    training: bool = True,
) -> float:
  """Matmul FLOPs per input token of one pretraining step (forward + backward by default).

  Counts what the hardware multiplies in ``BertForPreTraining.pretraining_loss``: per layer the
  Q/K/V/output projections (4·H²) and the MLP (2·H·I) per token, attention scores and mixing
  (2·S·H per token); the last layer computes everything but K and V only at [CLS] and the
  ``max_predictions_per_seq`` masked positions (default as Google's recipe: 20 at 128, 80 at 512),
  and so do the MLM transform and vocabulary projection; the pooler and NSP run once per
  sequence. Embedding lookups, softmax and LayerNorm are not matmuls and are left out (under
  1%). A multiply-add is 2 FLOPs; training costs 3x the forward (the backward computes gradients
  for activations and for weights). Use it for MFU: ``tokens/s * flops_per_token / peak``.

  >>> round(flops_per_token(BertConfig.preset("base"), 128) / 1e6)
  516
  """
  if max_seq_length < 1:
    raise ValueError(f"max_seq_length must be positive, got {max_seq_length}.")
  h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
  p = (default_max_predictions_per_seq(max_seq_length) if max_predictions_per_seq is None
       else max_predictions_per_seq)
  keys_values = 2 * (2 * h * h)
  queries_to_mlp = 2 * (2 * h * h + 2 * h * i) + 2 * 2 * max_seq_length * h
  last_layer_fraction = min(1.0, (1 + p) / max_seq_length)
  encoder = (config.num_layers * (keys_values + queries_to_mlp)
             - (1.0 - last_layer_fraction) * queries_to_mlp)
  mlm_head = 2 * (h * h + h * v) * p / max_seq_length
  pooler_nsp = 2 * (h * h + 2 * h) / max_seq_length
  forward = encoder + mlm_head + pooler_nsp
  return float(3 * forward if training else forward)
