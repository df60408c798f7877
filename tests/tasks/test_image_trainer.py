"""The image task through the trainer CLI, in fresh processes (the patterns of
tests/train/test_trainer.py): a SIGKILLed run resumes bit-identically (BatchNorm running
statistics and the augmentation stream included); 2 processes x 2 devices equal 1 x 4."""

import signal
import subprocess

import numpy as np
import pytest

import trainer_runs

# A tiny ResNet on the digits; BatchNorm groups of 4 (trainer_runs.SMALL: 8 steps of 16).
IMAGE = {"task": "image_classification", "image.model": "resnet", "image.preset": "tiny",
         "image.batch_norm_group_size": 4, "micro_batch_size": 4, "learning_rate": 1e-2}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("image_reference"))
  trainer_runs.run(workdir, IMAGE, workdir, devices=4)
  return workdir


def test_image_run_logs_accuracies(reference):
  rows = trainer_runs.rows(reference)
  evals = [r for r in rows if "eval_accuracy" in r]
  assert [r["step"] for r in evals] == [4, 8]
  assert all(0 <= r["eval_top5_accuracy"] <= 1 for r in evals)
  assert sorted(trainer_runs.losses(reference)) == list(range(1, 9))


def test_sigkill_and_restart_continue_bit_identically(reference, tmp_path):
  workdir = str(tmp_path / "killed")
  process = subprocess.Popen(
      trainer_runs.command(workdir, IMAGE, workdir), env=trainer_runs.environment(4),
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=trainer_runs.ROOT)
  try:
    assert trainer_runs.wait_for_step(workdir, 5, process, timeout=300), "never reached step 5"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
  finally:
    process.kill()
  assert max(trainer_runs.losses(workdir)) < 8  # it really died mid-run
  trainer_runs.run(workdir, IMAGE, workdir, devices=4)
  assert trainer_runs.losses(workdir) == trainer_runs.losses(reference)  # bit-identical


@pytest.mark.slow
def test_two_processes_match_one(reference, tmp_path):
  workdir = str(tmp_path / "multihost")
  trainer_runs.run_multiprocess(workdir, IMAGE, workdir, processes=2, devices_per_process=2)
  expected, got = trainer_runs.losses(reference), trainer_runs.losses(workdir)
  np.testing.assert_allclose([got[s] for s in sorted(expected)],
                             [expected[s] for s in sorted(expected)], rtol=2e-5)
