"""Joining a multi-process JAX run, with a clear error instead of a silent hang."""

from __future__ import annotations

import os
import socket
from typing import Optional

import jax


def _on_cloud_tpu() -> bool:
  return bool(os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID")
              or os.environ.get("TPU_ACCELERATOR_TYPE"))


def _check_address(address: str) -> None:
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(f"--coordinator_address must be HOST:PORT, got {address!r}.")


def initialize(coordinator_address: Optional[str], num_processes: Optional[int],
               process_id: Optional[int], *, timeout_seconds: int = 300) -> None:
  """Calls ``jax.distributed.initialize`` when this is a multi-process run.

  * Cloud TPU: no flags needed; JAX discovers the slice's hosts.
  * Elsewhere: all three of coordinator address, process count and id are required.
  * Single process: nothing to do.
  If the peers do not all join within ``timeout_seconds``, raises a RuntimeError that names the
  coordinator and what to check, rather than hanging.
  """
  explicit = [coordinator_address, num_processes, process_id]
  if all(v is None for v in explicit):
    if _on_cloud_tpu():
      jax.distributed.initialize(initialization_timeout=timeout_seconds)
    return
  if any(v is None for v in explicit):
    raise ValueError("Multi-process runs need all of --coordinator_address, --num_processes and "
                     "--process_id (or none of them on Cloud TPU).")
  if not 0 <= process_id < num_processes:
    raise ValueError(f"--process_id must be in [0, {num_processes}), got {process_id}.")
  _check_address(coordinator_address)
  # Cross-process collectives on CPU devices need gloo (the CPU client has none by default);
  # the setting only concerns the CPU backend, so it is harmless on GPU hosts.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout_seconds)
  except Exception as e:  # JAX raises XlaRuntimeError (DEADLINE_EXCEEDED etc.) here.
    raise RuntimeError(
        f"Process {process_id}/{num_processes} could not join the coordinator at "
        f"{coordinator_address} within {timeout_seconds}s: {e}. Check that process 0 is running "
        f"with the same --coordinator_address and --num_processes, that {coordinator_address} "
        f"is reachable from {socket.gethostname()} (firewall, port), and that every process "
        "was started.") from e
