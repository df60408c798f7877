"""WordPiece tokenizer: same tokens as BERT's reference tokenizer (tests/reference/
bert_tokenization.py, an independent pure-Python transcription of Google's algorithm)."""
import random
import unicodedata

import numpy as np
import pytest

from lamb_optax.data import tokenizer as tk
from reference import bert_tokenization as ref

SAMPLE = [
    "The quick brown fox jumps over the lazy dog.",
    "UNwant\u00e9d,running  Héllo Wörld! Ça va? naïve café résumé façade Ångström",
    "ΟΔΟΣ ΟΔΟΣ. Σίσυφος ΑΣ,Σ",
    "北京欢迎你，你好世界 ah\u535a\u63a8zz 日本語のテキスト、カタカナ。한국어 텍스트",
    "emoji 😀👍🏽 ❤️ ™ © ® ½ ∑∞ → ¿¡",
    "tab\tnew\nline\r carriage\x00null \x0bvt \x85nel \u200bzwsp \ufffdrepl \u2028ls \u00a0nbsp",
    "numbers 3.14159 1,000,000 2nd 10% $5 #1 @home x^2 a_b",
    "a" * 101 + " " + "b" * 100 + " " + "supercalifragilisticexpialidocious",
    "İstanbul ﬁ ß Straße Ǆ ǅ",
    "don't stop-me now... (really)? [MASK] [CLS] <b>bold</b> {curly} ~tilde~ `tick`",
    "Ａｂｃ　ｆｕｌｌ－ｗｉｄｔｈ",
    "\u0915\u094d\u0937 क़ ᄀ\u1161 e\u0301 n\u0303",
    "",
    "   ",
]


def stable(ch):
  """Characters assigned in Unicode 3.2 with the same category today: `tokenizers` uses older
  Unicode tables than Python's unicodedata, and BERT's rules depend on categories, so characters
  added or re-categorised since are tokenized per each side's Unicode version."""
  cat = unicodedata.category(ch)
  return cat != "Cn" and cat != "Cs" and unicodedata.ucd_3_2_0.category(ch) == cat


def random_texts(n, seed):
  rng = random.Random(seed)
  blocks = [(0x20, 0x7E, 0.5), (0x00, 0x20, 0.05), (0xA0, 0x3000, 0.25), (0x3000, 0xFFFF, 0.1),
            (0x10000, 0x2FFFF, 0.05)]
  texts = []
  for _ in range(n):
    chars = []
    while len(chars) < 120:
      lo, hi, _ = rng.choices(blocks, weights=[b[2] for b in blocks])[0]
      ch = chr(rng.randint(lo, hi))
      if rng.random() < 0.1:
        chars.append(" ")
      if stable(ch):
        chars.append(ch)
    texts.append("".join(chars))
  return texts


RANDOM = random_texts(200, seed=0)
TRAIN_TEXT = SAMPLE * 3 + RANDOM[:100]
HAND_VOCAB = list(tk.SPECIAL_TOKENS) + [
    "the", "quick", "brown", "fox", "##es", "un", "UN", "##d", "##want", "##ed", "want", ",", ".",
    "!", "?",
    "runn", "##ing", "hello", "hell", "##o", "Héllo", "H", "##é", "##llo", "world", "W", "##ö",
    "##rld", "北", "京", "你", "好", "οδος", "οδοσ", "ΟΔΟΣ", "a", "##a", "b", "##b", "3", "##.",
    "1",
    "##4", "##1", "##5", "##9", ".", "😀", "[", "]", "mask", "cls", "MASK", "CLS", "'", "t", "don",
    "istanbul", "straße", "ß", "e", "n", "é", "ñ", "##ñ", "cafe", "café", "caf", "##e", "##é",
]


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def trained(request, tmp_path_factory):
  tokenizer = tk.train_wordpiece(TRAIN_TEXT, vocab_size=3000, do_lower_case=request.param,
                                 min_frequency=1)
  path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  tk.save_vocab(tokenizer, path)
  return tokenizer, str(path), request.param


def assert_same_tokens(tokenizer, reference, texts):
  for text in texts:
    ours = tokenizer.encode(text, add_special_tokens=False)
    expected = reference.tokenize(text)
    assert ours.tokens == expected, repr(text)
    assert ours.ids == reference.convert_tokens_to_ids(expected)


def test_trained_vocab_matches_reference(trained):
  tokenizer, path, lower = trained
  reference = ref.FullTokenizer(path, do_lower_case=lower)
  assert_same_tokens(tokenizer, reference, SAMPLE + RANDOM)
  # Loading the saved vocab.txt gives the same tokenizer as training did.
  loaded = tk.load_wordpiece(path, do_lower_case=lower)
  assert loaded.get_vocab() == tokenizer.get_vocab()
  assert_same_tokens(loaded, reference, SAMPLE + RANDOM[:50])


@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
def test_hand_made_vocab_matches_reference(lower, tmp_path):
  path = tmp_path / "vocab.txt"
  path.write_text("".join(t + "\n" for t in HAND_VOCAB), encoding="utf-8")
  tokenizer = tk.load_wordpiece(path, do_lower_case=lower)
  reference = ref.FullTokenizer(str(path), do_lower_case=lower)
  assert_same_tokens(tokenizer, reference, SAMPLE + RANDOM)
  # Some text must actually hit multi-piece words and [UNK], or the comparison proves little.
  tokens = [t for text in SAMPLE for t in tokenizer.encode(text, add_special_tokens=False).tokens]
  assert "##want" in tokens and "[UNK]" in tokens and "北" in tokens


def basic_tokens(tokenizer, text):
  normalized = tokenizer.normalizer.normalize_str(text)
  return [t for t, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]


@pytest.mark.parametrize("text, lower, expected", [
    # The cases of Google's tokenization_test.py.
    (" \tHeLLo!how  \n Are yoU?  ", True, ["hello", "!", "how", "are", "you", "?"]),
    ("H\u00e9llo", True, ["hello"]),
    (" \tHeLLo!how  \n Are yoU?  ", False, ["HeLLo", "!", "how", "Are", "yoU", "?"]),
    ("ah\u535a\u63a8zz", True, ["ah", "\u535a", "\u63a8", "zz"]),
    ("H\u00e9llo", False, ["H\u00e9llo"]),
    ("ΟΔΟΣ.", True, ["οδος", "."]),  # str.lower()'s final sigma
    ("a\x00b\ufffdc\x07d", True, ["abcd"]),
])
def test_basic_tokenization_known_answers(text, lower, expected):
  tokenizer = tk.train_wordpiece(["x"], vocab_size=10, do_lower_case=lower)
  assert basic_tokens(tokenizer, text) == expected
  assert ref.basic_tokenize(text, lower) == expected


def test_wordpiece_known_answers(tmp_path):
  # Google's test_wordpiece_tokenizer vocabulary and cases.
  path = tmp_path / "vocab.txt"
  path.write_text("\n".join(["[PAD]", "[MASK]", "[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed",
                             "wa", "un", "runn", "##ing", ","]) + "\n")
  tokenizer = tk.load_wordpiece(path)
  encode = lambda text: tokenizer.encode(text, add_special_tokens=False).tokens
  assert encode("UNwant\u00e9d,running") == ["un", "##want", "##ed", ",", "runn", "##ing"]
  assert encode("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
  assert encode("unwantedX running") == ["[UNK]", "runn", "##ing"]
  assert encode("") == []
  assert tk.special_ids(tokenizer) == tk.SpecialIds(pad=0, unk=2, cls=3, sep=4, mask=1)


def test_max_input_chars_per_word(tmp_path):
  path = tmp_path / "vocab.txt"
  path.write_text("\n".join(tk.SPECIAL_TOKENS + ("a", "##a")) + "\n")
  tokenizer = tk.load_wordpiece(path)
  assert tokenizer.encode("a" * 100, add_special_tokens=False).tokens == ["a"] + ["##a"] * 99
  assert tokenizer.encode("a" * 101, add_special_tokens=False).tokens == ["[UNK]"]


def test_special_tokens_in_text_are_plain_text(trained):
  tokenizer, _, lower = trained
  ids = tk.special_ids(tokenizer)
  encoded = tokenizer.encode("a [MASK] b [SEP] c", add_special_tokens=False).ids
  assert ids.mask not in encoded and ids.sep not in encoded
  pair = tokenizer.encode("a", "b")
  assert pair.ids[0] == ids.cls and pair.ids.count(ids.sep) == 2
  assert pair.type_ids == [0, 0, 0, 1, 1]


def test_training_ids_are_canonical():
  """Special tokens first, the rest sorted. (The token *set* of a large vocabulary can vary
  between processes -- tokenizers breaks merge ties in hash order -- which is why the embedded
  corpus ships its vocabulary; this small one is stable.)"""
  # Pseudo-words from syllables, so that the vocabulary holds merges, not only characters.
  rng = random.Random(0)
  syllables = ["ka", "to", "ri", "ne", "sa", "mu", "lo", "gra", "str", "ion", "ing", "ed", "un"]
  words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(300)]
  text = [" ".join(rng.choices(words, k=12)) + "." for _ in range(300)]
  vocabs = [tk.train_wordpiece(text, vocab_size=300, min_frequency=2).get_vocab() for _ in range(4)]
  one = tk.train_wordpiece(iter(text), vocab_size=300, min_frequency=2)
  for vocab in vocabs:
    assert vocab == one.get_vocab()
  assert tk.vocab_size(one) == 300
  assert sum(len(t.lstrip("#")) > 1 for t in one.get_vocab()) > 200
  assert [one.id_to_token(i) for i in range(5)] == list(tk.SPECIAL_TOKENS)
  assert tk.special_ids(one) == tk.SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)


def test_standard_bert_layout(tmp_path):
  # The layout of Google's released vocabularies: [PAD] 0, [unused*], [UNK] 100, [CLS] 101, ...
  tokens = (["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            + ["hello", "##s", "world"])
  path = tmp_path / "vocab.txt"
  path.write_text("\n".join(tokens) + "\n")
  tokenizer = tk.load_wordpiece(path, do_lower_case=False)
  assert tk.special_ids(tokenizer) == tk.SpecialIds(pad=0, unk=100, cls=101, sep=102, mask=103)
  assert tk.vocab_size(tokenizer) == len(tokens)
  mask = tk.continuation_mask(tokenizer)
  assert mask.dtype == bool and mask.shape == (len(tokens),)
  assert np.flatnonzero(mask).tolist() == [105]
  assert tk.tokenize_lines(tokenizer, ["hellos world", "", "Hello"]) == [[104, 105, 106], [], [100]]
  out = tmp_path / "again.txt"
  tk.save_vocab(tokenizer, out)
  assert out.read_text() == path.read_text()


def test_load_errors(tmp_path):
  missing = tmp_path / "nope.txt"
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    tk.load_wordpiece(missing)
  path = tmp_path / "vocab.txt"
  path.write_text("[PAD]\n[UNK]\n[CLS]\nhello\n")
  with pytest.raises(ValueError,
                     match=r"vocab.txt.*lacks the special tokens \['\[SEP\]', '\[MASK\]'\]"):
    tk.load_wordpiece(path)
  with pytest.raises(ValueError, match="vocab_size must exceed"):
    tk.train_wordpiece(["a"], vocab_size=5)
