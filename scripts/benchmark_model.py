"""Speed of the BERT model: training tokens/s against Hugging Face Flax BERT, and compile time.

Measures, in one process and on the same batch (Google's feature layout, 20 masked positions per
128 tokens, dropout on):

1. ``fwd+bwd``: loss and gradients (``jax.value_and_grad``) of
   ``lamb_optax.models.bert.BertForPreTraining.pretraining_loss`` against
   ``transformers.FlaxBertForPreTraining`` with the loss of Hugging Face's ``run_mlm_flax.py``
   (cross-entropy over all positions' logits, masked by label weights) plus NSP;
2. ``train step``: the same plus the optimizer update: ``lamb_optax.lamb`` (per-layer trust
   ratios over the scanned layers) for ours, ``optax.lamb`` for Hugging Face's;
3. compile time (lower + compile) of our train step for ``base`` and ``large``: with the layers
   under ``scan`` it should not grow with depth (and Hugging Face's for comparison).

Timed rounds of the two models are interleaved (A B A B ...), so drifts in machine load hit both;
the report gives the median tokens/s over rounds.

transformers 5 removed the Flax models: install the last release that has them, beside this
package, in its own environment if need be::

  python -m venv /tmp/venv-hfflax
  /tmp/venv-hfflax/bin/pip install jax flax optax chex ml-collections 'transformers==4.57.6'
  PYTHONPATH=. /tmp/venv-hfflax/bin/python scripts/benchmark_model.py

The Hugging Face peer, timing and interleaving are shared with ``benchmark_train_step.py`` (the
trainer's full step) in ``lamb_optax/bench/benchmarking.py``. Without transformers (or with
``--no-hf``) only our model is measured. ``--quick`` runs the tiny preset with few steps (a smoke
test, seconds); BERT-base on a 2-core CPU needs several minutes.
"""

from __future__ import annotations

import argparse
from typing import Any

import jax
import optax
from flax import nnx

import lamb_optax
from lamb_optax.bench.benchmarking import PlainSteps
from lamb_optax.bench.benchmarking import Runner
from lamb_optax.bench.benchmarking import add_common_args
from lamb_optax.bench.benchmarking import hf_available
from lamb_optax.bench.benchmarking import hf_loss_fn
from lamb_optax.bench.benchmarking import hf_model
from lamb_optax.bench.benchmarking import machine
from lamb_optax.bench.benchmarking import make_batch
from lamb_optax.bench.benchmarking import make_steps
from lamb_optax.bench.benchmarking import refuse_existing
from lamb_optax.bench.benchmarking import speed_line
from lamb_optax.bench.benchmarking import throughput
from lamb_optax.bench.benchmarking import timed
from lamb_optax.bench.benchmarking import write_json
from lamb_optax.models import bert

MODES = {"fwd+bwd": PlainSteps.grad, "train step": PlainSteps.train}


def our_loss_fn(graphdef):
  def loss_fn(params, batch, key):
    return nnx.merge(graphdef, params).pretraining_loss(batch, dropout_rng=key)[0]

  return loss_fn


def ours(config: bert.BertConfig, batch) -> PlainSteps:
  """lamb_optax's BERT with ``lamb_optax.lamb`` (per-layer trust ratios over the scan)."""
  model = bert.BertForPreTraining(config, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  tx = lamb_optax.lamb(1e-4, stacked_axes=bert.stacked_axes)
  return PlainSteps(our_loss_fn(graphdef), tx, params, batch)


def huggingface(config: bert.BertConfig, batch) -> PlainSteps:
  """transformers.FlaxBertForPreTraining with ``optax.lamb``."""
  model = hf_model(config, seed=0)
  return PlainSteps(hf_loss_fn(model, config.vocab_size), optax.lamb(1e-4), model.params, batch)


def runner(name: str, steps: PlainSteps, modes) -> Runner:
  return Runner(name, {mode: (lambda m=MODES[mode]: m(steps)) for mode in modes})


def compile_seconds(config: bert.BertConfig, batch, hf: bool) -> dict[str, float]:
  """Lower + compile time of the train step, from abstract shapes (nothing is allocated)."""
  abstract = nnx.eval_shape(lambda: bert.BertForPreTraining(config, rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(abstract, nnx.Param)
  peers = [("ours", our_loss_fn(graphdef), lamb_optax.lamb(1e-4, stacked_axes=bert.stacked_axes),
            params)]
  key = jax.random.key(0)
  if hf:
    model = hf_model(config, _do_init=False)
    shape = batch["input_ids"].shape
    hf_params = jax.eval_shape(lambda k: model.init_weights(k, shape), key)
    peers.append(("huggingface", hf_loss_fn(model, config.vocab_size), optax.lamb(1e-4),
                  hf_params))
  result = {}
  for name, loss_fn, tx, peer_params in peers:
    _, train_step = make_steps(loss_fn, tx)
    opt_state = jax.eval_shape(tx.init, peer_params)
    result[name] = timed(
        lambda step=train_step, params=peer_params, state=opt_state:
        jax.jit(step).lower(params, state, batch, key).compile() and 0)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_common_args(parser, "tiny preset, 1 round of 2 steps, compile time of tiny vs mini")
  parser.add_argument("--modes", default=",".join(MODES))
  parser.add_argument("--compile-presets", default="base,large",
                      help="presets whose compile time to measure; empty to skip")
  args = parser.parse_args()
  refuse_existing(args.output)
  if args.quick:
    args.preset, args.rounds, args.steps, args.compile_presets = "tiny", 1, 2, "tiny,mini"

  hf = not args.no_hf and hf_available()
  config = bert.BertConfig.preset(args.preset, dtype=args.dtype)
  batch = make_batch(config, args.batch_size, args.max_seq_length)
  tokens = args.batch_size * args.max_seq_length
  print(f"machine: {machine()}")
  print(f"BERT-{args.preset}, batch {args.batch_size} x seq {args.max_seq_length}, "
        f"dtype {args.dtype}, {args.rounds} interleaved rounds of {args.steps} steps")

  modes = [m.strip() for m in args.modes.split(",") if m.strip()]
  runners = [runner("ours", ours(config, batch), modes)]
  if hf:
    runners.append(runner("huggingface", huggingface(config, batch), modes))
  for r in runners:
    print(f"  first call (compile + 1 step) {r.name}: " +
          ", ".join(f"{m} {s:.1f}s" for m, s in r.compile_s.items()))
  speeds = throughput(runners, modes, args.rounds, args.steps, tokens)
  flops = bert.flops_per_token(config, args.max_seq_length)
  peak = args.peak_tflops * 1e12 if args.peak_tflops else None
  report: dict[str, Any] = dict(machine=machine(), preset=args.preset, batch=args.batch_size,
                                max_seq_length=args.max_seq_length, dtype=args.dtype,
                                tokens_per_s=speeds, flops_per_token=flops)
  for mode, by_name in speeds.items():
    print(speed_line(mode, by_name, flops, peak))

  compile_presets = [p for p in args.compile_presets.split(",") if p]
  if compile_presets:
    report["compile_s"] = {}
    for preset in compile_presets:
      seconds = compile_seconds(bert.BertConfig.preset(preset, dtype=args.dtype), batch, hf)
      report["compile_s"][preset] = seconds
      print(f"compile train step, {preset}: " +
            ", ".join(f"{n} {s:.1f}s" for n, s in seconds.items()))
  if args.output:
    write_json(args.output, report)


if __name__ == "__main__":
  main()
