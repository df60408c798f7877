"""One run per workdir: a lock held for the run's life, and a config.json that keeps its history.

**Lock.** Process 0 holds ``fcntl.flock`` on ``<workdir>/run.lock`` while the run lives. A second
trainer on the same workdir fails at once with an error naming the holder (pid, host, start
time). The kernel drops the lock when its process dies, however it dies (SIGKILL, OOM, a lost
host), so a killed run never blocks its own restart. ``flock`` works on local disks; on NFS
it depends on the server (Linux >= 2.6.12 emulates it with byte-range locks). ``gs://`` and other
object-store workdirs have no lock: the trainer warns and runs unlocked, so there make sure one
job only writes each workdir.

**Config.** Resuming with another seed, global batch, data, model or schedule would silently
continue a different run than its checkpoints and metrics describe. :func:`check_config_change`
refuses that unless ``allow_config_change=True``; then the old ``config.json`` is kept as
``config.<UTC timestamp>.json`` beside the new one. Keys that only say how the run executes
(layout, logging, checkpointing frequency) may change freely: see :data:`FREE_KEYS`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from typing import Any

import ml_collections
from etils import epath

from lamb_optax.train import config as config_lib

LOCK_FILE = "run.lock"
CONFIG_FILE = "config.json"

# Keys a resumed run may change: they decide how it runs, not what it computes (the layout keys
# give the same steps on any layout) or only what is logged and kept.
FREE_KEYS = frozenset({
    "micro_batch_size", "mesh.data", "mesh.fsdp", "mesh.tensor", "log_every_steps",
    "eval_every_steps", "eval_batches", "eval_batch_size", "checkpoint_every_steps",
    "keep_checkpoints", "max_nonfinite_steps", "async_checkpointing", "init_from",
    "peak_flops_per_device", "allow_config_change", "data.worker_count", "data.data_dir",
    "model.remat",
})

_log = logging.getLogger(__name__)


class WorkdirError(RuntimeError):
  """The workdir cannot be used by this run (in use, not writable, another run's config)."""


class DiskFullError(WorkdirError):
  """The workdir's disk filled up; the message is one line saying what remains and what to do."""


def _is_remote(workdir: str) -> bool:
  return "://" in workdir


def expand(path: str) -> str:
  """``path`` with ``~`` expanded: a shell leaves ``--workdir=~/x`` as it is, and the run would
  otherwise write to a directory named ``~``.

  >>> expand("gs://b/~x")
  'gs://b/~x'
  """
  return path if _is_remote(path) else os.path.expanduser(path)


def new_file_problem(path: str, flag: str) -> str | None:
  """Why ``path`` cannot be written as a new output file (it exists: what is there is kept; its
  directory is missing), or None. Checked before the work that produces the file starts."""
  if os.path.lexists(path):
    return f"{flag}={path} already exists and is kept; pass a new path."
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    return f"{flag}={path}: its directory {parent} does not exist; create it first."
  return None


def check_writable(workdir: str) -> None:
  """Raises WorkdirError unless ``workdir`` is (or can be created as) a writable directory."""
  if _is_remote(workdir):
    return
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"--workdir={workdir} is a file, not a directory. Pass a directory (it "
                       "is created if missing).")
  existing = path
  while not os.path.exists(existing):  # the nearest existing ancestor is where mkdir writes
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise WorkdirError(f"--workdir={workdir} cannot be created: {existing} is a file.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise WorkdirError(f"--workdir={workdir}: {existing} is not writable by this user "
                       f"(uid {os.getuid()}). Choose a writable directory or fix its permissions.")


@dataclasses.dataclass
class Lock:
  """The held lock of a workdir; :meth:`release` (or process exit) frees it."""

  path: str | None
  _fd: int | None = None

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing the descriptor drops the flock
      self._fd = None


def acquire(workdir: str) -> Lock:
  """Takes the workdir's lock for this process (call on process 0 only).

  Raises WorkdirError naming the process that holds it. On object stores returns an unheld lock
  after a warning (see the module docstring).
  """
  import fcntl  # pylint: disable=g-import-not-at-top  (POSIX only)
  if _is_remote(workdir):
    _log.warning("%s is on an object store: no workdir lock is available there; make sure no "
                 "other run writes this workdir.", workdir)
    return Lock(None)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    holder = _read_holder(fd)
    os.close(fd)
    raise WorkdirError(
        f"--workdir={workdir} is in use by another run ({holder}); one run per workdir. Wait for "
        "it to finish or stop it, or use another --workdir.") from None
  # Who holds it, for the error above; written only once the lock is ours.
  os.ftruncate(fd, 0)
  os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
  return Lock(path, fd)


def _read_holder(fd: int) -> str:
  try:
    info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
  except (ValueError, KeyError, OSError):
    return "a process that has not yet written its pid"


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(tree, dict):
    return {prefix[:-1]: tree}
  out = {}
  for key, value in tree.items():
    out.update(_flat(value, f"{prefix}{key}."))
  return out


def changed_keys(old: dict[str, Any], new: dict[str, Any],
                 defaults: dict[str, Any] | None = None) -> list[str]:
  """Keys (dotted) whose values differ between two config.json dicts, free keys excluded.

  A key the old config lacks (a run written before the key existed) is unchanged where the new
  value is the schema's default in ``defaults``: new keys default to the old behaviour.

  >>> changed_keys({"seed": 0, "mesh": {"data": 4}}, {"seed": 1, "mesh": {"data": 2}})
  ['seed']
  >>> changed_keys({"seed": 0}, {"seed": 0, "new_key": False}, defaults={"new_key": False})
  []
  """
  a, b = _flat(old), _flat(new)
  d = _flat(defaults or {})

  def changed(k: str) -> bool:
    if k in FREE_KEYS or a.get(k) == b.get(k):
      return False
    return not (k not in a and k in d and b.get(k) == d[k])

  return sorted(k for k in a.keys() | b.keys() if changed(k))


def check_config_change(config: ml_collections.ConfigDict, workdir: str, resuming: bool) -> None:
  """Refuses to resume with a config that changes what the run computes (see module docstring),
  unless ``config.allow_config_change``; call before anything is restored or written."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not resuming or not path.exists() or config.allow_config_change:
    return
  changed = changed_keys(json.loads(path.read_text()), _as_json(config),
                         _as_json(config_lib.default_config()))
  if changed:
    old = _flat(json.loads(path.read_text()))
    new = _flat(_as_json(config))
    diff = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:10])
    raise WorkdirError(
        f"--workdir={workdir} holds a run with another config ({diff}); resuming it so would "
        "continue a different run than its checkpoints and metrics describe. Use a new "
        "--workdir, the run's own config, or --config.allow_config_change=True to resume anyway "
        f"(the old config is then kept as config.<timestamp>.json).")


def _as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes ``config.json``; an existing one with other values is kept as config.<UTC time>.json
  (only reached when resuming with a changed config was allowed, or on a fresh start)."""
  path = epath.Path(workdir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  text = config.to_json_best_effort(indent=2)
  if path.exists():
    if json.loads(path.read_text()) == json.loads(text):
      return
    path.rename(path.parent / f"config.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
  tmp = path.parent / (CONFIG_FILE + ".tmp")
  tmp.write_text(text)
  tmp.rename(path)
