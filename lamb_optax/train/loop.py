"""The training loop: build everything from the config, restore, step, log, evaluate, save.

Everything heavy lives elsewhere (the step in ``step.py``, the model adapter in ``bert_task.py``,
input in ``input.py``, checkpoints in ``checkpoint.py``); this file only wires them in order.
"""

from __future__ import annotations

import logging
import resource
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections

from lamb_optax.train import recipes
from lamb_optax.train import bert_task
from lamb_optax.train import checkpoint as checkpoint_lib
from lamb_optax.train import config as config_lib
from lamb_optax.train import input as input_lib
from lamb_optax.train import metrics as metrics_lib
from lamb_optax.train import pretrained
from lamb_optax import sharding
from lamb_optax.train import step as step_lib


class NonFiniteLossError(RuntimeError):
  """Too many consecutive updates had a non-finite loss or gradient."""


def summarise(sums: dict[str, Any]) -> dict[str, float]:
  """Turns summed metrics into the rates users read (mean losses, accuracies)."""
  s = {k: float(v) for k, v in sums.items()}
  out = {}
  if s.get("mlm_weight"):
    out["mlm_loss"] = s["mlm_loss_sum"] / s["mlm_weight"]
    out["mlm_accuracy"] = s["mlm_correct"] / s["mlm_weight"]
  if s.get("nsp_count"):
    out["nsp_loss"] = s["nsp_loss_sum"] / s["nsp_count"]
    out["nsp_accuracy"] = s["nsp_correct"] / s["nsp_count"]
  return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (or resumes) the run in ``workdir``; returns the final eval metrics.

  Every check that can fail on the user's input (config keys, batch/mesh arithmetic, schedule,
  data shape, checkpoint shape) runs before the first compile.
  """
  config = config_lib.lock(config)
  config_lib.check_schedule(config)
  tx, learning_rate = recipes.build_optimizer(config, bert_task.stacked_axes)
  mesh = sharding.make_mesh(dict(config.mesh))
  data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
  plan = config_lib.plan_batches(config, data_parallel, jax.process_count())
  is_primary = jax.process_index() == 0

  datasets = input_lib.prepare(config, workdir)
  task = bert_task.build(config, mesh, datasets.vocab_size)
  batch_sharding = sharding.batch_sharding(mesh, rank=1)
  train_iter = input_lib.train_iterator(datasets, config, plan)
  eval_set = input_lib.eval_batches(datasets, config, plan)

  with jax.set_mesh(mesh):
    state_shardings = task.state_shardings(tx)
    abstract_state = jax.eval_shape(
        lambda p: step_lib.create_train_state(p, tx, config.seed), task.abstract_params())
    abstract_state = checkpoint_lib.abstract_target(abstract_state, state_shardings)
    checkpointer = checkpoint_lib.Checkpointer(
        workdir, max_to_keep=config.keep_checkpoints, async_save=config.async_checkpointing)
    try:
      if checkpointer.latest_step() is not None:
        start_step, state = checkpointer.restore(abstract_state, train_iter)
        logging.info("Resumed from step %d in %s", start_step, checkpointer.directory)
      else:
        start_step, state = 0, _fresh_state(task, tx, config, state_shardings,
                                            abstract_state.params)
      if is_primary:  # only now: a refused workdir keeps the config.json of its own run
        pretrained.save_config(config, workdir)
      eval_metrics = _train(config, plan, task, tx, learning_rate, state, state_shardings,
                            batch_sharding, train_iter, eval_set, checkpointer, workdir,
                            start_step, is_primary)
    finally:
      checkpointer.close()
  if is_primary and eval_metrics:
    print("Final: " + _format(eval_metrics), flush=True)
  return eval_metrics


def _fresh_state(task, tx, config, state_shardings, abstract_params):
  params = (checkpoint_lib.restore_params(config.init_from, abstract_params)
            if config.init_from else task.init_params())
  return jax.jit(lambda p: step_lib.create_train_state(p, tx, config.seed),
                 out_shardings=state_shardings)(params)


def _train(config, plan, task, tx, learning_rate, state, state_shardings, batch_sharding,
           train_iter, eval_set, checkpointer, workdir, start_step, is_primary):
  constraint = lambda b: jax.lax.with_sharding_constraint(b, batch_sharding)
  train_step = jax.jit(
      step_lib.make_train_step(task.objective, task.normalizers, tx, plan.num_micro_batches,
                               micro_batch_constraint=constraint),
      in_shardings=(state_shardings, batch_sharding), out_shardings=(state_shardings, None),
      donate_argnums=(0,))
  eval_step = jax.jit(task.eval_sums, in_shardings=(state_shardings.params, batch_sharding))
  writer = metrics_lib.MetricsWriter(workdir, total_steps=config.num_train_steps,
                                     initial_step=start_step, enabled=is_primary)
  mesh = task.mesh
  writer.print(
      f"Training {task.describe()} with {config.optimizer.name} on {mesh.devices.size} device(s) "
      f"in {jax.process_count()} process(es), mesh {dict(mesh.shape)}: global batch "
      f"{plan.global_batch_size} = {plan.data_parallel_devices} x {plan.micro_batch_size} x "
      f"{plan.num_micro_batches} micro-batch(es); steps {start_step} -> {config.num_train_steps}.")
  tokens_per_step = plan.global_batch_size * config.data.max_seq_length
  peak = config.peak_flops_per_device or metrics_lib.peak_flops(jax.devices()[0])
  flops_per_token = task.flops_per_token(config.data.max_seq_length)
  throughput = metrics_lib.Throughput(tokens_per_step)
  eval_metrics: dict[str, float] = {}
  step, compiled, started = start_step, None, time.perf_counter()
  previous_count = None
  try:
    while step < config.num_train_steps:
      batch = input_lib.to_global(next(train_iter), batch_sharding)
      if compiled is None:
        compiled = _compile(train_step, state, batch, writer)
      state, metrics = compiled(state, batch)
      step += 1
      writer.advance()
      if step == start_step + 1:  # the rate excludes the first step's compile
        jax.block_until_ready(metrics)
        throughput.start(step)
      # Read the previous step's count, not this one's: the host then waits only for a step
      # that is (nearly) done, and this step stays in flight while the next batch is loaded.
      _stop_if_diverging(previous_count, step - 1, config)
      previous_count = metrics["nonfinite_in_a_row"]
      if step % config.log_every_steps == 0 or step == config.num_train_steps:
        rate = throughput.rate(step)
        metrics = metrics_lib.to_host(metrics)
        row = {"loss": float(metrics["loss"]), **summarise(_sums(metrics)),
               "learning_rate": float(learning_rate(step - 1)),
               "grad_norm": float(metrics["grad_norm"]),
               "updates_skipped": int(metrics["update_skipped"])}
        if rate:
          row["tokens_per_second"] = rate
          if peak:
            row["mfu"] = rate * flops_per_token / (peak * jax.device_count())
        row.update(task.optimizer_summary(state))
        writer.write(step, row)
      if eval_set and (step % config.eval_every_steps == 0 or step == config.num_train_steps):
        eval_metrics = evaluate(eval_step, state.params, eval_set, batch_sharding)
        writer.write(step, eval_metrics, prefix="eval_")
        writer.print(f"step {step}: {_format(eval_metrics)}")
      preempted = checkpointer.reached_preemption(step)
      if (step % config.checkpoint_every_steps == 0 or step == config.num_train_steps
          or preempted):
        checkpointer.save(step, state, train_iter, force=preempted)
      if preempted:
        writer.print(f"Preempted at step {step}: checkpoint saved; run the same command to "
                     "resume.")
        break
    _stop_if_diverging(previous_count, step, config)
    writer.print(f"Done: steps {start_step} -> {step} in {time.perf_counter() - started:.1f} s; "
                 f"peak host memory {_peak_rss_mib():.0f} MiB.")
  finally:
    writer.close()
  return eval_metrics


def _compile(train_step, state, batch, writer):
  """Compiles the step ahead of time, to report its compile time and device memory."""
  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
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


def _sums(metrics: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in metrics.items()
          if k not in ("loss", "grad_norm", "update_skipped", "nonfinite_in_a_row")}


def _stop_if_diverging(count: Optional[jax.Array], step: int,
                       config: ml_collections.ConfigDict) -> None:
  if count is not None and int(metrics_lib.to_host(count)) >= config.max_nonfinite_steps:
    raise NonFiniteLossError(
        f"{config.max_nonfinite_steps} updates in a row had a non-finite loss or gradient (last "
        f"at step {step}); the params are those of the last finite step and the last checkpoint "
        "is intact. Lower the learning rate or check the data.")


def _format(metrics: dict[str, float]) -> str:
  return ", ".join(f"eval_{k} {v:.4f}" for k, v in metrics.items())


def evaluate(eval_step: Callable, params: Any, eval_set: list, batch_sharding) -> dict[str, float]:
  """Mean MLM/NSP loss and accuracy over the held-out batches (no dropout, stored masks)."""
  totals: Optional[dict[str, Any]] = None
  for local_batch in eval_set:
    sums = eval_step(params, input_lib.to_global(local_batch, batch_sharding))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    return {}
  out = summarise(metrics_lib.to_host(totals))
  out["loss"] = out.get("mlm_loss", 0.0) + out.get("nsp_loss", 0.0)
  return out
