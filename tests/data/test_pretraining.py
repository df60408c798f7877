"""BERT example creation: Google's create_pretraining_data semantics, checked statistically.

The synthetic corpora give every token of the corpus its own id (assigned in reading order), so an
unmasked segment can be traced back to its document and position. Tolerances are binomial standard
errors times `Z` (or exact bounds where the quantity is deterministic), never outputs of this code.
"""
import math

import numpy as np
import pytest

from lamb_optax.data import pretraining as pt
from lamb_optax.data import tokenizer as tk
from lamb_optax.data.pretraining import ExampleConfig
from lamb_optax.data.pretraining import MaskingConfig
from lamb_optax.data.tokenizer import SpecialIds

SPECIAL = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
FIRST_ID = 5
Z = 5.0  # standard errors allowed: a false failure has probability < 1e-6 per check.


def sequential_corpus(sentence_lengths):
  """documents[k][j] = consecutive ids; returns (documents, doc_of_id, vocab_size)."""
  documents, doc_of_id, next_id = [], [-1] * FIRST_ID, FIRST_ID
  for k, lengths in enumerate(sentence_lengths):
    document = []
    for n in lengths:
      document.append(list(range(next_id, next_id + n)))
      doc_of_id += [k] * n
      next_id += n
    documents.append(document)
  return documents, np.array(doc_of_id), next_id


def create(documents, vocab_size, continuation=None, **kwargs):
  masking = {k: kwargs.pop(k) for k in list(kwargs) if k in
             ("max_seq_length", "max_predictions_per_seq", "masked_lm_prob", "whole_word_mask")}
  config = ExampleConfig(MaskingConfig(**masking), **kwargs)
  return list(pt.create_examples(documents, vocab_size=vocab_size, special=SPECIAL,
                                 continuation=continuation, config=config))


def segments(example):
  """(A, B) token ids of an example after unmasking."""
  ids = pt.unmask_example(example)["input_ids"]
  n_real = int(example["input_mask"].sum())
  first_sep = int(np.flatnonzero(ids == SPECIAL.sep)[0])
  return ids[1:first_sep], ids[first_sep + 1:n_real - 1]


def assert_fraction(hits, trials, p, what):
  se = math.sqrt(p * (1 - p) / trials)
  assert abs(hits / trials - p) <= Z * se + 1e-12, (
      f"{what}: {hits}/{trials} = {hits / trials:.4f}, expected {p:.4f} +- {Z * se:.4f}")


@pytest.fixture(scope="module")
def varied():
  """Documents of 1-14 sentences of 1-30 tokens; 64-token examples, 2 duplication passes."""
  rng = np.random.default_rng(7)
  lengths = [rng.integers(1, 31, rng.integers(1, 15)).tolist() for _ in range(150)]
  documents, doc_of_id, vocab_size = sequential_corpus(lengths)
  examples = create(documents, vocab_size, max_seq_length=64, max_predictions_per_seq=10,
                    dupe_factor=2, random_seed=3)
  return documents, doc_of_id, vocab_size, examples


def test_dtypes_shapes_and_layout(varied):
  *_, examples = varied
  assert len(examples) > 500
  for ex in examples:
    assert tuple(ex) == pt.FEATURES
    for name in ("input_ids", "input_mask", "segment_ids"):
      assert ex[name].dtype == np.int32 and ex[name].shape == (64,)
    for name in ("masked_lm_positions", "masked_lm_ids"):
      assert ex[name].dtype == np.int32 and ex[name].shape == (10,)
    assert ex["masked_lm_weights"].dtype == np.float32 and ex["masked_lm_weights"].shape == (10,)
    assert ex["next_sentence_labels"].dtype == np.int32 and ex["next_sentence_labels"].shape == ()
    ids, mask, seg = pt.unmask_example(ex)["input_ids"], ex["input_mask"], ex["segment_ids"]
    n_real = int(mask.sum())
    # input_mask is 1 exactly on a prefix of real tokens; padding is id 0 with segment 0.
    np.testing.assert_array_equal(mask, np.arange(64) < n_real)
    assert np.all(ids[n_real:] == SPECIAL.pad) and np.all(ex["input_ids"][n_real:] == SPECIAL.pad)
    seps = np.flatnonzero(ids == SPECIAL.sep)
    assert ids[0] == SPECIAL.cls and len(seps) == 2 and seps[1] == n_real - 1
    assert 1 < seps[0] < n_real - 2  # A and B non-empty
    np.testing.assert_array_equal(seg, (np.arange(64) > seps[0]) & (np.arange(64) < n_real))
    assert n_real <= 64


def test_segments_are_original_runs_and_random_b_is_another_document(varied):
  _, doc_of_id, _, examples = varied
  labels = []
  for ex in examples:
    a, b = segments(ex)
    # Unmasking must restore the original ids: each segment is a run of consecutive corpus ids
    # (truncation only cuts ends), all from one document.
    for seg in (a, b):
      assert np.all(np.diff(seg) == 1), seg
    doc_a, doc_b = doc_of_id[a[0]], doc_of_id[b[0]]
    assert doc_of_id[a[-1]] == doc_a and doc_of_id[b[-1]] == doc_b
    label = int(ex["next_sentence_labels"])
    labels.append(label)
    if label == 0:
      assert doc_b == doc_a and b[0] > a[-1], "the actual next sentence follows A in its document"
    else:
      assert doc_b != doc_a, "a random next sentence comes from another document"
  assert 0 < np.mean(labels) < 1


def test_next_sentence_labels_half_random():
  # Every sentence has 15 tokens and the target is 29 (no short targets): every chunk is two
  # sentences, except a chunk holding only a document's last sentence (always random, as in
  # Google). Over the other examples the label is a fair coin.
  documents, doc_of_id, vocab_size = sequential_corpus([[15] * 10] * 200)
  examples = create(documents, vocab_size, max_seq_length=32, max_predictions_per_seq=5,
                    short_seq_prob=0.0, dupe_factor=2, random_seed=11)
  last_ids = {doc[-1][-1] for doc in documents}
  labels = [int(ex["next_sentence_labels"]) for ex in examples
            if int(segments(ex)[0][-1]) not in last_ids]
  assert len(labels) > 2000
  assert_fraction(sum(labels), len(labels), 0.5, "next_sentence_labels == 1")


def test_short_seq_prob_fraction():
  # Single-token sentences: every non-final chunk holds exactly target tokens, so the longest
  # example of a (pass, document) is its target length, drawn once per document as in Google:
  # < 29 with probability short_seq_prob * 27/28 (randint(2, 29) can give 29).
  documents, doc_of_id, vocab_size = sequential_corpus([[1] * 100] * 300)
  examples = create(documents, vocab_size, max_seq_length=32, max_predictions_per_seq=5,
                    short_seq_prob=0.2, dupe_factor=2, random_seed=5)
  groups, previous = [], None
  for ex in examples:
    a, b = segments(ex)
    doc = doc_of_id[a[0]]
    if doc != previous:
      groups.append([])
      previous = doc
    groups[-1].append(len(a) + len(b))
  assert len(groups) == 600
  short = sum(max(g) < 29 for g in groups)
  assert_fraction(short, len(groups), 0.2 * 27 / 28, "short target fraction")
  assert min(min(g) for g in groups) >= 2


def test_truncation_trims_the_longer_segment_at_random_ends():
  # One 100-token sentence per document: A is that sentence, B a random document's sentence.
  # Google's rule trims the longer (B on ties) to 15 + 14 = 29 tokens; each removed token comes
  # from the front or back with probability 1/2.
  documents, doc_of_id, vocab_size = sequential_corpus([[100]] * 400)
  examples = create(documents, vocab_size, max_seq_length=32, max_predictions_per_seq=4,
                    short_seq_prob=0.0, dupe_factor=2, random_seed=9)
  starts = []
  for ex in examples:
    a, b = segments(ex)
    assert (len(a), len(b)) == (15, 14)
    assert int(ex["next_sentence_labels"]) == 1
    starts.append(a[0] - documents[doc_of_id[a[0]]][0][0])
  starts = np.array(starts)
  assert starts.min() >= 0 and starts.max() <= 85
  # 85 removals from A, Binomial(85, 1/2) of them from the front.
  assert abs(starts.mean() - 42.5) <= Z * math.sqrt(85 / 4 / len(starts))
  assert starts.min() < 42 < starts.max()


def predicted(ex):
  n = int(ex["masked_lm_weights"].sum())
  assert np.all(ex["masked_lm_weights"][:n] == 1) and np.all(ex["masked_lm_weights"][n:] == 0)
  assert np.all(ex["masked_lm_positions"][n:] == 0) and np.all(ex["masked_lm_ids"][n:] == 0)
  return ex["masked_lm_positions"][:n], ex["masked_lm_ids"][:n]


# 10 is uncapped at 64 tokens (64 * 0.15 < 10); 3 caps the count.
@pytest.mark.parametrize("max_predictions_per_seq", [10, 3])
def test_number_masked_and_never_special(max_predictions_per_seq):
  rng = np.random.default_rng(1)
  lengths = [rng.integers(1, 31, rng.integers(1, 15)).tolist() for _ in range(120)]
  documents, _, vocab_size = sequential_corpus(lengths)
  examples = create(documents, vocab_size, max_seq_length=64,
                    max_predictions_per_seq=max_predictions_per_seq, dupe_factor=1, random_seed=2)
  total_masked = total_real = capped = 0
  for ex in examples:
    positions, labels = predicted(ex)
    original = pt.unmask_example(ex)["input_ids"]
    n_real = int(ex["input_mask"].sum())
    # Google's count: round(len(tokens) * masked_lm_prob), at least 1, at most the cap.
    expected = min(max_predictions_per_seq, max(1, round(n_real * 0.15)))
    assert len(positions) == expected
    capped += expected == max_predictions_per_seq < round(n_real * 0.15)
    assert np.all(np.diff(positions) > 0) and positions.max() < n_real
    assert not np.isin(original[positions], [SPECIAL.cls, SPECIAL.sep, SPECIAL.pad]).any()
    np.testing.assert_array_equal(labels, original[positions])
    unmasked = np.setdiff1d(np.arange(64), positions)
    np.testing.assert_array_equal(ex["input_ids"][unmasked], original[unmasked])
    total_masked += len(positions)
    total_real += n_real
  if max_predictions_per_seq == 10:
    # Uncapped: 15% of the tokens, up to rounding (at most 1/2 per example, 1 for tiny ones).
    assert capped == 0
    assert abs(total_masked - 0.15 * total_real) <= 0.5 * len(examples) + 1
    assert abs(total_masked / total_real - 0.15) < 0.01
  else:
    assert capped > len(examples) // 2
    assert total_masked / total_real < 0.15


def unmasked_example(n_real, max_seq_length, rng, vocab_size):
  ids = np.zeros(max_seq_length, np.int32)
  n_a = n_real // 2
  ids[:n_real] = rng.integers(FIRST_ID, vocab_size, n_real)
  ids[0], ids[n_a], ids[n_real - 1] = SPECIAL.cls, SPECIAL.sep, SPECIAL.sep
  seg = ((np.arange(max_seq_length) > n_a) & (np.arange(max_seq_length) < n_real)).astype(np.int32)
  return {"input_ids": ids, "input_mask": (np.arange(max_seq_length) < n_real).astype(np.int32),
          "segment_ids": seg, "next_sentence_labels": np.array(1, np.int32)}


def test_positions_uniform_and_80_10_10():
  vocab_size, trials = 1000, 4000
  masking = MaskingConfig(max_seq_length=48, max_predictions_per_seq=20)
  rng = np.random.default_rng(0)
  example = unmasked_example(40, 48, rng, vocab_size)  # 37 candidates, round(40 * .15) = 6
  counts = np.zeros(48)
  outcome = {"mask": 0, "keep": 0, "other": 0}
  random_ids = []
  for _ in range(trials):
    out = pt.mask_example(example, rng, vocab_size=vocab_size, special=SPECIAL, continuation=None,
                          masking=masking)
    positions, labels = predicted(out)
    assert len(positions) == 6
    counts[positions] += 1
    new = out["input_ids"][positions]
    outcome["mask"] += int(np.sum(new == SPECIAL.mask))
    outcome["keep"] += int(np.sum(new == labels))
    outcome["other"] += int(np.sum((new != SPECIAL.mask) & (new != labels)))
    random_ids += new[(new != SPECIAL.mask) & (new != labels)].tolist()
    assert pt.unmask_example(out)["input_ids"].tolist() == example["input_ids"].tolist()
  eligible = np.ones(48, bool)
  eligible[[0, 20, 39]] = False
  eligible[40:] = False
  assert np.all(counts[~eligible] == 0)  # never [CLS], [SEP] or padding
  for c in counts[eligible]:
    assert_fraction(c, trials, 6 / 37, "per-position masking rate")
  n = 6 * trials
  # A random id can equal [MASK] or the original token (1/vocab_size each).
  assert_fraction(outcome["mask"], n, 0.8 + 0.1 / vocab_size, "[MASK]")
  assert_fraction(outcome["keep"], n, 0.1 + 0.1 / vocab_size, "kept")
  assert_fraction(outcome["other"], n, 0.1 * (1 - 2 / vocab_size), "random id")
  # Random ids are uniform over the vocabulary: mean (V - 1) / 2, sd V / sqrt(12).
  assert abs(np.mean(random_ids) - (vocab_size - 1) / 2) <= Z * vocab_size / math.sqrt(
      12 * len(random_ids))


def word_corpus(rng, n_docs, vocab_size, continuation):
  """Documents whose sentences are words: a word-start id and 0-3 "##" ids."""
  starts, pieces = np.flatnonzero(~continuation[FIRST_ID:]) + FIRST_ID, np.flatnonzero(continuation)
  documents = []
  for _ in range(n_docs):
    document = []
    for _ in range(rng.integers(1, 10)):
      sentence = []
      for _ in range(rng.integers(1, 12)):
        sentence.append(int(rng.choice(starts)))
        sentence += rng.choice(pieces, rng.integers(0, 4)).tolist()
      document.append(sentence)
    documents.append(document)
  return documents


@pytest.mark.parametrize("max_predictions_per_seq", [20, 4])
def test_whole_word_masking_never_splits_a_word(max_predictions_per_seq):
  vocab_size = 500
  continuation = np.zeros(vocab_size, bool)
  continuation[300:] = True
  rng = np.random.default_rng(4)
  documents = word_corpus(rng, 150, vocab_size, continuation)
  examples = create(documents, vocab_size, continuation, max_seq_length=64,
                    max_predictions_per_seq=max_predictions_per_seq, whole_word_mask=True,
                    dupe_factor=2, random_seed=8)
  total_masked = split_words = empty = 0
  for ex in examples:
    positions, labels = predicted(ex)
    original = pt.unmask_example(ex)["input_ids"]
    n_real = int(ex["input_mask"].sum())
    np.testing.assert_array_equal(labels, original[positions])
    # Google's greedy pass can choose nothing when every word is longer than num_to_predict.
    assert len(positions) <= min(max_predictions_per_seq, max(1, round(n_real * 0.15)))
    empty += len(positions) == 0
    masked = np.zeros(64, bool)
    masked[positions] = True
    assert not masked[original == SPECIAL.cls].any() and not masked[original == SPECIAL.sep].any()
    # Words: a non-"##" token (or a "##" token right after [CLS]/[SEP]) and the "##" run after it.
    word_start = ~continuation[original[:n_real]] | np.isin(
        np.concatenate([[SPECIAL.pad], original[:n_real - 1]]), [SPECIAL.cls, SPECIAL.sep])
    word = np.cumsum(word_start)
    for w in np.unique(word[masked[:n_real]]):
      in_word = (word == w) & ~np.isin(original[:n_real], [SPECIAL.cls, SPECIAL.sep])
      split_words += not masked[:n_real][in_word].all()
    total_masked += len(positions)
  assert split_words == 0
  assert empty < 0.05 * len(examples)
  # Skipping words that overshoot leaves few slots unused.
  assert total_masked > 0.8 * sum(
      min(max_predictions_per_seq, max(1, round(int(ex["input_mask"].sum()) * 0.15)))
      for ex in examples)


def test_whole_word_groups_do_not_cross_sep():
  # A "##" piece right after [SEP] starts a word of its own (Google would join it to A's last word).
  continuation = np.zeros(50, bool)
  continuation[40:] = True
  example = {"input_ids": np.array([2, 10, 41, 3, 42, 43, 11, 3], np.int32),
             "input_mask": np.ones(8, np.int32), "segment_ids": np.array([0] * 4 + [1] * 4),
             "next_sentence_labels": np.array(0)}
  masking = MaskingConfig(max_seq_length=8, max_predictions_per_seq=2, masked_lm_prob=0.25,
                          whole_word_mask=True)
  seen = set()
  rng = np.random.default_rng(0)
  for _ in range(300):
    out = pt.mask_example(example, rng, vocab_size=50, special=SPECIAL, continuation=continuation,
                          masking=masking)
    seen.add(tuple(predicted(out)[0].tolist()))
  # Words: [10 41] at 1-2, [42 43] at 4-5, [11] at 6; 2 predictions fit one two-piece word, or
  # the one-piece word alone (a two-piece word after it would overshoot).
  assert seen == {(1, 2), (4, 5), (6,)}


def test_whole_word_masking_with_a_trained_tokenizer():
  text = ["unbelievable tokenization of antidisestablishmentarianism happens",
          "the tokenizer splits unbelievably long words into pieces"] * 5
  tokenizer = tk.train_wordpiece(text, vocab_size=80, min_frequency=1)
  continuation = tk.continuation_mask(tokenizer)
  special = tk.special_ids(tokenizer)
  documents = [[ids] for ids in tk.tokenize_lines(tokenizer, text)]
  assert continuation[np.concatenate([np.array(d[0]) for d in documents])].mean() > 0.3
  config = ExampleConfig(MaskingConfig(max_seq_length=48, max_predictions_per_seq=7,
                                       whole_word_mask=True), dupe_factor=20, random_seed=0)
  for ex in pt.create_examples(documents, vocab_size=tk.vocab_size(tokenizer), special=special,
                               continuation=continuation, config=config):
    original = pt.unmask_example(ex)["input_ids"]
    masked = np.zeros(48, bool)
    masked[predicted(ex)[0]] = True
    # A "##" piece is masked exactly when the token before it is (unless that is [CLS]/[SEP]:
    # truncation can cut a segment's front inside a word).
    for i in np.flatnonzero(continuation[original]):
      if original[i - 1] in (special.cls, special.sep):
        continue
      assert masked[i] == masked[i - 1], tokenizer.decode(original.tolist())


def test_seeds(varied):
  documents, _, vocab_size, examples = varied
  kwargs = dict(max_seq_length=64, max_predictions_per_seq=10, dupe_factor=2)
  again = create(documents, vocab_size, random_seed=3, **kwargs)
  other = create(documents, vocab_size, random_seed=4, **kwargs)
  assert len(again) == len(examples)
  for x, y in zip(examples, again, strict=True):
    for name in pt.FEATURES:
      np.testing.assert_array_equal(x[name], y[name])
  assert len(other) != len(examples) or any(
      not np.array_equal(x["input_ids"], y["input_ids"])
      for x, y in zip(examples, other, strict=False))
  # Duplication passes differ in their masks.
  first, second = examples[:len(examples) // 2], examples[len(examples) // 2:]
  assert any(not np.array_equal(x["input_ids"], y["input_ids"])
             for x, y in zip(first, second, strict=False))


def test_unmask_inverts_mask_also_batched(varied):
  *_, vocab_size, examples = varied
  masking = MaskingConfig(max_seq_length=64, max_predictions_per_seq=10)
  rng = np.random.default_rng(0)
  batch = {k: np.stack([ex[k] for ex in examples[:32]]) for k in pt.FEATURES}
  unmasked = pt.unmask_example(batch)
  assert tuple(unmasked) == pt.UNMASKED_FEATURES
  for i in range(32):
    x = {k: v[i] for k, v in unmasked.items()}
    np.testing.assert_array_equal(x["input_ids"], pt.unmask_example(examples[i])["input_ids"])
    remasked = pt.mask_example(x, rng, vocab_size=vocab_size, special=SPECIAL, continuation=None,
                               masking=masking)
    assert tuple(remasked) == pt.FEATURES
    for k in pt.UNMASKED_FEATURES:
      np.testing.assert_array_equal(pt.unmask_example(remasked)[k], x[k])


def test_skips_empty_sentences_and_documents():
  documents = [[], [[], [10, 11, 12]], [[20, 21], [], [22, 23]], [[]]]
  examples = create(documents, 30, max_seq_length=16, max_predictions_per_seq=2, dupe_factor=3,
                    random_seed=0)
  assert examples
  for ex in examples:
    a, b = segments(ex)
    assert len(a) and len(b)
  assert create([[], [[]]], 30, max_seq_length=16, max_predictions_per_seq=2) == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_seq_length=4), "max_seq_length must be an int >= 5"),
    (dict(max_seq_length=128, max_predictions_per_seq=126),
     "max_predictions_per_seq 126 exceeds the 125 maskable positions.*at most 125"),
    (dict(max_predictions_per_seq=0), "max_predictions_per_seq must be a positive int"),
    (dict(masked_lm_prob=0.0), r"masked_lm_prob must be in \(0, 1\]"),
    (dict(masked_lm_prob=1.5), r"masked_lm_prob must be in \(0, 1\]"),
    (dict(whole_word_mask="yes"), "whole_word_mask must be a bool"),
])
def test_masking_config_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    MaskingConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(dupe_factor=0), "dupe_factor must be an int >= 1"),
    (dict(short_seq_prob=-0.1), r"short_seq_prob must be in \[0, 1\]"),
    (dict(short_seq_prob=1.1), r"short_seq_prob must be in \[0, 1\]"),
    (dict(masking=dict()), "masking must be a MaskingConfig"),
])
def test_example_config_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    ExampleConfig(**kwargs)


def test_call_errors():
  docs = [[[10, 11]], [[12, 13]]]
  config = ExampleConfig(MaskingConfig(max_seq_length=8, max_predictions_per_seq=2))
  with pytest.raises(ValueError, match="vocab_size 4 must exceed every special id"):
    pt.create_examples(docs, vocab_size=4, special=SPECIAL, continuation=None, config=config)
  wwm = ExampleConfig(MaskingConfig(max_seq_length=8, max_predictions_per_seq=2,
                                    whole_word_mask=True))
  with pytest.raises(ValueError, match="whole_word_mask=True needs continuation"):
    pt.create_examples(docs, vocab_size=20, special=SPECIAL, continuation=None, config=wwm)
  with pytest.raises(ValueError, match=r"continuation must be a bool array of shape \(20,\)"):
    pt.create_examples(docs, vocab_size=20, special=SPECIAL, continuation=np.zeros(19, bool),
                       config=wwm)
  example = unmasked_example(6, 10, np.random.default_rng(0), 20)
  with pytest.raises(ValueError, match=r"input_ids and input_mask of shape \(8,\)"):
    pt.mask_example(example, np.random.default_rng(0), vocab_size=20, special=SPECIAL,
                    continuation=None, masking=config.masking)
