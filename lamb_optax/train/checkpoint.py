"""Orbax checkpoints of the whole run: train state (params, optimizer state, step, RNG) and the
Grain iterator, so that a restarted job continues with exactly the batches it would have seen.

Saves are asynchronous (training continues while the arrays are written) and atomic: Orbax
writes into a temporary directory and renames it when complete, so a crash mid-save leaves the
previous checkpoint as the latest good one.

Orbax stores no checksum of the array data, so a flipped bit would load silently. Once a save
is complete (checked at the next save, ``wait()`` or ``close()``), process 0 records a CRC32 of
every file of the step in ``<step>/checksums.json``; :meth:`Checkpointer.restore` verifies them
and falls back to the newest intact checkpoint, with a warning naming the corrupt step and
files, moving the corrupt one aside (``<step>.corrupt``). A step whose checksums were never
recorded (killed before its save was confirmed, or written by an older version) is restored
unverified.

Other runs' checkpoints (``init_from``, ``lamb_optax.train.predict``, the pretrained loader) are
read by :func:`restore_state_parts` with the same checks (:func:`choose_step`), read-only: it
passes over corrupt steps with a warning, reads only steps whose save was confirmed (so a live
trainer's half-finished step is never read) and reads again when a step vanishes mid-read.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import zlib
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

PyTree = Any


class ShapeMismatchError(ValueError):
  """The workdir holds a checkpoint of a different model or optimizer."""


class CorruptCheckpointError(RuntimeError):
  """Every checkpoint of the run failed its checksums."""


def is_disk_full(error: BaseException | None) -> bool:
  """Whether ``error``, or an error it was raised from or during, is ENOSPC (Orbax and
  TensorStore wrap it in their own types, keeping only the text)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


CHECKSUM_FILE = "checksums.json"
_CHUNK = 1 << 24
_log = logging.getLogger(__name__)


def _file_crc32(path: epath.Path) -> str:
  crc = 0
  with path.open("rb") as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return f"{crc:08x}"


def _step_files(step_dir: epath.Path) -> dict[str, epath.Path]:
  """Every file under a step directory by relative path, except the checksum file."""
  files, pending = {}, [step_dir]
  while pending:  # iterdir, not rglob: epath refuses "**" (a GCS listing per directory is fine)
    for path in pending.pop().iterdir():
      if path.is_dir():
        pending.append(path)
      else:
        files[str(path.relative_to(step_dir))] = path
  files.pop(CHECKSUM_FILE, None)
  return files


def write_checksums(step_dir: epath.Path) -> None:
  """Records the CRC32 and size of every file of a complete step directory (atomically)."""
  sums = {name: {"crc32": _file_crc32(path), "size": path.stat().length}
          for name, path in sorted(_step_files(step_dir).items())}
  tmp = step_dir / (CHECKSUM_FILE + ".tmp")
  tmp.write_text(json.dumps({"format": 1, "files": sums}, indent=1))
  tmp.rename(step_dir / CHECKSUM_FILE)


def verify_checksums(step_dir: epath.Path) -> list[str] | None:
  """The files of a step that fail their recorded checksums ([] = intact); None when none were
  recorded."""
  path = step_dir / CHECKSUM_FILE
  if not path.exists():
    return None
  try:
    recorded = json.loads(path.read_text())["files"]
  except (ValueError, KeyError, TypeError):
    return [f"{CHECKSUM_FILE} (unreadable)"]
  present = _step_files(step_dir)
  bad = []
  for name, expected in sorted(recorded.items()):
    file = present.get(name)
    if file is None:
      bad.append(f"{name} (missing)")
    elif file.stat().length != expected["size"]:
      bad.append(f"{name} (size {file.stat().length}, recorded {expected['size']})")
    elif _file_crc32(file) != expected["crc32"]:
      bad.append(f"{name} (CRC32 mismatch)")
  return bad


def choose_step(directory: epath.Path, steps: list[int], *, finished_only: bool
                ) -> tuple[int, dict[int, list[str]]]:
  """The step to read under ``directory``, and the corrupt steps passed over (warned about).

  The newest step whose files match their checksums. Steps whose checksums were never recorded:
  resume (``finished_only=False``) reads the newest of them unverified (its own save, killed
  before it was confirmed); every other reader (``init_from``, predict, the pretrained loader)
  passes over them, as a save a live trainer may still be finishing, and reads one unverified
  only when no step is verified (a run written before checksums existed), with a warning.
  Raises FileNotFoundError without steps, CorruptCheckpointError naming the failing files when
  every step fails its checksums.
  """
  if not steps:
    raise FileNotFoundError(f"No checkpoint under {directory}.")
  corrupt: dict[int, list[str]] = {}
  unconfirmed = []
  for step in sorted(steps, reverse=True):
    bad = verify_checksums(directory / str(step))
    if bad is None and not finished_only:
      return step, corrupt
    if bad is None:
      unconfirmed.append(step)
    elif bad:
      corrupt[step] = bad
      _log.warning("Checkpoint step %d under %s is corrupt (%d file(s) fail their checksums: "
                   "%s); falling back to the previous checkpoint.", step, directory, len(bad),
                   "; ".join(bad[:5]))
    else:
      return step, corrupt
  if unconfirmed:
    _log.warning("No checkpoint under %s has verified checksums; reading step %d unverified.",
                 directory, unconfirmed[0])
    return unconfirmed[0], corrupt
  raise CorruptCheckpointError(
      f"No intact checkpoint under {directory}: "
      + "; ".join(f"step {s}: {', '.join(b[:3])}" for s, b in corrupt.items())
      + ". The files changed after they were written (disk or copy errors). Restore them "
      "from a backup, or start afresh in a new --workdir.")


def _leaves(tree: PyTree):
  return jax.tree_util.tree_flatten_with_path(tree)[0]


def _path(path) -> str:
  names = [getattr(k, "name", getattr(k, "key", getattr(k, "idx", k))) for k in path]
  return "/".join(str(n) for n in names)


class Checkpointer:
  """Keeps the last ``max_to_keep`` checkpoints of a run under ``<workdir>/checkpoints``."""

  def __init__(self, workdir: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir) if "://" not in workdir else workdir,
                                  "checkpoints")
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True),
        # Handlers named up front, so a fresh manager can read a checkpoint's metadata (the
        # shape check below) before anything is restored.
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()},
    )

    self._unconfirmed: set[int] = set()  # saved steps whose checksums are not written yet

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def _step_dir(self, step: int) -> epath.Path:
    return epath.Path(self.directory) / str(step)

  def _record_checksums(self) -> None:
    """Waits for pending saves, then checksums them (process 0 only: the files are shared)."""
    self._manager.wait_until_finished()
    if jax.process_index() == 0:
      for step in sorted(self._unconfirmed):
        if self._step_dir(step).is_dir():  # not garbage-collected meanwhile
          write_checksums(self._step_dir(step))
    self._unconfirmed.clear()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: PyTree, data_iterator: Any | None = None,
           force: bool = False) -> None:
    # Orbax waits for the previous save before starting this one anyway: checksumming it now
    # adds no wait, only the read of its files.
    self._record_checksums()
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    if self._manager.save(step, args=ocp.args.Composite(**items), force=force):
      self._unconfirmed.add(step)

  def restore(self, abstract_state: PyTree, data_iterator: Any | None = None,
              step: int | None = None) -> tuple[int, PyTree]:
    """Restores ``step`` (default: latest) into the shapes/shardings of ``abstract_state``.

    The data iterator, if given, is restored in place. Raises ShapeMismatchError, naming the
    mismatched arrays, when the checkpoint was written for other shapes.
    """
    step = self._intact_step(step)
    self._check_shapes(step, abstract_state)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return step, restored["state"]

  def _intact_step(self, step: int | None) -> int:
    """``step``, or the newest checkpoint whose files match their checksums.

    Every process verifies (the same shared files, so the same decision); process 0 then moves
    the corrupt steps aside so that the resumed run can save those steps again.
    """
    candidates = [step] if step is not None else list(self._manager.all_steps())
    step, corrupt = choose_step(epath.Path(self.directory), candidates, finished_only=False)
    if corrupt:
      self._set_aside(corrupt)
    return step

  def _set_aside(self, corrupt: dict[int, list[str]]) -> None:
    """Renames corrupt steps to ``<step>.corrupt`` (kept for inspection, ignored by Orbax)."""
    if jax.process_index() == 0:
      for step in corrupt:
        target = epath.Path(self.directory) / f"{step}.corrupt"
        if target.exists():
          target.rmtree()
        self._step_dir(step).rename(target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("lamb_optax_checkpoint_set_aside")
    self._manager.reload()

  def _check_shapes(self, step: int, abstract_state: PyTree) -> None:
    metadata = self._manager.item_metadata(step)["state"]
    if metadata is None:
      return
    # Orbax's metadata is a tree of dicts/lists; the state is NamedTuples: compare by key names.
    saved = {_path(p): tuple(m.shape) for p, m in _leaves(metadata) if hasattr(m, "shape")}
    wanted = {_path(p): tuple(np.shape(x)) for p, x in _leaves(abstract_state)}
    problems = [f"{k}: checkpoint {saved.get(k)} vs run {v}" for k, v in wanted.items()
                if saved.get(k) != v]
    problems += [f"{k}: only in the checkpoint" for k in saved.keys() - wanted.keys()]
    if problems:
      raise ShapeMismatchError(
          f"The checkpoint at {self.directory} (step {step}) was written by a different model or "
          f"optimizer; refusing to overwrite it. Use a new --workdir, or the config that wrote it. "
          f"Mismatches ({len(problems)}): " + "; ".join(sorted(problems)[:10]))

  def wait(self) -> None:
    """Blocks until async saves are on disk (and their checksums recorded)."""
    self._record_checksums()

  def close(self) -> None:
    try:
      self._record_checksums()
    finally:
      self._manager.close()

  def remove_unfinished(self) -> int | None:
    """Deletes what failed saves left (Orbax's temporary step directories, a half-written
    checksum file), process 0 only; returns the newest complete step."""
    directory = epath.Path(self.directory)
    if jax.process_index() == 0 and directory.is_dir():
      for path in directory.iterdir():
        if ".orbax-checkpoint-tmp" in path.name:
          path.rmtree()
        elif path.name.isdigit() and (path / (CHECKSUM_FILE + ".tmp")).exists():
          (path / (CHECKSUM_FILE + ".tmp")).unlink()
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if \
        directory.is_dir() else []
    return max(steps, default=None)


def restore_params(source: str, abstract_params: PyTree) -> PyTree:
  """The params of the newest intact checkpoint of another run (phase 1 of two-phase
  pretraining, the encoder to fine-tune, a run to score or load).

  ``source`` is that run's workdir or its ``checkpoints`` directory. Only the params are read
  (with the shardings of ``abstract_params``).
  """
  return restore_state_parts(source, {"params": abstract_params})["params"]


def checkpoints_dir(source: str) -> epath.Path:
  """``source``'s checkpoint directory (``source`` a workdir or that directory); raises
  FileNotFoundError when it does not exist."""
  directory = epath.Path(os.path.expanduser(source))
  if not directory.is_dir():  # before Orbax, whose manager would create it
    raise FileNotFoundError(f"init_from={source!r} does not exist (or is not a directory); point "
                            "it at the workdir of the phase-1 run.")
  return directory / "checkpoints" if (directory / "checkpoints").is_dir() else directory


def source_step(source: str) -> int:
  """The step :func:`restore_state_parts` reads from ``source`` (see :func:`choose_step`)."""
  directory = checkpoints_dir(source)
  steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir()]
  if not steps:
    raise FileNotFoundError(
        f"init_from={source!r} holds no checkpoint; point it at the workdir of the phase-1 run.")
  return choose_step(directory, steps, finished_only=True)[0]


# A live trainer may delete the step being read (keep_checkpoints): read the newest again.
_READ_ATTEMPTS = 3


def restore_state_parts(source: str, target: dict[str, PyTree]) -> dict[str, PyTree]:
  """Parts of the newest intact train state of another run, e.g. ``{"params": ...,
  "opt_state": ...}`` (abstract, with shardings); the others (step, RNG) are not read.

  The one reader of other runs' checkpoints: only finished steps whose files match their
  checksums (:func:`choose_step`), never written to (safe beside a live trainer).
  """
  for _ in range(_READ_ATTEMPTS):
    step = source_step(source)
    step_dir = checkpoints_dir(source) / str(step)
    try:
      return _read_parts(source, step, target)
    except (ShapeMismatchError, FileNotFoundError):
      raise
    except Exception as e:  # pylint: disable=broad-except
      if step_dir.exists() and not verify_checksums(step_dir):  # unchanged: a real error
        raise CorruptCheckpointError(f"Reading {step_dir} failed: {type(e).__name__}: {e}") from e
      _log.warning("Step %d under %s changed while it was read (%s); reading the newest "
                   "again.", step, source, type(e).__name__)
  raise CorruptCheckpointError(f"The newest checkpoint of {source} changed while it was read, "
                               f"{_READ_ATTEMPTS} times; try again once its trainer has saved.")


def _read_parts(source: str, step: int, target: dict[str, PyTree]) -> dict[str, PyTree]:
  manager = ocp.CheckpointManager(
      checkpoints_dir(source), options=ocp.CheckpointManagerOptions(create=False, read_only=True),
      item_handlers={"state": ocp.PyTreeCheckpointHandler(),  # a partial restore (params only)
                     "data": grain.checkpoint.CheckpointHandler()})
  try:
    _check_param_shapes(manager, step, target["params"], source)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True)))
  finally:
    manager.close()
  return restored["state"]


def _check_param_shapes(manager: ocp.CheckpointManager, step: int, abstract_params: PyTree,
                        source: str) -> None:
  """Compares the checkpoint's params metadata with the run's, before anything is restored
  (Orbax would otherwise fail deep in its async restore, under dozens of tracebacks)."""
  metadata = manager.item_metadata(step)["state"]
  if metadata is None:
    return
  saved = {_path(p): tuple(m.shape) for p, m in _leaves(metadata["params"]) if hasattr(m, "shape")}
  wanted = {_path(p): tuple(np.shape(x)) for p, x in _leaves(abstract_params)}
  problems = [f"{k}: checkpoint {saved.get(k)} vs run {v}" for k, v in wanted.items()
              if saved.get(k) != v]
  if problems:
    raise ShapeMismatchError(
        f"init_from={source!r} (step {step}) holds params of another model: "
        f"{len(problems)} mismatch(es): " + "; ".join(sorted(problems)[:10]) + ". Use the model "
        "config of the run that wrote it, or another init_from.")
