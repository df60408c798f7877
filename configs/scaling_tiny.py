r"""Batch-scaling study (issue 9): LAMB vs AdamW vs LARS as the batch grows, tiny BERT, CPU.

Hardware: the project's 2-core CPU machine, no accelerator, no downloads (embedded corpus).
Published result: none (a CPU-scale analogue of the LAMB paper's claim, not a paper setting).
Expected: at a fixed number of training examples, every optimizer's final eval MLM loss rises
as the batch grows (fewer steps); the paper's claim is that LAMB's curve stays flat to larger
batches than AdamW's, and that LARS does poorly on BERT. Not yet run: see docs/batch_scaling.md.

Run (the full study, ~1 h; `--quick` proves the machinery in about a minute):
  python scripts/batch_scaling_study.py --config=configs/scaling_tiny.py --workdir=/tmp/scaling

Cost arithmetic (the whole study must fit in <= 2 h on the 2-core CPU):
  * throughput ~16k tokens/s for the tiny model = ~130 sequences/s at seq 128, so ~250 seq/s at
    seq 64 (assumed: tokens/s roughly constant; attention is a small share at this length);
    hence seq_length 64, max_predictions 10. One short check (B=1024, 4 steps, CPU shared with
    another job) logged 35k tokens/s = ~550 seq/s; small batches pay more per-step overhead,
    so 250 seq/s is kept as the planning figure (conservative).
  * the embedded corpus at seq 64 (dupe_factor 5) holds 27,322 train and 3,150 held-out
    sequences (built in ~13 s, once, in DIR/data).
  * examples_budget = 32,768 sequences per cell (1.2 epochs) -> num_train_steps = 32768 // B: 2048 steps at B=16 ... 32 steps at B=1024.
  * 7 batch sizes (16..1024, doubling) x 3 optimizers x 1 seed = 21 cells
    -> 21 x 32,768 = 688k sequences / 250 seq/s = ~46 min of training,
    + ~30 s per cell for compile, data loading, the final eval (1,024 held-out sequences) and
      checkpoints = ~11 min  ->  ~1 h in all.  A 2nd seed doubles it (~2 h, the limit);
      lr_rule="sweep" with 3 factors triples it (too long: reduce batch_sizes or the budget).
  * why not batches beyond 1024: at 32 steps the run is mostly warmup, and the trainer's eval
    batch equals the train batch, so B must stay <= the held-out split (3,150 at seq 64); eval_batches = max(1, eval_examples // B) keeps the eval set ~1,024.

Learning rates: lr_rule "sqrt" = base_lr[opt] * sqrt(B / base_batch_size) (the LAMB paper's
square-root rule; with base 5e-3 at 32768 it is exactly lamb_optax.schedules.paper_learning_rate);
"sweep" tries that value times each of sweep_factors and keeps the lowest final eval loss.
The base rates at B=64 are: LAMB 1e-2 (configs/tiny.py); AdamW 1e-3 and LARS 1e-1 are NOT tuned
(guesses) — check them with a short lr_rule="sweep" run at one batch before trusting the plot.
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
  base.data.seq_length = 64
  base.data.max_predictions = 10
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
