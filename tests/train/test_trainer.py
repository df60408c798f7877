"""The trainer end to end, in fresh processes: data parallelism, accumulation, multi-host, resume.

These are the issue's must-shows: the same global batch and seed give the same losses on
1 process x 4 devices and 2 processes x 2 devices (real ``jax.distributed`` over gloo on
127.0.0.1) with dropout on (each host loads its contiguous block of rows, so the global batch is
the same ordered array and every row gets the same dropout mask), and on 1 device with 4
micro-batches (dropout off: micro-batches draw their own dropout keys); a run killed with SIGKILL
and restarted continues with bit-identical losses.
"""

import os
import signal
import subprocess

import numpy as np
import pytest

import trainer_runs
from lamb_optax import data as data_lib


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The embedded corpus cut to a few documents, built once for every run of this module."""
  directory = str(tmp_path_factory.mktemp("data"))
  masking = data_lib.MaskingConfig(max_seq_length=128, max_predictions_per_seq=20)
  data_lib.prepare_embedded(directory, masking=masking,
                            max_documents=trainer_runs.SMALL["data.embedded_max_documents"])
  return directory


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
  """One uninterrupted run on 1 process x 4 devices: data parallel, no accumulation."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  trainer_runs.run(workdir, {"micro_batch_size": 4}, data_dir, devices=4)
  return workdir


def test_run_logs_every_metric_and_learns(reference):
  rows = trainer_runs.rows(reference)
  train = [r for r in rows if "loss" in r and "eval_loss" not in r]
  assert [r["step"] for r in train] == list(range(1, 9))
  for key in ("mlm_accuracy", "nsp_accuracy", "learning_rate", "grad_norm", "mlm_loss",
              "trust_ratio_mean"):
    assert all(np.isfinite(r[key]) for r in train), key
  assert all("tokens_per_second" in r for r in train[1:])
  assert train[-1]["loss"] < train[0]["loss"]
  evals = [r for r in rows if "eval_loss" in r]
  assert [r["step"] for r in evals] == [4, 8]
  assert os.listdir(os.path.join(reference, "tensorboard"))
  assert sorted(os.listdir(os.path.join(reference, "checkpoints")))[-1] == "8"


def test_accumulation_matches_data_parallelism(tmp_path, data_dir):
  """1 device with 4 micro-batches of 4 == 4 devices with one micro-batch of 4 each (dropout off:
  each micro-batch folds its index into the dropout key, so their masks differ by design)."""
  parallel, accumulate = str(tmp_path / "parallel"), str(tmp_path / "accumulate")
  overrides = {"micro_batch_size": 4, **trainer_runs.NO_DROPOUT}
  trainer_runs.run(parallel, overrides, data_dir, devices=4)
  trainer_runs.run(accumulate, overrides, data_dir, devices=1)
  expected, got = trainer_runs.losses(parallel), trainer_runs.losses(accumulate)
  np.testing.assert_allclose([got[s] for s in sorted(expected)],
                             [expected[s] for s in sorted(expected)], rtol=2e-5)


def test_two_processes_match_one(reference, tmp_path, data_dir):
  """2 processes x 2 devices (jax.distributed, gloo) == 1 process x 4 devices, dropout on."""
  workdir = str(tmp_path / "multihost")
  trainer_runs.run_multiprocess(workdir, {"micro_batch_size": 4}, data_dir, processes=2,
                                devices_per_process=2)
  expected, got = trainer_runs.losses(reference), trainer_runs.losses(workdir)
  np.testing.assert_allclose([got[s] for s in sorted(expected)],
                             [expected[s] for s in sorted(expected)], rtol=2e-5)


def test_sigkill_and_restart_continue_bit_identically(reference, tmp_path, data_dir):
  workdir = str(tmp_path / "killed")
  process = subprocess.Popen(
      trainer_runs.command(workdir, {"micro_batch_size": 4}, data_dir),
      env=trainer_runs.environment(4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      cwd=trainer_runs.ROOT)
  try:
    assert trainer_runs.wait_for_step(workdir, 5, process, timeout=240), "never reached step 5"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
  finally:
    process.kill()
  assert max(trainer_runs.losses(workdir)) < 8  # it really died mid-run
  trainer_runs.run(workdir, {"micro_batch_size": 4}, data_dir, devices=4)
  expected, got = trainer_runs.losses(reference), trainer_runs.losses(workdir)
  assert got == expected  # bit-identical floats, every step


def test_refuses_a_workdir_of_another_model(reference, tmp_path, data_dir):
  workdir = str(tmp_path / "other")
  trainer_runs.run(workdir, {"num_train_steps": 2, "checkpoint_every_steps": 2}, data_dir)
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  config_before = open(os.path.join(workdir, "config.json")).read()
  result = trainer_runs.run(workdir, {"model.overrides.hidden_size": 64,
                                      "model.overrides.intermediate_size": 256},
                            data_dir, check=False)
  assert result.returncode != 0
  assert "different model" in result.stderr and "refusing to overwrite" in result.stderr
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
  assert open(os.path.join(workdir, "config.json")).read() == config_before


def test_load_the_trained_model_and_fill_masks(reference):
  from lamb_optax.train import pretrained  # pylint: disable=g-import-not-at-top
  run = pretrained.load(reference)
  assert run.config.num_train_steps == 8
  filled = pretrained.fill_mask(run, "The [MASK] function returns a [MASK].", top_k=3)
  assert len(filled) == 2 and all(len(tokens) == 3 for tokens in filled)
  vocab = run.tokenizer.get_vocab()
  assert all(token in vocab for tokens in filled for token in tokens)
  with pytest.raises(ValueError, match="No \\[MASK\\]"):
    pretrained.fill_mask(run, "no mask here")
