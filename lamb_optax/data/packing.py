"""Sequence packing: several short pretraining examples in one row, without cross-contamination.

At sequence length 512 about half of Wikipedia's BERT tokens are padding (Krell et al. 2021,
"Efficient Sequence Packing without Cross-contamination", arXiv:2107.02027); NVIDIA's and
Graphcore's BERT and the MLPerf submissions pack examples into rows instead. A packed row holds
up to K = ``max_examples_per_row`` examples back to back and these features
(P' = ``max_predictions_per_row``):

================================  =====  =======  ===============================================
feature                           shape  dtype    meaning
================================  =====  =======  ===============================================
``input_ids``, ``segment_ids``    (S,)   int32    the examples' tokens and sentence A/B ids
``input_mask``                    (S,)   int32    each token's example: 1..K, 0 = padding
``position_ids``                  (S,)   int32    position inside its own example (from 0)
``masked_lm_positions``           (P',)  int32    row positions of every example's masked tokens
``masked_lm_ids``                 (P',)  int32    their original ids
``masked_lm_weights``             (P',)  float32  1 for real predictions, 0 for padding
``next_sentence_positions``       (K,)   int32    each example's [CLS] position in the row
``next_sentence_labels``          (K,)   int32    each example's NSP label
``next_sentence_weights``         (K,)   float32  1 for an example, 0 for an empty slot
================================  =====  =======  ===============================================

The model attends only within an example (``input_mask`` as segment numbers), so a packed batch
gives the unpacked batch's losses and gradients: MLM averaged over the masked tokens, NSP over
the examples (``next_sentence_weights``), as before.

**The algorithm, and why not the paper's.** Krell et al.'s histogram packers (NNLSHP, SPFHP)
plan over the whole dataset's length histogram. The loader is a streaming Grain ``MapDataset``
whose elements are pure functions of their index (that is what makes its state one position,
exact resume, worker processes and host-count-independent batches possible), so packing must be
local and indexable too: the shuffled example stream is cut into *windows* of
``examples_per_window`` consecutive positions, and window ``w`` becomes rows
``[w·R, (w+1)·R)`` (``R = window_rows``). Its examples are placed in stream order, each into the
fullest of the ``R`` rows that still has room for its tokens, one more example and its
predictions (online best fit); the first example that fits nowhere ends the window, and it and
the rest of the window are skipped. The taken examples are a prefix of a shuffled stream, so
which examples are skipped does not depend on their length; what is skipped is re-drawn every
epoch. ``examples_per_window`` defaults to the count that fills ``R`` rows at the data's mean
length plus 5%, so a few percent of each epoch's positions are skipped (measured in
docs/data.md) and none is ever read.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

PACKED_FEATURES = ("input_ids", "input_mask", "segment_ids", "position_ids",
                   "masked_lm_positions", "masked_lm_ids", "masked_lm_weights",
                   "next_sentence_positions", "next_sentence_labels", "next_sentence_weights")
# The pool of a window holds this much more than the mean length says fills it: the windows'
# lengths vary, and a pool that runs out leaves its rows part empty.
_POOL_MARGIN = 0.05
_ESTIMATE_SAMPLE = 2048


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class PackingConfig:
  """How examples of length ``max_seq_length`` are packed into rows of the same length.

  ``max_predictions_per_row`` defaults to ``max_predictions_per_seq + max_examples_per_row``:
  an example of ``n`` tokens has at most ``max(1, round(0.15 n))`` predictions, so a full row
  has at most ``0.15 S + k`` of them, within Google's ``max_predictions_per_seq`` (20 at 128,
  80 at 512) plus ``k``; the packer never exceeds the width either way.

  Example:
    >>> PackingConfig(max_seq_length=128, max_predictions_per_seq=20).max_predictions_per_row
    24
    >>> PackingConfig(max_seq_length=128, max_predictions_per_seq=20, max_examples_per_row=0)
    Traceback (most recent call last):
    ...
    ValueError: max_examples_per_row must be an int >= 1, got 0.
  """
  max_seq_length: int
  max_predictions_per_seq: int
  max_examples_per_row: int = 4
  window_rows: int = 256
  examples_per_window: int | None = None  # None: estimated from the data (module docstring)
  max_predictions_per_row: int | None = None

  def __post_init__(self):
    for name in ("max_seq_length", "max_predictions_per_seq", "max_examples_per_row",
                 "window_rows"):
      value = getattr(self, name)
      if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
    for name in ("examples_per_window", "max_predictions_per_row"):
      value = getattr(self, name)
      if value is not None and (not _is_int(value) or value < 1):
        raise ValueError(f"{name} must be None or an int >= 1, got {value!r}.")
    if self.max_predictions_per_row is None:
      object.__setattr__(self, "max_predictions_per_row",
                         self.max_predictions_per_seq + self.max_examples_per_row)


def real_length(example: Mapping[str, np.ndarray]) -> int:
  """Tokens of an unpacked example ([CLS] A [SEP] B [SEP]; its mask is 1s then 0s)."""
  return int(np.count_nonzero(example["input_mask"]))


def _num_predictions(example: Mapping[str, np.ndarray]) -> int:
  return int(np.count_nonzero(np.asarray(example["masked_lm_weights"]) > 0))


class _Rows:
  """The rows of one window while it fills: room left in tokens, examples and predictions."""

  def __init__(self, num_rows: int, config: PackingConfig):
    self.config = config
    self.space = np.full(num_rows, config.max_seq_length, np.int64)
    self.count = np.zeros(num_rows, np.int64)
    self.predictions = np.full(num_rows, config.max_predictions_per_row, np.int64)

  def place(self, length: int, predictions: int) -> int | None:
    """The row an example goes to (the fullest that fits; ties: the first), or None."""
    fits = ((self.space >= length) & (self.count < self.config.max_examples_per_row)
            & (self.predictions >= predictions))
    if not fits.any():
      return None
    row = int(np.argmin(np.where(fits, self.space, np.iinfo(np.int64).max)))
    self.space[row] -= length
    self.count[row] += 1
    self.predictions[row] -= predictions
    return row


def assign_rows(lengths: Sequence[int], predictions: Sequence[int], num_rows: int,
                config: PackingConfig) -> list[int]:
  """The row of each example of a window, in order, up to the first that fits nowhere.

  ``len(result)`` examples are taken; the rest of the window is skipped.

  >>> config = PackingConfig(max_seq_length=10, max_predictions_per_seq=2)
  >>> assign_rows([6, 4, 3, 7, 2, 9], [1, 1, 1, 1, 1, 1], 2, config)
  [0, 0, 1, 1]
  """
  rows = _Rows(num_rows, config)
  taken: list[int] = []
  for length, count in zip(lengths, predictions, strict=True):
    if length > config.max_seq_length:
      raise ValueError(f"An example of {length} tokens does not fit in a row of "
                       f"max_seq_length={config.max_seq_length}.")
    row = rows.place(int(length), int(count))
    if row is None:
      break
    taken.append(row)
  return taken


def empty_row(config: PackingConfig) -> dict[str, np.ndarray]:
  """A row of padding only (all weights 0)."""
  s, p, k = config.max_seq_length, config.max_predictions_per_row, config.max_examples_per_row
  row = {name: np.zeros(s, np.int32) for name in PACKED_FEATURES[:4]}
  row.update({name: np.zeros(p, np.int32) for name in PACKED_FEATURES[4:6]})
  row["masked_lm_weights"] = np.zeros(p, np.float32)
  row.update({name: np.zeros(k, np.int32) for name in PACKED_FEATURES[7:9]})
  row["next_sentence_weights"] = np.zeros(k, np.float32)
  return row


def pack_rows(examples: Sequence[Mapping[str, np.ndarray]], rows_of: Sequence[int],
              num_rows: int, config: PackingConfig) -> list[dict[str, np.ndarray]]:
  """``num_rows`` packed rows holding ``examples[i]`` in row ``rows_of[i]``, in order."""
  rows = [empty_row(config) for _ in range(num_rows)]
  used = np.zeros(num_rows, np.int64)  # tokens, examples and predictions placed so far
  count = np.zeros(num_rows, np.int64)
  predicted = np.zeros(num_rows, np.int64)
  for example, r in zip(examples, rows_of, strict=True):
    row, start, k = rows[r], int(used[r]), int(count[r])
    n = real_length(example)
    end = start + n
    row["input_ids"][start:end] = example["input_ids"][:n]
    row["input_mask"][start:end] = k + 1
    row["segment_ids"][start:end] = example["segment_ids"][:n]
    row["position_ids"][start:end] = np.arange(n)
    real = np.asarray(example["masked_lm_weights"]) > 0
    m = int(np.count_nonzero(real))
    p0 = int(predicted[r])
    row["masked_lm_positions"][p0:p0 + m] = np.asarray(example["masked_lm_positions"])[real] + start
    row["masked_lm_ids"][p0:p0 + m] = np.asarray(example["masked_lm_ids"])[real]
    row["masked_lm_weights"][p0:p0 + m] = 1.0
    row["next_sentence_positions"][k] = start
    row["next_sentence_labels"][k] = int(np.asarray(example["next_sentence_labels"]).reshape(-1)[0])
    row["next_sentence_weights"][k] = 1.0
    used[r], count[r], predicted[r] = end, k + 1, p0 + m
  return rows


def pack_window(examples: Sequence[Mapping[str, np.ndarray]], num_rows: int,
                config: PackingConfig) -> tuple[list[dict[str, np.ndarray]], int]:
  """(``num_rows`` rows, how many of ``examples`` they hold: a prefix) for one window."""
  rows_of = assign_rows([real_length(e) for e in examples],
                        [_num_predictions(e) for e in examples], num_rows, config)
  return pack_rows(examples[:len(rows_of)], rows_of, num_rows, config), len(rows_of)


def examples_per_window(mean_length: float, config: PackingConfig) -> int:
  """The window's pool: enough examples of ``mean_length`` to fill its rows, plus a margin."""
  if config.examples_per_window is not None:
    return config.examples_per_window
  fill = config.window_rows * config.max_seq_length / max(mean_length, 1.0)
  return max(1, math.ceil(fill * (1 + _POOL_MARGIN)))


def mean_length(source: Any, sample: int = _ESTIMATE_SAMPLE) -> float:
  """Mean tokens per example over the first ``sample`` examples of ``source`` (stored order:
  the same on every host and after a restart)."""
  n = min(len(source), sample)
  if n == 0:
    raise ValueError("Cannot pack an empty dataset.")
  return float(np.mean([real_length(source[i]) for i in range(n)]))


class PackedDataset(grain.MapDataset):
  """Rows packed from a ``MapDataset`` of examples (module docstring): row ``i`` is a pure
  function of ``i``, like every element of the loader.

  A window is packed once per process and kept while its rows are read (Grain's read threads
  ask for neighbouring rows).
  """

  _CACHED_WINDOWS = 4

  def __init__(self, parent: grain.MapDataset, config: PackingConfig, pool: int):
    super().__init__(parent)
    self._config = config
    self._pool = pool
    self._windows = len(parent) // pool
    self._cache: dict[int, list[dict[str, np.ndarray]]] = {}
    self._lock = threading.Lock()

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_cache"], state["_lock"] = {}, None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return self._windows * self._config.window_rows

  def __str__(self) -> str:
    return (f"PackedDataset(window_rows={self._config.window_rows}, "
            f"examples_per_window={self._pool})")

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    window, row = divmod(index, self._config.window_rows)
    return {k: v.copy() for k, v in self._window(window)[row].items()}

  def _window(self, window: int) -> list[dict[str, np.ndarray]]:
    with self._lock:
      if window in self._cache:
        return self._cache[window]
    rows = self.pack(window)[0]
    with self._lock:
      self._cache[window] = rows
      while len(self._cache) > self._CACHED_WINDOWS:
        del self._cache[min(self._cache)]
    return rows

  def pack(self, window: int) -> tuple[list[dict[str, np.ndarray]], int]:
    """(rows of ``window``, examples taken from its pool); reads only the taken examples and
    the one that ended the window."""
    config, start = self._config, window * self._pool
    rows = _Rows(config.window_rows, config)
    examples, rows_of = [], []
    for position in range(start, start + self._pool):
      example = self._parent[position]
      r = rows.place(real_length(example), _num_predictions(example))
      if r is None:
        break
      examples.append(example)
      rows_of.append(r)
    return pack_rows(examples, rows_of, config.window_rows, config), len(examples)


def pack_dataset(examples: grain.MapDataset, config: PackingConfig,
                 mean_tokens: float) -> PackedDataset:
  """``examples`` (a ``MapDataset`` of unpacked examples) as packed rows."""
  return PackedDataset(examples, config, examples_per_window(mean_tokens, config))


def simulate(lengths: np.ndarray, predictions: np.ndarray,
             config: PackingConfig) -> dict[str, float]:
  """Packs a stream of example lengths (and prediction counts) window by window, as the loader
  would, and returns the padding fraction before and after, and the fraction skipped.

  >>> config = PackingConfig(max_seq_length=8, max_predictions_per_seq=2, window_rows=2,
  ...                        examples_per_window=5)
  >>> simulate(np.array([4, 4, 8, 3, 5] * 2), np.ones(10, int), config)
  {'padding_before': 0.4, 'padding_after': 0.0, 'skipped': 0.4, 'rows_per_example': 0.666667}
  """
  lengths, predictions = np.asarray(lengths), np.asarray(predictions)
  pool = examples_per_window(float(lengths.mean()), config)
  windows = len(lengths) // pool
  if windows == 0:
    raise ValueError(f"{len(lengths)} examples do not fill one window of {pool}.")
  tokens = taken = 0
  for w in range(windows):
    part = slice(w * pool, (w + 1) * pool)
    rows_of = assign_rows(lengths[part], predictions[part], config.window_rows, config)
    taken += len(rows_of)
    tokens += int(lengths[part][:len(rows_of)].sum())
  used = lengths[:windows * pool]
  rows = windows * config.window_rows
  return {"padding_before": round(1 - float(used.mean()) / config.max_seq_length, 6),
          "padding_after": round(1 - tokens / (rows * config.max_seq_length), 6),
          "skipped": round(1 - taken / (windows * pool), 6),
          "rows_per_example": round(rows / taken, 6)}
