"""Builds an optimizer and its schedule from a config (the schema of ``configs/``).

Reads ``optimizer.name``, ``optimizer.kwargs``, ``learning_rate``, ``warmup_steps``,
``num_train_steps``, ``decay_power`` and ``end_learning_rate``. Imports only optax and
ml_collections besides the optimizer package, so recipes can be checked without the trainer.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import ml_collections
import optax

from lamb_optax import aliases
from lamb_optax import schedules

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "lamb": aliases.lamb,
    "lars": aliases.lars,
    "nvlamb": aliases.nvlamb,
    "nlamb": aliases.nlamb,
    "nnlamb": aliases.nnlamb,
    "adamw": aliases.adamw_baseline,
}


def schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """:func:`lamb_optax.schedules.warmup_polynomial_decay` with the config's numbers."""
  return schedules.warmup_polynomial_decay(
      config.learning_rate, config.num_train_steps, config.warmup_steps,
      power=config.decay_power, end_value=config.end_learning_rate)


def build_optimizer(
    config: ml_collections.ConfigDict, stacked_axes: Any = None
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns ``(optimizer, schedule)`` for ``config``; raises ValueError on a bad recipe.

  >>> import ml_collections
  >>> config = ml_collections.ConfigDict(dict(
  ...     optimizer=dict(name="lamb", kwargs=dict(weight_decay=0.01)), learning_rate=5e-3,
  ...     warmup_steps=10, num_train_steps=50, decay_power=1.0, end_learning_rate=0.0))
  >>> tx, lr = build_optimizer(config)
  >>> round(float(lr(5)), 6)
  0.0025
  """
  name = config.optimizer.name
  if name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}.")
  lr = schedule(config)
  kwargs = dict(config.optimizer.kwargs)
  known = inspect.signature(OPTIMIZERS[name]).parameters
  unknown = sorted(set(kwargs) - set(known))
  if unknown:
    raise ValueError(f"optimizer.kwargs {unknown} are not arguments of {name}; it takes "
                     f"{sorted(k for k in known if k not in ('learning_rate', 'stacked_axes'))}.")
  return OPTIMIZERS[name](lr, stacked_axes=stacked_axes, **kwargs), lr
