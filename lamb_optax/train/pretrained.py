"""A trained run, back as a model: load the newest checkpoint of a workdir and fill in [MASK]s.

The trainer writes ``<workdir>/config.json``; :func:`load` rebuilds the model and tokenizer from
it and reads the params of the newest checkpoint (on one device, no optimizer state).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tokenizers
from etils import epath

from lamb_optax import data as data_lib
from lamb_optax import sharding
from lamb_optax.models.bert import BertForPreTraining
from lamb_optax.tasks import bert_pretraining
from lamb_optax.train import checkpoint as checkpoint_lib
from lamb_optax.train import workdir as workdir_lib

MASK = "[MASK]"


@dataclasses.dataclass
class Pretrained:
  model: BertForPreTraining
  tokenizer: tokenizers.Tokenizer
  config: ml_collections.ConfigDict


def load(workdir: str) -> Pretrained:
  """The model of the newest checkpoint in ``workdir`` and the tokenizer of its data."""
  workdir = workdir_lib.expand(workdir)
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{workdir} has no config.json: is it a lamb_optax.train workdir?")
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  _, vocab_file = bert_pretraining.locate(config, workdir)
  if not vocab_file:
    raise ValueError("Filling in masks needs the vocabulary: the run's data.vocab_file is unset.")
  tokenizer = data_lib.load_wordpiece(vocab_file)
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  task = bert_pretraining.build_model(config, mesh, data_lib.vocab_size(tokenizer))
  params = checkpoint_lib.restore_params(
      workdir, sharding.with_shardings(task.abstract_params(), task.param_shardings))
  return Pretrained(task.model(params), tokenizer, config)


def fill_mask(pretrained: Pretrained, text: str, top_k: int = 3) -> list[list[str]]:
  """The ``top_k`` most likely tokens for each ``[MASK]`` in ``text``, best first."""
  tok = pretrained.tokenizer
  ids = data_lib.special_ids(tok)
  pieces = text.split(MASK)
  if len(pieces) < 2:
    raise ValueError(f"No {MASK} in {text!r}.")
  tokens, positions = [ids.cls], []
  for i, piece in enumerate(pieces):
    tokens += tok.encode(piece, add_special_tokens=False).ids
    if i < len(pieces) - 1:
      positions.append(len(tokens))
      tokens.append(ids.mask)
  tokens.append(ids.sep)
  model = pretrained.model
  hidden = model.encode(jnp.asarray([tokens], jnp.int32))
  logits = np.asarray(model.mlm_logits(hidden, jnp.asarray([positions], jnp.int32)))[0]
  best = np.argsort(-logits, axis=-1)[:, :top_k]
  return [[tok.id_to_token(int(i)) for i in row] for row in best]
