"""Compiling the trainer's step for Cloud TPU slices on a machine without a TPU (libtpu's
topologies): each generation's smallest slice, the FLOP count against the task's, memory growing
with the micro-batch, a config that cannot fit, bad input refused before any compile, and the
(micro-batch, remat) sweep that picks the fastest fitting pair.

A shrunk tiny BERT (sequence 32, no dropout: XLA:TPU spends minutes compiling dropout's random
bits) keeps each compile to about a minute on a loaded 2-core machine. Tests that compile skip
where libtpu cannot be imported; the bad-input tests need no libtpu.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from lamb_optax import accelerators
from lamb_optax.tpu import compile_for
from lamb_optax.tpu import compile_sweep
from lamb_optax.train import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu is not installed (pip install 'lamb_optax[tpu]')")


def small_config(micro_batch_size=8, global_batch_size=64):
  config = config_lib.load(str(ROOT / "configs" / "tiny.py"))
  config.model.overrides.hidden_dropout = 0.0
  config.model.overrides.attention_dropout = 0.0
  config.data.max_seq_length = 32
  config.data.max_predictions_per_seq = 4
  config.global_batch_size = global_batch_size
  config.micro_batch_size = micro_batch_size
  config.eval_batch_size = 0
  return config


@pytest.fixture(autouse=True)
def _subprocess_env(monkeypatch):
  monkeypatch.setenv("PYTHONPATH", str(ROOT))


@pytest.mark.parametrize("accel, topology", [
    ("v4-8", "v4:2x2x1"), ("v4-1024", "v4:8x8x8"), ("v5p-8", "v5p:2x2x1"),
    ("v5litepod-4", "v5e:2x2"), ("v5litepod-256", "v5e:16x16"), ("v6e-4", "v6e:2x2"),
    ("v6e-64", "v6e:8x8"), ("v4-128", "v4:4x4x4"), ("v5p-3456", "v5p:12x12x12")])
def test_topology_names(accel, topology):
  assert accelerators.parse_accelerator(accel).topology.name == topology


@pytest.mark.parametrize("accel", ["v4-24", "v3-8", "v7x-8", "tpu"])
def test_unknown_accelerator_lists_the_known(accel):
  with pytest.raises(compile_for.CompileForError, match="v5litepod-4"):
    compile_for.resolve_slice(accel)


def test_mesh_that_does_not_match_says_what_would():
  config = small_config()
  config.mesh.data, config.mesh.tensor = 8, 1
  with pytest.raises(compile_for.CompileForError, match=r"4 JAX devices.*mesh.data=-1"):
    compile_for.check_config(config, accelerators.parse_accelerator("v4-8"))


def test_config_failing_its_own_checks_is_the_trainers_error():
  config = small_config()
  config.warmup_steps = 10**6
  with pytest.raises(compile_for.CompileForError, match="warmup_steps"):
    compile_for.check_config(config, accelerators.parse_accelerator("v4-8"))


def test_missing_libtpu_says_how_to_install(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(compile_for.CompileForError, match=r"lamb_optax\[tpu\]"):
    compile_for.check_libtpu()


@needs_libtpu
# One generation in the default run; a compile takes tens of seconds on 2 cores.
@pytest.mark.parametrize("accel", [pytest.param("v4-8", marks=pytest.mark.slow), "v5litepod-4",
                                   pytest.param("v5p-8", marks=pytest.mark.slow),
                                   pytest.param("v6e-4", marks=pytest.mark.slow)])
def test_tiny_compiles_for_each_generation(accel):
  report = compile_for.compile_for(small_config(), accel)
  assert report.fits and report.chips == 4 and report.num_micro_batches == 2
  mem = report.memory_per_chip_bytes
  assert 0 < mem["total"] < report.hbm_per_chip_bytes
  assert report.collectives.get("all-reduce", {}).get("count", 0) > 0  # data-parallel grads
  # XLA's cost analysis counts the micro-batch loop's body once; the report counts both trips.
  assert list(report.loops.values()) == [2]
  assert report.flops_per_chip > report.xla_cost_analysis_per_chip["flops"]
  assert report.flops_per_step == pytest.approx(report.model_flops_per_step, rel=0.15)
  assert 0 < report.estimated_mfu <= 1 and report.estimated_step_seconds > 0


@needs_libtpu
def test_compiling_leaves_no_cloud_tpu_variables_behind(monkeypatch):
  """libtpu is told it is on a TPU VM only while it starts: a trainer started later from the same
  process must not take itself for a Cloud TPU worker and wait for a slice's peers."""
  for name in ("TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES", "ALLOW_MULTIPLE_LIBTPU_LOAD"):
    monkeypatch.delenv(name, raising=False)
  slice_, topo = compile_for.resolve_slice("v5litepod-4")
  assert len(compile_for.topology_devices(slice_, topo)) == 4
  leftover = {n for n in ("TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES") if n in os.environ}
  assert not leftover


@needs_libtpu
@pytest.mark.slow  # two compiles
def test_larger_micro_batch_grows_temporaries():
  small = compile_for.compile_for(small_config(micro_batch_size=4), "v5litepod-4")
  large = compile_for.compile_for(small_config(micro_batch_size=16), "v5litepod-4")
  assert (large.memory_per_chip_bytes["temporaries"]
          > small.memory_per_chip_bytes["temporaries"])


@needs_libtpu
@pytest.mark.slow  # the CLI in a subprocess, compiling a 4,096-sequence micro-batch
def test_config_that_cannot_fit_is_refused(tmp_path):
  """A 16 GB v5e chip and a micro-batch of 4,096 sequences of 512 tokens: the CLI exits 1 and
  names micro_batch_size."""
  report_path = tmp_path / "report.json"
  out = subprocess.run(
      [sys.executable, "-m", "lamb_optax.train", f"--config={ROOT / 'configs' / 'tiny.py'}",
       "--compile_for=v5litepod-1", f"--compile_report={report_path}",
       "--config.model.overrides.hidden_dropout=0.0",
       "--config.model.overrides.attention_dropout=0.0", "--config.data.max_seq_length=512",
       "--config.global_batch_size=4096", "--config.micro_batch_size=4096",
       "--config.eval_batch_size=0"],
      capture_output=True, text=True, cwd=ROOT, check=False)
  assert out.returncode == 1, out.stdout + out.stderr[-3000:]
  assert "DOES NOT FIT" in out.stdout and "micro_batch_size" in out.stdout
  report = json.loads(report_path.read_text())
  assert report["fits"] is False and report["accelerator"] == "v5litepod-1"
  for key in ("chips", "hbm_per_chip_bytes", "memory_per_chip_bytes", "flops_per_step",
              "bytes_accessed_per_step", "collectives", "compile_seconds",
              "estimated_step_seconds", "estimated_mfu"):
    assert key in report


def test_existing_report_is_kept_and_refused_before_compiling(tmp_path, capsys):
  report = tmp_path / "report.json"
  report.write_text("a report from another run")
  assert compile_for.main(small_config(), "v5litepod-4", str(report)) == 2
  assert "already exists and is kept" in capsys.readouterr().out
  assert report.read_text() == "a report from another run"
  missing = tmp_path / "no-such-dir" / "report.json"
  assert compile_for.main(small_config(), "v5litepod-4", str(missing)) == 2
  assert "does not exist" in capsys.readouterr().out


def test_markdown_table_has_a_row_per_report():
  fits = compile_for.Report(
      accelerator="v4-8", topology="v4:2x2x1", chips=4, hosts=1, mesh={"data": 4},
      global_batch_size=64, micro_batch_size=8, num_micro_batches=2, fits=True,
      hbm_per_chip_bytes=32 * 2**30, memory_per_chip_bytes={"total": 3 * 2**30},
      margin_bytes=29 * 2**30, compile_seconds=12.0, flops_per_step=2e15,
      bytes_accessed_per_chip=5e10, collectives={"all-reduce": {"count": 3, "bytes": 2**30}},
      estimate={"bound": "hbm"}, estimated_step_seconds=0.25, estimated_mfu=0.4).as_json()
  too_big = dict(fits, fits=False, flops_per_step=None, estimated_step_seconds=None,
                 collectives={})
  table = compile_for.markdown_table({"ok": fits, "oom": too_big}).splitlines()
  assert len(table) == 4 and all(line.count("|") == table[0].count("|") for line in table)
  assert ("| ok | v4-8 (4) | 8 x 2 | 3.00 GiB of 32.00 GiB | yes | 2.00 | 50 | "
          "all-reduce 3x 1.00 GiB | 0.250 s (hbm) | 40% | 12 s |") == table[2]
  assert "| **no** |" in table[3]


# --- --compile_sweep: one compile per (micro-batch, remat) pair, the fastest that fits. ---
@pytest.mark.parametrize("text, problem", [
    ("", "is empty"), ("8:fast", "remat must be one of"), ("x:none", "positive integer"),
    ("0:full", "positive integer"), ("8:full,8:full", "repeats a pair")])
def test_bad_pairs_are_refused_with_the_fix(text, problem):
  with pytest.raises(compile_for.CompileForError, match=problem):
    compile_sweep.parse_pairs(text)


def test_pair_config_changes_a_copy_only():
  config = small_config(micro_batch_size=8)
  changed = compile_sweep.pair_config(config, compile_sweep.Pair(4, "full"))
  assert (changed.micro_batch_size, changed.model.remat) == (4, "full")
  assert (config.micro_batch_size, config.model.remat) == (8, "none")
  kept = compile_sweep.pair_config(config, compile_sweep.Pair(16))
  assert kept.model.remat == "none"


def _row(fits, seconds):
  return {"fits": fits, "estimated_step_seconds": seconds}


def test_fastest_is_the_quickest_pair_that_fits():
  results = {"a": _row(True, 0.30), "b": _row(False, 0.10), "c": _row(True, 0.20),
             "d": {"refused": "not divisible", "flags": ""}}
  assert compile_sweep.fastest(results) == "c"  # b is quicker but does not fit
  assert compile_sweep.fastest({"b": _row(False, 0.1)}) is None


def test_bad_input_exits_2_before_compiling(tmp_path, capsys):
  report = tmp_path / "sweep.json"
  report.write_text("kept")
  assert compile_sweep.main(small_config(), "v5litepod-4", "8:none", str(report)) == 2
  assert report.read_text() == "kept"
  assert compile_sweep.main(small_config(), "v5litepod-4", "8:sometimes") == 2
  assert compile_sweep.main(small_config(), "v9-8", "8:none") == 2
  assert "error" in capsys.readouterr().out


@needs_libtpu
def test_sweep_compiles_each_pair_and_names_the_fastest(tmp_path, capsys):
  """Two pairs compile; a micro-batch that does not divide the batch is a refused row."""
  report = tmp_path / "sweep.json"
  code = compile_sweep.main(small_config(global_batch_size=64), "v5litepod-4",
                            "4:full,16:none,7:none", str(report))
  assert code == 0
  out = capsys.readouterr().out
  saved = json.loads(report.read_text())
  pairs = saved["pairs"]
  assert set(pairs) == {"micro 4, remat full", "micro 16, remat none", "micro 7, remat none"}
  assert "not divisible" in pairs["micro 7, remat none"]["refused"]
  compiled = {name: r for name, r in pairs.items() if "refused" not in r}
  assert {r["micro_batch_size"] for r in compiled.values()} == {4, 16}
  assert all(r["fits"] and r["estimated_step_seconds"] > 0 for r in compiled.values())
  # full remat recomputes the forward pass: more FLOPs than saving everything
  assert (pairs["micro 4, remat full"]["flops_per_step"]
          > pairs["micro 16, remat none"]["flops_per_step"])
  best = min(compiled, key=lambda n: compiled[n]["estimated_step_seconds"])
  assert saved["fastest"] == best
  assert f"FASTEST THAT FITS (v5litepod-4): {best}" in out
  assert compiled[best]["flags"] in out
  assert "micro 7, remat none: refused" in out and out.count("| micro ") == 2
