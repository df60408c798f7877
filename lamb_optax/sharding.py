"""Logical axis names -> mesh axes: the one place that decides how arrays are sharded.

Models name the axes of their parameters and activations logically (``batch``, ``length``,
``embed``, ``heads``, ``kv``, ``mlp``, ``vocab``, ``layers``); this module maps those names onto
the axes of a device mesh by an ordered list of *rules*, MaxText-style. The mesh has up to three
axes:

* ``data``   -- data parallelism: the batch is split, parameters are replicated;
* ``fsdp``   -- fully-sharded data parallelism: the batch *and* the parameters' ``embed`` axis
  are split (XLA all-gathers weights just before use);
* ``tensor`` -- tensor (model) parallelism: attention heads, the MLP's hidden units and the
  vocabulary are split.

The rules are fixed; the *mesh shape* picks the strategy, so switching data-parallel / FSDP /
tensor-parallel is a config change (``{"data": 8}``, ``{"fsdp": 8}``, ``{"data": 4, "tensor": 2}``).

Resolution follows Flax Linen's ``logical_to_mesh_axes``: for each logical axis the first rule
whose mesh axes are not yet used by an earlier dimension of the same array wins (mesh axes the
mesh lacks are dropped, and a rule left with none is skipped); otherwise the dimension is
replicated. That lets activations ``(batch, length, embed)`` and
parameters ``(embed, mlp)`` share the name ``embed``: in an activation ``fsdp`` is already taken by
``batch``, so ``embed`` stays whole there.

Activations are constrained with :func:`constrain`, which is a no-op unless a mesh is active
(``jax.set_mesh(mesh)``): the same model code runs unsharded in tests and notebooks.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

MeshAxes = str | tuple[str, ...] | None
Rules = Sequence[tuple[str, MeshAxes]]
LogicalAxes = Sequence[str | None]

MESH_AXES = ("data", "fsdp", "tensor")

# Order matters only between rules for the same logical name (earlier = preferred).
DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("kv", None),
    ("length", None),
    ("layers", None),
    # Image models: conv channels and classes stay whole (ResNet-50 is 25.6M parameters, cheaper
    # replicated than all-gathered; an ImageNet conv stem has 3 input channels, which no mesh
    # axis divides). Named, so that one line here can shard them.
    ("conv_in", None),
    ("conv_out", None),
    ("classes", None),
)

# The metadata key under which models store each parameter's logical axes (one name or None per
# dimension). Flax's own `out_sharding` key is avoided on purpose: NNX shards such variables
# eagerly at creation and fails when no mesh is active, and it resolves names by plain lookup.
LOGICAL_AXES_KEY = "logical_axes"

_rules_var: contextvars.ContextVar[Rules] = contextvars.ContextVar(
    "lamb_optax_axis_rules", default=DEFAULT_RULES
)


def mesh_shape(axis_sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """The sizes of the mesh ``axis_sizes`` makes on ``num_devices`` devices (``config.mesh``).

  One size may be ``-1``: it takes all the devices the others leave. Axes not named get size 1,
  so every mesh has all three axes and the rules always resolve. This is the one place that
  does the arithmetic: :func:`make_mesh` builds from it, and the checks that run before any
  device exists (a TPU slice compiled from a laptop, the pod launcher) call it directly.

  >>> mesh_shape({"data": -1, "fsdp": 1, "tensor": 2}, 64)
  {'data': 32, 'fsdp': 1, 'tensor': 2}
  """
  unknown = set(axis_sizes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"Unknown mesh axes {sorted(unknown)} in config.mesh; use some of "
                     f"{MESH_AXES}.")
  sizes = {name: int(axis_sizes.get(name, 1)) for name in MESH_AXES}
  if list(sizes.values()).count(-1) > 1:
    raise ValueError(f"config.mesh {sizes}: at most one axis may be -1 (the rest of the devices).")
  if any(s == 0 or s < -1 for s in sizes.values()):
    raise ValueError(f"config.mesh {sizes}: axis sizes must be positive (or one -1).")
  known = math.prod(s for s in sizes.values() if s != -1)
  if -1 in sizes.values():
    if num_devices % known:
      raise ValueError(
          f"config.mesh {sizes} needs a multiple of {known} devices to fill its -1 axis, but there "
          f"are {num_devices}. Change --config.mesh.* or the number of devices.")
    sizes = {k: num_devices // known if s == -1 else s for k, s in sizes.items()}
  elif known != num_devices:
    raise ValueError(f"config.mesh {sizes} uses {known} devices, but there are {num_devices}; "
                     "make the sizes multiply to that, or set one of them to -1.")
  return sizes


def data_parallel_size(axis_sizes: Mapping[str, int], num_devices: int) -> int:
  """Devices that split the batch (``data × fsdp``) in the mesh of :func:`mesh_shape`.

  >>> data_parallel_size({"data": -1, "fsdp": 1, "tensor": 4}, 512)
  128
  """
  sizes = mesh_shape(axis_sizes, num_devices)
  return sizes["data"] * sizes["fsdp"]


def make_mesh(
    axis_sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """Builds a mesh with axes ``data``, ``fsdp``, ``tensor`` (in that order) from their sizes,
  as :func:`mesh_shape` computes them for ``devices`` (default: all of ``jax.devices()``).

  >>> mesh = make_mesh({"data": -1, "tensor": 2})
  >>> dict(mesh.shape)
  {'data': 4, 'fsdp': 1, 'tensor': 2}
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_shape(axis_sizes, len(devices))
  # Auto axes: shardings propagate through the program from the constraints we set (GSPMD).
  return jax.make_mesh(
      tuple(sizes[name] for name in MESH_AXES), MESH_AXES,
      axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES), devices=devices,
  )


@contextlib.contextmanager
def axis_rules(rules: Rules) -> Iterator[None]:
  """Uses ``rules`` instead of :data:`DEFAULT_RULES` in :func:`constrain` within the block."""
  token = _rules_var.set(tuple(rules))
  try:
    yield
  finally:
    _rules_var.reset(token)


def current_rules() -> Rules:
  """The rules in force: the innermost :func:`axis_rules`, else :data:`DEFAULT_RULES`."""
  return _rules_var.get()


def _as_tuple(mesh_axes: MeshAxes) -> tuple[str, ...]:
  if mesh_axes is None:
    return ()
  return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)


def logical_to_mesh_axes(
    logical_axes: LogicalAxes,
    rules: Rules | None = None,
    mesh_axis_names: Sequence[str] = MESH_AXES,
) -> PartitionSpec:
  """Resolves one array's logical axis names into a ``PartitionSpec`` on the mesh.

  Args:
    logical_axes: one logical name (or ``None`` = replicated) per dimension.
    rules: ``(logical name, mesh axis | tuple of mesh axes | None)`` pairs; default: the rules in
      force (:func:`current_rules`).
    mesh_axis_names: the mesh's axes; rules naming other axes are skipped.

  >>> logical_to_mesh_axes(("batch", "length", "embed"))
  P(('data', 'fsdp'), None, None)
  >>> logical_to_mesh_axes(("layers", "embed", "mlp"))
  P(None, 'fsdp', 'tensor')
  """
  rules = current_rules() if rules is None else rules
  known_names = {name for name, _ in rules}
  used: set[str] = set()
  spec: list[MeshAxes] = []
  for name in logical_axes:
    if name is None:
      spec.append(None)
      continue
    if name not in known_names:
      raise ValueError(
          f"Logical axis {name!r} has no sharding rule (rules cover {sorted(known_names)}). "
          f"Add a rule such as ({name!r}, None) to replicate it."
      )
    chosen: tuple[str, ...] = ()
    for rule_name, mesh_axes in rules:
      if rule_name != name:
        continue
      wanted = _as_tuple(mesh_axes)
      candidate = tuple(a for a in wanted if a in mesh_axis_names)
      if wanted and not candidate:
        continue  # this rule's axes are not in the mesh: try the next rule
      if not used.intersection(candidate):
        chosen = candidate
        break
    used.update(chosen)
    spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else chosen)
  return PartitionSpec(*spec)


def logical_sharding(
    logical_axes: LogicalAxes, mesh: Mesh, rules: Rules | None = None
) -> NamedSharding:
  """``NamedSharding`` on ``mesh`` for an array with the given logical axes."""
  return NamedSharding(mesh, logical_to_mesh_axes(logical_axes, rules, mesh.axis_names))


def _active_mesh():
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh is None or mesh.empty else mesh


def constrain(x: jax.Array, logical_axes: LogicalAxes) -> jax.Array:
  """Constrains an activation's sharding by logical names; a no-op when no mesh is active.

  Models call this at layer boundaries; the trainer activates a mesh with ``jax.set_mesh``.

  >>> import jax.numpy as jnp
  >>> constrain(jnp.ones((2, 3)), ("batch", "embed")).shape   # no mesh: unchanged
  (2, 3)
  """
  if np.ndim(x) != len(logical_axes):
    raise ValueError(
        f"constrain: array of rank {np.ndim(x)} (shape {np.shape(x)}) given "
        f"{len(logical_axes)} logical axes {tuple(logical_axes)}."
    )
  mesh = _active_mesh()
  if mesh is None:
    return x
  # Inside a shard_map, the manual axes are already split by hand: constrain over the rest.
  spec = logical_to_mesh_axes(logical_axes, mesh_axis_names=_auto_axes(mesh))
  return jax.lax.with_sharding_constraint(x, spec)


def _auto_axes(mesh) -> tuple[str, ...]:
  return tuple(a for a in mesh.axis_names if a not in mesh.manual_axes)


def first_batch_row(rows_here: int) -> int | jax.Array:
  """The global index of the first batch row that code sees, where it sees ``rows_here`` rows.

  0, except inside a ``jax.shard_map`` that makes some of the batch's mesh axes manual (the train
  step's per-shard gradient accumulation): there each shard holds a block of the global batch,
  and this is where its block starts. Position-keyed randomness (:mod:`lamb_optax.models.dropout`)
  adds it so that a row draws the same bits on every layout.

  >>> first_batch_row(8)   # no mesh, or no manual axis
  0
  """
  mesh = _active_mesh()
  if mesh is None or not mesh.manual_axes:
    return 0
  batch_axes = _as_tuple(logical_to_mesh_axes(("batch",), mesh_axis_names=mesh.axis_names)[0])
  manual = [a in mesh.manual_axes for a in batch_axes]
  if manual != sorted(manual, reverse=True):  # manual axes must lead: blocks, not strides
    raise ValueError(f"The batch's mesh axes {batch_axes} are manual only in part "
                     f"({sorted(mesh.manual_axes)}): make the leading ones manual.")
  block = 0
  for axis in batch_axes[:sum(manual)]:
    block = block * mesh.shape[axis] + jax.lax.axis_index(axis)
  return block * rows_here


def _is_variable(x: Any) -> bool:
  from flax import nnx  # Flax is needed only for NNX states.

  return isinstance(x, nnx.Variable)


def logical_axes_tree(state: Any) -> Any:
  """Per-variable logical axes (a tuple, ``None`` per unnamed dimension) of an NNX state.

  Variables without :data:`LOGICAL_AXES_KEY` metadata are replicated (all ``None``). The result
  has the structure of ``state`` with each Variable holding its tuple, as
  ``nnx.get_partition_spec``.
  """

  def axes_of(variable):
    axes = variable.get_metadata().get(LOGICAL_AXES_KEY)
    # Abstract states (nnx.eval_shape) hold ShapeDtypeStructs, which np.shape cannot read.
    shape = tuple(getattr(variable.get_value(), "shape", np.shape(variable.get_value())))
    if axes is None:
      axes = (None,) * len(shape)
    if len(axes) != len(shape):
      raise ValueError(
          f"Variable of shape {shape} has {len(axes)} logical axes {tuple(axes)}; it needs one "
          "per dimension."
      )
    return variable.replace(tuple(axes))

  return jax.tree.map(axes_of, state, is_leaf=_is_variable)


def state_shardings(state: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
  """``NamedSharding`` for every variable of an NNX state, from its logical-axes metadata.

  The result mirrors ``state`` (Variables holding shardings), ready for
  ``jax.device_put(state, shardings)`` or ``jax.jit(..., out_shardings=...)``; pass it through
  ``nnx.to_pure_dict`` for pure-dict params. ``state`` may be abstract (from ``nnx.eval_shape``),
  so shardings are known before any parameter exists.
  """

  def sharding_of(variable):
    return variable.replace(logical_sharding(variable.get_value(), mesh, rules))

  axes = logical_axes_tree(state)
  return jax.tree.map(sharding_of, axes, is_leaf=_is_variable)


def shard_state(state: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
  """Places an NNX state on ``mesh`` according to its logical axes (see :func:`state_shardings`)."""
  return jax.device_put(state, state_shardings(state, mesh, rules))


def batch_sharding(mesh: Mesh, rank: int = 2, rules: Rules | None = None) -> NamedSharding:
  """Sharding for an input feature of the given rank: dimension 0 is ``batch``, the rest whole."""
  return logical_sharding(("batch",) + (None,) * (rank - 1), mesh, rules)


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding of a value every device holds whole (steps, counts, RNG keys)."""
  return NamedSharding(mesh, PartitionSpec())


def like_params(tree: Any, params: Any, param_shardings: Any,
                default: jax.sharding.Sharding) -> Any:
  """Shardings for a tree built from the params, such as an optimizer state.

  A leaf whose key path ends with a param's path and has its shape (a moment) gets that param's
  sharding; everything else (counts, per-layer trust ratios) gets ``default``. Matching by path
  suffix works for any chain of optax states, also those with ``None`` in place of masked-out
  leaves, where ``optax.tree_map_params`` fails.
  """
  by_path = {}
  for (path, p), s in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                          jax.tree.leaves(param_shardings), strict=True):
    by_path[tuple(path)] = (p.shape, s)

  def sharding_of(path, leaf):
    for start in range(len(path)):
      shape_and_sharding = by_path.get(tuple(path[start:]))
      if shape_and_sharding is not None:
        shape, s = shape_and_sharding
        return s if tuple(leaf.shape) == tuple(shape) else default
    return default

  return jax.tree_util.tree_map_with_path(sharding_of, tree)


def to_global(local_batch: Mapping[str, Any], batch_sharding: jax.sharding.Sharding
              ) -> dict[str, jax.Array]:
  """Assembles every process's rows of a batch into global arrays laid out by ``batch_sharding``
  (``jax.make_array_from_process_local_data``).

  Process ``k`` of ``n`` must hold rows ``[kB, (k+1)B)`` of the global batch (``B`` local rows),
  as the loader gives them, so that the global array is the same ordered array for any ``n``.
  Raises a ValueError if the sharding gives this process other rows (devices not ordered by
  process along the batch axes); checked once per sharding and size.
  """
  arrays = {name: np.asarray(value) for name, value in local_batch.items()}
  if arrays and jax.process_count() > 1:
    rows = next(iter(arrays.values())).shape[0]
    _check_process_rows(batch_sharding, rows * jax.process_count(), jax.process_index())
  return {name: jax.make_array_from_process_local_data(batch_sharding, value)
          for name, value in arrays.items()}


@functools.lru_cache(maxsize=64)
def _check_process_rows(batch_sharding: jax.sharding.Sharding, global_rows: int,
                        process: int) -> None:
  """Checks this process's devices hold the contiguous rows block ``process`` (see to_global)."""
  indices = batch_sharding.addressable_devices_indices_map((global_rows,)).values()
  # A device holding no part of the array has index None.
  held = sorted({r for index in indices if index is not None
                 for r in range(*index[0].indices(global_rows))})
  block = global_rows // jax.process_count()
  if held != list(range(process * block, (process + 1) * block)):
    span = f"[{held[0]}, {held[-1] + 1})" if held else "none"
    raise ValueError(
        f"Process {process} holds rows {span} ({len(held)} rows) of the global batch of "
        f"{global_rows}, not the block [{process * block}, {(process + 1) * block}) that its "
        "data loader reads: the mesh's batch axes must list the devices process by process "
        "(jax.make_mesh over jax.devices() does). Build the mesh from devices in process order.")


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """``ShapeDtypeStruct``s of ``abstract`` laid out by ``shardings`` (what Orbax restores into,
  what jit lowers for)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)
