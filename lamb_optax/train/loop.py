"""The training loop: restore, step, log, evaluate, save. It knows no model.

The run's parts come from :func:`lamb_optax.train.trainer.build` (task, optimizer, mesh,
shardings, jitted steps); the task (``lamb_optax.tasks``) owns the model, its data and its
metrics. This file only wires them in order.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from lamb_optax import sharding
from lamb_optax.train import checkpoint as checkpoint_lib
from lamb_optax.train import distributed
from lamb_optax.train import metrics as metrics_lib
from lamb_optax.train import preemption
from lamb_optax.train import sources
from lamb_optax.train import trainer as trainer_lib
from lamb_optax.train import workdir as workdir_lib
from lamb_optax.train.step import TrainState


class NonFiniteLossError(RuntimeError):
  """Too many consecutive updates had a non-finite loss or gradient."""


@dataclasses.dataclass
class Run:
  """A run in progress: its fixed parts, its data and where it writes."""

  trainer: trainer_lib.Trainer
  train_iter: Iterator[Any]
  eval_set: list
  checkpointer: checkpoint_lib.Checkpointer
  workdir: str
  is_primary: bool
  guard: preemption.Guard = dataclasses.field(default_factory=preemption.Guard)

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.trainer.config

  preempted: preemption.Preempted | None = None  # set when a signal stopped the loop


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (or resumes) the run in ``workdir``; returns the final eval metrics.

  Every check that can fail on the user's input (config keys, batch/mesh arithmetic, schedule,
  data shape, checkpoint shape) runs before the first compile.
  """
  workdir = workdir_lib.expand(workdir)
  if config.init_from:
    config.init_from = workdir_lib.expand(config.init_from)
  with preemption.Guard() as guard:  # SIGTERM/SIGINT: see lamb_optax/train/preemption.py
    try:
      return _build_and_train(config, workdir, guard)
    except workdir_lib.DiskFullError:
      raise
    except Exception as e:  # e.g. while the task prepares its data in the workdir
      if checkpoint_lib.is_disk_full(e):
        raise _disk_full(workdir, "no checkpoint was touched") from None
      raise


def _build_and_train(config: ml_collections.ConfigDict, workdir: str,
                     guard: preemption.Guard) -> dict[str, float]:
  trainer = trainer_lib.build(config, workdir)
  config, plan, task = trainer.config, trainer.plan, trainer.task
  is_primary = jax.process_index() == 0
  train_iter = task.train_iterator(plan.per_process_batch_size)
  eval_set = task.eval_batches(plan.per_process_eval_batch_size, config.eval_batches)
  # One run per workdir (process 0 holds the lock for the run's life): before anything is written.
  lock = workdir_lib.acquire(workdir) if is_primary else None
  try:
    checkpointer = checkpoint_lib.Checkpointer(  # creates <workdir>/checkpoints: after the checks
        workdir, max_to_keep=config.keep_checkpoints, async_save=config.async_checkpointing)
    run = Run(trainer, train_iter, eval_set, checkpointer, workdir, is_primary, guard)
    with jax.set_mesh(trainer.mesh):
      try:
        try:
          eval_metrics = _restore_and_train(run)
        finally:
          checkpointer.close()  # waits for the last save: a preempted run reports it saved
      except Exception as e:
        if checkpoint_lib.is_disk_full(e):
          latest = checkpointer.remove_unfinished()
          raise _disk_full(workdir, "no checkpoint was completed" if latest is None else
                           f"the newest complete checkpoint is step {latest}, and the unfinished "
                           "one was removed") from None
        raise
  finally:
    if lock is not None:
      lock.release()
  if run.preempted is not None:
    _report_preemption(run.preempted, checkpointer.directory, is_primary)
  if is_primary and eval_metrics:
    print("Final: " + _format(eval_metrics), flush=True)
  return eval_metrics


def _disk_full(workdir: str, kept: str) -> workdir_lib.DiskFullError:
  """One line instead of Orbax's and TensorStore's tracebacks."""
  return workdir_lib.DiskFullError(
      f"The disk holding --workdir={workdir} is full (No space left on device): {kept}. Free "
      "space, or move the workdir to a larger disk, then run the same command to resume.")


def _report_preemption(stopped: preemption.Preempted, directory: str, is_primary: bool) -> None:
  """The one line a preempted run prints (process 0), then its exit (every process)."""
  if is_primary:
    saved = (f"checkpoint of step {stopped.saved_step} saved in {directory}"
             if stopped.saved_step == stopped.step else
             f"step {stopped.step} not saved (its updates were non-finite), newest checkpoint "
             f"step {stopped.saved_step}")
    print(f"Stopped by {preemption.name(stopped.signum)} after step {stopped.step}: {saved}; run "
          f"the same command to resume (exit status {stopped.code}).", flush=True)
  raise stopped


def _restore_and_train(run: Run) -> dict[str, float]:
  trainer, checkpointer = run.trainer, run.checkpointer
  resuming = checkpointer.latest_step() is not None
  workdir_lib.check_config_change(run.config, run.workdir, resuming)
  if resuming:
    sources.check(run.config, run.workdir)
    start_step, state = checkpointer.restore(trainer.abstract_state(), run.train_iter)
    logging.info("Resumed from step %d in %s", start_step, checkpointer.directory)
  else:
    if (run.config.init_from and run.is_primary
        and "://" not in run.workdir + run.config.init_from):
      sources.record(trainer.task, run.config, run.workdir)  # before reading: what is read
    start_step, state = 0, trainer.fresh_state()
  if run.is_primary:  # only now: a refused workdir keeps the config.json of its own run
    workdir_lib.save_config(run.config, run.workdir)
  return _train(run, state, start_step)


def _train(run: Run, state: TrainState, start_step: int) -> dict[str, float]:
  trainer, config = run.trainer, run.config
  task, plan = trainer.task, trainer.plan
  train_step, eval_step = trainer.train_step(), trainer.eval_step()
  writer = metrics_lib.MetricsWriter(run.workdir, total_steps=config.num_train_steps,
                                     initial_step=start_step, enabled=run.is_primary)
  writer.print(f"{trainer.describe()}; steps {start_step} -> {config.num_train_steps}.")
  peak = config.peak_flops_per_device or metrics_lib.peak_flops(jax.devices()[0])
  throughput = metrics_lib.Throughput(plan.global_batch_size)
  eval_metrics: dict[str, float] = {}
  step, compiled, started = start_step, None, time.perf_counter()
  previous_count = None
  run.guard.training = True  # from here a signal stops the loop at a step boundary
  try:
    while step < config.num_train_steps:
      batch = sharding.to_global(next(run.train_iter), trainer.batch_sharding)
      if compiled is None:
        compiled = _compile(train_step, state, batch, writer)
      state, metrics = compiled(state, batch)
      step += 1
      writer.advance()
      if step == start_step + 1:  # the rate excludes the first step's compile
        jax.block_until_ready(metrics)
        throughput.start(step)
        writer.start_clock(step)
      # Read the previous step's count, not this one's: the host then waits only for a step
      # that is (nearly) done, and this step stays in flight while the next batch is loaded.
      _stop_if_diverging(previous_count, step - 1, run)
      previous_count = metrics["nonfinite_in_a_row"]
      if step % config.log_every_steps == 0 or step == config.num_train_steps:
        writer.write(step, _train_row(trainer, state, metrics, throughput.rate(step), peak, step))
      if run.eval_set and (step % config.eval_every_steps == 0 or step == config.num_train_steps):
        eval_metrics = evaluate(task, eval_step, state.params, run.eval_set,
                                trainer.batch_sharding)
        writer.write(step, eval_metrics, prefix="eval_")
        writer.print(f"step {step}: {_format(eval_metrics)}")
      stop = run.guard.stop_at(step)
      preempted = stop is not None and step >= stop[0]
      saved = False
      if (step % config.checkpoint_every_steps == 0 or step == config.num_train_steps
          or preempted):
        saved = _save(run, step, state, preempted, writer)
      if preempted and step < config.num_train_steps:
        assert stop is not None
        run.preempted = preemption.Preempted(
            stop[1], step, step if saved else run.checkpointer.latest_step())
        break
    _stop_if_diverging(previous_count, step, run)
    if run.preempted is None:
      writer.print(f"Done: steps {start_step} -> {step} in {time.perf_counter() - started:.1f} s; "
                   f"peak host memory {_peak_rss_mib():.0f} MiB.")
  finally:
    writer.close()
  return eval_metrics


# The step's bookkeeping outputs; every other metric is a sum the task summarises.
_STEP_METRICS = ("loss", "grad_norm", "update_skipped", "nonfinite_in_a_row")


def _train_row(trainer: trainer_lib.Trainer, state: TrainState, metrics: dict[str, Any],
               examples_per_second: float | None, peak: float, step: int) -> dict[str, Any]:
  """One metrics.jsonl row: the task's rates, the step's bookkeeping, throughput, trust ratios."""
  metrics = metrics_lib.to_host(metrics)
  task = trainer.task
  sums = {k: v for k, v in metrics.items() if k not in _STEP_METRICS}
  row = task.summarise(sums)
  row.update(loss=float(metrics["loss"]),  # the objective's value (the step's mean loss)
             learning_rate=float(trainer.learning_rate(step - 1)),
             grad_norm=float(metrics["grad_norm"]), updates_skipped=int(metrics["update_skipped"]))
  if examples_per_second:
    row["examples_per_second"] = examples_per_second
    if task.tokens_per_example():
      row["tokens_per_second"] = examples_per_second * task.tokens_per_example()
    if peak:
      row["mfu"] = examples_per_second * task.flops_per_example() / (peak * jax.device_count())
  metrics_lib.add_useful_rates(row)
  row.update(metrics_lib.trust_ratio_stats(state.opt_state))
  return row


def _compile(train_step, state, batch, writer):
  """Compiles the step ahead of time, to report its compile time and device memory."""
  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  distributed.barrier("train_step_compiled")  # hosts compile at different speeds
  message = f"Compiled the train step in {time.perf_counter() - start:.1f} s"
  memory = compiled.memory_analysis()
  if memory is not None:
    mib = lambda n: n / 2**20
    message += (f"; device memory per device: arguments {mib(memory.argument_size_in_bytes):.1f}"
                f" MiB, temporaries {mib(memory.temp_size_in_bytes):.1f} MiB")
  writer.print(message + ".")
  return compiled


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _save(run: Run, step: int, state: TrainState, preempted: bool, writer) -> bool:
  """Saves, unless the last update was skipped as non-finite: a diverging run must not replace
  its last good checkpoints (they are what a restart with a lower learning rate needs)."""
  skipped = int(metrics_lib.to_host(state.nonfinite_in_a_row))
  if skipped:
    writer.print(f"Not saving step {step}: its last {skipped} update(s) were skipped as "
                 f"non-finite; the newest checkpoint stays step {run.checkpointer.latest_step()}.")
    return False
  run.checkpointer.save(step, state, run.train_iter, force=preempted)
  return True


def _stop_if_diverging(count: jax.Array | None, step: int, run: Run) -> None:
  limit = run.config.max_nonfinite_steps
  if count is not None and int(metrics_lib.to_host(count)) >= limit:
    latest = run.checkpointer.latest_step()
    kept = (f"the newest checkpoint (step {latest}) holds the last finite params" if latest
            is not None else "no checkpoint had been saved yet")
    raise NonFiniteLossError(
        f"{limit} updates in a row had a non-finite loss, gradient or result (last at step "
        f"{step}) and were skipped: no non-finite value reached the params and no checkpoint was "
        f"saved since; {kept}. Lower the learning rate or check the data, then resume.")


def _format(metrics: dict[str, float]) -> str:
  return ", ".join(f"eval_{k} {v:.4f}" for k, v in metrics.items())


def evaluate(task: Any, eval_step: Callable, params: Any, eval_set: list,
             batch_sharding: jax.sharding.Sharding) -> dict[str, float]:
  """The task's summary of the metric sums over the held-out batches (no dropout)."""
  totals: dict[str, Any] | None = None
  for local_batch in eval_set:
    sums = eval_step(params, sharding.to_global(local_batch, batch_sharding))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    return {}
  return task.summarise(metrics_lib.to_host(totals))
