"""Bad input to the trainer fails early, before compiling, with a message that names the fix."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import configs.tiny as tiny_config  # pylint: disable=g-bad-import-order
import trainer_runs
from lamb_optax.train import config as config_lib
from lamb_optax.train import loop
from lamb_optax.train import plan as plan_lib


def test_data_of_another_shape_is_refused(tmp_path, pretraining_data_dir):
  prepared = trainer_runs.prepare_small_data(pretraining_data_dir)  # the session's build
  config = small_config(pretraining_data_dir, **{
      "data.source": prepared.directory, "data.vocab_file": prepared.vocab_file,
      "data.max_seq_length": 64, "data.max_predictions_per_seq": 10})
  with pytest.raises(ValueError, match=r"holds examples of length 128 with 20 predictions"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))


small_config = trainer_runs.small_config


@pytest.mark.parametrize("changes, message", [
    ({"global_batch_size": 20}, "not divisible by (data-parallel devices 8"),
    ({"model.overrides.hidden_dropot": 0.0},
     "Unknown config keys ['model.overrides.hidden_dropot']"),
    ({"mesh.data": 3}, "uses 3 devices"),
    ({"optimizer.name": "adam"}, "Unknown optimizer 'adam'"),
    ({"optimizer.kwargs.weight_decai": 0.1}, "are not arguments of lamb"),
    ({"warmup_steps": 100}, "warmup cannot be longer than the run"),
    ({"global_batch_size": 8 * 4096, "micro_batch_size": 4096}, "fewer than batch_size=32768"),
    ({"data.source": "/nonexistent/dataset"}, "/nonexistent/dataset"),
    ({"eval_batch_size": 12}, "eval_batch_size 12 must be a positive multiple of the data-parallel "
                              "devices (8)"),
    ({"eval_batch_size": 8 * 4096}, "lower eval_batches or the batch size"),
    # A run that keeps no checkpoint cannot resume.
    ({"keep_checkpoints": 0}, "keep_checkpoints must be >= 1, got 0 (a run that keeps no"),
    # NaN passes `nan < 0`; every float must be finite.
    ({"end_learning_rate": float("nan")}, "end_learning_rate = nan is not a finite number"),
    ({"optimizer.kwargs.weight_decay": float("inf")}, "optimizer.kwargs.weight_decay = inf is"),
    # One line each, before compiling.
    ({"mesh.tensor": 4}, "does not divide over mesh axes ('tensor',) of size 4"),
    ({"max_nonfinite_steps": 0}, "max_nonfinite_steps must be >= 1, got 0"),
    ({"eval_batches": -1}, "eval_batches must be >= 0, got -1"),
    ({"data.worker_count": -1}, "data.worker_count must be >= 0, got -1"),
    ({"peak_flops_per_device": -1.0}, "peak_flops_per_device must be >= 0, got -1.0"),
    ({"optimizer.kwargs.b1": "0.9"}, "optimizer.kwargs.b1 is the string '0.9'"),
    ({"optimizer.kwargs.trust_ratio_mask": {"bias": "False"}},
     "optimizer.kwargs.trust_ratio_mask.bias is the string 'False'"),
    ({"optimizer.kwargs.b1": True}, "optimizer.kwargs.b1 must be a float for lamb, got True"),
    ({"optimizer.kwargs.weight_decay_mask": 3}, "optimizer.kwargs.weight_decay_mask"),
    ({"optimizer.kwargs.learning_rate": 0.1}, "the learning rate is config.learning_rate"),
])
def test_bad_config_fails_before_writing_anything(tmp_path, pretraining_data_dir, changes,
                                                  message):
  workdir = str(tmp_path / "run")
  with pytest.raises((ValueError, FileNotFoundError)) as error:
    loop.train_and_evaluate(small_config(pretraining_data_dir, **changes), workdir)
  assert message in str(error.value), str(error.value)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_eval_batch_defaults_to_one_micro_step():
  # Memory follows the micro-batch for eval as for training: a 32k batch evaluates in 2 x 8 rows.
  config = small_config("unused", global_batch_size=32768, eval_batch_size=0)
  plan = plan_lib.plan_batches(config, data_parallel_devices=8, process_count=2)
  assert (plan.eval_batch_size, plan.per_process_eval_batch_size) == (16, 8)
  config.eval_batch_size = 64
  assert plan_lib.plan_batches(config, 8, 2).per_process_eval_batch_size == 32


def test_unknown_key_is_named():
  config = tiny_config.get_config()
  config.lerning_rate = 1.0
  with pytest.raises(ValueError, match=r"Unknown config keys \['lerning_rate'\]"):
    config_lib.lock(config)


@pytest.mark.slow  # a trainer run of its own (the step's skipping is tests/train/test_step.py's)
def test_stops_after_n_nonfinite_updates_in_a_row(tmp_path, pretraining_data_dir):
  """An absurd learning rate (warmed up from 0, so step 1 is sane and checkpointed) would blow the
  params up: those updates are skipped (the new params' norm is checked, not only the loss and
  gradient), counted, never checkpointed, and the run stops after max_nonfinite_steps of them
  with an error that names the intact checkpoint."""
  workdir = str(tmp_path / "run")
  config = small_config(pretraining_data_dir, learning_rate=1e30, warmup_steps=4,
                        max_nonfinite_steps=3, checkpoint_every_steps=1, keep_checkpoints=10,
                        eval_batches=0)
  with pytest.raises(loop.NonFiniteLossError, match="3 updates in a row had a non-finite") as e:
    loop.train_and_evaluate(config, workdir)
  rows = trainer_runs.rows(workdir)
  assert any(r.get("updates_skipped") for r in rows)
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert steps == [1], steps  # the skipped steps were not saved
  assert "the newest checkpoint (step 1) holds the last finite params" in str(e.value)
  state = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", "1", "state"))
  params = np.concatenate([np.ravel(x) for x in jax.tree.leaves(state["params"])])
  assert np.isfinite(params).all() and np.abs(params).max() < 100


def test_a_string_learning_rate_is_named():
  """A config built as a plain dict (or read back from a config.json) bypasses ConfigDict's
  typing: the schema check names the key."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({**tiny_config.get_config().to_dict(),
                                      "learning_rate": "1e-3"})
  with pytest.raises(ValueError, match=r"learning_rate must be a float, got '1e-3' \(str\)"):
    config_lib.check_schedule(config)
