r"""Creates BERT pretraining examples as a TFDS dataset (array_record), with Google's flag names.

Plain-text input is Google's format: one sentence per line, a blank line between documents::

  python scripts/create_pretraining_data.py \
    --input_file='corpus/*.txt' --output_dir=/data/bert_128 --vocab_file=vocab.txt \
    --do_lower_case --max_seq_length=128 --max_predictions_per_seq=20 --masked_lm_prob=0.15 \
    --dupe_factor=5 --random_seed=12345 --validation_fraction=0.01

or any TFDS text dataset prepared (as array_record) in your TFDS directory::

  python scripts/create_pretraining_data.py --tfds_name=wikipedia/20230601.en \
    --tfds_split=train --tfds_text_feature=text --tfds_data_dir=~/tensorflow_datasets \
    --output_dir=/data/wiki_128 --vocab_file=vocab.txt

Inputs stream through windows of ``--window_documents`` documents (bounded memory; the random
next-sentence "B" segments come from the same window). Nothing is left in ``--output_dir``
unless the whole dataset was written. Read it back with
``lamb_optax.data.load_pretraining_dataset(output_dir, "train")`` or
``tfds.builder_from_directory(output_dir).as_data_source("train")``.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
flags.DEFINE_string("input_file", None, "Comma-separated text files or globs (Google format).")
flags.DEFINE_string("output_dir", None, "The TFDS dataset directory to create.")
flags.DEFINE_string("vocab_file", None, "The BERT vocab.txt of the WordPiece model.")
flags.DEFINE_bool("do_lower_case", True, "Lower-case (and strip accents from) the input.")
flags.DEFINE_integer("max_seq_length", 128, "Maximum sequence length.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "Maximum masked LM predictions per sequence.")
flags.DEFINE_float("masked_lm_prob", 0.15, "Masked LM probability.")
flags.DEFINE_float("short_seq_prob", 0.1, "Probability of a shorter than maximum sequence.")
flags.DEFINE_integer("dupe_factor", 10, "Copies of the input with different masks.")
flags.DEFINE_integer("random_seed", 12345, "Random seed for data generation.")
flags.DEFINE_bool("do_whole_word_mask", False, "Mask whole words rather than WordPieces.")
flags.DEFINE_string("tfds_name", None, "Read documents from this TFDS text dataset instead.")
flags.DEFINE_string("tfds_split", "train", "The TFDS split to read.")
flags.DEFINE_string("tfds_text_feature", "text", "The TFDS feature holding a document's text.")
flags.DEFINE_string("tfds_data_dir", None, "Where the TFDS text dataset is prepared.")
flags.DEFINE_float("validation_fraction", 0.0,
                   "Documents (by a hash of their text) held out as a 'validation' split.")
flags.DEFINE_integer("window_documents", 10_000,
                     "Documents per window: bounds memory; random B segments come from it.")
flags.DEFINE_integer("num_workers", 1, "Processes creating examples.")
flags.DEFINE_bool("overwrite", False,
                  "Replace an existing --output_dir, only if it holds nothing but a dataset "
                  "written by this script (never an input or any other directory).")


def run(argv_flags=FLAGS) -> dict[str, int]:
  """Validates everything, then writes the dataset; returns the example count per split."""
  # Imported here so that --help stays fast.
  from lamb_optax import data  # pylint: disable=g-import-not-at-top
  f = argv_flags
  if not f.output_dir:
    raise app.UsageError("--output_dir is required.")
  if not f.vocab_file:
    raise app.UsageError("--vocab_file is required.")
  if bool(f.input_file) == bool(f.tfds_name):
    raise app.UsageError("Give exactly one of --input_file and --tfds_name.")
  # Everything that can be checked is checked before a byte is written: the output directory,
  # the counts, the masking config, the vocabulary (load_wordpiece names missing special
  # tokens), the inputs.
  data.check_output_dir(os.path.abspath(f.output_dir), f.overwrite)
  data.check_workers(f.window_documents, f.num_workers)
  masking = data.MaskingConfig(
      max_seq_length=f.max_seq_length, max_predictions_per_seq=f.max_predictions_per_seq,
      masked_lm_prob=f.masked_lm_prob, whole_word_mask=f.do_whole_word_mask)
  config = data.ExampleConfig(masking=masking, short_seq_prob=f.short_seq_prob,
                              dupe_factor=f.dupe_factor, random_seed=f.random_seed)
  tokenizer = data.load_wordpiece(f.vocab_file, do_lower_case=f.do_lower_case)
  data.special_ids(tokenizer)
  stats = data.InputStats()
  if f.input_file:
    files = data.expand_input_patterns(f.input_file)
    for path in files:
      if os.path.getsize(path) == 0:
        raise ValueError(f"Input file {path} is empty.")

    def documents():
      return data.read_text_documents(files, stats)
    source = {"input_files": files}
  else:
    # Opening the first document checks the name, split and feature.
    next(iter(data.tfds_text_documents(f.tfds_name, f.tfds_split,
                                       text_feature=f.tfds_text_feature,
                                       data_dir=f.tfds_data_dir)), None)

    def documents():
      return data.tfds_text_documents(f.tfds_name, f.tfds_split, text_feature=f.tfds_text_feature,
                                      data_dir=f.tfds_data_dir, stats=stats)
    source = {"tfds_name": f.tfds_name, "tfds_split": f.tfds_split}

  counts = data.create_pretraining_dataset(
      documents, f.output_dir, tokenizer=tokenizer, config=config,
      validation_fraction=f.validation_fraction, window_documents=f.window_documents,
      num_workers=f.num_workers, overwrite=f.overwrite,
      metadata={"do_lower_case": f.do_lower_case, "vocab_file": f.vocab_file} | source)
  splits = len(counts)  # stats count every split's pass over the input
  logging.info("Read %d documents, %d sentences per pass.", stats.documents // splits,
               stats.sentences // splits)
  if stats.replaced_chars:
    logging.warning("Input had %d lines with bytes that are not UTF-8: %d characters were "
                    "replaced by U+FFFD.", stats.undecodable_lines // splits,
                    stats.replaced_chars // splits)
  print(f"Wrote {counts} examples to {f.output_dir}"
        + (f" ({stats.replaced_chars // splits} undecodable characters replaced)"
           if stats.replaced_chars else ""))
  return counts


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    run()
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    # A clear one-line error, not a traceback, for bad input; nothing was written.
    print(f"create_pretraining_data: error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
