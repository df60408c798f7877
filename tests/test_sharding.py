"""Logical-axis rules, mesh construction and activation constraints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from lamb_optax import sharding


def test_make_mesh_fills_the_minus_one_axis_and_names_all_axes():
  mesh = sharding.make_mesh({"fsdp": -1, "tensor": 2})
  assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2}
  assert mesh.devices.size == len(jax.devices()) == 8


@pytest.mark.parametrize("sizes, message", [
    ({"data": 3}, "uses 3 devices, but there are 8"),
    ({"data": -1, "fsdp": -1}, "at most one axis may be -1"),
    ({"data": -1, "tensor": 3}, "needs a multiple of 3 devices"),
    ({"model": 2}, "Unknown mesh axes"),
    ({"data": 0}, "positive"),
])
def test_make_mesh_rejects_bad_sizes(sizes, message):
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(sizes)


@pytest.mark.parametrize("logical, expected", [
    (("batch", "length", "embed"), P(("data", "fsdp"), None, None)),   # fsdp taken by batch
    (("layers", "embed", "mlp"), P(None, "fsdp", "tensor")),
    (("vocab", "embed"), P("tensor", "fsdp")),
    (("batch", "length", "heads", "kv"), P(("data", "fsdp"), None, "tensor", None)),
    ((None, "embed"), P(None, "fsdp")),
])
def test_default_rules(logical, expected):
  assert sharding.logical_to_mesh_axes(logical) == expected


def test_rules_skip_axes_the_mesh_lacks_and_fall_back_in_order():
  rules = (("batch", "data"), ("embed", "tensor"), ("embed", "fsdp"), ("mlp", "tensor"))
  assert sharding.logical_to_mesh_axes(("embed", "mlp"), rules) == P("tensor", None)
  assert sharding.logical_to_mesh_axes(("mlp", "embed"), rules) == P("tensor", "fsdp")
  assert sharding.logical_to_mesh_axes(("embed",), rules, ("data", "fsdp")) == P("fsdp")


def test_unknown_logical_axis_is_an_error_with_the_fix():
  with pytest.raises(ValueError, match=r"'ffn' has no sharding rule.*\('ffn', None\)"):
    sharding.logical_to_mesh_axes(("ffn",))


def test_constrain_is_a_noop_without_a_mesh_and_shards_with_one():
  x = jnp.arange(16.0).reshape(8, 2)
  assert sharding.constrain(x, ("batch", "embed")) is x
  mesh = sharding.make_mesh({"data": 4, "tensor": 2})
  with jax.set_mesh(mesh):
    y = jax.jit(lambda a: sharding.constrain(a * 2, ("batch", "mlp")))(x)
  assert y.sharding.spec == P(("data",), "tensor") or y.sharding.spec == P("data", "tensor")
  np.testing.assert_array_equal(y, x * 2)
  with pytest.raises(ValueError, match="rank 2"):
    sharding.constrain(x, ("batch",))


def test_axis_rules_context_overrides_the_defaults():
  with sharding.axis_rules((("batch", None),)):
    assert sharding.logical_to_mesh_axes(("batch",)) == P(None)
  assert sharding.logical_to_mesh_axes(("batch",)) == P(("data", "fsdp"))


def test_shard_state_places_variables_by_their_logical_axes():
  class Block(nnx.Module):
    def __init__(self, rngs):
      self.dense = nnx.Linear(4, 8, kernel_metadata={sharding.LOGICAL_AXES_KEY: ("embed", "mlp")},
                              rngs=rngs)

  state = nnx.state(Block(nnx.Rngs(0)), nnx.Param)
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  placed = sharding.shard_state(state, mesh)
  assert placed["dense"]["kernel"].get_value().sharding.spec == P("fsdp", "tensor")
  # No metadata: replicated.
  assert placed["dense"]["bias"].get_value().sharding.spec == P(None)
  np.testing.assert_array_equal(placed["dense"]["kernel"].get_value(),
                                state["dense"]["kernel"].get_value())


def test_state_shardings_of_an_abstract_state_initialise_sharded_params():
  def make():
    return nnx.Linear(4, 8, kernel_metadata={sharding.LOGICAL_AXES_KEY: ("embed", "mlp")},
                      rngs=nnx.Rngs(0))

  abstract = nnx.state(nnx.eval_shape(make), nnx.Param)
  mesh = sharding.make_mesh({"fsdp": 2, "tensor": 4})
  shardings = nnx.to_pure_dict(sharding.state_shardings(abstract, mesh))
  assert shardings["kernel"].spec == P("fsdp", "tensor")
  params = jax.jit(lambda: nnx.to_pure_dict(nnx.state(make(), nnx.Param)),
                   out_shardings=shardings)()
  assert params["kernel"].sharding.spec == P("fsdp", "tensor")
  assert params["kernel"].addressable_shards[0].data.shape == (2, 2)


def test_inside_a_shard_of_the_data_axis_rows_count_from_the_shards_block():
  """The train step's per-shard accumulation: 'data' manual, 'fsdp' automatic inside."""
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2})

  def per_shard(x):
    x = sharding.constrain(x, ("batch",))  # over 'fsdp' only: 'data' is split by hand here
    return x + sharding.first_batch_row(x.shape[0])

  with jax.set_mesh(mesh):
    f = jax.shard_map(per_shard, in_specs=P("data"), out_specs=P("data"), axis_names={"data"},
                      check_vma=False)
    rows = jax.jit(f)(jnp.zeros(16, jnp.int32))
  np.testing.assert_array_equal(rows, np.repeat([0, 4, 8, 12], 4))
  assert sharding.first_batch_row(16) == 0  # outside: no shard, no offset


def test_first_batch_row_refuses_a_manual_axis_behind_an_automatic_one():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  f = jax.shard_map(lambda x: x + sharding.first_batch_row(x.shape[0]), in_specs=P("fsdp"),
                    out_specs=P("fsdp"), axis_names={"fsdp"}, check_vma=False)
  with jax.set_mesh(mesh), pytest.raises(ValueError, match="make the leading ones manual"):
    jax.jit(f)(jnp.zeros(16, jnp.int32))
