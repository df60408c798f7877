"""Times one jitted optimizer update on a BERT-base-shaped parameter tree.

Compares ``lamb_optax.lamb`` with ``optax.lamb`` and ``optax.adamw`` in the same process,
interleaving the measurements so that machine noise hits all of them alike. Each step is
``update`` + ``optax.apply_updates`` in one ``jax.jit`` with params and optimizer state donated,
as in a real train step. Prints per-optimizer medians and the ratios the README records.

Usage:
  python scripts/benchmark_optimizer.py                 # ~110M params, as BERT-base
  python scripts/benchmark_optimizer.py --layout=stacked --rounds=20
  python scripts/benchmark_optimizer.py --scale=0.1      # smaller tree, quick check
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import lamb_optax


def bert_base_shapes(
    layers: int = 12, hidden: int = 768, mlp: int = 3072, vocab: int = 30522, scale: float = 1.0
) -> dict:
  """Parameter shapes of BERT-base for pretraining (Flax names), optionally shrunk by ``scale``."""
  hidden = max(8, int(hidden * scale))
  mlp = max(8, int(mlp * scale))
  vocab = max(8, int(vocab * scale))
  dense = lambda i, o: {"kernel": (i, o), "bias": (o,)}
  norm = {"scale": (hidden,), "bias": (hidden,)}
  layer = {
      "attention": {n: dense(hidden, hidden) for n in ("query", "key", "value", "out")},
      "attention_norm": dict(norm),
      "intermediate": dense(hidden, mlp),
      "output": dense(mlp, hidden),
      "output_norm": dict(norm),
  }
  return {
      "embeddings": {
          "word": {"embedding": (vocab, hidden)},
          "position": {"embedding": (512, hidden)},
          "token_type": {"embedding": (2, hidden)},
          "norm": dict(norm),
      },
      "layers": {str(i): layer for i in range(layers)},
      "pooler": dense(hidden, hidden),
      "mlm": {"transform": dense(hidden, hidden), "norm": dict(norm), "bias": (vocab,)},
      "nsp": dense(hidden, 2),
  }


def stack_layers(shapes: dict) -> dict:
  """Replaces the per-layer dicts by one dict whose shapes have a leading layer axis."""
  layers = list(shapes["layers"].values())
  stacked = jax.tree.map(lambda s: (len(layers),) + s, layers[0], is_leaf=lambda x: isinstance(x, tuple))
  return {**shapes, "layers": stacked}


def make_tree(shapes: dict, key: jax.Array, dtype=jnp.float32) -> dict:
  is_shape = lambda x: isinstance(x, tuple)
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=is_shape)
  keys = jax.random.split(key, len(leaves))
  arrays = [0.02 * jax.random.normal(k, s, dtype) for k, s in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, arrays)


def make_step(tx: optax.GradientTransformation):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return jax.jit(step, donate_argnums=(0, 1))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--layout", choices=("unstacked", "stacked"), default="unstacked")
  parser.add_argument("--rounds", type=int, default=15, help="timed calls per optimizer")
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--scale", type=float, default=1.0, help="shrink hidden/mlp/vocab sizes")
  args = parser.parse_args()

  shapes = bert_base_shapes(scale=args.scale)
  stacked_axes = None
  if args.layout == "stacked":
    shapes = stack_layers(shapes)
    stacked_axes = {k: (1 if k == "layers" else 0) for k in shapes}
  grads = make_tree(shapes, jax.random.key(1))
  n_params = sum(x.size for x in jax.tree.leaves(grads))

  optimizers = {
      "adamw": optax.adamw(1e-3, weight_decay=0.01, eps=1e-6),
      "optax.lamb": optax.lamb(1e-3, weight_decay=0.01, eps=1e-6),
      "lamb_optax.lamb": lamb_optax.lamb(1e-3, stacked_axes=stacked_axes),
  }
  runs = {}
  for name, tx in optimizers.items():
    params = make_tree(shapes, jax.random.key(0))
    runs[name] = [make_step(tx), params, tx.init(params)]

  def call(name: str) -> float:
    step, params, state = runs[name]
    start = time.perf_counter()
    params, state = step(params, state, grads)
    jax.block_until_ready((params, state))
    runs[name][1:] = [params, state]
    return time.perf_counter() - start

  for _ in range(args.warmup):
    for name in runs:
      call(name)
  times = {name: [] for name in runs}
  for _ in range(args.rounds):
    for name in runs:
      times[name].append(call(name))

  med = {name: statistics.median(t) for name, t in times.items()}
  print(f"machine: {platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, "
        f"{jax.local_device_count()} device(s); jax {jax.__version__}, optax {optax.__version__}")
  print(f"params: {n_params / 1e6:.1f}M fp32, layout={args.layout}, rounds={args.rounds}")
  for name, m in med.items():
    print(f"  {name:16s} median {m * 1e3:8.1f} ms")
  print(f"lamb_optax.lamb / adamw      = {med['lamb_optax.lamb'] / med['adamw']:.2f}x")
  print(f"lamb_optax.lamb / optax.lamb = {med['lamb_optax.lamb'] / med['optax.lamb']:.2f}x")
  print(f"optax.lamb / adamw           = {med['optax.lamb'] / med['adamw']:.2f}x")


if __name__ == "__main__":
  main()
