"""Stopping on SIGTERM or SIGINT without losing work: every process saves the same step.

SIGTERM is how a TPU VM, a Kubernetes pod or a SLURM job is told to end, SIGINT is Ctrl-C. Once
training has started, either one only sets a flag; the loop then finishes its current step,
saves a checkpoint of it (after any in-flight asynchronous save), prints one line naming the
saved step and how to resume, and the process exits with :data:`EXIT_CODES` (143 for SIGTERM,
130 for SIGINT: 128 + the signal number, what shells and schedulers already read as "ended by
that signal"). ``scripts/tpu_pod.py`` reads both as "preempted, resumable". A second signal acts
at once, with the default action (no save). Before training starts there is nothing new to
save: a signal stops the process at once, with the same exit code.

Several processes (``jax.distributed``): the signal may reach only some of them, and they must
all save the same step. The first process that sees one writes ``stop step:signal`` into the
coordination service's key-value store (first writer wins); every process reads that key at each
step boundary and stops at that step. The stop step is the writer's step + 2: at boundary ``s``
reading the key comes after reading step ``s - 1``'s results, which needed every process to have
dispatched step ``s - 1`` (its all-reduce), so when the writer is at step ``s`` no process is past
step ``s + 1``, and each reads the key at step ``s + 2`` at the latest.
"""

from __future__ import annotations

import os
import signal
import threading

from lamb_optax.train import distributed

EXIT_CODES: dict[int, int] = {signal.SIGTERM: 143, signal.SIGINT: 130}
_KEY = "lamb_optax/preemption/stop"
# Processes are at most one step apart at a boundary (see the module docstring).
_STOP_AFTER = 2


class Interrupted(SystemExit):
  """A signal arrived before training started: nothing new to save, exit at once."""

  def __init__(self, signum: int):
    super().__init__(EXIT_CODES[signum])
    self.signum = signum


class Preempted(SystemExit):
  """Training stopped on a signal after saving; ``code`` is the documented exit status."""

  def __init__(self, signum: int, step: int, saved_step: int | None):
    super().__init__(EXIT_CODES[signum])
    self.signum, self.step, self.saved_step = signum, step, saved_step


def name(signum: int) -> str:
  return signal.Signals(signum).name


class Guard:
  """Holds SIGTERM/SIGINT for the run's life (main thread only; elsewhere it does nothing)."""

  def __init__(self):
    self.signum: int | None = None
    self.training = False
    self._stop: tuple[int, int] | None = None  # (step, signal) agreed by every process
    self._previous: dict[int, object] = {}

  def __enter__(self) -> Guard:
    if threading.current_thread() is threading.main_thread():
      for sig in EXIT_CODES:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      if handler is not None:  # None: installed outside Python, nothing to give back
        signal.signal(sig, handler)  # type: ignore[arg-type]
    self._previous.clear()

  def _handle(self, signum: int, frame) -> None:
    del frame
    if self.signum is not None:  # the second one: the default action, now
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    self.signum = signum
    if not self.training:
      raise Interrupted(signum)

  def stop_at(self, step: int) -> tuple[int, int] | None:
    """``(stop step, signal)`` once a signal reached any process, else None; call at every step
    boundary on every process (``step``: the step just taken)."""
    if self._stop is not None:
      return self._stop
    if not distributed.is_multiprocess():
      if self.signum is not None:
        self._stop = (step, self.signum)
      return self._stop
    if self.signum is not None:
      distributed.key_value_set_once(_KEY, f"{step + _STOP_AFTER}:{self.signum}")
    value = distributed.key_value_try_get(_KEY)
    if value is not None:
      stop, signum = (int(v) for v in value.split(":"))
      self._stop = (stop, signum)
    return self._stop
