r"""ResNet-50 on ImageNet with LAMB, as the LAMB paper's first author ran it.

Source: fastalgo/imagenet_resnet50_lamb (Yang You's TensorFlow TPU code for arXiv:1904.00962;
read with the search tools at commits e4c89f8 and 4d140ea): run.sh, optimization.py,
resnet_main.py, and the logs log.out and check_64k.out.
Hardware (published): TPU v3-256 (128 chips, "128 v3 TPU chips" in its README) for batch 32k;
TPU v3-512 (256 chips) for batch 64k. Suggested here: v5p-256 or v4-256 (128 chips) for 32k,
v5p-512 for 64k.
Published result (top-1 on the 50,000 validation images):
  32768: 76.34% after 3,519 steps (90 epochs): log.out ("76.3%" in the README).
  65536: 75.30% after 1,760 steps: check_64k.out at commit 4d140ea (whose run.sh has lr 0.04;
         the commit before swept 0.044/0.045, and the log does not say which rate it is).
The paper's own ResNet-50 figure (batch 16k, LAMB 76.66% vs momentum 75.20%) came from
secondary sources and is not verified against the paper: the search tools return only the
opening sections of the copies of arXiv:1904.00962 they hold (docs/lamb.md). We found no
hyperparameters for it, and no row here claims it.
Recipe (run.sh, optimization.py; the numbers below are the code's, confirmed):
  LAMB β1 0.9, β2 0.999, ε 1e-6, no bias correction (the update is m/(sqrt(v)+ε) from the raw
  moments), decoupled weight decay 1.5 inside the trust ratio ‖x‖/‖update‖, and neither decay nor
  trust ratio on BatchNorm parameters (exclude_from_weight_decay=["batch_normalization", ...]);
  L2 loss 0 (--weight_decay=0.0); label smoothing 0.1; lr 0.04 at both batch sizes; linear
  warmup 782 steps (20 epochs) at 32k, 500 at 64k, then linear decay to 0 at the last step
  ((T − t)·lr/(T − W): our "warmup_polynomial" with power 1). Gradients clipped to global norm
  1.0 before the optimizer: optimization.py create_optimizer,
  ``(grads, _) = tf.clip_by_global_norm(grads, clip_norm=1.0)`` (present at e0fba5c, 4d140ea
  and e4c89f8). This project has no trainer-level clipping key; the optimizer is therefore
  ``nvlamb`` with ``max_grad_norm=1.0``, which is exactly :func:`lamb_optax.lamb` with the same
  kwargs behind :func:`lamb_optax.transforms.clip_by_global_norm` (and a float32 promotion of
  narrower gradients, a no-op here: params and gradients are float32); its trust-ratio mask is
  the decay mask, as ``lamb``'s.
Differences from the source (ours): our default decay mask also leaves the classifier's bias
undecayed and unratioed (the source decays it); BatchNorm groups of 128 examples, our reading of
TPUEstimator's per-core BatchNorm at 128 images per core (32768 / 256 cores); the last BatchNorm
γ of each block starts at zero (our ResNet's default; the source's resnet_model is only a .pyc);
our data pipeline's crop/flip is the standard Inception crop, not the source's exact code; the
source clips each TPU core's gradient (its tf.gradients output goes to CrossShardOptimizer,
whose apply_gradients sums across cores after the clip: tensorflow/tensorflow
tensorflow/python/tpu/tpu_optimizer.py, read at commit 0bc36ab9, "clipping with per replica
global norm"; the TensorFlow version the author ran is not recorded), ours clips the
global-batch gradient.

Run (the argument is the global batch size, 32768 or 65536; needs a prepared imagenet2012, see
docs/image_classification.md):
  python -m lamb_optax.train --config=configs/imagenet_resnet50_lamb.py:32768 \
      --workdir=gs://BUCKET/rn50_lamb_32k --config.image.data_dir=gs://BUCKET/tfds
"""

from lamb_optax.train.presets import imagenet_config

# Global batch -> (lr, warmup steps, train steps, published top-1, source). 3,519 steps and 782
# warmup steps are 90 and 20 epochs at 32k (config.epochs_to_steps); 1,760 steps at 64k are
# 1,760 × 65,536 / 1,281,167 ≈ 90.03 epochs, and 500 warmup steps there ≈ 25.6 epochs.
RUNS = {
    32768: (0.04, 782, 3519, 76.34, "run.sh and log.out at e4c89f8"),
    65536: (0.04, 500, 1760, 75.30, "run.sh and check_64k.out at 4d140ea"),
}
BATCH_NORM_GROUP_SIZE = 128  # ours: per-core BatchNorm of the source's TPUEstimator, 128/core


def get_config(batch_size: str = "32768"):
  batch = int(batch_size)
  if batch not in RUNS:
    raise ValueError(f"imagenet_resnet50_lamb.py:{batch_size}: the source ran {sorted(RUNS)}; "
                     "pass one of those as the config argument.")
  lr, warmup, steps, _, _ = RUNS[batch]
  config = imagenet_config("resnet", "resnet50", global_batch_size=batch, micro_batch_size=128,
                           num_train_steps=steps, warmup_steps=warmup)
  config.image.batch_norm_group_size = BATCH_NORM_GROUP_SIZE
  config.image.label_smoothing = 0.1
  # LAMB behind a global-norm clip at 1.0 (optimization.py); see the docstring's Recipe.
  config.optimizer.name = "nvlamb"
  config.optimizer.kwargs.max_grad_norm = 1.0
  config.optimizer.kwargs.b1 = 0.9
  config.optimizer.kwargs.b2 = 0.999
  config.optimizer.kwargs.eps = 1e-6
  config.optimizer.kwargs.weight_decay = 1.5
  config.optimizer.kwargs.bias_correction = False
  config.learning_rate = lr
  config.lr_schedule = "warmup_polynomial"
  config.decay_power = 1.0
  config.end_learning_rate = 0.0
  return config
