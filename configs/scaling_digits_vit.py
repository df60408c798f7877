r"""Batch scaling at a fixed epoch budget with learning rates tuned per batch: LAMB vs LARS vs
AdamW on the digits ViT, with the largest batch still given 150 steps; CPU, no downloads.

Hardware: the project's 2-core CPU machine, no accelerator; the digits ship in scikit-learn's
wheel. Published result: none. The question is the LAMB paper's (You et al., arXiv:1904.00962,
Table 1): at a fixed number of epochs, does the final quality stay flat as the batch grows, and
flatter for LAMB than for LARS and AdamW? configs/scaling_digits.py could not show it: its fixed
8,192 images left the largest batch 32 steps, and its rates were tuned at B = 64 only.
Expected (measured, 2 seeds, test split; docs/image_classification.md "Batch scaling at 61
epochs, rates tuned per batch"): test accuracy at B = 16 / 64 / 256 / 512: LAMB 97.2 / 96.1 /
97.8 / 95.7%, LARS 96.7 / 96.9 / 95.4 / 89.2%, AdamW 94.7 / 97.2 / 95.3 / 94.3%. LAMB's curve is
flat (1.5 points from B = 16 to 512) where LARS's falls at 512; AdamW's is as flat as LAMB's.

Cells: configs/digits_vit.py's ViT "tiny" x 3 optimizers x 4 batches (16, 64, 256, 512) x 2
seeds, at a fixed 76,800 training images per cell (61 epochs of the 1,257): 4,800 steps at
B = 16, 1,200 at 64, 300 at 256, 150 at 512. Warmup 10% of each run, linear decay to 0; weight
decay 0.01; the paper's phi bounds [1, 100] for LAMB and LARS (configs/digits_vit.py says why).

Learning rates, two stages:
1. a sweep on the VALIDATION split, seed 0, at EVERY batch: sweep_factors 1/9, 1/3, 1, 3 around
   the square-root-scaled centres base_learning_rates, widened by one more factor of 3 where a
   best fell on the grid's edge (LAMB and AdamW at B = 16, AdamW at 256; none of those won);
2. the study on the TEST split, seeds 0 and 1, each (optimizer, batch) at its own best rate from
   the sweep (highest validation accuracy, ties to the lower loss): lr_rule="table",
   learning_rates below.

Cost (2-core CPU VM, shared for most of the sweep): the sweep's 51 runs 78 min, the study's 24
runs 25 min (20 s to 2 min each).

  python scripts/batch_scaling_study.py --config=configs/scaling_digits_vit.py \
    --workdir=/tmp/digits_vit_lr --config.base.image.eval_split=validation \
    --config.study.lr_rule=sweep --config.study.seeds='(0,)'
  python scripts/batch_scaling_study.py --config=configs/scaling_digits_vit.py \
    --workdir=/tmp/digits_vit_study
"""

import os

import ml_collections

from lamb_optax.train.config import load


def _scaling_digits_config() -> ml_collections.ConfigDict:
  """configs/scaling_digits.py's config, the base this study narrows."""
  return load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "scaling_digits.py"))


def get_config():
  config = _scaling_digits_config()
  study = config.study
  study.variants = dict(vit=study.variants.vit.to_dict())
  study.optimizers = ("lamb", "lars", "adamw")
  study.batch_sizes = (16, 64, 256, 512)
  study.examples_budget = 76_800  # 150 steps at the largest batch
  # The sweep's centres at B = 64 (carried to each batch by the square-root rule).
  study.base_learning_rates = dict(vit=dict(lamb=1e-2, lars=3e-2, adamw=3e-3))
  study.sweep_factors = (1 / 9, 1 / 3, 1.0, 3.0)
  study.lr_rule = "table"
  # (batch, rate) per optimizer: the sweep's pick per batch (docs/image_classification.md).
  study.learning_rates = ml_collections.ConfigDict(dict(vit=dict(
      lamb=((16, 1.667e-3), (64, 1e-2), (256, 6.667e-3), (512, 2.828e-2)),
      lars=((16, 1.5e-2), (64, 3e-2), (256, 6e-2), (512, 2.828e-2)),
      adamw=((16, 5e-4), (64, 3e-3), (256, 1.8e-2), (512, 8.485e-3)),
  )))
  config.quick.optimizers = ("lamb",)
  return config
