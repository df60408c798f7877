"""What one train step does, counted from its programs with every loop's trips: matmul FLOPs
from the jaxpr, bytes moved and collectives from the optimized HLO.

XLA's cost analysis (``compiled.cost_analysis()``) adds up each computation once, so the body of
a ``lax.scan`` (the scan over micro-batches, the scan over layers) counts as one iteration; on
XLA:TPU the test ``tests/train/test_compile_for.py`` shows it. Two counts here put the missing
iterations back:

* :func:`jaxpr_dot_flops` counts the ``dot_general`` FLOPs of a jaxpr, scan bodies times their
  ``length`` (and, for comparison, once). Matmuls are > 95% of a transformer's FLOPs; remat's
  recomputed matmuls are in the jaxpr, so they count.
* :func:`analyse` reads the optimized HLO of one device: each computation runs as often as the
  while loops around it say (the trip count from ``known_trip_count``, else from the loop
  condition ``i < N``); it counts bytes as XLA does (operands + result of every instruction a
  computation runs, a fusion as one) and the collectives (count and result bytes).

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
from typing import Any, Optional

COLLECTIVES = ("all-reduce", "reduce-scatter", "all-gather", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
                "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8,
                "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*(?:\(.*\)\s*->\s*.*)?\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([a-z][\w\-]*)\((.*)$")
_ARRAY = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]")
# Instructions that move no data of their own (views, plumbing, loops whose bodies count).
_NO_TRAFFIC = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "while",
               "conditional", "call", "after-all", "partition-id", "replica-id", "iota",
               "opt-barrier", "copy-done", "all-reduce-done", "all-gather-done",
               "collective-permute-done", "async-done", "async-update", "get-dimension-size"}


@dataclasses.dataclass
class _Instruction:
  name: str
  shape: str  # the result's type text, e.g. "f32[8,16]{1,0}" or a tuple
  opcode: str
  rest: str  # operands and attributes


@dataclasses.dataclass
class HloStats:
  """Per-device figures of one run of an optimized HLO module."""

  runs: dict[str, int]  # executed computation -> times it runs per module run
  bytes: float  # bytes read + written, loops counted with their trips
  bytes_once: float  # the same with every computation once, as XLA's cost analysis counts
  collectives: dict[str, dict[str, float]]  # op -> {"count", "bytes"}; bytes = result bytes
  fusions: int  # fusion instructions in executed computations, each counted once
  while_loops: dict[str, int]  # loop body -> trip count


def shape_bytes(shape: str) -> float:
  """Bytes of every array in a type text: ``(f32[8,16]{1,0}, bf16[4])`` -> 520."""
  return sum(_DTYPE_BYTES.get(dt, 4) * math.prod(int(d) for d in dims.split(",") if d)
             for dt, dims in _ARRAY.findall(shape))


def parse(text: str) -> tuple[dict[str, list[_Instruction]], Optional[str]]:
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
      computations[current].append(_Instruction(*m.groups()))
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


def _runs(computations: dict[str, list[_Instruction]], entry: Optional[str]) -> dict[str, int]:
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
  for comp, n in _runs(computations, entry).items():
    if comp in inner:
      continue
    stats.runs[comp] = n
    traffic = sum(_traffic(i, shapes) for i in computations[comp])
    stats.bytes += n * traffic
    stats.bytes_once += traffic
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
  return stats


def _collective(opcode: str) -> Optional[str]:
  """The collective an opcode starts (``all-reduce``, ``all-reduce-start``), else None."""
  base = opcode[:-len("-start")] if opcode.endswith("-start") else opcode
  return base if base in COLLECTIVES else None


def _collective_bytes(inst: _Instruction) -> float:
  """The bytes a collective produces on this device (an async start's tuple holds its operands
  too, so only its last element, the result, counts)."""
  if inst.opcode.endswith("-start") and inst.shape.startswith("("):
    arrays = _ARRAY.findall(inst.shape)
    if arrays:
      dt, dims = arrays[-1]
      return _DTYPE_BYTES.get(dt, 4) * math.prod(int(d) for d in dims.split(",") if d)
  return shape_bytes(inst.shape)


def _traffic(inst: _Instruction, shapes: dict[str, str]) -> float:
  """Bytes an instruction reads and writes: its operands plus its result."""
  if inst.opcode in _NO_TRAFFIC:
    return 0.0
  operands = re.findall(r"%([\w.\-]+)", inst.rest.split("), ", 1)[0])
  return shape_bytes(inst.shape) + sum(shape_bytes(shapes.get(o, "")) for o in operands)


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
  scan bodies
  times ``length``, and every body once as XLA's cost analysis counts it.

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
    for sub in _sub_jaxprs(eqn.params):
      w, o = jaxpr_dot_flops(sub)
      weighted, once = weighted + trips * w, once + o
  return weighted, once
