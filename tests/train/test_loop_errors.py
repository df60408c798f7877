"""Bad input to the trainer fails early, before compiling, with a message that names the fix."""

import os

import pytest

import trainer_runs
from lamb_optax import data as data_lib
from lamb_optax.train import config as config_lib
from lamb_optax.train import loop

import configs.tiny as tiny_config  # pylint: disable=g-bad-import-order


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("data"))
  data_lib.prepare_embedded(directory, masking=data_lib.MaskingConfig(128, 20),
                            max_documents=trainer_runs.SMALL["data.embedded_max_documents"])
  return directory


def test_data_of_another_shape_is_refused(tmp_path, data_dir):
  prepared = data_lib.prepare_embedded(
      data_dir, masking=data_lib.MaskingConfig(128, 20),
      max_documents=trainer_runs.SMALL["data.embedded_max_documents"])  # the cached build
  config = small_config(data_dir, **{"data.source": prepared.directory,
                                     "data.vocab_file": prepared.vocab_file,
                                     "data.max_seq_length": 64, "data.max_predictions_per_seq": 10})
  with pytest.raises(ValueError, match=r"holds examples of length 128 with 20 predictions"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))


def small_config(data_dir, **changes):
  config = tiny_config.get_config()
  # 8 fake devices in this process: micro-batches of 2 make the global batch of 16.
  for key, value in {**trainer_runs.SMALL, "micro_batch_size": 2, "data.data_dir": data_dir,
                     **changes}.items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


@pytest.mark.parametrize("changes, message", [
    ({"global_batch_size": 20}, "not divisible by (data-parallel devices 8"),
    ({"model.overrides.hidden_dropot": 0.0}, "Unknown config keys ['model.overrides.hidden_dropot']"),
    ({"mesh.data": 3}, "needs 3 devices"),
    ({"optimizer.name": "adam"}, "Unknown optimizer 'adam'"),
    ({"optimizer.kwargs.weight_decai": 0.1}, "are not arguments of lamb"),
    ({"warmup_steps": 100}, "warmup cannot be longer than the run"),
    ({"global_batch_size": 8 * 4096, "micro_batch_size": 4096}, "fewer than batch_size=32768"),
    ({"data.source": "/nonexistent/dataset"}, "/nonexistent/dataset"),
    ({"eval_batch_size": 12}, "eval_batch_size 12 must be a positive multiple of the data-parallel "
                              "devices (8)"),
    ({"eval_batch_size": 8 * 4096}, "lower eval_batches or the batch size"),
])
def test_bad_config_fails_before_writing_anything(tmp_path, data_dir, changes, message):
  workdir = str(tmp_path / "run")
  with pytest.raises((ValueError, FileNotFoundError)) as error:
    loop.train_and_evaluate(small_config(data_dir, **changes), workdir)
  assert message in str(error.value), str(error.value)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_eval_batch_defaults_to_one_micro_step():
  # Memory follows the micro-batch for eval as for training: a 32k batch evaluates in 2 x 8 rows.
  config = small_config("unused", global_batch_size=32768, eval_batch_size=0)
  plan = config_lib.plan_batches(config, data_parallel_devices=8, process_count=2)
  assert (plan.eval_batch_size, plan.per_process_eval_batch_size) == (16, 8)
  config.eval_batch_size = 64
  assert config_lib.plan_batches(config, 8, 2).per_process_eval_batch_size == 32


def test_unknown_key_is_named():
  config = tiny_config.get_config()
  config.lerning_rate = 1.0
  with pytest.raises(ValueError, match=r"Unknown config keys \['lerning_rate'\]"):
    config_lib.lock(config)


def test_stops_after_n_nonfinite_updates_in_a_row(tmp_path, data_dir):
  """An absurd learning rate blows the params up; the skipped updates are counted and the
  run stops with the error after max_nonfinite_steps of them."""
  config = small_config(data_dir, learning_rate=1e30, warmup_steps=0, max_nonfinite_steps=2,
                        checkpoint_every_steps=100)
  with pytest.raises(loop.NonFiniteLossError, match="2 updates in a row had a non-finite"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  rows = trainer_runs.rows(str(tmp_path / "run"))
  assert any(r.get("updates_skipped") for r in rows)
