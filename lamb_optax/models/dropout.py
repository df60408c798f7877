"""Dropout whose random bits are cheap and independent of the device layout.

:func:`dropout` draws four 16-bit numbers from each Threefry-2x32 hash (a quarter of the hashing
of ``jax.random.bernoulli``), counting elements by their position, so a sharded array gets the
same mask as an unsharded one. BERT and ViT use it.

>>> import jax, jax.numpy as jnp
>>> x = jnp.ones((4, 1000))
>>> y = dropout(x, 0.1, jax.random.key(0))
>>> float((y == 0).mean()) < 0.2, float(y.max())
(True, 1.1111111640930176)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p

from lamb_optax import sharding

_DRAWS_PER_HASH = 4  # a Threefry-2x32 hash gives 64 random bits: four 16-bit draws


def uniform16(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint16 draws of ``shape``, four per Threefry-2x32 hash (``jax.random.bits``: one per hash).

  The last axis is cut into four blocks of ``g = ceil(n / 4)``; element ``q·g + j`` takes draw
  ``q`` of the hash of the counter of ``(..., j)``: its index along the first axis (high word)
  and its flat index within that row (low word). So every element depends on the key and its
  position only: the same on any device layout, like jax's partitionable Threefry; inside a
  shard of the batch (``jax.shard_map``) the first axis counts from the shard's first global row
  (:func:`lamb_optax.sharding.first_batch_row`). (Blocks,
  not interleaved draws: a minor axis of 4 would be padded to 128 lanes on a TPU.)
  """
  *lead, last = shape
  groups = tuple(lead) + (-(-last // _DRAWS_PER_HASH),)
  high_axes = int(len(groups) > 1)  # the first axis, if there are two or more
  within = groups[high_axes:]
  if math.prod(within) >= 2**32:
    raise ValueError(f"Dropout over {shape}: a row of more than 2**32 hashes is not supported.")
  strides = np.cumprod((1,) + within[:0:-1])[::-1]
  low = sum(jax.lax.broadcasted_iota(jnp.uint32, groups, high_axes + d) * np.uint32(s)
            for d, s in enumerate(strides))
  first_row = sharding.first_batch_row(shape[0])  # nonzero in a shard of a manual batch axis
  if not high_axes:
    if not isinstance(first_row, int):
      raise ValueError(f"Dropout over {shape} inside a shard of the batch: it needs a batch axis "
                       "and a feature axis (a rank-1 array has no row counter).")
    high = jnp.zeros_like(low)
  else:
    high = jax.lax.broadcasted_iota(jnp.uint32, groups, 0) + jnp.asarray(first_row, jnp.uint32)
  k1, k2 = jax.random.key_data(key)
  hi, lo = threefry2x32_p.bind(k1, k2, high, low)
  draws = [(w >> s).astype(jnp.uint16) for w in (hi, lo) for s in (0, 16)]
  return jnp.concatenate(draws, axis=-1)[..., :last]


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout; an element is dropped iff its 16-bit draw is below ``rate * 2**16``.

  So the drop probability is ``round(rate * 2**16) / 2**16`` (0.1 -> 0.1000061; within 2**-17
  of ``rate``), and the hashing costs a quarter of ``jax.random.bernoulli``'s, which hashes every
  element and keeps half of each hash (on CPU, JAX runs Threefry as a rolled loop over
  full-size arrays; on TPU the unrolled hash is large to compile). Keys of other PRNG
  implementations (not Threefry) use ``jax.random.bernoulli``.
  """
  if key is None or rate == 0.0:
    return x
  if jax.random.key_data(key).shape == (2,):
    keep = uniform16(key, x.shape) >= np.uint16(round(rate * 2**16))
  else:
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)
