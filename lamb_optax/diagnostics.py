"""Trust-ratio summaries for logging: per layer group, min/mean/max ratio, weight/update norms."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp

from lamb_optax import masks
from lamb_optax import transforms

_LAYER = re.compile(r"(?:^|/)(?:encoder/)?layers?[_/](\d+)(?:/|$)", re.IGNORECASE)


def layer_group(path: str) -> str:
  """The group of an unstacked leaf: 'embeddings', 'layer_<n>' or 'heads' (everything else).

  >>> layer_group("bert/embeddings/word/embedding"), layer_group("encoder/layer_3/attn/kernel")
  ('embeddings', 'layer_3')
  >>> layer_group("mlm_head/dense/kernel")
  'heads'
  """
  if "embed" in path.lower():
    return "embeddings"
  match = _LAYER.search(path)
  return f"layer_{int(match.group(1))}" if match else "heads"


def _flat(tree) -> dict[str, jax.Array]:
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {masks.path_to_str(path): leaf for path, leaf in leaves}


def trust_ratio_summary(
    opt_state: Any, params: Any, updates: Any | None = None
) -> dict[str, jax.Array]:
  """Per layer group, the min/mean/max trust ratio and the weight and update norms.

  Groups: ``embeddings``, ``layer_<n>`` for each encoder layer — for a leaf stacked by ``scan``
  (its ratio has one entry per layer) each slice along the stacked axis is its own layer —
  and ``heads`` for the rest. Only leaves with layer adaptation appear.

  Norms are group norms (the root of the summed squares over the group's layers):

  * ``weight_norm``: ‖x‖ of ``params`` (pass the params the update was computed from);
  * ``update_norm``: if ``updates`` (what ``tx.update`` returned) is given, their norm — the
    step actually taken, learning rate included; otherwise the norm of the update *before* the
    ratio, derived as ‖x‖/ratio, which holds when ``weight_norm_bounds`` and
    ``trust_ratio_bounds`` are unset (it reads 0 where ‖x‖ = 0, whose ratio is the fallback 1).

  Works under ``jit``: keys depend only on the tree structure.

  >>> import jax.numpy as jnp, lamb_optax
  >>> params = {"layers": {"kernel": jnp.ones((2, 3, 3))}, "head": {"kernel": jnp.ones((3, 2))}}
  >>> tx = lamb_optax.lamb(0.1, stacked_axes={"layers": 1, "head": 0})
  >>> u, state = tx.update(params, tx.init(params), params)
  >>> summary = trust_ratio_summary(state, params, u)
  >>> sorted(summary)[:3], round(float(summary["layer_1/update_norm"]), 3)
  (['heads/ratio_max', 'heads/ratio_mean', 'heads/ratio_min'], 0.3)
  """
  ratios = transforms.trust_ratios(opt_state)
  flat_params = _flat(params)
  flat_updates = None if updates is None else _flat(updates)
  groups: dict[str, list[tuple[jax.Array, jax.Array, jax.Array]]] = {}
  for path, ratio in ratios.items():
    x = flat_params[path]
    axes = jnp.ndim(ratio)
    x_norms = transforms.layer_norms(x, axes).reshape(-1)
    if flat_updates is not None:
      u_norms = transforms.layer_norms(flat_updates[path], axes).reshape(-1)
    else:
      u_norms = x_norms / jnp.asarray(ratio).reshape(-1)
    names = ([f"layer_{i}" for i in range(x_norms.size)] if axes else [layer_group(path)])
    flat_ratio = jnp.asarray(ratio).reshape(-1)
    for i, name in enumerate(names):
      groups.setdefault(name, []).append((flat_ratio[i], x_norms[i], u_norms[i]))
  summary = {}
  for name, rows in sorted(groups.items()):
    r, w, u = (jnp.stack(col) for col in zip(*rows, strict=True))
    summary[f"{name}/ratio_min"] = jnp.min(r)
    summary[f"{name}/ratio_mean"] = jnp.mean(r)
    summary[f"{name}/ratio_max"] = jnp.max(r)
    summary[f"{name}/weight_norm"] = jnp.sqrt(jnp.sum(w ** 2))
    summary[f"{name}/update_norm"] = jnp.sqrt(jnp.sum(u ** 2))
  return summary
