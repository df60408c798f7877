r"""ResNet-50 on ImageNet with LARS as Google's MLPerf Training v0.7 submissions ran it.

Sources (mlcommons/training_results_v0.7, read with the search tools):
  8192:  Google/benchmarks/resnet/tpu-v4-512-TF/run_and_time.sh (flags) and
         implementations/resnet-research-TF-tpu-v4-512/lars_util.py (schedule, optimizer);
  65536: Google/benchmarks/resnet/tpu-v3-8192-JAX/run_and_time.sh (--batch_size=65536) and
         implementations/resnet-research-JAX-tpu-v3-8192/train.py (defaults for that batch).
Hardware (published): TPU v4-512 (8192) and TPU v3-8192, i.e. 4,096 chips (65536). Suggested
here: v5p-128 or v4-128 (64 chips) for 8192; v5p-1024 or larger for 65536.
Published result: MLPerf's quality target, 75.9% top-1 (TARGET_ACCURACY = 0.759 in train.py);
a submission stops at the first evaluation above it. Time-to-train results are in MLPerf's
v0.7 results table, not restated here.
Recipe (confirmed in the files above): LARS momentum with the rate inside the momentum and trust
ratio 0.001·‖x‖/(‖g‖ + λ‖x‖ + ε), ε = 0, neither decay nor ratio on BatchNorm parameters and
biases (skip_list=['batch_normalization', 'bias']); label smoothing 0.1; linear warmup, then
polynomial decay with power 2 from the warmup's end to 1e-4 at the last step:
  8192:  lr 17, warmup 5 epochs (781 steps: 5·1281167 // 8192), 6,875 steps (~44 epochs),
         momentum 0.9, weight decay 2e-4;
  65536: lr 23.080977304670448, warmup 33 epochs, 92 epochs, momentum 0.9537213777059405,
         weight decay 1e-4; train.py rounds an epoch to 19.75 steps (79 steps per 4-epoch loop):
         1,817 steps, warmup 651.75 (652 here); BatchNorm over 64 images (batchnorm_span).
Differences (ours): "optax_lars" (optax.lars) divides by ‖g + λx‖ instead of ‖g‖ + λ‖x‖
(slightly larger ratios); decay over (total − warmup) steps instead of (total − warmup + 1).
BatchNorm groups: 64 images in both rows (65536: batchnorm_span; 8192: --distributed_group_size=4
over 16-image replicas, our reading of the flag); flax.optim.LARS's trust coefficient 0.001 in
the JAX run is *recalled* (train.py logs lars_epsilon 0, not the coefficient).

Run (the argument is the global batch size, 8192 or 65536; needs a prepared imagenet2012):
  python -m lamb_optax.train --config=configs/imagenet_resnet50_mlperf_lars.py:8192 \
      --workdir=gs://BUCKET/rn50_mlperf_8k --config.image.data_dir=gs://BUCKET/tfds
"""

from lamb_optax.train.presets import IMAGENET_TRAIN_IMAGES
from lamb_optax.train.presets import imagenet_config

TARGET_TOP1 = 0.759  # MLPerf's quality target (train.py TARGET_ACCURACY)
# Global batch -> (lr, warmup steps, train steps, momentum, weight decay).
RUNS = {
    8192: (17.0, 5 * IMAGENET_TRAIN_IMAGES // 8192, 6875, 0.9, 2e-4),
    65536: (23.080977304670448, 652, 1817, 0.9537213777059405, 1e-4),
}


def get_config(batch_size: str = "8192"):
  batch = int(batch_size)
  if batch not in RUNS:
    raise ValueError(f"imagenet_resnet50_mlperf_lars.py:{batch_size}: the sources ran "
                     f"{sorted(RUNS)}; pass one of those as the config argument.")
  lr, warmup, steps, momentum, weight_decay = RUNS[batch]
  config = imagenet_config("resnet", "resnet50", global_batch_size=batch, micro_batch_size=128,
                           num_train_steps=steps, warmup_steps=warmup)
  config.image.batch_norm_group_size = 64
  config.image.label_smoothing = 0.1
  config.optimizer.name = "optax_lars"
  config.optimizer.kwargs.momentum = momentum
  config.optimizer.kwargs.weight_decay = weight_decay
  config.optimizer.kwargs.trust_coefficient = 0.001
  config.optimizer.kwargs.eps = 0.0
  config.learning_rate = lr
  config.lr_schedule = "warmup_polynomial"
  config.decay_power = 2.0
  config.end_learning_rate = 1e-4
  return config
