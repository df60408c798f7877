"""The trainer end to end, in fresh processes: data parallelism, accumulation, multi-host, resume.

What these show: the same global batch and seed give the same losses on
1 process x 4 devices and 2 processes x 2 devices (real ``jax.distributed`` over gloo on
127.0.0.1) with dropout on (each host loads its contiguous block of rows, so the global batch is
the same ordered array and every row gets the same dropout mask), and on 1 device with 4
micro-batches (dropout off: micro-batches draw their own dropout keys); a run killed with SIGKILL
and restarted continues with bit-identical losses.

Every test starts trainer processes, so the module is in the slow tier; the default run trains
in its own process (tests/train/test_loop.py).
"""

import os
import signal
import time

import numpy as np
import pytest

import trainer_runs

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir(pretraining_data_dir):
  """The session's small pretraining corpus (tests/conftest.py), under this module's short name."""
  return pretraining_data_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pretraining_data_dir):
  """One uninterrupted run on 1 process x 4 devices: data parallel, no accumulation."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  trainer_runs.run(workdir, {"micro_batch_size": 4}, pretraining_data_dir, devices=4)
  return workdir


def test_accumulation_matches_data_parallelism(tmp_path, data_dir):
  """1 device with 4 micro-batches of 4 == 4 devices with one micro-batch of 4 each (dropout off:
  each micro-batch folds its index into the dropout key, so their masks differ by design)."""
  parallel, accumulate = str(tmp_path / "parallel"), str(tmp_path / "accumulate")
  overrides = {"micro_batch_size": 4, **trainer_runs.NO_DROPOUT}
  trainer_runs.run(parallel, overrides, data_dir, devices=4)
  trainer_runs.run(accumulate, overrides, data_dir, devices=1)
  expected, got = trainer_runs.losses(parallel), trainer_runs.losses(accumulate)
  np.testing.assert_allclose([got[s] for s in sorted(expected)],
                             [expected[s] for s in sorted(expected)], rtol=2e-5)


def test_two_processes_match_one(reference, tmp_path, data_dir):
  """2 processes x 2 devices (jax.distributed, gloo) == 1 process x 4 devices, dropout on."""
  workdir = str(tmp_path / "multihost")
  trainer_runs.run_multiprocess(workdir, {"micro_batch_size": 4}, data_dir, processes=2,
                                devices_per_process=2)
  expected, got = trainer_runs.losses(reference), trainer_runs.losses(workdir)
  np.testing.assert_allclose([got[s] for s in sorted(expected)],
                             [expected[s] for s in sorted(expected)], rtol=2e-5)


def test_two_processes_summing_their_own_gradients_match_one_device(tmp_path, data_dir):
  """2 processes x 2 devices x 2 micro-batches == 1 device x 2 micro-batches, dropout on: with
  several micro-batches each device accumulates its own gradients and they are summed once per
  step (lamb_optax.train.step), and its rows draw the dropout masks they draw on one device."""
  one, multihost = str(tmp_path / "one"), str(tmp_path / "multihost")
  trainer_runs.run(one, {"micro_batch_size": 8}, data_dir, devices=1)
  trainer_runs.run_multiprocess(multihost, {"micro_batch_size": 2}, data_dir, processes=2,
                                devices_per_process=2)
  expected, got = trainer_runs.losses(one), trainer_runs.losses(multihost)
  assert sorted(got) == sorted(expected) == list(range(1, 9))
  np.testing.assert_allclose([got[s] for s in sorted(expected)],
                             [expected[s] for s in sorted(expected)], rtol=2e-5)


def test_sigkill_and_restart_continue_bit_identically(reference, tmp_path, data_dir):
  workdir = str(tmp_path / "killed")
  command = trainer_runs.command(workdir, {"micro_batch_size": 4}, data_dir)
  last = trainer_runs.kill_at_step(command, workdir, 5, devices=4, timeout=240)
  assert last < 8  # it really died mid-run
  trainer_runs.run_command(command, devices=4)
  expected, got = trainer_runs.losses(reference), trainer_runs.losses(workdir)
  assert got == expected  # bit-identical floats, every step


def test_refuses_a_workdir_of_another_model(reference, tmp_path, data_dir):
  workdir = str(tmp_path / "other")
  trainer_runs.run(workdir, {"num_train_steps": 2, "checkpoint_every_steps": 2}, data_dir)
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  config_before = open(os.path.join(workdir, "config.json")).read()
  other_model = {"model.overrides.hidden_size": 64, "model.overrides.intermediate_size": 256}
  result = trainer_runs.run(workdir, other_model, data_dir, check=False)
  assert result.returncode != 0  # refused by the config.json comparison
  assert "model.overrides.hidden_size: None -> 64" in result.stderr, result.stderr[-2000:]
  # Allowed to change its config, the run is still refused by the checkpoint's shapes.
  result = trainer_runs.run(workdir, {**other_model, "allow_config_change": True}, data_dir,
                            check=False)
  assert result.returncode != 0
  assert "different model" in result.stderr and "refusing to overwrite" in result.stderr
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
  assert open(os.path.join(workdir, "config.json")).read() == config_before


def _wait_until(predicate, process, timeout):
  deadline = time.time() + timeout
  while time.time() < deadline and process.poll() is None:
    if predicate():
      return True
    time.sleep(0.01)
  return False


def _saving(workdir):
  """True while Orbax writes a checkpoint (its temporary directory exists)."""
  directory = os.path.join(workdir, "checkpoints")
  return os.path.isdir(directory) and any("tmp" in name for name in os.listdir(directory))


def _last_step(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  return max(trainer_runs.losses(workdir), default=0) if os.path.exists(path) else 0


def _kill_and_resume(reference, workdir, data_dir, kills, seed, at_least):
  """SIGKILLs the run up to ``kills`` times, alternately mid-save (as soon as Orbax's temporary
  directory appears) and at a random moment (seeded) after a new step, then lets it finish.

  Each kill needs a step the earlier runs never logged, so an 8-step run on a fast machine may
  finish before the last kills: the loop stops there, and ``at_least`` kills must have happened.
  """
  rng = np.random.default_rng(seed)
  command = trainer_runs.command(workdir, {"micro_batch_size": 4}, data_dir)
  made = []
  for kill in range(kills):
    process = trainer_runs.start(command, devices=4)
    try:
      start = _last_step(workdir)
      if kill % 2 == 0:
        _wait_until(lambda s=start: _last_step(workdir) > s and _saving(workdir), process, 600)
      else:
        if _wait_until(lambda s=start: _last_step(workdir) > s, process, 600):
          time.sleep(rng.uniform(0.0, 0.3))  # about one step: a longer wait may reach the end
      if process.poll() is not None:  # finished (or failed) before this kill
        assert process.returncode == 0, f"the run failed after {len(made)} kills"
        break
      trainer_runs.sigkill(process)
      made.append(("random" if kill % 2 else "mid-save", _last_step(workdir)))
    finally:
      process.kill()
  assert len(made) >= at_least, f"only {made} (mode, last logged step) before the run finished"
  trainer_runs.run_command(command, devices=4)
  rows = trainer_runs.rows(workdir)
  train = [r["step"] for r in rows if "loss" in r and "eval_loss" not in r]
  evals = [r["step"] for r in rows if "eval_loss" in r]
  assert train == list(range(1, 9)) and evals == [4, 8], (train, evals, made)  # each step once
  assert trainer_runs.losses(workdir) == trainer_runs.losses(reference), made  # bit-identical


def test_sigkills_mid_step_and_mid_save_resume_bit_identically(reference, tmp_path, data_dir):
  """Fault injection: a kill during an async checkpoint save, then one at a random moment; the
  resumed run's losses equal the uninterrupted run's and metrics.jsonl holds each step once.
  (Restarts reuse the reference's compiled step from JAX's persistent compilation cache.)"""
  _kill_and_resume(reference, str(tmp_path / "faults"), data_dir, kills=2, seed=15, at_least=2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_many_random_sigkills_resume_bit_identically(reference, tmp_path, data_dir, seed):
  _kill_and_resume(reference, str(tmp_path / "faults"), data_dir, kills=5, seed=seed, at_least=3)


def _descendants(pid):
  """Pids of every live process below ``pid`` (from /proc; zombies count as gone)."""
  children = {}
  for entry in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{entry}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
      continue
    if fields[0] != "Z":
      children.setdefault(int(fields[1]), []).append(int(entry))
  found, pending = [], [pid]
  while pending:
    for child in children.get(pending.pop(), []):
      found.append(child)
      pending.append(child)
  return found


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


def test_a_sigkilled_trainer_leaves_no_grain_worker(tmp_path, data_dir):
  """With data.worker_count=1, SIGKILL of the trainer ends its Grain worker
  processes within seconds (they watch their parent), instead of orphaning them."""
  process = trainer_runs.start(
      trainer_runs.command(str(tmp_path / "workers"), {"data.worker_count": 1}, data_dir),
      devices=1)
  try:
    assert _wait_until(lambda: _descendants(process.pid), process, 600), "no worker started"
    time.sleep(5)  # the workers have run their init (the parent watch) and are serving batches
    workers = _descendants(process.pid)
    trainer_runs.sigkill(process)
  finally:
    process.kill()
  deadline = time.time() + 20
  while time.time() < deadline and any(_alive(p) for p in workers):
    time.sleep(0.2)
  survivors = [p for p in workers if _alive(p)]
  for pid in survivors:  # leave no orphan behind, even when failing
    os.kill(pid, signal.SIGKILL)
  assert not survivors, "Grain workers outlived the killed trainer"
