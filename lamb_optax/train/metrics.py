"""Where training metrics go: ``metrics.jsonl``, TensorBoard event files, and a progress bar.

The progress bar (tqdm) starts after the first step, so its rate and ETA leave the compile
out; where stderr is not a terminal (a log file, a batch job) there is no bar but one line per
logged step: ``step 40/100 (40%): loss 2.1234, 3.2 step/s, ETA 0:00:19``.

Only process 0 writes. TensorBoard files are written with ``tensorboardX`` (no TensorFlow).
``metrics.jsonl`` is appended to, so a resumed run continues the same file; a row per logged step.

A run resumed from the checkpoint of step ``S`` first drops the rows of steps after ``S`` (they
are logged again by the resumed run), so the file holds every step once, with the values of the
run that continued. The file is strict JSON: non-finite values (a diverged loss) are written as
``null``, since JSON has no NaN or Infinity (Python's ``json`` would write bare ``NaN`` tokens,
which strict parsers reject).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath

from lamb_optax import accelerators


def _to_python(value: Any) -> Any:
  value = np.asarray(value)
  if value.ndim == 0:
    return value.item()
  return value.tolist()


def _strict(value: Any) -> Any:
  """``value`` with every non-finite float replaced by None (JSON null)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: _strict(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_strict(v) for v in value]
  return value


def dumps_row(row: Mapping[str, Any]) -> str:
  """One strict-JSON line: non-finite floats become null.

  >>> dumps_row({"step": 3, "loss": float("nan"), "x": [1.5, float("inf")]})
  '{"step": 3, "loss": null, "x": [1.5, null]}'
  """
  return json.dumps(_strict(dict(row)), allow_nan=False)


def _rows_through(text: str, last_step: int) -> tuple[list[str], int]:
  """The lines of a metrics.jsonl for steps <= last_step (rows rewritten strictly), and the count
  of lines dropped (later steps, and a last line torn by a kill mid-write). Lines that are not
  rows of the run (a note a user or a tool appended) are kept as they are."""
  *lines, torn = text.split("\n")  # every row ends with a newline: `torn` is "" or cut short
  kept, dropped = [], int(bool(torn))
  for line in lines:
    try:
      row = json.loads(line)  # accepts the bare NaN that earlier versions wrote
      step = int(row["step"])
    except (ValueError, KeyError, TypeError):
      kept.append(line)
      continue
    if step <= last_step:
      kept.append(dumps_row(row))
    else:
      dropped += 1
  return kept, dropped


def to_host(tree: Any) -> Any:
  """Numpy copies of replicated global arrays (``float(x)`` fails on multi-process arrays).

  >>> import jax.numpy as jnp
  >>> to_host({"loss": jnp.float32(2.5)})["loss"].item()
  2.5
  """
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


class _JsonLines:
  """An appendable JSON-lines file, local or on a remote filesystem (``gs://``, via epath).

  Object stores cannot append, so there the whole file is rewritten on every row; a log of a
  few thousand rows stays small enough for that to be cheap.
  """

  def __init__(self, path: epath.Path, last_step: int | None = None):
    self._path = path
    self._remote = "://" in str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if last_step is not None and path.exists():
      self._truncate(last_step)
    if self._remote:
      self._text = path.read_text(encoding="utf-8") if path.exists() else ""
    else:
      self._file = open(path, "a", encoding="utf-8")

  def _truncate(self, last_step: int) -> None:
    """Drops the rows after ``last_step``, replacing the file atomically (a kill now leaves the
    old file or the new one, never a half-written one)."""
    kept, dropped = _rows_through(self._path.read_text(encoding="utf-8"), last_step)
    if not dropped:
      return
    text = "".join(line + "\n" for line in kept)
    if self._remote:  # object stores replace an object atomically on write
      self._path.write_text(text, encoding="utf-8")
      return
    tmp = self._path.with_name(self._path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self._path)

  def append(self, line: str) -> None:
    if self._remote:
      self._text += line + "\n"
      self._path.write_text(self._text, encoding="utf-8")
    else:
      self._file.write(line + "\n")
      self._file.flush()

  def close(self) -> None:
    if not self._remote:
      self._file.close()


class MetricsWriter:
  """Writes metric rows for one run; a no-op on processes other than 0.

  ``initial_step`` is the step the run starts (resumes) from: rows of ``metrics.jsonl`` after it,
  written by the run that was interrupted after its last checkpoint, are dropped so each step
  appears once. TensorBoard event files cannot be truncated: there, the resumed run's points
  for those steps are added after the old ones (TensorBoard shows both).
  """

  def __init__(self, workdir: str, *, total_steps: int, initial_step: int = 0,
               enabled: bool = True, progress_bar: bool = True):
    self.enabled = enabled
    self._jsonl = None
    self._tensorboard = None
    self._bar = None
    self._progress = progress_bar
    self._total = total_steps
    self._clock: tuple[float, int] | None = None  # (time, step) when the steps started to count
    if not enabled:
      return
    self._jsonl = _JsonLines(epath.Path(workdir) / "metrics.jsonl", last_step=initial_step)
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:  # TensorBoard is optional: metrics.jsonl always has everything.
      self._tensorboard = None

  def start_clock(self, step: int) -> None:
    """Starts the rate and ETA at ``step`` (the first step done, its compile included), and
    the progress bar if stderr (where tqdm draws) is a terminal."""
    self._clock = (time.perf_counter(), step)
    if self.enabled and self._progress and self._bar is None and sys.stderr.isatty():
      from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=self._total, initial=step, unit="step", dynamic_ncols=True,
                       mininterval=1.0)

  def _progress_line(self, step: int, loss: float) -> str:
    """``step 40/100 (40%): loss 2.1234, 3.2 step/s, ETA 0:00:19`` (no rate before 2 steps)."""
    line = f"step {step}/{self._total} ({100 * step // max(self._total, 1)}%): loss {loss:.4f}"
    if self._clock is not None and step > self._clock[1]:
      rate = (step - self._clock[1]) / max(time.perf_counter() - self._clock[0], 1e-9)
      left = datetime.timedelta(seconds=round((self._total - step) / rate))
      line += f", {rate:.3g} step/s, ETA {left}"
    return line

  def write(self, step: int, metrics: Mapping[str, Any], prefix: str = "") -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{prefix + k: _to_python(v) for k, v in metrics.items()}}
    self._jsonl.append(dumps_row(row))
    if self._tensorboard is not None:
      for name, value in row.items():
        if name != "step" and isinstance(value, (int, float)) and math.isfinite(value):
          self._tensorboard.add_scalar(name, value, int(step))
      self._tensorboard.flush()
    if not prefix and "loss" in metrics and self._progress:
      if self._bar is not None:
        self._bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
      elif self._clock is not None:  # not a terminal: one line per logged step
        print(self._progress_line(step, float(metrics["loss"])), flush=True)

  def advance(self, steps: int = 1) -> None:
    if self._bar is not None:
      self._bar.update(steps)

  def print(self, message: str) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(message)
    else:
      print(message, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._tensorboard is not None:
      self._tensorboard.close()
    if self._jsonl is not None:
      self._jsonl.close()


def trust_ratio_stats(opt_state: Any) -> dict[str, float]:
  """Min/mean/max trust ratio over all adapted layers; {} for optimizers without one (AdamW).

  Cheap enough for every logged step; per-layer detail is in ``lamb_optax.trust_ratio_summary``.
  """
  import lamb_optax  # pylint: disable=g-import-not-at-top
  try:
    ratios = lamb_optax.trust_ratios(opt_state)
  except ValueError:
    return {}
  flat = np.concatenate([np.ravel(r) for r in to_host(ratios).values()])
  return {"trust_ratio_min": float(flat.min()), "trust_ratio_mean": float(flat.mean()),
          "trust_ratio_max": float(flat.max())}


class Throughput:
  """Examples per second between logged steps (wall clock; the step's outputs were fetched)."""

  def __init__(self, examples_per_step: int):
    self.examples_per_step = examples_per_step
    self._last: tuple[int, float] | None = None

  def start(self, step: int) -> None:
    self._last = (step, time.perf_counter())

  def rate(self, step: int) -> float | None:
    """Examples/s since the last call (or :meth:`start`); None before the first."""
    now = time.perf_counter()
    last, self._last = self._last, (step, now)
    if last is None or step <= last[0]:
      return None
    return self.examples_per_step * (step - last[0]) / (now - last[1])


def add_useful_rates(row: dict[str, Any]) -> dict[str, Any]:
  """Adds ``useful_tokens_per_second`` and ``useful_mfu`` beside ``tokens_per_second`` and
  ``mfu``: the same rates with padding tokens not counted, from the task's
  ``useful_token_fraction`` of the step's batch (non-padding tokens / tokens). The FLOPs of a
  padding token are taken as those of any other token.

  >>> add_useful_rates({"tokens_per_second": 1000.0, "mfu": 0.5, "useful_token_fraction": 0.8})
  {'tokens_per_second': 1000.0, 'mfu': 0.5, 'useful_token_fraction': 0.8, \
'useful_tokens_per_second': 800.0, 'useful_mfu': 0.4}
  """
  fraction = row.get("useful_token_fraction")
  if fraction is not None:
    for name in ("tokens_per_second", "mfu"):
      if name in row:
        row["useful_" + name] = row[name] * fraction
  return row


def peak_flops(device: Any) -> float:
  """The device's peak FLOP/s if it is a known TPU/GPU, else 0 (no MFU is reported), from the
  one table of :func:`lamb_optax.accelerators.peak_flops`.

  >>> class Cpu: device_kind = "cpu"
  >>> peak_flops(Cpu())
  0.0
  """
  return accelerators.peak_flops(getattr(device, "device_kind", ""))
