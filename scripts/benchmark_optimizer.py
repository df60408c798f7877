"""Times one jitted optimizer update on a BERT-base-shaped parameter tree.

Compares ``lamb_optax.lamb`` with ``optax.lamb`` and ``optax.adamw`` in the same process,
interleaving the measurements so that machine noise hits all of them alike. Each step is
``update`` + ``optax.apply_updates`` in one ``jax.jit`` with params and optimizer state donated,
as in a real train step. Prints per-optimizer medians and the ratios the README records.

Usage:
  python scripts/benchmark_optimizer.py                 # ~110M params, as BERT-base
  python scripts/benchmark_optimizer.py --layout=stacked --rounds=20
  python scripts/benchmark_optimizer.py --scale=0.1      # smaller tree, quick check
  python scripts/benchmark_optimizer.py --compile_for=v5litepod-4   # XLA:TPU's bytes, no TPU

``--compile_for`` times nothing: it compiles one update of each optimizer for one chip of that
slice (libtpu, no TPU needed) on a BERT-Large-shaped tree (stacked layers, default masks) and
prints XLA's bytes accessed and fusion count, and their ratios to AdamW. The update is memory
bound, so bytes are its cost; AdamW reads params, grads, 2 moments and writes params + 2 moments
(7 passes), LAMB adds a read of params and of the update for the trust ratio (10/7 = 1.43x).
"""

from __future__ import annotations

import argparse
import math
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
  stacked = jax.tree.map(lambda s: (len(layers),) + s, layers[0],
                         is_leaf=lambda x: isinstance(x, tuple))
  return {**shapes, "layers": stacked}


def make_tree(shapes: dict, key: jax.Array, dtype=jnp.float32) -> dict:
  is_shape = lambda x: isinstance(x, tuple)
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=is_shape)
  keys = jax.random.split(key, len(leaves))
  arrays = [0.02 * jax.random.normal(k, s, dtype) for k, s in zip(keys, leaves, strict=True)]
  return jax.tree.unflatten(treedef, arrays)


def make_step(tx: optax.GradientTransformation):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return jax.jit(step, donate_argnums=(0, 1))


def compile_report(accelerator: str) -> None:
  """XLA:TPU's bytes accessed and fusions of one update per optimizer (see the docstring)."""
  from lamb_optax.tpu import compile_for  # pylint: disable=g-import-not-at-top
  from lamb_optax.tpu import program_stats  # pylint: disable=g-import-not-at-top
  slice_, topo = compile_for.resolve_slice(accelerator)
  device = compile_for.topology_devices(slice_, topo)[0]
  shapes = stack_layers(bert_base_shapes(layers=24, hidden=1024, mlp=4096))
  stacked_axes = {k: (1 if k == "layers" else 0) for k in shapes}
  tree = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))
  sharding = jax.sharding.SingleDeviceSharding(device)
  tree = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)
  optimizers = {
      "adamw": optax.adamw(1e-3, weight_decay=0.01, eps=1e-6),
      "optax.lamb": optax.lamb(1e-3, weight_decay=0.01, eps=1e-6),
      "lamb_optax.lamb": lamb_optax.lamb(1e-3, stacked_axes=stacked_axes),
  }
  n = sum(math.prod(a.shape) for a in jax.tree.leaves(tree))
  print(f"BERT-Large-shaped tree, stacked layers: {n / 1e6:.1f}M fp32 params; one chip of "
        f"{accelerator} ({topo.name}); jax {jax.__version__}, optax {optax.__version__}")
  stats = {}
  for name, tx in optimizers.items():
    state = jax.eval_shape(tx.init, tree)
    state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), state)
    compiled = make_step(tx).lower(tree, state, tree).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    fusions = program_stats.analyse(compiled.as_text()).fusions
    stats[name] = (cost["bytes accessed"], fusions)
    print(f"  {name:16s} bytes accessed {cost['bytes accessed'] / 2**30:7.3f} GiB "
          f"({cost['bytes accessed'] / (4 * n):5.2f} x params), {fusions} fusions")
  base = stats["adamw"][0]
  for name in ("lamb_optax.lamb", "optax.lamb"):
    print(f"{name} / adamw bytes = {stats[name][0] / base:.2f}x (floor 10/7 = 1.43x)")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--layout", choices=("unstacked", "stacked"), default="unstacked")
  parser.add_argument("--rounds", type=int, default=15, help="timed calls per optimizer")
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--scale", type=float, default=1.0, help="shrink hidden/mlp/vocab sizes")
  parser.add_argument("--compile_for", default=None,
                      help="report XLA:TPU bytes/fusions for this slice's chip instead of timing")
  args = parser.parse_args()
  if args.compile_for:
    compile_report(args.compile_for)
    return

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
