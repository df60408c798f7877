"""A fine-tuning run keeps what it needs from init_from (lamb_optax/train/sources.py): it resumes
and is scored with its source moved away, accepts the source at a new place, and refuses a source
that changed. In-process runs of a 1-layer BERT on the 8 fake devices of the test process.
"""

import json
import os
import shutil

import jax
import pytest

import trainer_runs
from lamb_optax.tasks import docs_classification
from lamb_optax.tasks import finetuning
from lamb_optax.train import checkpoint as checkpoint_lib
from lamb_optax.train import config as config_lib
from lamb_optax.train import loop
from lamb_optax.train import sources
from lamb_optax.train import trainer as trainer_lib
from lamb_optax.train import workdir as workdir_lib

TINY = dict(hidden_size=32, num_heads=2, intermediate_size=64, num_layers=1)


def _pretraining_source(directory, seed=0):
  """A pretraining workdir as the trainer leaves it: config.json and one checkpoint."""
  config = config_lib.load(str(trainer_runs.ROOT / "configs" / "tiny.py"))
  for key, value in TINY.items():
    config.model.overrides[key] = value
  config.mesh.data, config.micro_batch_size, config.seed = 1, 64, seed
  trainer = trainer_lib.build(config, None, devices=jax.devices()[:1])
  with jax.set_mesh(trainer.mesh):
    state = trainer.fresh_state()
  checkpointer = checkpoint_lib.Checkpointer(directory, async_save=False)
  checkpointer.save(7, state)
  checkpointer.close()
  workdir_lib.save_config(trainer.config, directory)


def _finetune_config(init_from):
  config = config_lib.load(str(trainer_runs.ROOT / "configs" / "docs_classification.py"))
  for key, value in {"finetune.max_seq_length": 32, "finetune.max_train_examples": 128,
                     "finetune.max_eval_examples": 32, "num_train_steps": 4, "warmup_steps": 1,
                     "global_batch_size": 16, "micro_batch_size": 2, "eval_batch_size": 16,
                     "log_every_steps": 1, "eval_every_steps": 4, "checkpoint_every_steps": 2,
                     "init_from": init_from}.items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def _cut_back_to_step_2(workdir):
  """What a run killed after its step-2 checkpoint leaves."""
  for step in os.listdir(os.path.join(workdir, "checkpoints")):
    if step.isdigit() and int(step) > 2:
      shutil.rmtree(os.path.join(workdir, "checkpoints", step))


def _interrupted_copy(reference, workdir):
  """A copy of the finished ``reference`` run as if it had been killed after step 2."""
  shutil.copytree(reference, workdir, ignore=shutil.ignore_patterns("run.lock"))
  _cut_back_to_step_2(workdir)
  return workdir


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
  """A source, and an uninterrupted fine-tuning run from it."""
  root = tmp_path_factory.mktemp("sources")
  source = str(root / "pretrained")
  _pretraining_source(source)
  workdir = str(root / "finetuned")
  loop.train_and_evaluate(_finetune_config(source), workdir)
  return source, workdir


@pytest.mark.slow  # a trainer run in this process, ~25 s on 2 cores
def test_the_run_records_what_it_needs_from_its_source(finetuned):
  source, workdir = finetuned
  record_dir = os.path.join(workdir, finetuning.RECORD_DIR)
  with open(os.path.join(record_dir, finetuning.RECORD_FILE)) as f:
    entry = json.load(f)
  assert entry["path"] == source and entry["fingerprint"]["weights"].startswith("step 7, ")
  assert entry["encoder"]["bert_config"]["hidden_size"] == 32
  assert os.path.isfile(os.path.join(record_dir, finetuning.RECORD_VOCAB))


@pytest.mark.slow  # a trainer run in this process, ~25 s on 2 cores
def test_resume_and_scoring_do_not_need_the_source(finetuned, tmp_path):
  source, reference = finetuned
  workdir = _interrupted_copy(reference, str(tmp_path / "run"))
  moved = str(tmp_path / "moved")
  shutil.move(source, moved)
  try:
    loop.train_and_evaluate(_finetune_config(source), workdir)  # init_from is gone
    assert trainer_runs.losses(workdir) == trainer_runs.losses(reference)  # same bits
    _, task, _ = finetuning.restore_run(workdir, docs_classification.build,
                                        checkpoint_lib.restore_params)
    assert task.encoder.bert_config.hidden_size == 32
    # The source at its new place is the same source: accepted.
    _cut_back_to_step_2(workdir)
    loop.train_and_evaluate(_finetune_config(moved), workdir)
    assert trainer_runs.losses(workdir) == trainer_runs.losses(reference)
  finally:
    shutil.move(moved, source)


@pytest.mark.slow  # a trainer run in this process, ~25 s on 2 cores
def test_a_changed_source_is_refused_on_resume(finetuned, tmp_path):
  source, reference = finetuned
  workdir = _interrupted_copy(reference, str(tmp_path / "run"))
  aside = str(tmp_path / "aside")
  shutil.move(source, aside)
  try:
    _pretraining_source(source, seed=1)  # other weights where the source was
    config = _finetune_config(source)
    with pytest.raises(workdir_lib.WorkdirError, match=r"changed since this run started from "
                       r"it.*weights: step 7, \w+ -> step 7, \w+"):
      loop.train_and_evaluate(config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]  # nothing written
    config.allow_config_change = True  # the documented way to resume anyway
    sources.check(config, workdir)
  finally:
    shutil.rmtree(source, ignore_errors=True)
    shutil.move(aside, source)


def test_a_hugging_face_source_is_fingerprinted_by_its_weight_files(tmp_path):
  """No run needed: the record of a Hugging Face source, the encoder rebuilt from it, and a
  changed weight file refused."""
  from lamb_optax.models.bert_config import BertConfig  # pylint: disable=g-import-not-at-top
  source = tmp_path / "hf"
  source.mkdir()
  (source / "model.safetensors").write_bytes(b"weights")
  (source / "config.json").write_text("{}")
  (source / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
  encoder = finetuning.EncoderSource("huggingface", str(source),
                                     BertConfig(hidden_size=32, num_heads=2),
                                     str(source / "vocab.txt"), False)
  task = type("Task", (), {"encoder": encoder})()
  workdir = str(tmp_path / "run")
  config = _finetune_config(str(source))
  sources.record(task, config, workdir)
  rebuilt = finetuning.resolve_encoder(
      _finetune_config(os.path.join(workdir, finetuning.RECORD_DIR)))
  assert (rebuilt.kind, rebuilt.path, rebuilt.do_lower_case) == ("huggingface", str(source), False)
  assert rebuilt.bert_config.hidden_size == 32
  assert open(rebuilt.vocab_file).read() == "[PAD]\n[UNK]\nhello\n"
  sources.check(config, workdir)  # unchanged
  (source / "model.safetensors").write_bytes(b"other weights")
  with pytest.raises(workdir_lib.WorkdirError, match="changed since.*weights"):
    sources.check(config, workdir)
