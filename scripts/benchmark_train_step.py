"""Speed of the trainer's full train step: tokens/s and MFU against Hugging Face Flax BERT + LAMB.

Measures, in one process and on the same batch (``lamb_optax.models.inputs.random_batch``:
Google's feature layout, 20 masked positions per 128 tokens; dropout on in both, same rates):

* ``ours``: exactly the step the trainer runs, ``Trainer.train_step()`` of
  ``lamb_optax.train.trainer.build`` on ``lamb_optax.train.config.default_config()`` (preset,
  dtype, batch and micro-batches changed): the BERT pretraining task, ``lamb_optax.lamb`` with
  its warmup/decay schedule and weight decay 0.01, a ``{"data": -1}`` mesh, state and batch
  sharded and the state donated. So it includes
  everything a training step pays for: gradient accumulation (``lax.scan`` over micro-batches),
  float32 gradient accumulators, MLM/NSP metric sums, the global gradient norm, the non-finite
  check and the per-layer trust ratios.
* ``huggingface``: ``transformers.FlaxBertForPreTraining`` with the loss of transformers'
  ``run_mlm_flax.py`` (cross-entropy over all positions' logits, masked by label weights) plus
  NSP, and ``optax.lamb`` with the same schedule and weight decay (``run_mlm_flax``'s decay
  mask): ``value_and_grad`` + update in one ``jax.jit`` with params and optimizer state donated.

Timed rounds are interleaved (A B, B A, ...), so drifts in machine load hit both; the report
gives the median tokens/s over rounds and the ratio. MFU = tokens/s x
``lamb_optax.models.bert_config.flops_per_token`` / peak FLOP/s. The peak is ``--peak-tflops`` if
given, else the vendor's figure for a known accelerator (``lamb_optax.train.metrics.peak_flops``,
dense bfloat16), both times the device count; else (CPU, no vendor peak) a *measured matmul
peak*: a jitted 2048 x 2048 ``jnp.dot`` in ``--dtype`` timed as a third peer in every round
(between the steps, so under the same load), the fastest single call taken.

Run it beside transformers 4.57.6 (the last release with the Flax models; see
``benchmark_model.py`` for the separate environment)::

  /tmp/venv-hfflax/bin/python scripts/benchmark_train_step.py --rounds 5 --steps 2
  python scripts/benchmark_train_step.py --micro-batches 4 --batch 32 --no-hf
  /tmp/venv-hfflax/bin/python scripts/benchmark_train_step.py --unrolled-layers  # 3 peers
  python scripts/benchmark_train_step.py --quick --no-hf --json /tmp/out.json
  python scripts/benchmark_train_step.py --no-hf --rounds 1 --profile /tmp/step_profile

``--quick`` is a smoke test (tiny preset, 1 round of 2 steps, seconds). BERT-base on a 2-core CPU
needs several minutes. Imports no input pipeline or checkpointing (grain, orbax, TFDS).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
from typing import Any

import jax
import ml_collections
import optax

from lamb_optax import sharding
from lamb_optax.bench import profiling
from lamb_optax.bench.benchmarking import BestOfRunner
from lamb_optax.bench.benchmarking import PlainSteps
from lamb_optax.bench.benchmarking import Runner
from lamb_optax.bench.benchmarking import add_common_args
from lamb_optax.bench.benchmarking import hf_available
from lamb_optax.bench.benchmarking import hf_decay_mask
from lamb_optax.bench.benchmarking import hf_loss_fn
from lamb_optax.bench.benchmarking import hf_model
from lamb_optax.bench.benchmarking import machine
from lamb_optax.bench.benchmarking import make_batch
from lamb_optax.bench.benchmarking import matmul
from lamb_optax.bench.benchmarking import refuse_existing
from lamb_optax.bench.benchmarking import speed_line
from lamb_optax.bench.benchmarking import step_rates
from lamb_optax.bench.benchmarking import write_json
from lamb_optax.models import bert
from lamb_optax.train import config as config_lib
from lamb_optax.train import metrics as metrics_lib
from lamb_optax.train import plan as plan_lib
from lamb_optax.train import trainer as trainer_lib

MODE = "train step"
UNROLLED = "ours (unrolled layers)"
MATMUL, MATMUL_SIZE, MATMUL_REPEATS = "matmul", 2048, 5


def trainer_config(args: argparse.Namespace, data_parallel: int,
                   scan_layers: bool = True) -> ml_collections.ConfigDict:
  """The trainer's default config with this benchmark's model, batch and micro-batches."""
  config = config_lib.default_config()
  config.model.preset = args.preset
  config.model.dtype = args.dtype
  config.model.overrides.vocab_size = bert.BertConfig.preset(args.preset).vocab_size
  config.model.overrides.scan_layers = scan_layers
  config.data.max_seq_length = args.max_seq_length
  config.global_batch_size = args.batch_size
  config.micro_batch_size = max(1, args.batch_size // (args.micro_batches * data_parallel))
  return config


class TrainerStep:
  """The trainer's own jitted train step (``Trainer.train_step``) on a fixed batch."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.trainer = trainer_lib.build(config, workdir=None)  # no data: a fixed random batch
    self.task, self.learning_rate = self.trainer.task, self.trainer.learning_rate
    self.state = self.trainer.fresh_state()
    self._step = self.trainer.train_step()
    self.batch: Any = None

  def set_batch(self, batch: dict[str, jax.Array]) -> None:
    self.batch = jax.device_put(batch, self.trainer.batch_sharding)

  def train(self) -> Any:
    with jax.set_mesh(self.trainer.mesh):
      self.state, metrics = self._step(self.state, self.batch)
    return metrics["loss"]

  def profile(self, trace_dir: str, steps: int = 2) -> list[profiling.Cost]:
    """Traces ``steps`` steps and attributes their kernel time (``lamb_optax.bench.profiling``)."""
    with jax.set_mesh(self.trainer.mesh):
      hlo = self._step.lower(self.state, self.batch).compile().as_text()
    with open(os.path.join(trace_dir, "train_step.hlo.txt"), "x") as f:
      f.write(hlo)
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(steps):
        jax.block_until_ready(self.train())
    return profiling.attribute(profiling.instructions(hlo), profiling.kernel_seconds(trace_dir),
                               steps)


def huggingface(config: bert.BertConfig, learning_rate: optax.Schedule, weight_decay: float,
                batch: dict[str, jax.Array]) -> PlainSteps:
  """FlaxBertForPreTraining + run_mlm_flax loss + NSP, with ``optax.lamb`` (same schedule)."""
  model = hf_model(config, seed=0)
  tx = optax.lamb(learning_rate, eps=1e-6, weight_decay=weight_decay, mask=hf_decay_mask)
  return PlainSteps(hf_loss_fn(model, config.vocab_size), tx, model.params, batch)


def given_peak(args: argparse.Namespace) -> tuple[float, str]:
  """(peak FLOP/s of all devices, its source) from ``--peak-tflops`` or the vendor; 0 if neither.

  Both are per device and multiplied by the device count, as the trainer's MFU column does.
  """
  devices = jax.device_count()
  if args.peak_tflops:
    return args.peak_tflops * 1e12 * devices, f"given (--peak-tflops) x {devices} device(s)"
  vendor = metrics_lib.peak_flops(jax.devices()[0])
  return vendor * devices, (f"vendor dense bfloat16 peak (lamb_optax.train.metrics.peak_flops) "
                            f"x {devices} device(s)")


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_common_args(parser, "tiny preset, 1 round of 2 steps: a smoke test (seconds)")
  parser.add_argument("--micro-batches", type=int, default=1,
                      help="gradient-accumulation micro-batches per step (ours only)")
  parser.add_argument("--unrolled-layers", action="store_true",
                      help="also time our step with the layers unrolled (model.scan_layers=False)"
                      " as a third peer in the same rounds")
  parser.add_argument("--profile", metavar="DIR",
                      help="after timing, trace 2 of our steps into DIR (perfetto + optimized "
                      "HLO) and print where their kernel time goes")
  args = parser.parse_args()
  refuse_existing(args.output)
  if args.profile and any(os.path.lexists(os.path.join(args.profile, name))
                          for name in ("train_step.hlo.txt", "plugins")):
    raise SystemExit(f"--profile {args.profile} already holds a profile, which is kept; pass a "
                     "new directory.")
  if args.quick:
    args.preset, args.rounds, args.steps = "tiny", 1, 2
  return args


def report_lines(report: dict[str, Any]) -> list[str]:
  speeds, flops = report["tokens_per_s"], report["flops_per_token"]
  lines = [speed_line(MODE, speeds, flops, report["peak_flops"])]
  if UNROLLED in speeds:
    lines.append(f"  unrolled / scanned layers = {speeds[UNROLLED] / speeds['ours']:.2f}x" + (
        f"; unrolled / HF = {report['unrolled_ratio_vs_hf']:.2f}x"
        if "unrolled_ratio_vs_hf" in report else ""))
  lines.append(f"  peak {report['peak_flops'] / 1e12:.3f} TFLOP/s: {report['peak_source']}; "
               f"{flops / 1e6:.0f} MFLOP per token (lamb_optax.models.bert_config.flops_per_token)")
  return lines


def main() -> None:
  args = parse_args()
  hf = not args.no_hf and hf_available()
  mesh = sharding.make_mesh({"data": -1})
  data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
  config = trainer_config(args, data_parallel)
  plan = plan_lib.check(config, mesh.devices.size, jax.process_count())
  if plan.num_micro_batches != args.micro_batches:
    raise SystemExit(f"--batch {args.batch_size} does not split into {args.micro_batches} "
                     f"micro-batches on {data_parallel} device(s): use a multiple of "
                     f"{args.micro_batches * data_parallel}.")
  ours = TrainerStep(config)
  bert_config = ours.task.bert_config
  batch = make_batch(bert_config, args.batch_size, args.max_seq_length)
  ours.set_batch(batch)
  print(f"machine: {machine()}")
  print(f"BERT-{args.preset}, batch {args.batch_size} (= {plan.data_parallel_devices} device(s) x "
        f"{plan.micro_batch_size} x {plan.num_micro_batches} micro-batch(es)) x seq "
        f"{args.max_seq_length}, dtype {args.dtype}, {args.rounds} interleaved rounds of "
        f"{args.steps} steps")

  runners = [Runner("ours", {MODE: ours.train})]
  if args.unrolled_layers:
    unrolled = TrainerStep(trainer_config(args, data_parallel, scan_layers=False))
    unrolled.set_batch(batch)
    runners.append(Runner(UNROLLED, {MODE: unrolled.train}))
  if hf:
    peer = huggingface(bert_config, ours.learning_rate, config.optimizer.kwargs.weight_decay, batch)
    runners.append(Runner("huggingface", {MODE: peer.train}))
  for r in runners:
    print(f"  first call (compile + 1 step) {r.name}: {r.compile_s[MODE]:.1f}s")
  peak_flops, peak_source = given_peak(args)
  if not peak_flops:  # CPU: time a matmul in every round, beside the steps, under the same load
    dot, dot_flops = matmul(MATMUL_SIZE, args.dtype)
    runners.append(BestOfRunner(MATMUL, {MODE: dot}, repeats=MATMUL_REPEATS))
  rates = step_rates(runners, [MODE], args.rounds, args.steps)[MODE]
  if not peak_flops:
    peak_flops = dot_flops * max(rates.pop(MATMUL))
    peak_source = (f"measured matmul peak: fastest of {args.rounds * args.steps * MATMUL_REPEATS} "
                   f"{MATMUL_SIZE}x{MATMUL_SIZE} {args.dtype} jnp.dot, timed in every round "
                   "between the steps")
  speeds = {name: args.batch_size * args.max_seq_length * statistics.median(r)
            for name, r in rates.items()}
  flops = bert.flops_per_token(bert_config, args.max_seq_length)
  report: dict[str, Any] = dict(
      machine=machine(), preset=args.preset, batch=args.batch_size,
      max_seq_length=args.max_seq_length, micro_batches=plan.num_micro_batches, dtype=args.dtype,
      rounds=args.rounds, steps=args.steps, tokens_per_s=speeds, flops_per_token=flops,
      peak_flops=peak_flops, peak_source=peak_source, mfu=speeds["ours"] * flops / peak_flops,
      compile_s={r.name: r.compile_s[MODE] for r in runners if r.name != MATMUL})
  if hf:
    report["ratio_vs_hf"] = speeds["ours"] / speeds["huggingface"]
    if UNROLLED in speeds:
      report["unrolled_ratio_vs_hf"] = speeds[UNROLLED] / speeds["huggingface"]
  if args.profile:
    os.makedirs(args.profile, exist_ok=True)
    costs = ours.profile(args.profile)
    report["profile"] = [dataclasses.asdict(c) for c in costs]
    print(f"\nwhere our step's kernel time goes (trace and HLO in {args.profile}):")
    print(profiling.markdown(costs))
  print("\n".join(report_lines(report)))
  if args.output:
    write_json(args.output, report)


if __name__ == "__main__":
  main()
