"""One run per workdir, and what a run may not silently change.

All in this process and before any compile: the lock, the config.json comparison, unusable
workdirs and ``init_from`` directories that are missing or hold another model.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import trainer_runs
from lamb_optax.train import checkpoint as checkpoint_lib
from lamb_optax.train import loop
from lamb_optax.train import workdir as workdir_lib

small_config = trainer_runs.small_config


def test_a_held_workdir_is_refused_naming_the_holder(tmp_path):
  lock = workdir_lib.acquire(str(tmp_path))
  with pytest.raises(workdir_lib.WorkdirError,
                     match=f"in use by another run \\(pid {os.getpid()} on host "
                           f"{socket.gethostname()}"):
    workdir_lib.acquire(str(tmp_path))
  lock.release()
  workdir_lib.acquire(str(tmp_path)).release()


def test_the_lock_of_a_killed_run_does_not_block_a_restart(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from lamb_optax.train import workdir; "
       f"workdir.acquire({str(tmp_path)!r}); print('held', flush=True); time.sleep(600)"],
      stdout=subprocess.PIPE, text=True, env=trainer_runs.environment(1))
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(workdir_lib.WorkdirError, match=f"pid {holder.pid} on host"):
      workdir_lib.acquire(str(tmp_path))
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
  finally:
    holder.kill()
  workdir_lib.acquire(str(tmp_path)).release()  # the kernel dropped the dead run's lock


def test_a_second_trainer_stops_before_writing(tmp_path, pretraining_data_dir):
  workdir = str(tmp_path / "run")
  lock = workdir_lib.acquire(workdir)
  try:
    with pytest.raises(workdir_lib.WorkdirError, match="one run per workdir"):
      loop.train_and_evaluate(small_config(pretraining_data_dir), workdir)
  finally:
    lock.release()
  assert sorted(os.listdir(workdir)) == [workdir_lib.LOCK_FILE]


def _config_json(tmp_path, **changes):
  workdir_lib.save_config(small_config("unused", **changes), str(tmp_path))
  return json.loads((tmp_path / "config.json").read_text())


def test_resuming_with_another_seed_batch_or_data_is_refused(tmp_path):
  _config_json(tmp_path)
  for key, value in [("seed", 1), ("global_batch_size", 32), ("data.max_seq_length", 64),
                     ("data.source", "/other/data")]:
    with pytest.raises(workdir_lib.WorkdirError, match=f"{key}: .* -> {value!r}"):
      workdir_lib.check_config_change(small_config("unused", **{key: value}), str(tmp_path),
                                      resuming=True)
  # Layout and logging may change; a fresh start (no checkpoint) may use any config.
  workdir_lib.check_config_change(small_config("unused", **{"mesh.data": 2, "log_every_steps": 5}),
                                  str(tmp_path), resuming=True)
  workdir_lib.check_config_change(small_config("unused", seed=1), str(tmp_path), resuming=False)


def test_an_allowed_change_keeps_the_old_config(tmp_path):
  old = _config_json(tmp_path)
  changed = small_config("unused", seed=1, allow_config_change=True)
  workdir_lib.check_config_change(changed, str(tmp_path), resuming=True)
  workdir_lib.save_config(changed, str(tmp_path))
  (kept,) = tmp_path.glob("config.*T*Z.json")
  assert json.loads(kept.read_text()) == old
  assert json.loads((tmp_path / "config.json").read_text())["seed"] == 1


def test_a_workdir_that_is_a_file_is_refused(tmp_path, pretraining_data_dir):
  path = tmp_path / "file"
  path.write_text("")
  with pytest.raises(workdir_lib.WorkdirError, match="is a file, not a directory"):
    loop.train_and_evaluate(small_config(pretraining_data_dir), str(path))
  with pytest.raises(workdir_lib.WorkdirError, match="cannot be created: .* is a file"):
    loop.train_and_evaluate(small_config(pretraining_data_dir), str(path / "run"))


@pytest.mark.skipif(os.getuid() == 0, reason="root may write anywhere")
def test_a_read_only_workdir_is_refused(tmp_path, pretraining_data_dir):
  os.chmod(tmp_path, 0o500)
  try:
    with pytest.raises(workdir_lib.WorkdirError, match="is not writable"):
      loop.train_and_evaluate(small_config(pretraining_data_dir), str(tmp_path / "run"))
  finally:
    os.chmod(tmp_path, 0o700)


def test_a_missing_init_from_is_named_and_not_created(tmp_path):
  missing = tmp_path / "phase1"
  with pytest.raises(FileNotFoundError, match="init_from=.*phase1.* does not exist"):
    checkpoint_lib.restore_params(str(missing), {"w": jax.ShapeDtypeStruct((3,), np.float32)})
  assert not missing.exists()


def test_init_from_of_another_shape_is_one_clear_error(tmp_path):
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), async_save=False)
  checkpointer.save(1, {"params": {"w": np.zeros((3, 4), np.float32)}, "step": np.int32(1)})
  checkpointer.close()
  wanted = {"w": jax.ShapeDtypeStruct((3, 8), np.float32)}
  with pytest.raises(checkpoint_lib.ShapeMismatchError,
                     match=r"params of another model: 1 mismatch\(es\): w: checkpoint \(3, 4\) vs "
                           r"run \(3, 8\)"):
    checkpoint_lib.restore_params(str(tmp_path), wanted)


def test_a_key_added_to_the_schema_later_does_not_block_resuming(tmp_path):
  # A run written before a key existed ran with the behaviour the key's default stands for.
  config = small_config("unused")
  old = json.loads(config.to_json_best_effort())
  del old["init_from_optimizer_state"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  workdir_lib.check_config_change(config, str(tmp_path), resuming=True)
  config.init_from_optimizer_state = True  # not the default: a real change
  with pytest.raises(workdir_lib.WorkdirError, match="init_from_optimizer_state: None -> True"):
    workdir_lib.check_config_change(config, str(tmp_path), resuming=True)


def test_a_tilde_in_workdir_and_init_from_is_the_home_directory(tmp_path, monkeypatch):
  """A shell leaves `--workdir=~/x` unexpanded; the trainer, predict and the pretrained loader
  expand it instead of creating a directory named `~`."""
  from lamb_optax.train import predict  # pylint: disable=g-import-not-at-top
  from lamb_optax.train import pretrained  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.chdir(tmp_path)
  seen = {}
  monkeypatch.setattr(loop, "_build_and_train",
                      lambda config, workdir, guard: seen.update(workdir=workdir,
                                                                 init_from=config.init_from))
  config = trainer_runs.small_config(str(tmp_path / "data"))
  config.init_from = "~/phase1"
  loop.train_and_evaluate(config, "~/run")
  assert seen == {"workdir": str(tmp_path / "run"), "init_from": str(tmp_path / "phase1")}
  for load in (predict.predict, pretrained.load):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "run")):
      load("~/run")
  assert not (tmp_path / "~").exists()
