r"""Runs a batch-scaling study: every ([model,] optimizer, batch, seed[, lr]) cell
in-process (lamb_optax.studies.batch_scaling.run_study), for any task the config's base sets.

  python scripts/batch_scaling_study.py --config=configs/scaling_tiny.py --workdir=/tmp/scaling
  python scripts/batch_scaling_study.py --config=configs/scaling_digits.py --workdir=/tmp/digits
  python scripts/batch_scaling_study.py --config=configs/scaling_tiny.py --workdir=/tmp/q --quick
  python scripts/batch_scaling_study.py ... --dry_run   # print the planned cells and their cost

Each cell trains in DIR/cells/<name> (a partly finished cell resumes from its checkpoint); a
finished (or diverged) cell appends one JSON row to DIR/results.jsonl and is never rerun. BERT
cells share one embedded-corpus build in DIR/data, whose unigram baseline is DIR/baseline.json.
After every cell DIR/results.csv, DIR/results.md and DIR/batch_scaling.png are rewritten from the
rows so far.
"""

from __future__ import annotations

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lamb_optax.studies import batch_scaling as scaling

_CONFIG = config_flags.DEFINE_config_file("config", None, "Study config file.", lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory.")
_QUICK = flags.DEFINE_bool("quick", False, "A few tiny cells, to prove the machinery.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the planned cells and exit.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  config = _CONFIG.value
  if _QUICK.value:
    scaling.apply_quick(config)
  logging.info("Study config:\n%s", config)
  if _DRY_RUN.value:
    cells = scaling.plan_cells(config)
    for cell in cells:
      print(f"{cell.name}: {cell.num_train_steps} steps, warmup {cell.warmup_steps}, "
            f"micro-batch {cell.micro_batch_size}, eval batches {cell.eval_batches}")
    examples = sum(c.num_train_steps * c.batch_size for c in cells)
    print(f"{len(cells)} cells, {examples:,} training sequences in all.")
    return
  table = scaling.run_study(config, _WORKDIR.value, log=lambda line: print(line, flush=True))
  for row in table:
    print(f"{row['optimizer']:12s} B={row['batch_size']:5d} lr={row['learning_rate']:.2e} "
          f"eval_loss={row['loss_mean']:.4f} acc={row['acc_mean']:.4f}", flush=True)


if __name__ == "__main__":
  app.run(main)
