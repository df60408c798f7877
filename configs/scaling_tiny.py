r"""Batch-scaling study: LAMB vs AdamW vs LARS as the batch grows, tiny BERT, CPU.

Hardware: the project's 2-core CPU machine, no accelerator, no downloads (embedded corpus).
Published result: none (a CPU-scale analogue of the LAMB paper's claim, not a paper setting).
Expected (measured, docs/batch_scaling.md): at a fixed number of training examples every
optimizer's final eval MLM loss rises as the batch grows (fewer steps) until it reaches the
unigram baseline (6.57: token frequencies learned, nothing from context): AdamW at B=256, LAMB
and LARS at B=512. LAMB has the lowest loss at every batch from 16 (5.98) to 256 (6.46); LARS
learns least (6.45 at B=16). At B=1024 the losses are 1.103x (LAMB), 1.068x (AdamW) and 1.167x
(LARS) their B=16 losses.

Run (the full study, 42 cells, ~80 min on the 2-core CPU; `--quick` proves the machinery in
about a minute; `--dry_run` lists the cells):
  python scripts/batch_scaling_study.py --config=configs/scaling_tiny.py --workdir=/tmp/scaling

Cost (the whole study must fit in <= 2 h on the 2-core CPU):
  * max_seq_length 64, max_predictions_per_seq 10: the embedded corpus (dupe_factor 5) holds
    27,322 train and 3,150 held-out sequences (built once, in DIR/data, in ~15 s).
  * examples_budget = 32,768 sequences per cell (1.2 epochs) -> num_train_steps = 32768 // B:
    2048 steps at B=16 ... 32 steps at B=1024.
  * measured: ~95-185 s per cell (~350 sequences/s at B >= 64, plus ~15 s of compile, eval and
    checkpoints); 7 batches x 3 optimizers x 2 seeds = 42 cells in ~80 min.
  * why not batches beyond 1024: at 32 steps every optimizer is already at the unigram
    baseline, and B=32,768 would be a single step; the paper's 32k run still had 15,625 steps.
    (The eval batch is separate, eval_batch_size=256, so a larger B needs no larger held-out set.)

Learning rates: lr_rule "sqrt" = base_lr[opt] * sqrt(B / base_batch_size) (the LAMB paper's
square-root rule; with base 5e-3 at 32768 it is exactly lamb_optax.schedules.paper_learning_rate);
"sweep" tries that value times each of sweep_factors and keeps the lowest final eval loss.
The base rates at B=64 are each optimizer's best in a sweep at B=64 (LAMB 3e-3/1e-2/3e-2, AdamW
3e-4/1e-3/3e-3, LARS 1e-2/3e-2/1e-1/3e-1): LAMB 1e-2, AdamW 1e-3, LARS 3e-2.
Warmup: warmup_fraction of the run (warmup_rule "fraction"); warmup_rule "paper" uses
paper_warmup_ratio(B) (B/32768/5), which is ~0 steps at these batch sizes.
"""

import ml_collections

from lamb_optax.train.config import default_config


def get_config():
  config = ml_collections.ConfigDict()
  base = default_config()
  base.model.preset = "tiny"
  base.optimizer.kwargs.weight_decay = 0.01
  base.data.max_seq_length = 64
  base.data.max_predictions_per_seq = 10
  base.log_every_steps = 50
  base.checkpoint_every_steps = 500
  base.mesh.data = 1  # one data-parallel device: micro-batches (grad accumulation) above the cap
  config.base = base
  config.study = ml_collections.ConfigDict(dict(
      optimizers=("lamb", "adamw", "lars"),  # names from lamb_optax.recipes.OPTIMIZERS
      batch_sizes=(16, 32, 64, 128, 256, 512, 1024),
      seeds=(0, 1),
      examples_budget=32768,  # training sequences per cell: num_train_steps = budget // batch
      eval_examples=1024,  # the same held-out sequences for every cell's final eval
      eval_batch_size=256,  # eval_batches = eval_examples // eval_batch_size
      micro_batch_cap=256,  # per device; above it the trainer accumulates gradients
      devices=1,  # data-parallel devices (must match base.mesh)
      lr_rule="sqrt",  # "sqrt" or "sweep"
      base_batch_size=64,
      # Each the best of a sweep at B=64 (docs/batch_scaling.md, "Base learning rates").
      base_learning_rates=ml_collections.ConfigDict(dict(lamb=1e-2, adamw=1e-3, lars=3e-2)),
      sweep_factors=(0.5, 1.0, 2.0),
      warmup_rule="fraction",  # "fraction" or "paper"
      warmup_fraction=0.1,
  ))
  # --quick: the machinery end to end in about a minute (not a measurement).
  config.quick = ml_collections.ConfigDict(dict(
      optimizers=("lamb", "adamw"), batch_sizes=(8, 16), seeds=(0,), examples_budget=48,
      eval_examples=16, eval_batch_size=8, embedded_max_documents=60))
  return config
