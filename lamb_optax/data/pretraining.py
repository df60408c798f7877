"""BERT pretraining examples (next-sentence pairs + masked LM) with the semantics of Google's
`create_pretraining_data.py`, seeded with a NumPy Generator.

`create_examples` turns documents (lists of sentences, each a list of token ids) into examples:

* Per document and per duplication pass (`dupe_factor` passes, each masked afresh), a target length
  is drawn ONCE: `max_seq_length - 3`, or with probability `short_seq_prob` a uniform integer in
  [2, max_seq_length - 3] (Google draws it per document, not per example; kept for comparability).
* Sentences are gathered into a chunk until it reaches the target (or the document ends); a random
  prefix of the chunk (at least one sentence) is segment A. With probability 1/2 -- and always when
  the chunk is a single sentence -- B is "random" (`next_sentence_labels` 1): sentences of another
  document (up to 10 draws to find a different one), from a random start, until A + B reach the
  target; the chunk's unused sentences go back to the stream. Otherwise B is the rest of the chunk
  (label 0).
* The pair is truncated to `max_seq_length - 3` tokens by removing tokens from the longer segment,
  each from its front or back with probability 1/2 (Google's `truncate_seq_pair`).
* `[CLS] A [SEP] B [SEP]`, `segment_ids` 0 on `[CLS] A [SEP]` and 1 on `B [SEP]`, zero padding.
* Masking: `num_to_predict = min(max_predictions_per_seq, max(1, round(len(tokens) *
  masked_lm_prob)))` where `len(tokens)` counts [CLS] and [SEP]; candidates are all real tokens
  except [CLS]/[SEP] (with whole-word masking, a "##" piece joins the word before it); candidates
  are visited in random order, skipping a word that would overshoot `num_to_predict`. Each chosen
  token becomes [MASK] with probability 0.8, stays with 0.1, and becomes a uniformly random
  vocabulary id with 0.1 (decided per token, also under whole-word masking, as in Google's code).

Differences from Google's script, on purpose:
* No final global shuffle: Google shuffles all examples in memory; here examples stream out in
  (pass, document) order and the loader shuffles.
* The random stream is NumPy's, so the examples are not bit-identical to Google's, only the
  distributions. Truncation draws the number of front removals of each segment as a binomial, which
  has the same distribution as Google's token-by-token coin flips.
* Whole-word masking only joins a "##" piece to the token directly before it: Google's loop skips
  [SEP]/[CLS] and would join a "##" piece that starts segment B to the last word of segment A.
* Empty sentences and documents are skipped (Google's reader drops them when reading text).

`mask_example` applies the same masking to an unmasked example (dynamic masking in the loader,
vectorised NumPy); `unmask_example` inverts it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from lamb_optax.data.tokenizer import SpecialIds

FEATURES = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
            "masked_lm_weights", "next_sentence_labels")
UNMASKED_FEATURES = ("input_ids", "input_mask", "segment_ids", "next_sentence_labels")
# [CLS] A [SEP] B [SEP] with non-empty A and B.
MIN_SEQ_LENGTH = 5
_NUM_SPECIAL_POSITIONS = 3
_RANDOM_DOCUMENT_TRIES = 10


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  """Sequence length and masked-LM settings (Google's flags of the same names).

  Example:
    >>> MaskingConfig(max_seq_length=128, max_predictions_per_seq=200)
    Traceback (most recent call last):
    ...
    ValueError: max_predictions_per_seq 200 exceeds the 125 maskable positions ...
  """
  max_seq_length: int = 128
  max_predictions_per_seq: int = 20
  masked_lm_prob: float = 0.15
  whole_word_mask: bool = False

  def __post_init__(self):
    if not _is_int(self.max_seq_length) or self.max_seq_length < MIN_SEQ_LENGTH:
      raise ValueError(
          f"max_seq_length must be an int >= {MIN_SEQ_LENGTH} ([CLS] A [SEP] B [SEP] with "
          f"non-empty A and B), got {self.max_seq_length!r}; use e.g. 128 or 512.")
    maskable = self.max_seq_length - _NUM_SPECIAL_POSITIONS
    if not _is_int(self.max_predictions_per_seq) or self.max_predictions_per_seq < 1:
      raise ValueError(f"max_predictions_per_seq must be a positive int, got "
                       f"{self.max_predictions_per_seq!r}; Google uses 20 at length 128, 80 at "
                       "512.")
    if self.max_predictions_per_seq > maskable:
      raise ValueError(
          f"max_predictions_per_seq {self.max_predictions_per_seq} exceeds the {maskable} maskable "
          f"positions of a {self.max_seq_length}-token sequence (max_seq_length - 3: [CLS] and two "
          f"[SEP] are never masked); set it to at most {maskable} (Google: 20 at 128, 80 at 512).")
    if not isinstance(self.masked_lm_prob, (int, float)) or not 0.0 < self.masked_lm_prob <= 1.0:
      raise ValueError(f"masked_lm_prob must be in (0, 1], got {self.masked_lm_prob!r}; "
                       "BERT uses 0.15.")
    if not isinstance(self.whole_word_mask, (bool, np.bool_)):
      raise ValueError(f"whole_word_mask must be a bool, got {self.whole_word_mask!r}.")


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
  """Settings of `create_examples` (Google's flags of the same names).

  Example:
    >>> ExampleConfig(dupe_factor=0)
    Traceback (most recent call last):
    ...
    ValueError: dupe_factor must be an int >= 1 ...
  """
  masking: MaskingConfig = MaskingConfig()
  short_seq_prob: float = 0.1
  dupe_factor: int = 10
  random_seed: int = 12345

  def __post_init__(self):
    if not isinstance(self.masking, MaskingConfig):
      raise ValueError(f"masking must be a MaskingConfig, got {type(self.masking).__name__}.")
    if not isinstance(self.short_seq_prob, (int, float)) or not 0.0 <= self.short_seq_prob <= 1.0:
      raise ValueError(f"short_seq_prob must be in [0, 1], got {self.short_seq_prob!r}; "
                       "BERT uses 0.1.")
    if not _is_int(self.dupe_factor) or self.dupe_factor < 1:
      raise ValueError(f"dupe_factor must be an int >= 1 (the number of differently masked copies "
                       f"of the data), got {self.dupe_factor!r}; BERT uses 10.")
    if not _is_int(self.random_seed):
      raise ValueError(f"random_seed must be an int, got {self.random_seed!r}.")


def _check_vocab(vocab_size: int, special: SpecialIds, continuation: np.ndarray | None,
                 masking: MaskingConfig) -> None:
  ids = (special.pad, special.unk, special.cls, special.sep, special.mask)
  if not _is_int(vocab_size) or vocab_size <= max(ids):
    raise ValueError(f"vocab_size {vocab_size!r} must exceed every special id ({special}).")
  if continuation is not None and np.shape(continuation) != (vocab_size,):
    raise ValueError(f"continuation must be a bool array of shape ({vocab_size},) (one entry per "
                     f"vocabulary id; see tokenizer.continuation_mask), got shape "
                     f"{np.shape(continuation)}.")
  if masking.whole_word_mask and continuation is None:
    raise ValueError("whole_word_mask=True needs continuation (tokenizer.continuation_mask(tok)) "
                     "to know which pieces continue a word.")


def _choose_positions(real_ids: np.ndarray, rng: np.random.Generator, special: SpecialIds,
                      continuation: np.ndarray | None, masking: MaskingConfig) -> np.ndarray:
  """Sorted positions to predict among the real tokens `real_ids` (Google's candidate order)."""
  num_to_predict = min(masking.max_predictions_per_seq,
                       max(1, int(round(len(real_ids) * masking.masked_lm_prob))))
  candidates = np.flatnonzero((real_ids != special.cls) & (real_ids != special.sep))
  if not masking.whole_word_mask:
    chosen = candidates[rng.permutation(len(candidates))[:num_to_predict]]
    return np.sort(chosen)
  # A word = a candidate plus the "##" pieces directly after it.
  if len(candidates) == 0:
    return candidates
  joins = continuation[real_ids[candidates]]
  joins[0] = False
  joins[1:] &= candidates[1:] - candidates[:-1] == 1
  word = np.cumsum(~joins) - 1
  sizes = np.bincount(word)
  order = rng.permutation(len(sizes))
  # Google visits words in random order, stops once num_to_predict are chosen and skips a word
  # that would overshoot. Every word before the first overshoot is taken: do those at once.
  taken = np.cumsum(sizes[order])
  n_prefix = int(np.searchsorted(taken, num_to_predict, side="right"))
  accepted = np.zeros(len(sizes), bool)
  accepted[order[:n_prefix]] = True
  count = int(taken[n_prefix - 1]) if n_prefix else 0
  if count < num_to_predict:
    for w, size in zip(order[n_prefix:].tolist(), sizes[order[n_prefix:]].tolist(), strict=True):
      if count + size <= num_to_predict:
        accepted[w] = True
        count += size
        if count >= num_to_predict:
          break
  return candidates[accepted[word]]


def _masked_features(input_ids: np.ndarray, n_real: int, rng: np.random.Generator, vocab_size: int,
                     special: SpecialIds, continuation: np.ndarray | None,
                     masking: MaskingConfig) -> dict[str, np.ndarray]:
  positions = _choose_positions(input_ids[:n_real], rng, special, continuation, masking)
  labels = input_ids[positions]
  n = len(positions)
  draws = rng.random((2, n))
  random_ids = rng.integers(0, vocab_size, n)
  replaced = np.where(draws[0] < 0.8, special.mask, np.where(draws[1] < 0.5, labels, random_ids))
  masked_ids = input_ids.astype(np.int32, copy=True)
  masked_ids[positions] = replaced
  p = masking.max_predictions_per_seq
  lm_positions = np.zeros(p, np.int32)
  lm_ids = np.zeros(p, np.int32)
  lm_weights = np.zeros(p, np.float32)
  lm_positions[:n] = positions
  lm_ids[:n] = labels
  lm_weights[:n] = 1.0
  return {"input_ids": masked_ids, "masked_lm_positions": lm_positions, "masked_lm_ids": lm_ids,
          "masked_lm_weights": lm_weights}


def mask_example(example: Mapping[str, np.ndarray], rng: np.random.Generator, *, vocab_size: int,
                 special: SpecialIds, continuation: np.ndarray | None,
                 masking: MaskingConfig) -> dict[str, np.ndarray]:
  """Masks an UNMASKED example (`UNMASKED_FEATURES`; other keys are ignored), Google's procedure.

  Returns all `FEATURES` as new arrays (int32, `masked_lm_weights` float32). Used for dynamic
  masking in the loader, so it is vectorised per example.

  Example:
    >>> special = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
    >>> example = {"input_ids": np.array([2, 10, 11, 12, 3, 13, 14, 3, 0, 0], np.int32),
    ...            "input_mask": np.array([1] * 8 + [0] * 2, np.int32),
    ...            "segment_ids": np.array([0] * 5 + [1] * 3 + [0] * 2, np.int32),
    ...            "next_sentence_labels": np.array(0, np.int32)}
    >>> masking = MaskingConfig(max_seq_length=10, max_predictions_per_seq=2)
    >>> out = mask_example(example, np.random.default_rng(0), vocab_size=20, special=special,
    ...                    continuation=None, masking=masking)
    >>> out["masked_lm_weights"]
    array([1., 0.], dtype=float32)
    >>> bool(np.all(unmask_example(out)["input_ids"] == example["input_ids"]))
    True
  """
  _check_vocab(vocab_size, special, continuation, masking)
  input_ids = np.asarray(example["input_ids"])
  input_mask = np.asarray(example["input_mask"])
  if input_ids.shape != (masking.max_seq_length,) or input_mask.shape != input_ids.shape:
    raise ValueError(f"mask_example takes one example with input_ids and input_mask of shape "
                     f"({masking.max_seq_length},) (masking.max_seq_length), got "
                     f"{input_ids.shape} and {input_mask.shape}.")
  n_real = int(np.count_nonzero(input_mask))
  out = _masked_features(input_ids, n_real, rng, vocab_size, special, continuation, masking)
  out["input_mask"] = input_mask.astype(np.int32)
  out["segment_ids"] = np.asarray(example["segment_ids"]).astype(np.int32)
  out["next_sentence_labels"] = np.asarray(example["next_sentence_labels"], np.int32)
  return {k: out[k] for k in FEATURES}


def unmask_example(example: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The unmasked example (`UNMASKED_FEATURES`): masked_lm_ids put back at masked_lm_positions.

  Works on one example or a batch (leading axes). Padding predictions (weight 0) are ignored.

  Example:
    >>> masked = {"input_ids": np.array([2, 4, 11, 3]), "input_mask": np.ones(4, np.int32),
    ...           "segment_ids": np.zeros(4, np.int32), "next_sentence_labels": np.array(0),
    ...           "masked_lm_positions": np.array([1, 0]), "masked_lm_ids": np.array([10, 0]),
    ...           "masked_lm_weights": np.array([1.0, 0.0])}
    >>> unmask_example(masked)["input_ids"]
    array([ 2, 10, 11,  3], dtype=int32)
  """
  input_ids = np.array(example["input_ids"], np.int32)
  positions = np.asarray(example["masked_lm_positions"])
  current = np.take_along_axis(input_ids, positions, axis=-1)
  restored = np.where(np.asarray(example["masked_lm_weights"]) > 0,
                      np.asarray(example["masked_lm_ids"]), current)
  np.put_along_axis(input_ids, positions, restored.astype(np.int32), axis=-1)
  return {"input_ids": input_ids,
          "input_mask": np.asarray(example["input_mask"]).astype(np.int32),
          "segment_ids": np.asarray(example["segment_ids"]).astype(np.int32),
          "next_sentence_labels": np.asarray(example["next_sentence_labels"]).astype(np.int32)}


def _sentences(document: Sequence[Sequence[int]]) -> list[np.ndarray]:
  return [s for s in (np.asarray(s, np.int32).reshape(-1) for s in document) if s.size]


def _truncate_pair(a: np.ndarray, b: np.ndarray, max_num_tokens: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Google's truncate_seq_pair: trim the longer segment, each token from the front or back."""
  len_a, len_b = len(a), len(b)
  if len_a + len_b <= max_num_tokens:
    return a, b
  # Which segment loses a token depends only on the lengths, so count first, then split each
  # segment's removals between front and back with the same distribution as per-token coin flips.
  while len_a + len_b > max_num_tokens:
    if len_a > len_b:
      len_a -= 1
    else:
      len_b -= 1
  front_a = rng.binomial(len(a) - len_a, 0.5)
  front_b = rng.binomial(len(b) - len_b, 0.5)
  return a[front_a:front_a + len_a], b[front_b:front_b + len_b]


def _document_examples(documents, doc_index: int, document: list[np.ndarray],
                       nonempty: np.ndarray, rng: np.random.Generator, vocab_size: int,
                       special: SpecialIds, continuation: np.ndarray | None,
                       config: ExampleConfig) -> Iterator[dict[str, np.ndarray]]:
  """Google's create_instances_from_document, masked, as feature dicts."""
  masking = config.masking
  max_num_tokens = masking.max_seq_length - _NUM_SPECIAL_POSITIONS
  target_seq_length = max_num_tokens
  if rng.random() < config.short_seq_prob:
    target_seq_length = int(rng.integers(2, max_num_tokens + 1))
  chunk: list[np.ndarray] = []
  chunk_length = 0
  i = 0
  while i < len(document):
    chunk.append(document[i])
    chunk_length += len(document[i])
    if i == len(document) - 1 or chunk_length >= target_seq_length:
      a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
      tokens_a = np.concatenate(chunk[:a_end])
      if len(chunk) == 1 or rng.random() < 0.5:
        is_random_next = 1
        target_b_length = target_seq_length - len(tokens_a)
        for _ in range(_RANDOM_DOCUMENT_TRIES):
          random_index = int(nonempty[rng.integers(len(nonempty))])
          if random_index != doc_index:
            break
        random_document = _sentences(documents[random_index])
        pieces, b_length = [], 0
        for j in range(int(rng.integers(len(random_document))), len(random_document)):
          pieces.append(random_document[j])
          b_length += len(random_document[j])
          if b_length >= target_b_length:
            break
        tokens_b = np.concatenate(pieces)
        # The chunk's unused sentences go back to the stream.
        i -= len(chunk) - a_end
      else:
        is_random_next = 0
        tokens_b = np.concatenate(chunk[a_end:])
      tokens_a, tokens_b = _truncate_pair(tokens_a, tokens_b, max_num_tokens, rng)
      yield _pack(tokens_a, tokens_b, is_random_next, rng, vocab_size, special, continuation,
                  masking)
      chunk = []
      chunk_length = 0
    i += 1


def _pack(tokens_a: np.ndarray, tokens_b: np.ndarray, is_random_next: int,
          rng: np.random.Generator, vocab_size: int, special: SpecialIds,
          continuation: np.ndarray | None, masking: MaskingConfig) -> dict[str, np.ndarray]:
  length = masking.max_seq_length
  n_a, n_real = len(tokens_a) + 2, len(tokens_a) + len(tokens_b) + 3
  input_ids = np.full(length, special.pad, np.int32)
  input_ids[0] = special.cls
  input_ids[1:n_a - 1] = tokens_a
  input_ids[n_a - 1] = special.sep
  input_ids[n_a:n_real - 1] = tokens_b
  input_ids[n_real - 1] = special.sep
  input_mask = np.zeros(length, np.int32)
  input_mask[:n_real] = 1
  segment_ids = np.zeros(length, np.int32)
  segment_ids[n_a:n_real] = 1
  out = _masked_features(input_ids, n_real, rng, vocab_size, special, continuation, masking)
  out["input_mask"] = input_mask
  out["segment_ids"] = segment_ids
  out["next_sentence_labels"] = np.array(is_random_next, np.int32)
  return {k: out[k] for k in FEATURES}


def create_examples(documents: Sequence[Sequence[Sequence[int]]], *, vocab_size: int,
                    special: SpecialIds, continuation: np.ndarray | None,
                    config: ExampleConfig) -> Iterator[dict[str, np.ndarray]]:
  """Masked NSP + MLM examples from tokenized documents, Google's semantics (see module docstring).

  Args:
    documents: random-access sequence of documents; a document is a sequence of sentences, a
      sentence a sequence of token ids (no special tokens). Random next sentences are drawn from
      other documents of this sequence, so feed windows of a stream, not single documents.
    vocab_size: the random replacement ids are drawn from [0, vocab_size).
    special: the special ids of the vocabulary.
    continuation: bool[vocab_size], True for "##" pieces; needed for whole-word masking.
    config: lengths, probabilities, duplication and seed.

  Yields:
    dicts of `FEATURES`, in (pass, document) order. NOT shuffled (Google's final shuffle needs all
    examples in memory): shuffle downstream.

  Example:
    >>> special = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
    >>> docs = [[[10, 11], [12, 13, 14]], [[20, 21, 22], [23]]]
    >>> config = ExampleConfig(MaskingConfig(max_seq_length=16, max_predictions_per_seq=3),
    ...                        dupe_factor=2, random_seed=0)
    >>> examples = list(create_examples(docs, vocab_size=30, special=special, continuation=None,
    ...                                 config=config))
    >>> {k: (v.dtype.name, v.shape) for k, v in examples[0].items()}
    {'input_ids': ('int32', (16,)), 'input_mask': ('int32', (16,)), 'segment_ids': ('int32', (16,)),
     'masked_lm_positions': ('int32', (3,)), 'masked_lm_ids': ('int32', (3,)),
     'masked_lm_weights': ('float32', (3,)), 'next_sentence_labels': ('int32', ())}
  """
  # Validate now, not at the first next(): a generator function would defer the error.
  if not isinstance(config, ExampleConfig):
    raise ValueError(f"config must be an ExampleConfig, got {type(config).__name__}.")
  _check_vocab(vocab_size, special, continuation, config.masking)
  return _examples(documents, vocab_size, special, continuation, config)


def _examples(documents, vocab_size: int, special: SpecialIds, continuation: np.ndarray | None,
              config: ExampleConfig) -> Iterator[dict[str, np.ndarray]]:
  rng = np.random.default_rng(config.random_seed)
  nonempty = np.array([k for k in range(len(documents)) if _sentences(documents[k])], np.int64)
  if len(nonempty) == 0:
    return
  for _ in range(config.dupe_factor):
    for doc_index in nonempty:
      document = _sentences(documents[int(doc_index)])
      yield from _document_examples(documents, int(doc_index), document, nonempty, rng, vocab_size,
                                    special, continuation, config)
