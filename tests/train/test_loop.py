"""The training loop in this process: one short run, one resume, the trained model loaded back.

The default test run's end-to-end check of the trainer. The trainer CLI in fresh processes
(layouts, multi-host, SIGKILLs) is tests/train/test_trainer.py, in the slow tier.
"""

import os
import shutil

import numpy as np
import pytest

import trainer_runs
from lamb_optax.train import loop
from lamb_optax.train import pretrained


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
