"""Scaled dot-product attention for BERT: plain XLA, or one fused Pallas TPU kernel per head.

Both take queries, keys and values shaped (batch, length, heads, head_dim) and an
``attention_mask`` of the keys' length that is either boolean (True = real token) or int
*segment numbers* (0 = padding, 1..k = the packed example a token belongs to). Query i may
attend key j iff ``mask[j] != 0`` and (``mask[i] == mask[j]`` or ``mask[i] == 0``): for a 0/1
mask that is BERT's (padding queries attend to every real key), for packed rows it is
block-diagonal. Both apply attention dropout with :func:`lamb_optax.models.dropout.uniform16`'s
draws over the (batch, heads, queries, keys) probabilities, so they drop the same entries.

``"xla"`` materialises the (batch, heads, queries, keys) scores, probabilities and dropout
draws in HBM and saves the probabilities for the backward pass. ``"pallas"`` keeps a whole head
(every query against every key: BERT's sequences are at most 512 tokens) in the TPU core's
on-chip memory: it computes scores, softmax, the dropout draws (hashed in the kernel from the
element's position, the same bits as ``uniform16``) and the weighted sum there, and its backward
pass recomputes them from Q, K and V, so nothing of size length² reaches HBM (Dao et al. 2022,
"FlashAttention", arXiv:2205.14135, with the row in one block instead of an online softmax). On
CPU it runs in Pallas' interpret mode (slow; for tests).

>>> import jax, jax.numpy as jnp
>>> q = k = v = jnp.ones((1, 8, 2, 4))
>>> mask = jnp.array([[1, 1, 1, 0, 2, 2, 0, 0]])
>>> dot_product_attention(q, k, v, mask).shape
(1, 8, 2, 4)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p

from lamb_optax import sharding
from lamb_optax.models import dropout as dropout_lib

IMPLEMENTATIONS = ("xla", "pallas")


def allowed(query_mask: jax.Array, key_mask: jax.Array) -> jax.Array:
  """(batch, queries, keys): may query i attend key j? Masks are bool or segment numbers."""
  q, k = query_mask[:, :, None], key_mask[:, None, :]
  if q.dtype == jnp.bool_:
    q, k = q.astype(jnp.int32), k.astype(jnp.int32)
  return (k != 0) & ((q == k) | (q == 0))


def dot_product_attention(q, k, v, mask, *, query_mask=None, rate=0.0, dropout_rng=None,
                          implementation="xla"):
  """softmax(q·kᵀ/√d + mask) · v with dropout on the probabilities; (batch, length, heads, d).

  ``mask`` is the keys' mask (batch, keys); ``query_mask`` the queries' (batch, queries),
  default ``mask`` (queries = keys). Scores and softmax in float32; the output in ``v.dtype``.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, "
                     f"got {implementation!r}.")
  if query_mask is None:
    query_mask = mask
  if dropout_rng is None or rate == 0.0:
    rate, dropout_rng = 0.0, None
  if implementation == "pallas":
    return _pallas_attention(q, k, v, mask, query_mask, rate, dropout_rng)
  return _xla_attention(q, k, v, mask, query_mask, rate, dropout_rng)


def _xla_attention(q, k, v, mask, query_mask, rate, dropout_rng):
  logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)
  logits = logits * (q.shape[-1] ** -0.5)
  if mask.dtype == jnp.bool_:  # a padding query attends to every real key: one row for all
    where = mask[:, None, None, :]
  else:
    where = allowed(query_mask, mask)[:, None]
  logits = jnp.where(where, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = dropout_lib.dropout(probs, rate, dropout_rng).astype(v.dtype)
  return jnp.einsum("bnqk,bknd->bqnd", probs, v)


# ------------------------------------------------------------------------------------------------
# The Pallas kernel: grid (batch, heads), one whole head per step.
# ------------------------------------------------------------------------------------------------
def _keep(seed_ref, head, shape, rate):
  """Dropout's keep mask of one head (queries, keys): the draws ``uniform16`` gives the
  (batch, heads, queries, keys) array at this (batch row, head)."""
  queries, keys = shape
  g = -(-keys // 4)
  head = head.astype(jnp.uint32) + seed_ref[3]
  low = (jax.lax.broadcasted_iota(jnp.uint32, (queries, g), 0) * np.uint32(g)
         + jax.lax.broadcasted_iota(jnp.uint32, (queries, g), 1)
         + head * np.uint32(queries * g))
  row = (seed_ref[2] + jax.lax.convert_element_type(_program_id(0), jnp.uint32))
  high = jnp.zeros((queries, g), jnp.uint32) + row
  k1 = jnp.zeros((queries, g), jnp.uint32) + seed_ref[0]
  k2 = jnp.zeros((queries, g), jnp.uint32) + seed_ref[1]
  hi, lo = threefry2x32_p.bind(k1, k2, high, low)
  threshold = np.uint32(round(rate * 2**16))
  mask16 = np.uint32(0xFFFF)
  quarters = [(w >> s) & mask16 for w in (hi, lo) for s in (0, 16)]
  keep = jnp.concatenate([(d >= threshold).astype(jnp.float32) for d in quarters], axis=-1)
  return keep[:, :keys] > 0


def _program_id(axis):
  # Pallas is imported when a kernel is built, not with the model.
  from jax.experimental import pallas as pl  # pylint: disable=g-import-not-at-top
  return pl.program_id(axis)


def _scores(q, k, qseg, kseg, scale):
  """Masked float32 scores and the mask of one head."""
  s = jax.lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  s = s * scale
  ok = (kseg != 0) & ((qseg == kseg) | (qseg == 0))
  return jnp.where(ok, s, jnp.finfo(jnp.float32).min), ok


def _softmax(s):
  e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
  return e / jnp.sum(e, axis=-1, keepdims=True)


def _forward_kernel(seed_ref, q_ref, k_ref, v_ref, qseg_ref, kseg_ref, o_ref, *, rate, scale):
  q, k, v = q_ref[0, 0], k_ref[0, 0], v_ref[0, 0]
  s, _ = _scores(q, k, qseg_ref[0], kseg_ref[0], scale)
  p = _softmax(s)
  if rate:
    p = jnp.where(_keep(seed_ref, _program_id(1), p.shape, rate), p / (1.0 - rate), 0.0)
  o_ref[0, 0] = jax.lax.dot_general(
      p.astype(v.dtype), v, (((1,), (0,)), ((), ())),
      preferred_element_type=jnp.float32).astype(o_ref.dtype)


def _backward_kernel(seed_ref, q_ref, k_ref, v_ref, qseg_ref, kseg_ref, do_ref,
                     dq_ref, dk_ref, dv_ref, *, rate, scale):
  q, k, v, do = q_ref[0, 0], k_ref[0, 0], v_ref[0, 0], do_ref[0, 0]
  s, ok = _scores(q, k, qseg_ref[0], kseg_ref[0], scale)
  p = _softmax(s)
  dp = jax.lax.dot_general(do, v, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  if rate:
    keep = _keep(seed_ref, _program_id(1), p.shape, rate)
    dropped = jnp.where(keep, p / (1.0 - rate), 0.0)
    dp = jnp.where(keep, dp / (1.0 - rate), 0.0)
  else:
    dropped = p
  # Softmax backward; sum_j p_ij dp_ij equals rowsum(do * o) with or without dropout.
  ds = p * (dp - jnp.sum(p * dp, axis=-1, keepdims=True))
  ds = jnp.where(ok, ds, 0.0) * scale
  contract_rows = (((0,), (0,)), ((), ()))
  dv_ref[0, 0] = jax.lax.dot_general(dropped.astype(do.dtype), do, contract_rows,
                                     preferred_element_type=jnp.float32).astype(dv_ref.dtype)
  ds = ds.astype(q.dtype)
  dq_ref[0, 0] = jax.lax.dot_general(ds, k, (((1,), (0,)), ((), ())),
                                     preferred_element_type=jnp.float32).astype(dq_ref.dtype)
  dk_ref[0, 0] = jax.lax.dot_general(ds, q, contract_rows,
                                     preferred_element_type=jnp.float32).astype(dk_ref.dtype)


def _call(kernel, seed, q, k, v, qseg, kseg, *rest, outs, rate, flops):
  from jax.experimental import pallas as pl  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas import tpu as pltpu  # pylint: disable=g-import-not-at-top
  b, n, sq, d = q.shape
  sk = k.shape[2]
  qspec = pl.BlockSpec((1, 1, sq, d), lambda i, h: (i, h, 0, 0))
  kspec = pl.BlockSpec((1, 1, sk, d), lambda i, h: (i, h, 0, 0))
  in_specs = [pl.BlockSpec(memory_space=pltpu.SMEM), qspec, kspec, kspec,
              pl.BlockSpec((1, sq, 1), lambda i, h: (i, 0, 0)),
              pl.BlockSpec((1, 1, sk), lambda i, h: (i, 0, 0))]
  in_specs += [qspec] * len(rest)
  out_specs = [qspec if o.shape[2] == sq else kspec for o in outs]
  nbytes = sum(x.size * x.dtype.itemsize for x in (q, k, v, *rest, *outs))
  call = functools.partial(
      pl.pallas_call, functools.partial(kernel, rate=rate, scale=d ** -0.5),
      grid=(b, n), in_specs=in_specs, out_specs=out_specs, out_shape=outs,
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")),
      cost_estimate=pl.CostEstimate(flops=flops * b * n * sq * sk * d,
                                    transcendentals=b * n * sq * sk, bytes_accessed=nbytes))
  args = (seed, q, k, v, qseg, kseg, *rest)
  # Mosaic where the program is lowered for a TPU (also a deviceless compile on a CPU
  # machine), Pallas' interpreter elsewhere.
  return jax.lax.platform_dependent(
      *args, tpu=lambda *a: call()(*a), default=lambda *a: call(interpret=True)(*a))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _heads_attention(rate, seed, q, k, v, qseg, kseg):
  outs = [jax.ShapeDtypeStruct(q.shape, v.dtype)]
  return _call(_forward_kernel, seed, q, k, v, qseg, kseg, outs=outs, rate=rate, flops=4)[0]


def _heads_attention_fwd(rate, seed, q, k, v, qseg, kseg):
  return _heads_attention(rate, seed, q, k, v, qseg, kseg), (seed, q, k, v, qseg, kseg)


def _heads_attention_bwd(rate, residuals, do):
  seed, q, k, v, qseg, kseg = residuals
  outs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (q, k, v)]
  dq, dk, dv = _call(_backward_kernel, seed, q, k, v, qseg, kseg, do.astype(v.dtype),
                     outs=outs, rate=rate, flops=10)
  zeros = [np.zeros(x.shape, jax.dtypes.float0) for x in (seed, qseg, kseg)]
  return zeros[0], dq, dk, dv, zeros[1], zeros[2]


_heads_attention.defvjp(_heads_attention_fwd, _heads_attention_bwd)


def _first_head(heads_here):
  """The global index of this shard's first head (heads split over a manual mesh axis)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty or not mesh.manual_axes:
    return jnp.zeros((), jnp.uint32)
  axes = sharding.logical_to_mesh_axes(("heads",), mesh_axis_names=mesh.axis_names)[0]
  axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
  block = 0
  for axis in axes:
    if axis in mesh.manual_axes:
      block = block * mesh.shape[axis] + jax.lax.axis_index(axis)
  return jnp.asarray(block * heads_here, jnp.uint32)


def _segments(mask):
  return mask.astype(jnp.int32)


def _pallas_attention(q, k, v, mask, query_mask, rate, dropout_rng):
  key = (jnp.zeros((2,), jnp.uint32) if dropout_rng is None
         else jax.random.key_data(dropout_rng).astype(jnp.uint32))
  heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # (batch, heads, length, d)
  args = (key, heads_first(q), heads_first(k), heads_first(v),
          _segments(query_mask)[:, :, None], _segments(mask)[:, None, :])

  def local(key, q, k, v, qseg, kseg):
    # Rows count from this shard's first global row: the same draws on any layout.
    first_row = jnp.asarray(sharding.first_batch_row(q.shape[0]), jnp.uint32)
    seed = jnp.concatenate([key, first_row[None], _first_head(q.shape[1])[None]])
    return _heads_attention(float(rate), seed, q, k, v, qseg, kseg)

  mesh = jax.sharding.get_abstract_mesh()
  auto = () if mesh is None or mesh.empty else tuple(
      a for a in mesh.axis_names if a not in mesh.manual_axes)
  if auto:
    # A Mosaic kernel is not partitioned by XLA: run it per shard of the batch and heads.
    spec = lambda *names: jax.sharding.PartitionSpec(*sharding.logical_to_mesh_axes(
        names, mesh_axis_names=auto))
    heads = spec("batch", "heads", None, None)
    local = jax.shard_map(
        local, mesh=mesh, axis_names=set(auto), check_vma=False,
        in_specs=(spec(None), heads, heads, heads, spec("batch", None, None),
                  spec("batch", None, None)),
        out_specs=heads)
  return jnp.swapaxes(local(*args), 1, 2)
