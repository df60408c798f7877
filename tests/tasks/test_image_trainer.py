"""The image task through the trainer CLI, in fresh processes (the patterns of
tests/train/test_trainer.py): a SIGKILLed run resumes bit-identically (BatchNorm running
statistics and the augmentation stream included); 2 processes x 2 devices equal 1 x 4.

Every test starts trainer processes, so the module is in the slow tier; the image task's step,
layouts and accuracy are tested in this process by tests/tasks/test_image_classification.py."""

import numpy as np
import pytest

import trainer_runs

pytestmark = pytest.mark.slow

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
  command = trainer_runs.command(workdir, IMAGE, workdir)
  assert trainer_runs.kill_at_step(command, workdir, 5, devices=4, timeout=300) < 8  # mid-run
  trainer_runs.run_command(command, devices=4)
  assert trainer_runs.losses(workdir) == trainer_runs.losses(reference)  # bit-identical


def test_two_processes_match_one(reference, tmp_path):
  workdir = str(tmp_path / "multihost")
  trainer_runs.run_multiprocess(workdir, IMAGE, workdir, processes=2, devices_per_process=2)
  expected, got = trainer_runs.losses(reference), trainer_runs.losses(workdir)
  np.testing.assert_allclose([got[s] for s in sorted(expected)],
                             [expected[s] for s in sorted(expected)], rtol=2e-5)
