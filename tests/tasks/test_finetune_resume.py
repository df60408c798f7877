"""A fine-tuning run killed with SIGKILL and restarted continues bit-identically (dropout on)."""

import signal
import subprocess
import sys

import pytest

import trainer_runs

FLAGS = {"model.overrides.hidden_size": 32, "model.overrides.num_heads": 2,
         "model.overrides.intermediate_size": 64, "model.overrides.num_layers": 1,
         "finetune.max_seq_length": 32, "finetune.max_train_examples": 256,
         "finetune.max_eval_examples": 64, "num_train_steps": 8, "warmup_steps": 2,
         "global_batch_size": 16, "micro_batch_size": 4, "eval_batch_size": 16,
         "log_every_steps": 1, "eval_every_steps": 4, "checkpoint_every_steps": 2}


def _command(workdir):
  return ([sys.executable, "-m", "lamb_optax.train",
           f"--config={trainer_runs.ROOT / 'configs' / 'docs_classification.py'}",
           f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in FLAGS.items()])


def _run(workdir):
  subprocess.run(_command(workdir), env=trainer_runs.environment(2), check=True,
                 capture_output=True, text=True, timeout=600, cwd=trainer_runs.ROOT)


@pytest.mark.slow
def test_sigkill_and_restart_continue_bit_identically(tmp_path):
  reference = str(tmp_path / "reference")
  _run(reference)
  killed = str(tmp_path / "killed")
  process = subprocess.Popen(_command(killed), env=trainer_runs.environment(2),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             cwd=trainer_runs.ROOT)
  try:
    assert trainer_runs.wait_for_step(killed, 5, process, timeout=400), "never reached step 5"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
  finally:
    process.kill()
  assert max(trainer_runs.losses(killed)) < 8  # it really died mid-run
  _run(killed)
  assert trainer_runs.losses(killed) == trainer_runs.losses(reference)  # every step, bit for bit
