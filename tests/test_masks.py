"""Masks and stacked axes: names as Flax (Linen and NNX) and scan give them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lamb_optax
from lamb_optax import masks


def test_default_decay_mask_on_flax_names_and_stacked_layers():
  params = {
      "embeddings": {"word": {"embedding": jnp.ones((5, 4))}, "LayerNorm": {"scale": jnp.ones(4),
                                                                           "bias": jnp.ones(4)}},
      # Stacked by scan: a 2-D bias and 2-D LayerNorm scale, which a rank rule would decay.
      "encoder": {"layers": {"attention": {"query": {"kernel": jnp.ones((2, 4, 4)),
                                                     "bias": jnp.ones((2, 4))}},
                             "attention_norm": {"scale": jnp.ones((2, 4)),
                                                "bias": jnp.ones((2, 4))},
                             "ln_1": {"weight": jnp.ones((2, 4))}}},
      "mlm": {"bias": jnp.ones(5), "transform": {"kernel": jnp.ones((4, 4))}},
  }
  decayed = {k for k, v in zip(
      [masks.path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]],
      jax.tree.leaves(masks.default_weight_decay_mask(params)), strict=True) if v}
  assert decayed == {"embeddings/word/embedding", "encoder/layers/attention/query/kernel",
                     "mlm/transform/kernel"}


def test_nnx_variable_paths_drop_the_value_field():
  # nnx.State flattens a Param to .../kernel/value.
  path = (jax.tree_util.DictKey("dense"), jax.tree_util.DictKey("kernel"),
          jax.tree_util.GetAttrKey("value"))
  assert masks.path_to_str(path) == "dense/kernel"


def test_path_mask_include_and_exclude():
  params = {"encoder": {"dense": {"kernel": 0, "bias": 0}}, "head": {"kernel": 0, "bias": 0}}
  mask = lamb_optax.path_mask(include=(r"^encoder/",), exclude=(r"bias$",))(params)
  assert mask == {"encoder": {"dense": {"kernel": True, "bias": False}},
                  "head": {"kernel": False, "bias": False}}


def test_mask_prefix_trees_and_booleans_expand_to_every_leaf():
  params = {"a": {"x": 1, "y": 2}, "b": 3}
  assert masks.resolve_mask({"a": False, "b": True}, params) == {"a": {"x": False, "y": False},
                                                                 "b": True}
  assert masks.resolve_mask(None, params) == {"a": {"x": True, "y": True}, "b": True}


def test_traced_masks_are_rejected_with_a_clear_error():
  params = {"w": jnp.ones(2)}
  with pytest.raises(TypeError, match="static booleans"):
    jax.jit(lambda p: masks.resolve_mask({"w": p["w"][0] > 0}, p))(params)


def test_stacked_axes_callable():
  params = {"layers": {"kernel": np.ones((3, 2, 2))}, "head": np.ones(2)}
  axes = masks.resolve_stacked_axes(lambda p: {"layers": 1, "head": 0}, params)
  assert axes == {"layers": {"kernel": 1}, "head": 0}
