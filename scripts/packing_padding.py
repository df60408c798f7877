"""Padding before and after sequence packing (``lamb_optax.data.packing``), as docs/data.md reports.

Two length distributions:

1. the embedded corpus of ``configs/tiny.py`` (seq 128, 20 predictions; built once and cached
   in ``--data_dir``): every training example's length and prediction count, in stored order,
   packed window by window as the loader does (``packing.simulate``); then the loader itself
   (``data.train_batches`` with ``packing=``, dynamic masking on) for ``--loader_batches``
   batches of 64 rows, counting the padding of the rows it yields;
2. a Wikipedia-like distribution at seq 512 (80 predictions), seeded: documents of a log-normal
   number of sentences (median 8, sigma 1.2) of Poisson(28) tokens each, cut into examples as
   Google's ``create_pretraining_data.py`` does -- per document a target of 509 tokens (with
   probability 0.1 a uniform one in [2, 509]), whole sentences gathered until the target or the
   document's end, truncated to 509, plus [CLS] and two [SEP]. Its parameters are chosen to give
   the ~50% padding Krell et al. (2021, arXiv:2107.02027, Fig. 1) report for Wikipedia at 512;
   it is a model of that histogram, not Wikipedia.

  PYTHONPATH=. python scripts/packing_padding.py [--data_dir /tmp/lamb_tiny/data]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from lamb_optax import data
from lamb_optax.data import packing


def wikipedia_like(num_examples: int, seed: int = 0, max_seq_length: int = 512) -> np.ndarray:
  """Example lengths (module docstring, 2.), shuffled as the loader shuffles its stream."""
  rng = np.random.default_rng(seed)
  lengths: list[int] = []
  while len(lengths) < num_examples:
    sentences = np.maximum(1, rng.poisson(28, max(1, int(rng.lognormal(np.log(8), 1.2)))))
    limit = max_seq_length - 3
    target = limit if rng.random() >= 0.1 else int(rng.integers(2, limit + 1))
    gathered = 0
    for i, tokens in enumerate(sentences):
      gathered += int(tokens)
      if gathered >= target or i == len(sentences) - 1:
        lengths.append(min(gathered, limit) + 3)
        gathered = 0
  return rng.permutation(np.array(lengths[:num_examples]))


def google_predictions(lengths: np.ndarray, max_predictions: int) -> np.ndarray:
  """Google's count of masked tokens per example: min(P, max(1, round(0.15 n)))."""
  return np.minimum(max_predictions, np.maximum(1, np.round(0.15 * lengths))).astype(int)


def _row(name: str, config: packing.PackingConfig, stats: dict[str, float]) -> str:
  return (f"| {name} | {config.max_seq_length} | {config.max_examples_per_row} | "
          f"{config.window_rows} | {100 * stats['padding_before']:.1f}% | "
          f"{100 * stats['padding_after']:.1f}% | {100 * stats['skipped']:.1f}% |")


def loader_padding(source, vocab_file: str, config: packing.PackingConfig, batches: int) -> float:
  """Padding fraction of the rows the loader yields (dynamic masking on, seed 0)."""
  tokenizer = data.load_wordpiece(vocab_file)
  masking = data.MaskingConfig(max_seq_length=config.max_seq_length,
                               max_predictions_per_seq=config.max_predictions_per_seq)
  it = iter(data.train_batches(
      source, batch_size=64, seed=0, shard_index=0, shard_count=1, dynamic_masking=masking,
      vocab_size=tokenizer.get_vocab_size(), special=data.special_ids(tokenizer),
      packing=config))
  real = total = 0
  for _ in range(batches):
    mask = next(it)["input_mask"]
    real, total = real + int(np.count_nonzero(mask)), total + mask.size
  return 1 - real / total


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="/tmp/lamb_tiny/data")
  parser.add_argument("--loader_batches", type=int, default=100)
  parser.add_argument("--wiki_examples", type=int, default=100_000)
  args = parser.parse_args()

  print("| data | seq | examples per row | window rows | padding unpacked | padding packed | "
        "skipped |")
  print("|---|---|---|---|---|---|---|")
  prepared = data.prepare_embedded(args.data_dir)
  source = data.load_pretraining_dataset(prepared.directory, "train")
  examples = [source[i] for i in range(len(source))]
  lengths = np.array([packing.real_length(e) for e in examples])
  predictions = np.array([int(np.count_nonzero(e["masked_lm_weights"])) for e in examples])
  base = packing.PackingConfig(max_seq_length=128, max_predictions_per_seq=20)
  for config in (base, dataclasses.replace(base, max_examples_per_row=3),
                 dataclasses.replace(base, window_rows=64)):
    print(_row("embedded corpus (tiny)", config, packing.simulate(lengths, predictions, config)))
  lengths = wikipedia_like(args.wiki_examples)
  wiki = packing.PackingConfig(max_seq_length=512, max_predictions_per_seq=80)
  for config in (wiki, dataclasses.replace(wiki, max_examples_per_row=3),
                 dataclasses.replace(wiki, max_examples_per_row=8),
                 dataclasses.replace(wiki, window_rows=64)):
    stats = packing.simulate(lengths, google_predictions(lengths, 80), config)
    print(_row("Wikipedia-like", config, stats))
  if args.loader_batches:
    padding = loader_padding(source, prepared.vocab_file, base, args.loader_batches)
    print(f"\nThe loader itself, embedded corpus, {args.loader_batches} batches of 64 packed "
          f"rows: {100 * padding:.1f}% padding.")


if __name__ == "__main__":
  main()
