"""The shared parts of the recipe configs in ``configs/``: one LAMB BERT pretraining phase as the
paper runs it, and the ImageNet setup of the image recipes. Each returns a full trainer config
(:func:`lamb_optax.train.config.default_config` with the recipe's values) for a config file to
finish with its own numbers."""

from __future__ import annotations

import math

import ml_collections

from lamb_optax import schedules
from lamb_optax.train.config import default_config
from lamb_optax.train.config import optional


def paper_lamb_phase(preset: str, *, global_batch_size: int, num_train_steps: int,
                     max_seq_length: int, max_predictions_per_seq: int, micro_batch_size: int,
                     init_from: str = "") -> ml_collections.ConfigDict:
  """One phase of the paper's LAMB BERT pretraining, the base of ``configs/bert_*_phase*.py``.

  LAMB with weight decay 0.01 and ε 1e-6, bfloat16 compute, the learning rate and warmup of the
  paper's square-root rule for ``global_batch_size``
  (:func:`lamb_optax.schedules.paper_learning_rate` / ``paper_warmup_ratio``), linear decay;
  ``init_from`` for phase 2.

  >>> config = paper_lamb_phase("base", global_batch_size=32768, num_train_steps=100,
  ...                           max_seq_length=128, max_predictions_per_seq=20,
  ...                           micro_batch_size=128)
  >>> config.learning_rate, config.warmup_steps
  (0.005, 20)
  """
  config = default_config()
  config.model.preset = preset
  config.model.dtype = "bfloat16"
  config.optimizer.name = "lamb"
  config.optimizer.kwargs.weight_decay = 0.01
  config.optimizer.kwargs.eps = 1e-6
  config.global_batch_size = global_batch_size
  config.micro_batch_size = micro_batch_size
  config.num_train_steps = num_train_steps
  config.learning_rate = schedules.paper_learning_rate(global_batch_size)
  config.warmup_steps = round(schedules.paper_warmup_ratio(global_batch_size) * num_train_steps)
  config.data.max_seq_length = max_seq_length
  config.data.max_predictions_per_seq = max_predictions_per_seq
  config.init_from = init_from
  config.log_every_steps = 50
  config.eval_every_steps = 1000 if max_seq_length <= 128 else 500
  config.checkpoint_every_steps = 500 if max_seq_length <= 128 else 250
  return config


# ImageNet-1k's training images: TFDS imagenet2012's train split, and the `num_train_images`
# default of the TPU ResNet code (fastalgo/imagenet_resnet50_lamb resnet_main.py).
IMAGENET_TRAIN_IMAGES = 1_281_167


def epochs_to_steps(epochs: float, global_batch_size: int,
                    num_examples: int = IMAGENET_TRAIN_IMAGES) -> int:
  """Optimizer steps that cover ``epochs`` passes over ``num_examples``, rounded up.

  >>> epochs_to_steps(90, 32768), epochs_to_steps(20, 32768)  # the LAMB author's ImageNet run
  (3519, 782)
  """
  return math.ceil(epochs * num_examples / global_batch_size - 1e-9)


def imagenet_config(model: str, preset: str, *, global_batch_size: int, micro_batch_size: int,
                    num_train_steps: int, warmup_steps: int) -> ml_collections.ConfigDict:
  """The common part of ``configs/imagenet_*.py``: TFDS imagenet2012 at 224 pixels with the
  Inception crop + flip (evaluation: resize 256, centre crop 224), bfloat16 compute, the whole
  validation split (50,000 images) at each evaluation, about every 4 epochs."""
  config = default_config()
  config.task = "image_classification"
  config.image.model = model
  config.image.preset = preset
  config.image.dataset = "imagenet2012"
  config.image.augment = "imagenet"
  config.image.dtype = "bfloat16"
  config.global_batch_size = global_batch_size
  config.micro_batch_size = micro_batch_size
  config.num_train_steps = num_train_steps
  config.warmup_steps = warmup_steps
  config.log_every_steps = 50
  config.eval_every_steps = max(1, min(num_train_steps, epochs_to_steps(4, global_batch_size)))
  config.checkpoint_every_steps = config.eval_every_steps
  config.eval_batches = 1000  # an upper bound: evaluation stops at the end of the split
  return config


def bert_finetuning_optimizer(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Sets Devlin et al.'s fine-tuning optimizer on ``config`` (the base of ``configs/glue.py``,
  ``squad.py`` and ``text_classification.py``): google-research/bert ``optimization.py``'s
  AdamWeightDecayOptimizer — weight decay 0.01, ε 1e-6, no bias correction — after clipping to
  global norm 1.0 (``--config.optimizer.kwargs.max_grad_norm=None`` turns clipping off).

  >>> config = bert_finetuning_optimizer(default_config())
  >>> config.optimizer.name, config.optimizer.kwargs.max_grad_norm
  ('adamw', 1.0)
  """
  config.optimizer.name = "adamw"
  config.optimizer.kwargs.weight_decay = 0.01
  config.optimizer.kwargs.eps = 1e-6
  config.optimizer.kwargs.bias_correction = False
  config.optimizer.kwargs.max_grad_norm = optional(1.0)
  return config
