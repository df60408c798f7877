"""The batch-scaling study's report: its result rows aggregated, as tables and a figure.

:func:`summarize` aggregates the rows :func:`lamb_optax.studies.batch_scaling.run_study` records
(mean/min/max over seeds, best LR per batch for the ``"sweep"`` rule),
:func:`relative_to_smallest_batch` divides each loss by the optimizer's small-batch loss,
:func:`gain_kept` measures it against the study's unigram baseline (what a model that ignores its
input scores); :func:`write_csv`, :func:`markdown_table`, :func:`plot` and :func:`plot_axes` write
the table and the figure. All pure functions of the rows, tested without training.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from typing import Any


def row_loss(row: dict[str, Any]) -> float | None:
  """A result row's compared eval loss, whichever task wrote it (see
  :func:`~lamb_optax.studies.batch_scaling.result_row`)."""
  return row["eval_mlm_loss"] if "eval_mlm_loss" in row else row.get("eval_loss")


def row_accuracy(row: dict[str, Any]) -> float | None:
  """A result row's compared eval accuracy, whichever task wrote it."""
  return row["eval_mlm_accuracy"] if "eval_mlm_accuracy" in row else row.get("eval_accuracy")


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
  """``{optimizer: {batch: (U - loss) / (U - loss at its smallest batch)}}`` with ``U`` the study's
  unigram baseline loss (:func:`~lamb_optax.studies.batch_scaling.unigram_baseline`): the share of
  what the optimizer learned beyond token frequencies at its smallest batch that it still learns at
  this batch (1 = all, <= 0 = none). Unlike the plain ratio, it does not penalise an optimizer for
  having learned more."""
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
  unigram baseline (:func:`~lamb_optax.studies.batch_scaling.unigram_baseline`), the
  :func:`gain_kept` column and a last line with its loss. Without one, the accuracy column gives the
  min–max band over seeds as well."""
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
  value divided by the line's mean at its smallest batch. Batches where every seed diverged have no
  loss and are left out of their line. A unigram baseline
  (:func:`~lamb_optax.studies.batch_scaling.unigram_baseline`, absolute loss plot only) is drawn as
  a dashed horizontal line."""
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
