"""The checks a config passes before anything is compiled, and how its batch maps onto devices.

:func:`check` is the one pre-compile check: the trainer runs it on its devices, ``--compile_for``
on a TPU slice's topology, and ``scripts/tpu_pod.py`` on the slice it is about to create, so a
config is refused the same way, with the same message, wherever it is first seen.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from lamb_optax import sharding
from lamb_optax.train import config as config_lib


def check(config: ml_collections.ConfigDict, num_devices: int, num_processes: int) -> BatchPlan:
  """Locks ``config`` (unknown keys are refused), checks its schedule, and plans its batches on
  the mesh ``config.mesh`` makes on ``num_devices`` devices shared by ``num_processes`` hosts.

  Raises a ValueError naming the key to change.

  >>> config = config_lib.default_config()
  >>> config.global_batch_size, config.micro_batch_size = 64, 4
  >>> check(config, num_devices=8, num_processes=2).num_micro_batches
  2
  """
  config_lib.lock(config)
  config_lib.check_schedule(config)
  data_parallel = sharding.data_parallel_size(dict(config.mesh), num_devices)
  return plan_batches(config, data_parallel, num_processes)


@dataclasses.dataclass(frozen=True)
class BatchPlan:
  """How a global batch maps onto processes, devices and micro-batches."""

  global_batch_size: int
  per_process_batch_size: int
  data_parallel_devices: int
  micro_batch_size: int  # per device
  num_micro_batches: int
  eval_batch_size: int  # global
  per_process_eval_batch_size: int


def plan_batches(config: ml_collections.ConfigDict, data_parallel_devices: int,
                 process_count: int) -> BatchPlan:
  """Validates the batch sizes against the mesh; raises a ValueError that says what to change."""
  g, b, d = config.global_batch_size, config.micro_batch_size, data_parallel_devices
  if g < 1 or b < 1:
    raise ValueError(f"global_batch_size ({g}) and micro_batch_size ({b}) must be positive.")
  if g % (d * b):
    good = [m for m in range(1, b + 1) if g % (d * m) == 0]
    hint = f"micro_batch_size={max(good)}" if good else f"a global batch that is a multiple of {d}"
    raise ValueError(
        f"global_batch_size {g} is not divisible by (data-parallel devices {d} × micro_batch_size "
        f"{b} = {d * b}). Use {hint}, or a global batch that is a multiple of {d * b}.")
  if g % process_count:
    raise ValueError(f"global_batch_size {g} is not divisible by the {process_count} processes.")
  e = config.eval_batch_size or d * b
  if e < 1 or e % d or e % process_count:
    raise ValueError(
        f"eval_batch_size {e} must be a positive multiple of the data-parallel devices ({d}) and "
        f"of the processes ({process_count}); e.g. eval_batch_size={d * b}, or 0 for that "
        "default (micro_batch_size × data-parallel devices).")
  return BatchPlan(g, g // process_count, d, b, g // (d * b), e, e // process_count)
