"""The batch-scaling study: plan cells, derive their trainer configs, summarise, plot.

Used by ``scripts/batch_scaling_study.py`` and ``colab/batch_scaling.ipynb``:

* :func:`plan_cells` turns a study config (``configs/scaling_tiny.py``, BERT;
  ``configs/scaling_digits.py``, images) into a list of :class:`Cell` — one ([variant,]
  optimizer, batch, seed, learning rate) run each, at a fixed number of training examples, so
  ``num_train_steps = examples_budget // batch``;
* :func:`cell_config` derives the trainer config of one cell from the study's base config, for
  any task: ``study.variants`` (e.g. a ResNet and a ViT) and ``study.optimizer_overrides`` are
  partial trainer configs merged into the base before the cell's own settings;
* :func:`run_study` trains every cell not yet in ``results.jsonl`` (resumable);
* :func:`summarize` aggregates result rows (mean/min/max over seeds, best LR per batch for the
  ``"sweep"`` rule), :func:`relative_to_smallest_batch` divides each loss by the optimizer's
  small-batch loss, :func:`gain_kept` measures it against the :func:`unigram_baseline` (what a
  model that ignores its input scores); :func:`write_csv`, :func:`markdown_table` and
  :func:`plot` write the table and the figure.

Everything but :func:`run_study` is a pure function, tested without training.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ml_collections
import numpy as np

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
  eval_batch_size: int
  eval_batches: int
  variant: str = ""  # a key of study.variants ("" = the base config as it is)

  @property
  def name(self) -> str:
    """A directory-safe unique name, e.g. ``lamb_b0256_s0_lr1.25e-02`` (``vit_lamb_...`` with a
    variant)."""
    prefix = f"{self.variant}_" if self.variant else ""
    return (f"{prefix}{self.optimizer}_b{self.batch_size:05d}_s{self.seed}_"
            f"lr{self.learning_rate:.3e}")

  @property
  def line(self) -> str:
    """What the table and the plot draw as one line: ``optimizer`` or ``variant/optimizer``."""
    return f"{self.variant}/{self.optimizer}" if self.variant else self.optimizer


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


def variants(study: ml_collections.ConfigDict) -> list[str]:
  """The names of ``study.variants`` in order, or ``[""]`` (the base config alone)."""
  v = study.get("variants")
  return list(v.keys()) if v else [""]


def base_learning_rate(study: ml_collections.ConfigDict, variant: str, optimizer: str) -> float:
  """``study.base_learning_rates[variant][optimizer]`` with variants (a rate per model), else
  ``study.base_learning_rates[optimizer]``."""
  rates = study.base_learning_rates
  if variant:
    if variant not in rates:
      raise ValueError(f"study.base_learning_rates has no entry for variant {variant!r}; give "
                       f"one per variant ({variants(study)}), each a rate per optimizer.")
    rates = rates[variant]
  if optimizer not in rates:
    raise ValueError(f"study.base_learning_rates{'.' + variant if variant else ''} has no rate "
                     f"for optimizer {optimizer!r}.")
  return rates[optimizer]


def plan_cells(config: ml_collections.ConfigDict) -> list[Cell]:
  """Every cell of the study, in run order (small batches first, then variant, optimizer, seed,
  lr)."""
  s = config.study
  # Every cell evaluates the same held-out examples, in batches independent of its own.
  eval_batches = max(1, s.eval_examples // s.eval_batch_size)
  cells = []
  for batch in s.batch_sizes:
    steps = max(1, s.examples_budget // batch)
    micro = micro_batch_size(batch, s.micro_batch_cap, s.get("devices", 1))
    warmup = warmup_steps(s.warmup_rule, s.warmup_fraction, batch, steps)
    for variant in variants(s):
      for opt in s.optimizers:
        centre = schedules.sqrt_scaled_learning_rate(base_learning_rate(s, variant, opt),
                                                     s.base_batch_size, batch)
        if s.lr_rule == "sqrt":
          lrs = [centre]
        elif s.lr_rule == "sweep":
          lrs = [centre * f for f in s.sweep_factors]
        else:
          raise ValueError(f"study.lr_rule must be 'sqrt' or 'sweep', got {s.lr_rule!r}.")
        cells += [Cell(opt, batch, seed, float(lr), steps, warmup, micro, s.eval_batch_size,
                       eval_batches, variant) for seed in s.seeds for lr in lrs]
  names = [c.name for c in cells]
  if len(set(names)) != len(names):
    raise ValueError("Two cells share a name; check study.seeds / sweep_factors for duplicates.")
  return cells


def merge(config: ml_collections.ConfigDict, partial: Any) -> None:
  """Sets every leaf of ``partial`` (a nested dict / ConfigDict, a partial trainer config) in
  ``config``, recursing into sections both have; a key ``config`` lacks is added."""
  for key, value in (partial.items() if partial else ()):
    if hasattr(value, "items") and isinstance(config.get(key), ml_collections.ConfigDict):
      merge(config[key], value)
    else:
      config[key] = value.to_dict() if hasattr(value, "to_dict") else value


def cell_config(base: ml_collections.ConfigDict, cell: Cell,
                study: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  """The trainer config of ``cell``: ``base``, then ``study.variants[cell.variant]`` and
  ``study.optimizer_overrides[cell.optimizer]`` merged in (see :func:`merge`), then the cell's
  optimizer, batch, schedule and seed. ``base`` is not modified."""
  c = ml_collections.ConfigDict(base.to_dict())
  if cell.variant:
    if study is None or cell.variant not in (study.get("variants") or {}):
      raise ValueError(f"Cell {cell.name} is of variant {cell.variant!r}: pass the study config "
                       "whose study.variants defines it.")
    merge(c, study.variants[cell.variant])
  overrides = (study.get("optimizer_overrides") or {}) if study is not None else {}
  if cell.optimizer in overrides:
    merge(c, overrides[cell.optimizer])
  c.seed = cell.seed
  c.optimizer.name = cell.optimizer
  c.learning_rate = cell.learning_rate
  c.global_batch_size = cell.batch_size
  c.micro_batch_size = cell.micro_batch_size
  c.num_train_steps = cell.num_train_steps
  c.warmup_steps = cell.warmup_steps
  c.eval_batch_size = cell.eval_batch_size
  c.eval_batches = cell.eval_batches
  c.eval_every_steps = cell.num_train_steps  # one eval, at the end
  c.checkpoint_every_steps = max(1, min(c.checkpoint_every_steps, cell.num_train_steps))
  c.log_every_steps = max(1, min(c.log_every_steps, cell.num_train_steps))
  return c


def apply_quick(config: ml_collections.ConfigDict) -> None:
  """Replaces the study's grid by ``config.quick``'s few tiny cells (proves the machinery)."""
  q = config.quick
  for key, value in q.items():
    if key == "base":  # a partial trainer config, e.g. a smaller corpus
      merge(config.base, value)
    elif key == "embedded_max_documents":  # configs/scaling_tiny.py's shorthand
      config.base.data.embedded_max_documents = value
    else:
      config.study[key] = value
  config.base.async_checkpointing = False


def run_study(config: ml_collections.ConfigDict, workdir: str,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """Trains every planned cell not yet recorded in ``workdir/results.jsonl``; returns the table.

  Each cell trains in ``workdir/cells/<name>`` (a partly finished cell resumes from its
  checkpoint); a finished (or diverged) cell appends one JSON row and is never rerun. All
  cells share one embedded-corpus build in ``workdir/data``, whose :func:`unigram_baseline` is
  written first. After every cell :func:`write_outputs` rewrites the table and the figure.
  """
  from lamb_optax.train import loop  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  config.base.data.data_dir = os.path.join(workdir, "data")
  write_baseline(config, workdir)
  results_path = os.path.join(workdir, "results.jsonl")
  done = {r["name"] for r in read_results(results_path)}
  cells = plan_cells(config)
  log(f"{len(cells)} cells, {len(done & {c.name for c in cells})} already done.")
  for i, cell in enumerate(cells):
    if cell.name in done:
      continue
    log(f"[{i + 1}/{len(cells)}] {cell.name}: {cell.num_train_steps} steps, "
        f"micro-batch {cell.micro_batch_size}, warmup {cell.warmup_steps}")
    started = time.perf_counter()
    try:
      metrics = loop.train_and_evaluate(cell_config(config.base, cell, config.study),
                                        os.path.join(workdir, "cells", cell.name))
      diverged = ""
    except loop.NonFiniteLossError as error:  # a result of the study, not a failure of it
      metrics, diverged = {}, str(error)
      log(f"{cell.name} diverged: {error}")
    row = result_row(cell, metrics, time.perf_counter() - started, diverged,
                     task=config.base.get("task", "bert_pretraining"))
    with open(results_path, "a") as f:
      f.write(json.dumps(row) + "\n")
    done.add(cell.name)
    write_outputs(workdir, config.study)
  return write_outputs(workdir, config.study)


def unigram_baseline(train: Sequence[dict], held_out: Sequence[dict], eval_examples: int,
                     vocab_size: int) -> dict[str, float]:
  """The eval MLM loss and accuracy of a model that ignores its input: every masked token is
  predicted by its frequency among the training labels (add-one smoothed over the vocabulary),
  on the first ``eval_examples`` held-out examples (the study's eval set). A run whose loss is
  not below this has learned token frequencies and nothing from context. ``vocab_size`` 0:
  smooth over the label ids seen instead."""
  def labels(source, n):
    ids = np.concatenate([np.asarray(source[i]["masked_lm_ids"]) for i in range(n)])
    weights = np.concatenate([np.asarray(source[i]["masked_lm_weights"]) for i in range(n)])
    return ids[weights > 0]
  train_labels = labels(train, len(train))
  targets = labels(held_out, min(eval_examples, len(held_out)))
  size = max(vocab_size, int(train_labels.max()) + 1, int(targets.max()) + 1)
  counts = np.bincount(train_labels, minlength=size) + 1.0
  log_p = np.log(counts / counts.sum())
  return dict(loss=float(-log_p[targets].mean()),
              accuracy=float((targets == counts.argmax()).mean()))


def write_baseline(config: ml_collections.ConfigDict,
                   workdir: str) -> dict[str, float] | None:
  """Builds (or finds) the study's data and writes its :func:`unigram_baseline` to
  ``workdir/baseline.json`` once (BERT pretraining only; None for other tasks)."""
  existing = read_baseline(workdir)
  if existing or config.base.get("task", "bert_pretraining") != "bert_pretraining":
    return existing  # a unigram baseline is a BERT (MLM) notion; other tasks have none
  from lamb_optax import data as data_lib  # pylint: disable=g-import-not-at-top
  from lamb_optax.tasks import bert_pretraining  # pylint: disable=g-import-not-at-top
  d = config.base.data
  directory, vocab_file = bert_pretraining.locate(config.base, workdir)
  vocab_size = max(data_lib.read_vocab(vocab_file).values()) + 1 if vocab_file else 0
  baseline = unigram_baseline(data_lib.load_pretraining_dataset(directory, d.train_split),
                              data_lib.load_pretraining_dataset(directory, d.eval_split),
                              config.study.eval_examples, vocab_size)
  with open(os.path.join(workdir, "baseline.json"), "w") as f:
    json.dump(baseline, f)
  return baseline


def read_baseline(workdir: str) -> dict[str, float] | None:
  """``workdir/baseline.json`` (see :func:`write_baseline`), or None before it exists."""
  path = os.path.join(workdir, "baseline.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_results(path: str) -> list[dict[str, Any]]:
  """The rows of a ``results.jsonl`` (none if it does not exist yet)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def write_outputs(workdir: str,
                  study: ml_collections.ConfigDict | None = None) -> list[dict[str, Any]]:
  """Rewrites ``results.csv``, ``results.md`` and ``batch_scaling.png`` from ``results.jsonl``
  (with the baseline once ``baseline.json`` exists); returns the table. ``study.eval_name``
  names the eval set in headers and axes (default "eval MLM"); ``study.plot_accuracy`` adds an
  accuracy panel to the figure."""
  study = study or {}
  name = study.get("eval_name", DEFAULT_EVAL_NAME)
  table = summarize(read_results(os.path.join(workdir, "results.jsonl")))
  baseline = read_baseline(workdir)
  if table:
    write_csv(table, os.path.join(workdir, "results.csv"))
    with open(os.path.join(workdir, "results.md"), "w") as f:
      f.write(markdown_table(table, baseline, eval_name=name))
    plot(table, os.path.join(workdir, "batch_scaling.png"), baseline=baseline, eval_name=name,
         accuracy=study.get("plot_accuracy", False))
  return table


def compared_metrics(task: str) -> tuple[str, str]:
  """The eval (loss, accuracy) a study compares ``task``'s runs by: BERT pretraining's masked-LM
  pair (its ``loss`` adds the NSP loss, which says nothing about batch scaling), any other
  task's own ``loss`` and ``accuracy``.

  >>> compared_metrics("bert_pretraining"), compared_metrics("image_classification")
  (('mlm_loss', 'mlm_accuracy'), ('loss', 'accuracy'))
  """
  return ("mlm_loss", "mlm_accuracy") if task == "bert_pretraining" else ("loss", "accuracy")


def result_row(cell: Cell, metrics: dict[str, Any], wall_s: float, diverged: str = "",
               task: str = "bert_pretraining") -> dict[str, Any]:
  """The JSON row recorded for a finished cell: the :func:`compared_metrics` of ``task`` as
  ``eval_<name>`` (``eval_mlm_loss`` for BERT, ``eval_loss`` for images) and every eval metric
  in ``eval_metrics``. A diverged cell has None for both and the trainer's non-finite-loss
  message in ``diverged``."""
  row = dict(dataclasses.asdict(cell), name=cell.name, wall_s=round(wall_s, 3),
             diverged=diverged)
  for name in compared_metrics(task):
    row[f"eval_{name}"] = _float(metrics.get(name))
  row["eval_metrics"] = {k: _float(v) for k, v in metrics.items()}
  return row


def row_loss(row: dict[str, Any]) -> float | None:
  """A result row's compared eval loss, whichever task wrote it (see :func:`result_row`)."""
  return row["eval_mlm_loss"] if "eval_mlm_loss" in row else row.get("eval_loss")


def row_accuracy(row: dict[str, Any]) -> float | None:
  """A result row's compared eval accuracy, whichever task wrote it."""
  return row["eval_mlm_accuracy"] if "eval_mlm_accuracy" in row else row.get("eval_accuracy")


def _float(v):
  return None if v is None else float(v)


def summarize(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
  """One row per ([variant,] optimizer, batch): the best learning rate (lowest mean eval loss over
  seeds), then mean/min/max of eval loss and accuracy over that LR's seeds (diverged seeds, which
  have no loss, are counted in ``diverged``), and total wall time. A row's ``optimizer`` is the
  line it belongs to: the optimizer, or ``variant/optimizer`` for a study with variants. Loss
  and accuracy are each row's :func:`row_loss` and :func:`row_accuracy`."""
  groups: dict[tuple, dict[float, list[dict]]] = {}
  for r in results:
    line = f"{r['variant']}/{r['optimizer']}" if r.get("variant") else r["optimizer"]
    groups.setdefault((line, r["batch_size"]), {}).setdefault(
        r["learning_rate"], []).append(r)
  table = []
  for (opt, batch), by_lr in sorted(groups.items()):
    def mean_loss(rows):
      losses = [row_loss(x) for x in rows if _finite(row_loss(x))]
      return sum(losses) / len(losses) if losses else math.inf
    lr, rows = min(by_lr.items(), key=lambda kv: mean_loss(kv[1]))
    losses = [row_loss(x) for x in rows]
    accs = [row_accuracy(x) for x in rows]
    table.append(dict(
        optimizer=opt, batch_size=batch, learning_rate=lr, seeds=len(rows),
        diverged=sum(1 for x in rows if x.get("diverged")),
        lrs_tried=len(by_lr), num_train_steps=rows[0]["num_train_steps"],
        loss_mean=_mean(losses), loss_min=_min(losses), loss_max=_max(losses),
        acc_mean=_mean(accs), acc_min=_min(accs), acc_max=_max(accs),
        wall_s=sum(x["wall_s"] for rs in by_lr.values() for x in rs)))
  return table


def relative_to_smallest_batch(table: Sequence[dict[str, Any]]) -> dict[str, dict[int, float]]:
  """``{optimizer: {batch: loss_mean / loss_mean at that optimizer's smallest batch}}``, over
  the batches with a finite loss (a batch where every seed diverged is left out)."""
  ratios = {}
  for opt, losses in _finite_losses(table).items():
    first = losses[min(losses)]
    ratios[opt] = {batch: loss / first for batch, loss in losses.items()}
  return ratios


def gain_kept(table: Sequence[dict[str, Any]],
              baseline: dict[str, float]) -> dict[str, dict[int, float]]:
  """``{optimizer: {batch: (U - loss) / (U - loss at its smallest batch)}}`` with ``U`` the
  :func:`unigram_baseline` loss: the share of what the optimizer learned beyond token
  frequencies at its smallest batch that it still learns at this batch (1 = all, <= 0 = none).
  Unlike the plain ratio, it does not penalise an optimizer for having learned more."""
  u, kept = baseline["loss"], {}
  for opt, losses in _finite_losses(table).items():
    gain = u - losses[min(losses)]
    kept[opt] = {batch: (u - loss) / gain if gain else math.nan
                 for batch, loss in losses.items()}
  return kept


def _finite_losses(table: Sequence[dict[str, Any]]) -> dict[str, dict[int, float]]:
  """``{optimizer: {batch: loss_mean}}`` in batch order, finite losses only."""
  losses: dict[str, dict[int, float]] = {}
  for r in sorted(table, key=lambda r: (r["optimizer"], r["batch_size"])):
    if _finite(r["loss_mean"]):
      losses.setdefault(r["optimizer"], {})[r["batch_size"]] = r["loss_mean"]
  return losses


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


TABLE_COLUMNS = ("optimizer", "batch_size", "learning_rate", "seeds", "diverged", "lrs_tried",
                 "num_train_steps", "loss_mean", "loss_min", "loss_max", "acc_mean", "acc_min",
                 "acc_max", "wall_s")


def write_csv(table: Sequence[dict[str, Any]], path: str) -> None:
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
    w.writeheader()
    for row in table:
      w.writerow({k: row[k] for k in TABLE_COLUMNS})


DEFAULT_EVAL_NAME = "eval MLM"


def markdown_table(table: Sequence[dict[str, Any]],
                   baseline: dict[str, float] | None = None,
                   eval_name: str = DEFAULT_EVAL_NAME) -> str:
  """The table as Markdown: per optimizer and batch, the loss band and the loss relative to the
  optimizer's smallest batch (what a larger batch cost at the same number of examples); with a
  :func:`unigram_baseline`, the :func:`gain_kept` column and a last line with its loss. Without
  one, the accuracy column gives the min–max band over seeds as well."""
  ratios = relative_to_smallest_batch(table)
  kept = gain_kept(table, baseline) if baseline else {}
  lines = [f"| optimizer | batch | steps | peak LR | seeds (diverged) | final {eval_name} loss "
           f"(min–max) | vs smallest batch |{' gain over unigram kept |' if baseline else ''} "
           f"{eval_name} accuracy{'' if baseline else ' (min–max)'} |",
           "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if baseline else "") + "---:|"]
  for r in table:
    ratio = ratios.get(r["optimizer"], {}).get(r["batch_size"], math.nan)
    share = kept.get(r["optimizer"], {}).get(r["batch_size"], math.nan)
    accuracy = (f"{r['acc_mean']:.3f}" if baseline else
                f"{r['acc_mean']:.3f} ({r['acc_min']:.3f}–{r['acc_max']:.3f})")
    lines.append(
        f"| {r['optimizer']} | {r['batch_size']} | {r['num_train_steps']} | "
        f"{r['learning_rate']:.3g} | {r['seeds']} ({r['diverged']}) | {r['loss_mean']:.3f} "
        f"({r['loss_min']:.3f}–{r['loss_max']:.3f}) | {ratio:.3f} |"
        f"{f' {share:.0%} |' if baseline else ''} {accuracy} |")
  if baseline:
    lines.append(f"| *unigram baseline* | | | | | {baseline['loss']:.3f} | | | "
                 f"{baseline['accuracy']:.3f} |")
  return "\n".join(lines) + "\n"


def plot(table: Sequence[dict[str, Any]], path: str, title: str = "",
         baseline: dict[str, float] | None = None, eval_name: str = DEFAULT_EVAL_NAME,
         accuracy: bool = False) -> None:
  """Writes the PNG ``path``: :func:`plot_axes` absolute (left) and relative (middle/right),
  and with ``accuracy`` the final accuracy (right).

  Uses ``matplotlib.figure.Figure`` directly, not pyplot, so it never switches the backend of
  the caller (a notebook keeps its inline plots).
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(16 if accuracy else 11, 4))
  axes = fig.subplots(1, 3 if accuracy else 2)
  plot_axes(table, axes[0], title, baseline=baseline, eval_name=eval_name)
  plot_axes(table, axes[1], "relative to each optimizer's smallest batch", relative=True,
            eval_name=eval_name)
  if accuracy:
    plot_axes(table, axes[2], f"final {eval_name} accuracy", eval_name=eval_name, key="acc")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def plot_axes(table: Sequence[dict[str, Any]], ax: Any, title: str = "",
              relative: bool = False, baseline: dict[str, float] | None = None,
              eval_name: str = DEFAULT_EVAL_NAME, key: str = "loss") -> None:
  """Final eval loss (``key="loss"``) or accuracy (``"acc"``) vs batch size (log2 x), a line per
  optimizer (colour) and variant (line style), min/max band over seeds; with ``relative``, every
  value divided by the line's mean at its smallest batch. Batches where every seed diverged have
  no loss and are left out of their line. A :func:`unigram_baseline` (absolute loss plot only)
  is drawn as a dashed horizontal line."""
  finite = [r for r in table if _finite(r["loss_mean"])]
  if not finite:
    ax.set_title("no finite results yet")
    return
  lines = sorted({r["optimizer"] for r in finite})
  optimizers = sorted({line.split("/")[-1] for line in lines})
  styles = {v: s for v, s in zip(sorted({line.rpartition("/")[0] for line in lines}),
                                 ("-", "--", ":", "-."), strict=False)}
  for line in lines:
    rows = sorted((r for r in finite if r["optimizer"] == line), key=lambda r: r["batch_size"])
    scale = rows[0][f"{key}_mean"] if relative else 1.0
    xs = [r["batch_size"] for r in rows]
    colour = f"C{optimizers.index(line.split('/')[-1]) % 10}"
    ax.plot(xs, [r[f"{key}_mean"] / scale for r in rows], marker="o", label=line, color=colour,
            linestyle=styles[line.rpartition("/")[0]])
    ax.fill_between(xs, [r[f"{key}_min"] / scale for r in rows],
                    [r[f"{key}_max"] / scale for r in rows], alpha=0.2, color=colour)
  if baseline and not relative and key == "loss":
    ax.axhline(baseline["loss"], color="gray", linestyle="--", label="unigram baseline")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("global batch size (fixed number of training examples)")
  ax.set_ylabel(f"final {eval_name} {'loss' if key == 'loss' else 'accuracy'}" +
                (" / small-batch value" if relative else ""))
  ax.set_title(title or "Batch scaling")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize="small")
