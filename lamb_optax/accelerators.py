"""Cloud TPU generations, and what an accelerator type such as ``v4-128`` means in chips, JAX
devices and VMs.

One table, :data:`GENERATIONS`, holds a row per TPU generation; :func:`parse_accelerator` reads a
slice out of it. Imports only the standard library, so a launcher on a laptop reads it cheaply
(``scripts/tpu_pod.py`` checks a config against a slice with it before any gcloud call).

>>> s = parse_accelerator("v5p-128")
>>> s.chips, s.vms, GENERATIONS[s.generation].peak_bf16_flops_per_chip * s.chips / 1e15
(64, 16, 29.376)
"""

from __future__ import annotations

import dataclasses
import re


class AcceleratorError(ValueError):
  """An accelerator type that is malformed or unknown; the message says what to pass instead."""


@dataclasses.dataclass(frozen=True)
class Generation:
  """One TPU generation. Hardware figures are per chip, ``None`` where not yet sourced.

  The slice arithmetic (how :func:`parse_accelerator` counts) uses only the fields down to
  ``default_runtime``; the hardware figures are there for estimates (MFU, step-time bounds).
  """

  name: str  # v2, v3, v4, v5p, v5e, v6e: the name Slice.generation carries
  prefixes: tuple[str, ...]  # accelerator-type prefixes: v5litepod-N and v5e-N are both v5e
  size_counts: str  # what the N of GEN-N counts: "TensorCores" or "chips"
  tensorcores_per_chip: int
  devices_per_chip: int  # JAX devices per chip: 1 with megacore (v4, v5p) or 1 core (v5e, v6e)
  chips_per_vm: int  # chips per TPU VM (= worker = JAX process) in a multi-host slice
  chips_per_host: int  # chips per physical host (v5e/v6e VMs hold half a host's chips)
  default_runtime: str  # --version / --runtime-version (the TPU VM software image)
  sizes: tuple[int, ...] | None = None  # the only valid N, where not "any multiple of 8"
  peak_bf16_flops_per_chip: float | None = None  # FLOP/s, dense bf16
  hbm_bytes_per_chip: float | None = None  # as the page states it: GB = 1e9, GiB = 2**30
  hbm_bandwidth_per_chip: float | None = None  # bytes/s
  ici_bandwidth_per_chip: float | None = None  # bytes/s, bidirectional

  @property
  def vm_tensorcores(self) -> int:
    return self.chips_per_vm * self.tensorcores_per_chip


# Sources: the Cloud TPU system-architecture pages, docs.cloud.google.com/tpu/docs/<v4|v5e|v5p|v6e>
# (v5p: .../tpu/docs/v5p-training), read 2024-2025; check them for new sizes and VM shapes.
# * v2/v3: N counts TensorCores, 2 per chip, 4 chips (8 cores) per VM; JAX sees one device per
#   TensorCore (no megacore), so devices = N.
# * v4/v5p: N counts TensorCores, 2 per chip, fused into one JAX device per chip (megacore);
#   4 chips per VM. v4-8 / v5p-8 = 4 chips on 1 VM; v4-128 = 64 chips on 16 VMs (the v5p page's
#   topology table: 2x2x1 = 8 cores, 4 chips, 1 host; 4x4x4 = 128 cores, 64 chips, 16 hosts).
# * v5e (v5litepod-N, also spelt v5e-N) and v6e-N: N counts chips, 1 TensorCore each. Slices of
#   1, 4 or 8 chips are one VM; larger slices use 4-chip VMs (v6e-16 = 4 VMs, v6e-256 = 64 VMs
#   per the v6e page's table; v5e's multi-host table has the same 4-chip VMs, e.g. v5litepod-16 =
#   4 VMs). The physical hosts have 8 chips ("Chips per host 8" on both pages), but the *VM*
#   count is what matters here: it is the number of workers `--worker=all` reaches and of JAX
#   processes.
# If Google changes a VM shape this table is what to fix; the launcher's checks use only `vms`
# (is the slice multi-host?) and `devices` (the batch arithmetic).
#
# Hardware figures, from the "key specifications" table of each generation's page:
# * v4:  "Peak compute per chip 275 teraflops (bf16 or int8)"; "HBM2 capacity and bandwidth
#        32 GiB, 1200 GBps". The v4 page gives no per-chip ICI bandwidth.
# * v5e: "Peak compute per chip (bf16) 197 TFLOPs"; "HBM2 capacity and bandwidth 16 GB,
#        819 GBps"; "Bidirectional inter-chip interconnect (ICI) bandwidth (per chip) 400 GBps".
# * v5p: "Peak compute per chip (bf16) 459 TFLOPs"; "HBM2e capacity and bandwidth 95GB,
#        2765 GBps"; "Bidirectional inter-chip interconnect (ICI) bandwidth per chip (GBps) 1200"
#        (older versions of the page: "Interchip Interconnect BW 4800 Gbps", one direction).
# * v6e: "Peak compute per chip (bf16) 918 TFLOPs"; "HBM capacity per chip 32 GB"; "HBM
#        bandwidth per chip 1638 GBps"; "Bidirectional inter-chip interconnect (ICI) bandwidth
#        (per chip) 800 GBps": docs.cloud.google.com/tpu/docs/v6e, the version of the page whose
#        System architecture section describes two 256x256 MXUs per TensorCore (read through the
#        search tool's copy of v6e.md.txt). Other stored copies of the page say 1600 GBps
#        (a v5e-vs-v6e table) and 1640 GBps (cloud.google.com, with "819 GBps" for v5e); the copies
#        carry no dates, so that 1638 is the newest is our reading, not verified.
# * v3:  "Peak compute per chip 123 teraflops (bf16)"; "HBM2 capacity and bandwidth 32 GiB,
#        900 GBps" (per chip, two TensorCores: JAX sees two devices, each half of it).
# Not in the table yet: any hardware figure for v2, and v3's and v4's per-chip ICI bandwidth.
_GB, _GIB, _T = 1e9, 2.0**30, 1e12
_CHIP_SIZES = (1, 4, 8, 16, 32, 64, 128, 256)
GENERATIONS: dict[str, Generation] = {g.name: g for g in (
    Generation("v2", ("v2",), "TensorCores", tensorcores_per_chip=2, devices_per_chip=2,
               chips_per_vm=4, chips_per_host=4, default_runtime="tpu-ubuntu2204-base"),
    Generation("v3", ("v3",), "TensorCores", tensorcores_per_chip=2, devices_per_chip=2,
               chips_per_vm=4, chips_per_host=4, default_runtime="tpu-ubuntu2204-base",
               peak_bf16_flops_per_chip=123 * _T, hbm_bytes_per_chip=32 * _GIB,
               hbm_bandwidth_per_chip=900 * _GB),
    Generation("v4", ("v4",), "TensorCores", tensorcores_per_chip=2, devices_per_chip=1,
               chips_per_vm=4, chips_per_host=4, default_runtime="tpu-ubuntu2204-base",
               peak_bf16_flops_per_chip=275 * _T, hbm_bytes_per_chip=32 * _GIB,
               hbm_bandwidth_per_chip=1200 * _GB),
    Generation("v5p", ("v5p",), "TensorCores", tensorcores_per_chip=2, devices_per_chip=1,
               chips_per_vm=4, chips_per_host=4, default_runtime="v2-alpha-tpuv5",
               peak_bf16_flops_per_chip=459 * _T, hbm_bytes_per_chip=95 * _GB,
               hbm_bandwidth_per_chip=2765 * _GB, ici_bandwidth_per_chip=1200 * _GB),
    Generation("v5e", ("v5litepod", "v5e"), "chips", tensorcores_per_chip=1, devices_per_chip=1,
               chips_per_vm=4, chips_per_host=8, default_runtime="v2-alpha-tpuv5-lite",
               sizes=_CHIP_SIZES, peak_bf16_flops_per_chip=197 * _T,
               hbm_bytes_per_chip=16 * _GB, hbm_bandwidth_per_chip=819 * _GB,
               ici_bandwidth_per_chip=400 * _GB),
    Generation("v6e", ("v6e",), "chips", tensorcores_per_chip=1, devices_per_chip=1,
               chips_per_vm=4, chips_per_host=8, default_runtime="v2-alpha-tpuv6e",
               sizes=_CHIP_SIZES, peak_bf16_flops_per_chip=918 * _T,
               hbm_bytes_per_chip=32 * _GB, hbm_bandwidth_per_chip=1638 * _GB,
               ici_bandwidth_per_chip=800 * _GB),
)}
_BY_PREFIX = {prefix: g for g in GENERATIONS.values() for prefix in g.prefixes}
DEFAULT_RUNTIME = {name: g.default_runtime for name, g in GENERATIONS.items()}

# How JAX names each generation's chips (``jax.Device.device_kind``), most specific first.
_DEVICE_KINDS = (("TPU v6", "v6e"), ("TPU v5p", "v5p"), ("TPU v5 lite", "v5e"),
                 ("TPU v5e", "v5e"), ("TPU v4", "v4"), ("TPU v3", "v3"))
# GPUs the trainer also runs on: dense bf16 peak FLOP/s per GPU (NVIDIA's data sheets, without
# sparsity), so the MFU column means the same thing there.
GPU_PEAK_BF16_FLOPS = {"H200": 989 * _T, "H100": 989 * _T, "A100": 312 * _T}


def peak_flops(device_kind: str) -> float:
  """Dense bf16 peak FLOP/s of one JAX device of ``device_kind``; 0.0 where unknown (no MFU).

  >>> peak_flops("TPU v5 lite"), peak_flops("NVIDIA H100 80GB HBM3"), peak_flops("cpu")
  (197000000000000.0, 989000000000000.0, 0.0)
  """
  kind = device_kind.lower()
  for name, generation in _DEVICE_KINDS:
    if name.lower() in kind:
      g = GENERATIONS[generation]
      return (g.peak_bf16_flops_per_chip or 0.0) / g.devices_per_chip
  return next((f for name, f in GPU_PEAK_BF16_FLOPS.items() if name.lower() in kind), 0.0)


@dataclasses.dataclass(frozen=True)
class Slice:
  accelerator_type: str
  generation: str  # v2, v3, v4, v5p, v5e, v6e: a key of GENERATIONS
  devices: int  # JAX devices in the slice (data-parallel capacity)
  chips: int
  vms: int  # TPU VMs = workers = JAX processes

  @property
  def multi_host(self) -> bool:
    return self.vms > 1

  @property
  def topology(self) -> Topology:
    """The slice's chip layout as JAX names it (see :func:`topology`)."""
    return topology(self)


def parse_accelerator(accelerator_type: str) -> Slice:
  """``"v4-128"`` -> 64 chips / 64 devices on 16 VMs; refuses types it does not know.

  >>> parse_accelerator("v4-128")
  Slice(accelerator_type='v4-128', generation='v4', devices=64, chips=64, vms=16)
  >>> parse_accelerator("v5litepod-8").vms, parse_accelerator("v6e-256").vms
  (1, 64)
  >>> parse_accelerator("v4-12")
  Traceback (most recent call last):
  lamb_optax.accelerators.AcceleratorError: v4-12: v4 sizes count TensorCores (2 per chip,
  4 chips per VM), so they are multiples of 8: e.g. v4-8, v4-128.
  """
  m = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", accelerator_type or "")
  if not m:
    raise AcceleratorError(f"--accelerator-type {accelerator_type!r} is not of the form GEN-SIZE; "
                           "use e.g. v4-128, v5p-128, v5litepod-256 (v5e), v6e-256.")
  prefix, n = m.group(1), int(m.group(2))
  gen = _BY_PREFIX.get(prefix)
  if gen is None:
    raise AcceleratorError(f"Unknown TPU generation {prefix!r} in {accelerator_type!r}; this "
                           "launcher knows v2, v3, v4, v5p, v5litepod/v5e and v6e.")
  if gen.sizes is not None:  # N counts chips
    if n not in gen.sizes:
      raise AcceleratorError(f"{accelerator_type}: {gen.name} slices have {gen.sizes} chips; "
                             "pick one of those.")
    chips = n
    vms = 1 if n <= gen.chips_per_host else n // gen.chips_per_vm
  else:  # N counts TensorCores, a whole number of VMs
    per_vm = gen.vm_tensorcores
    if n < per_vm or n % per_vm:
      if gen.devices_per_chip == 1:
        why = (f"(2 per chip, {gen.chips_per_vm} chips per VM), so they are multiples of "
               f"{per_vm}: e.g. {prefix}-{per_vm}, {prefix}-128.")
      else:
        why = f"in multiples of {per_vm} ({per_vm} per VM), e.g. {prefix}-{per_vm}, {prefix}-32."
      raise AcceleratorError(f"{accelerator_type}: {prefix} sizes count TensorCores {why}")
    chips = n // gen.tensorcores_per_chip
    vms = chips // gen.chips_per_vm
  return Slice(accelerator_type, gen.name, devices=chips * gen.devices_per_chip, chips=chips,
               vms=vms)


# ------------------------------------------------------------------------------------------------
# Topologies: the chip layout JAX's ahead-of-time compiler needs (``jax.experimental.topologies.
# get_topology_desc(topology_name=..., chip_config_name=...)``).
# ------------------------------------------------------------------------------------------------
# Sources, read 2025 with the search tools:
# * v5e and v6e are 2D: the v5e page's configuration table (docs.cloud.google.com/tpu/docs/v5e,
#   also tpu/docs/supported-versions) lists 1x1, 2x2, 2x4, 4x4, 4x8, 8x8, 8x16, 16x16 for 1 ... 256
#   chips; the v6e page (tpu/docs/v6e) lists the same shapes for v6e-1 ... v6e-256.
# * v4 and v5p are 3D, AxBxC chips with A <= B <= C (tpu/docs/types-topologies, tpu/docs/v4,
#   tpu/docs/v5p-training): below a 4x4x4 cube the slices are 2x2x1, 2x2x2, 2x2x4, 2x4x4 (v4-8
#   ... v4-64); from 64 chips on, every side is a multiple of 4 and the default shape of a size is
#   the one "most similar to a cube" (v4-128 = 4x4x4, v4-256 = 4x4x8, v4-512 = 4x8x8, v4-1024 =
#   8x8x8, v4-2048 = 8x8x16, v4-4096 = 8x16x16). `_cube_like` reproduces those and MaxText's
#   table of v5p shapes (MaxText/accelerator_to_spec_map.py: v5p-384 = 4x4x12, v5p-768 = 4x8x12,
#   v5p-3456 = 12x12x12, ...). gcloud also takes other shapes of the same size (--topology); we
#   compile for the default one, which has the same chips, HBM and collectives up to routing.
# * Megacore: v4 and v5p fuse a chip's two TensorCores into one JAX device; without
#   chip_config_name="megacore" the topology has one device per TensorCore (v4:8x8x8 = 1,024).
_SMALL_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4)}
_SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16),
              256: (16, 16)}
_TOPOLOGY_PREFIX = {"v4": "v4", "v5p": "v5p", "v5e": "v5e", "v6e": "v6e"}
_MAX_3D_CHIPS = {"v4": 4096, "v5p": 8960}  # a whole v4 pod; the largest v5p slice (v5p-17920)


@dataclasses.dataclass(frozen=True)
class Topology:
  """What ``jax.experimental.topologies.get_topology_desc`` takes for a slice."""

  name: str  # e.g. "v4:8x8x8", "v5e:16x16"
  chip_config_name: str | None  # "megacore" on v4/v5p (one JAX device per chip), else None
  shape: tuple[int, ...]
  # libtpu assumes 2x2x1 chips per host; a 1-chip slice must say it has fewer.
  chips_per_host_bounds: tuple[int, ...] | None = None


def _cube_like(chips: int) -> tuple[int, int, int] | None:
  """The most cube-like AxBxC (A <= B <= C, multiples of 4) of ``chips``, or None."""
  if chips in _SMALL_3D:
    return _SMALL_3D[chips]
  if chips % 64:
    return None
  k = chips // 64
  best = None
  for a in range(1, k + 1):
    for b in range(a, k // a + 1):
      if k % (a * b) or k // (a * b) < b:
        continue
      c = k // (a * b)
      if best is None or (c, -a) < (best[2], -best[0]):
        best = (a, b, c)
  if best is None:
    return None
  a, b, c = best
  return 4 * a, 4 * b, 4 * c


def known_accelerators() -> list[str]:
  """Every accelerator type :func:`topology` maps, small to large per generation (v4 and v5p:
  the documented sizes up to 1,024 chips, then every 512 chips)."""
  names = []
  for gen in ("v4", "v5p"):
    sizes = [c for c in range(4, _MAX_3D_CHIPS[gen] + 1, 4) if _cube_like(c)]
    names += [f"{gen}-{2 * c}" for c in sizes if c <= 1024 or c % 512 == 0]
  names += [f"v5litepod-{c}" for c in _SHAPES_2D] + [f"v6e-{c}" for c in _SHAPES_2D]
  return names


def topology(slice_: Slice) -> Topology:
  """The topology JAX compiles ``slice_`` for; raises :class:`AcceleratorError` when unknown.

  >>> t = topology(parse_accelerator("v4-1024"))
  >>> t.name, t.chip_config_name, t.shape
  ('v4:8x8x8', 'megacore', (8, 8, 8))
  >>> topology(parse_accelerator("v5litepod-4")).name, topology(parse_accelerator("v5p-8")).name
  ('v5e:2x2', 'v5p:2x2x1')
  """
  gen, chips = slice_.generation, slice_.chips
  prefix = _TOPOLOGY_PREFIX.get(gen)
  shape: tuple[int, ...] | None
  if gen in _MAX_3D_CHIPS:
    shape = _cube_like(chips) if chips <= _MAX_3D_CHIPS[gen] else None
    config = "megacore"
  else:
    shape, config = _SHAPES_2D.get(chips), None
  if prefix is None or shape is None:
    raise AcceleratorError(
        f"{slice_.accelerator_type}: no TPU topology known for {chips} {gen} chips, so it cannot "
        f"be compiled for. Known: {_summarise(known_accelerators())}.")
  bounds = (1, 1, 1) if chips == 1 else None
  return Topology(f"{prefix}:{'x'.join(map(str, shape))}", config, shape, bounds)


def _summarise(names: list[str]) -> str:
  """``v4-8 ... v4-4096 (N sizes), ...``: the known list, short enough for an error message."""
  by_gen: dict[str, list[str]] = {}
  for n in names:
    by_gen.setdefault(n.rsplit("-", 1)[0], []).append(n)
  parts = []
  for gen_names in by_gen.values():
    if len(gen_names) <= 10:
      parts.append(", ".join(gen_names))
    else:
      parts.append(f"{', '.join(gen_names[:6])}, ... {gen_names[-1]} ({len(gen_names)} sizes)")
  return "; ".join(parts)
