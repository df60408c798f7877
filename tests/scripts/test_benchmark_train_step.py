"""Smoke test of scripts/benchmark_train_step.py: the trainer's full step runs and is timed."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_quick_run_reports_positive_throughput(tmp_path):
  out = tmp_path / "result.json"
  # The inherited XLA_FLAGS give 8 fake CPU devices: the step runs data-parallel over a mesh.
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
  run = subprocess.run(
      [sys.executable, str(ROOT / "scripts" / "benchmark_train_step.py"), "--quick", "--no-hf",
       "--micro-batches", "2", "--batch", "16", "--json", str(out)],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
  report = json.loads(out.read_text())
  assert report["tokens_per_s"]["ours"] > 0
  assert report["micro_batches"] == 2
  assert 0 < report["mfu"] < 1
  assert report["peak_source"].startswith(("measured matmul peak", "vendor"))


def test_profile_attributes_the_step_to_named_costs(tmp_path):
  out = tmp_path / "result.json"
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
  run = subprocess.run(
      [sys.executable, str(ROOT / "scripts" / "benchmark_train_step.py"), "--quick", "--no-hf",
       "--profile", str(tmp_path / "trace"), "--json", str(out)],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
  costs = {c["name"]: c for c in json.loads(out.read_text())["profile"]}
  assert abs(sum(c["share"] for c in costs.values()) - 1) < 1e-6
  # Matmuls are found, and the named rules leave little to "other".
  assert costs["matmul"]["share"] > 0.1
  assert costs.get("other", {"share": 0})["share"] < 0.3
  assert (tmp_path / "trace" / "train_step.hlo.txt").exists()
