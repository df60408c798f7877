"""The fine-tuning recipes: schema-valid, Devlin et al.'s numbers, AdamW or LAMB."""

import importlib.util
import pathlib

import pytest

from lamb_optax import recipes
from lamb_optax.train import config as train_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def load(name, *args):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, module.get_config(*args)


@pytest.mark.parametrize("name,args", [("glue", ("mrpc",)), ("glue", ("MNLI-mismatched",)),
                                       ("glue", ("stsb",)), ("squad", ()),
                                       ("docs_classification", ())])
@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_recipes_are_valid_with_either_optimizer(name, args, optimizer):
  module, config = load(name, *args)
  assert all(s in module.__doc__ for s in ("Hardware", "Published result", "python -m"))
  config.optimizer.name = optimizer
  if optimizer == "lamb":  # AdamW-only arguments
    for key in ("bias_correction", "max_grad_norm"):
      if key in config.optimizer.kwargs:
        del config.optimizer.kwargs[key]
  train_config.lock(config)
  train_config.check_schedule(config)
  recipes.build_optimizer(config)
  assert config.warmup_steps == round(0.1 * config.num_train_steps)


def test_devlin_numbers():
  _, mrpc = load("glue", "mrpc")
  assert (mrpc.global_batch_size, mrpc.learning_rate, mrpc.num_train_steps) == (32, 2e-5, 344)
  _, squad = load("squad")
  assert (squad.finetune.max_seq_length, squad.finetune.doc_stride,
          squad.finetune.max_query_length, squad.finetune.n_best_size,
          squad.finetune.max_answer_length) == (384, 128, 64, 20, 30)
  assert squad.learning_rate == 3e-5 and squad.num_train_steps == 5538  # 2 epochs / 32


def test_unknown_glue_task_lists_the_valid_ones():
  with pytest.raises(ValueError, match="choose one of cola, "):
    load("glue", "squad")
