"""The batch-scaling study (issue 9): plan cells, derive their trainer configs, summarise, plot.

Pure functions, used by ``scripts/batch_scaling_study.py`` and tested without training:

* :func:`plan_cells` turns a study config (``configs/scaling_tiny.py``) into a list of
  :class:`Cell` — one (optimizer, batch, seed, learning rate) run each, at a fixed number of
  training examples, so ``num_train_steps = examples_budget // batch``;
* :func:`cell_config` derives the trainer config of one cell from the study's base config;
* :func:`summarize` aggregates result rows (mean/min/max over seeds, best LR per batch for the
  ``"sweep"`` rule); :func:`write_csv` and :func:`plot` write the table and the figure.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from typing import Any, Iterable, Sequence

import ml_collections

from lamb_optax import schedules


@dataclasses.dataclass(frozen=True)
class Cell:
  """One training run of the study."""

  optimizer: str
  batch_size: int
  seed: int
  learning_rate: float
  num_train_steps: int
  warmup_steps: int
  micro_batch_size: int
  eval_batches: int

  @property
  def name(self) -> str:
    """A directory-safe unique name, e.g. ``lamb_b0256_s0_lr1.25e-02``."""
    return (f"{self.optimizer}_b{self.batch_size:05d}_s{self.seed}_"
            f"lr{self.learning_rate:.3e}")


def sqrt_learning_rate(base_lr: float, base_batch: int, batch: int) -> float:
  """Square-root scaling: ``base_lr · sqrt(batch / base_batch)`` (the LAMB paper's rule when
  ``base_lr, base_batch = 5e-3, 32768``, cf. :func:`lamb_optax.schedules.paper_learning_rate`)."""
  return base_lr * math.sqrt(batch / base_batch)


def micro_batch_size(batch: int, cap: int, devices: int = 1) -> int:
  """The largest micro-batch ``<= cap`` with ``devices · micro`` dividing ``batch``."""
  if batch % devices:
    raise ValueError(f"batch {batch} is not divisible by the {devices} data-parallel devices.")
  per_device = batch // devices
  for m in range(min(cap, per_device), 0, -1):
    if per_device % m == 0:
      return m
  return 1


def warmup_steps(rule: str, fraction: float, batch: int, steps: int) -> int:
  """``"paper"``: the paper's ratio ``batch/32768/5`` of the run; else ``fraction`` of it."""
  ratio = schedules.paper_warmup_ratio(batch) if rule == "paper" else fraction
  return min(steps, max(0, round(ratio * steps)))


def plan_cells(config: ml_collections.ConfigDict) -> list[Cell]:
  """Every cell of the study, in run order (small batches first, then optimizer, seed, lr)."""
  s = config.study
  cells = []
  for batch in s.batch_sizes:
    steps = max(1, s.examples_budget // batch)
    micro = micro_batch_size(batch, s.micro_batch_cap, s.get("devices", 1))
    eval_batches = max(1, s.eval_examples // batch)
    for opt in s.optimizers:
      base_lr = s.base_learning_rates[opt]
      if s.lr_rule == "sqrt":
        lrs = [sqrt_learning_rate(base_lr, s.base_batch_size, batch)]
      elif s.lr_rule == "sweep":
        centre = sqrt_learning_rate(base_lr, s.base_batch_size, batch)
        lrs = [centre * f for f in s.sweep_factors]
      else:
        raise ValueError(f"study.lr_rule must be 'sqrt' or 'sweep', got {s.lr_rule!r}.")
      for seed in s.seeds:
        for lr in lrs:
          cells.append(Cell(opt, batch, seed, float(lr), steps,
                            warmup_steps(s.warmup_rule, s.warmup_fraction, batch, steps),
                            micro, eval_batches))
  names = [c.name for c in cells]
  if len(set(names)) != len(names):
    raise ValueError("Two cells share a name; check study.seeds / sweep_factors for duplicates.")
  return cells


def cell_config(base: ml_collections.ConfigDict, cell: Cell) -> ml_collections.ConfigDict:
  """The trainer config of ``cell``: ``base`` with the cell's optimizer, batch, schedule, seed."""
  c = ml_collections.ConfigDict(base.to_dict())
  c.seed = cell.seed
  c.optimizer.name = cell.optimizer
  c.learning_rate = cell.learning_rate
  c.global_batch_size = cell.batch_size
  c.micro_batch_size = cell.micro_batch_size
  c.num_train_steps = cell.num_train_steps
  c.warmup_steps = cell.warmup_steps
  c.eval_batches = cell.eval_batches
  c.eval_every_steps = cell.num_train_steps  # one eval, at the end
  c.checkpoint_every_steps = max(1, min(c.checkpoint_every_steps, cell.num_train_steps))
  c.log_every_steps = max(1, min(c.log_every_steps, cell.num_train_steps))
  return c


def result_row(cell: Cell, metrics: dict[str, Any], wall_s: float) -> dict[str, Any]:
  """The JSON row recorded for a finished cell."""
  row = dict(dataclasses.asdict(cell), name=cell.name, wall_s=round(wall_s, 3))
  row["eval_mlm_loss"] = _float(metrics.get("mlm_loss", metrics.get("loss")))
  row["eval_mlm_accuracy"] = _float(metrics.get("mlm_accuracy", metrics.get("accuracy")))
  row["eval_metrics"] = {k: _float(v) for k, v in metrics.items()}
  return row


def _float(v):
  return None if v is None else float(v)


def summarize(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
  """One row per (optimizer, batch): the best learning rate (lowest mean eval loss over seeds),
  then mean/min/max of eval MLM loss and accuracy over that LR's seeds, and total wall time."""
  groups: dict[tuple, dict[float, list[dict]]] = {}
  for r in results:
    groups.setdefault((r["optimizer"], r["batch_size"]), {}).setdefault(
        r["learning_rate"], []).append(r)
  table = []
  for (opt, batch), by_lr in sorted(groups.items()):
    def mean_loss(rows):
      losses = [x["eval_mlm_loss"] for x in rows if _finite(x["eval_mlm_loss"])]
      return sum(losses) / len(losses) if losses else math.inf
    lr, rows = min(by_lr.items(), key=lambda kv: mean_loss(kv[1]))
    losses = [x["eval_mlm_loss"] for x in rows]
    accs = [x["eval_mlm_accuracy"] for x in rows]
    table.append(dict(
        optimizer=opt, batch_size=batch, learning_rate=lr, seeds=len(rows),
        lrs_tried=len(by_lr), num_train_steps=rows[0]["num_train_steps"],
        loss_mean=_mean(losses), loss_min=_min(losses), loss_max=_max(losses),
        acc_mean=_mean(accs), acc_min=_min(accs), acc_max=_max(accs),
        wall_s=sum(x["wall_s"] for rs in by_lr.values() for x in rs)))
  return table


def _finite(x) -> bool:
  return x is not None and math.isfinite(x)


def _mean(xs):
  xs = [x for x in xs if _finite(x)]
  return sum(xs) / len(xs) if xs else math.nan


def _min(xs):
  xs = [x for x in xs if _finite(x)]
  return min(xs) if xs else math.nan


def _max(xs):
  xs = [x for x in xs if _finite(x)]
  return max(xs) if xs else math.nan


TABLE_COLUMNS = ("optimizer", "batch_size", "learning_rate", "seeds", "lrs_tried",
                 "num_train_steps", "loss_mean", "loss_min", "loss_max", "acc_mean", "acc_min",
                 "acc_max", "wall_s")


def write_csv(table: Sequence[dict[str, Any]], path: str) -> None:
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
    w.writeheader()
    for row in table:
      w.writerow({k: row[k] for k in TABLE_COLUMNS})


def plot(table: Sequence[dict[str, Any]], path: str, title: str = "") -> None:
  """Final eval MLM loss vs batch size (log2 x), a line per optimizer, min/max band over seeds."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for opt in sorted({r["optimizer"] for r in table}):
    rows = sorted((r for r in table if r["optimizer"] == opt), key=lambda r: r["batch_size"])
    xs = [r["batch_size"] for r in rows]
    ax.plot(xs, [r["loss_mean"] for r in rows], marker="o", label=opt)
    ax.fill_between(xs, [r["loss_min"] for r in rows], [r["loss_max"] for r in rows], alpha=0.2)
  ax.set_xscale("log", base=2)
  ax.set_xlabel("global batch size (fixed number of training examples)")
  ax.set_ylabel("final eval MLM loss")
  ax.set_title(title or "Batch scaling")
  ax.grid(True, alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
