"""ResNet and ViT: published sizes, blocks against NumPy transcriptions, masks, stacking."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lamb_optax import masks
from lamb_optax.models import resnet
from lamb_optax.models import vit
from reference import image_np


def param_count(make):
  abstract = nnx.eval_shape(make)  # shapes only: ResNet-50/ViT-B are never allocated
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


@pytest.mark.parametrize("preset, published", [("resnet50", 25_557_032), ("resnet18", 11_689_512)])
def test_resnet_parameter_counts_match_published(preset, published):
  # torchvision's resnet50 (v1.5) / resnet18, 1000 classes: 25.6M / 11.7M parameters.
  config = resnet.ResNetConfig.preset(preset)
  assert param_count(lambda: resnet.ResNet(config, rngs=nnx.Rngs(0))) == published


@pytest.mark.parametrize("preset, published", [("base", 86_567_656), ("small", 22_050_664)])
def test_vit_parameter_counts_match_published(preset, published):
  # ViT-B/16 (Dosovitskiy et al.; timm vit_base_patch16_224): 86.6M; ViT-S/16 (DeiT-S): 22.1M.
  config = vit.ViTConfig.preset(preset)
  assert param_count(lambda: vit.ViT(config, rngs=nnx.Rngs(0))) == published


def _numpy_params(module):
  return jax.tree.map(lambda x: np.asarray(x, np.float64),
                      nnx.to_pure_dict(nnx.state(module, nnx.Param)))


def test_bottleneck_block_matches_numpy_transcription():
  config = resnet.ResNetConfig(batch_norm_group_size=2, zero_init_residual=False)
  block = resnet.BottleneckBlock(config, cin=8, width=4, stride=2, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  for _, bn in nnx.iter_graph(block):  # non-trivial affine parameters
    if isinstance(bn, resnet.BatchNorm):
      bn.scale[...] = jnp.asarray(rng.normal(1, 0.3, bn.scale.shape), jnp.float32)
      bn.bias[...] = jnp.asarray(rng.normal(0, 0.3, bn.bias.shape), jnp.float32)
  x = rng.normal(size=(4, 6, 6, 8)).astype(np.float32)
  got, _ = nnx.capture(block, nnx.Intermediate)(jnp.asarray(x), train=True)
  expected = image_np.bottleneck_block(x.astype(np.float64), _numpy_params(block), stride=2,
                                       group_size=2)
  assert got.shape == (4, 3, 3, 16)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_batch_norm_eval_uses_running_statistics_and_training_sows_moments():
  config = resnet.ResNetConfig(batch_norm_group_size=0)
  bn = resnet.BatchNorm(3, config, rngs=nnx.Rngs(0))
  bn.mean[...] = jnp.array([1.0, 2.0, 3.0])
  bn.var[...] = jnp.array([4.0, 1.0, 0.25])
  x = jnp.ones((2, 1, 1, 3)) * jnp.array([3.0, 2.0, 3.5])
  np.testing.assert_allclose(bn(x, train=False)[0, 0, 0], [1.0, 0.0, 1.0], atol=1e-4)
  _, sown = nnx.capture(bn, nnx.Intermediate)(x * jnp.array([[[[1.0]]], [[[3.0]]]]), train=True)
  np.testing.assert_allclose(sown["batch_mean"][0], [6.0, 4.0, 7.0])
  np.testing.assert_allclose(bn.mean[...], [1.0, 2.0, 3.0])  # running stats untouched


def test_group_moments_refuse_a_group_size_that_does_not_divide_the_batch():
  with pytest.raises(ValueError, match="batch_norm_group_size"):
    resnet.group_moments(jnp.zeros((6, 2, 2, 1)), 4)


def test_vit_block_matches_numpy_transcription():
  config = vit.ViTConfig(image_size=8, patch_size=2, hidden_size=16, num_heads=4, mlp_size=32,
                         num_layers=1)
  block = vit.EncoderBlock(config, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(1)
  for _, module in nnx.iter_graph(block):  # biases and LN non-trivial
    if isinstance(module, (nnx.Linear, nnx.LinearGeneral)):
      module.bias[...] = jnp.asarray(rng.normal(0, 0.1, module.bias.shape), jnp.float32)
    if isinstance(module, nnx.LayerNorm):
      module.scale[...] = jnp.asarray(rng.normal(1, 0.2, module.scale.shape), jnp.float32)
  x = rng.normal(size=(2, 5, 16)).astype(np.float32)
  expected = image_np.vit_block(x.astype(np.float64), _numpy_params(block), num_heads=4)
  np.testing.assert_allclose(block(jnp.asarray(x)), expected, rtol=1e-4, atol=1e-4)


def test_vit_patchify_is_the_papers_conv():
  config = vit.ViTConfig(image_size=8, patch_size=4, in_channels=3, hidden_size=8, num_heads=2,
                         mlp_size=8, num_layers=1)
  model = vit.ViT(config, rngs=nnx.Rngs(0))
  images = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  kernel = model.patch_embedding.kernel[...].reshape(4, 4, 3, 8)
  conv = jax.lax.conv_general_dilated(images, kernel, (4, 4), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ours = model.patch_embedding(vit.patchify(images, 4)) - model.patch_embedding.bias[...]
  np.testing.assert_allclose(ours, conv.reshape(2, 4, 8), rtol=1e-5, atol=1e-5)


def test_image_size_not_divisible_by_patch_size_is_refused():
  with pytest.raises(ValueError, match="not divisible by patch_size 16"):
    vit.ViTConfig(image_size=100, patch_size=16)


def test_default_decay_mask_on_resnet_and_vit_parameter_names():
  r = resnet.ResNet(resnet.ResNetConfig.preset("tiny", num_classes=10, in_channels=1),
                    rngs=nnx.Rngs(0))
  rmask = masks.default_weight_decay_mask(nnx.to_pure_dict(nnx.state(r, nnx.Param)))
  assert rmask["stem_conv"]["kernel"] and rmask["blocks"][0]["conv1"]["kernel"]
  assert not rmask["stem_bn"]["scale"] and not rmask["blocks"][0]["bn2"]["bias"]
  assert rmask["head"]["kernel"] and not rmask["head"]["bias"]
  v = vit.ViT(vit.ViTConfig.preset("tiny", image_size=8, patch_size=2), rngs=nnx.Rngs(0))
  vmask = masks.default_weight_decay_mask(nnx.to_pure_dict(nnx.state(v, nnx.Param)))
  assert not vmask["pos_embedding"] and not vmask["cls_token"]
  layers = vmask["encoder"]["layers"]
  assert layers["query"]["kernel"] and layers["mlp_in"]["kernel"]
  assert not layers["norm1"]["scale"] and not layers["mlp_in"]["bias"]
  assert vmask["patch_embedding"]["kernel"] and not vmask["final_norm"]["bias"]


def test_vit_stacked_axes_mark_the_scanned_blocks_under_any_prefix():
  v = vit.ViT(vit.ViTConfig.preset("tiny", image_size=8, patch_size=2), rngs=nnx.Rngs(0))
  params = {"params": nnx.to_pure_dict(nnx.state(v, nnx.Param))}
  axes = vit.stacked_axes(params)["params"]
  assert axes["encoder"]["layers"]["key"]["kernel"] == 1
  assert axes["pos_embedding"] == 0 and axes["head"]["kernel"] == 0
  assert v.encoder.layers.query.kernel.shape == (4, 64, 4, 16)


def test_train_forward_returns_moments_shaped_like_the_running_statistics():
  model = resnet.ResNet(resnet.ResNetConfig.preset("tiny", num_classes=3, in_channels=1),
                        rngs=nnx.Rngs(0))
  _, moments = resnet.train_forward(model, jnp.ones((4, 8, 8, 1)))
  running = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
  assert jax.tree.structure(moments) == jax.tree.structure(running)
  new = resnet.update_running_stats(running, moments, count=1, momentum=0.9)
  assert jax.tree.structure(new) == jax.tree.structure(running)
