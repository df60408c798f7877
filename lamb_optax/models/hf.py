"""Hugging Face BERT checkpoints to and from :class:`BertForPreTraining`.

``load_hf`` reads a checkpoint directory as the Hub has them (``config.json`` +
``model.safetensors``, or sharded with ``model.safetensors.index.json``) with PyTorch parameter
names, in the ``BertForPreTraining`` layout (``bert.…``, ``cls.…``) or the bare ``BertModel`` one;
``save_hf`` writes a directory that ``transformers.BertForPreTraining.from_pretrained`` loads
with no missing or unexpected keys. Neither needs PyTorch or transformers; both need
``safetensors`` (``pip install 'lamb_optax[hf]'``).

PyTorch's ``nn.Linear`` stores ``(out, in)`` weights; Flax kernels are ``(in, out)``, and the
attention kernels here keep the heads as their own axes (``(embed, heads, kv)``). The table
:data:`_GLOBAL_TENSORS` / :data:`_LAYER_TENSORS` names, for each Flax parameter, its PyTorch
tensor and its layout: ``None`` = same shape, ``FLAT`` = flattened (per-head biases), an int
``n`` = a kernel whose first ``n`` Flax axes are the "in" axes, stored transposed and flattened.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from flax import nnx

from lamb_optax.models.bert import STACKED_LAYERS_PATH
from lamb_optax.models.bert import BertForPreTraining
from lamb_optax.models.bert_config import BertConfig

PathLike = str | os.PathLike
FLAT = "flat"
Layout = int | str | None

# (Flax path, PyTorch name, layout).
_GLOBAL_TENSORS = (
    ("bert/embeddings/word_embeddings/embedding", "bert.embeddings.word_embeddings.weight", None),
    ("bert/embeddings/position_embeddings/embedding",
     "bert.embeddings.position_embeddings.weight", None),
    ("bert/embeddings/token_type_embeddings/embedding",
     "bert.embeddings.token_type_embeddings.weight", None),
    ("bert/embeddings/norm/scale", "bert.embeddings.LayerNorm.weight", None),
    ("bert/embeddings/norm/bias", "bert.embeddings.LayerNorm.bias", None),
    ("bert/pooler/kernel", "bert.pooler.dense.weight", 1),
    ("bert/pooler/bias", "bert.pooler.dense.bias", None),
    ("mlm/transform/kernel", "cls.predictions.transform.dense.weight", 1),
    ("mlm/transform/bias", "cls.predictions.transform.dense.bias", None),
    ("mlm/norm/scale", "cls.predictions.transform.LayerNorm.weight", None),
    ("mlm/norm/bias", "cls.predictions.transform.LayerNorm.bias", None),
    ("mlm/bias", "cls.predictions.bias", None),
    ("nsp/kernel", "cls.seq_relationship.weight", 1),
    ("nsp/bias", "cls.seq_relationship.bias", None),
)
# Under bert/encoder/layers (stacked on axis 0) and bert.encoder.layer.{i}.
_LAYER_TENSORS = (
    ("attention/query/kernel", "attention.self.query.weight", 1),
    ("attention/query/bias", "attention.self.query.bias", FLAT),
    ("attention/key/kernel", "attention.self.key.weight", 1),
    ("attention/key/bias", "attention.self.key.bias", FLAT),
    ("attention/value/kernel", "attention.self.value.weight", 1),
    ("attention/value/bias", "attention.self.value.bias", FLAT),
    ("attention/output/kernel", "attention.output.dense.weight", 2),
    ("attention/output/bias", "attention.output.dense.bias", None),
    ("attention_norm/scale", "attention.output.LayerNorm.weight", None),
    ("attention_norm/bias", "attention.output.LayerNorm.bias", None),
    ("intermediate/kernel", "intermediate.dense.weight", 1),
    ("intermediate/bias", "intermediate.dense.bias", None),
    ("output/kernel", "output.dense.weight", 1),
    ("output/bias", "output.dense.bias", None),
    ("output_norm/scale", "output.LayerNorm.weight", None),
    ("output_norm/bias", "output.LayerNorm.bias", None),
)
# Heads a checkpoint may lack as a whole (a bare BertModel has no cls.*, a BertForMaskedLM no
# pooler or NSP): they keep their fresh initialisation.
_OPTIONAL_GROUPS = {"pooler": "bert.pooler.", "MLM head": "cls.predictions.",
                    "NSP head": "cls.seq_relationship."}
# Heads each architecture must have; any other head may be absent as a whole.
_REQUIRED_GROUPS = {
    "BertForPreTraining": ("pooler", "MLM head", "NSP head"),
    "BertForMaskedLM": ("MLM head",),
    "BertForNextSentencePrediction": ("pooler", "NSP head"),
}
# Tensors transformers may store that carry no parameters of their own.
_IGNORED = re.compile(r"^bert\.embeddings\.position_ids$")
_TIED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_pytorch_tanh"}

_log = logging.getLogger(__name__)


def _safetensors_numpy():
  try:
    import safetensors.numpy
  except ImportError:
    raise ImportError(
        "Reading and writing Hugging Face checkpoints needs `safetensors`: "
        "pip install 'lamb_optax[hf]' (or pip install safetensors)."
    ) from None
  return safetensors.numpy


def config_from_hf(hf_config: dict[str, Any], **overrides: Any) -> BertConfig:
  """``BertConfig`` from the dict of a Hugging Face BERT ``config.json``.

  >>> config_from_hf({"model_type": "bert", "hidden_size": 128, "num_hidden_layers": 2,
  ...                 "num_attention_heads": 2, "intermediate_size": 512}).num_layers
  2
  >>> config_from_hf({"model_type": "roberta", "architectures": ["RobertaForMaskedLM"]})
  Traceback (most recent call last):
  ...
  ValueError: This is a 'roberta' checkpoint (RobertaForMaskedLM), not BERT...
  """
  model_type = hf_config.get("model_type")
  if model_type != "bert":
    architectures = ", ".join(hf_config.get("architectures") or ["no architectures listed"])
    raise ValueError(
        f"This is a {model_type!r} checkpoint ({architectures}), not BERT: config.json needs "
        f"\"model_type\": \"bert\". load_hf reads BERT checkpoints only (BertModel, "
        f"BertForPreTraining, BertForMaskedLM layouts)."
    )
  unsupported = {
      "position_embedding_type": ("absolute", hf_config.get("position_embedding_type", "absolute")),
      "is_decoder": (False, hf_config.get("is_decoder", False)),
      "add_cross_attention": (False, hf_config.get("add_cross_attention", False)),
  }
  for key, (supported, value) in unsupported.items():
    if value != supported:
      raise ValueError(f"config.json has {key}={value!r}; only {supported!r} is supported.")
  activation = hf_config.get("hidden_act", "gelu")
  if activation not in _ACTIVATIONS:
    raise ValueError(
        f"config.json has hidden_act={activation!r}; supported: {sorted(_ACTIVATIONS)}."
    )
  _check_sizes(hf_config)
  defaults = BertConfig()
  fields = dict(
      vocab_size=hf_config.get("vocab_size", defaults.vocab_size),
      hidden_size=hf_config.get("hidden_size", defaults.hidden_size),
      num_layers=hf_config.get("num_hidden_layers", defaults.num_layers),
      num_heads=hf_config.get("num_attention_heads", defaults.num_heads),
      intermediate_size=hf_config.get("intermediate_size", defaults.intermediate_size),
      max_position_embeddings=hf_config.get(
          "max_position_embeddings", defaults.max_position_embeddings),
      type_vocab_size=hf_config.get("type_vocab_size", defaults.type_vocab_size),
      hidden_act=_ACTIVATIONS[activation],
      hidden_dropout=hf_config.get("hidden_dropout_prob", defaults.hidden_dropout),
      attention_dropout=hf_config.get(
          "attention_probs_dropout_prob", defaults.attention_dropout),
      layer_norm_eps=hf_config.get("layer_norm_eps", defaults.layer_norm_eps),
      initializer_range=hf_config.get("initializer_range", defaults.initializer_range),
  )
  return BertConfig(**{**fields, **overrides})


# config.json sizes: each must be a positive integer, at most this (the largest BERT-like
# vocabularies are ~250k; a bigger size is a corrupt or hostile config that would allocate GBs).
_SIZE_LIMITS = {"vocab_size": 1 << 22, "hidden_size": 1 << 16, "num_hidden_layers": 1024,
                "num_attention_heads": 1024, "intermediate_size": 1 << 18,
                "max_position_embeddings": 1 << 20, "type_vocab_size": 1 << 10}


def _check_sizes(hf_config: dict[str, Any]) -> None:
  """Refuses sizes that are not positive integers or are absurdly large, before allocating."""
  problems = []
  for key, limit in _SIZE_LIMITS.items():
    if key not in hf_config:
      continue
    value = hf_config[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
      problems.append(f"{key}={value!r} (must be an integer in [1, {limit:,}])")
  if problems:
    raise ValueError("config.json has invalid sizes: " + "; ".join(problems) + ". Fix "
                     "config.json to match the checkpoint's tensors.")


def config_to_hf(config: BertConfig) -> dict[str, Any]:
  """The ``config.json`` dict of a Hugging Face ``BertForPreTraining`` for ``config``."""
  return {
      "architectures": ["BertForPreTraining"],
      "model_type": "bert",
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "intermediate_size": config.intermediate_size,
      "hidden_act": config.hidden_act,
      "hidden_dropout_prob": config.hidden_dropout,
      "attention_probs_dropout_prob": config.attention_dropout,
      "max_position_embeddings": config.max_position_embeddings,
      "type_vocab_size": config.type_vocab_size,
      "initializer_range": config.initializer_range,
      "layer_norm_eps": config.layer_norm_eps,
      "position_embedding_type": "absolute",
      "pad_token_id": 0,
      "tie_word_embeddings": True,
  }


def _tensor_table(num_layers: int) -> list[tuple[str, str, Layout, int | None]]:
  """(Flax path, PyTorch name, layout, layer index or None) for every tensor of the model."""
  table = [(path, name, layout, None) for path, name, layout in _GLOBAL_TENSORS]
  for i in range(num_layers):
    table += [(f"{STACKED_LAYERS_PATH}/{path}", f"bert.encoder.layer.{i}.{name}", layout, i)
              for path, name, layout in _LAYER_TENSORS]
  return table


def _torch_shape(flax_shape: tuple[int, ...], layout: Layout) -> tuple[int, ...]:
  if layout is None:
    return tuple(flax_shape)
  if layout == FLAT:
    return (math.prod(flax_shape),)
  return (math.prod(flax_shape[layout:]), math.prod(flax_shape[:layout]))


def _to_flax(tensor: np.ndarray, flax_shape: tuple[int, ...], layout: Layout) -> np.ndarray:
  return (tensor.T if isinstance(layout, int) else tensor).reshape(flax_shape)


def _to_torch(value: np.ndarray, layout: Layout) -> np.ndarray:
  if not isinstance(layout, int):
    return np.ascontiguousarray(value.reshape(_torch_shape(value.shape, layout)))
  return np.ascontiguousarray(value.reshape(_torch_shape(value.shape, layout)[::-1]).T)


def _get(tree: dict, path: str) -> Any:
  for key in path.split("/"):
    tree = tree[key]
  return tree


def _set(tree: dict, path: str, value: Any) -> None:
  *parents, leaf = path.split("/")
  for key in parents:
    tree = tree[key]
  tree[leaf] = value


def _read_config(directory: PathLike) -> dict[str, Any]:
  path = os.path.join(directory, "config.json")
  if not os.path.isfile(path):
    found = sorted(os.listdir(directory)) if os.path.isdir(directory) else "no such directory"
    raise ValueError(
        f"No config.json in {os.fspath(directory)!r} (found: {found}). Pass the directory of a "
        "Hugging Face checkpoint, as written by `save_pretrained`."
    )
  with open(path) as f:
    return json.load(f)


def _shard_path(directory: PathLike, shard: Any) -> str:
  """The path of a shard an index names; refuses one outside the checkpoint directory (an index
  could otherwise make the loader read any file, e.g. ``../../secret`` or ``/etc/...``)."""
  root = os.path.realpath(directory)
  path = os.path.realpath(os.path.join(root, str(shard)))
  if not isinstance(shard, str) or os.path.commonpath([root, path]) != root or path == root:
    raise ValueError(
        f"model.safetensors.index.json in {os.fspath(directory)!r} maps weights to {shard!r}, "
        "which is not a file inside the checkpoint directory; refusing to follow it. Shards "
        "must be named relative to the directory, as save_pretrained writes them.")
  return path


def _read_tensors(directory: PathLike) -> dict[str, np.ndarray]:
  """All tensors of ``model.safetensors``, or of the shards an index lists."""
  st = _safetensors_numpy()
  single = os.path.join(directory, "model.safetensors")
  index = os.path.join(directory, "model.safetensors.index.json")
  if os.path.isfile(single):
    return st.load_file(single)
  if os.path.isfile(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    tensors: dict[str, np.ndarray] = {}
    for shard in shards:
      tensors.update(st.load_file(_shard_path(directory, shard)))
    return tensors
  raise ValueError(
      f"No model.safetensors (or model.safetensors.index.json) in {os.fspath(directory)!r} "
      f"(found: {sorted(os.listdir(directory))}). For a PyTorch-only checkpoint, convert it once: "
      "transformers.BertForPreTraining.from_pretrained(d).save_pretrained(d)."
  )


def _canonical_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """PyTorch names in the BertForPreTraining layout (``bert.`` prefix, weight/bias for norms)."""
  bare = not any(name.startswith("bert.") for name in tensors)  # a BertModel checkpoint
  renamed = {}
  for name, tensor in tensors.items():
    # Checkpoints converted from TensorFlow name LayerNorm parameters gamma/beta.
    name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
    name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
    if bare and not name.startswith("cls."):
      name = "bert." + name
    renamed[name] = tensor
  return renamed


def _resolve_tied(tensors: dict[str, np.ndarray]) -> list[str]:
  """Folds the tied decoder tensors into the ones they alias; returns problems found."""
  problems = []
  weight, bias = (tensors.pop(name, None) for name in _TIED)
  embedding = tensors.get("bert.embeddings.word_embeddings.weight")
  if weight is not None and embedding is not None and not np.array_equal(weight, embedding):
    problems.append(
        f"{_TIED[0]} differs from the word embeddings; this BERT ties them (untied output "
        "embeddings are not supported)"
    )
  if bias is not None:
    tensors.setdefault("cls.predictions.bias", bias)
  return problems


def _check_tensors(tensors, table, expected_shapes, strict, architectures,
                   heads=None) -> list[str]:
  """Lists missing, unexpected and mis-shaped tensors (whole optional heads may be absent; a
  warning names those of ``heads``, default all, that are)."""
  problems = []
  required = {g for arch in architectures for g in _REQUIRED_GROUPS.get(arch, ())}
  absent_groups = {group for group, prefix in _OPTIONAL_GROUPS.items()
                   if group not in required
                   and not any(name.startswith(prefix) for name in tensors)}
  skipped = tuple(_OPTIONAL_GROUPS[g] for g in absent_groups)
  missing = [name for _, name, _, _ in table
             if name not in tensors and not name.startswith(skipped)]
  known = {name for _, name, _, _ in table}
  unexpected = [n for n in tensors if n not in known and not _IGNORED.match(n)]
  misshaped = [f"{name}: {tuple(tensors[name].shape)}, expected {expected_shapes[name]}"
               for _, name, _, _ in table
               if name in tensors and tuple(tensors[name].shape) != expected_shapes[name]]
  if missing:
    problems.append(f"missing tensors ({len(missing)}): {missing}")
  if unexpected and strict:
    problems.append(f"unexpected tensors ({len(unexpected)}): {sorted(unexpected)} "
                    "(pass strict=False to ignore them)")
  if misshaped:
    problems.append(f"mis-shaped tensors ({len(misshaped)}): {misshaped}")
  for group in sorted(g for g in absent_groups if heads is None or g in heads):
    _log.warning("Checkpoint has no %s (%s*): it keeps its random initialisation.", group,
                 _OPTIONAL_GROUPS[group])
  return problems


def _check_finite(tensors: dict[str, np.ndarray], table) -> list[str]:
  """Names the tensors holding NaN or Inf (a diverged or damaged checkpoint)."""
  bad = [f"{name} ({int(np.size(t) - np.count_nonzero(np.isfinite(t)))} values)"
         for _, name, _, _ in table
         if (t := tensors.get(name)) is not None and not np.isfinite(t).all()]
  if not bad:
    return []
  return [f"non-finite (NaN/Inf) tensors ({len(bad)}): {bad} (pass allow_nonfinite=True to "
          "load them anyway)"]


def load_hf(
    directory: PathLike, *, strict: bool = True, seed: int = 0, allow_nonfinite: bool = False,
    heads: Sequence[str] | None = None, **config_overrides: Any
) -> BertForPreTraining:
  """Reads a Hugging Face BERT checkpoint directory into a :class:`BertForPreTraining`.

  Accepts the ``BertForPreTraining``/``BertForMaskedLM`` layout and the bare ``BertModel`` one;
  heads the checkpoint lacks entirely keep a random initialisation (from ``seed``) and a warning
  is logged. Anything else wrong -- another architecture, invalid sizes in config.json, shards
  outside the directory, missing, unexpected (unless ``strict=False``), mis-shaped or non-finite
  (unless ``allow_nonfinite=True``) tensors -- raises a ``ValueError`` listing every problem,
  before the model is allocated.

  Args:
    directory: holds ``config.json`` and ``model.safetensors`` (or an index with shards).
    strict: reject tensors the model has no place for (e.g. a fine-tuned classifier's).
    seed: initialises parameters the checkpoint does not provide.
    allow_nonfinite: load tensors holding NaN or Inf (refused by default, naming them).
    heads: the optional heads the caller will use (``"pooler"``, ``"MLM head"``, ``"NSP
      head"``; default all): only those are warned about when the checkpoint lacks them (a
      fine-tuning task drops the MLM and NSP heads, so their absence is no news).
    **config_overrides: ``BertConfig`` fields to change, e.g. ``dtype="bfloat16"``,
      ``remat="full"`` (the shapes come from config.json).
  """
  hf_config = _read_config(directory)
  config = config_from_hf(hf_config, **config_overrides)
  tensors = _canonical_names(_read_tensors(directory))
  problems = _resolve_tied(tensors)
  # Shapes come from an abstract model: nothing is allocated until they match the tensors.
  abstract = nnx.to_pure_dict(nnx.state(
      nnx.eval_shape(lambda: BertForPreTraining(config, rngs=nnx.Rngs(seed))), nnx.Param))
  table = _tensor_table(config.num_layers)

  def flax_shape(path, layer):
    shape = tuple(_get(abstract, path).shape)
    return shape if layer is None else shape[1:]

  expected = {name: _torch_shape(flax_shape(path, layer), layout)
              for path, name, layout, layer in table}
  problems += _check_tensors(
      tensors, table, expected, strict, hf_config.get("architectures") or (), heads)
  if not allow_nonfinite:
    problems += _check_finite(tensors, table)
  if problems:
    raise ValueError(
        f"Cannot load {os.fspath(directory)!r} into BERT ({config.num_layers} layers, hidden "
        f"{config.hidden_size}, vocab {config.vocab_size}):\n  " + "\n  ".join(problems)
    )
  model = BertForPreTraining(config, rngs=nnx.Rngs(seed))
  state = nnx.state(model, nnx.Param)
  params = nnx.to_pure_dict(state)
  param_dtype = np.dtype(config.param_dtype)
  stacks: dict[str, list[np.ndarray]] = {}
  for path, name, layout, layer in table:
    if name not in tensors:
      continue
    value = _to_flax(tensors[name], flax_shape(path, layer), layout).astype(param_dtype)
    if layer is None:
      _set(params, path, value)
    else:
      stacks.setdefault(path, []).append(value)
  for path, layers in stacks.items():
    _set(params, path, np.stack(layers))
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)
  return model


def save_hf(model: BertForPreTraining, directory: PathLike, *, dtype: Any = "float32") -> None:
  """Writes ``model`` as a Hugging Face ``BertForPreTraining`` checkpoint directory.

  ``config.json`` + ``model.safetensors`` with PyTorch names and layouts, tensors cast to
  ``dtype``. ``transformers.BertForPreTraining.from_pretrained(directory)`` loads it with no
  missing or unexpected keys (the MLM decoder is tied to the word embeddings, as in BERT).
  """
  st = _safetensors_numpy()
  config = model.config
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  tensors = {}
  for path, name, layout, layer in _tensor_table(config.num_layers):
    value = np.asarray(_get(params, path))
    value = value if layer is None else value[layer]
    tensors[name] = _to_torch(value.astype(np.dtype(dtype)), layout)
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config_to_hf(config), f, indent=2, sort_keys=True)
  # transformers refuses safetensors files whose metadata does not say which framework wrote them.
  st.save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
