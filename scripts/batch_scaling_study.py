r"""Runs the batch-scaling study (issue 9): every (optimizer, batch, seed[, lr]) cell in-process.

  python scripts/batch_scaling_study.py --config=configs/scaling_tiny.py --workdir=/tmp/scaling
  python scripts/batch_scaling_study.py --config=configs/scaling_tiny.py --workdir=/tmp/q --quick
  python scripts/batch_scaling_study.py ... --dry_run   # print the planned cells and their cost

Each cell trains in DIR/cells/<name> (a partly finished cell resumes from its checkpoint); a
finished cell appends one JSON row to DIR/results.jsonl and is never rerun. All cells share one
embedded-corpus build in DIR/data. After every cell DIR/results.csv and DIR/batch_scaling.png are
rewritten from the rows so far.
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lamb_optax.train import scaling

_CONFIG = config_flags.DEFINE_config_file("config", None, "Study config file.", lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory.")
_QUICK = flags.DEFINE_bool("quick", False, "A few tiny cells, to prove the machinery.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the planned cells and exit.")
flags.mark_flags_as_required(["config", "workdir"])


def read_results(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def apply_quick(config) -> None:
  q = config.quick
  for key in ("optimizers", "batch_sizes", "seeds", "examples_budget", "eval_examples"):
    config.study[key] = q[key]
  config.base.data.embedded_max_documents = q.embedded_max_documents
  config.base.async_checkpointing = False


def run(config, workdir: str) -> list[dict]:
  from lamb_optax.train import loop  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  config.base.data.data_dir = os.path.join(workdir, "data")
  results_path = os.path.join(workdir, "results.jsonl")
  done = {r["name"] for r in read_results(results_path)}
  cells = scaling.plan_cells(config)
  print(f"{len(cells)} cells, {len(done & {c.name for c in cells})} already done.", flush=True)
  for i, cell in enumerate(cells):
    if cell.name in done:
      continue
    print(f"[{i + 1}/{len(cells)}] {cell.name}: {cell.num_train_steps} steps, "
          f"micro-batch {cell.micro_batch_size}, warmup {cell.warmup_steps}", flush=True)
    started = time.perf_counter()
    metrics = loop.train_and_evaluate(scaling.cell_config(config.base, cell),
                                      os.path.join(workdir, "cells", cell.name))
    row = scaling.result_row(cell, metrics, time.perf_counter() - started)
    with open(results_path, "a") as f:
      f.write(json.dumps(row) + "\n")
    done.add(cell.name)
    write_outputs(workdir)
  return write_outputs(workdir)


def write_outputs(workdir: str) -> list[dict]:
  table = scaling.summarize(read_results(os.path.join(workdir, "results.jsonl")))
  if table:
    scaling.write_csv(table, os.path.join(workdir, "results.csv"))
    scaling.plot(table, os.path.join(workdir, "batch_scaling.png"))
  return table


def main(argv):
  del argv
  config = _CONFIG.value
  if _QUICK.value:
    apply_quick(config)
  logging.info("Study config:\n%s", config)
  if _DRY_RUN.value:
    cells = scaling.plan_cells(config)
    for cell in cells:
      print(f"{cell.name}: {cell.num_train_steps} steps, warmup {cell.warmup_steps}, "
            f"micro-batch {cell.micro_batch_size}, eval batches {cell.eval_batches}")
    examples = sum(c.num_train_steps * c.batch_size for c in cells)
    print(f"{len(cells)} cells, {examples:,} training sequences in all.")
    return
  table = run(config, _WORKDIR.value)
  for row in table:
    print(f"{row['optimizer']:6s} B={row['batch_size']:5d} lr={row['learning_rate']:.2e} "
          f"eval_mlm_loss={row['loss_mean']:.4f} acc={row['acc_mean']:.4f}", flush=True)


if __name__ == "__main__":
  app.run(main)
