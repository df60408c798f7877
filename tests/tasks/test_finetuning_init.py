"""init_from for fine-tuning: a lamb_optax pretraining workdir, a Hugging Face dir, neither."""

import json
import shutil

import jax
import numpy as np
import pytest

from lamb_optax import sharding
from lamb_optax.data import corpus
from lamb_optax.tasks import docs_classification
from lamb_optax.train import checkpoint as checkpoint_lib
from lamb_optax.train import config as config_lib
from lamb_optax.train import trainer as trainer_lib
from lamb_optax.train import workdir as workdir_lib

TINY = dict(hidden_size=32, num_heads=2, intermediate_size=64, num_layers=2)


def _tiny(config):
  for key, value in TINY.items():
    config.model.overrides[key] = value
  config.mesh.data = 1
  return config


@pytest.fixture(scope="module")
def pretraining_workdir(tmp_path_factory):
  """A pretraining workdir as the trainer leaves it: config.json + one checkpoint."""
  workdir = str(tmp_path_factory.mktemp("pretraining"))
  config = _tiny(config_lib.load("configs/tiny.py"))
  config.micro_batch_size = 64
  trainer = trainer_lib.build(config, None, devices=jax.devices()[:1])
  with jax.set_mesh(trainer.mesh):
    state = trainer.fresh_state()
  checkpointer = checkpoint_lib.Checkpointer(workdir, async_save=False)
  checkpointer.save(7, state)
  checkpointer.close()
  workdir_lib.save_config(trainer.config, workdir)
  return workdir, jax.device_get(state.params)


def _finetune_task(init_from, **finetune):
  config = _tiny(config_lib.load("configs/docs_classification.py"))
  config.init_from = init_from
  for key, value in finetune.items():
    config.finetune[key] = value
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  return docs_classification.build(config, mesh, workdir=None)


def _assert_same(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_encoder_from_a_pretraining_workdir(pretraining_workdir):
  workdir, source_params = pretraining_workdir
  task = _finetune_task(workdir)
  assert task.encoder.kind == "workdir" and task.encoder.bert_config.hidden_size == 32
  params = task.params_from(workdir, checkpoint_lib.restore_params)
  _assert_same(params["bert"], source_params["bert"])  # encoder restored exactly
  assert set(params) == {"bert", "classifier"}  # MLM and NSP heads dropped
  assert params["classifier"]["kernel"].shape == (32, 4)


def test_encoder_from_a_hugging_face_directory(tmp_path):
  pytest.importorskip("safetensors")
  from flax import nnx

  from lamb_optax.models import hf
  from lamb_optax.models.bert import BertForPreTraining
  from lamb_optax.models.bert_config import BertConfig
  model = BertForPreTraining(BertConfig(vocab_size=8192, max_position_embeddings=512, **TINY),
                             rngs=nnx.Rngs(3))
  hf.save_hf(model, tmp_path)
  shutil.copy(corpus.EMBEDDED_VOCAB_FILE, tmp_path / "vocab.txt")
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
  task = _finetune_task(str(tmp_path))
  assert task.encoder.kind == "huggingface"
  params = task.params_from(str(tmp_path), checkpoint_lib.restore_params)
  _assert_same(params["bert"], nnx.to_pure_dict(nnx.state(model, nnx.Param))["bert"])


def test_only_the_heads_a_task_uses_are_warned_about(caplog):
  """A bare BertModel checkpoint lacks the MLM and NSP heads, which fine-tuning drops anyway."""
  import logging  # pylint: disable=g-import-not-at-top

  from lamb_optax.models import hf  # pylint: disable=g-import-not-at-top
  with caplog.at_level(logging.WARNING):
    hf._check_tensors({}, [], {}, False, (), heads=("pooler",))  # pylint: disable=protected-access
  assert "pooler" in caplog.text and "head" not in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    hf._check_tensors({}, [], {}, False, ())  # pylint: disable=protected-access
  assert "MLM head" in caplog.text and "NSP head" in caplog.text


def test_init_from_that_is_neither_says_what_was_looked_for(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(ValueError, match=r"config.json \+ checkpoints/.*model.safetensors"):
    _finetune_task(str(tmp_path))
  with pytest.raises(ValueError, match="no such directory"):
    _finetune_task(str(tmp_path / "missing"))


def test_random_encoder_uses_the_embedded_vocabulary():
  task = _finetune_task("")
  assert task.encoder.kind == "random" and task.encoder.bert_config.vocab_size == 8192
