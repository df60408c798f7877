"""Where a compiled step spends its time: a ``jax.profiler`` trace attributed through the HLO.

XLA:CPU (and TPU/GPU) name each executed kernel after its HLO instruction (``fusion.12``,
``dot.3``, ``ynn_fusion.2``), and the optimized HLO text (``compiled.as_text()``) gives every
instruction its op, shape, JAX name stack (``op_name``) and Python source frame. So a perfetto
trace of a few steps (``jax.profiler.trace(dir, create_perfetto_trace=True)``) plus the HLO
attribute each kernel's time to a line of our code, and :data:`CATEGORIES` groups those into
the costs worth naming: matmuls (any kernel that contains a dot or convolution) against
dropout's random bits, the layer scan's residual stacks, indexing the stacked weights, the
optimizer, norms, normalisation, activations, copies...

The grouping reads source functions and op names, so it is a heuristic for this package's
code, not a general profiler: ``other`` collects what no rule names (its top kernels are
listed). Kernel times on different threads overlap, so shares are of summed kernel time.

>>> hlo = '''HloModule m
...
... ENTRY %main {
...   %dot.1 = f32[8,8]{1,0} dot(%a, %b), metadata={op_name="jit(f)/dot_general"}
...   %copy.2 = f32[8,8]{1,0} copy(%dot.1)
... }
... '''
>>> sorted(instructions(hlo))
['copy.2', 'dot.1']
>>> [(c.name, round(c.seconds, 3)) for c in attribute(instructions(hlo),
...     {"dot.1": (0.3, 1), "copy.2": (0.1, 1)}, steps=1)]
[('matmul', 0.3), ('layout copies and transposes', 0.1)]
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import os
import re
from collections.abc import Callable, Mapping

# Trace events that are not kernels: executors, thread pools, Python frames.
# Runtime events, not kernels. "Rendezvous" and its "Wait: pending_threads=k/n" are a
# collective's wait for the other devices' threads, nested inside the collective's own event
# (e.g. "all-reduce"), which already counts that time: counting them too charged the wait twice.
_NOT_KERNELS = (
    "ThunkExecutor", "SlinkyThreadPool", "$", "PjitFunction", "PjRt", "Xla", "CommonPjRt",
    "Rendezvous", "Wait: ")
# Control flow: their events span their bodies' kernels, which are counted themselves.
_CONTAINERS = ("while", "conditional", "call")


@dataclasses.dataclass(frozen=True)
class Instruction:
  op: str  # HLO opcode: fusion, dot, copy, ...
  shape: str
  op_name: str  # JAX name stack, e.g. jit(train_step)/while/body/.../dot_general
  file: str  # Python source of the instruction (base name), "" when unknown
  function: str
  line: int
  has_matmul: bool  # a dot or convolution, itself or inside its fused computation


@dataclasses.dataclass(frozen=True)
class Cost:
  name: str
  seconds: float  # per step
  share: float  # of all kernel time
  top: tuple[str, ...] = ()  # the largest kernels, for "other"


def _table(text: str, name: str) -> dict[int, str]:
  match = re.search(rf"^{name}\n(.*?)\n\n", text, re.S | re.M)
  lines = match.group(1).splitlines() if match else []
  return {int(line.split(None, 1)[0]): line.split(None, 1)[1] for line in lines}


def _source_frames(text: str) -> dict[int, tuple[str, str, int]]:
  """stack_frame_id -> (file, function, line) of the innermost frame, from the HLO's tables."""
  files = {k: os.path.basename(v.strip('"')) for k, v in _table(text, "FileNames").items()}
  functions = {k: v.strip('"') for k, v in _table(text, "FunctionNames").items()}
  locations = {}
  for k, v in _table(text, "FileLocations").items():
    f = dict(re.findall(r"(\w+)=(\d+)", v))
    locations[k] = (files.get(int(f["file_name_id"]), ""),
                    functions.get(int(f["function_name_id"]), ""), int(f["line"]))
  frames = {}
  for k, v in _table(text, "StackFrames").items():
    location = int(dict(re.findall(r"(\w+)=(\d+)", v))["file_location_id"])
    frames[k] = locations.get(location, ("", "", 0))
  return frames


def instructions(hlo_text: str) -> dict[str, Instruction]:
  """Every instruction of an optimized HLO module's text, by name."""
  frames = _source_frames(hlo_text)
  bodies: dict[str, list[str]] = collections.defaultdict(list)
  parsed = {}
  computation = None
  for line in hlo_text.splitlines():
    header = re.match(r"^(?:ENTRY )?%(\S+) .*\{$", line)
    if header:
      computation = header.group(1)
      continue
    # The shape may be a tuple with spaces (while, conditional): the op is the first "word(".
    match = re.match(r"^\s*(?:ROOT )?%(\S+) = (.*?) ([a-z][\w\-]*)\(", line)
    if not match or computation is None:
      continue
    bodies[computation].append(match.group(3))
    op_name = re.search(r'op_name="([^"]*)"', line)
    frame = re.search(r"stack_frame_id=(\d+)", line)
    calls = re.search(r"calls=%([\w.\-]+)", line)
    location = frames.get(int(frame.group(1)), ("", "", 0)) if frame else ("", "", 0)
    parsed[match.group(1)] = (match.group(2), match.group(3), op_name and op_name.group(1) or "",
                              location, calls and calls.group(1))

  def has_matmul(op, calls):
    return op in ("dot", "convolution") or (
        calls is not None and any(o in ("dot", "convolution") for o in bodies.get(calls, ())))

  return {name: Instruction(op, shape, op_name, *source, has_matmul(op, calls))
          for name, (shape, op, op_name, source, calls) in parsed.items()}


def kernel_seconds(trace_dir: str) -> dict[str, tuple[float, int]]:
  """Kernel name -> (total seconds, calls) from the newest perfetto trace under ``trace_dir``."""
  paths = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"),
                           recursive=True), key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f"No perfetto_trace.json.gz under {trace_dir}: trace with "
                            "jax.profiler.trace(dir, create_perfetto_trace=True).")
  with gzip.open(paths[-1]) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  totals: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith(_NOT_KERNELS):
      totals[e["name"]][0] += e.get("dur", 0) / 1e6
      totals[e["name"]][1] += 1
  return {k: (v[0], v[1]) for k, v in totals.items()}


Rule = Callable[[str, Instruction], bool]


def _in(*functions: str) -> Rule:
  return lambda name, i: any(f == i.function or i.function.startswith(f + ".")
                             for f in functions)


def _files(*files: str) -> Rule:
  return lambda name, i: i.file in files


_OPTAX = ("_combining.py", "_masking.py", "_adding.py", "transform.py", "numerics.py",
          "update.py", "base.py", "transforms.py", "aliases.py", "schedules.py", "alias.py")

# (category, rule), first match wins. The names are the suspects of a BERT train step.
CATEGORIES: tuple[tuple[str, Rule], ...] = (
    ("matmul", lambda n, i: i.has_matmul),
    ("dropout: random bits and masks", lambda n, i: i.function in ("_dropout", "_uniform16") or any(
        s in i.op_name for s in ("_bernoulli", "_uniform", "threefry", "random_bits"))),
    ("layer scan: residual stacks and gradient buffers (zero fill, dynamic-update-slice)",
     lambda n, i: "dynamic-update-slice" in n or "dynamic_update" in i.op_name
     or n.startswith("wrapped_broadcast")),
    ("layer scan: taking one layer of the stacked weights (slices and their transposes)",
     lambda n, i: "dynamic-slice" in n or "dynamic_index_in_dim" in i.op_name
     or "dynamic_slice" in i.op_name
     or (i.file == "bert_encoder.py" and "BertEncoder" in i.function)),
    ("norms: gradient, new params, trust ratios", _files("_tree_math.py")),
    ("optimizer update", _files(*_OPTAX)),
    ("non-finite skip (select / conditional)", lambda n, i: i.file == "step.py" and (
        "select" in i.op_name or "cond" in i.op_name)),
    ("accumulation, loss and metric sums", lambda n, i: i.file == "step.py" or i.function in (
        "masked_lm_sums", "next_sentence_sums", "BertPretraining._sums")),
    ("attention softmax and padding mask", _in("BertSelfAttention.__call__")),
    ("GELU", _in("_activation")),
    ("LayerNorm", _files("normalization.py")),
    ("dense bias adds", _files("linear.py")),
    ("embeddings", _in("BertEmbeddings.__call__")),
    ("masked-position gather", _in("_gather")),
    ("layout copies and transposes", lambda n, i: i.op in ("copy", "transpose")
     or n.startswith(("copy", "transpose"))),
)


def attribute(instrs: Mapping[str, Instruction], times: Mapping[str, tuple[float, int]],
              steps: int, categories=CATEGORIES) -> list[Cost]:
  """Per-step seconds and share of kernel time by category, largest first; ``other`` last."""
  seconds: dict[str, float] = collections.defaultdict(float)
  other: dict[str, float] = collections.defaultdict(float)
  for name, (total, _) in times.items():
    instr = instrs.get(name)
    if instr and instr.op in _CONTAINERS:
      continue
    category = instr and next((c for c, rule in categories if rule(name, instr)), None)
    if category:
      seconds[category] += total
    else:
      other[name] += total
  everything = sum(seconds.values()) + sum(other.values()) or 1.0
  costs = [Cost(c, t / steps, t / everything) for c, t in seconds.items()]
  costs.sort(key=lambda c: -c.seconds)
  if other:
    top = tuple(n for n, _ in sorted(other.items(), key=lambda kv: -kv[1])[:5])
    costs.append(Cost("other", sum(other.values()) / steps, sum(other.values()) / everything, top))
  return costs


def markdown(costs: list[Cost]) -> str:
  """The table docs/model.md shows."""
  lines = ["| cost | s / step | share |", "|---|---|---|"]
  for c in costs:
    note = f" (largest: {', '.join(c.top)})" if c.top else ""
    lines.append(f"| {c.name}{note} | {c.seconds:.3f} | {100 * c.share:.1f}% |")
  return "\n".join(lines)
