"""BERT's reference tokenizer, transcribed in pure Python from the algorithm of Google's
`tokenization.py` (google-research/bert), for testing `lamb_optax.data.tokenizer`.

Independent of the `tokenizers` library on purpose (transformers 5's BertTokenizer is backed by it).

BasicTokenizer, in order:
  1. clean: drop U+0000, U+FFFD and control characters (Unicode category C*, except \\t \\n \\r);
     map whitespace (space, \\t, \\n, \\r, category Zs) to a space.
  2. put spaces around CJK Unified Ideographs (the blocks listed in `_CJK_RANGES`).
  3. split on whitespace (Python's str.split()).
  4. per token: if lower-casing, str.lower() (so final-sigma context applies within the token),
     then NFD and drop nonspacing marks (Mn) -- accents are stripped only when lower-casing.
  5. split each token on punctuation (ASCII non-alphanumeric printable symbols and category P*),
     each punctuation character becoming its own token.
WordpieceTokenizer: per token, [UNK] if longer than max_input_chars_per_word characters; else
greedy longest-match-first from the left, pieces after the first prefixed with "##"; if some
remainder matches nothing, the whole token becomes [UNK].
"""
from __future__ import annotations

import unicodedata

_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_whitespace(ch):
  return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch):
  if ch in "\t\n\r":
    return False
  return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch):
  cp = ord(ch)
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(ch).startswith("P")


def _is_cjk(cp):
  return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def basic_tokenize(text: str, do_lower_case: bool = True) -> list[str]:
  """Google's BasicTokenizer.tokenize."""
  cleaned = []
  for ch in text:
    cp = ord(ch)
    if cp == 0 or cp == 0xFFFD or _is_control(ch):
      continue
    cleaned.append(" " if _is_whitespace(ch) else ch)
  spaced = []
  for ch in cleaned:
    spaced.append(f" {ch} " if _is_cjk(ord(ch)) else ch)
  out = []
  for token in "".join(spaced).split():
    if do_lower_case:
      token = token.lower()
      token = "".join(c for c in unicodedata.normalize("NFD", token)
                      if unicodedata.category(c) != "Mn")
    word = []
    for ch in token:
      if _is_punctuation(ch):
        if word:
          out.append("".join(word))
          word = []
        out.append(ch)
      else:
        word.append(ch)
    if word:
      out.append("".join(word))
  # Google re-splits on whitespace here; stripping accents can leave nothing of a token.
  return " ".join(out).split()


def wordpiece_tokenize(token: str, vocab, unk_token: str = "[UNK]",
                       max_input_chars_per_word: int = 100) -> list[str]:
  """Google's WordpieceTokenizer on one basic token."""
  if len(token) > max_input_chars_per_word:
    return [unk_token]
  pieces = []
  start = 0
  while start < len(token):
    end = len(token)
    piece = None
    while start < end:
      candidate = token[start:end]
      if start > 0:
        candidate = "##" + candidate
      if candidate in vocab:
        piece = candidate
        break
      end -= 1
    if piece is None:
      return [unk_token]
    pieces.append(piece)
    start = end
  return pieces


def load_vocab(path: str) -> dict[str, int]:
  """Google's load_vocab: one token per line, stripped, id = line number (last duplicate wins)."""
  vocab = {}
  with open(path, encoding="utf-8") as f:
    for index, line in enumerate(f):
      vocab[line.strip()] = index
  return vocab


class FullTokenizer:
  """Google's FullTokenizer: basic tokenization, then WordPiece per token."""

  def __init__(self, vocab_file: str, do_lower_case: bool = True):
    self.vocab = load_vocab(vocab_file)
    self.do_lower_case = do_lower_case

  def tokenize(self, text: str) -> list[str]:
    return [piece for token in basic_tokenize(text, self.do_lower_case)
            for piece in wordpiece_tokenize(token, self.vocab)]

  def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
    return [self.vocab[t] for t in tokens]
