"""GLUE and SQuAD through the trainer and their predict commands, on tiny hand-made files."""

import json

import numpy as np
import pytest

from lamb_optax.data import python_docs_documents
from lamb_optax.tasks import glue
from lamb_optax.tasks import squad
from lamb_optax.train import checkpoint
from lamb_optax.train import config as config_lib
from lamb_optax.train import loop

TINY = dict(hidden_size=32, num_heads=2, intermediate_size=64, num_layers=1)


def _small(config, data_dir):
  for key, value in TINY.items():
    config.model.overrides[key] = value
  config.finetune.data_dir = str(data_dir)
  config.num_train_steps, config.warmup_steps = 4, 1
  config.global_batch_size, config.micro_batch_size, config.eval_batch_size = 16, 2, 16
  config.eval_every_steps = config.checkpoint_every_steps = config.log_every_steps = 4
  config.async_checkpointing = False
  return config


def _sentences(n):
  out = []
  for _, sentences in python_docs_documents(10):
    out += sentences
  return out[:n]


@pytest.mark.slow
def test_stsb_regression_trains_and_predicts(tmp_path):
  rng = np.random.default_rng(0)
  s = _sentences(80)
  header = "\t".join(["index", "genre", "filename", "year", "old_index", "source1", "source2",
                       "sentence1", "sentence2", "score"]) + "\n"
  for name, rows in (("train.tsv", range(0, 40)), ("dev.tsv", range(40, 60))):
    lines = [f"{i}\tg\tf\ty\to\ts\ts\t{s[i]}\t{s[i + 20]}\t{rng.uniform(0, 5):.3f}\n"
             for i in rows]
    (tmp_path / name).write_text(header + "".join(lines))
  config = _small(config_lib.load("configs/glue.py:stsb"), tmp_path)
  metrics = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert set(metrics) == {"loss", "pearson"} and -1 <= metrics["pearson"] <= 1
  scored = glue.predict(str(tmp_path / "run"), checkpoint.restore_params)
  # (Not compared with the trainer's Pearson: after 4 steps the predictions are nearly constant,
  # where float32 moment sums lose the variance; predict computes it in float64.)
  assert -1 <= scored["pearson"] <= 1 and -1 <= scored["spearman"] <= 1
  assert (tmp_path / "run" / "glue_stsb_dev_predictions.tsv").read_text().count("\n") == 21


@pytest.mark.slow
def test_squad_trains_and_writes_official_predictions(tmp_path):
  contexts = [" ".join(sentences[:8]) for _, sentences in python_docs_documents(6)]
  data = []
  for c, context in enumerate(contexts):
    word = context.split()[5]
    qas = [{"id": f"q{c}-{k}", "question": f"Which word is number {k}?",
            "answers": [{"text": word, "answer_start": context.index(word)}]} for k in range(4)]
    data.append({"title": str(c), "paragraphs": [{"context": context, "qas": qas}]})
  for name in ("train-v1.1.json", "dev-v1.1.json"):
    (tmp_path / name).write_text(json.dumps({"version": "1.1", "data": data}))
  config = _small(config_lib.load("configs/squad.py"), tmp_path)
  config.finetune.max_seq_length, config.finetune.doc_stride = 64, 32
  metrics = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert set(metrics) == {"loss", "span_accuracy"}
  scores = squad.predict(str(tmp_path / "run"), checkpoint.restore_params)
  predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())
  assert set(predictions) == {qa["id"] for a in data for p in a["paragraphs"] for qa in p["qas"]}
  assert 0 <= scores["exact_match"] <= scores["f1"] <= 100
