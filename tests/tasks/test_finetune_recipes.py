"""The fine-tuning recipes: schema-valid, Devlin et al.'s numbers, AdamW or LAMB."""

import importlib.util
import json
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
                                       ("docs_classification", ()), ("text_classification", ())])
@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_recipes_are_valid_with_either_optimizer(name, args, optimizer, capsys):
  module, config = load(name, *args)
  assert all(s in module.__doc__ for s in ("Hardware", "Published result", "python -m"))
  config.optimizer.name = optimizer  # as --config.optimizer.name=lamb: the kwargs as written
  train_config.lock(config)
  train_config.check_schedule(config)
  recipes.build_optimizer(config)
  if optimizer == "lamb" and "max_grad_norm" in config.optimizer.kwargs:  # AdamW's: mapped
    assert "max_grad_norm=1.0 is an argument of adamw, nvlamb, not of lamb: the gradient is " \
        "clipped" in capsys.readouterr().out
  assert config.warmup_steps == round(0.1 * config.num_train_steps)


def test_switching_to_lamb_clips_as_the_recipe_did():
  """``max_grad_norm`` on LAMB is the clip before it: two steps, a huge gradient then a small
  one, give the updates of unclipped LAMB fed the huge one scaled to norm 1 (the moments see the
  clipped gradient), not those of LAMB fed the huge one."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  _, config = load("glue", "mrpc")
  config.optimizer.name = "lamb"
  tx, _ = recipes.build_optimizer(config)
  config.optimizer.kwargs.max_grad_norm = None
  unclipped, _ = recipes.build_optimizer(config)
  params = {"dense": {"kernel": jnp.ones((2, 2))}}
  huge = jnp.array([[300.0, -400.0], [0.0, 0.0]])
  small = jnp.array([[0.1, 0.2], [0.3, -0.1]])

  def second_update(opt, grads):
    state = opt.init(params)
    for g in grads:
      update, state = opt.update({"dense": {"kernel": g}}, state, params)
    return update["dense"]["kernel"]

  clipped = second_update(tx, [huge, small])
  assert jnp.allclose(clipped, second_update(unclipped, [huge / 500.0, small]), rtol=1e-5)
  assert not jnp.allclose(clipped, second_update(unclipped, [huge, small]), rtol=1e-2)


def test_none_and_switches_parse_from_the_command_line():
  config = train_config.load(str(CONFIGS / "text_classification.py"), [
      "--config.optimizer.name=lamb", "--config.optimizer.kwargs.max_grad_norm=None",
      "--config.finetune.num_train_epochs=2"])
  assert config.optimizer.kwargs.max_grad_norm is None and config.finetune.num_train_epochs == 2
  assert json.loads(config.to_json())["optimizer"]["kwargs"]["max_grad_norm"] is None
  recipes.build_optimizer(train_config.lock(config))
  config = train_config.load(str(CONFIGS / "glue.py"),
                             ["--config.optimizer.kwargs.max_grad_norm=0.5"])
  assert config.optimizer.kwargs.max_grad_norm == 0.5


def test_a_key_no_optimizer_takes_is_still_an_error():
  _, config = load("glue", "mrpc")
  config.optimizer.name = "lamb"
  config.optimizer.kwargs.max_grad_nrom = 1.0
  with pytest.raises(ValueError, match=r"\['max_grad_nrom'\] are not arguments of lamb"):
    recipes.build_optimizer(config)


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
