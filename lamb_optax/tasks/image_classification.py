"""Image classification (ResNet or ViT) as a task of the trainer (``config.task =
"image_classification"``, settings in ``config.image``).

Params are ``{"params": <the model's nnx.Param pure dict>}``, plus ``"model_state"`` (BatchNorm
running statistics, ``nnx.BatchStat``) for a ResNet: the train step (``lamb_optax.train.step``)
hands only ``"params"`` to the optimizer, sums the batch moments the objective returns over the
step's micro-batches and calls :meth:`ImageClassification.update_model_state` once per step.

BatchNorm across devices and micro-batches: in training each BatchNorm normalises by the moments
of groups of ``image.batch_norm_group_size`` examples (0 = the whole micro-batch, synchronised
over all its devices), the groups being strided rows chosen so that they hold the same examples
on any layout (:func:`lamb_optax.models.resnet.group_moments`): with a group size that divides
the micro-batch, 1 device × 4 micro-batches and 4 devices × 1 compute the same loss, gradients and
running statistics up to float summation order. The running statistics move once per step by
the mean moments over the step's micro-batches (not once per micro-batch).

Loss: cross-entropy with ``image.label_smoothing`` in sum form over the global batch (the
objective; logged as ``loss``); held-out sums give the plain cross-entropy, top-1 and (with 5
classes or more) top-5 accuracy. Held-out batches cover the whole split (the last one padded
with zero-weight rows) up to ``config.eval_batches`` batches.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from lamb_optax import sharding
from lamb_optax.data import images as images_lib
from lamb_optax.data import loader
from lamb_optax.models import resnet
from lamb_optax.models import vit
from lamb_optax.tasks.base import MODEL_STATE
from lamb_optax.tasks.base import require_data

PyTree = Any
_DATASET_INFO = {"digits": images_lib.DIGITS_INFO,
                 "imagenet2012": images_lib.DatasetInfo(224, 3, 1000)}


# image.<key>: (lowest, highest, whether highest is allowed, what a usual value is). Outside these
# the run trains on nonsense without failing: smoothing 2.0 makes negative targets, momentum 1.5
# makes the running statistics diverge.
_BOUNDS = {
    "label_smoothing": (0.0, 1.0, False, "0 (none) or 0.1 (the ImageNet ResNet-50 configs)"),
    "batch_norm_momentum": (0.0, 1.0, True, "0.9 (the default; 1 freezes the statistics)"),
    "dropout": (0.0, 1.0, False, "0 or 0.1"),
}


def check_settings(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the ``image.`` key whose value lies outside its range."""
  for key, (low, high, closed, usual) in _BOUNDS.items():
    value = config.image[key]
    if not (low <= value <= high and (closed or value < high)):
      interval = f"[{low:g}, {high:g}{']' if closed else ')'}"
      raise ValueError(f"image.{key} must lie in {interval}, got {value!r}; a usual value is "
                       f"{usual} (--config.image.{key}=...).")


def dataset_info(config: ml_collections.ConfigDict) -> images_lib.DatasetInfo:
  """Image size (``image.image_size`` or the dataset's), channels and classes of the run."""
  i = config.image
  if i.dataset not in _DATASET_INFO:
    raise ValueError(f"Unknown image.dataset {i.dataset!r}; choose one of {sorted(_DATASET_INFO)}.")
  info = _DATASET_INFO[i.dataset]
  if i.dataset == "digits" and i.image_size not in (0, info.image_size):
    raise ValueError(f"The digits are {info.image_size}x{info.image_size}; set image.image_size "
                     "to 0 (or 8), or use augment='imagenet' data.")
  return dataclasses.replace(info, image_size=i.image_size or info.image_size)


def model_config(config: ml_collections.ConfigDict, info: images_lib.DatasetInfo):
  """The ResNetConfig or ViTConfig of ``config.image``."""
  i = config.image
  common = dict(num_classes=info.num_classes, in_channels=info.channels, dtype=i.dtype)
  if i.model == "resnet":
    return resnet.ResNetConfig.preset(
        i.preset, batch_norm_group_size=i.batch_norm_group_size,
        batch_norm_momentum=i.batch_norm_momentum, **common)
  if i.model == "vit":
    return vit.ViTConfig.preset(i.preset, image_size=info.image_size, patch_size=i.patch_size,
                                dropout=i.dropout, **common)
  raise ValueError(f"Unknown image.model {i.model!r}; choose 'resnet' or 'vit'.")


def cross_entropy_and_top_k_sums(
    logits: jax.Array,
    labels: jax.Array,
    weights: jax.Array | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, jax.Array]:
  """Summed (smoothed) cross-entropy, top-1 and (5 classes or more) top-5 hits and example count.

  >>> sums = cross_entropy_and_top_k_sums(jnp.array([[2.0, 1.0, 0.0]]), jnp.array([1]))
  >>> float(sums["correct"]), float(sums["count"])
  (0.0, 1.0)
  """
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  labels = labels.reshape(-1).astype(jnp.int32)
  weights = jnp.ones(labels.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  loss = -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  rank = jnp.sum(logits > label_logit, axis=-1)  # classes scored above the label
  sums = {"loss_sum": jnp.sum(weights * loss), "correct": jnp.sum(weights * (rank == 0)),
          "count": jnp.sum(weights)}
  if num_classes >= 5:
    sums["correct_top5"] = jnp.sum(weights * (rank < 5))
  return sums


@dataclasses.dataclass
class ImageClassification:
  """ResNet/ViT image classification; implements :class:`lamb_optax.tasks.base.Task`."""

  config: ml_collections.ConfigDict
  info: images_lib.DatasetInfo
  model_config: Any
  mesh: jax.sharding.Mesh
  graphdef: Any
  abstract_states: tuple  # (nnx Param state, nnx BatchStat state), shapes only
  param_shardings: PyTree
  splits: dict[str, Any] | None  # None when built without data (compiling only)

  @property
  def is_resnet(self) -> bool:
    return isinstance(self.model_config, resnet.ResNetConfig)

  def describe(self) -> str:
    n = sum(x.size for x in jax.tree.leaves(self.abstract_states[0]))
    i = self.config.image
    return (f"{i.model} {i.preset} ({n / 1e6:.2f}M params) on {i.dataset} "
            f"({self.info.image_size}x{self.info.image_size}x{self.info.channels}, "
            f"{self.info.num_classes} classes)")

  def stacked_axes(self, params: PyTree) -> PyTree:
    if self.is_resnet:  # stages are not stacked: one trust ratio per tensor
      return jax.tree.map(lambda _: 0, params)
    return vit.stacked_axes(params)

  def _new_model(self):
    cls = resnet.ResNet if self.is_resnet else vit.ViT
    return cls(self.model_config, rngs=nnx.Rngs(self.config.seed))

  def _to_params(self, param_state, stat_state) -> PyTree:
    params = {"params": nnx.to_pure_dict(param_state)}
    if jax.tree.leaves(stat_state):
      params[MODEL_STATE] = nnx.to_pure_dict(stat_state)
    return params

  def abstract_params(self) -> PyTree:
    return self._to_params(*self.abstract_states)

  def init_params(self) -> PyTree:
    def init():
      _, param_state, stat_state = nnx.split(self._new_model(), nnx.Param, nnx.BatchStat)
      return self._to_params(param_state, stat_state)
    return jax.jit(init, out_shardings=self.param_shardings)()

  def model(self, params: PyTree):
    """The NNX model holding ``params`` (and the running statistics, if any)."""
    param_state, stat_state = jax.tree.map(lambda x: x, self.abstract_states)
    nnx.replace_by_pure_dict(param_state, params["params"])
    if MODEL_STATE in params:
      nnx.replace_by_pure_dict(stat_state, params[MODEL_STATE])
    return nnx.merge(self.graphdef, param_state, stat_state)

  def normalizers(self, batch) -> dict[str, jax.Array]:
    return {"count": jnp.asarray(batch["label"].shape[0], jnp.float32)}

  def objective(self, params, batch, dropout_rng, normalizers):
    model = self.model(params)
    if self.is_resnet:
      logits, moments = resnet.train_forward(model, batch["image"])
    else:
      logits, moments = model(batch["image"], train=True, dropout_rng=dropout_rng), None
    sums = cross_entropy_and_top_k_sums(logits, batch["label"],
                                        label_smoothing=self.config.image.label_smoothing)
    loss = sums["loss_sum"] / normalizers["count"]
    if moments is not None:
      sums[MODEL_STATE] = moments  # summed over micro-batches by the step, then update_model_state
    return loss, sums

  def update_model_state(self, running: PyTree, summed_moments: PyTree,
                         num_micro_batches: int) -> PyTree:
    return resnet.update_running_stats(running, summed_moments, num_micro_batches,
                                       self.model_config.batch_norm_momentum)

  def eval_sums(self, params, batch):
    logits = self.model(params)(batch["image"], train=False)
    return cross_entropy_and_top_k_sums(logits, batch["label"], batch.get("weight"))

  def summarise(self, sums: Mapping[str, float]) -> dict[str, float]:
    s = {k: float(v) for k, v in sums.items() if k != MODEL_STATE}
    if not s.get("count"):
      return {}
    out = {"loss": s["loss_sum"] / s["count"], "accuracy": s["correct"] / s["count"]}
    if "correct_top5" in s:
      out["top5_accuracy"] = s["correct_top5"] / s["count"]
    return out

  def flops_per_example(self) -> float:
    if self.is_resnet:
      return resnet.flops_per_example(self.model_config, self.info.image_size)
    return vit.flops_per_example(self.model_config)

  def tokens_per_example(self) -> int:
    return 0

  def batch_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    s, c = self.info.image_size, self.info.channels
    return {"image": jax.ShapeDtypeStruct((s, s, c), np.float32),
            "label": jax.ShapeDtypeStruct((), np.int32)}

  def _splits(self) -> dict[str, Any]:
    return require_data(self.splits)

  def _kind(self) -> str:
    return self.config.image.augment

  def train_iterator(self, per_process_batch_size: int):
    i = self.config.image
    augment = images_lib.Augment(self.config.seed, self._kind(), self.info.image_size,
                                 self.info.num_classes)
    return iter(loader.train_batches(
        self._splits()[i.train_split], batch_size=per_process_batch_size, seed=self.config.seed,
        shard_index=jax.process_index(), shard_count=jax.process_count(), transform=augment,
        worker_count=self.config.data.worker_count))

  def eval_batches(self, per_process_batch_size: int, num_batches: int):
    """This process's rows of the held-out split in global batches, the last padded with
    zero-weight rows; at most ``num_batches`` batches."""
    if num_batches < 1:
      return []
    source = self._splits()[self.config.image.eval_split]
    transform = images_lib.EvalTransform(self._kind(), self.info.image_size, self.info.num_classes)
    n, count = jax.process_count(), jax.process_index()
    global_batch = per_process_batch_size * n
    batches = []
    for b in range(min(num_batches, math.ceil(len(source) / global_batch))):
      rows = [b * global_batch + count + n * k for k in range(per_process_batch_size)]
      # Rows past the end repeat example 0 with weight 0: they count nowhere.
      batch = loader.stack([transform(source[r if r < len(source) else 0]) for r in rows])
      batch["weight"] = np.array([r < len(source) for r in rows], np.float32)
      batches.append(batch)
    return batches


def load_splits(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The run's train and held-out sources; fails (saying how to fix it) before any compile."""
  i = config.image
  wanted = (i.train_split, i.eval_split)
  if i.dataset == "digits":
    splits = images_lib.digits_splits(i.split_seed)
  else:
    splits = images_lib.tfds_splits(i.dataset, i.data_dir, tuple(dict.fromkeys(wanted)))
  missing = [s for s in wanted if s not in splits]
  if missing:
    raise ValueError(f"{i.dataset} has no split(s) {missing}; it has {sorted(splits)}.")
  if i.dataset != "digits" and i.augment != "imagenet":
    raise ValueError(f"{i.dataset} holds images of varying sizes: set image.augment='imagenet' "
                     "(random-resized crop for training, resize + centre crop for evaluation).")
  return splits


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
          workdir: str | None) -> ImageClassification:
  """The task for ``config``; reads its data unless ``workdir`` is None."""
  check_settings(config)
  info = dataset_info(config)
  m_config = model_config(config, info)
  splits = load_splits(config) if workdir is not None else None
  cls = resnet.ResNet if isinstance(m_config, resnet.ResNetConfig) else vit.ViT
  abstract = nnx.eval_shape(lambda: cls(m_config, rngs=nnx.Rngs(0)))
  graphdef, param_state, stat_state = nnx.split(abstract, nnx.Param, nnx.BatchStat)
  shard = lambda state: nnx.to_pure_dict(sharding.state_shardings(state, mesh))
  param_shardings = {"params": shard(param_state)}
  if jax.tree.leaves(stat_state):
    param_shardings[MODEL_STATE] = shard(stat_state)
  return ImageClassification(config, info, m_config, mesh, graphdef, (param_state, stat_state),
                             param_shardings, splits)
