"""A one-minute LAMB demo on the CPU: a deep MLP fit at a large batch, LAMB beside AdamW.

Run it with ``python -m lamb_optax.demo``. A student MLP learns a random teacher MLP from
synthetic data (generated, nothing downloaded) at batch 2,048 for a few hundred steps, with the
same warmup + linear-decay schedule for both optimizers. It prints the loss curves and LAMB's
per-layer trust ratios, the quantity the paper's layer-wise adaptation is about.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

import lamb_optax


def init_mlp(key: jax.Array, sizes: Sequence[int], scale: float = 1.0) -> dict:
  """Dense layers named as Flax names them, so the default decay mask recognises them."""
  params = {}
  for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
    key, sub = jax.random.split(key)
    params[f"Dense_{i}"] = {
        "kernel": scale * jax.random.normal(sub, (n_in, n_out)) / jnp.sqrt(n_in),
        "bias": jnp.zeros(n_out),
    }
  return params


def mlp(params: dict, x: jax.Array) -> jax.Array:
  layers = list(params.values())
  for layer in layers[:-1]:
    x = jax.nn.gelu(x @ layer["kernel"] + layer["bias"])
  return x @ layers[-1]["kernel"] + layers[-1]["bias"]


def train(tx: optax.GradientTransformation, args: argparse.Namespace):
  """Returns (losses every `log_every` steps, final optimizer state)."""
  sizes = [args.input_dim] + [args.width] * args.depth + [1]
  teacher = init_mlp(jax.random.key(0), sizes, scale=1.5)
  params = init_mlp(jax.random.key(1), sizes)
  state = tx.init(params)

  def loss_fn(params, x):
    return jnp.mean((mlp(params, x) - mlp(teacher, x)) ** 2)

  @jax.jit
  def step(params, state, key):
    x = jax.random.normal(key, (args.batch_size, args.input_dim))
    loss, grads = jax.value_and_grad(loss_fn)(params, x)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for i, key in enumerate(jax.random.split(jax.random.key(2), args.steps)):
    params, state, loss = step(params, state, key)
    if i % args.log_every == 0 or i == args.steps - 1:
      losses.append((i, float(loss)))
  return losses, state


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch_size", type=int, default=2048)
  parser.add_argument("--width", type=int, default=256)
  parser.add_argument("--depth", type=int, default=6)
  parser.add_argument("--input_dim", type=int, default=32)
  parser.add_argument("--learning_rate", type=float, default=1e-2)
  parser.add_argument("--log_every", type=int, default=50)
  args = parser.parse_args(argv)

  warmup = max(1, args.steps // 10)
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, args.learning_rate, warmup),
       optax.linear_schedule(args.learning_rate, 0.0, args.steps - warmup)], [warmup])
  optimizers = {
      "LAMB": lamb_optax.lamb(schedule, weight_decay=0.01),
      "AdamW": optax.adamw(schedule, eps=1e-6, weight_decay=0.01),
  }
  print(f"Fitting a {args.depth}-layer MLP (width {args.width}) to a teacher at batch "
        f"{args.batch_size}, {args.steps} steps, peak lr {args.learning_rate}.")
  results = {}
  for name, tx in optimizers.items():
    start = time.perf_counter()
    results[name] = train(tx, args)
    print(f"  {name:6s} trained in {time.perf_counter() - start:.1f}s")

  print("\nstep   " + "".join(f"{name:>12s}" for name in results))
  for row in zip(*(losses for losses, _ in results.values()), strict=True):
    print(f"{row[0][0]:<7d}" + "".join(f"{loss:12.5f}" for _, loss in row))

  print("\nLAMB trust ratios ‖x‖/‖u‖ at the last step (biases: plain Adam, no ratio):")
  for path, ratio in lamb_optax.trust_ratios(results["LAMB"][1]).items():
    print(f"  {path:16s} {float(ratio):8.3f}")


if __name__ == "__main__":
  main()
