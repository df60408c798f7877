"""BERT pretraining as the trainer sees it: params, shardings, the objective and its metrics.

Params are a plain nested dict (``nnx.to_pure_dict``), so checkpoints, masks and optimizer
states are ordinary pytrees; the NNX graph is merged back inside the jitted step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from lamb_optax import transforms
from lamb_optax.models.bert import BertForPreTraining
from lamb_optax.models.bert import stacked_axes
from lamb_optax.models.config import BertConfig
from lamb_optax.models.config import flops_per_token
from lamb_optax.train import metrics
from lamb_optax import sharding
from lamb_optax.train.step import TrainState

PyTree = Any


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> BertConfig:
  overrides = {k: v for k, v in config.model.overrides.items() if v is not None}
  overrides.setdefault("vocab_size", vocab_size)
  overrides.setdefault("max_position_embeddings", max(512, config.data.max_seq_length))
  return BertConfig.preset(config.model.preset, dtype=config.model.dtype,
                           remat=config.model.remat, **overrides)


def _sums(model: BertForPreTraining, batch: Mapping[str, jax.Array],
          dropout_rng) -> dict[str, jax.Array]:
  """Summed (not averaged) MLM/NSP losses and hits, so micro-batches combine exactly."""
  # The model's cheap path: the last layer runs only at [CLS] and the masked positions.
  mlm_logits, nsp_logits = model.pretraining_logits(batch, dropout_rng=dropout_rng)
  weights = batch["masked_lm_weights"].astype(jnp.float32)
  labels = batch["masked_lm_ids"].astype(jnp.int32)
  mlm_log_probs = jax.nn.log_softmax(mlm_logits, axis=-1)
  mlm_nll = -jnp.take_along_axis(mlm_log_probs, labels[..., None], axis=-1)[..., 0]
  nsp_labels = batch["next_sentence_labels"].reshape(-1).astype(jnp.int32)
  nsp_nll = -jnp.take_along_axis(jax.nn.log_softmax(nsp_logits, axis=-1), nsp_labels[:, None],
                                 axis=-1)[:, 0]
  return {
      "mlm_loss_sum": jnp.sum(weights * mlm_nll),
      "mlm_correct": jnp.sum(weights * (jnp.argmax(mlm_logits, -1) == labels)),
      "mlm_weight": jnp.sum(weights),
      "nsp_loss_sum": jnp.sum(nsp_nll),
      "nsp_correct": jnp.sum((jnp.argmax(nsp_logits, -1) == nsp_labels).astype(jnp.float32)),
      "nsp_count": jnp.asarray(nsp_labels.shape[0], jnp.float32),
  }


def normalizers(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Denominators of the global batch's mean losses (Google adds 1e-5 to the MLM weight)."""
  return {"mlm": jnp.sum(batch["masked_lm_weights"].astype(jnp.float32)) + 1e-5,
          "nsp": jnp.asarray(batch["next_sentence_labels"].shape[0], jnp.float32)}


def like_params(tree: PyTree, params: PyTree, param_shardings: PyTree,
                default: jax.sharding.Sharding) -> PyTree:
  """Shardings for an optimizer state: a leaf whose key path ends with a param's path and has
  its shape (a moment) gets that param's sharding; everything else (counts, per-layer trust
  ratios) gets ``default``. Matching by path suffix works for any chain of optax states, also
  those with ``None`` in place of masked-out leaves, where ``optax.tree_map_params`` fails.
  """
  by_path = {}
  for (path, p), s in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                          jax.tree.leaves(param_shardings)):
    by_path[tuple(path)] = (p.shape, s)

  def sharding_of(path, leaf):
    for start in range(len(path)):
      shape_and_sharding = by_path.get(tuple(path[start:]))
      if shape_and_sharding is not None:
        shape, s = shape_and_sharding
        return s if tuple(leaf.shape) == tuple(shape) else default
    return default

  return jax.tree_util.tree_map_with_path(sharding_of, tree)


@dataclasses.dataclass
class BertTask:
  """The model side of a run."""

  bert_config: BertConfig
  mesh: jax.sharding.Mesh
  graphdef: Any
  abstract_state: Any  # nnx.State of Params, shapes only
  param_shardings: PyTree
  seed: int

  @property
  def stacked_axes(self) -> Callable[[PyTree], PyTree]:
    """Which parameter axes are scan-stacked layers (for per-layer trust ratios)."""
    return stacked_axes

  def describe(self) -> str:
    c = self.bert_config
    n = sum(x.size for x in jax.tree.leaves(self.abstract_state))
    return (f"BERT ({c.num_layers} layers, hidden {c.hidden_size}, vocab {c.vocab_size}, "
            f"{n / 1e6:.1f}M params)")

  def init_params(self) -> PyTree:
    """Fresh params, created directly with their shardings (never materialised whole)."""
    def init():
      model = BertForPreTraining(self.bert_config, rngs=nnx.Rngs(self.seed))
      return nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return jax.jit(init, out_shardings=self.param_shardings)()

  def abstract_params(self) -> PyTree:
    return nnx.to_pure_dict(self.abstract_state)

  def state_shardings(self, tx: optax.GradientTransformation) -> TrainState:
    """Shardings of the whole train state: optimizer moments are sharded like their params."""
    replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    abstract_params = self.abstract_params()
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    return TrainState(step=replicated, params=self.param_shardings,
                      opt_state=like_params(abstract_opt, abstract_params, self.param_shardings,
                                            replicated),
                      rng=replicated, nonfinite_in_a_row=replicated)

  def model(self, params: PyTree) -> BertForPreTraining:
    """The NNX model holding ``params``."""
    state = jax.tree.map(lambda x: x, self.abstract_state)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self.graphdef, state)

  def objective(self, params, batch, dropout_rng, norms):
    sums = _sums(self.model(params), batch, dropout_rng)
    loss = sums["mlm_loss_sum"] / norms["mlm"] + sums["nsp_loss_sum"] / norms["nsp"]
    return loss, sums

  def normalizers(self, batch):
    return normalizers(batch)

  def eval_sums(self, params, batch):
    return _sums(self.model(params), batch, None)

  def flops_per_token(self, max_seq_length: int) -> float:
    return flops_per_token(self.bert_config, max_seq_length)

  def optimizer_summary(self, state: TrainState) -> dict[str, float]:
    """Min/mean/max trust ratio over all adapted layers (cheap; full detail in diagnostics)."""
    try:
      ratios = transforms.trust_ratios(state.opt_state)
    except ValueError:  # optimizers without a trust ratio (AdamW)
      return {}
    flat = np.concatenate([np.ravel(r) for r in metrics.to_host(ratios).values()])
    return {"trust_ratio_min": float(flat.min()), "trust_ratio_mean": float(flat.mean()),
            "trust_ratio_max": float(flat.max())}


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, vocab_size: int) -> BertTask:
  bert_config = model_config(config, vocab_size)
  abstract_model = nnx.eval_shape(lambda: BertForPreTraining(bert_config, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract_model, nnx.Param)
  param_shardings = nnx.to_pure_dict(sharding.state_shardings(abstract_state, mesh))
  return BertTask(bert_config, mesh, graphdef, abstract_state, param_shardings, config.seed)
