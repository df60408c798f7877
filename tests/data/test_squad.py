"""SQuAD v1.1: the official scorer, Google's feature conversion round trip, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from lamb_optax.data import corpus
from lamb_optax.data import load_wordpiece
from lamb_optax.data import python_docs_documents
from lamb_optax.data import squad
from lamb_optax.data import squad_metrics
from reference import squad_v1_eval as official

CASES = [  # (prediction, ground truths)
    ("The Eiffel Tower", ["Eiffel Tower"]),  # article
    ("an apple", ["the apple", "apple pie"]),  # several ground truths
    ("Paris, France.", ["paris france"]),  # punctuation and case
    ("  New \t York\n City ", ["New York City"]),  # whitespace
    ("", ["something"]),  # empty prediction
    ("the", ["a"]),  # only articles: both normalise to ""
    ("theatre a", ["the theatre"]),  # "the" inside a word stays
    ("1,000 years", ["1000 years ago"]),
    ("Dvořák's symphony", ["Dvořák symphony"]),  # non-ASCII
    ("cat cat dog", ["cat dog dog"]),  # repeated tokens (multiset overlap)
]


@pytest.mark.parametrize("prediction,truths", CASES)
def test_scorer_matches_the_official_definitions(prediction, truths):
  assert squad_metrics.normalize_answer(prediction) == official.normalize_answer(prediction)
  for metric, reference in ((squad_metrics.exact_match_score, official.exact_match_score),
                            (squad_metrics.f1_score, official.f1_score)):
    assert squad_metrics.best_over_ground_truths(metric, prediction, truths) == pytest.approx(
        float(official.metric_max_over_ground_truths(reference, prediction, truths)))


def _dataset():
  qas = [{"id": str(i), "answers": [{"text": t} for t in truths]}
         for i, (_, truths) in enumerate(CASES)]
  return [{"paragraphs": [{"qas": qas}]}]


def test_evaluate_with_a_missing_prediction_matches_official(tmp_path):
  predictions = {str(i): p for i, (p, _) in enumerate(CASES) if i != 3}  # 3 unanswered
  expected = official.evaluate(_dataset(), predictions)
  assert squad_metrics.evaluate(_dataset(), predictions) == pytest.approx(expected)
  (tmp_path / "data.json").write_text(json.dumps({"version": "1.1", "data": _dataset()}))
  (tmp_path / "pred.json").write_text(json.dumps(predictions))
  out = subprocess.run([sys.executable, "scripts/squad_eval.py", str(tmp_path / "data.json"),
                        str(tmp_path / "pred.json")], capture_output=True, text=True, check=True,
                       env={"PYTHONPATH": "."})
  assert json.loads(out.stdout) == pytest.approx(expected)
  assert "Unanswered question 3" in out.stderr


@pytest.fixture(scope="module")
def tokenizer():
  return load_wordpiece(corpus.EMBEDDED_VOCAB_FILE)


def _contexts():
  """Real text: paragraphs of the embedded corpus, plus whitespace runs and non-ASCII."""
  contexts = [" ".join(sentences[:12]) for _, sentences in python_docs_documents(6)]
  contexts.append("Antonín  Dvořák\twrote the\n\n“New World” Symphony in 1893 — in "
                  "Spillville, "
                  "Iowa (naïve café), not in Praha.  ")
  return contexts


def _squad_json(contexts, rng):
  paragraphs = []
  for c, context in enumerate(contexts):
    words, char_to_word = squad.split_words(context)
    qas = []
    for q in range(12):
      n = int(rng.integers(1, 6))
      first = {0: 0, 1: len(words) - n}.get(q, int(rng.integers(0, len(words) - n + 1)))
      start = char_to_word.index(first)  # the first word's first character
      end = len(char_to_word) - 1 - char_to_word[::-1].index(first + n - 1)
      while end > start and context[end].isspace():
        end -= 1
      text = context[start:end + 1]
      qas.append({"id": f"{c}-{q}", "question": "What does " + words[0] + " do?",
                  "answers": [{"text": text, "answer_start": start}]})
    paragraphs.append({"context": context, "qas": qas})
  return {"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}


def test_feature_round_trip_on_real_text(tokenizer):
  dataset = _squad_json(_contexts(), np.random.default_rng(0))
  stats = squad.ReadStats()
  examples = squad.examples_from_json(dataset, is_training=True, stats=stats)
  assert stats.mismatched_answers == 0 and len(examples) == stats.questions
  # Short windows and a small stride: many windows, answers at window edges, overlaps.
  features = squad.convert(examples, tokenizer, max_seq_length=48, doc_stride=16,
                           max_query_length=8, is_training=True)
  holding = 0
  for f in features:
    e = examples[f.example_index]
    assert len(f.input_ids) <= 48 and f.tokens[0] == "[CLS]" and f.tokens[-1] == "[SEP]"
    if f.start_position == 0:
      continue
    holding += 1
    text = " ".join(f.tokens[f.start_position:f.end_position + 1]).replace(" ##", "")
    words = e.words[f.token_to_word[f.start_position]:f.token_to_word[f.end_position] + 1]
    decoded = squad.final_text(" ".join(text.replace("##", "").split()), " ".join(words),
                               tokenizer)
    assert (squad_metrics.normalize_answer(decoded)
            == squad_metrics.normalize_answer(e.answer_text)), (decoded, e.answer_text)
  windows_per_example = np.bincount([f.example_index for f in features])
  assert windows_per_example.max() > 3  # the stride was exercised
  assert holding >= len(examples)  # every answer is held whole by at least one window


def test_predictions_from_oracle_logits_score_100(tokenizer):
  dataset = _squad_json(_contexts(), np.random.default_rng(1))
  examples = squad.examples_from_json(dataset, is_training=False)
  train_view = squad.convert(examples, tokenizer, max_seq_length=64, doc_stride=24,
                             max_query_length=8, is_training=False)
  with_answers = squad.convert(squad.examples_from_json(dataset, is_training=True), tokenizer,
                               max_seq_length=64, doc_stride=24, max_query_length=8,
                               is_training=True)
  start = np.full((len(train_view), 64), -10.0)
  end = np.full_like(start, -10.0)
  for i, f in enumerate(with_answers):
    if f.start_position:
      start[i, f.start_position] = end[i, f.end_position] = 10.0
  predictions = squad.predict_answers(examples, train_view, start, end, tokenizer,
                                      max_answer_length=30)
  # The characters of the context; whitespace runs become one space (Google joins the words).
  truths = {qa["id"]: " ".join(qa["answers"][0]["text"].split())
            for p in dataset["data"][0]["paragraphs"] for qa in p["qas"]}
  assert predictions == truths
  # (An answer that is only punctuation/articles normalises to "": EM 1 but F1 0, officially.)
  assert squad_metrics.evaluate(dataset["data"], predictions)["exact_match"] == 100.0


def test_bad_input(tokenizer):
  with pytest.raises(ValueError, match="no 'data' list"):
    squad.examples_from_json({"version": "1.1"}, is_training=True)
  context = "The quick brown fox jumps over the lazy dog."
  dataset = {"data": [{"paragraphs": [{"context": context, "qas": [
      {"id": "ok", "question": "Who jumps?", "answers": [{"text": "brown fox",
                                                           "answer_start": 10}]},
      {"id": "off", "question": "Who?", "answers": [{"text": "lazy dog", "answer_start": 3}]},
      {"id": "out", "question": "Who?", "answers": [{"text": "dog", "answer_start": 999}]},
  ]}]}]}
  stats = squad.ReadStats()
  train = squad.examples_from_json(dataset, is_training=True, stats=stats)
  assert [e.qas_id for e in train] == ["ok"]
  assert stats.mismatched_answers == 2 and stats.mismatched_ids == ["off", "out"]
  dev = squad.examples_from_json(dataset, is_training=False)
  assert len(dev) == 3  # kept for prediction: the scorer uses the answer texts


def test_tfds_squad_path_with_mock_data():
  """config.finetune.data_dir="" reads TFDS squad/v1.1 (mocked: no download, no TensorFlow)."""
  tfds = pytest.importorskip("tensorflow_datasets")
  from lamb_optax.tasks import squad as squad_task
  from lamb_optax.train import config as config_lib
  context = "Grain reads records. It shards them per host."
  rows = [{"id": b"a", "title": b"t", "question": b"What reads records?", "context": context,
           "answers": {"text": [b"Grain", b"Grain"], "answer_start": [0, 0]}},
          {"id": b"b", "title": b"t", "question": b"Sharded how?", "context": context.encode(),
           "answers": {"text": [b"per host"], "answer_start": [5]}}]  # offset does not match
  config = config_lib.load("configs/squad.py")
  with tfds.testing.mock_data(as_data_source_fn=lambda *a, **k: rows):
    train, train_stats = squad_task._read(config, True)  # pylint: disable=protected-access
    dev, _ = squad_task._read(config, False)  # pylint: disable=protected-access
  assert [e.qas_id for e in train] == ["a"] and train_stats.mismatched_answers == 1
  assert [e.answers for e in dev] == [("Grain", "Grain"), ("per host",)]
