"""The recipe configs: schema-valid, published numbers, and a working optimizer + schedule."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lamb_optax
from lamb_optax.train import recipes
from lamb_optax.train import config as train_config

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def load(name, arg=None):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, (module.get_config() if arg is None else module.get_config(arg))


RECIPES = [("lamb_paper", str(b)) for b in (512, 1024, 2048, 4096, 8192, 16384, 32768)] + [
    ("bert_large_phase1", None), ("bert_large_phase2", None), ("bert_base_phase1", None),
    ("bert_base_phase2", None), ("nvlamb", "phase1"), ("nvlamb", "phase2"),
    ("adamw_baseline", None), ("tiny", None), ("tiny_32k", None), ("digits_resnet", None),
    ("digits_vit", None)]


@pytest.mark.parametrize("name, arg", RECIPES)
def test_recipe_builds_and_steps(name, arg):
  module, config = load(name, arg)
  assert all(s in module.__doc__ for s in ("Hardware", "Published result", "python -m"))
  train_config.lock(config)  # only keys the trainer reads
  train_config.check_schedule(config)
  tx, lr = recipes.build_optimizer(config, stacked_axes={"layers": 1, "head": 0})
  params = {"layers": {"kernel": jnp.ones((2, 3, 3))}, "head": {"kernel": jnp.ones((3, 2))}}
  updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
  assert all(np.isfinite(u).all() for u in jax.tree.leaves(updates))
  assert float(lr(0)) == 0.0 and float(lr(config.num_train_steps)) == 0.0
  w = config.warmup_steps
  assert float(lr(w - 1)) == pytest.approx(config.learning_rate * (w - 1) / w, rel=1e-5)


def test_paper_configs_follow_the_table():
  for batch, x in zip((512, 1024, 2048, 4096, 8192, 16384, 32768), np.arange(3.0, -0.5, -0.5)):
    _, config = load("lamb_paper", str(batch))
    assert config.learning_rate == pytest.approx(5 / (2 ** x * 1e3))
    assert config.num_train_steps * batch == 1_000_000 * 512
    assert config.warmup_steps == 3125


def test_nvlamb_recipe_numbers():
  _, p1 = load("nvlamb", "phase1")
  _, p2 = load("nvlamb", "phase2")
  assert (p1.global_batch_size, p1.num_train_steps, p1.learning_rate) == (65536, 7038, 6e-3)
  assert (p2.global_batch_size, p2.num_train_steps, p2.learning_rate) == (32768, 1563, 4e-3)
  assert p1.warmup_steps == round(0.2843 * 7038) and p2.warmup_steps == round(0.128 * 1563)
  assert p1.decay_power == p2.decay_power == 0.5
  assert p1.optimizer.kwargs.max_grad_norm == 1.0



def test_two_phase_configs():
  """Phase 2 starts from phase 1 (init_from) at seq 512; the paper's step totals."""
  _, l1 = load("bert_large_phase1")
  _, l2 = load("bert_large_phase2")
  assert l1.num_train_steps + l2.num_train_steps == 8599  # the 76-minute run, 64k/32k
  assert (l1.global_batch_size, l2.global_batch_size) == (65536, 32768)
  _, b1 = load("bert_base_phase1")
  _, b2 = load("bert_base_phase2")
  assert b1.num_train_steps + b2.num_train_steps == 15625  # the paper's 32k row
  for p1, p2 in ((l1, l2), (b1, b2)):
    assert (p1.data.max_seq_length, p1.data.max_predictions_per_seq) == (128, 20)
    assert (p2.data.max_seq_length, p2.data.max_predictions_per_seq) == (512, 80)
    assert not p1.init_from and p2.init_from
  for c in (l1, l2, b1, b2):
    assert c.global_batch_size % c.micro_batch_size == 0


def test_adamw_baseline_differs_from_lamb_512_in_the_optimizer():
  _, adamw = load("adamw_baseline")
  _, lamb = load("lamb_paper", "512")
  assert adamw.optimizer.name == "adamw" and adamw.global_batch_size == lamb.global_batch_size
  tx, _ = recipes.build_optimizer(adamw)
  with pytest.raises(ValueError, match="ScaleByTrustRatioState"):
    lamb_optax.trust_ratios(tx.init({"w": jnp.ones(2)}))


@pytest.mark.parametrize("name, arg", [("lamb_paper", "1000"), ("nvlamb", "phase3")])
def test_bad_arguments(name, arg):
  with pytest.raises(ValueError, match="choose|pass one"):
    load(name, arg)


def test_recipes_reject_bad_schedules():
  _, config = load("nvlamb", "phase2")
  config.warmup_steps = config.num_train_steps + 1
  with pytest.raises(ValueError, match="longer than the run"):
    recipes.build_optimizer(config)
  _, config = load("nvlamb", "phase2")
  config.decay_power = 0.0
  with pytest.raises(ValueError, match="power"):
    recipes.build_optimizer(config)
  config.optimizer.name = "adagrad"
  with pytest.raises(ValueError, match="Unknown optimizer"):
    recipes.build_optimizer(config)
