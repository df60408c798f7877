"""What every fine-tuning task shares: where the encoder comes from, tokenising, in-memory data.

``config.init_from`` names the pretrained encoder:

* a **lamb_optax workdir** (``config.json`` + ``checkpoints/``): the model config and vocabulary
  come from its ``config.json``; only the encoder ``bert/...`` is read from its latest
  checkpoint; its pretraining heads (MLM, NSP) are dropped and the task head starts fresh;
* a **Hugging Face BERT directory** (``config.json`` + ``model.safetensors``, or
  ``pytorch_model.bin``, and ``vocab.txt``): read by :func:`lamb_optax.models.hf.load_hf`;
* empty: a random encoder of ``config.model`` with ``config.finetune.vocab_file`` (default: the
  embedded Python-docs vocabulary): the baseline a pretrained encoder must beat.

The trainer calls the task's :meth:`FinetuneTask.params_from` with ``init_from``. At a run's
first start it also copies what the run needs from the source into ``<workdir>/init_from/``
(:data:`RECORD_FILE`: kind, path, model config, lower-casing, a fingerprint of the weights; the
vocabulary): resuming and predicting read these copies (:func:`recorded_source`), so the run no
longer depends on where, or whether, its source still is (``lamb_optax/train/sources.py``).

Data is small enough to hold in memory (GLUE's largest train set, MNLI, is 393k pairs of 128
ids): numpy arrays behind :class:`ArraySource`, read by the same Grain loader as pretraining, so
the train iterator is checkpointable and a resumed run sees the same batches.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from lamb_optax import data as data_lib
from lamb_optax import sharding
from lamb_optax.data import corpus
from lamb_optax.data import tokenizer as tokenizer_lib
from lamb_optax.models import bert
from lamb_optax.models import hf
from lamb_optax.models.bert_config import BertConfig
from lamb_optax.models.bert_config import flops_per_token
from lamb_optax.tasks.base import require_data

PyTree = Any
_log = logging.getLogger(__name__)
_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# A run's copies of its init_from source: <workdir>/RECORD_DIR/{RECORD_FILE, RECORD_VOCAB}.
RECORD_DIR = "init_from"
RECORD_FILE = "source.json"
RECORD_VOCAB = "vocab.txt"


# ------------------------------------------------------------------------------------------------
# Where the encoder comes from
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EncoderSource:
  """The encoder a fine-tuning run starts from, and the tokenizer that goes with it."""

  kind: str  # "random", "workdir" (lamb_optax pretraining) or "huggingface"
  path: str
  bert_config: BertConfig
  vocab_file: str
  do_lower_case: bool

  def tokenizer(self):
    return data_lib.load_wordpiece(self.vocab_file, do_lower_case=self.do_lower_case)


def _is_workdir(path: str) -> bool:
  return (os.path.isfile(os.path.join(path, "config.json"))
          and os.path.isdir(os.path.join(path, "checkpoints")))


def _is_huggingface(path: str) -> bool:
  return (os.path.isfile(os.path.join(path, "config.json"))
          and any(os.path.isfile(os.path.join(path, w)) for w in _HF_WEIGHTS))


def resolve_encoder(config: ml_collections.ConfigDict) -> EncoderSource:
  """The :class:`EncoderSource` of ``config.init_from`` (see the module docstring).

  Raises:
    ValueError: ``init_from`` is neither a lamb_optax workdir nor a Hugging Face directory,
      saying what was looked for.
  """
  source = config.init_from
  numerics = dict(dtype=config.model.dtype, remat=config.model.remat)
  if not source:
    vocab_file = config.finetune.vocab_file or corpus.EMBEDDED_VOCAB_FILE
    vocab_size = len(data_lib.read_vocab(vocab_file))
    from lamb_optax.tasks import bert_pretraining  # pylint: disable=g-import-not-at-top
    return EncoderSource("random", "", bert_pretraining.model_config(config, vocab_size),
                         vocab_file, config.finetune.do_lower_case)
  if os.path.isfile(os.path.join(source, RECORD_FILE)):
    return _recorded_encoder(source, numerics)
  if _is_workdir(source):
    return _workdir_encoder(source, numerics)
  if _is_huggingface(source):
    return _huggingface_encoder(source, config, numerics)
  found = sorted(os.listdir(source)) if os.path.isdir(source) else "no such directory"
  raise ValueError(
      f"init_from={source!r} is neither a lamb_optax pretraining workdir (config.json + "
      f"checkpoints/) nor a Hugging Face BERT directory (config.json + one of "
      f"{list(_HF_WEIGHTS)}); found: {found}. Point it at the --workdir of a "
      "`python -m lamb_optax.train` run, or at a directory written by save_pretrained.")


def recorded_source(workdir: str) -> str | None:
  """``<workdir>/init_from`` when the run there recorded the encoder it started from."""
  path = os.path.join(workdir, RECORD_DIR)
  return path if os.path.isfile(os.path.join(path, RECORD_FILE)) else None


def encoder_record(encoder: EncoderSource) -> dict[str, Any]:
  """What :func:`_recorded_encoder` rebuilds ``encoder`` from (its vocabulary is copied
  beside it)."""
  return {"kind": encoder.kind, "path": encoder.path, "do_lower_case": encoder.do_lower_case,
          "bert_config": encoder.bert_config.to_dict()}


def _recorded_encoder(record_dir: str, numerics: dict) -> EncoderSource:
  with open(os.path.join(record_dir, RECORD_FILE), encoding="utf-8") as f:
    record = json.load(f)["encoder"]
  bert_config = dataclasses.replace(BertConfig(**record["bert_config"]), **numerics)
  return EncoderSource(record["kind"], record["path"], bert_config,
                       os.path.join(record_dir, RECORD_VOCAB), record["do_lower_case"])


def _workdir_encoder(source: str, numerics: dict) -> EncoderSource:
  from lamb_optax.tasks import bert_pretraining  # pylint: disable=g-import-not-at-top
  with open(os.path.join(source, "config.json"), encoding="utf-8") as f:
    pretraining = ml_collections.ConfigDict(json.load(f))
  if pretraining.get("task", "bert_pretraining") != "bert_pretraining":
    raise ValueError(f"init_from={source!r} is a {pretraining.task!r} run; fine-tuning starts "
                     "from a bert_pretraining workdir.")
  data = pretraining.data
  vocab_file = (corpus.EMBEDDED_VOCAB_FILE if data.source == "embedded" and not data.vocab_file
                else data.vocab_file)
  if not vocab_file:
    raise ValueError(f"init_from={source!r}: its config.json names no data.vocab_file, so the "
                     "vocabulary it was pretrained with is unknown.")
  vocab_size = len(data_lib.read_vocab(vocab_file))
  bert_config = dataclasses.replace(bert_pretraining.model_config(pretraining, vocab_size),
                                    **numerics)
  return EncoderSource("workdir", source, bert_config, vocab_file, True)


def _huggingface_encoder(source: str, config: ml_collections.ConfigDict,
                         numerics: dict) -> EncoderSource:
  with open(os.path.join(source, "config.json"), encoding="utf-8") as f:
    bert_config = hf.config_from_hf(json.load(f), **numerics)
  vocab_file = config.finetune.vocab_file or os.path.join(source, "vocab.txt")
  if not os.path.isfile(vocab_file):
    raise ValueError(f"init_from={source!r} has no vocab.txt: set finetune.vocab_file to the "
                     "checkpoint's WordPiece vocabulary.")
  tokenizer_lib.check_vocab_fits(vocab_file, bert_config.vocab_size,
                                 f"{os.path.join(source, 'config.json')!r}")
  do_lower_case = config.finetune.do_lower_case
  tokenizer_config = os.path.join(source, "tokenizer_config.json")
  if os.path.isfile(tokenizer_config):
    with open(tokenizer_config, encoding="utf-8") as f:
      settings = json.load(f)
    if "do_lower_case" in settings:
      do_lower_case = tokenizer_lib.parse_do_lower_case(settings["do_lower_case"],
                                                        tokenizer_config)
  return EncoderSource("huggingface", source, bert_config, vocab_file, do_lower_case)


def load_encoder(encoder: EncoderSource, abstract_bert: PyTree, bert_shardings: PyTree,
                 restore_params: Callable[[str, PyTree], PyTree],
                 heads: Sequence[str] = ("pooler",)) -> PyTree:
  """The encoder params ``bert/...`` of a workdir's latest checkpoint (read by the trainer's
  ``restore_params``) or a Hugging Face dir; a Hugging Face checkpoint without one of ``heads``
  (the pooler, for a task that reads the pooled [CLS]) is warned about."""
  if encoder.kind == "workdir":
    target = {"bert": sharding.with_shardings(abstract_bert, bert_shardings)}
    return restore_params(encoder.path, target)["bert"]
  if encoder.kind == "huggingface":
    if not any(os.path.isfile(os.path.join(encoder.path, w)) for w in _HF_WEIGHTS[:2]):
      raise ValueError(
          f"{encoder.path!r} holds only pytorch_model.bin; convert it to safetensors once: "
          "transformers.BertForPreTraining.from_pretrained(d).save_pretrained(d).")
    model = hf.load_hf(encoder.path, strict=False, heads=heads, dtype=encoder.bert_config.dtype,
                       remat=encoder.bert_config.remat)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))["bert"]
    return jax.device_put(params, bert_shardings)
  raise ValueError(f"No pretrained encoder to load (init_from is empty); kind {encoder.kind!r}.")


# ------------------------------------------------------------------------------------------------
# Tokenising
# ------------------------------------------------------------------------------------------------
def encode_pairs(tokenizer, texts_a: Sequence[str], texts_b: Sequence[str] | None,
                 max_seq_length: int) -> dict[str, np.ndarray]:
  """``[CLS] a [SEP] (b [SEP])`` ids, segment ids and mask, padded to ``max_seq_length``.

  Pairs are truncated longest-first, one token at a time, as Google's ``_truncate_seq_pair``.

  >>> tok = data_lib.load_wordpiece(corpus.EMBEDDED_VOCAB_FILE)
  >>> f = encode_pairs(tok, ["a list"], ["of items"], 8)
  >>> f["segment_ids"].tolist(), f["input_mask"].tolist()
  ([[0, 0, 0, 0, 1, 1, 1, 0]], [[1, 1, 1, 1, 1, 1, 1, 0]])
  """
  tokenizer = _copy(tokenizer)
  tokenizer.enable_truncation(max_seq_length, strategy="longest_first")
  tokenizer.enable_padding(length=max_seq_length, pad_id=tokenizer.token_to_id("[PAD]"))
  inputs = list(texts_a) if texts_b is None else list(zip(texts_a, texts_b, strict=True))
  encodings = tokenizer.encode_batch(inputs)
  return {"input_ids": np.array([e.ids for e in encodings], np.int32),
          "segment_ids": np.array([e.type_ids for e in encodings], np.int32),
          "input_mask": np.array([e.attention_mask for e in encodings], np.int32)}


def _copy(tokenizer):
  import tokenizers  # pylint: disable=g-import-not-at-top
  return tokenizers.Tokenizer.from_str(tokenizer.to_str())


# ------------------------------------------------------------------------------------------------
# In-memory data
# ------------------------------------------------------------------------------------------------
class ArraySource:
  """A random-access source over equal-length numpy arrays (Grain's ``len`` and ``[i]``)."""

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    lengths = {len(v) for v in arrays.values()}
    if len(lengths) != 1:
      raise ValueError(f"Arrays of different lengths: { {k: len(v) for k, v in arrays.items()} }")
    self.arrays = dict(arrays)
    self.length = lengths.pop()

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in self.arrays.items()}


def padded_eval_batches(arrays: Mapping[str, np.ndarray], per_process_batch_size: int,
                        num_batches: int) -> list[dict[str, np.ndarray]]:
  """This process's rows of the WHOLE held-out set in batches, the last padded with weight 0.

  At most ``num_batches`` batches (``config.eval_batches``, a cap: fine-tuning configs set it
  high so the whole dev set is scored); every process gets the same number of batches.
  """
  if num_batches < 1:
    return []
  index, count = jax.process_index(), jax.process_count()
  total = len(next(iter(arrays.values())))
  per_process = -(-total // count)
  batches = min(num_batches, -(-per_process // per_process_batch_size))
  rows = batches * per_process_batch_size
  mine = {k: v[index::count] for k, v in arrays.items()}
  out = {}
  for k, v in mine.items():
    padded = np.zeros((rows, *v.shape[1:]), v.dtype)
    n = min(len(v), rows)
    padded[:n] = v[:n]
    out[k] = padded
  weight = np.zeros((rows,), np.float32)
  weight[:min(len(mine["weight"]), rows)] = mine["weight"][:rows]
  out["weight"] = weight
  return [{k: v[i * per_process_batch_size:(i + 1) * per_process_batch_size]
           for k, v in out.items()} for i in range(batches)]


def apply_epochs(config: ml_collections.ConfigDict, num_examples: int) -> None:
  """Sets ``num_train_steps`` to ``finetune.num_train_epochs`` passes over ``num_examples`` and
  ``warmup_steps`` to ``finetune.warmup_fraction`` of them; nothing if ``num_train_epochs`` is 0.

  Called with the training set actually read, before the optimizer's schedule is built, so
  the saved ``config.json`` holds the steps the run took.

  >>> config = ml_collections.ConfigDict(dict(global_batch_size=32, num_train_steps=1,
  ...     warmup_steps=0, finetune=dict(num_train_epochs=3.0, warmup_fraction=0.1)))
  >>> apply_epochs(config, 300)
  >>> config.num_train_steps, config.warmup_steps   # ceil(3 x 300 / 32), round(0.1 x 29)
  (29, 3)
  """
  f = config.finetune
  if not f.num_train_epochs:
    return
  steps = max(1, math.ceil(f.num_train_epochs * num_examples / config.global_batch_size))
  config.num_train_steps = steps
  config.warmup_steps = round(f.warmup_fraction * steps)
  _log.info("%s epochs of %d examples at batch %d: %d steps, warmup %d.", f.num_train_epochs,
            num_examples, config.global_batch_size, steps, config.warmup_steps)


def restore_run(workdir: str, build: Callable[..., Any],
                restore_params: Callable[[str, PyTree], PyTree]) -> tuple[Any, Any, PyTree]:
  """``(config, task, params)`` of the fine-tuning run in ``workdir``, for scoring it: the run's
  saved ``config.json``, its task rebuilt by ``build(config, mesh, workdir)`` on one device, and
  the newest checkpoint's params (``restore_params`` is the trainer's)."""
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  recorded = recorded_source(workdir)
  if recorded and config.get("init_from"):  # the run's own copies, wherever the source is now
    config.init_from = recorded
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  task = build(config, mesh, workdir)
  params = restore_params(
      workdir, sharding.with_shardings(task.abstract_params(), task.param_shardings))
  return config, task, params


# ------------------------------------------------------------------------------------------------
# The shared task
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FinetuneTask:
  """The model-and-data side every fine-tuning task shares; subclasses add ``_sums(params,
  batch, dropout_rng)``, the batch's summed loss (``loss_sum``), ``count`` and metric sums, from
  which the objective and the eval sums both come."""

  config: ml_collections.ConfigDict
  encoder: EncoderSource
  mesh: jax.sharding.Mesh
  make_model: Callable[[nnx.Rngs], nnx.Module]
  graphdef: Any
  abstract_state: Any
  param_shardings: PyTree
  train: Mapping[str, np.ndarray] | None  # None when built without data
  eval: Mapping[str, np.ndarray] | None

  @classmethod
  def create(cls, config, mesh, encoder, make_model, train, eval_, **extra):
    abstract_model = nnx.eval_shape(lambda: make_model(nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract_model, nnx.Param)
    shardings = nnx.to_pure_dict(sharding.state_shardings(abstract_state, mesh))
    return cls(config, encoder, mesh, make_model, graphdef, abstract_state, shardings, train,
               eval_, **extra)

  @property
  def max_seq_length(self) -> int:
    return self.config.finetune.max_seq_length

  def stacked_axes(self, params: PyTree) -> PyTree:
    return bert.stacked_axes(params)

  def num_params(self) -> int:
    return sum(x.size for x in jax.tree.leaves(self.abstract_state))

  def abstract_params(self) -> PyTree:
    return nnx.to_pure_dict(self.abstract_state)

  def init_params(self) -> PyTree:
    def init():
      return nnx.to_pure_dict(nnx.state(self.make_model(nnx.Rngs(self.config.seed)), nnx.Param))
    return jax.jit(init, out_shardings=self.param_shardings)()

  def params_from(self, source: str,
                  restore_params: Callable[[str, PyTree], PyTree]) -> PyTree:
    """Fresh params (the head from ``config.seed``) with the encoder of ``source``."""
    if source != self.encoder.path:
      raise ValueError(f"params_from({source!r}): this task was built for init_from="
                       f"{self.encoder.path!r}.")
    params = self.init_params()
    params["bert"] = load_encoder(self.encoder, self.abstract_params()["bert"],
                                  self.param_shardings["bert"], restore_params,
                                  heads=() if self.EVERY_TOKEN else ("pooler",))
    _log.info("Encoder from %s (%s); task head initialised from seed %d.", source,
              self.encoder.kind, self.config.seed)
    return params

  def model(self, params: PyTree) -> nnx.Module:
    state = jax.tree.map(lambda x: x, self.abstract_state)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self.graphdef, state)

  def normalizers(self, batch) -> dict[str, jax.Array]:
    return {"count": jax.numpy.sum(batch["weight"].astype(jax.numpy.float32))}

  def _sums(self, params, batch, dropout_rng) -> dict[str, jax.Array]:
    raise NotImplementedError

  def objective(self, params, batch, dropout_rng, normalizers):
    sums = self._sums(params, batch, dropout_rng)
    return sums["loss_sum"] / jax.numpy.maximum(normalizers["count"], 1.0), sums

  def eval_sums(self, params, batch):
    return self._sums(params, batch, None)

  def tokens_per_example(self) -> int:
    return self.max_seq_length

  # Whether the head reads every token's last hidden state (QA) or only [CLS] (classification,
  # whose last layer then runs at [CLS] alone).
  EVERY_TOKEN = False

  def flops_per_example(self) -> float:
    """Training FLOPs: the pretraining count without its MLM head (the small heads are ~0)."""
    c, seq = self.encoder.bert_config, self.max_seq_length
    p = seq - 1 if self.EVERY_TOKEN else 0
    mlm_head = 3 * 2 * (c.hidden_size ** 2 + c.hidden_size * c.vocab_size) * p / seq
    return (flops_per_token(c, seq, p) - mlm_head) * seq

  def _data(self, split: str) -> Mapping[str, np.ndarray]:
    return require_data(getattr(self, split))

  def train_iterator(self, per_process_batch_size: int):
    return iter(data_lib.train_batches(
        ArraySource(self._data("train")), batch_size=per_process_batch_size,
        seed=self.config.seed, shard_index=jax.process_index(),
        shard_count=jax.process_count(), worker_count=self.config.data.worker_count))

  def eval_batches(self, per_process_batch_size: int, num_batches: int):
    return padded_eval_batches(self._data("eval"), per_process_batch_size, num_batches)
