"""The image task in the trainer: layouts agree (BatchNorm included), eval covers the split, the
digits beat a linear model, bad input fails clearly."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from lamb_optax import sharding
from lamb_optax.data import images
from lamb_optax.train import config as config_lib
from lamb_optax.train import loop
from lamb_optax.train import trainer as trainer_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]

# LogisticRegression(max_iter=5000) on the raw pixels of the same split (split_seed 0): 95.6%
# validation, 96.4% test accuracy (configs/digits_resnet.py).
LINEAR_VALIDATION_ACCURACY = 0.956


def image_config(model="resnet", **changes):
  c = config_lib.default_config()
  c.task = "image_classification"
  c.image.model, c.image.preset = model, "tiny"
  c.image.patch_size = 2
  c.image.batch_norm_group_size = 4
  c.learning_rate, c.warmup_steps, c.num_train_steps = 1e-2, 2, 4
  c.global_batch_size, c.micro_batch_size = 16, 4
  c.eval_batches, c.eval_batch_size = 1, 16
  for key, value in changes.items():
    target, *path = key.split(".")
    node = c
    for p in [target] + path[:-1] if path else []:
      node = node[p]
    node[path[-1] if path else target] = value
  return c


def run_steps(config, devices, steps=3):
  trainer = trainer_lib.build(config, "/unused", devices=jax.devices()[:devices])
  losses = []
  with jax.set_mesh(trainer.mesh):
    state, step = trainer.fresh_state(), trainer.train_step()
    batches = trainer.task.train_iterator(trainer.plan.per_process_batch_size)
    for _ in range(steps):
      state, metrics = step(state, sharding.to_global(next(batches), trainer.batch_sharding))
      losses.append(float(metrics["loss"]))
  return trainer, losses, jax.device_get(state.params)


# ResNet in the default run: its BatchNorm groups are what a layout could break. ViT has none.
@pytest.mark.parametrize("model", ["resnet", pytest.param("vit", marks=pytest.mark.slow)])
def test_four_devices_equal_one_device_with_four_micro_batches(model):
  """BatchNorm groups of 4 strided rows hold the same examples on both layouts, and the running
  statistics move once per step: equal up to float summation order."""
  trainer, wide, wide_params = run_steps(image_config(model), devices=4)
  assert trainer.plan.num_micro_batches == 1
  trainer, deep, deep_params = run_steps(image_config(model), devices=1)
  assert trainer.plan.num_micro_batches == 4
  np.testing.assert_allclose(deep, wide, rtol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
               deep_params, wide_params)
  if model == "resnet":  # running statistics moved, and agree
    stem = wide_params["model_state"]["stem_bn"]
    assert np.abs(stem["mean"]).max() > 0
    np.testing.assert_allclose(deep_params["model_state"]["stem_bn"]["var"], stem["var"],
                               rtol=1e-5)


def test_eval_batches_cover_the_split_with_zero_weight_padding():
  trainer = trainer_lib.build(image_config(), "/unused", devices=jax.devices()[:1])
  batches = trainer.task.eval_batches(64, num_batches=10)
  assert len(batches) == 3  # 180 validation digits in 3 batches of 64
  assert sum(b["weight"].sum() for b in batches) == 180
  assert batches[-1]["weight"][-12:].sum() == 0


@pytest.mark.slow  # 320 steps
def test_digits_resnet_beats_logistic_regression(tmp_path):
  """A short LAMB run (320 steps of 64) above the linear model's validation accuracy."""
  config = image_config(
      num_train_steps=320, warmup_steps=32, global_batch_size=64, micro_batch_size=8,
      eval_batch_size=184, eval_every_steps=320, log_every_steps=80,
      checkpoint_every_steps=320, **{"image.batch_norm_group_size": 8, "mesh.data": -1})
  metrics = loop.train_and_evaluate(config, str(tmp_path))
  assert metrics["accuracy"] > LINEAR_VALIDATION_ACCURACY, metrics
  assert metrics["top5_accuracy"] >= metrics["accuracy"]


@pytest.mark.study
# digits_vit: measured 96.1% and 96.7% test accuracy (seeds 0, 1; configs/digits_vit.py), so 95%
# leaves a margin of 4 images of the 360. digits_resnet: 97.5% is not yet measured on test.
@pytest.mark.parametrize("name, threshold", [("digits_resnet", 0.975), ("digits_vit", 0.95)])
def test_digits_configs_reach_their_stated_test_accuracy(tmp_path, name, threshold):
  """The configs as their docstrings run them: one device (``mesh.data = 1``), so in a trainer
  process of its own rather than on this test process's eight fake devices."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, "-m", "lamb_optax.train", f"--config=configs/{name}.py",
                  f"--workdir={tmp_path}", "--config.image.eval_split=test"],
                 cwd=ROOT, env=env, check=True, timeout=3600)
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  accuracy = [row["eval_accuracy"] for row in rows if "eval_accuracy" in row][-1]
  assert accuracy > threshold, rows[-1]


def test_labels_out_of_range_are_refused():
  augment = images.Augment(seed=0, kind="none", image_size=8, num_classes=10)
  with pytest.raises(ValueError, match=r"Label 10 is outside \[0, 10\)"):
    augment(0, {"image": np.zeros((8, 8, 1)), "label": 10})


def test_an_unprepared_tfds_dataset_says_how_to_prepare_it(tmp_path):
  config = image_config(**{"image.dataset": "imagenet2012", "image.augment": "imagenet",
                           "image.data_dir": str(tmp_path), "image.eval_split": "validation"})
  with pytest.raises(ValueError, match="tfds build imagenet2012"):
    trainer_lib.build(config, str(tmp_path), devices=jax.devices()[:1])


def test_bad_image_settings_are_refused():
  with pytest.raises(ValueError, match="not divisible by patch_size 3"):
    trainer_lib.build(image_config("vit", **{"image.patch_size": 3}), None,
                      devices=jax.devices()[:1])
  with pytest.raises(ValueError, match="image.image_size"):
    trainer_lib.build(image_config(**{"image.image_size": 32}), None, devices=jax.devices()[:1])
  with pytest.raises(ValueError, match="batch_norm_group_size"):
    run_steps(image_config(**{"image.batch_norm_group_size": 3}), devices=1, steps=1)


@pytest.mark.parametrize("key, value, interval", [
    ("label_smoothing", 2.0, r"\[0, 1\)"), ("label_smoothing", -1.0, r"\[0, 1\)"),
    ("label_smoothing", 1.0, r"\[0, 1\)"), ("batch_norm_momentum", 1.5, r"\[0, 1\]"),
    ("batch_norm_momentum", -0.1, r"\[0, 1\]"), ("dropout", 1.0, r"\[0, 1\)"),
])
def test_image_settings_out_of_range_are_refused_at_config_time(key, value, interval):
  """Label smoothing 2.0 or -1 and BatchNorm momentum 1.5 trained without complaint."""
  with pytest.raises(ValueError, match=rf"image\.{key} must lie in {interval}, got {value}"):
    trainer_lib.build(image_config(**{f"image.{key}": value}), None, devices=jax.devices()[:1])


def test_image_settings_at_the_edges_of_their_range_are_accepted():
  config = image_config(**{"image.label_smoothing": 0.0, "image.batch_norm_momentum": 1.0})
  trainer_lib.build(config, None, devices=jax.devices()[:1])
