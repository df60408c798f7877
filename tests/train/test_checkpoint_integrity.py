"""Checkpoint checksums: a flipped byte is caught on restore, and the run falls back."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lamb_optax
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


def _flip_a_byte(step_dir):
  """Flips one bit in the middle of the step's largest array-data file; returns its path."""
  files = [os.path.join(d, n) for d, _, names in os.walk(os.path.join(step_dir, "state"))
           for n in names]
  path = max(files, key=os.path.getsize)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0x10]))
  return path


def test_checksums_are_recorded_for_every_saved_step(tmp_path):
  _save_steps(str(tmp_path), [1, 2])
  for step in (1, 2):
    step_dir = checkpoint_lib.epath.Path(tmp_path / "checkpoints" / str(step))
    assert (step_dir / checkpoint_lib.CHECKSUM_FILE).exists()
    assert checkpoint_lib.verify_checksums(step_dir) == []


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
  states = _save_steps(str(tmp_path), [1, 2, 3])
  flipped = _flip_a_byte(str(tmp_path / "checkpoints" / "3"))
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
    _flip_a_byte(str(tmp_path / "checkpoints" / str(step)))
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path))
  with pytest.raises(checkpoint_lib.CorruptCheckpointError,
                     match=r"No intact checkpoint.*step 2: .*CRC32 mismatch.*step 1"):
    checkpointer.restore(abstract(states[2]))
  checkpointer.close()
