"""Shared parts of the speed benchmarks: the Hugging Face peer, the machine, timing, throughput.

Used by ``scripts/benchmark_model.py`` (model only), ``scripts/benchmark_input.py`` (input
pipeline against a train step) and ``scripts/benchmark_train_step.py`` (the trainer's full
step). The Hugging Face peer is ``transformers.FlaxBertForPreTraining`` with the loss of
transformers' ``examples/flax/language-modeling/run_mlm_flax.py`` plus NSP; it needs
transformers <= 4.57.6 (see benchmark_model.py's docstring for the separate environment).
``transformers`` is imported only by the ``hf_*`` functions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lamb_optax.models import bert
from lamb_optax.train import workdir

PyTree = Any
Batch = Mapping[str, jax.Array]
LossFn = Callable[[PyTree, Batch, jax.Array], jax.Array]

# ----------------------------------------------------------------------------- machine and batch


def machine() -> str:
  """One line naming the accelerator (or CPU), the host CPU and the JAX version."""
  cpu = platform.processor() or "unknown CPU"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  device = jax.devices()[0]
  return (f"{device.platform}: {device.device_kind} x{jax.device_count()}; host {cpu}, "
          f"{os.cpu_count()} cores; jax {jax.__version__}")


def make_batch(config: bert.BertConfig, batch_size: int,
               max_seq_length: int) -> dict[str, jax.Array]:
  """The synthetic pretraining batch both peers train on (Google's layout, on device)."""
  batch = bert.random_batch(config, batch_size, max_seq_length, seed=0)
  bert.validate_batch(batch, config)
  return {k: jnp.asarray(v) for k, v in batch.items()}


def add_common_args(parser: argparse.ArgumentParser, quick_help: str) -> None:
  """The options both benchmarks take (each option also under its older spelling)."""
  parser.add_argument("--preset", default="base")
  parser.add_argument("--batch", "--batch-size", dest="batch_size", type=int, default=8,
                      help="sequences per step")
  parser.add_argument("--seq", "--seq-len", dest="max_seq_length", type=int, default=128)
  parser.add_argument("--dtype", default="float32", help="compute dtype, e.g. bfloat16 on GPU/TPU")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
  parser.add_argument("--no-hf", action="store_true", help="measure only lamb_optax")
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="one device's peak TFLOP/s in --dtype, to report MFU")
  parser.add_argument("--quick", action="store_true", help=quick_help)
  parser.add_argument("--json", "--output", dest="output", default=None,
                      help="also write the results as JSON to this file")


def refuse_existing(path: str | None, what: str = "--output") -> None:
  """Exits, before any timing, when ``path`` exists: a benchmark never replaces a report."""
  problem = path and workdir.new_file_problem(path, what)
  if problem:
    raise SystemExit(problem)


def write_json(path: str, report: Mapping[str, Any]) -> None:
  """Writes ``report`` to a new file at ``path`` (refused earlier by :func:`refuse_existing`)."""
  with open(path, "x") as f:  # "x": never over a file that appeared during the run
    json.dump(report, f, indent=2)


# ----------------------------------------------------------------------------- Hugging Face


def hf_available() -> bool:
  """Whether transformers with the Flax models (<= 4.57.6) is importable; says so if not."""
  try:
    from transformers import FlaxBertForPreTraining  # noqa: F401
  except ImportError:
    print("transformers with Flax (<= 4.57.6) not found: measuring only lamb_optax.")
    return False
  return True


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


def hf_model(config: bert.BertConfig, **kwargs: Any):
  """``transformers.FlaxBertForPreTraining`` shaped as ``config`` (initialised unless told)."""
  from transformers import FlaxBertForPreTraining

  return FlaxBertForPreTraining(hf_config(config), dtype=jnp.dtype(config.dtype), **kwargs)


def hf_loss_fn(model, vocab_size: int) -> LossFn:
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


def hf_decay_mask(params: PyTree) -> PyTree:
  """run_mlm_flax.py's weight-decay mask: every leaf but biases and LayerNorm scales."""
  def decay(path, _) -> bool:
    names = [str(getattr(k, "key", k)) for k in path]
    layer_norm = any(n.lower() in ("layernorm", "layer_norm", "ln") for n in names)
    return names[-1] != "bias" and not (layer_norm and names[-1] == "scale")

  return jax.tree_util.tree_map_with_path(decay, params)


# ----------------------------------------------------------------------------- steps


def make_steps(loss_fn: LossFn, tx: optax.GradientTransformation):
  """(grad_step, train_step) for a loss ``loss_fn(params, batch, key)``: the same for both peers."""
  def grad_step(params, batch, key):
    return jax.value_and_grad(loss_fn)(params, batch, key)

  def train_step(params, opt_state, batch, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return grad_step, train_step


class PlainSteps:
  """Jitted ``grad``/``train`` calls of ``make_steps`` on a fixed batch, advancing their state.

  The train step donates params and optimizer state, as a real training loop does.
  """

  def __init__(self, loss_fn: LossFn, tx: optax.GradientTransformation, params: PyTree,
               batch: Batch):
    grad_step, train_step = make_steps(loss_fn, tx)
    self._grad_step = jax.jit(grad_step)
    self._train_step = jax.jit(train_step, donate_argnums=(0, 1))
    self.params, self.opt_state, self.batch = params, tx.init(params), batch
    self.key = jax.random.key(0)

  def _next_key(self) -> jax.Array:
    self.key, key = jax.random.split(self.key)
    return key

  def grad(self) -> Any:
    return self._grad_step(self.params, self.batch, self._next_key())

  def train(self) -> Any:
    self.params, self.opt_state, loss = self._train_step(
        self.params, self.opt_state, self.batch, self._next_key())
    return loss


# ----------------------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> float:
  """Seconds ``fn()`` takes until its outputs are ready."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


class Runner:
  """One peer's steps by mode (``mode -> step()``); the first call of each (compile) is timed."""

  def __init__(self, name: str, steps: Mapping[str, Callable[[], Any]]):
    self.name = name
    self.steps = dict(steps)
    self.compile_s = {mode: timed(step) for mode, step in self.steps.items()}

  def run(self, mode: str, steps: int) -> float:
    """Seconds for ``steps`` consecutive steps (outputs fetched once, at the end)."""
    step = self.steps[mode]

    def many():
      out = None
      for _ in range(steps):
        out = step()
      return out

    return timed(many)


class BestOfRunner(Runner):
  """A Runner whose ``run`` takes the fastest of ``repeats`` single calls per step: for peaks.

  Averaging over a round would count every time the OS lent the cores to someone else; the
  fastest call is what the hardware can do.
  """

  def __init__(self, name: str, steps: Mapping[str, Callable[[], Any]], repeats: int = 5):
    super().__init__(name, steps)
    self.repeats = repeats

  def run(self, mode: str, steps: int) -> float:
    return steps * min(timed(self.steps[mode]) for _ in range(steps * self.repeats))


def step_rates(runners: Sequence[Runner], modes: Sequence[str], rounds: int,
               steps: int) -> dict[str, dict[str, list[float]]]:
  """Steps/s per mode and runner in each of ``rounds`` interleaved rounds (A B, B A, A B, ...)."""
  results = {mode: {r.name: [] for r in runners} for mode in modes}
  for round_index in range(rounds):
    for mode in modes:
      for runner in runners if round_index % 2 == 0 else runners[::-1]:
        results[mode][runner.name].append(steps / runner.run(mode, steps))
  return results


def throughput(runners: Sequence[Runner], modes: Sequence[str], rounds: int, steps: int,
               tokens_per_step: int) -> dict[str, dict[str, float]]:
  """Median tokens/s per mode and runner over interleaved rounds."""
  return {mode: {name: tokens_per_step * statistics.median(v) for name, v in by_name.items()}
          for mode, by_name in step_rates(runners, modes, rounds, steps).items()}


def matmul(size: int = 2048, dtype: str = "float32") -> tuple[Callable[[], jax.Array], float]:
  """(a jitted ``size x size`` ``jnp.dot`` to time, its FLOPs): to measure a matmul peak."""
  keys = jax.random.split(jax.random.key(1))
  a, b = (jax.random.normal(k, (size, size), jnp.dtype(dtype)) for k in keys)
  dot = jax.jit(jnp.dot)
  return lambda: dot(a, b), 2.0 * size ** 3


def speed_line(mode: str, by_name: Mapping[str, float], flops_per_token: float,
               peak_flops: float | None = None) -> str:
  """``mode: ours N tokens/s, huggingface M tokens/s (ours / HF = r) [ours T TFLOP/s, MFU]``."""
  line = f"{mode:>10}: " + ", ".join(f"{n} {v:,.0f} tokens/s" for n, v in by_name.items())
  if "huggingface" in by_name:
    line += f"  (ours / HF = {by_name['ours'] / by_name['huggingface']:.2f}x)"
  line += f"  [ours {by_name['ours'] * flops_per_token / 1e12:.3f} TFLOP/s"
  if peak_flops:
    line += f", MFU {by_name['ours'] * flops_per_token / peak_flops:.1%}"
  return line + "]"
