"""SIGTERM and SIGINT sent to real trainer processes, 1 and 2 of them: the last finished step is
saved, one line says which and how to resume, the exit status is 143 / 130, and the resumed run's
losses equal an uninterrupted run's, bit for bit (lamb_optax/train/preemption.py).

Every test starts trainer processes: slow tier. The default tier sends SIGINT to a run in its own
process (tests/train/test_loop.py).
"""

import os
import signal
import subprocess
import time

import pytest

import trainer_runs

pytestmark = pytest.mark.slow

OVERRIDES = {"micro_batch_size": 4}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pretraining_data_dir):
  """One uninterrupted run, 1 process x 4 devices."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  trainer_runs.run(workdir, OVERRIDES, pretraining_data_dir, devices=4)
  return workdir


@pytest.fixture(scope="module")
def reference_two_processes(tmp_path_factory, pretraining_data_dir):
  """One uninterrupted run, 2 processes x 2 devices."""
  workdir = str(tmp_path_factory.mktemp("reference_multi"))
  trainer_runs.run_multiprocess(workdir, OVERRIDES, pretraining_data_dir, processes=2,
                                devices_per_process=2)
  return workdir


def _start(argv, devices, log):
  return subprocess.Popen(argv, env=trainer_runs.environment(devices), stdout=log,
                          stderr=subprocess.STDOUT, text=True, cwd=trainer_runs.ROOT)


def _checkpoints(workdir):
  directory = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def _signal_at_step(processes, workdir, step, sig, targets):
  """Sends ``sig`` to ``targets`` (indices into ``processes``) once ``step`` is logged; returns
  every process's exit status."""
  try:
    assert trainer_runs.wait_for_step(workdir, step, processes[0], 600), f"never reached {step}"
    for i in targets:
      assert processes[i].poll() is None, "the run ended before the signal"
      processes[i].send_signal(sig)
    return [p.wait(timeout=300) for p in processes]
  finally:
    for p in processes:
      p.kill()


def _check_resumed(workdir, reference, saved):
  rows = trainer_runs.rows(workdir)
  train = [r["step"] for r in rows if "loss" in r and "eval_loss" not in r]
  assert train == list(range(1, 9)), train  # each step once: rows after `saved` were rewritten
  assert saved < 8
  assert trainer_runs.losses(workdir) == trainer_runs.losses(reference)  # bit-identical


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_the_last_step_and_resume_is_bit_identical(
    reference, tmp_path, pretraining_data_dir, sig, code):
  workdir = str(tmp_path / "run")
  argv = trainer_runs.command(workdir, OVERRIDES, pretraining_data_dir)
  with open(tmp_path / "log.txt", "w") as log:
    (rc,) = _signal_at_step([_start(argv, 4, log)], workdir, 3, sig, [0])
  output = (tmp_path / "log.txt").read_text()
  assert rc == code, output[-3000:]
  assert "Traceback" not in output, output[-3000:]
  saved = _checkpoints(workdir)[-1]
  logged = max(trainer_runs.losses(workdir))
  assert saved == logged >= 3  # the last finished step, not the last periodic checkpoint
  name = signal.Signals(sig).name
  lines = [line for line in output.splitlines() if line.startswith("Stopped by")]
  assert lines == [f"Stopped by {name} after step {saved}: checkpoint of step {saved} saved in "
                   f"{workdir}/checkpoints; run the same command to resume (exit status {code})."]
  trainer_runs.run_command(argv, devices=4)
  _check_resumed(workdir, reference, saved)


@pytest.mark.parametrize("sig, code, targets", [(signal.SIGTERM, 143, [1]),
                                                (signal.SIGINT, 130, [0, 1])])
def test_two_processes_agree_on_the_step_to_save(reference_two_processes, tmp_path,
                                                 pretraining_data_dir, sig, code, targets):
  """A signal that reaches only process 1 (or both): both save the same step and exit with the
  signal's status; the resumed 2-process run equals the uninterrupted one bit for bit."""
  workdir = str(tmp_path / "run")
  address = f"127.0.0.1:{trainer_runs.free_port()}"
  argvs = [trainer_runs.command(workdir, OVERRIDES, pretraining_data_dir, (
      f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}",
      "--distributed_timeout_seconds=60")) for i in range(2)]
  logs = [open(tmp_path / f"log{i}.txt", "w") for i in range(2)]
  try:
    rcs = _signal_at_step([_start(a, 2, log) for a, log in zip(argvs, logs, strict=True)],
                          workdir, 3, sig, targets)
  finally:
    for log in logs:
      log.close()
  outputs = [(tmp_path / f"log{i}.txt").read_text() for i in range(2)]
  assert rcs == [code, code], [o[-3000:] for o in outputs]
  saved = _checkpoints(workdir)[-1]
  assert saved == max(trainer_runs.losses(workdir)) >= 3
  assert f"Stopped by {signal.Signals(sig).name} after step {saved}: checkpoint of step " \
      f"{saved} saved" in outputs[0]
  trainer_runs.run_multiprocess(workdir, OVERRIDES, pretraining_data_dir, processes=2,
                                devices_per_process=2)
  _check_resumed(workdir, reference_two_processes, saved)


def test_a_signal_before_the_first_step_exits_cleanly(tmp_path, pretraining_data_dir):
  """SIGTERM while the run starts (its workdir locked, nothing trained yet): no traceback, one
  line, exit status 143."""
  workdir = str(tmp_path / "run")
  argv = trainer_runs.command(workdir, OVERRIDES, pretraining_data_dir)
  with open(tmp_path / "log.txt", "w") as log:
    process = _start(argv, 4, log)
    try:
      lock = os.path.join(workdir, "run.lock")
      deadline = time.time() + 600
      while not os.path.exists(lock) and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
      assert process.poll() is None, "the run ended before the signal"
      process.send_signal(signal.SIGTERM)
      rc = process.wait(timeout=300)
    finally:
      process.kill()
  output = (tmp_path / "log.txt").read_text()
  assert rc == 143 and "Traceback" not in output, output[-3000:]
  assert len([line for line in output.splitlines() if line.startswith("Stopped by SIGTERM")]) == 1
