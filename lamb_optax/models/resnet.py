"""ResNet in Flax NNX: ResNet-50 v1.5 as MLPerf trains it, ResNet-18/34, and small CIFAR-style nets.

* v1.5: in a bottleneck block the stride sits on the 3×3 convolution (not the first 1×1), as in
  torchvision, NVIDIA's and MLPerf's ResNet-50; projection shortcuts (1×1 conv + BatchNorm) where
  the shape changes; no conv biases; the last BatchNorm of each residual branch may start at zero
  (Goyal et al. 2017, ``zero_init_residual``).
* Stages are NOT stacked by ``scan``: the blocks of a stage differ (the first one strides and
  projects), and the stages differ in width; a 16-block ResNet-50 compiles in seconds unstacked.
  So ``stacked_axes`` is 0 everywhere and LAMB/LARS take one trust ratio per tensor.
* :class:`BatchNorm` normalises by the moments of fixed-size *groups* of examples ("ghost"
  batches, see :func:`group_moments`) chosen so that the groups hold the same examples on any
  device layout and any number of micro-batches; in training it does not update its running
  statistics itself but ``sow``\\ s the batch moments, which the trainer averages over a step's
  micro-batches and folds into the running averages once per step (:func:`update_running_stats`).
* Parameters carry logical axes (``conv_in``, ``conv_out``, ``classes``), which
  :mod:`lamb_optax.sharding` maps onto the mesh (replicated by default).

>>> from flax import nnx
>>> model = ResNet(ResNetConfig.preset("tiny", num_classes=10, in_channels=1), rngs=nnx.Rngs(0))
>>> model(jnp.zeros((2, 8, 8, 1)), train=False).shape
(2, 10)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lamb_optax.models import config_presets
from lamb_optax.sharding import LOGICAL_AXES_KEY
from lamb_optax.sharding import constrain

# (block, blocks per stage, stage widths, stem): He et al. 2016's ImageNet nets; "tiny" and
# "small" are CIFAR-style nets (3×3 stride-1 stem, no max-pool) for small images such as 8×8 digits.
_PRESETS = {
    "tiny": dict(block="basic", stage_sizes=(1, 1, 1), widths=(16, 32, 64), stem="cifar"),
    "small": dict(block="basic", stage_sizes=(2, 2, 2), widths=(32, 64, 128), stem="cifar"),
    "resnet18": dict(block="basic", stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512)),
    "resnet34": dict(block="basic", stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512)),
    "resnet50": dict(block="bottleneck", stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512)),
    "resnet101": dict(block="bottleneck", stage_sizes=(3, 4, 23, 3), widths=(64, 128, 256, 512)),
}
_EXPANSION = {"basic": 1, "bottleneck": 4}


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  """Shape and numerics of a ResNet.

  ``batch_norm_group_size``: examples per BatchNorm statistics group in training (0 = the whole
  micro-batch, over all devices); see :func:`group_moments`.

  >>> ResNetConfig.preset("resnet50").widths
  (64, 128, 256, 512)
  """

  block: str = "bottleneck"
  stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
  widths: tuple[int, ...] = (64, 128, 256, 512)
  stem: str = "imagenet"  # "imagenet": 7×7/2 conv + 3×3/2 max-pool; "cifar": 3×3/1 conv
  num_classes: int = 1000
  in_channels: int = 3
  batch_norm_momentum: float = 0.9
  batch_norm_epsilon: float = 1e-5
  batch_norm_group_size: int = 0
  zero_init_residual: bool = True
  dtype: str = "float32"

  def __post_init__(self):
    if self.block not in _EXPANSION:
      raise ValueError(f"block must be one of {sorted(_EXPANSION)}, got {self.block!r}.")
    if self.stem not in ("imagenet", "cifar"):
      raise ValueError(f"stem must be 'imagenet' or 'cifar', got {self.stem!r}.")
    if len(self.stage_sizes) != len(self.widths):
      raise ValueError(f"stage_sizes {self.stage_sizes} and widths {self.widths} differ in length.")

  @classmethod
  def preset(cls, name: str, **overrides: Any) -> ResNetConfig:
    """One of ``tiny``, ``small`` (CIFAR-style), ``resnet18`` … ``resnet101``, with any field
    overridden."""
    return config_presets.from_preset(cls, _PRESETS, name, overrides, "ResNet")


def _axes(*names: str | None) -> dict[str, tuple[str | None, ...]]:
  return {LOGICAL_AXES_KEY: names}


def group_moments(x: jax.Array, group_size: int) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean and (biased) variance of each group of ``x`` (batch, ..., channels).

  Row ``k`` of a batch of ``b`` rows belongs to group ``k mod (b / group_size)`` (strided, not
  contiguous). The trainer's micro-batch ``i`` of ``M`` holds global rows ``k·M + i``, so group
  ``g`` of a micro-batch is global group ``M·g + i`` of ``global batch / group_size`` groups,
  whatever ``M`` and the number of devices are: the normalisation, hence the loss and gradient,
  do not depend on the layout. Returns arrays (groups, 1, ..., 1, channels) in float32.

  >>> x = jnp.arange(8.0).reshape(4, 1, 2)      # 4 rows, 2 channels
  >>> mean, var = group_moments(x, group_size=2)  # groups {0, 2} and {1, 3}
  >>> mean[:, 0].tolist()
  [[2.0, 3.0], [4.0, 5.0]]
  """
  b = x.shape[0]
  size = b if group_size in (0, None) or group_size >= b else group_size
  if b % size:
    raise ValueError(f"A batch of {b} rows cannot be cut into BatchNorm groups of {size}: make "
                     "batch_norm_group_size divide the micro-batch (global micro-batch = "
                     "micro_batch_size × data-parallel devices), or set it to 0.")
  groups = b // size
  # Row k goes to [k // groups, k % groups].
  x = x.astype(jnp.float32).reshape(size, groups, *x.shape[1:])
  axes = (0,) + tuple(range(2, x.ndim - 1))
  mean = jnp.mean(x, axis=axes, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
  return mean[0], var[0]


class BatchNorm(nnx.Module):
  """BatchNorm over (batch, spatial) with group statistics in training, running ones in eval.

  Training (``train=True``) normalises each group by its own moments (:func:`group_moments`) and
  sows the moments averaged over groups (``nnx.Intermediate`` ``batch_mean``/``batch_var``);
  the running ``mean``/``var`` (``nnx.BatchStat``) are left alone for the caller to update
  (:func:`update_running_stats`), so that a step of several micro-batches updates them once.
  """

  def __init__(self, features: int, config: ResNetConfig, *, zero_scale: bool = False,
               rngs: nnx.Rngs):
    del rngs
    self.config = config
    self.scale = nnx.Param(jnp.full((features,), 0.0 if zero_scale else 1.0), **_axes("conv_out"))
    self.bias = nnx.Param(jnp.zeros((features,)), **_axes("conv_out"))
    self.mean = nnx.BatchStat(jnp.zeros((features,)), **_axes("conv_out"))
    self.var = nnx.BatchStat(jnp.ones((features,)), **_axes("conv_out"))

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    eps = self.config.batch_norm_epsilon
    if train:
      mean, var = group_moments(x, self.config.batch_norm_group_size)
      groups = mean.shape[0]
      self.sow(nnx.Intermediate, "batch_mean", jnp.mean(mean, axis=0).reshape(-1))
      self.sow(nnx.Intermediate, "batch_var", jnp.mean(var, axis=0).reshape(-1))
      scale = self.scale[...] * jax.lax.rsqrt(var + eps)  # (groups, 1.., C)
      shift = self.bias[...] - mean * scale
      xg = x.reshape(x.shape[0] // groups, groups, *x.shape[1:])
      return (xg * scale.astype(x.dtype) + shift.astype(x.dtype)).reshape(x.shape)
    scale = self.scale[...] * jax.lax.rsqrt(self.var[...] + eps)
    shift = self.bias[...] - self.mean[...] * scale
    return x * scale.astype(x.dtype) + shift.astype(x.dtype)


def train_forward(model: ResNet, images: jax.Array) -> tuple[jax.Array, dict]:
  """``(logits, moments)`` of a training forward pass; ``moments`` is a pure dict shaped like the
  model's running statistics (``nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))``) holding this
  batch's moments, for :func:`update_running_stats`.

  >>> from flax import nnx
  >>> model = ResNet(ResNetConfig.preset("tiny", num_classes=3, in_channels=1), rngs=nnx.Rngs(0))
  >>> logits, moments = train_forward(model, jnp.ones((4, 8, 8, 1)))
  >>> sorted(moments["stem_bn"])
  ['mean', 'var']
  """
  logits, sown = nnx.capture(model, nnx.Intermediate)(images, train=True)
  return logits, _rename_moments(nnx.to_pure_dict(sown))


def _rename_moments(tree: Any) -> Any:
  """{"batch_mean": (m,), "batch_var": (v,)} -> {"mean": m, "var": v}, recursively."""
  if isinstance(tree, dict) and "batch_mean" in tree:
    return {"mean": tree["batch_mean"][0], "var": tree["batch_var"][0]}
  if isinstance(tree, dict):
    return {k: _rename_moments(v) for k, v in tree.items()}
  return tree


def update_running_stats(running: Any, summed_moments: Any, count: int, momentum: float) -> Any:
  """``running ← momentum·running + (1 − momentum)·(summed_moments / count)``, leaf by leaf.

  ``summed_moments`` are a step's batch moments summed over its ``count`` micro-batches (a tree
  like ``running``): the running averages move once per optimizer step, by the mean moments of
  the whole global batch, on any layout.
  """
  return jax.tree.map(lambda r, s: momentum * r + (1.0 - momentum) * (s / count),
                      running, summed_moments)


def _conv(config: ResNetConfig, cin: int, cout: int, kernel: int, stride: int, rngs: nnx.Rngs):
  # He et al.'s fan-out normal init (torchvision, MLPerf); no bias: BatchNorm follows.
  return nnx.Conv(cin, cout, (kernel, kernel), strides=(stride, stride),
                  padding=[(kernel // 2, kernel // 2)] * 2, use_bias=False,
                  kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"),
                  kernel_metadata=_axes(None, None, "conv_in", "conv_out"),
                  dtype=jnp.dtype(config.dtype), rngs=rngs)


class BasicBlock(nnx.Module):
  """Two 3×3 convs (ResNet-18/34); the first strides."""

  def __init__(self, config: ResNetConfig, cin: int, width: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = _conv(config, cin, width, 3, stride, rngs)
    self.bn1 = BatchNorm(width, config, rngs=rngs)
    self.conv2 = _conv(config, width, width, 3, 1, rngs)
    self.bn2 = BatchNorm(width, config, zero_scale=config.zero_init_residual, rngs=rngs)
    self.shortcut = _Projection(config, cin, width, stride, rngs) if (
        stride != 1 or cin != width) else None

  def __call__(self, x, train: bool):
    y = jax.nn.relu(self.bn1(self.conv1(x), train))
    y = self.bn2(self.conv2(y), train)
    residual = x if self.shortcut is None else self.shortcut(x, train)
    return jax.nn.relu(y + residual)


class BottleneckBlock(nnx.Module):
  """1×1 reduce, 3×3 (strided: v1.5), 1×1 expand ×4 (ResNet-50/101)."""

  def __init__(self, config: ResNetConfig, cin: int, width: int, stride: int, *, rngs: nnx.Rngs):
    cout = width * 4
    self.conv1 = _conv(config, cin, width, 1, 1, rngs)
    self.bn1 = BatchNorm(width, config, rngs=rngs)
    self.conv2 = _conv(config, width, width, 3, stride, rngs)
    self.bn2 = BatchNorm(width, config, rngs=rngs)
    self.conv3 = _conv(config, width, cout, 1, 1, rngs)
    self.bn3 = BatchNorm(cout, config, zero_scale=config.zero_init_residual, rngs=rngs)
    self.shortcut = _Projection(config, cin, cout, stride, rngs) if (
        stride != 1 or cin != cout) else None

  def __call__(self, x, train: bool):
    y = jax.nn.relu(self.bn1(self.conv1(x), train))
    y = jax.nn.relu(self.bn2(self.conv2(y), train))
    y = self.bn3(self.conv3(y), train)
    residual = x if self.shortcut is None else self.shortcut(x, train)
    return jax.nn.relu(y + residual)


class _Projection(nnx.Module):
  """The projection shortcut: 1×1 conv with the block's stride, then BatchNorm."""

  def __init__(self, config, cin, cout, stride, rngs):
    self.conv = _conv(config, cin, cout, 1, stride, rngs)
    self.bn = BatchNorm(cout, config, rngs=rngs)

  def __call__(self, x, train: bool):
    return self.bn(self.conv(x), train)


class ResNet(nnx.Module):
  """Stem, stages of residual blocks, global average pool, linear classifier (float32 logits)."""

  def __init__(self, config: ResNetConfig, *, rngs: nnx.Rngs):
    self.config = config
    first = config.widths[0]
    kernel, stride = (7, 2) if config.stem == "imagenet" else (3, 1)
    self.stem_conv = _conv(config, config.in_channels, first, kernel, stride, rngs)
    self.stem_bn = BatchNorm(first, config, rngs=rngs)
    block_type = BasicBlock if config.block == "basic" else BottleneckBlock
    cin, blocks = first, []
    for stage, (size, width) in enumerate(zip(config.stage_sizes, config.widths, strict=True)):
      for i in range(size):
        stride = 2 if stage > 0 and i == 0 else 1
        blocks.append(block_type(config, cin, width, stride, rngs=rngs))
        cin = width * _EXPANSION[config.block]
    self.blocks = nnx.List(blocks)
    self.head = nnx.Linear(cin, config.num_classes,
                           kernel_init=nnx.initializers.normal(0.01),
                           kernel_metadata=_axes("conv_in", "classes"),
                           bias_metadata=_axes("classes"), rngs=rngs)

  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    """Logits (batch, classes) of images (batch, height, width, channels)."""
    x = constrain(images.astype(jnp.dtype(self.config.dtype)), ("batch", None, None, None))
    x = jax.nn.relu(self.stem_bn(self.stem_conv(x), train))
    if self.config.stem == "imagenet":
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for block in self.blocks:
      x = constrain(block(x, train), ("batch", None, None, None))
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return self.head(pooled)


def flops_per_example(config: ResNetConfig, image_size: int) -> float:
  """Training FLOPs per image: 3 × (2 × multiply-adds of the forward convs and classifier).

  >>> round(flops_per_example(ResNetConfig.preset("resnet50"), 224) / 3 / 2 / 1e9, 2)  # GMACs
  4.09
  """
  model = nnx.eval_shape(lambda: ResNet(config, rngs=nnx.Rngs(0)))
  size = image_size // (2 if config.stem == "imagenet" else 1)
  total = _conv_flops(model.stem_conv, size)
  size //= 2 if config.stem == "imagenet" else 1  # the max-pool
  for block in model.blocks:
    stride = _block_stride(block)
    if isinstance(block, BottleneckBlock):
      total += _conv_flops(block.conv1, size)  # 1×1 before the strided 3×3
      total += _conv_flops(block.conv2, size // stride) + _conv_flops(block.conv3, size // stride)
    else:
      total += _conv_flops(block.conv1, size // stride) + _conv_flops(block.conv2, size // stride)
    size //= stride
    if block.shortcut is not None:
      total += _conv_flops(block.shortcut.conv, size)
  total += 2.0 * model.head.in_features * model.head.out_features
  return 3.0 * total


def _block_stride(block) -> int:
  return block.conv2.strides[0] if isinstance(block, BottleneckBlock) else block.conv1.strides[0]


def _conv_flops(conv: nnx.Conv, out_size: int) -> float:
  kh, kw = conv.kernel_size
  return 2.0 * kh * kw * conv.in_features * conv.out_features * out_size * out_size
