"""The training loop in this process: one short run, one resume, the trained model loaded back.

The default test run's end-to-end check of the trainer. The trainer CLI in fresh processes
(layouts, multi-host, SIGKILLs) is tests/train/test_trainer.py, in the slow tier.
"""

import errno
import logging
import os
import shutil
import signal

import numpy as np
import pytest

import trainer_runs
from lamb_optax.train import checkpoint as checkpoint_lib
from lamb_optax.train import loop
from lamb_optax.train import preemption
from lamb_optax.train import pretrained
from lamb_optax.train import workdir as workdir_lib


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory, pretraining_data_dir):
  """One uninterrupted ``trainer_runs.small_config`` run in this process (8 fake devices)."""
  workdir = str(tmp_path_factory.mktemp("trained"))
  loop.train_and_evaluate(trainer_runs.small_config(pretraining_data_dir), workdir)
  return workdir


def test_a_short_run_logs_every_metric_and_learns(trained_workdir):
  rows = trainer_runs.rows(trained_workdir)
  train = [r for r in rows if "loss" in r and "eval_loss" not in r]
  assert [r["step"] for r in train] == list(range(1, 9))
  for key in ("mlm_accuracy", "nsp_accuracy", "learning_rate", "grad_norm", "mlm_loss",
              "trust_ratio_mean"):
    assert all(np.isfinite(r[key]) for r in train), key
  assert all("tokens_per_second" in r for r in train[1:])
  assert train[-1]["loss"] < train[0]["loss"]
  evals = [r for r in rows if "eval_loss" in r]
  assert [r["step"] for r in evals] == [4, 8]
  assert os.listdir(os.path.join(trained_workdir, "tensorboard"))
  assert sorted(os.listdir(os.path.join(trained_workdir, "checkpoints")))[-1] == "8"


def test_a_run_killed_after_a_checkpoint_resumes_bit_identically(trained_workdir,
                                                                   pretraining_data_dir,
                                                                   tmp_path):
  """The trained run's workdir cut back to what a run SIGKILLed at step 6, before its step-6
  checkpoint, leaves (checkpoints up to step 4, metrics rows up to step 8): the same call
  restores params, optimizer state, RNG and the data iterator from step 4 and ends with the
  uninterrupted run's losses, each step logged once. (tests/train/test_trainer.py kills real
  trainer processes, in the slow tier.)"""
  workdir = tmp_path / "killed"
  shutil.copytree(trained_workdir, workdir)
  for step in os.listdir(workdir / "checkpoints"):
    if int(step) > 4:
      shutil.rmtree(workdir / "checkpoints" / step)
  loop.train_and_evaluate(trainer_runs.small_config(pretraining_data_dir), str(workdir))
  rows = trainer_runs.rows(str(workdir))
  assert [r["step"] for r in rows if "loss" in r and "eval_loss" not in r] == list(range(1, 9))
  assert [r["step"] for r in rows if "eval_loss" in r] == [4, 8]
  assert trainer_runs.losses(str(workdir)) == trainer_runs.losses(trained_workdir)  # same bits


def test_load_the_trained_model_and_fill_masks(trained_workdir):
  run = pretrained.load(trained_workdir)
  assert run.config.num_train_steps == 8
  filled = pretrained.fill_mask(run, "The [MASK] function returns a [MASK].", top_k=3)
  assert len(filled) == 2 and all(len(tokens) == 3 for tokens in filled)
  vocab = run.tokenizer.get_vocab()
  assert all(token in vocab for tokens in filled for token in tokens)
  with pytest.raises(ValueError, match="No \\[MASK\\]"):
    pretrained.fill_mask(run, "no mask here")


@pytest.mark.slow  # a trainer run in this process, ~25 s on 2 cores
def test_ctrl_c_saves_the_step_and_the_resumed_run_is_bit_identical(
    trained_workdir, pretraining_data_dir, tmp_path, monkeypatch, capsys):
  """SIGINT after step 3 (delivered to this process by the real handler): step 3 is saved, one
  line says so and how to resume, the exit status is 130; the same call then resumes from step 3
  and ends with the uninterrupted run's losses. (tests/train/test_preemption.py sends SIGTERM and
  SIGINT to trainer processes, 1 and 2 of them, in the slow tier.)"""
  workdir = str(tmp_path / "interrupted")
  config = trainer_runs.small_config(pretraining_data_dir)
  original = preemption.Guard.stop_at

  def stop_at(guard, step):
    if step == 3:
      os.kill(os.getpid(), signal.SIGINT)
    return original(guard, step)

  monkeypatch.setattr(preemption.Guard, "stop_at", stop_at)
  with pytest.raises(preemption.Preempted) as stopped:
    loop.train_and_evaluate(config, workdir)
  assert (stopped.value.code, stopped.value.saved_step) == (130, 3)
  lines = [line for line in capsys.readouterr().out.splitlines() if "Stopped by" in line]
  assert len(lines) == 1 and "Stopped by SIGINT after step 3: checkpoint of step 3 saved" in \
      lines[0] and "run the same command to resume (exit status 130)" in lines[0], lines
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int)[-1] == "3"
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers given back
  monkeypatch.undo()
  loop.train_and_evaluate(config, workdir)
  rows = trainer_runs.rows(workdir)
  assert [r["step"] for r in rows if "loss" in r and "eval_loss" not in r] == list(range(1, 9))
  assert trainer_runs.losses(workdir) == trainer_runs.losses(trained_workdir)  # same bits


def test_the_pretrained_loader_skips_a_corrupt_checkpoint(trained_workdir, tmp_path, caplog):
  """pretrained.load reads through the checksummed reader: a flipped byte in the newest step is
  named in a warning and the previous step is loaded, instead of wrong weights."""
  workdir = tmp_path / "copy"
  shutil.copytree(trained_workdir, workdir, ignore=shutil.ignore_patterns("run.lock"))
  path = trainer_runs.flip_a_byte(str(workdir / "checkpoints" / "8"))
  with caplog.at_level(logging.WARNING):
    pretrained.load(str(workdir))
  assert "step 8" in caplog.text and "corrupt" in caplog.text and os.path.basename(path) in \
      caplog.text


@pytest.mark.slow  # a trainer run in this process, ~25 s on 2 cores
def test_a_full_disk_is_one_line_and_leaves_no_unfinished_checkpoint(
    trained_workdir, pretraining_data_dir, tmp_path, monkeypatch):
  """ENOSPC while saving step 4 (an Orbax temporary directory left behind, as a failed save
  leaves it): one line naming the disk, the newest complete step and what to do; the temporary
  directory removed; the same call resumes from step 2 once there is space, bit-identically."""
  workdir = str(tmp_path / "full")
  config = trainer_runs.small_config(pretraining_data_dir)
  save = checkpoint_lib.Checkpointer.save

  def save_until_full(checkpointer, step, *args, **kwargs):
    if step == 4:
      os.makedirs(os.path.join(checkpointer.directory, "4.orbax-checkpoint-tmp-1"))
      raise OSError(errno.ENOSPC, "No space left on device")
    return save(checkpointer, step, *args, **kwargs)

  monkeypatch.setattr(checkpoint_lib.Checkpointer, "save", save_until_full)
  with pytest.raises(workdir_lib.DiskFullError) as full:
    loop.train_and_evaluate(config, workdir)
  message = str(full.value)
  assert "\n" not in message and "is full" in message and "step 2" in message
  assert "run the same command to resume" in message
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]
  monkeypatch.undo()
  loop.train_and_evaluate(config, workdir)
  assert trainer_runs.losses(workdir) == trainer_runs.losses(trained_workdir)
