"""Checkpoint checksums: a flipped byte is caught on restore, and the run falls back."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lamb_optax
import trainer_runs
from lamb_optax.train import checkpoint as checkpoint_lib
from lamb_optax.train import step as step_lib


def make_state(seed):
  rng = np.random.default_rng(seed)
  params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32),
                      "bias": jnp.zeros(32)}}
  return step_lib.create_train_state(params, lamb_optax.lamb(1e-2), seed=seed)


def abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      state)


def _save_steps(directory, steps):
  checkpointer = checkpoint_lib.Checkpointer(directory, max_to_keep=5)
  states = {}
  for step in steps:
    states[step] = make_state(seed=step)
    checkpointer.save(step, states[step])
  checkpointer.close()
  return states




def test_checksums_are_recorded_for_every_saved_step(tmp_path):
  _save_steps(str(tmp_path), [1, 2])
  for step in (1, 2):
    step_dir = checkpoint_lib.epath.Path(tmp_path / "checkpoints" / str(step))
    assert (step_dir / checkpoint_lib.CHECKSUM_FILE).exists()
    assert checkpoint_lib.verify_checksums(step_dir) == []


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
  states = _save_steps(str(tmp_path), [1, 2, 3])
  flipped = trainer_runs.flip_a_byte(str(tmp_path / "checkpoints" / "3"))
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path))
  with caplog.at_level(logging.WARNING):
    step, restored = checkpointer.restore(abstract(states[3]))
  assert step == 2
  jax.tree.map(np.testing.assert_array_equal, restored, states[2])
  warning = "\n".join(r.getMessage() for r in caplog.records)
  assert "step 3" in warning and "corrupt" in warning
  assert os.path.basename(flipped) in warning
  # Set aside for inspection; the resumed run saves step 3 again.
  assert checkpointer.all_steps() == [1, 2]
  assert (tmp_path / "checkpoints" / "3.corrupt").is_dir()
  checkpointer.save(3, restored)
  checkpointer.close()
  assert checkpoint_lib.Checkpointer(str(tmp_path)).all_steps() == [1, 2, 3]


def test_no_intact_checkpoint_is_a_clear_error(tmp_path):
  states = _save_steps(str(tmp_path), [1, 2])
  for step in (1, 2):
    trainer_runs.flip_a_byte(str(tmp_path / "checkpoints" / str(step)))
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path))
  with pytest.raises(checkpoint_lib.CorruptCheckpointError,
                     match=r"No intact checkpoint.*step 2: .*CRC32 mismatch.*step 1"):
    checkpointer.restore(abstract(states[2]))
  checkpointer.close()


# The reader of other runs' checkpoints (init_from, predict, the pretrained loader) checks them
# as resume does, and never writes to them.
def test_reading_another_run_falls_back_from_a_corrupt_step_without_touching_it(tmp_path,
                                                                               caplog):
  states = _save_steps(str(tmp_path), [1, 2])
  flipped = trainer_runs.flip_a_byte(str(tmp_path / "checkpoints" / "2"))
  before = sorted(os.listdir(tmp_path / "checkpoints"))
  with caplog.at_level(logging.WARNING):
    params = checkpoint_lib.restore_params(str(tmp_path), abstract(states[2].params))
  jax.tree.map(np.testing.assert_array_equal, params, states[1].params)
  warning = "\n".join(r.getMessage() for r in caplog.records)
  assert "step 2" in warning and "corrupt" in warning and os.path.basename(flipped) in warning
  assert sorted(os.listdir(tmp_path / "checkpoints")) == before  # read-only: nothing set aside


def test_reading_another_run_with_no_intact_step_names_the_files(tmp_path):
  states = _save_steps(str(tmp_path), [1])
  trainer_runs.flip_a_byte(str(tmp_path / "checkpoints" / "1"))
  with pytest.raises(checkpoint_lib.CorruptCheckpointError, match=r"step 1: .*CRC32 mismatch"):
    checkpoint_lib.restore_params(str(tmp_path), abstract(states[1].params))


def test_an_unreadable_checksum_file_is_corruption_not_a_json_error(tmp_path, caplog):
  states = _save_steps(str(tmp_path), [1, 2])
  (tmp_path / "checkpoints" / "2" / checkpoint_lib.CHECKSUM_FILE).write_text('{"files": {"sta')
  with caplog.at_level(logging.WARNING):
    params = checkpoint_lib.restore_params(str(tmp_path), abstract(states[2].params))
  jax.tree.map(np.testing.assert_array_equal, params, states[1].params)
  assert "checksums.json (unreadable)" in caplog.text


def test_readers_pass_over_a_step_whose_save_is_not_confirmed(tmp_path):
  """A live trainer's newest step before its checksums are recorded (its save may still be
  finishing) is not read; a run whose steps all lack checksums (older versions) still is."""
  states = _save_steps(str(tmp_path), [1, 2])
  (tmp_path / "checkpoints" / "2" / checkpoint_lib.CHECKSUM_FILE).unlink()
  params = checkpoint_lib.restore_params(str(tmp_path), abstract(states[2].params))
  jax.tree.map(np.testing.assert_array_equal, params, states[1].params)
  (tmp_path / "checkpoints" / "1" / checkpoint_lib.CHECKSUM_FILE).unlink()
  params = checkpoint_lib.restore_params(str(tmp_path), abstract(states[2].params))
  jax.tree.map(np.testing.assert_array_equal, params, states[2].params)


def test_a_step_deleted_while_it_is_read_is_read_again(tmp_path, monkeypatch, caplog):
  """keep_checkpoints makes a live trainer delete old steps: one that vanishes mid-read is
  replaced by the newest step then, instead of an error from inside TensorStore."""
  states = _save_steps(str(tmp_path), [1, 2])
  read = checkpoint_lib._read_parts
  calls = []

  def read_while_deleted(source, step, target):
    calls.append(step)
    if len(calls) == 1:  # the trainer saves step 3 and deletes step 2 mid-read
      checkpoint_lib.epath.Path(tmp_path / "checkpoints" / "2").rename(tmp_path / "gone")
      raise ValueError("TensorStore: NOT_FOUND")
    return read(source, step, target)

  monkeypatch.setattr(checkpoint_lib, "_read_parts", read_while_deleted)
  with caplog.at_level(logging.WARNING):
    params = checkpoint_lib.restore_params(str(tmp_path), abstract(states[2].params))
  assert calls == [2, 1] and "changed while it was read" in caplog.text
  jax.tree.map(np.testing.assert_array_equal, params, states[1].params)
