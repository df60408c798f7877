"""Runs the trainer CLI in subprocesses, as a user would: fresh processes, own device counts."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A run small enough for the test suite: tiny BERT (with its default dropout: a global batch is
# the same ordered array on any layout, so layouts agree with dropout on), 8 steps, the embedded
# corpus cut to a few documents.
SMALL = {
    "num_train_steps": 8, "warmup_steps": 2, "global_batch_size": 16, "micro_batch_size": 4,
    "log_every_steps": 1, "eval_every_steps": 4, "eval_batches": 1, "eval_batch_size": 16,
    "checkpoint_every_steps": 2,
    "learning_rate": 5e-3, "data.embedded_max_documents": 60,
}
NO_DROPOUT = {"model.overrides.hidden_dropout": 0.0, "model.overrides.attention_dropout": 0.0}

# Runs of the same config and device count share compiled steps through JAX's persistent cache
# (same executable, so the same bits): restarts in the fault-injection tests skip the compile.
COMPILATION_CACHE = os.path.join(tempfile.gettempdir(), f"lamb_optax_tests_jax_cache_{os.getuid()}")


def command(workdir: str, overrides: dict, data_dir: str, extra: tuple[str, ...] = ()) -> list[str]:
  flags = {**SMALL, "data.data_dir": data_dir, **overrides}
  return ([sys.executable, "-m", "lamb_optax.train", f"--config={ROOT / 'configs' / 'tiny.py'}",
           f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flags.items()] + list(extra))


def environment(devices: int) -> dict[str, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_COMPILATION_CACHE_DIR"] = COMPILATION_CACHE
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "1"
  return env


def run(workdir: str, overrides: dict, data_dir: str, *, devices: int = 1,
        extra: tuple[str, ...] = (), timeout: int = 900, check: bool = True
        ) -> subprocess.CompletedProcess:
  return run_command(command(workdir, overrides, data_dir, extra), devices=devices,
                     timeout=timeout, check=check)


def run_command(argv: list[str], *, devices: int, timeout: int = 900, check: bool = True
                ) -> subprocess.CompletedProcess:
  """Runs a trainer command line to its end in a fresh process with ``devices`` CPU devices."""
  result = subprocess.run(argv, env=environment(devices), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
  if check and result.returncode:
    raise AssertionError(f"trainer failed ({result.returncode}):\n{result.stderr[-4000:]}")
  return result


def start(argv: list[str], *, devices: int) -> subprocess.Popen:
  """Starts a trainer command line in the background (its output discarded)."""
  return subprocess.Popen(argv, env=environment(devices), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, cwd=ROOT)


def sigkill(process: subprocess.Popen) -> None:
  """SIGKILLs a started trainer and reaps it; no cleanup of its own gets to run."""
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=30)


def kill_at_step(argv: list[str], workdir: str, step: int, *, devices: int,
                 timeout: float = 600) -> int:
  """Starts the run, SIGKILLs it once ``step`` is logged; returns the last step it logged.

  The caller restarts the same command and compares with an uninterrupted run: the resumed run
  must give the same losses, bit for bit.
  """
  process = start(argv, devices=devices)
  try:
    assert wait_for_step(workdir, step, process, timeout), f"never reached step {step}"
    sigkill(process)
  finally:
    process.kill()
  return max(losses(workdir))


def losses(workdir: str) -> dict[int, float]:
  """step -> train loss; for steps logged twice (rerun after a resume), the last row wins."""
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {row["step"]: row["loss"] for row in rows if "loss" in row and "eval_loss" not in row}


def rows(workdir: str) -> list[dict]:
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def wait_for_step(workdir: str, step: int, process: subprocess.Popen, timeout: float) -> bool:
  deadline = time.time() + timeout
  path = os.path.join(workdir, "metrics.jsonl")
  while time.time() < deadline and process.poll() is None:
    if os.path.exists(path) and any(s >= step for s in losses(workdir)):
      return True
    time.sleep(0.05)
  return False


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_multiprocess(workdir: str, overrides: dict, data_dir: str, *, processes: int,
                     devices_per_process: int, timeout: int = 900) -> list[str]:
  address = f"127.0.0.1:{free_port()}"
  procs = [subprocess.Popen(
      command(workdir, overrides, data_dir,
              (f"--coordinator_address={address}", f"--num_processes={processes}",
               f"--process_id={i}", "--distributed_timeout_seconds=60")),
      env=environment(devices_per_process), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, cwd=ROOT) for i in range(processes)]
  outputs: list[str | None] = []
  try:
    for p in procs:
      _, err = p.communicate(timeout=timeout)
      outputs.append(err)
  finally:
    for p in procs:
      p.kill()
  for p, err in zip(procs, outputs, strict=True):
    if p.returncode:
      raise AssertionError(f"process failed ({p.returncode}):\n{(err or '')[-4000:]}")
  return outputs


def prepare_small_data(data_dir: str):
  """The embedded corpus cut to SMALL's few documents, with the tiny config's example shape.

  Built on the first call for a ``data_dir``; later calls return the cached build's
  ``PreparedData`` (tests/conftest.py's session fixture ``pretraining_data_dir`` makes the one
  build a session uses).
  """
  from lamb_optax import data as data_lib  # pylint: disable=g-import-not-at-top
  return data_lib.prepare_embedded(
      data_dir, masking=data_lib.MaskingConfig(max_seq_length=128, max_predictions_per_seq=20),
      max_documents=SMALL["data.embedded_max_documents"])


def small_config(data_dir: str, **changes):
  """The SMALL run as a config object, for in-process runs on the 8 fake devices of the test
  process (micro-batches of 2 make the global batch of 16)."""
  import configs.tiny as tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config.get_config()
  for key, value in {**SMALL, "micro_batch_size": 2, "data.data_dir": data_dir,
                     **changes}.items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def flip_a_byte(step_dir: str) -> str:
  """Flips one bit in the middle of a checkpoint step's largest array-data file; returns its
  path (what a bad disk or a torn copy does, for the checksummed readers to catch)."""
  files = [os.path.join(d, n) for d, _, names in os.walk(os.path.join(step_dir, "state"))
           for n in names]
  path = max(files, key=os.path.getsize)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0x10]))
  return path
