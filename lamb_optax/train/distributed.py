"""Joining a multi-process JAX run, with a clear error instead of a silent hang or an abort."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable

import jax


def _on_cloud_tpu() -> bool:
  return bool(os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID")
              or os.environ.get("TPU_ACCELERATOR_TYPE"))


def _check_address(address: str) -> None:
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(f"--coordinator_address must be HOST:PORT, got {address!r}.")


def initialize(coordinator_address: str | None, num_processes: int | None,
               process_id: int | None, *, timeout_seconds: int = 300) -> None:
  """Calls ``jax.distributed.initialize`` when this is a multi-process run.

  * Cloud TPU: no flags needed; JAX discovers the slice's hosts.
  * Elsewhere: all three of coordinator address, process count and id are required.
  * Single process: nothing to do.
  If the peers do not all join within ``timeout_seconds`` (unreachable coordinator, a peer that
  never starts), prints an error that names the coordinator and what to check to stderr and
  exits the process with status 1, rather than hanging. (JAX's coordination client would abort
  the process from C++ with SIGABRT and "another task died" at its own deadline, which no Python
  code can catch, so a watchdog thread acts first.) Errors JAX does raise become a RuntimeError
  with the same message.
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

  def explain(cause: str) -> str:
    return (f"Process {process_id}/{num_processes} could not join the coordinator at "
            f"{coordinator_address} within {timeout_seconds}s: {cause}. Check that process 0 is "
            f"running with the same --coordinator_address and --num_processes, that "
            f"{coordinator_address} is reachable from {socket.gethostname()} (firewall, port), "
            "and that every process was started.")

  try:
    _with_watchdog(
        lambda: jax.distributed.initialize(
            coordinator_address=coordinator_address, num_processes=num_processes,
            process_id=process_id,
            # JAX aborts at its own deadline: give it longer, so that the watchdog speaks first.
            initialization_timeout=timeout_seconds + _JAX_GRACE_SECONDS),
        timeout_seconds, explain("not every process joined in time"))
  except Exception as e:  # JAX raises XlaRuntimeError for some failures (e.g. a bad address).
    raise RuntimeError(explain(str(e))) from e


_JAX_GRACE_SECONDS = 60


def _with_watchdog(join: Callable[[], None], timeout_seconds: float, message: str) -> None:
  """Runs ``join``; if it has not returned after ``timeout_seconds``, prints ``message`` and
  exits the process with status 1 (``join`` blocks in C++, where no exception can reach it)."""
  done = threading.Event()

  def watch():
    if not done.wait(timeout_seconds):
      sys.stdout.flush()
      sys.stderr.write(f"error: {message}\n")
      sys.stderr.flush()
      os._exit(1)  # pylint: disable=protected-access  (the main thread is stuck in C++)

  threading.Thread(target=watch, name="distributed-join-watchdog", daemon=True).start()
  try:
    join()
  finally:
    done.set()


def barrier(name: str, timeout_seconds: int = 1800) -> None:
  """Waits until every process reaches ``name`` (no-op in single-process runs).

  Uses the coordination service (as Orbax does), not a device collective: on CPU the first
  collective's gloo rendezvous gives up after 30 s, which one host's slower compile can exceed.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  client = jax_distributed.global_state.client
  if client is not None:
    client.wait_at_barrier(f"lamb_optax_{name}", timeout_in_ms=timeout_seconds * 1000)


def is_multiprocess() -> bool:
  return jax.process_count() > 1


def _client():
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  return jax_distributed.global_state.client


def key_value_set_once(key: str, value: str) -> None:
  """Sets ``key`` in the coordination service unless some process already set it (the first
  writer wins)."""
  try:
    _client().key_value_set(key, value, allow_overwrite=False)
  except Exception:  # pylint: disable=broad-except  (ALREADY_EXISTS arrives as XlaRuntimeError)
    pass


def key_value_try_get(key: str) -> str | None:
  """The value of ``key`` in the coordination service, or None when no process set it."""
  try:
    return _client().key_value_try_get(key)
  except Exception:  # pylint: disable=broad-except  (NOT_FOUND arrives as XlaRuntimeError)
    return None
