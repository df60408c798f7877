"""SQuAD v1.1: examples, Google's feature conversion, and predictions mapped back to the text.

Written after google-research/bert ``run_squad.py`` (our code, the same rules):

* :func:`read_examples`: the official JSON (``{"data": [...]}``) or TFDS ``squad/v1.1`` rows;
  the context is split on whitespace into words with a character -> word map; a training answer
  whose text is not found at its ``answer_start`` is counted in :class:`ReadStats` and skipped,
  as Google's "Could not find answer" warning does;
* :func:`convert`: each word is WordPiece-tokenised; the question is cut to ``max_query_length``
  tokens; the document is cut into windows of ``max_seq_length - len(question) - 3`` tokens that
  start every ``doc_stride`` tokens; ``[CLS] question [SEP] window [SEP]``; the answer span is
  tightened to the tokens of the answer text (``_improve_answer_span``) and a window that does
  not hold the whole answer points at [CLS] (position 0); each token records its word and
  whether this window gives it the most context (``_check_is_max_context``);
* :func:`predict_answers`: the ``n_best_size`` best starts and ends of each window, spans of at
  most ``max_answer_length`` tokens inside the document and at max-context starts, the best sum
  of logits per question, mapped back to the original words and characters (``get_final_text``).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lamb_optax.data import squad_format


@dataclasses.dataclass
class Example:
  qas_id: str
  question: str
  words: list[str]  # the context split on whitespace
  answer_text: str = ""
  start_word: int = -1  # -1: no usable answer position (prediction only)
  end_word: int = -1
  answers: tuple[str, ...] = ()  # every ground truth (for EM/F1)


@dataclasses.dataclass
class ReadStats:
  questions: int = 0
  mismatched_answers: int = 0  # answer text not at its answer_start (skipped for training)
  mismatched_ids: list = dataclasses.field(default_factory=list)


def _is_whitespace(c: str) -> bool:
  return c in " \t\r\n" or ord(c) == 0x202F


def split_words(context: str) -> tuple[list[str], list[int]]:
  """Whitespace words of ``context`` and, per character, the index of its word.

  >>> split_words("a  bc\\td")
  (['a', 'bc', 'd'], [0, 0, 0, 1, 1, 1, 2])
  """
  words, char_to_word, previous_space = [], [], True
  for c in context:
    if _is_whitespace(c):
      previous_space = True
    else:
      if previous_space:
        words.append(c)
      else:
        words[-1] += c
      previous_space = False
    char_to_word.append(len(words) - 1)
  return words, char_to_word


def _example(qas_id, question, context, answers, is_training, stats) -> Example | None:
  words, char_to_word = split_words(context)
  texts = tuple(a["text"] for a in answers)
  example = Example(qas_id, question, words, answers=texts)
  if not answers:
    return None if is_training else example
  first = answers[0]
  text, start = first["text"], int(first["answer_start"])
  end = start + len(text) - 1
  found = 0 <= start and end < len(context) and text.strip()
  if found:
    start_word, end_word = char_to_word[start], char_to_word[end]
    actual = " ".join(words[start_word:end_word + 1])
    found = actual.find(" ".join(text.split())) != -1
  if not found:
    stats.mismatched_answers += 1
    stats.mismatched_ids.append(qas_id)
    return None if is_training else example
  example.answer_text, example.start_word, example.end_word = text, start_word, end_word
  return example


def examples_from_json(dataset: Any, is_training: bool, stats: ReadStats | None = None,
                       source: str = "The SQuAD data") -> list[Example]:
  """Examples of a parsed SQuAD v1.1 JSON file (the dict with its ``data`` list).

  Raises:
    ValueError: naming ``source`` and the position (``data[i].paragraphs[j].qas[k]``) of a
      structural problem, or a question id that appears twice
      (:func:`lamb_optax.data.squad_format.check_data`).
  """
  stats = stats if stats is not None else ReadStats()
  squad_format.check_data(dataset, source)
  examples = []
  for article in dataset["data"]:
    for paragraph in article["paragraphs"]:
      for qa in paragraph["qas"]:
        stats.questions += 1
        example = _example(qa["id"], qa["question"], paragraph["context"], qa["answers"],
                           is_training, stats)
        if example is not None:
          examples.append(example)
  return examples


def read_examples(path: str, is_training: bool,
                  stats: ReadStats | None = None) -> list[Example]:
  """Examples of an official SQuAD v1.1 JSON file (see :func:`examples_from_json`)."""
  return examples_from_json(squad_format.load_json(path), is_training, stats, source=path)


def examples_from_tfds(rows: Iterable[Mapping], is_training: bool,
                       stats: ReadStats | None = None,
                       source: str = "TFDS squad/v1.1") -> list[Example]:
  """Examples of TFDS ``squad/v1.1`` rows (id, question, context, answers{text, answer_start});
  a question id that appears twice is refused, naming ``source`` and the rows."""
  stats = stats if stats is not None else ReadStats()
  decode = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)
  examples, ids = [], []
  for row in rows:
    stats.questions += 1
    ids.append(decode(row["id"]))
    answers = [{"text": decode(t), "answer_start": int(s)}
               for t, s in zip(row["answers"]["text"], row["answers"]["answer_start"], strict=True)]
    example = _example(decode(row["id"]), decode(row["question"]), decode(row["context"]),
                       answers, is_training, stats)
    if example is not None:
      examples.append(example)
  squad_format.check_unique_ids(ids, source)
  return examples


def as_official_json(examples: Sequence[Example]) -> list[dict]:
  """A ``data`` list for :func:`lamb_optax.data.squad_metrics.evaluate` (ids and answers)."""
  qas = [{"id": e.qas_id, "answers": [{"text": t} for t in e.answers]} for e in examples]
  return [{"paragraphs": [{"qas": qas}]}]


# ------------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Feature:
  example_index: int
  window_index: int
  tokens: list[str]
  token_to_word: dict[int, int]  # position in tokens -> word of the example
  max_context: dict[int, bool]
  input_ids: list[int]
  start_position: int  # 0 ([CLS]) when this window does not hold the answer
  end_position: int


class WordPieces:
  """WordPiece tokens of single words, cached (``tokenizers`` underneath)."""

  def __init__(self, tokenizer):
    self.tokenizer = tokenizer
    self.cache: dict[str, list[str]] = {}

  def __call__(self, text: str) -> list[str]:
    if text not in self.cache:
      self.cache[text] = self.tokenizer.encode(text, add_special_tokens=False).tokens
    return self.cache[text]

  def ids(self, tokens: Sequence[str]) -> list[int]:
    return [self.tokenizer.token_to_id(t) for t in tokens]


def _improve_answer_span(doc_tokens, start, end, pieces, answer_text):
  """The sub-span of tokens that exactly spells the tokenised answer, if there is one."""
  wanted = " ".join(pieces(answer_text))
  for new_start in range(start, end + 1):
    for new_end in range(end, new_start - 1, -1):
      if " ".join(doc_tokens[new_start:new_end + 1]) == wanted:
        return new_start, new_end
  return start, end


def _windows(num_tokens: int, window: int, stride: int) -> list[tuple[int, int]]:
  """(start, length) of each document window (Google's doc_spans)."""
  spans, start = [], 0
  while start < num_tokens:
    length = min(num_tokens - start, window)
    spans.append((start, length))
    if start + length == num_tokens:
      break
    start += min(length, stride)
  return spans


def _is_max_context(spans, current: int, position: int) -> bool:
  """Whether window ``current`` gives ``position`` the most context (min left/right, + length)."""
  best, best_score = None, None
  for index, (start, length) in enumerate(spans):
    end = start + length - 1
    if position < start or position > end:
      continue
    score = min(position - start, end - position) + 0.01 * length
    if best_score is None or score > best_score:
      best, best_score = index, score
  return best == current


def convert(examples: Sequence[Example], tokenizer, *, max_seq_length: int = 384,
            doc_stride: int = 128, max_query_length: int = 64,
            is_training: bool = False) -> list[Feature]:
  """Google's ``convert_examples_to_features``: one feature per document window."""
  pieces = WordPieces(tokenizer)
  features = []
  for example_index, example in enumerate(examples):
    query = pieces(example.question)[:max_query_length]
    token_to_word, word_to_token, doc_tokens = [], [], []
    for word_index, word in enumerate(example.words):
      word_to_token.append(len(doc_tokens))
      for piece in pieces(word):
        token_to_word.append(word_index)
        doc_tokens.append(piece)
    answer = None
    if example.start_word >= 0:
      start = word_to_token[example.start_word]
      end = (word_to_token[example.end_word + 1] - 1 if example.end_word < len(example.words) - 1
             else len(doc_tokens) - 1)
      answer = _improve_answer_span(doc_tokens, start, end, pieces, example.answer_text)
    window = max_seq_length - len(query) - 3
    if window < 1:
      raise ValueError(f"max_seq_length {max_seq_length} leaves no room for the document after "
                       f"a {len(query)}-token question; raise it or lower max_query_length.")
    spans = _windows(len(doc_tokens), window, doc_stride)
    for window_index, (span_start, length) in enumerate(spans):
      tokens = ["[CLS]", *query, "[SEP]"]
      offset = len(tokens)
      mapping, max_context = {}, {}
      for i in range(length):
        mapping[len(tokens)] = token_to_word[span_start + i]
        max_context[len(tokens)] = _is_max_context(spans, window_index, span_start + i)
        tokens.append(doc_tokens[span_start + i])
      tokens.append("[SEP]")
      start_position = end_position = 0
      if answer is not None and span_start <= answer[0] and answer[1] <= span_start + length - 1:
        start_position, end_position = (answer[0] - span_start + offset,
                                        answer[1] - span_start + offset)
      features.append(Feature(example_index, window_index, tokens, mapping, max_context,
                              pieces.ids(tokens), start_position, end_position))
  return features


def feature_arrays(features: Sequence[Feature], max_seq_length: int) -> dict[str, np.ndarray]:
  """The model's inputs: ids, mask, segments (1 from the first [SEP] on), start/end, weight."""
  n = len(features)
  ids = np.zeros((n, max_seq_length), np.int32)
  mask, segments = np.zeros_like(ids), np.zeros_like(ids)
  for i, f in enumerate(features):
    ids[i, :len(f.input_ids)] = f.input_ids
    mask[i, :len(f.input_ids)] = 1
    first_sep = f.tokens.index("[SEP]")
    segments[i, first_sep + 1:len(f.input_ids)] = 1
  return {"input_ids": ids, "input_mask": mask, "segment_ids": segments,
          "start_position": np.array([f.start_position for f in features], np.int32),
          "end_position": np.array([f.end_position for f in features], np.int32),
          "weight": np.ones((n,), np.float32)}


# ------------------------------------------------------------------------------------------------
# Predictions
# ------------------------------------------------------------------------------------------------
def _strip_spaces(text: str) -> tuple[str, dict[int, int]]:
  kept, position = [], {}
  for i, c in enumerate(text):
    if c != " ":
      position[len(kept)] = i
      kept.append(c)
  return "".join(kept), position


def final_text(predicted: str, original: str, tokenizer) -> str:
  """The span of ``original`` (the words as in the context) that ``predicted`` (detokenised,
  normalised WordPiece text) came from: Google's ``get_final_text``; ``original`` if unsure."""
  normalized = tokenizer.normalizer.normalize_str(original)
  basic = " ".join(w for w, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized))
  start = basic.find(predicted)
  if start == -1:
    return original
  end = start + len(predicted) - 1
  original_ns, original_map = _strip_spaces(original)
  basic_ns, basic_map = _strip_spaces(basic)
  if len(original_ns) != len(basic_ns):
    return original
  basic_inverse = {v: k for k, v in basic_map.items()}
  if start not in basic_inverse or end not in basic_inverse:
    return original
  ns_start, ns_end = basic_inverse[start], basic_inverse[end]
  if ns_start not in original_map or ns_end not in original_map:
    return original
  return original[original_map[ns_start]:original_map[ns_end] + 1]


def _top(logits: np.ndarray, n: int) -> list[int]:
  return [int(i) for i in np.argsort(-logits, kind="stable")[:n]]


def predict_answers(examples: Sequence[Example], features: Sequence[Feature],
                    start_logits: np.ndarray, end_logits: np.ndarray, tokenizer, *,
                    n_best_size: int = 20, max_answer_length: int = 30) -> dict[str, str]:
  """Question id -> answer text (the official predictions.json), from every window's logits."""
  by_example = collections.defaultdict(list)
  for index, feature in enumerate(features):
    by_example[feature.example_index].append(index)
  predictions = {}
  for example_index, example in enumerate(examples):
    candidates = []
    for index in by_example[example_index]:
      f = features[index]
      for s in _top(start_logits[index], n_best_size):
        for e in _top(end_logits[index], n_best_size):
          if (s not in f.token_to_word or e not in f.token_to_word or not f.max_context.get(s)
              or e < s or e - s + 1 > max_answer_length):
            continue
          candidates.append((float(start_logits[index][s] + end_logits[index][e]), index, s, e))
    candidates.sort(key=lambda c: -c[0])
    predictions[example.qas_id] = "empty"
    for _, index, s, e in candidates[:n_best_size]:
      f = features[index]
      text = " ".join(f.tokens[s:e + 1]).replace(" ##", "").replace("##", "")
      text = " ".join(text.strip().split())
      words = example.words[f.token_to_word[s]:f.token_to_word[e] + 1]
      predictions[example.qas_id] = final_text(text, " ".join(words), tokenizer)
      break
  return predictions
