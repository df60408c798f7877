"""Pretraining datasets from text: the streaming builder behind the CLI, and the embedded corpus.

:func:`create_pretraining_dataset` is ``scripts/create_pretraining_data.py`` as a function:
documents (from :mod:`lamb_optax.data.sources`) are tokenized and turned into Google-style
examples (:func:`lamb_optax.data.pretraining.create_examples`) one *window* of documents at a
time, so memory stays bounded for inputs of any size. The one difference from Google's script
that this brings: the random "B" segments of next-sentence prediction are drawn from the
documents of the same window (``window_documents``, 10,000 by default, instead of the whole
corpus). Every window and every duplicate (``dupe_factor``) is its own task with its own seed, so
the output does not depend on ``num_workers``; with one window and ``dupe_factor=1`` it is
exactly Google's procedure. TFDS shuffles the examples of each split globally while writing.

:func:`prepare_embedded` builds (once, cached, race-safe) a small dataset from the English text
that ships with Python (:func:`lamb_optax.data.sources.python_docs_documents`), with its own
WordPiece vocabulary and held-out "validation" documents: a corpus that needs no download.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from lamb_optax.data import pretraining
from lamb_optax.data import sources
from lamb_optax.data import storage
from lamb_optax.data import tokenizer as tokenizer_lib

MaskingConfig = pretraining.MaskingConfig
ExampleConfig = pretraining.ExampleConfig

_EMBEDDED_FORMAT = 2  # bump when the embedded corpus or its processing changes (new cache key)
_VALIDATION_FRACTION = 0.05
_MIN_VALIDATION_DOCUMENTS = 2
# Held-out text is scarce (5% of a small corpus); more masked copies of it steady the eval loss.
_VALIDATION_DUPE_FACTOR = 10


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """A dataset ready for :func:`lamb_optax.data.load_pretraining_dataset` and its vocabulary."""
  directory: str  # the TFDS dataset directory (array_record) holding the splits
  vocab_file: str
  vocab_size: int
  do_lower_case: bool
  masking: MaskingConfig  # what the stored examples were created with


# --------------------------------------------------------------------------------------------
# Documents -> examples, in windows.

@dataclasses.dataclass(frozen=True)
class _Task:
  documents: list  # list[list[list[int]]]
  seed: int


@dataclasses.dataclass(frozen=True)
class _Shared:
  vocab_size: int
  special: Any
  continuation: np.ndarray | None
  config: ExampleConfig


def _run_task(task: _Task, shared: _Shared) -> list[dict]:
  config = dataclasses.replace(shared.config, dupe_factor=1, random_seed=task.seed)
  return list(pretraining.create_examples(
      task.documents, vocab_size=shared.vocab_size, special=shared.special,
      continuation=shared.continuation, config=config))


_WORKER_SHARED: _Shared | None = None


def _init_worker(shared: _Shared) -> None:
  global _WORKER_SHARED
  _WORKER_SHARED = shared


def _run_in_worker(task: _Task) -> list[dict]:
  return _run_task(task, _WORKER_SHARED)


def tokenize_documents(tokenizer, documents: Sequence[sources.Document]) -> list[list[list[int]]]:
  """Sentences -> token ids, one batched (parallel) encode; empty sentences/documents dropped."""
  flat = [sentence for document in documents for sentence in document]
  ids = tokenizer_lib.tokenize_lines(tokenizer, flat)
  out, start = [], 0
  for document in documents:
    tokenized = [s for s in ids[start:start + len(document)] if s]
    start += len(document)
    if tokenized:
      out.append(tokenized)
  return out


def _windows(documents: Iterable[sources.Document], size: int) -> Iterator[list]:
  window: list = []
  for document in documents:
    window.append(document)
    if len(window) >= size:
      yield window
      window = []
  if window:
    yield window


def _task_seed(seed: int, window: int, dupe: int) -> int:
  # Window 0, duplicate 0 uses the seed itself; the rest are distinct, deterministic offsets.
  return (seed + 1_000_003 * window + 7_919 * dupe) % (2**31 - 1)


def examples_from_documents(documents: Iterable[sources.Document], tokenizer, *,
                            config: ExampleConfig, window_documents: int = 10_000,
                            num_workers: int = 1) -> Iterator[dict]:
  """Streams statically masked examples from untokenized documents (see the module docstring).

  ``num_workers > 1`` creates examples in that many spawned processes (tokenization is already
  parallel inside ``tokenizers``); the examples are the same as with one.
  """
  shared = _Shared(
      vocab_size=tokenizer_lib.vocab_size(tokenizer),
      special=tokenizer_lib.special_ids(tokenizer),
      continuation=(tokenizer_lib.continuation_mask(tokenizer)
                    if config.masking.whole_word_mask else None),
      config=config)

  def tasks() -> Iterator[_Task]:
    for w, window in enumerate(_windows(documents, window_documents)):
      tokenized = tokenize_documents(tokenizer, window)
      for dupe in range(config.dupe_factor):
        yield _Task(tokenized, _task_seed(config.random_seed, w, dupe))

  if num_workers <= 1:
    for task in tasks():
      yield from _run_task(task, shared)
    return
  # Spawned, not forked: the parent may hold JAX/threads. Tasks go in groups so that a streaming
  # input is never read ahead by more than a group (Pool.imap would consume it all).
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(num_workers, initializer=_init_worker, initargs=(shared,)) as pool:
    group: list[_Task] = []
    for task in tasks():
      group.append(task)
      if len(group) >= 2 * num_workers:
        for examples in pool.map(_run_in_worker, group):
          yield from examples
        group = []
    for examples in pool.map(_run_in_worker, group):
      yield from examples


def check_workers(window_documents: int, num_workers: int) -> None:
  """Refuses a window or worker count below one (a zero window would never emit a document).

  >>> check_workers(0, 1)
  Traceback (most recent call last):
  ...
  ValueError: window_documents must be >= 1 (documents per window), got 0.
  """
  if window_documents < 1:
    raise ValueError(f"window_documents must be >= 1 (documents per window), got "
                     f"{window_documents}.")
  if num_workers < 1:
    raise ValueError(f"num_workers must be >= 1 (1 = create examples in this process), got "
                     f"{num_workers}.")


def _in_validation(document: sources.Document, fraction: float) -> bool:
  # A stable content hash: the same document lands in the same split on every run and machine.
  return zlib.crc32("\n".join(document).encode("utf-8")) % 1_000_000 < fraction * 1_000_000


def create_pretraining_dataset(
    documents: Callable[[], Iterable[sources.Document]], output_dir: str, *, tokenizer,
    config: ExampleConfig, validation_fraction: float = 0.0, window_documents: int = 10_000,
    num_workers: int = 1, metadata: dict | None = None, overwrite: bool = False,
    progress: bool = True) -> dict[str, int]:
  """Writes a TFDS pretraining dataset from documents; returns the example count per split.

  Args:
    documents: a zero-argument callable returning the documents (lists of sentence strings);
      called once per split, so inputs stream and are never held whole.
    output_dir: the dataset directory to create (see :func:`storage.write_pretraining_dataset`:
      nothing is left there unless every split completes).
    tokenizer: a WordPiece ``tokenizers.Tokenizer`` (:func:`load_wordpiece`).
    config: Google's example-creation parameters.
    validation_fraction: documents held out as a "validation" split, chosen by a hash of their
      text (0 = only a "train" split).
    window_documents: documents per window (memory bound; random B segments come from the same
      window).
    num_workers: processes creating examples.
    metadata: extra JSON-able facts stored with the dataset.
    overwrite: replace an existing ``output_dir``.
    progress: show TFDS's progress bars.
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
  check_workers(window_documents, num_workers)

  def split_examples(validation: bool) -> Callable[[], Iterator[dict]]:
    def generate():
      docs = documents()
      if validation_fraction > 0:
        docs = (d for d in docs if _in_validation(d, validation_fraction) == validation)
      return examples_from_documents(docs, tokenizer, config=config,
                                     window_documents=window_documents, num_workers=num_workers)
    return generate

  splits = {"train": split_examples(False)}
  if validation_fraction > 0:
    splits["validation"] = split_examples(True)
  masking = config.masking
  meta = {"vocab_size": tokenizer_lib.vocab_size(tokenizer),
          "masking": dataclasses.asdict(masking),
          "short_seq_prob": config.short_seq_prob, "dupe_factor": config.dupe_factor,
          "random_seed": config.random_seed, "window_documents": window_documents,
          "validation_fraction": validation_fraction} | dict(metadata or {})
  return storage.write_pretraining_dataset(
      splits, output_dir, max_seq_length=masking.max_seq_length,
      max_predictions_per_seq=masking.max_predictions_per_seq,
      description="BERT pretraining examples (Google's create_pretraining_data features), "
                  "written by lamb_optax.", metadata=meta, overwrite=overwrite, progress=progress)


# --------------------------------------------------------------------------------------------
# The embedded corpus.

def embedded_documents(max_documents: int | None = None
                       ) -> tuple[list[sources.Document], list[sources.Document]]:
  """The embedded corpus split into (train, validation) documents, deterministically.

  Validation holds whole documents, taken in the order of a hash of their titles until they
  hold ~5% of the sentences (at least 2 documents); document order is kept in both splits.

  >>> train, validation = embedded_documents(max_documents=20)
  >>> len(train) + len(validation), len(validation) >= 2
  (20, True)
  """
  titled = list(sources.python_docs_documents(max_documents))
  if len(titled) < _MIN_VALIDATION_DOCUMENTS + 1:
    raise ValueError(f"max_documents={max_documents} leaves too few documents to hold out "
                     f"{_MIN_VALIDATION_DOCUMENTS} for validation.")
  total = sum(len(d) for _, d in titled)
  by_hash = sorted(range(len(titled)), key=lambda i: (zlib.crc32(titled[i][0].encode()), i))
  validation_ids: set[int] = set()
  held = 0
  for i in by_hash:
    if len(validation_ids) >= _MIN_VALIDATION_DOCUMENTS and held >= _VALIDATION_FRACTION * total:
      break
    validation_ids.add(i)
    held += len(titled[i][1])
  train = [d for i, (_, d) in enumerate(titled) if i not in validation_ids]
  validation = [d for i, (_, d) in enumerate(titled) if i in validation_ids]
  return train, validation


def _embedded_key(masking: MaskingConfig, vocab_size: int, dupe_factor: int, seed: int,
                  max_documents: int | None) -> str:
  args = {"format": _EMBEDDED_FORMAT, "python": list(sys.version_info[:2]),
          "masking": dataclasses.asdict(masking), "vocab_size": vocab_size,
          "dupe_factor": dupe_factor, "seed": seed, "max_documents": max_documents}
  digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:10]
  docs = "all" if max_documents is None else str(max_documents)
  return (f"pydocs-py{sys.version_info[0]}{sys.version_info[1]}-seq{masking.max_seq_length}-"
          f"v{vocab_size}-docs{docs}-{digest}")


def _prepared_from(directory: str) -> PreparedData:
  with open(os.path.join(directory, "prepared.json"), encoding="utf-8") as f:
    info = json.load(f)
  return PreparedData(directory=os.path.join(directory, "dataset"),
                      vocab_file=os.path.join(directory, "vocab.txt"),
                      vocab_size=info["vocab_size"], do_lower_case=info["do_lower_case"],
                      masking=MaskingConfig(**info["masking"]))


# The default vocabulary ships with the package: `tokenizers`' WordPiece trainer breaks ties
# between equally frequent merges in hash-map order, which changes from process to process, so a
# vocabulary trained at run time would differ between runs (and between the hosts of one run).
# This one was trained by `train_wordpiece(train documents, 8192)` on Python 3.11's docs; on
# other Python versions it still covers the text (WordPiece falls back to single characters).
EMBEDDED_VOCAB_SIZE = 8192
EMBEDDED_VOCAB_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                   "embedded_vocab.txt")


def prepare_embedded(data_dir: str, *, masking: MaskingConfig = pretraining.MaskingConfig(),
                     vocab_size: int = 8192, dupe_factor: int = 5, seed: int = 12345,
                     max_documents: int | None = None, num_workers: int = 1,
                     progress: bool = False) -> PreparedData:
  """Builds (or finds) the embedded Python-docs corpus as a TFDS dataset with its vocabulary.

  Idempotent and race-safe: the result lives in ``data_dir/<key>`` where the key covers every
  argument and the Python version; it is built in a temporary directory beside it and renamed
  into place when complete. If another process finished first, its result is used.

  Args:
    data_dir: where the cache lives.
    masking: sequence length and masking of the stored (static) examples.
    vocab_size: WordPiece vocabulary size. The default (8192) uses the shipped vocabulary, so
      builds are identical in every process; another size is trained on the train documents
      (not bit-reproducible across processes, see ``EMBEDDED_VOCAB_FILE``; a small corpus may
      give fewer tokens; ``PreparedData.vocab_size`` is the real size).
    dupe_factor: copies of the corpus with different masks/pairs (Google's flag); the
      validation split uses at least 10.
    seed: example-creation seed.
    max_documents: only the first N documents (fast builds for tests and demos).
    num_workers: processes creating examples. One is fastest for this corpus (~6 s on 2
      cores): a spawned worker spends longer importing than it saves.
    progress: show TFDS's progress bars.

  >>> import tempfile
  >>> prepared = prepare_embedded(tempfile.mkdtemp(), max_documents=8, dupe_factor=1,
  ...                             vocab_size=2000)
  >>> prepared.vocab_size <= 2000, os.path.basename(prepared.vocab_file)
  (True, 'vocab.txt')
  """
  key = _embedded_key(masking, vocab_size, dupe_factor, seed, max_documents)
  final = os.path.join(os.path.abspath(data_dir), key)
  if os.path.exists(os.path.join(final, "prepared.json")):
    return _prepared_from(final)
  with storage.build_directory(data_dir, f".{key}.incomplete-") as tmp:
    start = time.time()
    train, validation = embedded_documents(max_documents)
    if vocab_size == EMBEDDED_VOCAB_SIZE:
      tokenizer = tokenizer_lib.load_wordpiece(EMBEDDED_VOCAB_FILE, do_lower_case=True)
    else:
      tokenizer = tokenizer_lib.train_wordpiece(
          (sentence for document in train for sentence in document), vocab_size,
          do_lower_case=True)
    tokenizer_lib.save_vocab(tokenizer, os.path.join(tmp, "vocab.txt"))
    config = ExampleConfig(masking=masking, dupe_factor=dupe_factor, random_seed=seed)
    # All documents form one window: the corpus is small, so B segments come from all of it.
    windows = len(train) + 1

    def split(documents: list[sources.Document], split_seed: int, dupes: int):
      split_config = dataclasses.replace(config, random_seed=split_seed, dupe_factor=dupes)
      return lambda: examples_from_documents(documents, tokenizer, config=split_config,
                                             window_documents=windows, num_workers=num_workers)

    actual_vocab = tokenizer_lib.vocab_size(tokenizer)
    counts = storage.write_pretraining_dataset(
        {"train": split(train, seed, dupe_factor),
         "validation": split(validation, seed + 1, max(dupe_factor, _VALIDATION_DUPE_FACTOR))},
        os.path.join(tmp, "dataset"), max_seq_length=masking.max_seq_length,
        max_predictions_per_seq=masking.max_predictions_per_seq,
        description="BERT pretraining examples from Python's own documentation (pydoc topics "
                    "and standard-library docstrings), built by lamb_optax.prepare_embedded.",
        metadata={"vocab_size": actual_vocab, "masking": dataclasses.asdict(masking),
                  "dupe_factor": dupe_factor, "random_seed": seed,
                  "python": ".".join(map(str, sys.version_info[:3])),
                  "train_documents": len(train), "validation_documents": len(validation)},
        progress=progress)
    info = {"vocab_size": actual_vocab, "do_lower_case": True,
            "masking": dataclasses.asdict(masking), "counts": counts,
            "seconds": round(time.time() - start, 2)}
    with open(os.path.join(tmp, "prepared.json"), "w", encoding="utf-8") as f:
      json.dump(info, f, indent=2)
    # The lock stays held through the open file; the published directory carries no lock file.
    os.remove(os.path.join(tmp, storage.BUILD_LOCK_FILE))
    try:
      os.rename(tmp, final)
    except OSError:
      # Another process renamed its complete build into place first: use that one.
      if not os.path.exists(os.path.join(final, "prepared.json")):
        raise
  return _prepared_from(final)
