"""A fine-tuning run killed with SIGKILL and restarted continues bit-identically (dropout on)."""

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


@pytest.mark.slow
def test_sigkill_and_restart_continue_bit_identically(tmp_path):
  reference = str(tmp_path / "reference")
  trainer_runs.run_command(_command(reference), devices=2, timeout=600)
  killed = str(tmp_path / "killed")
  assert trainer_runs.kill_at_step(_command(killed), killed, 5, devices=2, timeout=400) < 8
  trainer_runs.run_command(_command(killed), devices=2, timeout=600)
  assert trainer_runs.losses(killed) == trainer_runs.losses(reference)  # every step, bit for bit
