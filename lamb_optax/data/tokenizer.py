"""WordPiece tokenization with BERT's exact rules, backed by Hugging Face `tokenizers`.

`load_wordpiece` reads a standard BERT `vocab.txt` (uncased or cased); `train_wordpiece` learns a
vocabulary of a chosen size from text. Both give a `tokenizers.Tokenizer` that splits text as
Google's `tokenization.py` does (tests/reference/bert_tokenization.py is an independent
transcription the tests compare against):

* control characters are dropped and every whitespace character becomes a space;
* CJK ideographs become words of their own;
* `do_lower_case=True` lower-cases (with Python's final-sigma rule, which `tokenizers`'
  per-character lower-casing lacks: a regex restores it) and strips accents (NFD, drop nonspacing
  marks);
  `do_lower_case=False` does neither, like Google's cased models;
* punctuation (ASCII symbols and Unicode P*) is split off character by character;
* WordPiece is greedy longest-match-first with "##" continuations; a word longer than 100
  characters, or one that cannot be covered by pieces, becomes [UNK].

The special tokens are in the vocabulary but are NOT registered as "added tokens": the literal text
"[MASK]" in a document is split like any other text ("[", "mask", "]"), as in Google's pipeline, so
raw text can never inject a [SEP] or [MASK] id into pretraining data. `encode("a", "b")` still adds
[CLS]/[SEP] through the post-processor.

Known difference: the rules depend on Unicode character categories, and `tokenizers` uses older
Unicode tables than Python's `unicodedata` (which Google's reference uses). Characters added or
re-categorised in recent Unicode versions (e.g. U+2E46, U+0891, U+1CF2), and unassigned code
points (category Cn: Google drops them, `tokenizers` keeps them), can tokenize differently. The
tests compare on every character whose category is the same in Unicode 3.2 and now.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence

import numpy as np
import tokenizers
from etils import epath
from tokenizers import Regex
from tokenizers import decoders
from tokenizers import models
from tokenizers import normalizers
from tokenizers import pre_tokenizers
from tokenizers import processors
from tokenizers import trainers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
UNK_TOKEN = "[UNK]"
CONTINUATION_PREFIX = "##"
MAX_INPUT_CHARS_PER_WORD = 100  # Google's WordpieceTokenizer default.

# Python's str.lower() maps a word-final capital sigma to "ς" (Unicode Final_Sigma: preceded by a
# cased letter, not followed by one); `tokenizers` lower-cases per character and always gives "σ".
# Google lower-cases each whitespace token with str.lower(), so apply the rule before lower-casing.
# (The full rule also allows case-ignorable characters between the preceding letter and the sigma;
# that needs a variable-length look-behind, which the regex engine lacks: a corner of a corner.)
_FINAL_SIGMA = Regex(r"(?<=\p{Cased})Σ(?!\p{Case_Ignorable}*\p{Cased})")


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """Ids of BERT's special tokens in one vocabulary."""
  pad: int
  unk: int
  cls: int
  sep: int
  mask: int


def _normalizer(do_lower_case: bool) -> normalizers.Normalizer:
  clean = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                     strip_accents=False, lowercase=False)
  if not do_lower_case:
    return clean
  return normalizers.Sequence([
      clean,
      normalizers.Replace(_FINAL_SIGMA, "ς"),
      # Lower-case first, then strip accents, as Google does (BertNormalizer's own order is the
      # reverse, which differs for characters such as U+0130).
      normalizers.Lowercase(),
      # NFD + drop nonspacing marks (Mn) only; normalizers.StripAccents also drops Mc and Me.
      normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True,
                                 lowercase=False),
  ])


def _build(vocab: dict[str, int], do_lower_case: bool, source: str) -> tokenizers.Tokenizer:
  missing = [t for t in SPECIAL_TOKENS if t not in vocab]
  if missing:
    raise ValueError(f"The vocabulary {source} lacks the special tokens {missing}; a BERT "
                     f"vocabulary needs all of {list(SPECIAL_TOKENS)}. Add them (one per line) or "
                     "use a standard BERT vocab.txt.")
  tokenizer = tokenizers.Tokenizer(models.WordPiece(
      vocab, unk_token=UNK_TOKEN, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
  tokenizer.normalizer = _normalizer(do_lower_case)
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)
  cls, sep = vocab["[CLS]"], vocab["[SEP]"]
  tokenizer.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
  return tokenizer


def read_vocab(vocab_file: str | os.PathLike) -> dict[str, int]:
  """Reads a BERT vocab.txt as Google does: token = stripped line, id = line number.

  Raises:
    FileNotFoundError: naming the path, when it does not exist.
  """
  path = epath.Path(os.fspath(vocab_file))  # local or gs:// paths
  if not path.is_file():
    raise FileNotFoundError(f"BERT vocabulary file not found: {os.fspath(vocab_file)!r}")
  vocab = {}
  for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
    vocab[line.strip()] = index  # A duplicate keeps its last id, as in Google's load_vocab.
  return vocab


def check_vocab_fits(vocab_file: str | os.PathLike, vocab_size: int, model: str) -> None:
  """Refuses a vocabulary with more ids than ``model``'s embedding table has rows.

  A token past the table is embedded as NaN, so every loss would be NaN and every step skipped.
  Fewer ids than rows is fine: some checkpoints pad ``vocab_size`` to a round number.
  """
  vocab = read_vocab(vocab_file)
  ids = max(vocab.values()) + 1 if vocab else 0
  if ids > vocab_size:
    raise ValueError(
        f"The vocabulary {os.fspath(vocab_file)!r} has {ids:,} tokens, but {model} has "
        f"vocab_size={vocab_size:,}: tokens {vocab_size:,} and up have no embedding and would "
        "make every loss NaN. Use the vocab.txt the checkpoint was trained with "
        "(finetune.vocab_file), or fix vocab_size if the checkpoint's embeddings are larger.")


def parse_do_lower_case(value: object, source: str) -> bool:
  """``do_lower_case`` as a Hugging Face ``tokenizer_config.json`` holds it: a JSON boolean, or
  the strings "true"/"false" that some hand-written files use (``bool("false")`` is True).

  >>> parse_do_lower_case("False", "tokenizer_config.json"), parse_do_lower_case(True, "t")
  (False, True)
  """
  if isinstance(value, bool):
    return value
  if isinstance(value, str) and value.strip().lower() in ("true", "false"):
    return value.strip().lower() == "true"
  raise ValueError(f"{source}: do_lower_case is {value!r}; it must be true or false (true for "
                   "an uncased vocabulary, false for a cased one). Fix the file, or delete the "
                   "key and set finetune.do_lower_case.")


def load_wordpiece(vocab_file: str | os.PathLike,
                   do_lower_case: bool = True) -> tokenizers.Tokenizer:
  """Loads a standard BERT `vocab.txt` as a WordPiece tokenizer with BERT's splitting rules.

  Args:
    vocab_file: one token per line; the line number is the id.
    do_lower_case: True for uncased vocabularies (lower-case and strip accents), False for cased
      ones (neither), matching Google's `do_lower_case` flag.

  Raises:
    FileNotFoundError: naming the path, when it does not exist.
    ValueError: naming the file and the missing tokens, when any of `SPECIAL_TOKENS` is absent.

  Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "vocab.txt"
    >>> tokens = SPECIAL_TOKENS + ("un", "##aff", "##able", ",", "x")
    >>> _ = path.write_text("\\n".join(tokens) + "\\n")
    >>> tok = load_wordpiece(str(path))
    >>> tok.encode("UnAffable, Xy", add_special_tokens=False).tokens
    ['un', '##aff', '##able', ',', '[UNK]']
  """
  path = os.fspath(vocab_file)
  return _build(read_vocab(path), do_lower_case, repr(path))


def train_wordpiece(texts: Iterable[str], vocab_size: int, *, do_lower_case: bool = True,
                    min_frequency: int = 2) -> tokenizers.Tokenizer:
  """Learns a WordPiece vocabulary of at most `vocab_size` tokens from `texts`.

  Not bit-reproducible across processes: `tokenizers`' trainer breaks ties between equally
  frequent merges in hash-map order, so a large vocabulary differs by a few tokens from run to
  run. Save the result with `save_vocab` and load that file to pin a vocabulary (the embedded
  corpus ships its vocabulary for this reason).

  Ids 0-4 are `SPECIAL_TOKENS` in order ([PAD] = 0, as BERT pads with 0), the other tokens follow
  in sorted order (the trainer's own numbering varies between runs). The result behaves exactly like
  `load_wordpiece` on the vocabulary `save_vocab` writes. The alphabet (every character seen) is
  always kept, even when it alone exceeds `vocab_size`.

  Example:
    >>> tok = train_wordpiece(["the cat sat on the mat"] * 3, vocab_size=60)
    >>> tok.token_to_id("[PAD]"), tok.token_to_id("[MASK]")
    (0, 4)
    >>> tok.encode("The CAT", add_special_tokens=False).tokens
    ['the', 'cat']
  """
  if vocab_size <= len(SPECIAL_TOKENS):
    raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got "
                     f"{vocab_size}.")
  learner = tokenizers.Tokenizer(models.WordPiece(unk_token=UNK_TOKEN))
  learner.normalizer = _normalizer(do_lower_case)
  learner.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
      continuing_subword_prefix=CONTINUATION_PREFIX, show_progress=False)
  learner.train_from_iterator(texts, trainer=trainer)
  # Rebuild from the bare vocabulary so the trained tokenizer and one loaded from its vocab.txt are
  # the same object (the trainer registers the specials as added tokens, which Google does not).
  return _build(_canonical_ids(learner.get_vocab(with_added_tokens=False)), do_lower_case,
                "being trained")


def _canonical_ids(vocab: dict[str, int]) -> dict[str, int]:
  """Run-independent ids: the specials, then the other tokens sorted.

  The Rust trainer numbers tokens partly in hash-map order (the "##" characters, and merges of
  equal count), which changes from process to process; the token set it picks does not (unless a
  tie between overlapping merges falls exactly at the vocab_size cut-off). WordPiece ignores id
  order, so sorting loses nothing.
  """
  return {token: index for index, token in enumerate(
      list(SPECIAL_TOKENS) + sorted(t for t in vocab if t not in SPECIAL_TOKENS))}


def _id_ordered_tokens(tokenizer: tokenizers.Tokenizer) -> list[str]:
  vocab = tokenizer.get_vocab(with_added_tokens=True)
  tokens = [None] * (max(vocab.values()) + 1)
  for token, index in vocab.items():
    tokens[index] = token
  holes = [i for i, t in enumerate(tokens) if t is None]
  if holes:
    raise ValueError(f"The vocabulary has no token for ids {holes[:10]} (duplicate lines in the "
                     "vocab file it came from?); a vocab.txt cannot represent that.")
  return tokens


def save_vocab(tokenizer: tokenizers.Tokenizer, path: str | os.PathLike) -> None:
  """Writes the vocabulary as a BERT `vocab.txt`: one token per line, in id order.

  Example:
    >>> import pathlib, tempfile
    >>> tok = train_wordpiece(["a b c"] * 2, vocab_size=30)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "vocab.txt"
    >>> save_vocab(tok, path)
    >>> path.read_text().split("\\n")[:6]
    ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'a']
  """
  with open(os.fspath(path), "w", encoding="utf-8") as f:
    f.write("".join(t + "\n" for t in _id_ordered_tokens(tokenizer)))


def vocab_size(tokenizer: tokenizers.Tokenizer) -> int:
  """The number of ids (the embedding table size)."""
  return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def special_ids(tokenizer: tokenizers.Tokenizer) -> SpecialIds:
  """The ids of [PAD], [UNK], [CLS], [SEP], [MASK].

  Example:
    >>> special_ids(train_wordpiece(["a b"], vocab_size=20))
    SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
  """
  ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
  missing = [t for t, i in ids.items() if i is None]
  if missing:
    raise ValueError(f"The tokenizer's vocabulary lacks the special tokens {missing}.")
  return SpecialIds(pad=ids["[PAD]"], unk=ids["[UNK]"], cls=ids["[CLS]"], sep=ids["[SEP]"],
                    mask=ids["[MASK]"])


def continuation_mask(tokenizer: tokenizers.Tokenizer) -> np.ndarray:
  """bool[vocab_size], True for "##" continuation pieces (whole-word masking groups them).

  Example:
    >>> tok = train_wordpiece(["ab ab ab"], vocab_size=20)
    >>> mask = continuation_mask(tok)
    >>> bool(mask[tok.token_to_id("##b")]), bool(mask[tok.token_to_id("a")])
    (True, False)
  """
  mask = np.zeros(vocab_size(tokenizer), dtype=bool)
  for token, index in tokenizer.get_vocab(with_added_tokens=True).items():
    mask[index] = token.startswith(CONTINUATION_PREFIX)
  return mask


def tokenize_lines(tokenizer: tokenizers.Tokenizer, lines: Sequence[str]) -> list[list[int]]:
  """Token ids of each line, without special tokens (batch-encoded in parallel by `tokenizers`).

  Example:
    >>> tok = train_wordpiece(["hello world"] * 2, vocab_size=40)
    >>> [[tok.id_to_token(i) for i in ids] for ids in tokenize_lines(tok, ["Hello", "", "world!"])]
    [['hello'], [], ['world', '[UNK]']]
  """
  encodings = tokenizer.encode_batch(list(lines), add_special_tokens=False)
  return [e.ids for e in encodings]
