"""The Grain loader: host sharding, shuffling, resume (get_state and Orbax), dynamic masking."""

import numpy as np
import pytest

from lamb_optax import data

SEQ, PREDS = 16, 3


def _examples(n):
  """Synthetic statically masked examples; example i is recognisable by input_ids[1] = 100 + i."""
  rng = np.random.default_rng(0)
  out = []
  for i in range(n):
    ids = np.zeros(SEQ, np.int32)
    ids[:12] = rng.integers(10, 60, 12)
    ids[0], ids[5], ids[11], ids[1] = 2, 3, 3, 100 + i  # [CLS] a [SEP] b [SEP]
    masked = data.mask_example(
        {"input_ids": ids, "input_mask": (ids > 0).astype(np.int32),
         "segment_ids": np.r_[np.zeros(6), np.ones(6), np.zeros(4)].astype(np.int32),
         "next_sentence_labels": np.int32(i % 2)},
        rng, vocab_size=VOCAB, special=SPECIAL, continuation=None, masking=MASKING)
    out.append(masked)
  return out


VOCAB = 300
SPECIAL = data.SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
MASKING = data.MaskingConfig(max_seq_length=SEQ, max_predictions_per_seq=PREDS)


def _ids(batch):
  """The identity of each row: the original token at position 1, even when it is masked."""
  return data.unmask_example(batch)["input_ids"][:, 1] - 100


def _take(it, n):
  return [next(it) for _ in range(n)]


def _same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _dynamic(source, **kw):
  return data.train_batches(source, dynamic_masking=MASKING, vocab_size=VOCAB, special=SPECIAL,
                            **kw)


@pytest.mark.parametrize("n", [40, 43])
def test_two_hosts_disjoint_and_cover(n):
  source = _examples(n)
  seen = []
  for host in range(2):
    it = iter(data.train_batches(source, batch_size=4, seed=1, shard_index=host, shard_count=2,
                                 num_epochs=1))
    ids = np.concatenate([_ids(b) for b in it])
    assert len(ids) == len(set(ids.tolist())) == n // 2 // 4 * 4
    seen.append(set(ids.tolist()))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] <= set(range(n - n % 2))  # the first 2 * (n // 2) examples
  if n // 2 % 4 == 0:  # no batch remainder dropped: together the hosts see every example
    assert seen[0] | seen[1] == set(range(n))


@pytest.mark.parametrize("dynamic", [False, True])
def test_global_batches_do_not_depend_on_the_host_count(dynamic):
  """Host k of n reads the k-th block of rows of each global batch of one globally shuffled
  stream, so global batch j is the same ordered array (same examples in the same rows and, with
  dynamic masking, the same masks) for any n: hosts' rows concatenate in process order."""
  source = _examples(48)
  make = _dynamic if dynamic else data.train_batches

  def global_batches(hosts):
    its = [iter(make(source, batch_size=8 // hosts, seed=5, shard_index=k, shard_count=hosts))
           for k in range(hosts)]
    batches = []
    for _ in range(9):  # crosses an epoch boundary (6 global batches per epoch)
      rows = [next(it) for it in its]
      batches.append({key: np.concatenate([r[key] for r in rows]) for key in rows[0]})
    return batches

  one, two, four = global_batches(1), global_batches(2), global_batches(4)
  for a, b, c in zip(one, two, four, strict=True):
    _same([a, a], [b, c])


def test_eval_shards_disjoint_and_cover():
  source = _examples(43)
  shards = [set(np.concatenate([_ids(data.loader.stack([e])) for e in data.shard(source, h, 2)])
                .tolist()) for h in range(2)]
  assert not shards[0] & shards[1]
  assert shards[0] | shards[1] == set(range(42))


def test_shuffle_seeded_and_reshuffled_each_epoch():
  source = _examples(16)
  epochs = lambda seed: [_ids(b).tolist() for b in iter(data.train_batches(
      source, batch_size=16, seed=seed, shard_index=0, shard_count=1, num_epochs=2))]
  a, b = epochs(0), epochs(1)
  assert a == epochs(0) and a != b
  assert sorted(a[0]) == sorted(a[1]) == list(range(16)) and a[0] != a[1]


def test_dynamic_masking_changes_masks_keeps_text():
  source = _examples(8)
  (batch,) = _take(iter(_dynamic(source, batch_size=8, seed=0, shard_index=0, shard_count=1,
                                 num_epochs=1)), 1)
  stored = data.loader.stack([source[i] for i in _ids(batch)])
  assert not np.array_equal(batch["masked_lm_positions"], stored["masked_lm_positions"])
  np.testing.assert_array_equal(data.unmask_example(batch)["input_ids"],
                                data.unmask_example(stored)["input_ids"])


@pytest.mark.parametrize("dynamic", [False, True])
def test_resume_mid_epoch_and_across_epochs(dynamic):
  source = _examples(20)  # 5 batches of 4 per epoch
  make = (lambda: _dynamic(source, batch_size=4, seed=3, shard_index=1, shard_count=2)) \
      if dynamic else (lambda: data.train_batches(source, batch_size=4, seed=3, shard_index=1,
                                                  shard_count=2))
  reference = _take(iter(make()), 12)  # 10 examples per shard: crosses two epoch boundaries
  for stop in (1, 2, 3, 7):
    it = iter(make())
    _take(it, stop)
    state = it.get_state()
    fresh = iter(make())
    fresh.set_state(state)
    _same(_take(fresh, 12 - stop), reference[stop:])
  # Masks of the second epoch differ from the first's (new masks per epoch).
  if dynamic:
    first = {int(i): p for b in reference[:2]
             for i, p in zip(_ids(b), b["masked_lm_positions"], strict=True)}
    later = {int(i): p for b in reference[3:5]
             for i, p in zip(_ids(b), b["masked_lm_positions"], strict=True)}
    common = first.keys() & later.keys()
    assert common and any(not np.array_equal(first[i], later[i]) for i in common)


def test_resume_with_orbax_checkpoint_manager(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  import grain
  source = _examples(20)
  make = lambda: iter(_dynamic(source, batch_size=4, seed=5, shard_index=0, shard_count=1))
  reference = _take(make(), 9)
  it = make()
  _take(it, 6)  # one epoch and a bit
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(6, args=ocp.args.Composite(loader=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
  restored = make()
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.restore(6, args=ocp.args.Composite(
        loader=grain.checkpoint.CheckpointRestore(restored)))
  _same(_take(restored, 3), reference[6:9])


@pytest.mark.slow
def test_worker_processes_resume():
  source = _examples(24)
  make = lambda: _dynamic(source, batch_size=4, seed=0, shard_index=0, shard_count=1,
                          worker_count=2)
  it = iter(make())
  reference = _take(it, 8)
  it.close()
  it = iter(make())
  _take(it, 3)
  state = it.get_state()
  it.close()
  it = iter(make())
  it.set_state(state)
  _same(_take(it, 5), reference[3:])
  it.close()


def test_errors():
  source = _examples(10)
  with pytest.raises(ValueError, match="Shard 1 of 2 holds 5 examples"):
    data.train_batches(source, batch_size=8, seed=0, shard_index=1, shard_count=2)
  with pytest.raises(ValueError, match="shard_index"):
    data.train_batches(source, batch_size=2, seed=0, shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match="vocab_size and special"):
    data.train_batches(source, batch_size=2, seed=0, shard_index=0, shard_count=1,
                       dynamic_masking=MASKING)
  with pytest.raises(ValueError, match="num_batches"):
    data.eval_batches(source, batch_size=4, shard_index=0, shard_count=2, num_batches=2)


def test_eval_batches_fixed_and_sharded():
  source = _examples(24)
  hosts = [data.eval_batches(source, batch_size=3, shard_index=h, shard_count=2, num_batches=2)
           for h in range(2)]
  assert [b["input_ids"].shape for b in hosts[0]] == [(3, SEQ)] * 2
  ids = [np.concatenate([_ids(b) for b in h]).tolist() for h in hosts]
  assert ids == [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11]]  # global batches [0, 6), [6, 12)
  _same(hosts[0], data.eval_batches(source, batch_size=3, shard_index=0, shard_count=2,
                                    num_batches=2))
  np.testing.assert_array_equal(hosts[0][0]["masked_lm_positions"],
                                data.loader.stack(source[0:3])["masked_lm_positions"])
