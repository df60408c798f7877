"""scripts/create_pretraining_data.py end to end, and its errors on bad input."""

import copy
import os
import subprocess
import sys

import numpy as np
import pytest

from lamb_optax import data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "create_pretraining_data.py")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """Two Google-format text files (one sentence per line, blank line between documents) and a
  vocabulary trained on them."""
  d = tmp_path_factory.mktemp("inputs")
  train, _ = data.embedded_documents(max_documents=12)
  for part, docs in (("a", train[:5]), ("b", train[5:])):
    with open(d / f"part-{part}.txt", "w", encoding="utf-8") as f:
      f.write("\n\n".join("\n".join(doc) for doc in docs) + "\n")
  tokenizer = data.train_wordpiece([s for doc in train for s in doc], 1200)
  data.save_vocab(tokenizer, str(d / "vocab.txt"))
  return d


def _run(*args, check=True):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                        env=env, cwd=ROOT, timeout=120)
  if check and proc.returncode:
    raise AssertionError(proc.stderr[-3000:])
  return proc


def _flags(inputs, out, **overrides):
  flags = {"input_file": f"{inputs}/part-*.txt", "output_dir": str(out),
           "vocab_file": str(inputs / "vocab.txt"), "max_seq_length": 64,
           "max_predictions_per_seq": 10, "dupe_factor": 2, "random_seed": 7}
  flags.update(overrides)
  return [f"--{k}={v}" for k, v in flags.items() if v is not None]


def test_end_to_end(inputs, tmp_path):
  # Written as <data_dir>/<name>/<version>, TFDS also finds it by name.
  out = tmp_path / "bert_pretraining" / "1.0.0"
  proc = _run(*_flags(inputs, out, validation_fraction=0.3, do_whole_word_mask=True))
  assert "Wrote {'train'" in proc.stdout
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(str(out))
  assert set(builder.info.splits) == {"train", "validation"}
  assert builder.info.metadata["masking"]["whole_word_mask"] is True
  raw = builder.as_data_source("train")
  by_name = tfds.data_source("bert_pretraining", split="train", data_dir=str(tmp_path))
  assert len(by_name) == len(raw)
  train = data.load_pretraining_dataset(str(out), "train")
  assert len(raw) == len(train) > 20
  ex = train[0]
  assert ex["input_ids"].shape == (64,) and ex["masked_lm_ids"].shape == (10,)
  assert ex["input_ids"][0] == 2  # [CLS]
  labels = np.array([train[i]["next_sentence_labels"] for i in range(len(train))])
  assert 0 < labels.mean() < 1  # both random and actual next segments
  # Usable by the loader straight away.
  batch = next(iter(data.train_batches(train, batch_size=4, seed=0, shard_index=0,
                                       shard_count=1)))
  assert batch["input_ids"].shape == (4, 64)
  assert not [n for n in os.listdir(out.parent) if "incomplete" in n]


def _cli():
  sys.path.insert(0, os.path.join(ROOT, "scripts"))
  try:
    import create_pretraining_data as cli  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  return cli


def _run_in_process(args):
  """cli.run on parsed flags, without touching the global absl FLAGS."""
  from absl import flags as absl_flags
  cli = _cli()
  fv = absl_flags.FlagValues()
  for flag in absl_flags.FLAGS.get_key_flags_for_module(cli):
    fv[flag.name] = copy.deepcopy(flag)
  fv(["prog", *args])
  return cli.run(fv)


def test_main_in_process_and_deterministic(inputs, tmp_path):
  counts = [_run_in_process(_flags(inputs, tmp_path / name)) for name in ("x", "y")]
  assert counts[0] == counts[1]
  x = data.load_pretraining_dataset(str(tmp_path / "x"), "train")
  y = data.load_pretraining_dataset(str(tmp_path / "y"), "train")
  for i in range(len(x)):
    np.testing.assert_array_equal(x[i]["input_ids"], y[i]["input_ids"])


def _nothing_written(out):
  assert not os.path.exists(out) and not [
      n for n in os.listdir(os.path.dirname(out)) if "incomplete" in n]


def test_bad_inputs(inputs, tmp_path):
  empty = tmp_path / "empty.txt"
  empty.write_text("")
  tiny = tmp_path / "tiny.txt"
  tiny.write_text(" \n\n\t\n")  # not empty, but no sentence in it
  bad_vocab = tmp_path / "bad_vocab.txt"
  bad_vocab.write_text("[PAD]\n[UNK]\nhello\n")
  out = tmp_path / "out"
  cases = [
      (dict(input_file=str(tmp_path / "missing*.txt")), "matches no file"),
      (dict(input_file=str(empty)), "is empty"),
      (dict(input_file=str(tiny)), "too small to make a single example"),
      (dict(vocab_file=str(bad_vocab)), "[CLS]"),
      (dict(max_predictions_per_seq=100), "max_predictions_per_seq"),
      (dict(input_file=None, tfds_name="no_such_dataset_xyz", tfds_data_dir=str(tmp_path)),
       "Unknown TFDS dataset 'no_such_dataset_xyz'"),
  ]
  for overrides, match in cases:
    with pytest.raises((ValueError, FileNotFoundError)) as e:
      _run_in_process(_flags(inputs, out, **overrides))
    assert match in str(e.value)
    _nothing_written(out)
  # The script itself: exit status 1 and a one-line error instead of a traceback.
  proc = _run(*_flags(inputs, out, vocab_file=str(bad_vocab)), check=False)
  assert proc.returncode == 1 and "error:" in proc.stderr and "[CLS]" in proc.stderr
  assert "Traceback" not in proc.stderr
  _nothing_written(out)


def test_undecodable_bytes_are_replaced_and_counted(inputs, tmp_path, capsys):
  text = (inputs / "part-a.txt").read_bytes()
  bad = tmp_path / "bad.txt"
  bad.write_bytes(text.replace(b"the ", b"th\xff\xfe ", 3))
  stats = data.InputStats()
  docs = list(data.read_text_documents([str(bad)], stats))
  assert stats.undecodable_lines >= 1 and stats.replaced_chars == 6
  assert any("\ufffd" in s for d in docs for s in d)
  _run_in_process(_flags(inputs, tmp_path / "ds", input_file=str(bad)))
  assert "6 undecodable characters replaced" in capsys.readouterr().out


def test_tfds_text_input(inputs, tmp_path):
  import tensorflow_datasets as tfds
  train, _ = data.embedded_documents(max_documents=12)

  class ToyText(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):  # pylint: disable=no-self-argument
      return None

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
          {"body": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i, doc in enumerate(train):
        yield i, {"body": " ".join(doc)}  # running text: the splitter finds the sentences

  with _quiet():
    ToyText(data_dir=str(tmp_path / "tfds"), file_format="array_record").download_and_prepare()
  name = "toy_text"  # found in data_dir/toy_text/1.0.0 without registration
  counts = _run_in_process(_flags(inputs, tmp_path / "out", input_file=None, tfds_name=name,
                                  tfds_split="train", tfds_text_feature="body",
                                  tfds_data_dir=str(tmp_path / "tfds")))
  assert counts["train"] > 20
  with pytest.raises(ValueError, match=r"no feature 'text'.*\['body'\]"):
    _run_in_process(_flags(inputs, tmp_path / "out2", input_file=None, tfds_name=name,
                           tfds_data_dir=str(tmp_path / "tfds")))
  with pytest.raises(ValueError, match=r"no split 'test'"):
    _run_in_process(_flags(inputs, tmp_path / "out2", input_file=None, tfds_name=name,
                           tfds_split="test", tfds_text_feature="body",
                           tfds_data_dir=str(tmp_path / "tfds")))
  assert not os.path.exists(tmp_path / "out2")


def _quiet():
  import contextlib
  import io
  return contextlib.redirect_stdout(io.StringIO())
