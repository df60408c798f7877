"""Choose a slice's micro-batch and remat policy from the compiler's own reports.

``python -m lamb_optax.train --config=C --compile_for=v4-1024 --compile_sweep=8:none,16:dots``
compiles the step once per (micro-batch per device, ``model.remat``) pair with
:func:`lamb_optax.tpu.compile_for.compile_for`, the global batch unchanged, and prints one table
row per pair and the fastest that fits: the lowest roofline *estimate* of the step time (not a
measurement), with the flags that select it. A pair the trainer refuses (a micro-batch that
does not divide the batch) or that runs out of memory is a row of the table, not a failure.

Larger micro-batches mean fewer loop trips and fuller matmuls but more activation memory; remat
trades that memory for recomputation (``none`` saves every activation, ``dots`` the matmul
outputs, ``full`` only each layer's input), so which pair is fastest depends on the chip's HBM
and its FLOP-to-byte ratio — the question the sweep answers per slice.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from lamb_optax.models.bert_config import REMAT_POLICIES
from lamb_optax.tpu import compile_for as compile_lib
from lamb_optax.train import workdir


@dataclasses.dataclass(frozen=True)
class Pair:
  """One point of the sweep: a micro-batch per device, and a remat policy (None: the config's)."""

  micro_batch_size: int
  remat: str | None = None

  @property
  def name(self) -> str:
    return f"micro {self.micro_batch_size}, remat {self.remat or 'as configured'}"

  def flags(self) -> str:
    remat = f" --config.model.remat={self.remat}" if self.remat else ""
    return f"--config.micro_batch_size={self.micro_batch_size}{remat}"


def parse_pairs(text: str) -> list[Pair]:
  """``"8:none,16:dots,32"`` → pairs; a pair without ``:remat`` keeps the config's policy.

  >>> parse_pairs("8:none, 16")
  [Pair(micro_batch_size=8, remat='none'), Pair(micro_batch_size=16, remat=None)]
  """
  pairs = []
  for item in (part.strip() for part in text.split(",")):
    if not item:
      continue
    micro, _, remat = item.partition(":")
    if not micro.strip().isdigit() or int(micro) < 1:
      raise compile_lib.CompileForError(
          f"--compile_sweep item {item!r}: the micro-batch must be a positive integer, as in "
          "--compile_sweep=8:none,16:dots,32:full (micro-batch per device:remat policy).")
    remat = remat.strip() or None
    if remat is not None and remat not in REMAT_POLICIES:
      raise compile_lib.CompileForError(
          f"--compile_sweep item {item!r}: remat must be one of {REMAT_POLICIES}.")
    pairs.append(Pair(int(micro), remat))
  if not pairs:
    raise compile_lib.CompileForError(
        "--compile_sweep is empty; give pairs such as --compile_sweep=8:none,16:dots,32:full.")
  if len(set(pairs)) != len(pairs):
    raise compile_lib.CompileForError(f"--compile_sweep repeats a pair: {text!r}.")
  return pairs


def pair_config(config, pair: Pair):
  """A copy of ``config`` with the pair's micro-batch and remat; ``config`` is not modified."""
  c = copy.deepcopy(config)
  with c.unlocked():
    c.micro_batch_size = pair.micro_batch_size
    if pair.remat:
      c.model.remat = pair.remat
  return c


def sweep(config, accelerator_type: str, pairs: list[Pair],
          log=print) -> dict[str, dict[str, Any]]:
  """Compiles every pair for the slice: ``{pair name: its report's JSON}``, or ``{"refused":
  message}`` for a pair the trainer refuses; each entry also holds the pair's ``flags``."""
  compile_lib.resolve_slice(accelerator_type)  # an unknown slice fails once, before any compile
  results: dict[str, dict[str, Any]] = {}
  for i, pair in enumerate(pairs):
    log(f"[{i + 1}/{len(pairs)}] {pair.name}: compiling for {accelerator_type} ...")
    try:
      report = compile_lib.compile_for(pair_config(config, pair), accelerator_type)
    except compile_lib.CompileForError as e:
      results[pair.name] = {"refused": str(e), "flags": pair.flags()}
      log(f"  refused: {e}")
      continue
    results[pair.name] = dict(report.as_json(), flags=pair.flags())
    log("  " + compile_lib.summary(report).replace("\n", "\n  "))
  return results


def fastest(results: dict[str, dict[str, Any]]) -> str | None:
  """The name of the fitting pair with the lowest estimated step time (None if none fits)."""
  fitting = {name: r for name, r in results.items()
             if r.get("fits") and r.get("estimated_step_seconds")}
  return min(fitting, key=lambda n: fitting[n]["estimated_step_seconds"]) if fitting else None


def markdown(results: dict[str, dict[str, Any]]) -> str:
  """The compiled pairs as :func:`compile_for.markdown_table` rows, refused pairs listed below."""
  compiled = {name: r for name, r in results.items() if "refused" not in r}
  lines = [compile_lib.markdown_table(compiled)] if compiled else []
  lines += [f"- {name}: refused: {r['refused']}" for name, r in results.items() if "refused" in r]
  return "\n".join(lines)


def main(config, accelerator_type: str, pairs_text: str, report_path: str | None = None) -> int:
  """``--compile_sweep``: 0 when some pair fits (the fastest is printed), 1 when none does, 2 on
  bad input. ``report_path`` gets every pair's report as one JSON object."""
  try:
    problem = report_path and workdir.new_file_problem(report_path, "--compile_report")
    if problem:
      raise compile_lib.CompileForError(problem)
    pairs = parse_pairs(pairs_text)
    results = sweep(config, accelerator_type, pairs)
  except compile_lib.CompileForError as e:
    print(f"compile_for: error: {e}")
    return 2
  print(markdown(results))
  best = fastest(results)
  if best is None:
    print(f"No pair fits on {accelerator_type}; try smaller micro-batches or remat=full.")
  else:
    r = results[best]
    print(f"FASTEST THAT FITS ({accelerator_type}): {best}: estimated step "
          f"{r['estimated_step_seconds']:.4f} s, est. MFU {r['estimated_mfu']:.0%} "
          f"(roofline estimates, not measurements) -> {r['flags']}")
  if report_path:
    with open(report_path, "x") as f:
      json.dump(dict(fastest=best, pairs=results), f, indent=2)
  return 0 if best else 1
