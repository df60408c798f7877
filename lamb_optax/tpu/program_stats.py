"""What one train step does, counted from its programs with every loop's trips: matmul FLOPs
from the jaxpr, bytes moved and collectives from the optimized HLO.

XLA's cost analysis (``compiled.cost_analysis()``) adds up each computation once, so the body of
a ``lax.scan`` (the scan over micro-batches, the scan over layers) counts as one iteration; on
XLA:TPU the test ``tests/tpu/test_compile_for.py`` shows it. Two counts here put the missing
iterations back:

* :func:`jaxpr_dot_flops` counts the ``dot_general`` FLOPs of a jaxpr, scan bodies times their
  ``length`` (and, for comparison, once). Matmuls are > 95% of a transformer's FLOPs; remat's
  recomputed matmuls are in the jaxpr, so they count.
* :func:`analyse` reads the optimized HLO of one device: each computation runs as often as the
  while loops around it say (the trip count from ``known_trip_count``, else from the loop
  condition ``i < N``); it counts bytes as operands + result of every instruction a
  computation runs (a fusion as one), except that a slice (``slice``, ``dynamic-slice``, the
  async ``slice-start``) reads only its slice and a ``dynamic-update-slice`` writes only its
  update, in place (also inside fusions): a scan step touches one layer of its stacks. An async
  copy counts at its start, once; an ``AllocateBuffer`` custom-call (a reservation) counts
  nothing. Only arrays in HBM count (layouts without a memory space
  ``S(n)``, n > 0): XLA:TPU stages arrays in on-chip memory (v4's CMEM, VMEM) with async copies,
  and reads and writes of the staged copies are no HBM traffic; ``bytes_all_spaces`` counts
  them too. It also counts the collectives (count and result bytes).

>>> text = '''
... HloModule m
... %cond (q: (s32[], f32[8,16])) -> pred[] {
...   %q = (s32[], f32[8,16]) parameter(0)
...   %j = s32[] get-tuple-element(%q), index=0
...   %n = s32[] constant(3)
...   ROOT %lt = pred[] compare(%j, %n), direction=LT
... }
... %body (p: (s32[], f32[8,16])) -> (s32[], f32[8,16]) {
...   %p = (s32[], f32[8,16]) parameter(0)
...   %x = f32[8,16]{1,0} get-tuple-element(%p), index=1
...   %ar = f32[8,16]{1,0} all-reduce(%x), replica_groups={}, to_apply=%add
...   %i = s32[] get-tuple-element(%p), index=0
...   ROOT %t = (s32[], f32[8,16]) tuple(%i, %ar)
... }
... ENTRY %main (a: f32[8,16]) -> f32[8,16] {
...   %a = f32[8,16]{1,0} parameter(0)
...   %w = (s32[], f32[8,16]) while(%a), condition=%cond, body=%body
... }
... '''
>>> s = analyse(text)
>>> s.while_loops, s.collectives["all-reduce"], s.bytes, s.bytes_once
({'body': 3}, {'count': 3, 'bytes': 1536.0}, 3108.0, 1033.0)
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from typing import Any

COLLECTIVES = ("all-reduce", "reduce-scatter", "all-gather", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
                "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8,
                "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*(?:\(.*\)\s*->\s*.*)?\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([a-z][\w\-]*)\((.*)$")
_ARRAY = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]")
# An array with its layout, whose S(n) names a memory space other than the device's main memory
# (0): on TPU, on-chip memories and synchronisation flags, not HBM.
_ARRAY_LAYOUT = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\](\{[^{}]*\})?")
_MEMORY_SPACE = re.compile(r"S\((\d+)\)")
# Instructions that move no data of their own (views, plumbing, loops whose bodies count).
_NO_TRAFFIC = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "while",
               "conditional", "call", "after-all", "partition-id", "replica-id", "iota",
               "opt-barrier", "copy-done", "slice-done", "all-reduce-done", "all-gather-done",
               "collective-permute-done", "async-done", "async-update", "get-dimension-size"}
# Instructions whose operand 0 is read only where the result comes from.
_SLICES = ("slice", "dynamic-slice")


@dataclasses.dataclass
class _Instruction:
  name: str
  shape: str  # the result's type text, e.g. "f32[8,16]{1,0}" or a tuple
  opcode: str
  rest: str  # operands and attributes
  root: bool = False

  @property
  def operands(self) -> list[str]:
    return re.findall(r"%([\w.\-]+)", self.rest.split("), ", 1)[0])

  @property
  def called(self) -> str | None:
    m = re.search(r"\bcalls=%?([\w.\-]+)", self.rest)
    return m.group(1) if m else None


@dataclasses.dataclass
class HloStats:
  """Per-device figures of one run of an optimized HLO module."""

  runs: dict[str, int]  # executed computation -> times it runs per module run
  bytes: float  # bytes read + written in HBM (memory space 0), loops counted with their trips
  bytes_once: float  # the same with every loop body once (how XLA's cost analysis counts loops)
  collectives: dict[str, dict[str, float]]  # op -> {"count", "bytes"}; bytes = result bytes
  fusions: int  # fusion instructions in executed computations, each counted once
  while_loops: dict[str, int]  # loop body -> trip count
  bytes_all_spaces: float = 0.0  # ``bytes`` counting every memory space, on-chip ones too


def shape_bytes(shape: str, hbm: bool = False) -> float:
  """Bytes of every array in a type text: ``(f32[8,16]{1,0}, bf16[4])`` -> 520; with ``hbm``
  only the arrays in memory space 0 (``f32[8]{0:S(3)}`` counts 0)."""
  return sum(_array_bytes(dtype, dims) for dtype, dims, layout in _ARRAY_LAYOUT.findall(shape)
             if not (hbm and _space(layout)))


def _space(layout: str) -> int:
  m = _MEMORY_SPACE.search(layout or "")
  return int(m.group(1)) if m else 0


def _array_bytes(dtype: str, dims: str) -> float:
  return _DTYPE_BYTES.get(dtype, 4) * math.prod(int(d) for d in dims.split(",") if d)


def parse(text: str) -> tuple[dict[str, list[_Instruction]], str | None]:
  """Computations (name -> instructions) of an HLO module's text, and the entry's name."""
  computations: dict[str, list[_Instruction]] = {}
  entry, current = None, None
  for line in text.splitlines():
    if current is None:
      m = _COMPUTATION.match(line.strip())
      if m and not line.startswith("HloModule"):
        current = m.group(1)
        computations[current] = []
        entry = current if line.lstrip().startswith("ENTRY") else entry
      continue
    if line.strip() == "}":
      current = None
      continue
    m = _INSTRUCTION.match(line)
    if m:
      computations[current].append(
          _Instruction(*m.groups(), root=line.lstrip().startswith("ROOT")))
  return computations, entry


def _trip_count(inst: _Instruction, computations: dict[str, list[_Instruction]]) -> int:
  """A while loop's trip count: XLA's ``known_trip_count``, else N of a condition ``i < N``
  (loops from ``lax.scan`` and ``fori_loop`` count from 0), else 1 (as XLA counts it)."""
  m = re.search(r'"known_trip_count":\{"n":"(\d+)"', inst.rest)
  if m:
    return int(m.group(1))
  m = re.search(r"condition=%?([\w.\-]+)", inst.rest)
  cond = computations.get(m.group(1), []) if m else []
  constants = {i.name: i.rest for i in cond if i.opcode == "constant"}
  for i in cond:
    if i.opcode == "compare" and "direction=LT" in i.rest:
      operands = re.findall(r"%([\w.\-]+)", i.rest.split(")", 1)[0])
      if len(operands) == 2 and operands[1] in constants:
        value = re.match(r"\s*(-?\d+)\)", constants[operands[1]])
        if value:
          return max(1, int(value.group(1)))
  return 1


def _callees(inst: _Instruction, computations) -> list[tuple[str, int]]:
  """Computations ``inst`` runs and how often per run of ``inst``."""
  out = []
  if inst.opcode == "while":
    n = _trip_count(inst, computations)
    out += [(c, n) for c in re.findall(r"\bbody=%?([\w.\-]+)", inst.rest)]
    out += [(c, n + 1) for c in re.findall(r"\bcondition=%?([\w.\-]+)", inst.rest)]
  for key in ("calls", "to_apply", "true_computation", "false_computation"):
    out += [(c, 1) for c in re.findall(rf"\b{key}=%?([\w.\-]+)", inst.rest)]
  m = re.search(r"branch_computations=\{([^}]*)\}", inst.rest)
  if m:  # a conditional runs one branch; counting each once overstates, but they are rare here
    out += [(c.strip().lstrip("%"), 1) for c in m.group(1).split(",")]
  return out


def _runs(computations: dict[str, list[_Instruction]], entry: str | None) -> dict[str, int]:
  """How often each computation reachable from the entry runs per module run."""
  runs: dict[str, int] = collections.defaultdict(int)

  def visit(comp: str, n: int, depth: int = 0) -> None:
    if comp not in computations or depth > 64:
      return
    runs[comp] += n
    for inst in computations[comp]:
      for callee, k in _callees(inst, computations):
        visit(callee, n * k, depth + 1)

  if entry:
    visit(entry, 1)
  return dict(runs)


def analyse(text: str) -> HloStats:
  """Counts ``text`` (``compiled.as_text()``, one device's program) as the module says."""
  computations, entry = parse(text)
  shapes = {i.name: i.shape for insts in computations.values() for i in insts}
  # Fusion bodies, reductions' adders, ...: their cost is their caller's instruction's.
  inner = {c for insts in computations.values() for i in insts if i.opcode != "while"
           for c, _ in _callees(i, computations)}
  stats = HloStats(runs={}, bytes=0.0, bytes_once=0.0, fusions=0, while_loops={},
                   collectives=collections.defaultdict(lambda: {"count": 0, "bytes": 0.0}))
  all_spaces = 0.0
  for comp, n in _runs(computations, entry).items():
    if comp in inner:
      continue
    stats.runs[comp] = n
    traffic = sum(_traffic(i, shapes, computations) for i in computations[comp])
    stats.bytes += n * traffic
    stats.bytes_once += traffic
    all_spaces += n * sum(_traffic(i, shapes, computations, hbm=False)
                          for i in computations[comp])
    for i in computations[comp]:
      stats.fusions += i.opcode == "fusion"
      op = _collective(i.opcode)
      if op:
        stats.collectives[op]["count"] += n
        stats.collectives[op]["bytes"] += n * _collective_bytes(i)
      if i.opcode == "while":
        for body in re.findall(r"\bbody=%?([\w.\-]+)", i.rest):
          stats.while_loops[body] = _trip_count(i, computations)
  stats.collectives = {k: dict(v) for k, v in stats.collectives.items()}
  stats.bytes_all_spaces = all_spaces
  return stats


def _collective(opcode: str) -> str | None:
  """The collective an opcode starts (``all-reduce``, ``all-reduce-start``), else None."""
  base = opcode[:-len("-start")] if opcode.endswith("-start") else opcode
  return base if base in COLLECTIVES else None


def _collective_bytes(inst: _Instruction) -> float:
  """The bytes a collective produces on this device (an async start's tuple holds its operands
  too, so only its last element, the result, counts)."""
  if inst.opcode.endswith("-start") and inst.shape.startswith("("):
    arrays = _ARRAY.findall(inst.shape)
    if arrays:
      return _array_bytes(*arrays[-1])
  return shape_bytes(inst.shape)


def _traffic(inst: _Instruction, shapes: dict[str, str],
             computations: dict[str, list[_Instruction]], hbm: bool = True) -> float:
  """Bytes an instruction reads and writes: its operands plus its result, except what a
  (dynamic or async) slice does not read and a ``dynamic-update-slice`` writes in place (also
  inside fusions): a scan's step reads one layer of its stacked inputs and writes one row of its
  stacked outputs, not the whole stacks (counting them whole overstated a 24-layer step ~10x).
  With ``hbm``, only arrays in HBM count: XLA:TPU's memory-space assignment stages operands in
  on-chip memory (layouts ``S(n)``, n > 0) with async copies, which read HBM once; what then
  reads or writes the staged copy moves no HBM bytes."""
  if inst.opcode in _NO_TRAFFIC or _allocates_only(inst):
    return 0.0
  if inst.opcode in ("copy-start", "slice-start") and inst.shape.startswith("("):
    # An async copy's tuple is (destination, source, context), an async slice's ((source),
    # destination, context): it reads the source, or for a slice only the slice, and writes the
    # destination once (its -done moves nothing more).
    arrays = _ARRAY_LAYOUT.findall(inst.shape)
    dest = arrays[0 if inst.opcode == "copy-start" else 1]
    result = 0.0 if hbm and _space(dest[2]) else _array_bytes(*dest[:2])
    source_shape = shapes.get(inst.operands[0], "")
    if inst.opcode == "copy-start":
      return shape_bytes(source_shape, hbm) + result
    source = _ARRAY_LAYOUT.findall(source_shape)
    in_hbm = not (hbm and source and _space(source[0][2]))
    return (_array_bytes(*dest[:2]) if in_hbm else 0.0) + result
  body = computations.get(inst.called or "") if inst.opcode == "fusion" else None
  read = 0.0
  for k, operand in enumerate(inst.operands):
    full = shape_bytes(shapes.get(operand, ""), hbm)
    if body is not None:
      read += min(full, _param_read(body, k, computations, full))
    elif k == 0 and inst.opcode in _SLICES:
      read += min(full, shape_bytes(inst.shape))
    elif not (k == 0 and inst.opcode == "dynamic-update-slice"):
      read += full
  return read + _written(inst, shapes, computations, hbm)


def _allocates_only(inst: _Instruction) -> bool:
  """XLA:TPU's ``AllocateBuffer`` custom-call reserves a buffer (e.g. the stacks a layer loop
  saves activations into) and moves no data: its result is not a write."""
  return inst.opcode == "custom-call" and 'custom_call_target="AllocateBuffer"' in inst.rest


def _written(inst: _Instruction, shapes: dict[str, str],
             computations: dict[str, list[_Instruction]], hbm: bool = False) -> float:
  """Bytes ``inst`` writes: a dynamic-update-slice (or a fusion ending in one) only its update."""
  if hbm and not shape_bytes(inst.shape, hbm):
    return 0.0  # the result lives in on-chip memory
  if inst.opcode == "dynamic-update-slice":
    return shape_bytes(shapes.get(inst.operands[1], ""))
  if inst.opcode == "fusion" and inst.called in computations:
    body = computations[inst.called]
    local = {i.name: i for i in body}
    root = next((i for i in body if i.root), None)
    if root is not None:
      parts = [local[o] for o in root.operands if o in local] if root.opcode == "tuple" else [root]
      arrays = _ARRAY_LAYOUT.findall(inst.shape)
      spaces = ([_space(a[2]) for a in arrays] if hbm and len(arrays) == len(parts)
                else [0] * len(parts))
      return sum(_written(_through_bitcasts(p, local), shapes, computations)
                 for p, space in zip(parts, spaces, strict=True) if not space)
  return shape_bytes(inst.shape, hbm)


def _through_bitcasts(inst: _Instruction, local: dict[str, _Instruction]) -> _Instruction:
  while inst.opcode == "bitcast" and inst.operands and inst.operands[0] in local:
    inst = local[inst.operands[0]]
  return inst


def _dims(shape: str) -> list[str]:
  return [dims for _, dims in _ARRAY.findall(shape)]


def _relayout(user: _Instruction, name: str, body: list[_Instruction]) -> bool:
  """A one-operand fusion giving ``name``'s array in another layout (a tiling change): what is
  read of it is what its own users read."""
  source = next((i for i in body if i.name == name), None)
  return (user.opcode == "fusion" and user.operands == [name] and source is not None
          and _dims(user.shape) == _dims(source.shape))


def _param_read(body: list[_Instruction], index: int,
                computations: dict[str, list[_Instruction]], full: float) -> float:
  """Bytes a fused computation reads of its parameter ``index``: the slices its dynamic-slices
  take, nothing for the buffer a dynamic-update-slice updates in place, else all of it."""
  param = next((i for i in body if i.opcode == "parameter"
                and re.match(rf"\s*{index}\)", i.rest)), None)
  return full if param is None else _read_of(param.name, body, computations, full)


def _read_of(name: str, body: list[_Instruction], computations, full: float) -> float:
  read = 0.0
  for user in body:
    for k, operand in enumerate(user.operands):
      if operand != name:
        continue
      if user.opcode in _SLICES and k == 0:
        read += shape_bytes(user.shape)
      elif user.opcode == "dynamic-update-slice" and k == 0:
        pass
      elif user.opcode == "bitcast" or _relayout(user, name, body):
        read += _read_of(user.name, body, computations, full)
      elif user.opcode == "fusion" and user.called in computations:
        read += _param_read(computations[user.called], k, computations, full)
      else:
        return full
  return min(read, full)


# ------------------------------------------------------------------------------------------------
# Matmul FLOPs from the jaxpr
# ------------------------------------------------------------------------------------------------
def _sub_jaxprs(params: dict[str, Any]) -> list[Any]:
  """The jaxprs an equation's params hold (scan/while/cond/pjit/remat/custom_vjp bodies)."""
  out = []
  for value in params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      v = getattr(v, "jaxpr", v)  # ClosedJaxpr -> Jaxpr
      if hasattr(v, "eqns"):
        out.append(v)
  return out


def jaxpr_dot_flops(jaxpr: Any) -> tuple[float, float]:
  """``(flops, flops_once)`` of the matmuls (``dot_general``) in ``jaxpr`` (global shapes):
  scan bodies times ``length``, ``shard_map`` bodies (per-shard shapes) times their shards,
  Pallas kernels (per-block shapes) times their grid, a ``cond`` as its costliest branch, and
  every loop body once as XLA's cost analysis counts it.

  >>> import jax, jax.numpy as jnp
  >>> f = lambda a: jax.lax.scan(lambda c, _: (c @ a, None), a, None, length=3)[0]
  >>> jaxpr_dot_flops(jax.make_jaxpr(f)(jnp.ones((4, 4))).jaxpr)
  (384.0, 128.0)
  """
  weighted, once = 0.0, 0.0
  for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      f = 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
      weighted, once = weighted + f, once + f
      continue
    trips = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
    shards = 1  # a shard_map body (per-shard shapes) runs once on every shard
    if eqn.primitive.name == "shard_map":
      shards = math.prod(eqn.params["mesh"].shape[a] for a in eqn.params["newly_manual_axes"])
    if eqn.primitive.name == "pallas_call":  # a kernel's body (one block) runs per grid point
      shards = math.prod(getattr(eqn.params.get("grid_mapping"), "grid", ()) or (1,))
    counts = [jaxpr_dot_flops(sub) for sub in _sub_jaxprs(eqn.params)]
    if eqn.primitive.name == "cond" and counts:  # runs one branch (e.g. one per platform)
      counts = [max(counts)]
    for w, o in counts:
      weighted, once = weighted + shards * trips * w, once + shards * o
  return weighted, once
