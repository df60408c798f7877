"""Parameter paths, masks and stacked-layer axes.

LAMB-style optimizers make three per-leaf decisions: whether to decay a leaf, whether to adapt
its step by the trust ratio, and how many of its leading axes index independent layers (Flax
``scan`` over layers stacks L layers into one array). Users express the first two as masks and
the third as ``stacked_axes``; this module turns those specifications into concrete, validated
per-leaf values, once, at trace time.

Masks are *static*: every leaf's decision is a Python ``bool`` known when the optimizer is traced,
so the compiled update contains no ``where`` over whole tensors and no work for masked-out leaves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

import jax
import numpy as np

PyTree = Any
MaskSpec = Union[None, bool, PyTree, Callable[[PyTree], PyTree]]
StackedAxesSpec = Union[None, int, PyTree, Callable[[PyTree], PyTree]]

# Leaf names that Flax (and the TF/PyTorch checkpoints it imports) give to biases and to the
# affine parameters of normalisation layers. Google's and NVIDIA's BERT recipes exclude these
# from weight decay, and therefore from layer adaptation. A ViT's learned position embedding and
# [CLS] token are excluded too, as timm (`no_weight_decay`: pos_embed, cls_token) and big_vision
# (decay on kernels only) do; BERT's position embeddings are `.../embedding` leaves, unaffected.
_NO_DECAY_LEAF_NAMES = frozenset({"bias", "scale", "beta", "gamma", "pos_embedding", "cls_token"})
_NORM_COMPONENT = re.compile(r"norm|^ln(_|\d|$)", re.IGNORECASE)
# NNX states hold each parameter in a Variable whose array sits under a trailing `value` key.
_VARIABLE_FIELDS = frozenset({"value", "raw_value"})


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_to_str(path: Sequence[Any]) -> str:
  """Joins a JAX key path into ``'a/b/0/kernel'`` (dropping NNX's trailing ``value``).

  >>> import jax
  >>> [path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(
  ...     {"dense": {"kernel": 1, "bias": 2}, "layers": [3]})[0]]
  ['dense/bias', 'dense/kernel', 'layers/0']
  """
  names = [_key_name(k) for k in path]
  while len(names) > 1 and names[-1] in _VARIABLE_FIELDS:
    names.pop()
  return "/".join(names)


def tree_paths(tree: PyTree) -> PyTree:
  """Returns a pytree like ``tree`` whose leaves are their own '/'-joined paths."""
  return jax.tree_util.tree_map_with_path(lambda p, _: path_to_str(p), tree)


def path_mask(
    include: Iterable[str] = (), exclude: Iterable[str] = ()
) -> Callable[[PyTree], PyTree]:
  """Builds a mask function from regular expressions on '/'-joined parameter paths.

  A leaf is selected when its path matches one of ``include`` (or ``include`` is empty) and none
  of ``exclude`` (``re.search`` semantics). This is TF-Addons' ``exclude_from_weight_decay`` and
  ``exclude_from_layer_adaptation``, for any pytree.

  Args:
    include: regexes a path must match (any of them); empty selects every leaf.
    exclude: regexes that deselect a path (any of them).

  Returns:
    A callable ``params -> bool pytree``, usable as ``weight_decay_mask``/``trust_ratio_mask``.

  Example:
    >>> mask_fn = path_mask(exclude=(r"bias$", r"LayerNorm"))
    >>> mask_fn({"dense": {"kernel": 0.0, "bias": 0.0}, "LayerNorm": {"scale": 0.0}})
    {'LayerNorm': {'scale': False}, 'dense': {'bias': False, 'kernel': True}}
  """
  include_res = [re.compile(p) for p in include]
  exclude_res = [re.compile(p) for p in exclude]

  def selected(path: str) -> bool:
    if include_res and not any(r.search(path) for r in include_res):
      return False
    return not any(r.search(path) for r in exclude_res)

  return lambda params: jax.tree.map(selected, tree_paths(params))


def default_weight_decay_mask(params: PyTree) -> PyTree:
  """Decays kernels and embeddings; not biases, normalisation parameters (LayerNorm and
  BatchNorm ``scale``/``bias``), nor a ViT's ``pos_embedding``/``cls_token``.

  Decides by name, not by rank, so that it stays right for layers stacked by ``scan`` (where a
  stacked bias is 2-D). A leaf is excluded when its own name is ``bias``/``scale`` (Flax) or
  ``beta``/``gamma`` (TF checkpoints), or when any component of its path names a normalisation
  layer (``LayerNorm``, ``layer_norm``, ``ln_1``, ...).

  >>> default_weight_decay_mask({"Dense_0": {"kernel": 0, "bias": 0},
  ...                            "LayerNorm_0": {"scale": 0, "bias": 0},
  ...                            "embed": {"embedding": 0}})
  {'Dense_0': {'bias': False, 'kernel': True}, 'LayerNorm_0': {'bias': False, 'scale': False}, 'embed': {'embedding': True}}
  """

  def decayed(path: str) -> bool:
    parts = path.split("/")
    if parts[-1] in _NO_DECAY_LEAF_NAMES:
      return False
    return not any(_NORM_COMPONENT.search(part) for part in parts)

  return jax.tree.map(decayed, tree_paths(params))


class _DefaultWeightDecayMask:
  """The default ``weight_decay_mask`` of the aliases: :func:`default_weight_decay_mask`.

  A marker rather than the function itself, because ``optax.inject_hyperparams`` takes every
  callable argument (defaults included) for a schedule and would call the mask with the step.
  """

  def __repr__(self) -> str:
    return "DEFAULT_WEIGHT_DECAY_MASK"


DEFAULT_WEIGHT_DECAY_MASK = _DefaultWeightDecayMask()


def _broadcast_prefix(spec: PyTree, params: PyTree, argname: str) -> PyTree:
  """Expands ``spec`` (a prefix of ``params``' structure) to one value per params leaf."""
  try:
    return jax.tree.map(
        lambda value, subtree: jax.tree.map(lambda _: value, subtree), spec, params
    )
  except (ValueError, TypeError) as e:
    raise ValueError(
        f"`{argname}` must have the tree structure of the params (or a prefix of it); got "
        f"{jax.tree.structure(spec)} for params {jax.tree.structure(params)}. Build it from the "
        f"params, e.g. `jax.tree.map(lambda p: ..., params)`, or pass a callable "
        f"`params -> pytree`. ({e})"
    ) from None


def resolve_mask(mask: MaskSpec, params: PyTree, argname: str = "mask") -> PyTree:
  """Turns a mask spec into a pytree of Python bools, one per leaf of ``params``.

  ``None`` and ``True`` select every leaf, ``False`` none; :data:`DEFAULT_WEIGHT_DECAY_MASK`
  means :func:`default_weight_decay_mask`; a callable is called on ``params``;
  a pytree must match ``params`` (or be a prefix of it). Leaves must be static (Python or NumPy
  bools, or concrete arrays), since masks decide the program's shape, not its values.
  """
  if mask is None:
    mask = True
  if mask is DEFAULT_WEIGHT_DECAY_MASK:
    mask = default_weight_decay_mask
  if callable(mask):
    mask = mask(params)
  expanded = _broadcast_prefix(mask, params, argname)

  def to_bool(value: Any) -> bool:
    if isinstance(value, jax.core.Tracer):
      raise TypeError(
          f"`{argname}` leaves must be static booleans, got a traced value. Compute the mask "
          "from parameter names/shapes (e.g. with `lamb_optax.path_mask`), not from values."
      )
    if np.ndim(value) != 0:
      raise TypeError(f"`{argname}` leaves must be scalar booleans, got shape {np.shape(value)}.")
    return bool(value)

  return jax.tree.map(to_bool, expanded)


def resolve_stacked_axes(
    stacked_axes: StackedAxesSpec, params: PyTree, argname: str = "stacked_axes"
) -> PyTree:
  """Turns a ``stacked_axes`` spec into one validated int per leaf of ``params``.

  >>> import jax.numpy as jnp
  >>> resolve_stacked_axes({"layers": 1, "head": 0},
  ...                      {"layers": {"kernel": jnp.zeros((4, 3, 3))}, "head": jnp.zeros(3)})
  {'head': 0, 'layers': {'kernel': 1}}
  """
  if stacked_axes is None:
    stacked_axes = 0
  if callable(stacked_axes):
    stacked_axes = stacked_axes(params)
  expanded = _broadcast_prefix(stacked_axes, params, argname)

  def check(path, axes, leaf) -> int:
    if isinstance(axes, (bool, np.bool_)) or not isinstance(axes, (int, np.integer)):
      raise TypeError(
          f"`{argname}` must hold ints (leading layer axes per leaf); got {axes!r} at "
          f"'{path_to_str(path)}'."
      )
    rank = np.ndim(leaf)
    if not 0 <= axes <= rank:
      raise ValueError(
          f"`{argname}` is {axes} at '{path_to_str(path)}', but that leaf has rank {rank} "
          f"(shape {np.shape(leaf)}): it can stack at most {rank} layer axes. Use 0 for leaves "
          "that are not stacked by `scan`."
      )
    return int(axes)

  return jax.tree_util.tree_map_with_path(check, expanded, params)
