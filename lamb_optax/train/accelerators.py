"""Cloud TPU slices: what an accelerator type such as ``v4-128`` means in chips, JAX devices and VMs.

Imports only the standard library, so a launcher on a laptop reads it cheaply.
``scripts/tpu_pod.py`` uses it to check a config against a slice before any gcloud call.
"""

from __future__ import annotations

import dataclasses
import re


class AcceleratorError(ValueError):
  """An accelerator type that is malformed or unknown; the message says what to pass instead."""


# --------------------------------------------------------------------------------------------
# Slices: accelerator type -> JAX devices, chips, VMs (workers).
# --------------------------------------------------------------------------------------------
# Sources (Cloud TPU system-architecture pages, as of 2024-2025; check them for new sizes):
# * v2/v3: the suffix counts TensorCores, 2 per chip, 4 chips (8 cores) per VM; JAX sees one
#   device per TensorCore (no megacore), so devices = N.
# * v4/v5p: the suffix counts TensorCores, 2 per chip, fused into one JAX device per chip
#   (megacore); 4 chips per VM. v4-8 / v5p-8 = 4 chips on 1 VM; v4-128 = 64 chips on 16 VMs.
# * v5e (v5litepod-N, also spelt v5e-N) and v6e-N: the suffix counts chips, 1 TensorCore each.
#   Slices of 1, 4 or 8 chips are one VM; larger slices use 4-chip VMs (v6e-16 = 4 VMs,
#   v6e-256 = 64 VMs per the v6e page's table; v5e's multi-host table has the same 4-chip VMs,
#   e.g. v5litepod-16 = 4 VMs). The physical hosts have 8 chips, but the *VM* count is what
#   matters here: it is the number of workers `--worker=all` reaches and JAX processes.
# If Google changes a VM shape this table is what to fix; the checks only use `vms` to decide
# whether a slice is multi-host and `devices` for the batch arithmetic.
_CORE_COUNTED = {"v2": 1, "v3": 1, "v4": 2, "v5p": 2}  # TensorCores per JAX device
_CHIP_COUNTED = {"v5litepod": "v5e", "v5e": "v5e", "v6e": "v6e"}
_CHIP_COUNTED_SIZES = (1, 4, 8, 16, 32, 64, 128, 256)
DEFAULT_RUNTIME = {  # --version / --runtime-version (TPU VM software images)
    "v2": "tpu-ubuntu2204-base", "v3": "tpu-ubuntu2204-base", "v4": "tpu-ubuntu2204-base",
    "v5p": "v2-alpha-tpuv5", "v5e": "v2-alpha-tpuv5-lite", "v6e": "v2-alpha-tpuv6e",
}


@dataclasses.dataclass(frozen=True)
class Slice:
  accelerator_type: str
  generation: str  # v2, v3, v4, v5p, v5e, v6e
  devices: int  # JAX devices in the slice (data-parallel capacity)
  chips: int
  vms: int  # TPU VMs = workers = JAX processes

  @property
  def multi_host(self) -> bool:
    return self.vms > 1


def parse_accelerator(accelerator_type: str) -> Slice:
  """``"v4-128"`` -> 64 chips / 64 devices on 16 VMs; refuses types it does not know.

  >>> parse_accelerator("v4-128")
  Slice(accelerator_type='v4-128', generation='v4', devices=64, chips=64, vms=16)
  >>> parse_accelerator("v5litepod-8").vms, parse_accelerator("v6e-256").vms
  (1, 64)
  """
  m = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", accelerator_type or "")
  if not m:
    raise AcceleratorError(f"--accelerator-type {accelerator_type!r} is not of the form GEN-SIZE; "
                           "use e.g. v4-128, v5p-128, v5litepod-256 (v5e), v6e-256.")
  family, n = m.group(1), int(m.group(2))
  if family in ("v2", "v3"):
    if n < 8 or n % 8:
      raise AcceleratorError(f"{accelerator_type}: {family} sizes count TensorCores in multiples "
                             f"of 8 (8 per VM), e.g. {family}-8, {family}-32.")
    return Slice(accelerator_type, family, devices=n, chips=n // 2, vms=n // 8)
  if family in ("v4", "v5p"):
    if n < 8 or n % 8:
      raise AcceleratorError(f"{accelerator_type}: {family} sizes count TensorCores (2 per chip, 4 "
                             f"chips per VM), so they are multiples of 8: e.g. {family}-8, "
                             f"{family}-128.")
    chips = n // _CORE_COUNTED[family]
    return Slice(accelerator_type, family, devices=chips, chips=chips, vms=chips // 4)
  if family in _CHIP_COUNTED:
    gen = _CHIP_COUNTED[family]
    if n not in _CHIP_COUNTED_SIZES:
      raise AcceleratorError(f"{accelerator_type}: {gen} slices have {_CHIP_COUNTED_SIZES} chips; "
                             "pick one of those.")
    return Slice(accelerator_type, gen, devices=n, chips=n, vms=1 if n <= 8 else n // 4)
  raise AcceleratorError(f"Unknown TPU generation {family!r} in {accelerator_type!r}; this "
                         "launcher knows v2, v3, v4, v5p, v5litepod/v5e and v6e.")
