"""BERT under jit with parameters and batch sharded by the logical-axis rules (8 fake devices)."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from lamb_optax import sharding
from lamb_optax.models import bert

CONFIG = bert.BertConfig.tiny(vocab_size=256, max_position_embeddings=64)


def loss_and_grads(graphdef, params, batch, key):
  def loss_fn(p):
    return nnx.merge(graphdef, p).pretraining_loss(batch, dropout_rng=key)

  return jax.value_and_grad(loss_fn, has_aux=True)(params)


@pytest.fixture(scope="module")
def unsharded():
  model = bert.BertForPreTraining(CONFIG, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  batch = bert.random_batch(CONFIG, batch_size=8, max_seq_length=32, seed=2)
  key = jax.random.key(7)
  (loss, metrics), grads = jax.jit(loss_and_grads, static_argnums=0)(graphdef, params, batch, key)
  return graphdef, params, batch, key, loss, metrics, grads


# fsdp x tensor in the default run: it shards every parameter axis the rules name. The
# trainer's in-process run covers data parallelism.
@pytest.mark.parametrize("mesh_sizes", [
    pytest.param({"data": 4, "tensor": 2}, marks=pytest.mark.slow), {"fsdp": 4, "tensor": 2}])
def test_sharded_step_equals_unsharded(unsharded, mesh_sizes):
  graphdef, params, batch, key, loss, metrics, grads = unsharded
  mesh = sharding.make_mesh(mesh_sizes)
  sharded_params = sharding.shard_state(params, mesh)
  sharded_batch = {k: jax.device_put(v, sharding.batch_sharding(mesh, v.ndim))
                   for k, v in batch.items()}
  kernel = sharded_params["bert"]["encoder"]["layers"]["intermediate"]["kernel"].get_value()
  assert kernel.sharding.spec == P(None, "fsdp", "tensor")
  assert kernel.addressable_shards[0].data.shape == (
      CONFIG.num_layers, CONFIG.hidden_size // mesh_sizes.get("fsdp", 1),
      CONFIG.intermediate_size // 2)
  query = sharded_params["bert"]["encoder"]["layers"]["attention"]["query"]["kernel"].get_value()
  assert query.addressable_shards[0].data.shape[2] == CONFIG.num_heads // 2

  with jax.set_mesh(mesh):
    step = jax.jit(loss_and_grads, static_argnums=0)
    (sharded_loss, sharded_metrics), sharded_grads = step(
        graphdef, sharded_params, sharded_batch, key)
  np.testing.assert_allclose(sharded_loss, loss, rtol=1e-5)
  for name in metrics:
    np.testing.assert_allclose(sharded_metrics[name], metrics[name], rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               sharded_grads, grads)
