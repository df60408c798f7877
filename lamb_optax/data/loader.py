"""The Grain input pipeline: this host's shard, shuffled, repeated, re-masked, batched.

Built from Grain's ``MapDataset`` API, so every element is a pure function of its index: the
iterator's state is one position, ``get_state()``/``set_state()`` resume exactly, and the same
state works with ``grain.checkpoint.CheckpointSave``/``CheckpointRestore`` under Orbax.

Sharding, training: the *whole* dataset (cut to a multiple of the host count) is shuffled with
the run's seed and repeated; global batch ``j`` is positions ``[jG, (j+1)G)`` of that one stream
(``G = n·B``, ``B`` rows per host), and host ``k`` of ``n`` takes the contiguous block
``[jG + kB, jG + (k+1)B)`` of it. That is the block of rows that
``jax.make_array_from_process_local_data`` gives host ``k`` when the batch is sharded over data
axes whose devices are ordered by process (``lamb_optax.sharding.to_global`` checks this), so the
global batch is the same *ordered* array whatever ``n`` is: row ``r`` holds the same example, and
so gets the same dropout mask, on any layout (the trainer's multi-host test relies on this). Each
host decodes only its own examples; shards are disjoint, equally long (hosts stay in lockstep)
and together cover all but at most ``n·B - 1`` examples per epoch.

Dynamic masking draws a new mask for every element from a generator seeded by
``(seed, position in the global stream)``; the position encodes the epoch, so each epoch gets
new masks, a resumed run the same ones, and the masks do not depend on the host count either.

>>> import numpy as np
>>> source = [{"input_ids": np.full(4, i, np.int32)} for i in range(10)]
>>> ds = train_batches(source, batch_size=2, seed=0, shard_index=0, shard_count=2)
>>> it = iter(ds)
>>> first = next(it); state = it.get_state(); second = next(it)
>>> it.set_state(state); bool((next(it)["input_ids"] == second["input_ids"]).all())
True
>>> [b["input_ids"][:, 0].tolist() for b in eval_batches(
...     source, batch_size=2, shard_index=1, shard_count=2, num_batches=2)]
[[2, 3], [6, 7]]
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np

from lamb_optax.data import packing as packing_lib

Batch = dict[str, np.ndarray]


def shard(source: Any, shard_index: int, shard_count: int) -> grain.MapDataset:
  """This host's examples of ``source`` as a ``MapDataset`` (see the module docstring)."""
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index must be in [0, shard_count={shard_count}), got {shard_index}.")
  ds = source if isinstance(source, grain.MapDataset) else grain.MapDataset.source(source)
  usable = shard_count * (len(ds) // shard_count)
  return ds[shard_index:usable:shard_count]


@dataclasses.dataclass(frozen=True)
class _Remask:
  """Re-masks element ``index`` of the stream; a picklable class for Grain's worker processes."""
  seed: int
  vocab_size: int
  special: Any
  continuation: np.ndarray | None
  masking: Any

  def __call__(self, index: int, example: Batch) -> Batch:
    from lamb_optax.data import pretraining  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng([self.seed, index])
    if "masked_lm_positions" in example:  # stored statically masked: restore the originals
      example = pretraining.unmask_example(example)
    return pretraining.mask_example(
        example, rng, vocab_size=self.vocab_size, special=self.special,
        continuation=self.continuation, masking=self.masking)


def train_batches(source: Any, *, batch_size: int, seed: int, shard_index: int,
                  shard_count: int, dynamic_masking: Any = None,
                  vocab_size: int | None = None, special: Any = None,
                  continuation: np.ndarray | None = None, num_epochs: int | None = None,
                  transform: Callable[[int, Batch], Batch] | None = None,
                  packing: packing_lib.PackingConfig | None = None,
                  worker_count: int = 0, prefetch_threads: int = 2,
                  prefetch_buffer: int = 8) -> grain.IterDataset:
  """This host's stream of training batches (``dict`` of numpy arrays, leading dim batch_size).

  Args:
    source: random-access examples (``len`` and ``[i]`` -> dict), e.g.
      :func:`load_pretraining_dataset`.
    batch_size: rows per batch on this host (the per-process batch size).
    seed: shuffle (reshuffled every epoch) and dynamic-masking seed.
    shard_index: this host (``jax.process_index()``).
    shard_count: hosts (``jax.process_count()``).
    dynamic_masking: a ``MaskingConfig`` to draw fresh masks with, or None for the stored ones.
    vocab_size, special, continuation: what re-masking needs (``continuation`` only for whole
      word masking).
    num_epochs: passes over the shard; None repeats forever.
    transform: ``(position in the global stream, example) -> example`` (a picklable callable),
      e.g. a data augmentation seeded by the position: new draws every epoch, the same ones
      after a resume and on any number of hosts, as dynamic masking.
    packing: a ``PackingConfig`` to pack several examples per row (:mod:`.packing`), after
      masking and ``transform``; ``batch_size`` then counts packed rows. Row ``i`` of the
      global stream is a pure function of ``i`` as before, so resuming and the host-count
      independence hold for packed rows too.
    worker_count: Grain worker processes (0 = threads in this process).
    prefetch_threads, prefetch_buffer: Grain's in-process read options.

  Returns:
    A ``grain.IterDataset``; ``iter()`` gives a checkpointable ``DatasetIterator``. Batches never
    straddle hosts and drop the remainder at the end of a finite run.

  Raises:
    ValueError: this shard holds fewer than ``batch_size`` examples, or masking arguments are
      missing.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  ds, per_host = _shardable(source, shard_index, shard_count)
  if per_host < batch_size:
    raise ValueError(
        f"Shard {shard_index} of {shard_count} holds {per_host} examples (of {len(source)}), "
        f"fewer than batch_size={batch_size}: use a smaller batch or more data.")
  ds = ds[:per_host * shard_count].shuffle(seed=seed).repeat(num_epochs)
  if dynamic_masking is not None:
    if vocab_size is None or special is None:
      raise ValueError("dynamic_masking needs vocab_size and special (the tokenizer's ids).")
    if dynamic_masking.whole_word_mask and continuation is None:
      raise ValueError("Whole-word dynamic masking needs continuation (continuation_mask()).")
    ds = ds.map_with_index(_Remask(seed, vocab_size, special, continuation, dynamic_masking))
  if transform is not None:
    ds = ds.map_with_index(transform)
  if packing is not None:
    ds = packing_lib.pack_dataset(ds, packing, packing_lib.mean_length(source))
  ds = _host_blocks(ds, batch_size, shard_index, shard_count)  # after shuffling: module docstring
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=prefetch_threads,
                                               prefetch_buffer_size=prefetch_buffer))
  if worker_count > 0:
    # Grain's worker processes read absl flags; outside an absl app they are never parsed.
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count),
                              worker_init_fn=functools.partial(_die_with_parent, os.getpid()))
  return it_ds


def _host_blocks(ds: grain.MapDataset, batch_size: int, shard_index: int,
                 shard_count: int) -> grain.MapDataset:
  """Batches of ``batch_size`` consecutive elements; host ``k`` of ``n`` takes batches ``k, k + n,
  ...``: its contiguous block of rows of every global batch of ``n * batch_size`` rows.

  ``batch`` is lazy on a ``MapDataset``, so each host reads only its own elements. The count is
  cut to a multiple of ``n`` so that every host has as many batches (lockstep).
  """
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds[:len(ds) // shard_count * shard_count][shard_index::shard_count]


def _die_with_parent(parent_pid: int, *worker_args: int) -> None:
  """Grain worker init: exits the worker as soon as its parent (the trainer) is gone.

  A SIGKILLed trainer cannot stop its workers, and Grain's do not notice on their own: without
  this each (hundreds of MB) lives on for minutes after the job is gone. A daemon thread polls
  the parent pid (``PR_SET_PDEATHSIG`` would fire when the parent *thread* that started the
  worker ends, and Grain starts workers from threads).
  """
  del worker_args  # (worker index, worker count)
  import os  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top

  # Ctrl-C reaches the whole process group; the trainer handles it (saves, then exits 130) and
  # stops its workers, so a worker's own KeyboardInterrupt would only print a second traceback.
  signal.signal(signal.SIGINT, signal.SIG_IGN)

  def watch():
    while os.getppid() == parent_pid:
      time.sleep(_PARENT_POLL_SECONDS)
    os._exit(1)  # pylint: disable=protected-access  (no cleanup: nobody is left to serve)

  threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


_PARENT_POLL_SECONDS = 0.5


def _shardable(source: Any, shard_index: int, shard_count: int) -> tuple[grain.MapDataset, int]:
  """``source`` as a ``grain.MapDataset``, and how many examples each of ``shard_count`` hosts
  gets (the remainder is dropped, so every host takes as many)."""
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index must be in [0, shard_count={shard_count}), got {shard_index}.")
  ds = source if isinstance(source, grain.MapDataset) else grain.MapDataset.source(source)
  return ds, len(ds) // shard_count


def eval_batches(source: Any, *, batch_size: int, shard_index: int, shard_count: int,
                 num_batches: int) -> list[Batch]:
  """This host's rows of the first ``num_batches`` global batches: fixed order, stored masks.

  Raises:
    ValueError: the shard holds fewer than ``num_batches * batch_size`` examples.
  """
  ds, per_host = _shardable(source, shard_index, shard_count)
  needed = num_batches * batch_size
  if per_host < needed:
    raise ValueError(
        f"Shard {shard_index} of {shard_count} holds {per_host} held-out examples, fewer than "
        f"num_batches * batch_size = {num_batches} * {batch_size} = {needed}: lower "
        "eval_batches or the batch size, or hold out more data.")
  # The same contiguous row blocks as training, so a global eval batch is one ordered array.
  batched = _host_blocks(ds, batch_size, shard_index, shard_count)
  return [batched[i] for i in range(num_batches)]


def stack(examples: Sequence[Batch]) -> Batch:
  """Stacks examples into one batch (the same layout the loader yields)."""
  return {name: np.stack([e[name] for e in examples]) for name in examples[0]}
