"""Sequence packing: rows hold whole examples, positions restart, the loader stays exact on resume.

The model side (packed loss and gradients equal to the unpacked ones) is in
tests/models/test_bert_packed.py.
"""

import os
import shutil

import numpy as np
import pytest

import trainer_runs
from lamb_optax import data
from lamb_optax.data import packing
from lamb_optax.data.pretraining import MaskingConfig

S, P = 32, 5
SPECIAL = data.SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
VOCAB = 50


def make_example(rng, length=None):
  """An unpacked example of ``length`` real tokens, Google's layout, up to P masked tokens."""
  n = int(rng.integers(5, S + 1)) if length is None else length
  ids = np.zeros(S, np.int32)
  ids[:n] = rng.integers(5, VOCAB, n)
  a = int(rng.integers(1, n - 3)) + 1  # [CLS] A [SEP] B [SEP], both segments non-empty
  ids[0], ids[a], ids[n - 1] = SPECIAL.cls, SPECIAL.sep, SPECIAL.sep
  segments = np.zeros(S, np.int32)
  segments[a + 1:n] = 1
  candidates = np.array([i for i in range(1, n - 1) if i != a])
  m = min(P, len(candidates), max(1, round(0.15 * n)))
  positions = np.sort(rng.choice(candidates, m, replace=False))
  example = {"input_ids": ids, "input_mask": (np.arange(S) < n).astype(np.int32),
             "segment_ids": segments,
             "masked_lm_positions": np.zeros(P, np.int32), "masked_lm_ids": np.zeros(P, np.int32),
             "masked_lm_weights": np.zeros(P, np.float32),
             "next_sentence_labels": np.array(rng.integers(0, 2), np.int32)}
  example["masked_lm_positions"][:m] = positions
  example["masked_lm_ids"][:m] = ids[positions]
  example["masked_lm_weights"][:m] = 1
  ids[positions] = SPECIAL.mask
  return example


def make_source(n, seed=0):
  rng = np.random.default_rng(seed)
  return [make_example(rng) for _ in range(n)]


CONFIG = packing.PackingConfig(max_seq_length=S, max_predictions_per_seq=P,
                               max_examples_per_row=3, window_rows=4)


def examples_in(row):
  """The examples a packed row holds, unpacked again (independently of the packer's code)."""
  out = []
  for k in np.flatnonzero(row["next_sentence_weights"]):
    tokens = np.flatnonzero(row["input_mask"] == k + 1)
    start, n = int(tokens[0]), len(tokens)
    assert np.array_equal(tokens, np.arange(start, start + n))  # contiguous
    assert row["next_sentence_positions"][k] == start
    mine = (row["masked_lm_weights"] > 0) & (row["masked_lm_positions"] >= start) & (
        row["masked_lm_positions"] < start + n)
    out.append({"ids": row["input_ids"][start:start + n].tolist(),
                "segments": row["segment_ids"][start:start + n].tolist(),
                "positions": row["position_ids"][start:start + n].tolist(),
                "masked": (row["masked_lm_positions"][mine] - start).tolist(),
                "masked_ids": row["masked_lm_ids"][mine].tolist(),
                "label": int(row["next_sentence_labels"][k])})
  return out


def as_unpacked(example):
  n = int(example["input_mask"].sum())
  real = example["masked_lm_weights"] > 0
  return {"ids": example["input_ids"][:n].tolist(), "segments": example["segment_ids"][:n].tolist(),
          "positions": list(range(n)), "masked": example["masked_lm_positions"][real].tolist(),
          "masked_ids": example["masked_lm_ids"][real].tolist(),
          "label": int(example["next_sentence_labels"])}


def test_rows_hold_whole_examples_with_positions_restarting():
  source = make_source(30)
  rows, taken = packing.pack_window(source, 8, CONFIG)
  assert 0 < taken <= 30
  got = [e for row in rows for e in examples_in(row)]
  assert sorted(map(str, got)) == sorted(str(as_unpacked(e)) for e in source[:taken])
  for row in rows:
    assert set(row) == set(packing.PACKED_FEATURES)
    assert row["input_mask"].max() <= CONFIG.max_examples_per_row
    assert row["masked_lm_weights"].sum() <= CONFIG.max_predictions_per_row
    # Padding is only at the end of a row and has no weight anywhere.
    real = np.flatnonzero(row["input_mask"])
    assert len(real) == 0 or real[-1] == len(real) - 1
    assert np.all(row["input_ids"][len(real):] == 0)


def test_the_window_ends_at_the_first_example_that_fits_nowhere():
  lengths = [30, 30, 5, 30, 2]
  # Two rows: 30 and 30 fill them up to 2 free tokens each; 5 fits nowhere and ends the window,
  # although the 2 after it would fit (taking it would skip by length).
  assert packing.assign_rows(lengths, [1] * 5, 2, CONFIG) == [0, 1]
  # Best fit: an example goes to the fullest row with room (6: row 1, 7 tokens left, not row 0).
  assert packing.assign_rows([20, 25, 6, 10], [1] * 4, 2, CONFIG) == [0, 1, 1, 0]
  # At most max_examples_per_row examples and max_predictions_per_row predictions per row.
  assert packing.assign_rows([5] * 5, [1] * 5, 1, CONFIG) == [0, 0, 0]
  assert packing.assign_rows([5, 5], [5, 5], 1, CONFIG) == [0]


def test_errors():
  with pytest.raises(ValueError, match="max_examples_per_row must be an int >= 1"):
    packing.PackingConfig(max_seq_length=S, max_predictions_per_seq=P, max_examples_per_row=0)
  with pytest.raises(ValueError, match="window_rows must be an int >= 1"):
    packing.PackingConfig(max_seq_length=S, max_predictions_per_seq=P, window_rows=1.5)
  with pytest.raises(ValueError, match="does not fit in a row of max_seq_length=32"):
    packing.assign_rows([33], [1], 1, CONFIG)
  with pytest.raises(ValueError, match="empty dataset"):
    packing.mean_length([])


def loader(source, **kwargs):
  kwargs = {"batch_size": 4, "seed": 3, "shard_index": 0, "shard_count": 1, "packing": CONFIG,
            **kwargs}
  return data.train_batches(source, **kwargs)


def test_loader_packs_deterministically_and_resumes_exactly():
  source = make_source(64)
  first = [b for _, b in zip(range(12), iter(loader(source)), strict=False)]
  again = [b for _, b in zip(range(12), iter(loader(source)), strict=False)]
  for a, b in zip(first, again, strict=True):
    assert all(np.array_equal(a[k], b[k]) for k in packing.PACKED_FEATURES)
  it = iter(loader(source))
  for _ in range(5):
    next(it)
  state = it.get_state()
  resumed = iter(loader(source))
  resumed.set_state(state)
  for expected in first[5:]:
    got = next(resumed)
    assert all(np.array_equal(got[k], expected[k]) for k in packing.PACKED_FEATURES)
  # Each window takes a prefix of its pool of the shuffled stream, and no example twice.
  assert first[0]["input_ids"].shape == (4, S)
  seen = [str(e) for batch in first[:3] for r in range(4)
          for e in examples_in({k: v[r] for k, v in batch.items()})]
  assert len(seen) == len(set(seen))


def test_packed_global_batches_do_not_depend_on_the_host_count():
  source = make_source(64, seed=1)
  one = iter(loader(source, batch_size=8))
  hosts = [iter(loader(source, batch_size=4, shard_index=k, shard_count=2)) for k in range(2)]
  for _ in range(3):
    whole = next(one)
    parts = [next(h) for h in hosts]
    for k in packing.PACKED_FEATURES:
      assert np.array_equal(whole[k], np.concatenate([p[k] for p in parts]))


@pytest.mark.slow
def test_packed_batches_are_the_same_with_worker_processes():
  source = make_source(64, seed=5)
  plain = [b for _, b in zip(range(6), iter(loader(source)), strict=False)]
  it = iter(loader(source, worker_count=2))
  for expected in plain:
    got = next(it)
    assert all(np.array_equal(got[k], expected[k]) for k in packing.PACKED_FEATURES)


def test_loader_packs_after_dynamic_masking():
  source = make_source(64, seed=2)
  masking = MaskingConfig(max_seq_length=S, max_predictions_per_seq=P)
  batch = next(iter(loader(source, dynamic_masking=masking, vocab_size=VOCAB, special=SPECIAL)))
  for r in range(4):
    row = {k: v[r] for k, v in batch.items()}
    real = row["masked_lm_weights"] > 0
    pos = row["masked_lm_positions"][real]
    assert np.all(row["input_mask"][pos] > 0)
    # A predicted token is never [CLS] or [SEP] of any example in the row.
    assert not np.isin(row["masked_lm_ids"][real], [SPECIAL.cls, SPECIAL.sep]).any()


def test_simulate_counts_padding_and_skipped_examples():
  # Half the examples full-length, half short: 1/4 of the tokens are padding unpacked.
  rng = np.random.default_rng(0)
  lengths = np.where(rng.random(4000) < 0.5, S, rng.integers(5, S // 2 + 1, 4000))
  config = packing.PackingConfig(max_seq_length=S, max_predictions_per_seq=P,
                                 max_examples_per_row=4, window_rows=64)
  stats = packing.simulate(lengths, np.minimum(P, np.round(0.15 * lengths)).astype(int), config)
  pool = packing.examples_per_window(lengths.mean(), config)
  used = lengths[:len(lengths) // pool * pool]
  assert stats["padding_before"] == pytest.approx(1 - used.mean() / S, abs=1e-6)
  assert stats["padding_after"] < 0.05 < 0.2 < stats["padding_before"]
  assert 0 <= stats["skipped"] < 0.1
  # Every row is counted: rows per taken example times taken examples = windows times rows.
  taken = (1 - stats["skipped"]) * len(used)
  assert stats["rows_per_example"] * taken == pytest.approx(len(used) // pool * 64, rel=1e-4)


@pytest.mark.slow
def test_a_packed_training_run_resumes_bit_identically(pretraining_data_dir, tmp_path):
  """The trainer with data.pack_sequences: the useful-token columns, and a run cut back to its
  step-4 checkpoint ends with the uninterrupted run's losses (the packed loader's state is
  checkpointed like the unpacked one's)."""
  from lamb_optax.train import loop  # pylint: disable=g-import-not-at-top
  config = trainer_runs.small_config(pretraining_data_dir, **{
      "data.pack_sequences": True, "data.pack_window_rows": 16})
  whole = tmp_path / "whole"
  loop.train_and_evaluate(config, str(whole))
  train = [r for r in trainer_runs.rows(str(whole)) if "loss" in r and "eval_loss" not in r]
  assert [r["step"] for r in train] == list(range(1, 9))
  assert all(0.8 < r["useful_token_fraction"] <= 1 for r in train)
  assert all(r["useful_tokens_per_second"] <= r["tokens_per_second"] for r in train[1:])
  cut = tmp_path / "cut"
  shutil.copytree(whole, cut)
  for step in os.listdir(cut / "checkpoints"):
    if int(step) > 4:
      shutil.rmtree(cut / "checkpoints" / step)
  loop.train_and_evaluate(config, str(cut))
  assert trainer_runs.losses(str(cut)) == trainer_runs.losses(str(whole))
