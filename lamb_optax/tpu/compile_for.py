"""Compile the trainer's step for a Cloud TPU slice on any machine, and say whether it fits.

``python -m lamb_optax.train --config=C --compile_for=v4-1024 [--compile_report=R.json]`` builds
the run as the trainer does (:func:`lamb_optax.train.trainer.build` on the devices of a TPU
*topology* that libtpu describes without a TPU, the slice's hosts as processes), lowers and
compiles the very ``Trainer.train_step()`` for abstract state and batch (no data, no workdir, no
parameters materialised), and reports memory per chip against HBM, FLOPs, bytes and collectives
per step, compile time, and a roofline estimate of the step time. It exits 0 when the step fits,
1 when it does not (naming the config keys to change), 2 on bad input (before compiling).

The report's counting (see :mod:`lamb_optax.tpu.program_stats`): XLA's cost analysis counts a
loop body once, so FLOPs and bytes per step are XLA's figures plus the missing iterations of the
scans (micro-batches, layers): matmul FLOPs counted in the jaxpr; bytes are counted in the
optimized HLO, every loop with its trips, arrays in HBM only (XLA's own figure, which counts loop
bodies once and on-chip memory too, stays in the report).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

from lamb_optax import accelerators
from lamb_optax import sharding
from lamb_optax.tpu import program_stats
from lamb_optax.train import plan as plan_lib
from lamb_optax.train import workdir

INSTALL_HINT = "pip install 'lamb_optax[tpu]' (or pip install 'jax[tpu]==<your jax version>')"


class CompileForError(ValueError):
  """Input that cannot be compiled for; raised before any compile, the message says the fix."""


@dataclasses.dataclass
class Report:
  """What :func:`compile_for` found; :meth:`as_json` is the ``--compile_report`` file."""

  accelerator: str
  topology: str
  chips: int
  hosts: int
  mesh: dict[str, int]
  global_batch_size: int
  micro_batch_size: int
  num_micro_batches: int
  fits: bool
  hbm_per_chip_bytes: float
  memory_per_chip_bytes: dict[str, float]
  margin_bytes: float
  compile_seconds: float
  flops_per_step: float | None = None
  flops_per_chip: float | None = None
  model_flops_per_step: float | None = None
  bytes_accessed_per_step: float | None = None
  bytes_accessed_per_chip: float | None = None
  bytes_all_memory_spaces_per_chip: float | None = None
  xla_cost_analysis_per_chip: dict[str, float] = dataclasses.field(default_factory=dict)
  loops: dict[str, int] = dataclasses.field(default_factory=dict)
  fusions: int | None = None
  collectives: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
  estimate: dict[str, Any] = dataclasses.field(default_factory=dict)
  estimated_step_seconds: float | None = None
  estimated_mfu: float | None = None
  error: str = ""
  advice: str = ""

  def as_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------
# Checks before compiling
# ------------------------------------------------------------------------------------------------
def resolve_slice(accelerator_type: str) -> tuple[accelerators.Slice, accelerators.Topology]:
  """The slice and its topology; an unknown name is a :class:`CompileForError` listing the known."""
  try:
    slice_ = accelerators.parse_accelerator(accelerator_type)
    return slice_, accelerators.topology(slice_)
  except accelerators.AcceleratorError as e:
    known = accelerators.known_accelerators()
    message = str(e) if "Known:" in str(e) else f"{e} Known: {accelerators._summarise(known)}."
    raise CompileForError(message) from None


def check_config(config, slice_: accelerators.Slice) -> plan_lib.BatchPlan:
  """The trainer's pre-compile check (:func:`lamb_optax.train.plan.check`) on ``slice_``, with a
  mesh that fits the slice suggested when ``config.mesh`` does not."""
  n = slice_.devices
  try:
    sharding.mesh_shape(dict(config.mesh), n)
  except ValueError as e:
    raise CompileForError(
        f"{slice_.accelerator_type} has {n} JAX devices ({slice_.chips} chips), which config.mesh "
        f"{dict(config.mesh)} does not fit: {e} {_mesh_hint(config, n)}") from None
  try:
    return plan_lib.check(config, n, slice_.vms)
  except ValueError as e:
    raise CompileForError(f"The trainer refuses this config on {slice_.accelerator_type} "
                          f"({n} devices, {slice_.vms} hosts): {e}") from None


def _mesh_hint(config, n: int) -> str:
  fsdp, tensor = int(config.mesh.fsdp), int(config.mesh.tensor)
  if fsdp > 0 and tensor > 0 and n % (fsdp * tensor) == 0:
    return (f"This would: --config.mesh.data=-1 --config.mesh.fsdp={fsdp} "
            f"--config.mesh.tensor={tensor} (data = {n // (fsdp * tensor)}).")
  return ("This would: --config.mesh.data=-1 --config.mesh.fsdp=1 --config.mesh.tensor=1 "
          f"(data = {n}).")


def check_libtpu() -> None:
  if importlib.util.find_spec("libtpu") is None:
    raise CompileForError(
        f"Compiling for a TPU needs libtpu, which is not installed: {INSTALL_HINT}.")


@contextlib.contextmanager
def _libtpu_off_a_tpu_vm(slice_: accelerators.Slice) -> Iterator[None]:
  """Off a TPU VM libtpu looks for TPU metadata and a lock; these variables keep it quiet and let
  a compile-only process run beside one that holds the lock (nothing here touches a TPU). They
  are set only while libtpu starts: left behind, they would tell any trainer this process starts
  later that it runs on a Cloud TPU VM (``lamb_optax.train.distributed``)."""
  names = {"TPU_ACCELERATOR_TYPE": slice_.accelerator_type, "TPU_WORKER_HOSTNAMES": "localhost",
           "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}
  saved = {name: os.environ.get(name) for name in names}
  for name, value in names.items():
    os.environ.setdefault(name, value)
  try:
    yield
  finally:
    for name, value in saved.items():
      if value is None:
        os.environ.pop(name, None)
      else:
        os.environ[name] = value


def topology_devices(slice_: accelerators.Slice, topo: accelerators.Topology) -> list[Any]:
  """The devices of ``topo`` as libtpu describes it, on a machine without a TPU."""
  check_libtpu()
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  kwargs = {"chip_config_name": topo.chip_config_name} if topo.chip_config_name else {}
  if topo.chips_per_host_bounds:
    kwargs["chips_per_host_bounds"] = list(topo.chips_per_host_bounds)
  with _libtpu_off_a_tpu_vm(slice_):
    desc = topologies.get_topology_desc(topology_name=topo.name, platform="tpu", **kwargs)
  devices = list(desc.devices)
  if len(devices) != slice_.devices:
    raise CompileForError(f"libtpu's {topo.name} has {len(devices)} devices, but "
                          f"{slice_.accelerator_type} should have {slice_.devices}.")
  return devices


# ------------------------------------------------------------------------------------------------
# Compile and count
# ------------------------------------------------------------------------------------------------
def compile_for(config, accelerator_type: str) -> Report:
  """Compiles the trainer's step for ``accelerator_type``; raises :class:`CompileForError` on bad
  input, returns a :class:`Report` (``fits`` False on an out-of-memory compile too)."""
  import jax  # pylint: disable=g-import-not-at-top

  from lamb_optax.train import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  slice_, topo = resolve_slice(accelerator_type)
  plan = check_config(config, slice_)
  devices = topology_devices(slice_, topo)
  try:
    trainer = trainer_lib.build(config, None, devices=devices, process_count=slice_.vms,
                                plan=plan)
  except ValueError as e:
    raise CompileForError(f"The trainer refuses this config on {accelerator_type}: {e}") from None
  gen = accelerators.GENERATIONS[slice_.generation]
  report = Report(
      accelerator=accelerator_type, topology=topo.name, chips=slice_.chips, hosts=slice_.vms,
      mesh=dict(trainer.mesh.shape), global_batch_size=plan.global_batch_size,
      micro_batch_size=plan.micro_batch_size, num_micro_batches=plan.num_micro_batches,
      fits=False, hbm_per_chip_bytes=gen.hbm_bytes_per_chip or 0.0, memory_per_chip_bytes={},
      margin_bytes=0.0, compile_seconds=0.0)
  start = time.perf_counter()
  with jax.set_mesh(trainer.mesh):
    traced = trainer.train_step().trace(trainer.abstract_state(), trainer.abstract_batch())
    try:
      compiled = traced.lower().compile()
    except Exception as e:  # pylint: disable=broad-except
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      report.compile_seconds = time.perf_counter() - start
      report.error = _first_line(str(e))
      report.memory_per_chip_bytes = _memory_from_error(str(e))
      report.advice = advice(config, report)
      return report
  report.compile_seconds = time.perf_counter() - start
  _add_memory(report, compiled)
  _add_costs(report, trainer, traced.jaxpr, compiled, len(devices))
  _add_estimate(report, gen)
  if not report.fits:
    report.advice = advice(config, report)
  return report


def _first_line(text: str) -> str:
  lines = [line for line in text.splitlines() if "RESOURCE_EXHAUSTED" in line]
  return (lines[0] if lines else text.splitlines()[0]).strip()[:500]


def _memory_from_error(text: str) -> dict[str, float]:
  """XLA:TPU says e.g. "Used 20.58G of 15.48G hbm" or "memory required for HLO temporaries
  (20.13G) exceeds available HBM (15.75G)": what it would have needed, and had."""
  m = (re.search(r"Used ([\d.]+)([KMGT]) of ([\d.]+)([KMGT]) hbm", text) or
       re.search(r"required for [\w ]+\(([\d.]+)([KMGT])\) "
                 r"exceeds available HBM \(([\d.]+)([KMGT])\)", text))
  if not m:
    return {}
  scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
  return {"total": float(m.group(1)) * scale[m.group(2)],
          "usable": float(m.group(3)) * scale[m.group(4)]}


def _add_memory(report: Report, compiled) -> None:
  """Per-chip memory from XLA's buffer assignment: what the step needs at its peak is its
  arguments and outputs (less the donated ones they share), temporaries and the program."""
  m = compiled.memory_analysis()
  mem = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
         "aliased": m.alias_size_in_bytes, "temporaries": m.temp_size_in_bytes,
         "generated_code": m.generated_code_size_in_bytes}
  mem["total"] = (mem["arguments"] + mem["outputs"] - mem["aliased"] + mem["temporaries"]
                  + mem["generated_code"])
  report.memory_per_chip_bytes = {k: float(v) for k, v in mem.items()}
  report.margin_bytes = report.hbm_per_chip_bytes - mem["total"]
  report.fits = report.margin_bytes >= 0


def _add_costs(report: Report, trainer, jaxpr, compiled, devices: int) -> None:
  """FLOPs and bytes per step: XLA's once-per-loop-body figures plus the missing iterations."""
  cost = compiled.cost_analysis()
  cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
  xla_flops, xla_bytes = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
  report.xla_cost_analysis_per_chip = {"flops": xla_flops, "bytes_accessed": xla_bytes}
  dot_flops, dot_flops_once = program_stats.jaxpr_dot_flops(jaxpr)
  hlo = program_stats.analyse(compiled.as_text())
  per_chip_flops = xla_flops + (dot_flops - dot_flops_once) / devices
  # Bytes are counted here whole rather than as XLA's figure plus the missing trips: XLA's count
  # of a loop body (its once-figure, kept in the report) and ours differ in what a fusion reads,
  # and mixing the two would charge the difference to the wrong side.
  per_chip_bytes = hlo.bytes
  report.flops_per_chip, report.flops_per_step = per_chip_flops, per_chip_flops * devices
  report.bytes_accessed_per_chip = per_chip_bytes
  report.bytes_all_memory_spaces_per_chip = hlo.bytes_all_spaces
  report.bytes_accessed_per_step = per_chip_bytes * devices
  report.model_flops_per_step = trainer.task.flops_per_example() * report.global_batch_size
  report.loops = {k: v for k, v in hlo.while_loops.items()}
  report.fusions = hlo.fusions
  report.collectives = hlo.collectives


def _add_estimate(report: Report, gen: accelerators.Generation) -> None:
  """A roofline: each resource's time alone; the step takes at least the largest of them."""
  ici_bytes = sum(v["bytes"] * (2 if op == "all-reduce" else 1)  # a ring all-reduce sends ~2x
                  for op, v in report.collectives.items())
  seconds = {
      "compute": report.flops_per_chip / gen.peak_bf16_flops_per_chip,
      "hbm": report.bytes_accessed_per_chip / gen.hbm_bandwidth_per_chip,
      "ici": ici_bytes / gen.ici_bandwidth_per_chip if gen.ici_bandwidth_per_chip else None,
  }
  known = [s for s in seconds.values() if s is not None]
  step = max(known)
  report.estimated_step_seconds = step
  report.estimated_mfu = report.model_flops_per_step / (
      report.chips * gen.peak_bf16_flops_per_chip * step)
  report.estimate = {
      "kind": "roofline estimate, not a measurement: max of compute, HBM and ICI time per chip "
              "(perfect overlap); the sum is the no-overlap bound",
      "seconds": seconds, "no_overlap_seconds": sum(known), "ici_bytes_per_chip": ici_bytes,
      "peak_bf16_flops_per_chip": gen.peak_bf16_flops_per_chip,
      "hbm_bandwidth_per_chip": gen.hbm_bandwidth_per_chip,
      "ici_bandwidth_per_chip": gen.ici_bandwidth_per_chip,
      "bound": max((k for k, v in seconds.items() if v is not None), key=lambda k: seconds[k]),
  }


def advice(config, report: Report) -> str:
  """What to change when the step does not fit: the config keys, with their current values."""
  b, remat = report.micro_batch_size, config.model.remat
  fsdp, tensor = report.mesh.get("fsdp", 1), report.mesh.get("tensor", 1)
  tips = [f"lower micro_batch_size (now {b}; e.g. --config.micro_batch_size={max(1, b // 2)}: "
          "more micro-batches, the same global batch)"]
  if remat != "full":
    nxt = "dots" if remat == "none" else "full"
    tips.append(f"recompute activations with model.remat (now {remat!r}; "
                f"--config.model.remat={nxt})")
  tips.append(f"shard parameters and optimizer state over the mesh's fsdp axis (now {fsdp}; "
              "e.g. --config.mesh.fsdp=8) or tensor axis (now "
              f"{tensor}; --config.mesh.tensor=2..8)")
  return "Does not fit: " + "; or ".join(tips) + "."


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------
def _gb(x: float | None) -> str:
  return "?" if x is None else f"{x / 2**30:.2f} GiB"


def summary(report: Report) -> str:
  """The report as a few readable lines."""
  r, m = report, report.memory_per_chip_bytes
  lines = [f"{r.accelerator} ({r.topology}, {r.chips} chips, {r.hosts} host(s)), mesh {r.mesh}: "
           f"global batch {r.global_batch_size} = {r.micro_batch_size} per device x "
           f"{r.num_micro_batches} micro-batch(es); compiled in {r.compile_seconds:.1f} s"]
  if r.error:
    lines.append(f"compile failed: {r.error}")
  if m:
    parts = ", ".join(f"{k} {_gb(v)}" for k, v in m.items() if k != "total")
    lines.append(f"memory per chip: {_gb(m.get('total'))} of {_gb(r.hbm_per_chip_bytes)} HBM "
                 f"({parts})")
  verdict = "FITS" if r.fits else "DOES NOT FIT"
  lines.append(f"{verdict}: margin {_gb(r.margin_bytes) if not r.error else '?'} per chip")
  if r.flops_per_step is not None:
    lines.append(f"per step: {r.flops_per_step:.3e} FLOPs "
                 f"(model count {r.model_flops_per_step:.3e}),"
                 f" {r.bytes_accessed_per_step:.3e} bytes accessed (whole slice); loops {r.loops}")
    coll = ", ".join(f"{op} {v['count']}x {v['bytes'] / 2**20:.1f} MiB"
                     for op, v in r.collectives.items()) or "none"
    lines.append(f"collectives per chip per step: {coll}")
    s = r.estimate["seconds"]
    ici = "n/a" if s["ici"] is None else f"{s['ici']:.4f}"
    lines.append(f"ESTIMATE (roofline, not measured): step >= {r.estimated_step_seconds:.4f} s "
                 f"(compute {s['compute']:.4f}, HBM {s['hbm']:.4f}, ICI {ici}; "
                 f"{r.estimate['bound']}-bound), MFU <= {r.estimated_mfu:.0%}")
  if r.advice:
    lines.append(r.advice)
  return "\n".join(lines)


def markdown_table(reports: dict[str, dict[str, Any]]) -> str:
  """A markdown table of ``--compile_report`` files (``{run name: report JSON}``): memory per
  chip against HBM, FLOPs, bytes and collectives per step, and the roofline estimate."""
  head = ("| run | slice (chips) | per device x micro-batches | memory / chip (of HBM) | fits | "
          "PFLOP / step | HBM GB / chip / step | collectives / chip / step | "
          "est. step (bound) | est. MFU | compile |")
  lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
  for name, r in reports.items():
    m = r["memory_per_chip_bytes"]
    coll = ", ".join(f"{op} {v['count']}x {v['bytes'] / 2**30:.2f} GiB"
                     for op, v in r.get("collectives", {}).items()) or "none"
    est = r.get("estimated_step_seconds")
    cost = (f"{est:.3f} s ({r['estimate']['bound']}) | {r['estimated_mfu']:.0%}" if est
            else "- | -")
    flops = r.get("flops_per_step")
    hbm = None if flops is None else r["bytes_accessed_per_chip"] / 1e9
    lines.append(
        f"| {name} | {r['accelerator']} ({r['chips']}) | {r['micro_batch_size']} x "
        f"{r['num_micro_batches']} | {_gb(m.get('total'))} of {_gb(r['hbm_per_chip_bytes'])} | "
        f"{'yes' if r['fits'] else '**no**'} | "
        f"{'-' if flops is None else f'{flops / 1e15:.2f}'} | "
        f"{'-' if hbm is None else f'{hbm:.0f}'} | {coll} | "
        f"{cost} | {r['compile_seconds']:.0f} s |")
  return "\n".join(lines)


def main(config, accelerator_type: str, report_path: str | None = None) -> int:
  """``--compile_for``: prints the report, writes it as JSON; 0 fits, 1 does not, 2 bad input."""
  try:
    problem = report_path and workdir.new_file_problem(report_path, "--compile_report")
    if problem:  # refused before the (minutes-long) compile
      raise CompileForError(problem)
    report = compile_for(config, accelerator_type)
  except CompileForError as e:
    print(f"compile_for: error: {e}")
    return 2
  print(summary(report))
  if report_path:
    with open(report_path, "x") as f:  # "x": a report that appeared meanwhile is kept too
      json.dump(report.as_json(), f, indent=2)
  return 0 if report.fits else 1
