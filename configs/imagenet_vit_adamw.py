r"""ViT on ImageNet-1k from scratch with AdamW, as big_vision's configs train it.

Sources (google-research/big_vision, read with the search tools):
  s16: big_vision/configs/vit_s16_i1k.py ("Better plain ViT baselines", arXiv:2205.01580);
  b16: big_vision/configs/vit_i1k.py with variant B/16 ("How to train your ViT",
       arXiv:2106.10270);
  the optimizer: big_vision/optax.py (make()).
Hardware (published): s16 "should take 6-7h to finish 90ep on a TPU-v3-8" (vit_s16_i1k.py).
b16: not stated in the config; suggested here v5p-64 or v4-64 (32 chips).
Published result: s16 "reach 76.5%" top-1 after 90 epochs (vit_s16_i1k.py docstring, confirmed).
b16: the config states no accuracy; not confirmed by search (see the paper's figures).
Recipe (confirmed in the configs): batch 1024 / 90 epochs (s16), 4096 / 300 epochs (b16);
Adam (optax.scale_by_adam defaults b1 0.9, b2 0.999, ε 1e-8) with bfloat16 first moment;
global gradient clipping at norm 1.0 before Adam; lr 1e-3; cosine decay after 10,000 linear warmup
steps; weight decay wd = 1e-4 on kernels only. big_vision's chain is clip, scale_by_adam,
scale(lr), add_decayed_weights(wd), scale_by_schedule, scale(-1): the decay is multiplied by the
schedule but not by lr, so in optax.adamw form (decay × lr × schedule) it is wd / lr = 0.1.
Missing here (ours, documented in docs/image_classification.md): RandAugment (s16
randaug(2,10); b16 'medium2' = randaug(2,15)) and mixup (p 0.2; p 0.5); s16's global-average
pooling and sincos2d position embeddings (ours: [CLS] token, learned embeddings, as b16's
pool_type='tok'); the pre-logits layer of both (rep_size=True in vit_s16_i1k.py and
vit_i1k.py; big_vision/models/vit.py makes it Dense(width) + tanh, width 384 for S and 768 for B
per its decode_variant: google-research/big_vision at commit 0127fb6b337e, vit_s16_i1k.py last
changed in 642c086e68b5; ours has no pre-logits layer); big_vision trains on train[:99%] and
keeps 1% as minival (ours: the whole train split, so an epoch is 1% more steps). The cosine's end
value 0 is big_vision's (big_vision/utils.py create_learning_rate_schedule: lr·0.5·(1 +
cos(π·progress)), at the same commit). Not run by us.

Run (the argument is s16 or b16; needs a prepared imagenet2012):
  python -m lamb_optax.train --config=configs/imagenet_vit_adamw.py:s16 \
      --workdir=gs://BUCKET/vit_s16_adamw --config.image.data_dir=gs://BUCKET/tfds
"""

from lamb_optax.train.presets import epochs_to_steps
from lamb_optax.train.presets import imagenet_config

# Variant -> (preset, global batch, epochs, published top-1 or None).
RUNS = {"s16": ("small", 1024, 90, 76.5), "b16": ("base", 4096, 300, None)}
LEARNING_RATE = 1e-3
BIG_VISION_WD = 1e-4  # decoupled, × schedule only
WARMUP_STEPS = 10_000


def get_config(variant: str = "s16"):
  if variant not in RUNS:
    raise ValueError(f"imagenet_vit_adamw.py:{variant}: choose one of {sorted(RUNS)}.")
  preset, batch, epochs, _ = RUNS[variant]
  config = imagenet_config("vit", preset, global_batch_size=batch, micro_batch_size=128,
                           num_train_steps=epochs_to_steps(epochs, batch),
                           warmup_steps=WARMUP_STEPS)
  config.image.patch_size = 16
  config.optimizer.name = "adamw"
  config.optimizer.kwargs.b1 = 0.9
  config.optimizer.kwargs.b2 = 0.999
  config.optimizer.kwargs.eps = 1e-8
  config.optimizer.kwargs.weight_decay = BIG_VISION_WD / LEARNING_RATE
  config.optimizer.kwargs.max_grad_norm = 1.0
  config.optimizer.kwargs.mu_dtype = "bfloat16"
  config.learning_rate = LEARNING_RATE
  config.lr_schedule = "warmup_cosine"
  config.end_learning_rate = 0.0
  return config
