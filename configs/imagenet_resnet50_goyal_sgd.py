r"""ResNet-50 on ImageNet with momentum SGD at batch 8k: Goyal et al. 2017, "Accurate, Large
Minibatch SGD: Training ImageNet in 1 Hour" (arXiv:1706.02677).

Hardware (published): 256 GPUs, batch 8192, one hour (the abstract, confirmed by search: "trains
ResNet-50 with a minibatch size of 8192 on 256 GPUs in one hour", "no loss of accuracy when
training with large minibatch sizes up to 8192 images"). Suggested here: v5p-64 (32 chips,
256 images per chip) or v4-64.
Published result: top-1 error 23.74% (76.3% top-1) at 8k vs 23.60% at 256: *recalled*, not
confirmed by search (the search tools returned the abstract, not the tables).
Recipe, *recalled* from the paper (not confirmed by search): momentum SGD 0.9 (not Nesterov);
linear scaling lr = 0.1·B/256 = 3.2; gradual warmup over the first 5 epochs; 90 epochs with
the rate ×0.1 at epochs 30, 60 and 80; weight decay 1e-4; γ = 0 for the last BatchNorm of each
residual block; BatchNorm statistics over n = 32 images per GPU. The step schedule's shape
(×[1, 0.1, 0.01, 0.001] at epochs 30/60/80, warmup 5 epochs from 0) is confirmed in
mlcommons/training_results_v0.7 Google/.../resnet-research-JAX-tpu-v3-8192/train.py
(piecewise_learning_rate_fn), which uses it for its non-LARS runs.
Differences (ours): Goyal's warmup starts at 0.1 (the batch-256 rate) and ours at 0; our
default decay mask leaves BatchNorm γ/β and biases undecayed — whether Goyal decays them is not
confirmed here (set --config.optimizer.kwargs.weight_decay_mask=True to decay everything); no
label smoothing; the 90 epochs are rounded up to whole steps (14,076) and the boundaries to 4,692,
9,384 and 12,512.

Run (needs a prepared imagenet2012, see docs/image_classification.md):
  python -m lamb_optax.train --config=configs/imagenet_resnet50_goyal_sgd.py \
      --workdir=gs://BUCKET/rn50_goyal_8k --config.image.data_dir=gs://BUCKET/tfds
"""

from lamb_optax.train.presets import epochs_to_steps
from lamb_optax.train.presets import imagenet_config

BATCH = 8192
BASE_LR_PER_256 = 0.1  # recalled: the linear scaling rule from He et al.'s 0.1 at batch 256
EPOCHS = 90
WARMUP_EPOCHS = 5
DECAY_EPOCHS = (30, 60, 80)


def get_config():
  config = imagenet_config("resnet", "resnet50", global_batch_size=BATCH, micro_batch_size=128,
                           num_train_steps=epochs_to_steps(EPOCHS, BATCH),
                           warmup_steps=epochs_to_steps(WARMUP_EPOCHS, BATCH))
  config.image.batch_norm_group_size = 32  # recalled: n = 32 images per GPU
  config.optimizer.name = "sgd"
  config.optimizer.kwargs.momentum = 0.9
  config.optimizer.kwargs.nesterov = False
  config.optimizer.kwargs.weight_decay = 1e-4
  config.learning_rate = BASE_LR_PER_256 * BATCH / 256
  config.lr_schedule = "warmup_piecewise"
  config.lr_boundaries = tuple(epochs_to_steps(e, BATCH) for e in DECAY_EPOCHS)
  config.lr_decay_factor = 0.1
  return config
