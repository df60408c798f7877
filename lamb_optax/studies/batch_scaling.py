"""The batch-scaling study: plan cells, derive their trainer configs, run them, record rows.

Used by ``scripts/batch_scaling_study.py`` and ``colab/batch_scaling.ipynb``:

* :func:`plan_cells` turns a study config (``configs/scaling_tiny.py``, BERT;
  ``configs/scaling_digits.py`` and ``scaling_digits_vit.py``, images) into a list of
  :class:`Cell` — one ([variant,] optimizer, batch, seed, learning rate) run each, at a fixed
  number of training examples, so ``num_train_steps = examples_budget // batch``; the rates
  follow ``study.lr_rule``: ``"sqrt"`` (one base rate scaled by the square root of the batch),
  ``"sweep"`` (factors around it) or ``"table"`` (a rate per batch, e.g. a sweep's bests);
* :func:`cell_config` derives the trainer config of one cell from the study's base config, for
  any task: ``study.variants`` (e.g. a ResNet and a ViT) and ``study.optimizer_overrides`` are
  partial trainer configs merged into the base before the cell's own settings;
* :func:`run_study` trains every cell not yet in ``results.jsonl`` (resumable), and
  :func:`write_outputs` rewrites the study's table and figure from its rows with
  :mod:`lamb_optax.studies.batch_scaling_report` (aggregation over seeds, relative losses, the
  share of the :func:`unigram_baseline` gain kept, CSV, Markdown, plots).

Everything but :func:`run_study` and the file readers and writers is a pure function, tested
without training.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np

from lamb_optax import schedules
from lamb_optax.studies.batch_scaling_report import DEFAULT_EVAL_NAME
from lamb_optax.studies.batch_scaling_report import markdown_table
from lamb_optax.studies.batch_scaling_report import plot
from lamb_optax.studies.batch_scaling_report import summarize
from lamb_optax.studies.batch_scaling_report import write_csv


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


def tabled_learning_rate(study: ml_collections.ConfigDict, variant: str, optimizer: str,
                        batch: int) -> float:
  """The rate ``study.learning_rates[variant][optimizer]`` gives ``batch`` (``lr_rule="table"``):
  a sequence of ``(batch, rate)`` pairs per optimizer, e.g. each batch's best from a sweep."""
  table = study.get("learning_rates") or {}
  where = "study.learning_rates"
  if variant:
    table, where = table.get(variant) or {}, f"{where}.{variant}"
  rates = {int(b): float(lr) for b, lr in (table.get(optimizer) or ())}
  if batch not in rates:
    raise ValueError(f"{where}.{optimizer} has no rate for batch {batch} (it has "
                     f"{sorted(rates) or 'none'}); lr_rule='table' needs a (batch, rate) pair "
                     "for every study.batch_sizes entry.")
  return rates[batch]


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
        if s.lr_rule == "table":
          lrs = [tabled_learning_rate(s, variant, opt, batch)]
        elif s.lr_rule in ("sqrt", "sweep"):
          centre = schedules.sqrt_scaled_learning_rate(base_learning_rate(s, variant, opt),
                                                       s.base_batch_size, batch)
          lrs = [centre] if s.lr_rule == "sqrt" else [centre * f for f in s.sweep_factors]
        else:
          raise ValueError(f"study.lr_rule must be 'sqrt', 'sweep' or 'table', got "
                           f"{s.lr_rule!r}.")
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


def _float(v):
  return None if v is None else float(v)
