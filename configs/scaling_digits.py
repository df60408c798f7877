r"""Batch-scaling study on images: LARS vs LAMB vs AdamW vs momentum SGD, ResNet vs
ViT, as the batch grows, on the UCI digits; CPU, no downloads.

Hardware: the project's 2-core CPU machine (shared, niced), no accelerator; the digits ship in
scikit-learn's wheel. Published result: none (a CPU-scale analogue of the LAMB paper's question
"does LARS degrade on attention models at large batch while LAMB holds?", not a paper setting).
Expected (measured, 2 seeds, docs/image_classification.md "Batch scaling on the digits"): test
accuracy at B = 16 / 256: ViT LAMB 86.5% / 71.4%, LARS 78.5% / 50.3%, AdamW 93.5% / 63.5%, SGD
89.7% / 30.3%; ResNet LAMB 98.3% / 97.5%, LARS 98.1% / 81.9%, AdamW 98.8% / 97.6%, SGD 98.3% /
94.0%. LARS is last on the ResNet at every batch and on the ViT at B = 16 and 64; on the ViT at
B = 128 and 256 momentum SGD is last (46.7% and 30.3% vs LARS's 61.1% and 50.3%,
docs/batch_scaling/digits/results.jsonl). LAMB leads the ViT only at B = 256.

Cells: 2 models (study.variants: configs/digits_resnet.py's ResNet "tiny" and
configs/digits_vit.py's ViT "tiny") x 4 optimizers x 4 batches (16, 64, 128, 256) x 2 seeds =
64, at a fixed 8,192 training images per cell (6.5 epochs of the 1,257): 512 steps at B=16, 128
at B=64, 64 at B=128, 32 at B=256. Every cell evaluates the TEST split (360 images) once, at the
end.

Learning rates: tuned on the VALIDATION split first, at B=64 (128 steps), seed 0, with
lr_rule="sweep": sweep_factors (1/3, 1, 3) around the centres ResNet lars 3e-2, lamb 1e-2,
adamw 3e-3, sgd 5e-2 and ViT lars 3e-2, lamb 1e-2, adamw 2e-3, sgd 5e-2, then factor 9 (every
best but one had been the top of the grid); the best of each is base_learning_rates below. They
are carried to the other batches by the square-root rule lr(B) = lr(64) * sqrt(B / 64); warmup
10% of each run, linear decay to 0.

Run (the tuning sweep on validation, then the study on test; `--quick` proves the machinery in
about a minute, `--dry_run` lists the cells). The sweep as run, with the centres above passed as
--config.study.base_learning_rates.<model>.<optimizer>=... (the defaults below are its result):
  python scripts/batch_scaling_study.py --config=configs/scaling_digits.py \
    --workdir=/tmp/digits_lr --config.base.image.eval_split=validation \
    --config.study.lr_rule=sweep --config.study.batch_sizes='(64,)' --config.study.seeds='(0,)'
  python scripts/batch_scaling_study.py --config=configs/scaling_digits.py --workdir=/tmp/digits

Cost (measured on the 2-core CPU, shared, niced): 9-44 s per cell (the persistent compilation
cache, JAX_COMPILATION_CACHE_DIR, spares seed 1 most of its compile), the 32-cell LR sweep
17 min, the study 26 min (64 cells). What was cut to fit about an hour of CPU for sweep and study
together: epochs (6.5, so B=256 gets 32 steps, not ~100), batches 512 and 1,024 (16 and 8
steps), batch 32, a third seed, and LR sweeps at any batch but 64.
"""

import ml_collections

from lamb_optax.train.config import default_config


def get_config():
  config = ml_collections.ConfigDict()
  base = default_config()
  base.task = "image_classification"
  base.image.dataset = "digits"
  base.image.eval_split = "test"  # the LR sweep overrides this with "validation"
  base.optimizer.kwargs.weight_decay = 0.01
  base.log_every_steps = 50
  base.checkpoint_every_steps = 10_000  # only at the end of each cell
  base.mesh.data = 1
  config.base = base
  # The paper's phi (weight norm clipped to [1, 100] in the trust ratio) for the two layer-wise
  # optimizers: without it LAMB cannot grow the ViT's zero-initialised head (configs/digits_vit.py).
  bounded = dict(optimizer=dict(kwargs=dict(weight_norm_bounds=(1.0, 100.0))))
  config.study = ml_collections.ConfigDict(dict(
      variants=dict(
          resnet=dict(image=dict(model="resnet", preset="tiny", batch_norm_group_size=16)),
          vit=dict(image=dict(model="vit", preset="tiny", patch_size=2)),
      ),
      optimizers=("lars", "lamb", "adamw", "sgd"),  # lamb_optax.recipes.OPTIMIZERS
      optimizer_overrides=dict(
          lamb=bounded, lars=bounded,
          sgd=dict(optimizer=dict(kwargs=dict(weight_decay=5e-4))),  # L2, as for CIFAR ResNets
      ),
      batch_sizes=(16, 64, 128, 256),
      seeds=(0, 1),
      examples_budget=8192,  # training images per cell: num_train_steps = budget // batch
      eval_examples=360,  # the whole test split (or validation, 180, padded) in one batch
      eval_batch_size=360,
      micro_batch_cap=256,
      devices=1,
      lr_rule="sqrt",
      base_batch_size=64,
      # Each the best (lowest validation loss) of the sweep at B=64 (docs/image_classification.md).
      base_learning_rates=dict(
          resnet=dict(lars=9e-2, lamb=3e-2, adamw=9e-3, sgd=0.45),
          vit=dict(lars=3e-2, lamb=3e-2, adamw=6e-3, sgd=0.15),
      ),
      sweep_factors=(1 / 3, 1.0, 3.0),
      warmup_rule="fraction",
      warmup_fraction=0.1,
      eval_name="test",  # headers and axes of results.md / batch_scaling.png
      plot_accuracy=True,
  ))
  # --quick: the machinery end to end in about a minute (not a measurement).
  config.quick = ml_collections.ConfigDict(dict(
      optimizers=("lars",), batch_sizes=(16,), seeds=(0,), examples_budget=32))
  return config
