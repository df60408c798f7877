"""Parameter paths, masks and stacked-layer axes.

LAMB-style optimizers make three per-leaf decisions: whether to decay a leaf, whether to adapt
its step by the trust ratio, and how many of its leading axes index independent layers (Flax
``scan`` over layers stacks L layers into one array). Users express the first two as masks and
the third as ``stacked_axes``; this module turns those specifications into concrete, validated
per-leaf values, once, at trace time.

Masks are *static*: every leaf's decision is a Python ``bool`` known when the optimizer is traced,
so the compiled update contains no ``where`` over whole tensors and no work for masked-out leaves.

Specs are matched to the params by key names, not container types: a plain dict describes params
that arrive as ``nnx.State`` (``nnx.Optimizer``), ``FrozenDict``, registered dataclasses or
``optax.masked``/``optax.multi_transform`` trees with ``MaskedNode`` holes. Callables get the
params exactly as the optimizer is handed them. :func:`static_structure_args` keeps these
arguments static under ``optax.inject_hyperparams``.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import jax
import numpy as np

from lamb_optax import validation

PyTree = Any
MaskSpec = bool | PyTree | Callable[[PyTree], PyTree] | None
StackedAxesSpec = int | PyTree | Callable[[PyTree], PyTree] | None

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
  {'Dense_0': {'bias': False, 'kernel': True}, 'LayerNorm_0': {'bias': False, 'scale': False},
   'embed': {'embedding': True}}
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

# Arguments that decide the program's structure, which no schedule may change.
STRUCTURE_ARGS = frozenset(
    {"mask", "weight_decay_mask", "trust_ratio_mask", "stacked_axes", "mu_dtype"})

_Factory = TypeVar("_Factory", bound=Callable[..., Any])


class _Static:
  """A structure argument on its way through ``optax.inject_hyperparams``, unwrapped after."""

  __slots__ = ("value",)

  def __init__(self, value: Any):
    self.value = value

  def __repr__(self) -> str:
    return f"_Static({self.value!r})"


class _StructureArgsSignature(inspect.Signature):
  """A signature whose ``bind`` wraps the :data:`STRUCTURE_ARGS` it binds in :class:`_Static`.

  ``optax.inject_hyperparams`` binds the factory's arguments with ``inspect.signature(f).bind``,
  then takes every callable for a schedule of the step count (a mask or ``stacked_axes``
  function would be called with the count instead of the params) and every number for a
  hyperparameter it turns into an array (an int ``stacked_axes`` would stop being static).
  Wrapped, they are neither, so they reach the factory as given, ``static_args`` or not.
  """

  __slots__ = ()

  def bind(self, /, *args: Any, **kwargs: Any) -> inspect.BoundArguments:
    bound = super().bind(*args, **kwargs)
    for name in STRUCTURE_ARGS.intersection(bound.arguments):
      bound.arguments[name] = _Static(bound.arguments[name])
    return bound


def static_structure_args(factory: _Factory) -> _Factory:
  """Decorates an optimizer factory so that ``optax.inject_hyperparams`` keeps its masks,
  ``stacked_axes`` and ``mu_dtype`` as given (callables included), with no ``static_args``.

  The decorated factory also refuses strings as masks or ``stacked_axes`` at construction
  (:func:`lamb_optax.validation.check_structure_spec`).

  >>> import jax.numpy as jnp, optax, lamb_optax
  >>> tx = optax.inject_hyperparams(lamb_optax.lamb)(
  ...     learning_rate=0.1, stacked_axes=lambda p: {k: int(k == "layers") for k in p})
  >>> state = tx.init({"layers": jnp.ones((3, 2)), "head": jnp.ones(2)})
  >>> lamb_optax.trust_ratios(state)["layers"].shape  # one ratio per stacked layer
  (3,)
  """

  signature = inspect.signature(factory)
  specs = [name for name in signature.parameters if name in STRUCTURE_ARGS - {"mu_dtype"}]

  @functools.wraps(factory)
  def wrapped(*args: Any, **kwargs: Any) -> Any:
    args = tuple(a.value if isinstance(a, _Static) else a for a in args)
    kwargs = {k: v.value if isinstance(v, _Static) else v for k, v in kwargs.items()}
    bound = signature.bind(*args, **kwargs).arguments
    for name in specs:
      if name in bound:
        validation.check_structure_spec(bound[name], name)
    return factory(*args, **kwargs)

  # inspect.signature reads __signature__, which typeshed does not declare on functions.
  cast(Any, wrapped).__signature__ = _StructureArgsSignature.from_callable(factory)
  return cast(_Factory, wrapped)


def _children(tree: PyTree) -> tuple[list[tuple[str, PyTree]], Any] | None:
  """One level of ``tree``: (name, child) pairs and the node's treedef; None for a leaf.

  Names are the key names of :func:`path_to_str`, so a dict key, a dataclass field, a
  ``FrozenDict`` or ``nnx.State`` key and a list index all read the same.
  """
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is not tree)
  if jax.tree_util.treedef_is_leaf(treedef) and treedef.num_leaves == 1:
    return None
  return [(_key_name(path[0]), child) for path, child in flat], treedef


def _match_structure(spec: PyTree, params: PyTree, argname: str, where: tuple[str, ...] = ()
                     ) -> PyTree:
  """Expands ``spec`` (a prefix of ``params``, matched by key names) to one value per leaf.

  Matching by names rather than by container types lets a plain dict describe params that
  arrive as ``nnx.State``, ``FrozenDict``, registered dataclasses or ``optax.masked`` trees (whose
  masked-out subtrees are leafless ``MaskedNode`` holes, skipped here). The result has the
  params' own containers.

  >>> import collections
  >>> Dense = collections.namedtuple("Dense", "kernel bias")
  >>> _match_structure({"dense": {"kernel": True, "bias": False}}, {"dense": Dense(1, 2)}, "mask")
  {'dense': Dense(kernel=True, bias=False)}
  """
  spec_level = _children(spec)
  if spec_level is None:  # a leaf of the spec decides the whole params subtree
    return jax.tree.map(lambda _: spec, params)
  if not jax.tree.leaves(params):  # None, MaskedNode, empty container: nothing to decide
    return params
  params_level = _children(params)
  here = "/".join(where) or "(root)"
  if params_level is None:
    raise ValueError(f"`{argname}` has a subtree at '{here}', where the params have a leaf.")
  spec_children = dict(spec_level[0])
  names = [name for name, _ in params_level[0]]
  extra = sorted(set(spec_children) - set(names))
  if extra:
    raise ValueError(
        f"`{argname}` has {extra} at '{here}', which the params lack (they have {sorted(names)})."
    )
  matched = []
  for name, child in params_level[0]:
    if name not in spec_children:
      if not jax.tree.leaves(child):
        matched.append(child)
        continue
      raise ValueError(
          f"`{argname}` has no entry for the params' '{'/'.join(where + (name,))}' (it has "
          f"{sorted(spec_children)} at '{here}')."
      )
    matched.append(_match_structure(spec_children[name], child, argname, where + (name,)))
  return params_level[1].unflatten(matched)


def resolve_mask(mask: MaskSpec, params: PyTree, argname: str = "mask") -> PyTree:
  """Turns a mask spec into a pytree of Python bools, one per leaf of ``params``.

  ``None`` and ``True`` select every leaf, ``False`` none; :data:`DEFAULT_WEIGHT_DECAY_MASK`
  means :func:`default_weight_decay_mask`; a callable is called on ``params``;
  a pytree must match ``params`` (or be a prefix of it) by key names, whatever the containers
  (see :func:`_match_structure`). Leaves must be static (Python or NumPy
  bools, or concrete arrays), since masks decide the program's shape, not its values.
  """
  if mask is None:
    mask = True
  if mask is DEFAULT_WEIGHT_DECAY_MASK:
    mask = default_weight_decay_mask
  if callable(mask):
    mask = mask(params)
  expanded = _match_structure(mask, params, argname)

  def to_bool(path, value: Any) -> bool:
    if isinstance(value, (str, bytes)):  # bool("kernel") is True: it would select every leaf
      raise TypeError(f"`{argname}` leaves must be booleans, got {value!r} at "
                      f"'{path_to_str(path)}'. To select by name use `lamb_optax.path_mask`.")
    if isinstance(value, jax.core.Tracer):
      raise TypeError(
          f"`{argname}` leaves must be static booleans, got a traced value. Compute the mask "
          "from parameter names/shapes (e.g. with `lamb_optax.path_mask`), not from values."
      )
    if np.ndim(value) != 0:
      raise TypeError(f"`{argname}` leaves must be scalar booleans, got shape {np.shape(value)}.")
    return bool(value)

  return jax.tree_util.tree_map_with_path(to_bool, expanded)


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
  expanded = _match_structure(stacked_axes, params, argname)

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
