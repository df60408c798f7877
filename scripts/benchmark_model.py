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

Without transformers (or with ``--no-hf``) only our model is measured. ``--quick`` runs the tiny
preset with few steps (a smoke test, seconds); BERT-base on a 2-core CPU needs several minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import lamb_optax
from lamb_optax.models import bert


def machine() -> str:
  cpu = platform.processor() or "unknown CPU"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  device = jax.devices()[0]
  return (f"{device.platform}: {device.device_kind} x{jax.device_count()}; host {cpu}, "
          f"{os.cpu_count()} cores; jax {jax.__version__}")


# ----------------------------------------------------------------------------- our model


def ours(config: bert.BertConfig):
  """(params, grad_step, train_step, opt_state) for lamb_optax's BERT."""
  model = bert.BertForPreTraining(config, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  tx = lamb_optax.lamb(1e-4, stacked_axes=bert.stacked_axes)
  grad_step, train_step = our_steps(graphdef, tx)
  return params, grad_step, train_step, tx.init(params)


def our_steps(graphdef, tx):
  def loss_fn(params, batch, key):
    return nnx.merge(graphdef, params).pretraining_loss(batch, dropout_rng=key)[0]

  return make_steps(loss_fn, tx)


def make_steps(loss_fn, tx):
  """(grad_step, train_step) for a loss ``loss_fn(params, batch, key)``: the same for both peers."""
  def grad_step(params, batch, key):
    return jax.value_and_grad(loss_fn)(params, batch, key)

  def train_step(params, opt_state, batch, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return grad_step, train_step


# ----------------------------------------------------------------------------- Hugging Face


def hf_config(config: bert.BertConfig):
  import transformers

  return transformers.BertConfig(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size,
      num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
      intermediate_size=config.intermediate_size,
      max_position_embeddings=config.max_position_embeddings,
      hidden_dropout_prob=config.hidden_dropout,
      attention_probs_dropout_prob=config.attention_dropout,
  )


def hf_loss_fn(model, vocab_size: int):
  """The loss of transformers' examples/flax/language-modeling/run_mlm_flax.py, plus NSP."""

  def loss_fn(params, batch, key):
    out = model(
        batch["input_ids"], attention_mask=batch["input_mask"],
        token_type_ids=batch["segment_ids"], params=params, dropout_rng=key, train=True,
    )
    batch_index = jnp.arange(batch["input_ids"].shape[0])[:, None]
    labels = jnp.zeros_like(batch["input_ids"]).at[
        batch_index, batch["masked_lm_positions"]].set(batch["masked_lm_ids"])
    label_mask = jnp.zeros(batch["input_ids"].shape, jnp.float32).at[
        batch_index, batch["masked_lm_positions"]].set(batch["masked_lm_weights"])
    mlm = optax.softmax_cross_entropy(
        out.prediction_logits, jax.nn.one_hot(labels, vocab_size)) * label_mask
    nsp = optax.softmax_cross_entropy_with_integer_labels(
        out.seq_relationship_logits, batch["next_sentence_labels"].reshape(-1))
    return mlm.sum() / label_mask.sum() + nsp.mean()

  return loss_fn


def huggingface(config: bert.BertConfig):
  """(params, grad_step, train_step, opt_state) for transformers.FlaxBertForPreTraining."""
  from transformers import FlaxBertForPreTraining

  model = FlaxBertForPreTraining(hf_config(config), seed=0, dtype=jnp.dtype(config.dtype))
  tx = optax.lamb(1e-4)
  grad_step, train_step = hf_steps(model, tx, config.vocab_size)
  return model.params, grad_step, train_step, tx.init(model.params)


def hf_steps(model, tx, vocab_size):
  return make_steps(hf_loss_fn(model, vocab_size), tx)


# ----------------------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


class Runner:
  """Holds one model's jitted steps and state; ``run(mode, steps)`` returns seconds."""

  def __init__(self, name, build, config, batch):
    self.name = name
    params, grad_step, train_step, opt_state = build(config)
    self.params, self.opt_state, self.batch = params, opt_state, batch
    self.grad_step = jax.jit(grad_step)
    self.train_step = jax.jit(train_step, donate_argnums=(0, 1))
    self.key = jax.random.key(0)
    self.compile_s = {"fwd+bwd": timed(lambda: self.step("fwd+bwd")),
                      "train step": timed(lambda: self.step("train step"))}

  def step(self, mode):
    self.key, key = jax.random.split(self.key)
    if mode == "fwd+bwd":
      return self.grad_step(self.params, self.batch, key)
    self.params, self.opt_state, loss = self.train_step(
        self.params, self.opt_state, self.batch, key)
    return loss

  def run(self, mode, steps):
    def many():
      out = None
      for _ in range(steps):
        out = self.step(mode)
      return out

    return timed(many)


def throughput(runners, modes, rounds, steps, tokens_per_step) -> dict:
  results = {mode: {r.name: [] for r in runners} for mode in modes}
  for round_index in range(rounds):
    for mode in modes:
      for runner in runners if round_index % 2 == 0 else runners[::-1]:
        seconds = runner.run(mode, steps)
        results[mode][runner.name].append(tokens_per_step * steps / seconds)
  return {mode: {name: statistics.median(v) for name, v in by_name.items()}
          for mode, by_name in results.items()}


def compile_seconds(config, batch, hf: bool) -> dict[str, float]:
  """Lower + compile time of the train step, from abstract shapes (nothing is allocated)."""
  abstract = nnx.eval_shape(lambda: bert.BertForPreTraining(config, rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(abstract, nnx.Param)
  tx = lamb_optax.lamb(1e-4, stacked_axes=bert.stacked_axes)
  _, train_step = our_steps(graphdef, tx)
  opt_state = jax.eval_shape(tx.init, params)
  key = jax.random.key(0)
  result = {"ours": timed(lambda: jax.jit(train_step).lower(params, opt_state, batch, key)
                          .compile() and 0)}
  if hf:
    from transformers import FlaxBertForPreTraining

    model = FlaxBertForPreTraining(hf_config(config), _do_init=False)
    shape = batch["input_ids"].shape
    hf_params = jax.eval_shape(lambda k: model.init_weights(k, shape), key)
    hf_tx = optax.lamb(1e-4)
    _, hf_train = hf_steps(model, hf_tx, config.vocab_size)
    hf_state = jax.eval_shape(hf_tx.init, hf_params)
    result["huggingface"] = timed(lambda: jax.jit(hf_train).lower(
        hf_params, hf_state, batch, key).compile() and 0)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", default="base")
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--seq-len", type=int, default=128)
  parser.add_argument("--dtype", default="float32", help="compute dtype, e.g. bfloat16 on GPU/TPU")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
  parser.add_argument("--modes", default="fwd+bwd,train step")
  parser.add_argument("--compile-presets", default="base,large",
                      help="presets whose compile time to measure; empty to skip")
  parser.add_argument("--no-hf", action="store_true", help="measure only lamb_optax's BERT")
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="the device's peak TFLOP/s in --dtype, to report MFU")
  parser.add_argument("--quick", action="store_true",
                      help="tiny preset, 1 round of 2 steps, compile time of tiny vs mini")
  parser.add_argument("--output", default=None, help="also write the results as JSON here")
  args = parser.parse_args()
  if args.quick:
    args.preset, args.rounds, args.steps, args.compile_presets = "tiny", 1, 2, "tiny,mini"

  hf = not args.no_hf
  if hf:
    try:
      from transformers import FlaxBertForPreTraining  # noqa: F401
    except ImportError:
      print("transformers with Flax (<= 4.57.6) not found: measuring only lamb_optax's BERT.")
      hf = False

  config = bert.BertConfig.preset(args.preset, dtype=args.dtype)
  batch = bert.random_batch(config, args.batch_size, args.seq_len, seed=0)
  bert.validate_batch(batch, config)
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  tokens = args.batch_size * args.seq_len
  print(f"machine: {machine()}")
  print(f"BERT-{args.preset}, batch {args.batch_size} x seq {args.seq_len}, dtype {args.dtype}, "
        f"{args.rounds} interleaved rounds of {args.steps} steps")

  runners = [Runner("ours", ours, config, batch)]
  if hf:
    runners.append(Runner("huggingface", huggingface, config, batch))
  for r in runners:
    print(f"  first call (compile + 1 step) {r.name}: " +
          ", ".join(f"{m} {s:.1f}s" for m, s in r.compile_s.items()))
  modes = [m.strip() for m in args.modes.split(",") if m.strip()]
  speeds = throughput(runners, modes, args.rounds, args.steps, tokens)
  flops = bert.flops_per_token(config, args.seq_len)
  report: dict[str, Any] = dict(machine=machine(), preset=args.preset, batch=args.batch_size,
                                seq_len=args.seq_len, dtype=args.dtype, tokens_per_s=speeds,
                                flops_per_token=flops)
  for mode, by_name in speeds.items():
    line = f"{mode:>10}: " + ", ".join(f"{n} {v:,.0f} tokens/s" for n, v in by_name.items())
    if "huggingface" in by_name:
      line += f"  (ours / HF = {by_name['ours'] / by_name['huggingface']:.2f}x)"
    line += f"  [ours {by_name['ours'] * flops / 1e12:.3f} TFLOP/s"
    if args.peak_tflops:
      line += f", MFU {by_name['ours'] * flops / 1e12 / args.peak_tflops:.1%}"
    print(line + "]")

  compile_presets = [p for p in args.compile_presets.split(",") if p]
  if compile_presets:
    report["compile_s"] = {}
    for preset in compile_presets:
      seconds = compile_seconds(bert.BertConfig.preset(preset, dtype=args.dtype), batch, hf)
      report["compile_s"][preset] = seconds
      print(f"compile train step, {preset}: " +
            ", ".join(f"{n} {s:.1f}s" for n, s in seconds.items()))
  if args.output:
    with open(args.output, "w") as f:
      json.dump(report, f, indent=2)


if __name__ == "__main__":
  main()
