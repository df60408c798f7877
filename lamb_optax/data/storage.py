"""BERT pretraining examples on disk: a TFDS dataset in ``array_record`` format, TensorFlow-free.

:func:`write_pretraining_dataset` streams examples through a ``tfds`` ``GeneratorBasedBuilder``
(which needs no TensorFlow for ``file_format="array_record"``) into a temporary directory beside
the target and renames it into place only once every split is complete, so an interrupted or
failed run never leaves a directory that looks finished. TFDS shuffles the examples of each split
globally while writing (spilling to disk beyond ~1 GB), which mixes the documents of the windows
that :func:`lamb_optax.data.create_pretraining_dataset` streams through.

The result is a plain TFDS dataset directory: ``tfds.builder_from_directory(d).as_data_source(s)``
reads it, and so does :func:`load_pretraining_dataset`, which adds clear errors and fixed dtypes.

>>> import numpy as np, tempfile, os
>>> d = os.path.join(tempfile.mkdtemp(), "ds")
>>> ex = {"input_ids": np.arange(8, dtype=np.int32), "input_mask": np.ones(8, np.int32),
...       "segment_ids": np.zeros(8, np.int32), "masked_lm_positions": np.array([1, 2], np.int32),
...       "masked_lm_ids": np.array([5, 6], np.int32),
...       "masked_lm_weights": np.ones(2, np.float32), "next_sentence_labels": np.int32(0)}
>>> counts = write_pretraining_dataset({"train": [ex] * 3}, d, max_seq_length=8,
...                                    max_predictions_per_seq=2, progress=False)
>>> counts, len(load_pretraining_dataset(d, "train"))
({'train': 3}, 3)
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from etils import epath

from lamb_optax.data.pretraining import FEATURES

_DTYPES = {name: np.int32 for name in FEATURES} | {"masked_lm_weights": np.float32}
DATASET_NAME = "bert_pretraining"
_VERSION = "1.0.0"

Examples = Iterable[dict] | Callable[[], Iterable[dict]]
# The files of a dataset written here: --overwrite deletes these and nothing else.
_OWN_FILE = re.compile(rf"^(dataset_info\.json|features\.json|metadata\.json|"
                       rf"{DATASET_NAME}-[\w.-]+\.array_record-\d+-of-\d+)$")
# Held (flock) by the process building in an ``.incomplete-`` directory: a directory whose lock
# can be taken belongs to a process that died, and is removed by the next build beside it.
BUILD_LOCK_FILE = ".lamb_optax-build.lock"
_log = logging.getLogger(__name__)


def _tfds():
  # TFDS is imported lazily: it is slow to import and only the data paths need it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def _builder_class():
  """The builder class, defined on first use (tfds registers builders by name at definition)."""
  global _BUILDER
  if _BUILDER is not None:
    return _BUILDER
  tfds = _tfds()

  class BertPretraining(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """BERT pretraining examples (Google's create_pretraining_data features), any source."""
    name = DATASET_NAME
    VERSION = tfds.core.Version(_VERSION)

    # The builder has no download checksums to find beside its code; without this TFDS locates
    # the code through `importlib_resources`, a package TF-free installs may lack.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):  # pylint: disable=no-self-argument
      return None

    def __init__(self, *, splits: Mapping[str, Examples], max_seq_length: int,
                 max_predictions_per_seq: int, description: str,
                 metadata: Mapping[str, Any], counts: dict, **kwargs):
      self._splits, self._counts = splits, counts
      self._shapes = (max_seq_length, max_predictions_per_seq)
      self._description, self._metadata = description, dict(metadata)
      super().__init__(**kwargs)

    def _info(self):
      seq, preds = self._shapes
      tensor = tfds.features.Tensor
      return tfds.core.DatasetInfo(
          builder=self, description=self._description,
          features=tfds.features.FeaturesDict({
              "input_ids": tensor(shape=(seq,), dtype=np.int32),
              "input_mask": tensor(shape=(seq,), dtype=np.int32),
              "segment_ids": tensor(shape=(seq,), dtype=np.int32),
              "masked_lm_positions": tensor(shape=(preds,), dtype=np.int32),
              "masked_lm_ids": tensor(shape=(preds,), dtype=np.int32),
              "masked_lm_weights": tensor(shape=(preds,), dtype=np.float32),
              "next_sentence_labels": tensor(shape=(), dtype=np.int32),
          }),
          metadata=tfds.core.MetadataDict(self._metadata))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in self._splits}

    def _generate_examples(self, split):
      examples = self._splits[split]
      examples = examples() if callable(examples) else examples
      count = 0
      for example in examples:
        yield count, {name: np.asarray(example[name], _DTYPES[name]) for name in FEATURES}
        count += 1
      if count == 0:
        raise ValueError(f"Split {split!r} produced no examples: the input is too small to make "
                         "a single example (it needs at least one document with two or more "
                         "tokens that fit the sequence).")
      self._counts[split] = count

  _BUILDER = BertPretraining
  return _BUILDER


_BUILDER = None


@contextlib.contextmanager
def _progress(enabled: bool):
  # TFDS's switch is a module global without a getter: read it to restore it afterwards.
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=g-import-not-at-top
  before = getattr(tqdm_utils, "_active", True)
  tqdm_utils.display_progress_bar(enabled and before)
  try:
    if enabled:
      yield
    else:  # TFDS also prints "Downloading and preparing dataset ..." on stdout.
      with contextlib.redirect_stdout(io.StringIO()):
        yield
  finally:
    tqdm_utils.display_progress_bar(before)


def write_pretraining_dataset(splits: Mapping[str, Examples], output_dir: str, *,
                              max_seq_length: int, max_predictions_per_seq: int,
                              description: str = "BERT pretraining examples.",
                              metadata: Mapping[str, Any] | None = None,
                              overwrite: bool = False, progress: bool = True) -> dict[str, int]:
  """Writes ``{split: examples}`` as a TFDS array_record dataset directory at ``output_dir``.

  Args:
    splits: split name -> an iterable of example dicts (``FEATURES``), or a zero-argument
      callable returning one (called once, lazily, so inputs can stream).
    output_dir: the dataset directory to create (``dataset_info.json`` ends up directly in it).
    max_seq_length: length of ``input_ids``/``input_mask``/``segment_ids``.
    max_predictions_per_seq: length of the ``masked_lm_*`` features.
    description: stored in ``dataset_info.json``.
    metadata: JSON-able facts stored with the dataset (vocab size, masking config, ...), read
      back by :func:`dataset_metadata`.
    overwrite: replace an existing ``output_dir``; otherwise an existing one is an error.
    progress: show TFDS's progress bars.

  Returns:
    The number of examples written per split.

  Raises:
    FileExistsError: ``output_dir`` exists and ``overwrite`` is False.
    ValueError: a split produced no examples (nothing is left at ``output_dir``).
  """
  output_dir = os.path.abspath(output_dir)
  check_output_dir(output_dir, overwrite)
  parent = os.path.dirname(output_dir)
  os.makedirs(parent, exist_ok=True)
  # The temp dir sits beside the target so that the final os.rename stays on one filesystem.
  with build_directory(parent, f".{os.path.basename(output_dir)}.incomplete-") as tmp:
    counts: dict[str, int] = {}
    builder = _builder_class()(
        splits=splits, max_seq_length=max_seq_length,
        max_predictions_per_seq=max_predictions_per_seq, description=description,
        metadata=metadata or {}, counts=counts, data_dir=os.path.join(tmp, "tfds"),
        file_format="array_record")
    with _progress(progress):
      builder.download_and_prepare()
    built = os.path.join(tmp, "dataset")
    os.rename(builder.data_dir, built)
    if os.path.lexists(output_dir):
      _remove_own_dataset(output_dir)
    os.rename(built, output_dir)
    return {split: counts[split] for split in splits}


def _foreign_entries(directory: str) -> list[str]:
  """What in ``directory`` is not a file of a dataset written here (empty: all ours)."""
  entries = sorted(os.listdir(directory))
  foreign = [e for e in entries
             if not _OWN_FILE.match(e) or not os.path.isfile(os.path.join(directory, e))
             or os.path.islink(os.path.join(directory, e))]
  if entries and not foreign:
    try:
      with open(os.path.join(directory, "dataset_info.json"), encoding="utf-8") as f:
        name = json.load(f).get("name")
    except (OSError, ValueError):
      name = None
    if name != DATASET_NAME:
      foreign = [f"dataset_info.json (of dataset {name!r}, not {DATASET_NAME!r})"]
  return foreign


def check_output_dir(output_dir: str, overwrite: bool) -> None:
  """Refuses an ``output_dir`` that exists, unless ``overwrite`` and it is our own dataset.

  ``overwrite`` replaces only a directory that holds nothing but the files of a dataset written
  by :func:`write_pretraining_dataset` (or an empty one): never an input corpus, ``.`` or a
  home directory that happens to be passed as ``--output_dir``.

  Raises:
    FileExistsError: naming what is there and what to do.
  """
  if not os.path.lexists(output_dir):
    return
  if not overwrite:
    raise FileExistsError(f"{output_dir} already exists; pass overwrite=True (--overwrite) or "
                          "choose another output directory.")
  if os.path.islink(output_dir) or not os.path.isdir(output_dir):
    raise FileExistsError(f"--overwrite refuses to replace {output_dir}: it is not a directory "
                          "(a file or a link). Choose another --output_dir.")
  foreign = _foreign_entries(output_dir)
  if foreign:
    shown = ", ".join(foreign[:10]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 10
                                       else "")
    raise FileExistsError(
        f"--overwrite refuses to replace {output_dir}: it is not (only) a pretraining dataset "
        f"written by lamb_optax; it holds {shown}. Choose another --output_dir, or empty it "
        "yourself.")


def _remove_own_dataset(output_dir: str) -> None:
  """Deletes the dataset files in ``output_dir`` one by one, then the (empty) directory."""
  check_output_dir(output_dir, overwrite=True)  # again: it may have changed during the build
  for entry in os.listdir(output_dir):
    os.remove(os.path.join(output_dir, entry))
  os.rmdir(output_dir)  # fails, deleting nothing more, if a file appeared meanwhile


def _remove_stale_builds(parent: str, prefix: str) -> None:
  """Removes ``prefix*`` build directories whose builder died (their lock is free)."""
  for name in os.listdir(parent):
    if not name.startswith(prefix):
      continue
    try:  # read-only: never (re)create a lock file in a directory its builder is removing
      lock = open(os.path.join(parent, name, BUILD_LOCK_FILE), "rb")
    except OSError:
      continue  # no lock file: not (or no longer) a build directory of ours; leave it alone
    with lock:
      try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        continue  # a live process is building there
      _log.warning("Removing %s, left by an interrupted build.", os.path.join(parent, name))
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


@contextlib.contextmanager
def build_directory(parent: str, prefix: str) -> Iterator[str]:
  """A fresh hidden ``parent/prefix*`` directory to build in, removed on exit.

  The directory is locked (``flock``) while this process builds in it; entering also removes
  the ``prefix*`` directories that killed builds left behind (their lock is free), so an
  interrupted run leaves nothing behind for longer than the next run beside it.
  """
  os.makedirs(parent, exist_ok=True)
  _remove_stale_builds(parent, prefix)
  tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
  try:
    # The lock file appears under its own name only once locked (a rename keeps the inode and
    # so the lock): a builder starting beside this one never sees it unlocked and removes it.
    with open(os.path.join(tmp, BUILD_LOCK_FILE + ".new"), "wb") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      os.rename(lock.name, os.path.join(tmp, BUILD_LOCK_FILE))
      yield tmp
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


class PretrainingSource:
  """Random access to one split: ``len(source)``, ``source[i]`` -> dict of numpy features.

  Wraps TFDS's ``ArrayRecordDataSource`` so that every feature comes back as a numpy array of
  the contract's dtype (TFDS decodes scalars to Python ints). Picklable, so Grain's worker
  processes can hold it.
  """

  def __init__(self, data_source, *, directory: str, split: str, metadata: Mapping[str, Any]):
    self._source = data_source
    self.directory, self.split, self.metadata = directory, split, dict(metadata)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    record = self._source[index]
    return {name: np.asarray(record[name], _DTYPES[name]) for name in FEATURES}

  def __repr__(self) -> str:
    return f"PretrainingSource({self.directory!r}, split={self.split!r}, len={len(self)})"


def _find_dataset_dir(path: str) -> str | None:
  """``path`` itself, or the single ``<name>/<version>`` (or ``<version>``) dir below it.

  Paths go through ``etils.epath``, so ``gs://`` directories work like local ones.
  """
  root = epath.Path(path)
  if (root / "dataset_info.json").is_file():
    return str(root)
  for pattern in ("*/dataset_info.json", "*/*/dataset_info.json", "*/*/*/dataset_info.json"):
    found = sorted(root.glob(pattern))
    if len(found) == 1:
      return str(found[0].parent)
  return None


def _is_dir(path: str) -> bool:
  try:
    return epath.Path(path).is_dir()
  except Exception:  # pylint: disable=broad-except  (e.g. gs:// without a GCS filesystem)
    return False


def load_pretraining_dataset(directory_or_name: str, split: str, *,
                             data_dir: str | None = None) -> PretrainingSource:
  """Opens one split of a pretraining dataset for random access (Grain's ``MapDataset.source``).

  Args:
    directory_or_name: a dataset directory written by :func:`write_pretraining_dataset` or
      ``scripts/create_pretraining_data.py`` (or a directory holding exactly one TFDS dataset),
      or the name of a TFDS dataset prepared in ``data_dir`` in array_record format.
    split: e.g. ``"train"``, ``"validation"``, or a TFDS slice such as ``"train[:1000]"``.
    data_dir: where TFDS looks for ``directory_or_name`` when it is a name.

  Raises:
    FileNotFoundError / ValueError: naming what exists when the directory, name or split is
      unknown, or when the examples lack the BERT features.
  """
  tfds = _tfds()
  if _is_dir(directory_or_name):
    directory = _find_dataset_dir(directory_or_name)
    if directory is None:
      raise FileNotFoundError(
          f"{directory_or_name} holds no TFDS dataset (no dataset_info.json in it or in a single "
          "<name>/<version> subdirectory). Create one with scripts/create_pretraining_data.py.")
    builder = tfds.builder_from_directory(directory)
  elif (os.sep in directory_or_name or directory_or_name.startswith(".")
        or "://" in directory_or_name):
    raise FileNotFoundError(f"No dataset directory {directory_or_name!r}.")
  else:
    try:
      builder = tfds.builder(directory_or_name, data_dir=data_dir)
    except Exception as e:  # tfds raises several types (DatasetNotFoundError, registry errors)
      raise ValueError(f"Unknown TFDS dataset {directory_or_name!r} (data_dir={data_dir}): "
                       f"{str(e).splitlines()[0]}") from e
    if not builder.is_prepared():
      raise FileNotFoundError(f"TFDS dataset {directory_or_name!r} is not prepared in "
                              f"{builder.data_dir}; prepare it first (array_record format).")
    directory = builder.data_dir
  splits = sorted(builder.info.splits.keys())
  base_split = split.split("[", 1)[0]
  if base_split not in splits:
    raise ValueError(f"{directory} has no split {split!r}; it has {splits}.")
  missing = [name for name in FEATURES if name not in builder.info.features]
  if missing:
    raise ValueError(f"{directory} is not a BERT pretraining dataset: it lacks features "
                     f"{missing} (it has {sorted(builder.info.features)}).")
  try:
    source = builder.as_data_source(split)
  except NotImplementedError as e:
    raise ValueError(f"{directory} is not stored as array_record, which random access needs: "
                     f"{e}") from e
  return PretrainingSource(source, directory=directory, split=split,
                           metadata=dict(builder.info.metadata or {}))


def dataset_metadata(directory: str) -> dict[str, Any]:
  """The ``metadata`` stored by :func:`write_pretraining_dataset` (vocab size, masking, ...)."""
  found = _find_dataset_dir(directory)
  if found is None:
    raise FileNotFoundError(f"{directory} holds no TFDS dataset.")
  path = epath.Path(found) / "metadata.json"
  if not path.exists():
    return {}
  return json.loads(path.read_text(encoding="utf-8"))


def check_vocab_matches(metadata: Mapping[str, Any], vocab_size: int, *,
                        dataset: str = "the dataset", exact: bool = True) -> None:
  """Refuses a vocabulary of another size than the one the dataset was created with.

  Args:
    metadata: the dataset's stored metadata (:func:`dataset_metadata`, or
      ``PretrainingSource.metadata``); its ``"vocab_size"`` is the vocabulary of its ids.
    vocab_size: the vocabulary (or model embedding) size the run uses.
    dataset: how to name the dataset in the error (e.g. its directory).
    exact: require equal sizes; False only refuses a ``vocab_size`` too small for the ids
      (e.g. an embedding table padded to a multiple of 128).

  Datasets written without ``vocab_size`` in their metadata are not checked.

  Raises:
    ValueError: naming both sizes and the fix.

  >>> check_vocab_matches({"vocab_size": 8192}, 8192)
  >>> check_vocab_matches({"vocab_size": 8192}, 1000, dataset="/data/wiki")
  Traceback (most recent call last):
  ...
  ValueError: /data/wiki was created with a vocabulary of 8192 ids, but the run uses 1000 ...
  """
  stored = metadata.get("vocab_size")
  if stored is None:
    return
  stored = int(stored)
  if stored == vocab_size or (not exact and vocab_size >= stored):
    return
  consequence = (f"ids up to {stored - 1} do not fit its embedding table and train to NaN"
                 if vocab_size < stored else "the ids would mean other words")
  raise ValueError(
      f"{dataset} was created with a vocabulary of {stored} ids, but the run uses {vocab_size} "
      f"({consequence}). Use the vocab.txt the dataset was created with (its metadata names "
      f"it: {metadata.get('vocab_file', 'not recorded')}), or recreate the dataset with this "
      "vocabulary.")
