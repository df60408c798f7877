r"""ViT on ImageNet-1k with LAMB: big_vision's AdamW recipes (configs/imagenet_vit_adamw.py)
with LAMB swapped in. Ours: no published LAMB recipe for ViT on ImageNet was found.

Hardware: as configs/imagenet_vit_adamw.py (s16: TPU-v3-8 for big_vision's AdamW run; b16:
suggested v5p-64 or v4-64).
Published result: none for LAMB (we found no published LAMB ViT-ImageNet recipe with the search
tools). The AdamW baseline it should be compared with: s16 76.5% top-1 after 90 epochs
(big_vision vit_s16_i1k.py). Not run by us.
Recipe: everything as imagenet_vit_adamw.py (batch, epochs, 10,000 warmup steps, cosine decay,
bfloat16 first moment, the same gaps in augmentation and pooling) except the optimizer: LAMB
(lamb_optax.lamb: β1 0.9, β2 0.999, ε 1e-6, bias correction, trust ratio per layer of the
stacked encoder), no gradient clipping (the trust ratio bounds each layer's step), decoupled
weight decay 0.1 (the AdamW recipe's optax-form value; ours), and the peak rate of the LAMB
paper's BERT square-root rule, 5e-3·sqrt(B/32768) (ours; B = 1024: 8.8e-4, B = 4096: 1.8e-3).
These are starting points to sweep, not tuned values.

Run (the argument is s16 or b16; needs a prepared imagenet2012):
  python -m lamb_optax.train --config=configs/imagenet_vit_lamb.py:s16 \
      --workdir=gs://BUCKET/vit_s16_lamb --config.image.data_dir=gs://BUCKET/tfds
"""

from lamb_optax import schedules
from lamb_optax.train.presets import epochs_to_steps
from lamb_optax.train.presets import imagenet_config

# Variant -> (preset, global batch, epochs): big_vision's AdamW runs (imagenet_vit_adamw.py).
RUNS = {"s16": ("small", 1024, 90), "b16": ("base", 4096, 300)}
WARMUP_STEPS = 10_000


def get_config(variant: str = "s16"):
  if variant not in RUNS:
    raise ValueError(f"imagenet_vit_lamb.py:{variant}: choose one of {sorted(RUNS)}.")
  preset, batch, epochs = RUNS[variant]
  config = imagenet_config("vit", preset, global_batch_size=batch, micro_batch_size=128,
                           num_train_steps=epochs_to_steps(epochs, batch),
                           warmup_steps=WARMUP_STEPS)
  config.image.patch_size = 16
  config.optimizer.name = "lamb"
  config.optimizer.kwargs.b1 = 0.9
  config.optimizer.kwargs.b2 = 0.999
  config.optimizer.kwargs.eps = 1e-6
  config.optimizer.kwargs.weight_decay = 0.1
  config.optimizer.kwargs.mu_dtype = "bfloat16"
  config.learning_rate = schedules.paper_learning_rate(batch)
  config.lr_schedule = "warmup_cosine"
  config.end_learning_rate = 0.0
  return config
