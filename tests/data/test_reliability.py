"""Data-side reliability: --overwrite deletes only our own datasets, interrupted builds are cleaned
up, input is bounded, flags are checked up front, vocabularies must match, Grain workers die
with their parent; a Hugging Face directory's tokenizer files, SQuAD data files and predictions
files are checked before training or scoring, each error naming the file and the place."""

import copy
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lamb_optax import data
from lamb_optax.data import sources
from lamb_optax.data import storage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _example():
  return {"input_ids": np.arange(8, dtype=np.int32), "input_mask": np.ones(8, np.int32),
          "segment_ids": np.zeros(8, np.int32), "masked_lm_positions": np.array([1, 2], np.int32),
          "masked_lm_ids": np.array([5, 6], np.int32),
          "masked_lm_weights": np.ones(2, np.float32), "next_sentence_labels": np.int32(0)}


def _write(out, **kwargs):
  return storage.write_pretraining_dataset(
      {"train": [_example()] * 3}, str(out), max_seq_length=8, max_predictions_per_seq=2,
      progress=False, **kwargs)


def test_overwrite_replaces_only_our_own_dataset(tmp_path):
  out = tmp_path / "ds"
  _write(out)
  assert _write(out, overwrite=True) == {"train": 3}  # our own dataset: replaced
  (out / "notes.txt").write_text("mine")
  with pytest.raises(FileExistsError, match=r"refuses to replace .*notes\.txt"):
    _write(out, overwrite=True)
  assert (out / "notes.txt").read_text() == "mine" and (out / "dataset_info.json").exists()


@pytest.mark.parametrize("contents", [{"corpus.txt": "a sentence."},
                                      {"sub/deep.txt": "x", ".bashrc": "y"}])
def test_overwrite_refuses_any_other_directory(tmp_path, contents):
  # The input corpus's directory, ".", $HOME: anything that is not only our dataset survives.
  home = tmp_path / "home"
  for name, text in contents.items():
    (home / name).parent.mkdir(parents=True, exist_ok=True)
    (home / name).write_text(text)
  with pytest.raises(FileExistsError, match="not \\(only\\) a pretraining dataset"):
    _write(home, overwrite=True)
  for name, text in contents.items():
    assert (home / name).read_text() == text
  assert not [n for n in os.listdir(tmp_path) if "incomplete" in n]


def test_overwrite_accepts_an_empty_directory(tmp_path):
  (tmp_path / "empty").mkdir()
  assert _write(tmp_path / "empty", overwrite=True) == {"train": 3}


def _cli_run(args):
  """scripts/create_pretraining_data.py's run() on parsed flags (no global FLAGS)."""
  from absl import flags as absl_flags
  sys.path.insert(0, os.path.join(ROOT, "scripts"))
  try:
    import create_pretraining_data as cli  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  fv = absl_flags.FlagValues()
  for flag in absl_flags.FLAGS.get_key_flags_for_module(cli):
    fv[flag.name] = copy.deepcopy(flag)
  fv(["prog", *args])
  return cli.run(fv)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  d = tmp_path_factory.mktemp("corpus")
  (d / "part.txt").write_text("The first sentence.\nThe second one.\n\nAnother document.\n"
                              "With two lines.\n", encoding="utf-8")
  data.save_vocab(data.train_wordpiece(["the first sentence another document"], 200),
                  str(d / "vocab.txt"))
  return d


def _flags(corpus, out, **overrides):
  flags = {"input_file": f"{corpus}/part.txt", "output_dir": str(out),
           "vocab_file": str(corpus / "vocab.txt"), "max_seq_length": 16,
           "max_predictions_per_seq": 2} | overrides
  return [f"--{k}={v}" for k, v in flags.items()]


def test_cli_overwrite_refuses_the_input_directory(corpus):
  before = sorted(os.listdir(corpus))
  with pytest.raises(FileExistsError, match=r"part\.txt, vocab\.txt"):
    _cli_run(_flags(corpus, corpus, overwrite=True))
  assert sorted(os.listdir(corpus)) == before


@pytest.mark.parametrize("flag,value,match", [
    ("window_documents", 0, "window_documents must be >= 1"),
    ("num_workers", 0, "num_workers must be >= 1"),
    ("num_workers", -2, "num_workers must be >= 1"),
])
def test_cli_checks_counts_before_any_work(corpus, tmp_path, flag, value, match):
  with pytest.raises(ValueError, match=match):
    _cli_run(_flags(corpus, tmp_path / "out", **{flag: value}))
  assert os.listdir(tmp_path) == []


def test_stale_incomplete_builds_are_removed_live_ones_kept(tmp_path):
  def build_dir(name, locked):
    d = tmp_path / name
    d.mkdir()
    lock = open(d / storage.BUILD_LOCK_FILE, "w")
    if locked:  # held through another open file: as a live builder would
      fcntl.flock(lock, fcntl.LOCK_EX)
    return lock

  dead = build_dir(".ds.incomplete-dead", locked=False)
  live = build_dir(".ds.incomplete-live", locked=True)
  (tmp_path / ".ds.incomplete-foreign").mkdir()  # no lock file: not ours, left alone
  (tmp_path / ".other.incomplete-x").mkdir()
  _write(tmp_path / "ds")
  left = sorted(n for n in os.listdir(tmp_path) if "incomplete" in n)
  assert left == [".ds.incomplete-foreign", ".ds.incomplete-live", ".other.incomplete-x"]
  dead.close()
  live.close()


def test_a_build_starting_beside_another_never_removes_it(tmp_path, monkeypatch):
  # The worst interleaving, made deterministic: a second builder sweeps for stale builds at
  # the instant the first takes its lock. The first build's directory must survive it.
  real_flock = fcntl.flock

  def flock_after_a_sweep(file, operation):
    if operation == fcntl.LOCK_EX:  # the builder taking its lock (the sweep uses LOCK_NB)
      storage._remove_stale_builds(str(tmp_path), ".ds.incomplete-")
    return real_flock(file, operation)

  monkeypatch.setattr(storage.fcntl, "flock", flock_after_a_sweep)
  with storage.build_directory(str(tmp_path), ".ds.incomplete-") as build:
    assert os.path.isdir(build)
    storage._remove_stale_builds(str(tmp_path), ".ds.incomplete-")  # a sweep while it builds
    assert sorted(os.listdir(build)) == [storage.BUILD_LOCK_FILE]
  assert os.listdir(tmp_path) == []


def test_a_huge_line_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, "MAX_LINE_BYTES", 1000)
  path = tmp_path / "book.txt"
  path.write_text("A short line.\n" + "word " * 10_000 + "\n")
  with pytest.raises(ValueError, match=r"Line 2 of .*book\.txt is longer than 1,000 bytes"):
    list(data.read_text_documents([str(path)]))


def test_check_vocab_matches(tmp_path):
  _write(tmp_path / "ds", metadata={"vocab_size": 8192})
  metadata = data.dataset_metadata(str(tmp_path / "ds"))
  data.check_vocab_matches(metadata, 8192)
  with pytest.raises(ValueError, match=r"vocabulary of 8192 ids, but the run uses 1000.*NaN"):
    data.check_vocab_matches(metadata, 1000, dataset=str(tmp_path / "ds"))
  with pytest.raises(ValueError, match="other words"):
    data.check_vocab_matches(metadata, 30522)
  data.check_vocab_matches(metadata, 8192 + 64, exact=False)  # a padded embedding table
  data.check_vocab_matches({}, 1000)  # old datasets without the size: not checked
  source = data.load_pretraining_dataset(str(tmp_path / "ds"), "train")
  with pytest.raises(ValueError):
    data.check_vocab_matches(source.metadata, 1000)


_WORKER_PARENT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from lamb_optax import data
    source = [{"input_ids": np.full(4, i, np.int32)} for i in range(64)]
    it = iter(data.train_batches(source, batch_size=2, seed=0, shard_index=0, shard_count=1,
                                 worker_count=2))
    next(it)
    print("ready", flush=True)
    time.sleep(600)
""")


@pytest.mark.slow  # a process with Grain workers, SIGKILLed
def test_grain_workers_die_with_a_killed_parent():
  psutil = pytest.importorskip("psutil")
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_PLATFORMS="cpu")
  parent = subprocess.Popen([sys.executable, "-c", _WORKER_PARENT], stdout=subprocess.PIPE,
                            text=True, env=env)
  workers = []
  try:
    assert parent.stdout.readline().strip() == "ready"
    workers = psutil.Process(parent.pid).children(recursive=True)
    assert workers, "expected Grain worker processes"
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"Grain workers outlived their killed parent: {alive}"
  finally:
    if parent.poll() is None:
      parent.kill()
    for worker in workers:  # only on failure: do not leave them behind either
      if worker.is_running():
        worker.kill()


# ---------------------------------------------------------------------------------------------
# A Hugging Face directory's tokenizer files, checked when init_from is resolved.

def _hf_dir(tmp_path, vocab_tokens, vocab_size, tokenizer_config=None):
  from lamb_optax.data import tokenizer
  d = tmp_path / "hf"
  d.mkdir()
  (d / "config.json").write_text(json.dumps({
      "model_type": "bert", "vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 1,
      "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 16}))
  (d / "model.safetensors").write_bytes(b"")  # resolving reads no weights
  tokens = list(tokenizer.SPECIAL_TOKENS) + [f"w{i}" for i in range(vocab_tokens - 5)]
  (d / "vocab.txt").write_text("".join(t + "\n" for t in tokens))
  if tokenizer_config is not None:
    (d / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
  return d


def _resolve(directory):
  from lamb_optax.tasks import finetuning
  from lamb_optax.train import config as config_lib
  config = config_lib.default_config()
  config.init_from = str(directory)
  return finetuning.resolve_encoder(config)


def test_a_vocab_larger_than_the_checkpoints_vocab_size_is_refused(tmp_path):
  """Ids past the embedding table made every loss NaN, every step skipped, and exit 0."""
  d = _hf_dir(tmp_path, vocab_tokens=40, vocab_size=30)
  with pytest.raises(ValueError, match=r"vocab\.txt' has 40 tokens, but .*config\.json' has "
                                       r"vocab_size=30.*NaN.*finetune\.vocab_file"):
    _resolve(d)


def test_a_vocab_smaller_than_a_padded_vocab_size_is_accepted(tmp_path):
  assert _resolve(_hf_dir(tmp_path, vocab_tokens=30, vocab_size=32)).bert_config.vocab_size == 32


@pytest.mark.parametrize("value, lower", [("false", False), ("False", False), ("true", True),
                                          (False, False), (True, True)])
def test_do_lower_case_strings_are_parsed(tmp_path, value, lower):
  # bool("false") is True: a cased checkpoint was lower-cased.
  d = _hf_dir(tmp_path, 30, 30, {"do_lower_case": value})
  assert _resolve(d).do_lower_case is lower


@pytest.mark.parametrize("value", ["no", "", 0, 1, None, [True]])
def test_do_lower_case_that_is_not_a_boolean_is_refused(tmp_path, value):
  d = _hf_dir(tmp_path, 30, 30, {"do_lower_case": value})
  with pytest.raises(ValueError, match=r"tokenizer_config\.json: do_lower_case is .*must be true "
                                       r"or false"):
    _resolve(d)


# ---------------------------------------------------------------------------------------------
# SQuAD files: structure, positions, ids; predictions files for scripts/squad_eval.py.

def _squad(**qa_changes):
  qa = {"id": "q0", "question": "Who?", "answers": [{"text": "fox", "answer_start": 4}]}
  return {"version": "1.1", "data": [{"title": "t", "paragraphs": [
      {"context": "The fox ran.", "qas": [qa]},
      {"context": "A dog sat.", "qas": [qa | {"id": "q1", "answers": [{"text": "dog",
                                                                         "answer_start": 2}]},
                                        qa | qa_changes]}]}]}


@pytest.mark.parametrize("change, message", [
    ({"id": 7}, r"qas\[1\]\.id must be a str, got int 7"),
    ({"answers": "fox"}, r"qas\[1\]\.answers \(question id 'q2'\) must be a list, got str 'fox'"),
    ({"answers": [{"text": "dog", "answer_start": "2"}]},
     r"qas\[1\]\.answers\[0\]\.answer_start \(question id 'q2'\) must be a int, got str '2'"),
    ({"answers": [{"text": "dog", "answer_start": -1}]},
     r"qas\[1\]\.answers\[0\]\.answer_start \(question id 'q2'\) is -1; it must be >= 0"),
    ({"question": None}, r"qas\[1\]\.question \(question id 'q2'\) must be a str, got NoneType"),
])
def test_squad_structure_errors_name_the_file_and_position(tmp_path, change, message):
  """These were a bare KeyError/TypeError (or int('2') read silently) with no file or place."""
  from lamb_optax.data import squad
  path = tmp_path / "train-v1.1.json"
  path.write_text(json.dumps(_squad(**({"id": "q2"} | change))))
  where = r"data\[0\]\.paragraphs\[1\]\."
  with pytest.raises(ValueError, match=rf"train-v1\.1\.json: {where}{message}"):
    squad.read_examples(str(path), is_training=True)


def test_squad_paragraph_without_context_is_named(tmp_path):
  from lamb_optax.data import squad
  dataset = _squad(id="q2")
  del dataset["data"][0]["paragraphs"][1]["context"]
  (tmp_path / "dev.json").write_text(json.dumps(dataset))
  with pytest.raises(ValueError, match=r"dev\.json: data\[0\]\.paragraphs\[1\]\.context must be "
                                       r"a str, got nothing.*'data': \[\{'paragraphs'"):
    squad.read_examples(str(tmp_path / "dev.json"), is_training=False)


def test_squad_file_that_is_not_json_names_file_and_line(tmp_path):
  from lamb_optax.data import squad
  (tmp_path / "dev.json").write_text('{"data": [\n  {"paragraphs": ]}\n')
  with pytest.raises(ValueError, match=r"dev\.json is not valid JSON: .*line 2"):
    squad.read_examples(str(tmp_path / "dev.json"), is_training=False)


def test_duplicate_squad_question_ids_are_refused(tmp_path):
  """Two questions with one id collapsed into one prediction, silently."""
  from lamb_optax.data import squad
  (tmp_path / "dev.json").write_text(json.dumps(_squad(id="q0")))
  with pytest.raises(ValueError, match=r"dev\.json: question id 'q0' appears twice, at "
                                       r"data\[0\]\.paragraphs\[0\]\.qas\[0\] and "
                                       r"data\[0\]\.paragraphs\[1\]\.qas\[1\]"):
    squad.read_examples(str(tmp_path / "dev.json"), is_training=False)
  rows = [{"id": i, "question": "Who?", "context": "The fox ran.",
           "answers": {"text": ["fox"], "answer_start": [4]}} for i in (b"a", b"b", b"a")]
  with pytest.raises(ValueError, match=r"TFDS squad/v1.1 train: question id 'a' appears twice, "
                                       r"at rows 0 and 2"):
    squad.examples_from_tfds(rows, True, source="TFDS squad/v1.1 train")


def _squad_eval(*args):
  sys.path.insert(0, os.path.join(ROOT, "scripts"))
  try:
    import squad_eval  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  return squad_eval.main([str(a) for a in args])


@pytest.mark.parametrize("predictions, message", [
    (["fox", "dog"], r"pred\.json holds a JSON list, not an object: a predictions file maps "
                     r"each question id to its answer text"),
    ({"q0": ["fox"]}, r"pred\.json: the prediction for question 'q0' is list"),
])
def test_squad_eval_refuses_predictions_of_another_shape(tmp_path, capsys, predictions, message):
  """A list of answers was scored as 0 with exit code 0."""
  (tmp_path / "dev.json").write_text(json.dumps(_squad(id="q2")))
  (tmp_path / "pred.json").write_text(json.dumps(predictions))
  assert _squad_eval(tmp_path / "dev.json", tmp_path / "pred.json") == 2
  assert re.search(message, capsys.readouterr().err)
  (tmp_path / "pred.json").write_text(json.dumps({"q0": "fox", "q1": "x", "q2": "fox"}))
  assert _squad_eval(tmp_path / "dev.json", tmp_path / "pred.json") == 0
  assert json.loads(capsys.readouterr().out)["exact_match"] == pytest.approx(200 / 3)


def test_squad_eval_refuses_a_data_file_with_repeated_ids(tmp_path, capsys):
  (tmp_path / "dev.json").write_text(json.dumps(_squad(id="q1")))
  (tmp_path / "pred.json").write_text(json.dumps({"q0": "fox", "q1": "x"}))
  assert _squad_eval(tmp_path / "dev.json", tmp_path / "pred.json") == 2
  assert "question id 'q1' appears twice" in capsys.readouterr().err


def test_squad_eval_refuses_a_question_without_answers(tmp_path, capsys):
  """Scoring takes the best over a question's answers: none crashed inside max()."""
  dataset = _squad(id="q2", answers=[])
  (tmp_path / "dev.json").write_text(json.dumps(dataset))
  (tmp_path / "pred.json").write_text(json.dumps({"q0": "fox", "q1": "x", "q2": "y"}))
  assert _squad_eval(tmp_path / "dev.json", tmp_path / "pred.json") == 2
  assert re.search(r"dev\.json: data\[0\]\.paragraphs\[1\]\.qas\[1\]\.answers \(question id "
                   r"'q2'\) is empty", capsys.readouterr().err)
