"""The batch-scaling study's planning, aggregation and an end-to-end --quick run."""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from lamb_optax import schedules
from lamb_optax.studies import batch_scaling as scaling
from lamb_optax.studies import batch_scaling_report as report
from lamb_optax.train import config as config_lib
from lamb_optax.train import plan as plan_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _study(name="scaling_tiny"):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(name, ROOT / f"configs/{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_plan_steps_microbatch_eval():
  config = _study()
  cells = scaling.plan_cells(config)
  s = config.study
  assert len(cells) == len(s.optimizers) * len(s.batch_sizes) * len(s.seeds)
  for c in cells:
    assert c.num_train_steps == max(1, s.examples_budget // c.batch_size)
    assert c.micro_batch_size <= s.micro_batch_cap
    assert c.batch_size % c.micro_batch_size == 0
    assert (c.eval_batch_size, c.eval_batches) == (s.eval_batch_size,
                                                   s.eval_examples // s.eval_batch_size)
    assert 0 <= c.warmup_steps <= c.num_train_steps
  assert len({c.name for c in cells}) == len(cells)


def test_budget_smaller_than_batch_gives_one_step():
  config = _study()
  config.study.batch_sizes = (4096,)
  config.study.examples_budget = 100
  assert {c.num_train_steps for c in scaling.plan_cells(config)} == {1}


def test_sqrt_rule_matches_paper_learning_rate():
  config = _study()
  config.study.optimizers = ("lamb",)
  config.study.base_batch_size = 32768
  config.study.base_learning_rates.lamb = 5e-3
  config.study.batch_sizes = (512, 1024, 8192, 32768)
  config.study.warmup_rule = "paper"
  config.study.examples_budget = 32768 * 100
  for c in scaling.plan_cells(config):
    assert c.learning_rate == pytest.approx(schedules.paper_learning_rate(c.batch_size))
    assert c.warmup_steps == round(schedules.paper_warmup_ratio(c.batch_size) * c.num_train_steps)


def test_sweep_rule_and_micro_batch():
  config = _study()
  config.study.lr_rule = "sweep"
  config.study.batch_sizes, config.study.seeds = (64,), (0,)
  cells = scaling.plan_cells(config)
  lamb = sorted(c.learning_rate for c in cells if c.optimizer == "lamb")
  assert lamb == pytest.approx([5e-3, 1e-2, 2e-2])
  assert scaling.micro_batch_size(768, 256) == 256
  assert scaling.micro_batch_size(384, 256) == 192
  assert scaling.micro_batch_size(1024, 256, devices=8) == 128
  config.study.lr_rule = "linear"
  with pytest.raises(ValueError, match="lr_rule"):
    scaling.plan_cells(config)


def test_cell_config_is_a_valid_trainer_config():
  config = _study()
  cell = scaling.plan_cells(config)[-1]
  c = scaling.cell_config(config.base, cell)
  config_lib.lock(c)
  config_lib.check_schedule(c)
  plan_lib.plan_batches(c, data_parallel_devices=1, process_count=1)
  assert (c.global_batch_size, c.optimizer.name, c.learning_rate) == (
      cell.batch_size, cell.optimizer, cell.learning_rate)
  assert c.eval_every_steps == c.num_train_steps
  base = _study().base  # the base is left untouched
  assert config.base.to_dict() == base.to_dict()


def _row(opt, batch, seed, lr, loss, acc=0.1):
  return dict(optimizer=opt, batch_size=batch, seed=seed, learning_rate=lr, num_train_steps=1,
              eval_mlm_loss=loss, eval_mlm_accuracy=acc, wall_s=1.0)


def test_summarize_mean_band_and_best_lr():
  rows = [_row("lamb", 64, 0, 1e-2, 6.0), _row("lamb", 64, 1, 1e-2, 7.0),
          _row("lamb", 64, 0, 2e-2, 5.0), _row("lamb", 64, 1, 2e-2, float("nan")),
          _row("adamw", 64, 0, 1e-3, 8.0)]
  table = report.summarize(rows)
  assert [(r["optimizer"], r["batch_size"]) for r in table] == [("adamw", 64), ("lamb", 64)]
  lamb = table[1]
  assert lamb["learning_rate"] == 2e-2 and lamb["lrs_tried"] == 2
  assert (lamb["loss_mean"], lamb["loss_min"], lamb["loss_max"]) == (5.0, 5.0, 5.0)
  assert lamb["wall_s"] == 4.0
  rows[2]["eval_mlm_loss"] = 9.0
  lamb = report.summarize(rows)[1]
  assert lamb["learning_rate"] == 1e-2
  assert (lamb["loss_mean"], lamb["loss_min"], lamb["loss_max"]) == (6.5, 6.0, 7.0)


def test_relative_to_smallest_batch():
  table = report.summarize([_row("lamb", 64, 0, 1e-2, 4.0), _row("lamb", 16, 0, 1e-2, 5.0),
                             _row("lamb", 256, 0, 1e-2, 6.0), _row("lars", 32, 0, 1e-1, 8.0),
                             _row("lars", 512, 0, 1e-1, 8.0), _row("lars", 16, 0, 1e-1, None)])
  assert report.relative_to_smallest_batch(table) == {
      "lamb": {16: 1.0, 64: 0.8, 256: 1.2}, "lars": {32: 1.0, 512: 1.0}}
  # unigram 7.0: lamb learned 2.0 beyond it at B=16, 3.0 at 64, 1.0 at 256.
  kept = report.gain_kept([r for r in table if r["optimizer"] == "lamb"], {"loss": 7.0})
  assert kept == {"lamb": {16: 1.0, 64: 1.5, 256: 0.5}}
  # lars sits exactly at an 8.0 baseline at its smallest batch: no gain to keep, so NaN.
  kept = report.gain_kept(table, {"loss": 8.0})["lars"]
  assert math.isnan(kept[32]) and math.isnan(kept[512])


def test_csv_and_plot(tmp_path):
  table = report.summarize([_row("lamb", b, s, 1e-2, 6.0 + s) for b in (8, 16) for s in (0, 1)])
  report.write_csv(table, tmp_path / "r.csv")
  report.plot(table, tmp_path / "r.png")
  assert (tmp_path / "r.csv").read_text().count("\n") == 3
  md = report.markdown_table(table).splitlines()
  assert len(md) == 4
  assert md[2].startswith("| lamb | 8 | 1 | 0.01 | 2 (0) | 6.500 (6.000–7.000) | 1.000")
  md = report.markdown_table(table, {"loss": 7.0, "accuracy": 0.05}).splitlines()
  assert md[3].startswith("| lamb | 16 | 1 | 0.01 | 2 (0) | 6.500 (6.000–7.000) | 1.000 | 100% |")
  assert md[4].startswith("| *unigram baseline* | | | | | 7.000 |")
  assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # a whole study: trainer runs in subprocesses, twice
def test_quick_study_end_to_end_and_skips_finished_cells(tmp_path):
  cmd = [sys.executable, str(ROOT / "scripts/batch_scaling_study.py"),
         f"--config={ROOT / 'configs/scaling_tiny.py'}", f"--workdir={tmp_path}", "--quick"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one device, as in the study
  subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True, timeout=300)
  rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
  assert len(rows) == 4 and all(r["eval_mlm_loss"] > 0 for r in rows)
  assert (tmp_path / "results.csv").exists()
  assert (tmp_path / "batch_scaling.png").read_bytes()[:4] == b"\x89PNG"
  baseline = scaling.read_baseline(str(tmp_path))
  assert 0 < baseline["loss"] < math.log(8192) and "unigram baseline" in (
      tmp_path / "results.md").read_text()
  out = subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert "4 cells, 4 already done." in out.stdout
  assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 4


def test_every_cell_builds_its_optimizer():
  config = _study()
  from lamb_optax import recipes  # pylint: disable=g-import-not-at-top
  assert set(config.study.optimizers) <= set(recipes.OPTIMIZERS)
  for cell in scaling.plan_cells(config):
    c = config_lib.lock(scaling.cell_config(config.base, cell))
    config_lib.check_schedule(c)
    recipes.build_optimizer(c, stacked_axes={"layers": 1})


@pytest.mark.slow  # a study of one diverging cell: a compile and a short run
def test_a_diverged_cell_is_a_result_not_a_crash(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  config = _study()
  scaling.apply_quick(config)
  config.study.optimizers, config.study.batch_sizes = ("adamw",), (8,)
  config.study.base_learning_rates.adamw = 1e9
  config.study.devices = config.base.mesh.data = jax.device_count()
  config.base.max_nonfinite_steps = 1
  lines = []
  table = scaling.run_study(config, str(tmp_path), log=lines.append)
  (row,) = scaling.read_results(str(tmp_path / "results.jsonl"))
  assert "non-finite" in row["diverged"] and row["eval_mlm_loss"] is None
  assert table[0]["diverged"] == 1 and table[0]["loss_mean"] != table[0]["loss_mean"]  # NaN
  assert any("diverged" in line for line in lines)
  assert (tmp_path / "results.csv").exists()  # the study went on to write its outputs


def test_unigram_baseline_by_hand():
  def example(ids, weights):
    return {"masked_lm_ids": np.array(ids), "masked_lm_weights": np.array(weights, np.float32)}
  train = [example([1, 1, 0], [1, 1, 0]), example([2, 3, 3], [1, 0, 0])]  # labels 1, 1, 2
  held_out = [example([1, 2], [1, 1]), example([3, 3], [1, 1])]
  got = scaling.unigram_baseline(train, held_out, eval_examples=1, vocab_size=4)
  # add-one smoothing over 4 tokens: p(1) = 3/7, p(2) = 2/7; the eval set is held_out[0] only.
  assert got["loss"] == pytest.approx(-(math.log(3 / 7) + math.log(2 / 7)) / 2, rel=1e-12)
  assert got["accuracy"] == 0.5
  unsized = scaling.unigram_baseline(train, held_out, eval_examples=1, vocab_size=0)  # ids 0..2
  assert unsized["loss"] == pytest.approx(-(math.log(3 / 6) + math.log(2 / 6)) / 2, rel=1e-12)


# --- The image study (configs/scaling_digits.py): variants and per-optimizer overrides. ---


def test_digits_study_plans_every_model_optimizer_batch_and_seed():
  config = _study("scaling_digits")
  s = config.study
  cells = scaling.plan_cells(config)
  assert len(cells) == 2 * len(s.optimizers) * len(s.batch_sizes) * len(s.seeds)
  assert {(c.variant, c.optimizer, c.batch_size, c.seed) for c in cells} == {
      (v, o, b, seed) for v in ("resnet", "vit") for o in s.optimizers for b in s.batch_sizes
      for seed in s.seeds}
  assert {"sgd", "lars", "lamb", "adamw"} == set(s.optimizers)
  for c in cells:  # the square-root rule from each model's own base rate
    base = s.base_learning_rates[c.variant][c.optimizer]
    assert c.learning_rate == pytest.approx(base * math.sqrt(c.batch_size / s.base_batch_size))
    assert c.num_train_steps == s.examples_budget // c.batch_size
    assert c.name.startswith(f"{c.variant}_{c.optimizer}_b")
  assert len({c.name for c in cells}) == len(cells)
  assert max(s.batch_sizes) <= 1257  # the digits' train split


def test_digits_cell_configs_are_valid_image_trainer_configs():
  from lamb_optax import recipes  # pylint: disable=g-import-not-at-top
  from lamb_optax.tasks import image_classification  # pylint: disable=g-import-not-at-top
  config = _study("scaling_digits")
  base = config.base.to_dict()
  for cell in scaling.plan_cells(config):
    c = config_lib.lock(scaling.cell_config(config.base, cell, config.study))
    config_lib.check_schedule(c)
    plan_lib.plan_batches(c, data_parallel_devices=1, process_count=1)
    assert c.task == "image_classification" and c.image.model == cell.variant
    assert c.image.eval_split == "test"
    if cell.variant == "resnet":  # BatchNorm groups divide every micro-batch
      assert c.micro_batch_size % c.image.batch_norm_group_size == 0
    info = image_classification.dataset_info(c)
    model = image_classification.model_config(c, info)  # the model builds from the merged config
    assert type(model).__name__ == {"resnet": "ResNetConfig", "vit": "ViTConfig"}[cell.variant]
    kwargs = c.optimizer.kwargs
    if cell.optimizer in ("lamb", "lars"):
      assert tuple(kwargs.weight_norm_bounds) == (1.0, 100.0)
    else:
      assert "weight_norm_bounds" not in kwargs
    assert kwargs.weight_decay == (5e-4 if cell.optimizer == "sgd" else 0.01)
    recipes.build_optimizer(c)  # every kwarg is one the optimizer takes
  assert config.base.to_dict() == base  # overrides never leak into the base


def test_per_batch_study_takes_each_batchs_rate_from_its_table():
  config = _study("scaling_digits_vit")
  s = config.study
  cells = scaling.plan_cells(config)
  assert len(cells) == len(s.optimizers) * len(s.batch_sizes) * len(s.seeds)
  assert {"lamb", "lars", "adamw"} <= set(s.optimizers) and {c.variant for c in cells} == {"vit"}
  assert min(c.num_train_steps for c in cells) >= 150  # the largest batch still trains
  for c in cells:
    assert c.learning_rate == dict(s.learning_rates.vit[c.optimizer])[c.batch_size]
    assert c.num_train_steps == s.examples_budget // c.batch_size
  s.batch_sizes = (*s.batch_sizes, 2 * max(s.batch_sizes))
  with pytest.raises(ValueError, match=r"learning_rates.vit.lamb has no rate for batch"):
    scaling.plan_cells(config)
  s.lr_rule = "best"
  with pytest.raises(ValueError, match="'sqrt', 'sweep' or 'table'"):
    scaling.plan_cells(config)


def test_a_variant_cell_needs_its_study():
  config = _study("scaling_digits")
  cell = scaling.plan_cells(config)[0]
  with pytest.raises(ValueError, match="variant 'resnet'"):
    scaling.cell_config(config.base, cell)
  del config.study.base_learning_rates["vit"]
  with pytest.raises(ValueError, match="no entry for variant 'vit'"):
    scaling.plan_cells(config)


def test_merge_sets_leaves_and_keeps_siblings():
  import ml_collections  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict(dict(a=dict(b=1, c=2), d=3))
  scaling.merge(c, dict(a=dict(b=5, e=(1, 2)), f="x"))
  assert c.to_dict() == dict(a=dict(b=5, c=2, e=(1, 2)), d=3, f="x")


def _image_row(opt, batch, seed, lr, loss, acc=0.1, **fields):
  """A row as an image task writes it: its own eval_loss/eval_accuracy, no MLM names."""
  row = _row(opt, batch, seed, lr, loss, acc)
  row["eval_loss"], row["eval_accuracy"] = row.pop("eval_mlm_loss"), row.pop("eval_mlm_accuracy")
  return dict(row, **fields)


def test_result_row_names_the_compared_metrics_by_task():
  cell = scaling.Cell("lamb", 16, 0, 1e-2, 4, 1, 16, 16, 1)
  bert = scaling.result_row(cell, {"mlm_loss": 6.0, "mlm_accuracy": 0.1, "loss": 6.7}, 1.0)
  assert (bert["eval_mlm_loss"], bert["eval_mlm_accuracy"]) == (6.0, 0.1)
  image = scaling.result_row(cell, {"loss": 0.5, "accuracy": 0.9}, 1.0,
                             task="image_classification")
  assert (image["eval_loss"], image["eval_accuracy"]) == (0.5, 0.9)
  assert "eval_mlm_loss" not in image
  diverged = scaling.result_row(cell, {}, 1.0, "non-finite", task="image_classification")
  assert diverged["eval_loss"] is None and report.row_loss(diverged) is None
  assert [report.row_loss(r) for r in (bert, image)] == [6.0, 0.5]
  assert [report.row_accuracy(r) for r in (bert, image)] == [0.1, 0.9]


def test_variant_rows_summarise_per_model_and_optimizer(tmp_path):
  rows = [_image_row("lamb", b, seed, 1e-2, 0.1 * (b // 16) + seed, acc=0.9 - 0.01 * seed,
                     variant=v) for v in ("resnet", "vit") for b in (16, 64) for seed in (0, 1)]
  rows.append(_row("lamb", 16, 0, 1e-2, 9.0))  # a variant-less row is its own line
  table = report.summarize(rows)
  assert [(r["optimizer"], r["batch_size"]) for r in table] == [
      ("lamb", 16), ("resnet/lamb", 16), ("resnet/lamb", 64), ("vit/lamb", 16), ("vit/lamb", 64)]
  assert table[2]["loss_mean"] == pytest.approx(0.9)  # (0.4 + 1.4) / 2
  assert (table[2]["acc_min"], table[2]["acc_max"]) == pytest.approx((0.89, 0.9))
  md = report.markdown_table(table, eval_name="test").splitlines()
  assert "final test loss" in md[0] and "test accuracy (min–max)" in md[0]
  assert "unigram" not in md[0]
  assert md[4] == ("| resnet/lamb | 64 | 1 | 0.01 | 2 (0) | 0.900 (0.400–1.400) | 1.500 "
                   "| 0.895 (0.890–0.900) |")
  report.plot(table, tmp_path / "p.png", eval_name="test", accuracy=True)
  assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # a whole study: two image trainer runs in a subprocess
def test_quick_digits_study_end_to_end(tmp_path):
  cmd = [sys.executable, str(ROOT / "scripts/batch_scaling_study.py"),
         f"--config={ROOT / 'configs/scaling_digits.py'}", f"--workdir={tmp_path}", "--quick"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one device, as in the study
  subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True, timeout=600)
  rows = scaling.read_results(str(tmp_path / "results.jsonl"))
  # quick: both models, LARS, B=16, 2 steps, seed 0
  assert sorted((r["variant"], r["optimizer"], r["batch_size"]) for r in rows) == [
      ("resnet", "lars", 16), ("vit", "lars", 16)]
  for r in rows:
    assert r["num_train_steps"] == 2 and not r["diverged"]
    assert 0 <= r["eval_accuracy"] <= 1 and r["eval_loss"] > 0  # under the image task's names
    assert "eval_mlm_loss" not in r and "eval_mlm_accuracy" not in r
    assert set(r["eval_metrics"]) == {"loss", "accuracy", "top5_accuracy"}
  assert scaling.read_baseline(str(tmp_path)) is None  # no unigram baseline for images
  assert "| resnet/lars | 16 | 2 |" in (tmp_path / "results.md").read_text()
  assert (tmp_path / "batch_scaling.png").read_bytes()[:4] == b"\x89PNG"
