"""Speed of the input pipeline against what a train step consumes, in examples/s.

Measures, in one process, on the embedded Python-docs corpus (built once and cached):

1. the Grain loader (``lamb_optax.data.train_batches``) at seq 128, batch 64: reading from the
   TFDS array_record files, shuffling, re-masking every example (dynamic masking on) and
   batching, with ``worker_count`` 0 (threads in this process) and 2 (worker processes); and,
   for reference, with the stored (static) masks;
2. a train step of BERT ``tiny`` (and, with ``--models tiny,base``, ``base``) with the corpus'
   vocabulary: one jitted ``value_and_grad`` of the pretraining loss plus a ``lamb_optax.lamb``
   update, on a batch of the same shape;

and prints the ratio loader / model: how many times faster the input is than its consumer. The
loader must keep ahead of the model by a margin (target: 5x the tiny model) because in training
both share the same cores.

  PYTHONPATH=. python scripts/benchmark_input.py [--models tiny,base] [--output f.json]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
from flax import nnx

import lamb_optax
from lamb_optax import data
from lamb_optax.bench.benchmarking import PlainSteps
from lamb_optax.bench.benchmarking import machine
from lamb_optax.bench.benchmarking import refuse_existing
from lamb_optax.bench.benchmarking import timed
from lamb_optax.bench.benchmarking import write_json
from lamb_optax.models import bert


def loader_speed(source, prepared, *, batch_size: int, batches: int, worker_count: int,
                 dynamic: bool) -> float:
  """Examples/s of the loader after its first batch (start-up and worker spawn excluded)."""
  tokenizer = data.load_wordpiece(prepared.vocab_file)
  ds = data.train_batches(
      source, batch_size=batch_size, seed=0, shard_index=0, shard_count=1,
      dynamic_masking=prepared.masking if dynamic else None,
      vocab_size=prepared.vocab_size if dynamic else None,
      special=data.special_ids(tokenizer) if dynamic else None, worker_count=worker_count)
  it = iter(ds)
  next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  seconds = time.perf_counter() - start
  if hasattr(it, "close"):
    it.close()
  return batches * batch_size / seconds


def model_speed(preset: str, vocab_size: int, batch_size: int, max_seq_length: int,
                steps: int) -> float:
  """Examples/s of a jitted BERT train step (value_and_grad + lamb_optax.lamb), after compile."""
  config = bert.BertConfig.preset(preset, vocab_size=vocab_size)
  model = bert.BertForPreTraining(config, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)

  def loss_fn(p, batch, key):
    return nnx.merge(graphdef, p).pretraining_loss(batch, dropout_rng=key)[0]

  batch = {k: jax.numpy.asarray(v)
           for k, v in bert.random_batch(config, batch_size, max_seq_length, seed=0).items()}
  steps_ = PlainSteps(loss_fn, lamb_optax.lamb(1e-3, stacked_axes=bert.stacked_axes), params,
                      batch)
  timed(steps_.train)  # compile

  def many():
    out = None
    for _ in range(steps):
      out = steps_.train()
    return out

  return steps * batch_size / timed(many)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(),
                                                         "lamb_optax_data"))
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--batches", type=int, default=60, help="loader batches timed")
  parser.add_argument("--workers", default="0,2")
  parser.add_argument("--models", default="tiny")
  parser.add_argument("--steps", type=int, default=10, help="tiny train steps timed")
  parser.add_argument("--output", default="")
  args = parser.parse_args()
  refuse_existing(args.output)

  start = time.perf_counter()
  prepared = data.prepare_embedded(args.data_dir)  # seq 128, 20 predictions, vocab 8192
  print(f"machine: {machine()}")
  print(f"embedded corpus ready in {time.perf_counter() - start:.1f}s: {prepared.directory}")
  source = data.load_pretraining_dataset(prepared.directory, "train")
  seq = prepared.masking.max_seq_length
  report = {"machine": machine(), "batch": args.batch, "max_seq_length": seq,
            "vocab_size": prepared.vocab_size, "train_examples": len(source), "loader": {},
            "model": {}}
  for workers in (int(w) for w in args.workers.split(",") if w):
    for dynamic in (True, False):
      speed = loader_speed(source, prepared, batch_size=args.batch, batches=args.batches,
                           worker_count=workers, dynamic=dynamic)
      name = f"workers={workers} {'dynamic' if dynamic else 'static'} masks"
      report["loader"][name] = round(speed, 1)
      print(f"loader, {name}: {speed:,.0f} examples/s")
  for preset in (m for m in args.models.split(",") if m):
    steps = args.steps if preset in ("tiny", "mini") else 1
    speed = model_speed(preset, prepared.vocab_size, args.batch, seq, steps)
    report["model"][preset] = round(speed, 2)
    print(f"train step, BERT-{preset} (batch {args.batch} x {seq}, lamb): "
          f"{speed:,.1f} examples/s")
  dynamic = [v for k, v in report["loader"].items() if "dynamic" in k]
  report["ratio"] = {}
  for preset, speed in report["model"].items():
    if dynamic:
      report["ratio"][preset] = round(max(dynamic) / speed, 1)
    for name, loader in report["loader"].items():
      if "dynamic" in name:
        print(f"loader ({name}) / BERT-{preset} train step: {loader / speed:.1f}x")
  if args.output:
    write_json(args.output, report)


if __name__ == "__main__":
  main()
