"""The embedded corpus, TFDS storage and the streaming dataset builder."""

import os

import numpy as np
import pytest

from lamb_optax import data

MASKING = data.MaskingConfig(max_seq_length=64, max_predictions_per_seq=10)
SMALL = dict(masking=MASKING, vocab_size=1500, dupe_factor=2, max_documents=24)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  return data.prepare_embedded(str(tmp_path_factory.mktemp("embedded")), **SMALL)


def _all(source):
  return [source[i] for i in range(len(source))]


def test_sentence_splitter():
  assert data.split_sentences("One two. Three four!  (Five) six? seven.") == [
      "One two.", "Three four!", "(Five) six? seven."]
  assert data.split_sentences("  \n ") == []


def test_embedded_documents_deterministic_and_disjoint():
  train, validation = data.embedded_documents()
  assert len(train) > 250 and len(validation) >= 10
  text = sum(len(s) for d in train + validation for s in d)
  assert 1_000_000 < text < 2_500_000  # ~1-2 MB of English
  as_set = lambda docs: {tuple(d) for d in docs}
  assert not as_set(train) & as_set(validation)
  # Deterministic: a fresh read (topics and the first ~40 modules) gives the same documents.
  assert list(data.python_docs_documents(120)) == list(data.python_docs_documents(120))


def test_prepare_embedded(prepared):
  assert os.path.isfile(prepared.vocab_file) and prepared.masking == MASKING
  tokenizer = data.load_wordpiece(prepared.vocab_file)
  assert tokenizer.get_vocab_size() == prepared.vocab_size <= 1500
  train = data.load_pretraining_dataset(prepared.directory, "train")
  validation = data.load_pretraining_dataset(prepared.directory, "validation")
  assert len(train) > 500 and len(validation) > 50
  example = train[0]
  assert set(example) == set(data.FEATURES)
  assert example["input_ids"].shape == (64,) and example["input_ids"].dtype == np.int32
  assert example["masked_lm_weights"].dtype == np.float32
  assert example["next_sentence_labels"].shape == () and example["input_ids"].max() < 1500
  assert train.metadata["vocab_size"] == prepared.vocab_size


def test_prepare_embedded_cached_and_deterministic(prepared, tmp_path):
  # The same arguments find the cache ...
  assert data.prepare_embedded(os.path.dirname(os.path.dirname(prepared.directory)),
                               **SMALL) == prepared
  # ... and two builds elsewhere with the shipped vocabulary are identical, example for example
  # (a trained vocabulary can differ between processes: see corpus.EMBEDDED_VOCAB_FILE).
  shipped = dict(SMALL, vocab_size=data.corpus.EMBEDDED_VOCAB_SIZE)
  prepared = data.prepare_embedded(str(tmp_path / "a"), **shipped)
  other = data.prepare_embedded(str(tmp_path / "b"), **shipped)
  assert not [n for n in os.listdir(tmp_path / "b") if "incomplete" in n]
  assert open(prepared.vocab_file).read() == open(other.vocab_file).read()
  assert prepared.vocab_size == 8192
  for split in ("train", "validation"):
    x = _all(data.load_pretraining_dataset(prepared.directory, split))
    y = _all(data.load_pretraining_dataset(other.directory, split))
    assert len(x) == len(y)
    for ex, ey in zip(x, y, strict=True):
      for k in data.FEATURES:
        np.testing.assert_array_equal(ex[k], ey[k])


def test_readable_with_plain_tfds(prepared):
  import tensorflow_datasets as tfds
  source = tfds.builder_from_directory(prepared.directory).as_data_source("validation")
  assert len(source) == len(data.load_pretraining_dataset(prepared.directory, "validation"))


def test_load_errors(prepared, tmp_path):
  with pytest.raises(ValueError, match=r"no split 'test'.*\['train', 'validation'\]"):
    data.load_pretraining_dataset(prepared.directory, "test")
  with pytest.raises(FileNotFoundError, match="holds no TFDS dataset"):
    data.load_pretraining_dataset(str(tmp_path), "train")
  with pytest.raises(ValueError, match="Unknown TFDS dataset 'no_such_dataset_xyz'"):
    data.load_pretraining_dataset("no_such_dataset_xyz", "train", data_dir=str(tmp_path))
  # The directory that holds the cache entry also resolves (one dataset below it).
  parent = os.path.dirname(prepared.directory)
  assert len(data.load_pretraining_dataset(parent, "train")) > 0


def test_write_failure_leaves_nothing(tmp_path):
  def broken():
    yield from ()
  target = tmp_path / "out"
  with pytest.raises(ValueError, match="too small to make a single example"):
    data.write_pretraining_dataset({"train": broken}, str(target), max_seq_length=8,
                                   max_predictions_per_seq=2, progress=False)
  assert os.listdir(tmp_path) == []


def test_windows_and_workers_do_not_change_examples(prepared):
  tokenizer = data.load_wordpiece(prepared.vocab_file)
  train, _ = data.embedded_documents(max_documents=10)
  config = data.ExampleConfig(masking=MASKING, dupe_factor=2)
  one = list(data.examples_from_documents(train, tokenizer, config=config, window_documents=4))
  assert len(one) > 50
  # Each (window, duplicate) task has its own seed: the same output however it is scheduled.
  again = list(data.examples_from_documents(iter(train), tokenizer, config=config,
                                            window_documents=4))
  for a, b in zip(one, again, strict=True):
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
  # Windows bound where B segments come from: a whole-corpus window gives other pairs.
  whole = list(data.examples_from_documents(train, tokenizer, config=config,
                                            window_documents=100))
  assert len(whole) != len(one) or any(
      not np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(one, whole, strict=False))


@pytest.mark.slow
def test_worker_processes_same_examples(prepared):
  tokenizer = data.load_wordpiece(prepared.vocab_file)
  train, _ = data.embedded_documents(max_documents=10)
  config = data.ExampleConfig(masking=MASKING, dupe_factor=3)
  one = list(data.examples_from_documents(train, tokenizer, config=config, window_documents=4))
  two = list(data.examples_from_documents(train, tokenizer, config=config, window_documents=4,
                                          num_workers=2))
  assert len(one) == len(two)
  for a, b in zip(one, two, strict=True):
    for k in data.FEATURES:
      np.testing.assert_array_equal(a[k], b[k])


def test_prepare_embedded_race_safe(tmp_path):
  # Two builders at once: both finish, one result is kept, no temporary directory remains.
  from concurrent.futures import ThreadPoolExecutor
  small = dict(SMALL, max_documents=8, dupe_factor=1)
  with ThreadPoolExecutor(2) as pool:
    results = list(pool.map(lambda _: data.prepare_embedded(str(tmp_path), **small), range(2)))
  assert results[0].directory == results[1].directory
  assert len(os.listdir(tmp_path)) == 1
  assert len(data.load_pretraining_dataset(results[0].directory, "train")) > 0
