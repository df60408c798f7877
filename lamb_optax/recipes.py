"""Optimizers by name, and an optimizer with its schedule built from a config.

:data:`OPTIMIZERS` names every optimizer the trainer and the studies can run: the LAMB family
(:mod:`lamb_optax.aliases`) and the two baselines other projects' recipes use (momentum SGD and
``optax.lars``). :func:`build_optimizer` reads ``optimizer.name``, ``optimizer.kwargs``,
``learning_rate``, ``warmup_steps``, ``num_train_steps``, ``lr_schedule``, ``decay_power``,
``end_learning_rate``, ``lr_boundaries`` and ``lr_decay_factor`` from any config with attribute
access (an ``ml_collections.ConfigDict`` in the trainer). Like the rest of the optimizer core it
imports only jax and optax, so recipes can be checked without the trainer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import optax

from lamb_optax import aliases
from lamb_optax import masks
from lamb_optax import schedules
from lamb_optax import transforms
from lamb_optax import validation


def momentum_sgd(learning_rate: float | optax.Schedule, momentum: float = 0.9,
                 nesterov: bool = False, weight_decay: float = 1e-4,
                 weight_decay_mask: Any = masks.DEFAULT_WEIGHT_DECAY_MASK,
                 stacked_axes: Any = None) -> optax.GradientTransformation:
  """Momentum SGD with L2 weight decay added to the gradient (Goyal et al. 2017; PyTorch's
  ``SGD(weight_decay=...)``): ``optax.add_decayed_weights`` then ``optax.sgd``, on the same
  default decay mask as LAMB (not biases, BatchNorm or LayerNorm parameters).

  >>> import jax.numpy as jnp
  >>> tx = momentum_sgd(0.1, weight_decay=0.5)
  >>> params = {"w": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}
  >>> u, _ = tx.update({"w": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}, tx.init(params), params)
  >>> u["w"]["kernel"].tolist(), u["w"]["bias"].tolist()   # -η(g + λx) on kernels, -ηg on biases
  ([-0.15000000596046448, -0.15000000596046448], [-0.10000000149011612, -0.10000000149011612])
  """
  del stacked_axes  # element-wise
  return optax.chain(
      optax.add_decayed_weights(weight_decay, aliases.decay_mask_for_optax(weight_decay_mask)),
      optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))


def optax_lars(learning_rate: float | optax.Schedule, momentum: float = 0.9,
               weight_decay: float = 1e-4, trust_coefficient: float = 0.001, eps: float = 0.0,
               nesterov: bool = False,
               weight_decay_mask: Any = masks.DEFAULT_WEIGHT_DECAY_MASK,
               trust_ratio_mask: Any = None, stacked_axes: Any = None
               ) -> optax.GradientTransformation:
  """LARS as MLPerf's ResNet-50 submissions run it: ``optax.lars`` on our default masks.

  Per tensor ``m ← β·m + η_t·r·(g + λx); x ← x − m`` with ``r = trust_coefficient·‖x‖ /
  (‖g + λx‖ + eps)``, neither decay nor ratio on biases and BatchNorm parameters (these take
  plain momentum at ``η_t``). TensorFlow's ``LARSOptimizer`` (``eeta=0.001``, ``skip_list=
  ['batch_normalization', 'bias']``, used by mlcommons/training_results_v0.7 Google ResNet) is
  the same update except its denominator ``‖g‖ + λ‖x‖`` (≥ ``‖g + λx‖``). Unlike
  :func:`lamb_optax.lars` (the LAMB paper's, dampened momentum, rate outside), the rate enters
  the momentum, so MLPerf's learning rates (e.g. 17 at batch 8192) carry over unchanged.
  ``trust_ratio_mask`` defaults to ``weight_decay_mask``. One norm per leaf: stacked layers
  (a non-zero ``stacked_axes``) are refused.

  >>> import jax.numpy as jnp
  >>> tx = optax_lars(1.0, weight_decay=0.0, trust_coefficient=0.5)
  >>> params = {"w": {"kernel": jnp.ones(4), "bias": jnp.ones(4)}}
  >>> u, _ = tx.update({"w": {"kernel": jnp.full(4, 2.0), "bias": jnp.full(4, 2.0)}},
  ...                  tx.init(params), params)
  >>> u["w"]["kernel"].tolist(), u["w"]["bias"].tolist()  # ratio 0.5·2/4 on kernels, none on bias
  ([-0.5, -0.5, -0.5, -0.5], [-2.0, -2.0, -2.0, -2.0])
  """
  if any(a for a in jax.tree.leaves(stacked_axes)):
    raise ValueError("optax_lars takes one norm per parameter leaf and cannot split stacked "
                     "layers; use optimizer 'lars' (lamb_optax.lars) for stacked models.")
  if trust_ratio_mask is None:
    trust_ratio_mask = weight_decay_mask
  return optax.lars(learning_rate, weight_decay=weight_decay,
                    weight_decay_mask=aliases.decay_mask_for_optax(weight_decay_mask) or True,
                    trust_coefficient=trust_coefficient, eps=eps,
                    trust_ratio_mask=aliases.decay_mask_for_optax(trust_ratio_mask) or True,
                    momentum=momentum, nesterov=nesterov)


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "lamb": aliases.lamb,
    "lars": aliases.lars,
    "nvlamb": aliases.nvlamb,
    "nlamb": aliases.nlamb,
    "nnlamb": aliases.nnlamb,
    "adamw": aliases.adamw_baseline,
    "sgd": momentum_sgd,
    "optax_lars": optax_lars,
}

# config.lr_schedule -> what it means (check_schedule and the docs list these).
LR_SCHEDULES = {
    "polynomial": "warmup, then polynomial decay measured over the whole run (BERT)",
    "warmup_polynomial": "warmup, then polynomial decay over the steps after it (MLPerf LARS)",
    "warmup_cosine": "warmup, then cosine decay to end_learning_rate (big_vision)",
    "warmup_piecewise": "warmup, then ×lr_decay_factor at each of lr_boundaries (Goyal et al.)",
}


def schedule(config: Any) -> optax.Schedule:
  """The schedule ``config.lr_schedule`` names (default ``"polynomial"``:
  :func:`lamb_optax.schedules.warmup_polynomial_decay_over_run`) with the config's numbers."""
  name = config.get("lr_schedule", "polynomial")
  peak, total, warmup = config.learning_rate, config.num_train_steps, config.warmup_steps
  if name == "polynomial":
    return schedules.warmup_polynomial_decay_over_run(
        peak, total, warmup, power=config.decay_power, end_value=config.end_learning_rate)
  if name == "warmup_polynomial":
    return schedules.warmup_polynomial_decay_after_warmup(
        peak, total, warmup, power=config.decay_power, end_value=config.end_learning_rate)
  if name == "warmup_cosine":
    return schedules.warmup_cosine_decay(peak, total, warmup, end_value=config.end_learning_rate)
  if name == "warmup_piecewise":
    return schedules.warmup_piecewise_constant(
        peak, total, warmup, tuple(config.lr_boundaries), config.lr_decay_factor)
  raise ValueError(f"Unknown lr_schedule {name!r}; choose one of {sorted(LR_SCHEDULES)}.")


def build_optimizer(
    config: Any, stacked_axes: Any = None
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns ``(optimizer, schedule)`` for ``config``; raises ValueError on a bad recipe.

  ``optimizer.kwargs`` written for another optimizer are dropped or mapped with a printed note
  (:func:`_kwargs_for`), so ``--config.optimizer.name=lamb`` runs an AdamW recipe with LAMB.

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
  kwargs = config.optimizer.kwargs
  kwargs = dict(kwargs.to_dict() if hasattr(kwargs, "to_dict") else kwargs)
  kwargs, max_grad_norm = _kwargs_for(name, kwargs)
  known = inspect.signature(OPTIMIZERS[name]).parameters
  for key, value in kwargs.items():
    _check_kwarg_type(name, key, value, known[key].annotation)
  try:
    tx = OPTIMIZERS[name](lr, stacked_axes=stacked_axes, **kwargs)
    if max_grad_norm is not None:
      validation.check_nonnegative(max_grad_norm, "optimizer.kwargs.max_grad_norm")
      tx = optax.chain(transforms.clip_by_global_norm(max_grad_norm), tx)
  except (TypeError, ValueError, AttributeError) as e:  # the optimizer's own validation
    raise ValueError(f"optimizer.kwargs {kwargs} are refused by {name}: "
                     f"{type(e).__name__}: {e}") from e
  return tx, lr


# Keys that come from the config and the task, never from optimizer.kwargs.
_NOT_KWARGS = ("learning_rate", "stacked_axes")


def _kwargs_for(name: str, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
  """``(kwargs optimizer `name` takes, max_grad_norm to clip with before it, or None)``.

  A recipe's kwargs are written for its own optimizer; ``--config.optimizer.name=lamb`` on an
  AdamW recipe must still run. So a key that ``name`` does not take but another optimizer of
  :data:`OPTIMIZERS` does is dropped with a printed note, except ``max_grad_norm``, which is
  mapped: the gradient is clipped to that global norm before the optimizer, as the recipe
  clipped before AdamW (google-research/bert's ``optimization.py`` clips before its AdamW, the
  LAMB author's before ``LAMBOptimizer``; :func:`lamb_optax.nvlamb` is LAMB after that clip). A
  key no optimizer takes is a typo: an error listing what ``name`` takes.
  """
  known = inspect.signature(OPTIMIZERS[name]).parameters
  takers = {key: sorted(n for n, f in OPTIMIZERS.items()
                        if key in inspect.signature(f).parameters)
            for key in kwargs if key not in known}
  unknown = sorted(k for k in kwargs if k in _NOT_KWARGS or (k not in known and not takers[k]))
  if unknown:
    takes = sorted(k for k in known if k not in _NOT_KWARGS)
    raise ValueError(f"optimizer.kwargs {unknown} are not arguments of {name}; it takes {takes} "
                     "(the learning rate is config.learning_rate).")
  max_grad_norm = None
  for key in sorted(takers):
    value = kwargs.pop(key)
    if key == "max_grad_norm":
      max_grad_norm = value
      what = ("the gradient is clipped to that global norm before it" if value is not None
              else "no clipping")
    else:
      what = "dropped"
    print(f"Note: optimizer.kwargs.{key}={value!r} is an argument of {', '.join(takers[key])}, "
          f"not of {name}: {what}.", flush=True)
  return kwargs, max_grad_norm


# The argument annotations (strings: the aliases use postponed evaluation) a kwarg must match.
_NUMBER = (int, float)
_TYPES = {"float": _NUMBER, "Optional[float]": _NUMBER + (type(None),), "bool": (bool,),
          "int": (int,)}


def _check_kwarg_type(optimizer: str, key: str, value: Any, annotation: Any) -> None:
  """Raises a ValueError naming ``optimizer.kwargs.<key>`` when ``value`` is not of its type."""
  annotation = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
  if annotation == "MaskSpec":  # a bool, None, a callable, or a pytree of bools (never 3 or "x")
    leaves = [value] if not isinstance(value, (dict, list, tuple)) else _leaves(value)
    bad = [v for v in leaves if not (v is None or isinstance(v, bool) or callable(v))]
    if bad:
      raise ValueError(f"optimizer.kwargs.{key} must be a mask (True/False, a pytree of bools, "
                       f"or a callable) for {optimizer}, got {bad[0]!r} "
                       f"({type(bad[0]).__name__}) in it.")
    return
  kinds = _TYPES.get(annotation)
  if kinds is None:
    return
  if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
    raise ValueError(f"optimizer.kwargs.{key} must be a {annotation} for {optimizer}, got "
                     f"{value!r} ({type(value).__name__}).")


def _leaves(tree: Any) -> list:
  if isinstance(tree, dict):
    return [leaf for v in tree.values() for leaf in _leaves(v)]
  if isinstance(tree, (list, tuple)):
    return [leaf for v in tree for leaf in _leaves(v)]
  return [tree]
