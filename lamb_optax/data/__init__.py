"""BERT pretraining data: WordPiece, Google-style examples, TFDS storage, the Grain loader.

Text (files, a TFDS text dataset, or the embedded Python-docs corpus) -> WordPiece ids
(:mod:`.tokenizer`) -> masked-LM + next-sentence examples (:mod:`.pretraining`) -> a TFDS
array_record dataset (:mod:`.storage`, :mod:`.corpus`) -> this host's batches (:mod:`.loader`),
optionally several examples per row (:mod:`.packing`). Nothing here imports TensorFlow.
"""

from lamb_optax.data.corpus import EMBEDDED_VOCAB_SIZE
from lamb_optax.data.corpus import PreparedData
from lamb_optax.data.corpus import check_workers
from lamb_optax.data.corpus import create_pretraining_dataset
from lamb_optax.data.corpus import embedded_documents
from lamb_optax.data.corpus import examples_from_documents
from lamb_optax.data.corpus import prepare_embedded
from lamb_optax.data.corpus import tokenize_documents
from lamb_optax.data.loader import eval_batches
from lamb_optax.data.loader import shard
from lamb_optax.data.loader import train_batches
from lamb_optax.data.packing import PACKED_FEATURES
from lamb_optax.data.packing import PackingConfig
from lamb_optax.data.pretraining import FEATURES
from lamb_optax.data.pretraining import UNMASKED_FEATURES
from lamb_optax.data.pretraining import ExampleConfig
from lamb_optax.data.pretraining import MaskingConfig
from lamb_optax.data.pretraining import create_examples
from lamb_optax.data.pretraining import mask_example
from lamb_optax.data.pretraining import unmask_example
from lamb_optax.data.sources import InputStats
from lamb_optax.data.sources import expand_input_patterns
from lamb_optax.data.sources import python_docs_documents
from lamb_optax.data.sources import read_text_documents
from lamb_optax.data.sources import split_sentences
from lamb_optax.data.sources import tfds_text_documents
from lamb_optax.data.storage import PretrainingSource
from lamb_optax.data.storage import check_output_dir
from lamb_optax.data.storage import check_vocab_matches
from lamb_optax.data.storage import dataset_metadata
from lamb_optax.data.storage import load_pretraining_dataset
from lamb_optax.data.storage import write_pretraining_dataset
from lamb_optax.data.tokenizer import SPECIAL_TOKENS
from lamb_optax.data.tokenizer import SpecialIds
from lamb_optax.data.tokenizer import continuation_mask
from lamb_optax.data.tokenizer import load_wordpiece
from lamb_optax.data.tokenizer import read_vocab
from lamb_optax.data.tokenizer import save_vocab
from lamb_optax.data.tokenizer import special_ids
from lamb_optax.data.tokenizer import tokenize_lines
from lamb_optax.data.tokenizer import train_wordpiece
from lamb_optax.data.tokenizer import vocab_size

__all__ = [
    "EMBEDDED_VOCAB_SIZE",
    "ExampleConfig",
    "FEATURES",
    "InputStats",
    "MaskingConfig",
    "PACKED_FEATURES",
    "PackingConfig",
    "PreparedData",
    "PretrainingSource",
    "SPECIAL_TOKENS",
    "SpecialIds",
    "UNMASKED_FEATURES",
    "check_output_dir",
    "check_vocab_matches",
    "check_workers",
    "continuation_mask",
    "create_examples",
    "create_pretraining_dataset",
    "dataset_metadata",
    "embedded_documents",
    "eval_batches",
    "examples_from_documents",
    "expand_input_patterns",
    "load_pretraining_dataset",
    "load_wordpiece",
    "mask_example",
    "prepare_embedded",
    "python_docs_documents",
    "read_text_documents",
    "read_vocab",
    "save_vocab",
    "shard",
    "special_ids",
    "split_sentences",
    "tfds_text_documents",
    "tokenize_documents",
    "tokenize_lines",
    "train_batches",
    "train_wordpiece",
    "unmask_example",
    "vocab_size",
    "write_pretraining_dataset",
]
