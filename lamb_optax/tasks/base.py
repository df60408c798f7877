"""The task interface: everything the trainer needs to know about a model, its data and its loss.

The trainer (``lamb_optax.train``) knows no model. A task gives it:

* parameters: their abstract shapes, their shardings on the mesh and a fresh initialisation;
  for ``config.init_from`` the trainer restores another run's parameters of the same shapes, or
  calls the task's optional ``params_from(source, restore_params)`` where they differ
  (fine-tuning heads, a Hugging Face checkpoint);
* ``stacked_axes``: which leading parameter axes are layers stacked by ``scan`` (for LAMB's
  per-layer trust ratios);
* the objective in *sum* form with *global* normalisers: ``normalizers(global_batch)`` runs once
  on the whole batch, ``objective(params, micro_batch, rng, normalizers)`` on each micro-batch,
  and the loss contributions add up to the global batch's mean loss on any layout;
* ``eval_sums`` (per-batch sums that add across batches and devices) and ``summarise`` (the
  rates users read from sums: mean losses, accuracies);
* its data: a checkpointable iterator over this process's rows of every global train batch, the
  held-out batches, and ``batch_spec`` (the features of one example, for compiling without data);
* ``flops_per_example`` (for MFU), ``tokens_per_example`` (0 where tokens mean nothing) and a
  one-line ``describe``.

A new task is a module in ``lamb_optax/tasks`` with a ``build(config, mesh, workdir)`` function,
registered in :data:`lamb_optax.tasks.TASKS`, and a config that names it (``config.task``);
``loop.py`` and ``step.py`` do not change.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, TypeVar

import jax
import numpy as np

PyTree = Any
Batch = Mapping[str, jax.Array]

# Non-trainable state (e.g. BatchNorm running statistics), optional: a task keeps it in its params
# dict under this key, returns a micro-batch's contribution under the same key among the
# objective's sums, and defines ``update_model_state(state, summed, num_micro_batches)``, which
# the step calls once per optimizer step. The optimizer never sees it (lamb_optax.train.step).
MODEL_STATE = "model_state"
HostBatch = dict[str, np.ndarray]

_T = TypeVar("_T")


def require_data(data: _T | None) -> _T:
  """``data``, or the error every task gives when it was built without data (``workdir=None``,
  e.g. to compile for a TPU slice) and is then asked for batches.

  >>> require_data([1, 2])
  [1, 2]
  >>> require_data(None)
  Traceback (most recent call last):
  ...
  ValueError: This task was built without data (workdir=None): it can compile, not train.
  """
  if data is None:
    raise ValueError("This task was built without data (workdir=None): it can compile, not "
                     "train.")
  return data


class Task(Protocol):
  """What the trainer calls; see the module docstring."""

  mesh: jax.sharding.Mesh
  param_shardings: PyTree

  def describe(self) -> str:
    """One line for the log: the model, its size, the data."""

  def stacked_axes(self, params: PyTree) -> PyTree:
    """Per parameter leaf, the number of leading axes that index scan-stacked layers."""

  def abstract_params(self) -> PyTree:
    """``jax.ShapeDtypeStruct`` per parameter: shapes known before any parameter exists."""

  def init_params(self) -> PyTree:
    """Fresh parameters, created directly with :attr:`param_shardings`."""

  def normalizers(self, batch: Batch) -> dict[str, jax.Array]:
    """Denominators of the global batch's mean losses, from the whole (global) batch."""

  def objective(self, params: PyTree, batch: Batch, dropout_rng: jax.Array | None,
                normalizers: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A micro-batch's contribution to the mean loss, and its metric sums."""

  def eval_sums(self, params: PyTree, batch: Batch) -> dict[str, jax.Array]:
    """Metric sums of a held-out batch (deterministic: no dropout)."""

  def summarise(self, sums: Mapping[str, float]) -> dict[str, float]:
    """The rates users read (mean losses, accuracies) from summed metrics."""

  def flops_per_example(self) -> float:
    """Training FLOPs (forward + backward) per example, for the MFU column."""

  def tokens_per_example(self) -> int:
    """Tokens per example for the tokens/s column; 0 where that means nothing."""

  def batch_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    """The features of ONE example (shape without the batch axis, dtype)."""

  def train_iterator(self, per_process_batch_size: int) -> Iterator[HostBatch]:
    """This process's rows of every global train batch; Grain-checkpointable."""

  def eval_batches(self, per_process_batch_size: int, num_batches: int) -> list[HostBatch]:
    """This process's rows of the first ``num_batches`` held-out global batches."""
