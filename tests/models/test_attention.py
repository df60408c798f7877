"""Attention implementations against a float64 NumPy reference and against each other."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lamb_optax import sharding
from lamb_optax.models import attention
from lamb_optax.models import bert
from lamb_optax.models import dropout
from lamb_optax.models.bert import BertConfig
from lamb_optax.models.bert import BertForPreTraining

B, S, N, D = 2, 256, 2, 64


def segments():
  """Row 0: three packed examples and padding; row 1: one example, then padding."""
  seg = np.zeros((B, S), np.int32)
  seg[0, :100], seg[0, 100:180], seg[0, 180:230] = 1, 2, 3
  seg[1, :70] = 1
  return seg


def reference(q, k, v, seg, keep=None, rate=0.0):
  """float64 attention with the segment rule written out per pair of tokens."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  s = np.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(q.shape[-1])
  qs, ks = seg[:, None, :, None], seg[:, None, None, :]
  ok = (ks != 0) & ((qs == ks) | (qs == 0))
  s = np.where(ok, s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  if keep is not None:
    p = np.where(keep, p / (1 - rate), 0.0)
  return np.einsum("bnqk,bknd->bqnd", p, v)


def qkv(dtype=jnp.float32, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [jax.random.normal(key, (B, S, N, D), jnp.float32).astype(dtype) for key in keys]


@pytest.mark.parametrize("implementation", attention.IMPLEMENTATIONS)
@pytest.mark.parametrize("as_bool", [True, False])
def test_attention_matches_float64_reference(implementation, as_bool):
  q, k, v = qkv()
  seg = segments()
  mask = jnp.asarray(seg > 0) if as_bool else jnp.asarray(seg)
  expected = reference(q, k, v, (seg > 0).astype(np.int32) if as_bool else seg)
  out = attention.dot_product_attention(q, k, v, mask, implementation=implementation)
  np.testing.assert_allclose(np.asarray(out), expected, atol=2e-5, rtol=1e-4)


def test_bool_mask_is_segment_numbers_zero_and_one():
  # Padding queries attend to every real key, real queries to real keys only (BERT's rule).
  seg = segments()
  got = np.asarray(attention.allowed(jnp.asarray(seg > 0), jnp.asarray(seg > 0)))
  real = seg > 0
  np.testing.assert_array_equal(got, real[:, None, :] & np.ones((B, S, 1), bool))


def test_packed_segments_do_not_see_each_other():
  q, k, v = qkv()
  seg = segments()
  out = attention.dot_product_attention(q, k, v, jnp.asarray(seg), implementation="pallas")
  # Changing example 2's keys and values leaves examples 1 and 3 unchanged.
  k2 = k.at[0, 100:180].set(7.0)
  v2 = v.at[0, 100:180].set(-3.0)
  out2 = attention.dot_product_attention(q, k2, v2, jnp.asarray(seg), implementation="pallas")
  np.testing.assert_array_equal(np.asarray(out[0, :100]), np.asarray(out2[0, :100]))
  np.testing.assert_array_equal(np.asarray(out[0, 180:230]), np.asarray(out2[0, 180:230]))


def test_pallas_dropout_draws_the_bits_of_uniform16():
  q, k, v = qkv()
  seg = segments()
  rate, key = 0.1, jax.random.key(3)
  keep = np.asarray(dropout.uniform16(key, (B, N, S, S))) >= round(rate * 2**16)
  expected = reference(q, k, v, seg, keep, rate)
  for implementation in attention.IMPLEMENTATIONS:
    out = attention.dot_product_attention(q, k, v, jnp.asarray(seg), rate=rate, dropout_rng=key,
                                          implementation=implementation)
    np.testing.assert_allclose(np.asarray(out), expected, atol=3e-5, rtol=1e-4)


@pytest.mark.parametrize("rate", [0.0, 0.1])
@pytest.mark.parametrize("as_bool", [True, False])
def test_pallas_gradients_match_xla(rate, as_bool):
  q, k, v = qkv()
  seg = segments()
  mask = jnp.asarray(seg > 0) if as_bool else jnp.asarray(seg)
  key = jax.random.key(5)
  cotangent = jax.random.normal(jax.random.key(9), q.shape)

  def grads(implementation):
    def f(q, k, v):
      out = attention.dot_product_attention(q, k, v, mask, rate=rate, dropout_rng=key,
                                            implementation=implementation)
      return jnp.sum(out * cotangent)
    return jax.grad(f, argnums=(0, 1, 2))(q, k, v)

  for x, p in zip(grads("xla"), grads("pallas"), strict=True):
    np.testing.assert_allclose(np.asarray(p), np.asarray(x), atol=2e-5, rtol=1e-4)


def test_queries_at_positions_take_their_own_segments():
  # The last layer attends from a few positions only; their segment numbers come with them.
  q, k, v = qkv()
  seg = segments()
  positions = np.array([[0, 5, 120, 200, 240], [1, 2, 3, 60, 100]])
  qsel = jnp.take_along_axis(q, jnp.asarray(positions)[:, :, None, None], axis=1)
  qmask = jnp.asarray(np.take_along_axis(seg, positions, axis=1))
  full = reference(q, k, v, seg)
  expected = np.take_along_axis(full, positions[:, :, None, None], axis=1)
  for implementation in attention.IMPLEMENTATIONS:
    out = attention.dot_product_attention(qsel, k, v, jnp.asarray(seg), query_mask=qmask,
                                          implementation=implementation)
    np.testing.assert_allclose(np.asarray(out), expected, atol=2e-5, rtol=1e-4)


@pytest.mark.slow  # the whole model through the Pallas interpreter: ~30 s on 2 cores
def test_model_with_pallas_attention_matches_xla_loss_and_gradients():
  config = BertConfig.tiny(vocab_size=211, max_position_embeddings=64)
  batch = bert.random_batch(config, batch_size=2, max_seq_length=32, seed=1)
  results = []
  for implementation in attention.IMPLEMENTATIONS:
    model = BertForPreTraining(config.replace(attention=implementation), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(params, graphdef=graphdef):
      model = nnx.merge(graphdef, params)
      return model.pretraining_loss(batch, dropout_rng=jax.random.key(3))[0]

    results.append(jax.value_and_grad(loss)(params))
  (loss_x, grads_x), (loss_p, grads_p) = results
  np.testing.assert_allclose(float(loss_p), float(loss_x), rtol=1e-6)
  for gx, gp in zip(jax.tree.leaves(grads_x), jax.tree.leaves(grads_p), strict=True):
    np.testing.assert_allclose(np.asarray(gp), np.asarray(gx), atol=1e-6, rtol=1e-4)


def test_config_refuses_unknown_attention():
  with pytest.raises(ValueError, match="attention must be one of"):
    BertConfig.tiny(attention="flash")


@pytest.mark.parametrize("manual_data", [False, True])
def test_pallas_on_a_mesh_draws_the_same_dropout_as_unsharded(manual_data):
  # The kernel runs per shard of batch (data, fsdp) and heads (tensor), inside the train step's
  # shard_map over data or not; rows and heads count from the shard's first global one, so the
  # masks and values are those of one device.
  b, s = 8, 128
  keys = jax.random.split(jax.random.key(1), 3)
  q, k, v = [jax.random.normal(key, (b, s, N, D), jnp.float32) for key in keys]
  seg = np.zeros((b, s), np.int32)
  seg[:, :90], seg[::2, 90:120] = 1, 2
  mask, key = jnp.asarray(seg), jax.random.key(4)

  def run(implementation, q, k, v, mask):
    return attention.dot_product_attention(q, k, v, mask, rate=0.1, dropout_rng=key,
                                           implementation=implementation)

  expected = jax.jit(functools.partial(run, "xla"))(q, k, v, mask)
  sizes = {"data": 2, "fsdp": 2, "tensor": 2} if manual_data else {"fsdp": 4, "tensor": 2}
  mesh = sharding.make_mesh(sizes)
  P = jax.sharding.PartitionSpec
  batch = ("data", "fsdp") if manual_data else "fsdp"
  pallas = functools.partial(run, "pallas")
  if manual_data:
    pallas = jax.shard_map(pallas, in_specs=P("data"), out_specs=P("data"), axis_names={"data"},
                           check_vma=False)
  with jax.set_mesh(mesh):
    args = [jax.device_put(x, jax.sharding.NamedSharding(mesh, P(batch, None, "tensor")))
            for x in (q, k, v)]
    args.append(jax.device_put(mask, jax.sharding.NamedSharding(mesh, P(batch))))
    got = jax.jit(pallas)(*args)
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=2e-5, rtol=1e-4)
