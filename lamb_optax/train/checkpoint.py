"""Orbax checkpoints of the whole run: train state (params, optimizer state, step, RNG) and the
Grain iterator, so that a restarted job continues with exactly the batches it would have seen.

Saves are asynchronous (training continues while the arrays are written) and atomic: Orbax
writes into a temporary directory and renames it when complete, so a crash mid-save leaves the
previous checkpoint as the latest good one.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import grain
import jax
import numpy as np
from etils import epath
import orbax.checkpoint as ocp

PyTree = Any


class ShapeMismatchError(ValueError):
  """The workdir holds a checkpoint of a different model or optimizer."""


def abstract_target(abstract: PyTree, shardings: PyTree) -> PyTree:
  """``ShapeDtypeStruct``s of ``abstract`` laid out by ``shardings``: what Orbax restores into."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


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

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def reached_preemption(self, step: int) -> bool:
    """True on every process once JAX's preemption service saw a notice (Cloud TPU maintenance,
    spot reclaim, SIGTERM in a ``jax.distributed`` run); False in single-process runs."""
    return self._manager.reached_preemption(step)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: PyTree, data_iterator: Optional[Any] = None,
           force: bool = False) -> None:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, abstract_state: PyTree, data_iterator: Optional[Any] = None,
              step: Optional[int] = None) -> tuple[int, PyTree]:
    """Restores ``step`` (default: latest) into the shapes/shardings of ``abstract_state``.

    The data iterator, if given, is restored in place. Raises ShapeMismatchError, naming the
    mismatched arrays, when the checkpoint was written for other shapes.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint under {self.directory}.")
    self._check_shapes(step, abstract_state)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return step, restored["state"]

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
    """Blocks until async saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def restore_params(source: str, abstract_params: PyTree) -> PyTree:
  """The params of the latest checkpoint of another run (phase 1 of two-phase pretraining).

  ``source`` is that run's workdir or its ``checkpoints`` directory. Only the params are read
  (with the shardings of ``abstract_params``); optimizer state and step start afresh, as in
  Google's and NVIDIA's phase 2.
  """
  directory = epath.Path(source)
  if (directory / "checkpoints").is_dir():
    directory = directory / "checkpoints"
  manager = ocp.CheckpointManager(directory, item_names=("state", "data"))
  try:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(
          f"init_from={source!r} holds no checkpoint; point it at the workdir of the phase-1 run.")
    target = {"params": abstract_params}
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True)))
  finally:
    manager.close()
  return restored["state"]["params"]
