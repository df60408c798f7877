"""metrics.jsonl after restarts: each step once (the resumed values), and strict JSON."""

import json

from lamb_optax.train import metrics as metrics_lib


def _strict_rows(path):
  def refuse(token):
    raise ValueError(f"non-standard JSON token {token}")
  return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def _run(workdir, start, stop, value, initial_step=None):
  writer = metrics_lib.MetricsWriter(str(workdir), total_steps=100, progress_bar=False,
                                     initial_step=start if initial_step is None else initial_step)
  for step in range(start + 1, stop + 1):
    writer.write(step, {"loss": value})
    if step % 5 == 0:
      writer.write(step, {"loss": value}, prefix="eval_")
  writer.close()


def test_a_resumed_run_replaces_the_rows_after_its_checkpoint(tmp_path):
  _run(tmp_path, 0, 12, 1.0)   # killed at step 12, last checkpoint at 10
  _run(tmp_path, 10, 14, 2.0)  # killed at 14, resumed from 10 again
  _run(tmp_path, 10, 20, 3.0)
  rows = _strict_rows(tmp_path / "metrics.jsonl")
  train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
  assert train == [(s, 1.0) for s in range(1, 11)] + [(s, 3.0) for s in range(11, 21)]
  evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
  assert evals == [(5, 1.0), (10, 1.0), (15, 3.0), (20, 3.0)]
  assert not list(tmp_path.glob("*.tmp"))


def test_a_fresh_start_in_a_used_workdir_drops_every_row(tmp_path):
  _run(tmp_path, 0, 3, 1.0)  # killed before its first checkpoint
  _run(tmp_path, 0, 2, 2.0)
  assert [r["loss"] for r in _strict_rows(tmp_path / "metrics.jsonl")] == [2.0, 2.0]


def test_non_finite_values_are_strict_json(tmp_path):
  _run(tmp_path, 0, 2, float("nan"))
  writer = metrics_lib.MetricsWriter(str(tmp_path), total_steps=9, initial_step=2,
                                     progress_bar=False)
  writer.write(3, {"loss": float("inf"), "grad_norm": float("-inf"), "ok": 1.5})
  writer.close()
  rows = _strict_rows(tmp_path / "metrics.jsonl")
  assert rows[-1] == {"step": 3, "loss": None, "grad_norm": None, "ok": 1.5}
  assert [r["loss"] for r in rows[:2]] == [None, None]


def test_bare_nan_and_torn_lines_of_older_files_are_rewritten(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "loss": NaN}\n{"step": 2, "loss": 0.5}\n{"step": 3, "lo')
  metrics_lib.MetricsWriter(str(tmp_path), total_steps=9, initial_step=2,
                            progress_bar=False).close()
  assert _strict_rows(path) == [{"step": 1, "loss": None}, {"step": 2, "loss": 0.5}]


def test_outside_a_terminal_each_logged_step_is_one_line_timed_after_the_compile(tmp_path,
                                                                                 capsys):
  writer = metrics_lib.MetricsWriter(str(tmp_path), total_steps=30)  # pytest: not a terminal
  writer.write(1, {"loss": 2.0})  # before the clock starts (the first step compiles): no line
  writer.start_clock(1)
  writer.write(10, {"loss": 1.5})
  writer.write(10, {"loss": 1.6}, prefix="eval_")
  writer.close()
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 1 and lines[0].startswith("step 10/30 (33%): loss 1.5000, "), lines
  assert "step/s, ETA 0:" in lines[0]


def test_lines_a_user_or_a_tool_added_are_kept_on_resume(tmp_path):
  _run(tmp_path, 0, 12, 1.0)
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write("# lowered the learning rate here\n")
    f.write('{"note": "from my tool", "run": 1}\n')
  _run(tmp_path, 10, 12, 2.0)
  lines = path.read_text().splitlines()
  assert "# lowered the learning rate here" in lines
  assert '{"note": "from my tool", "run": 1}' in lines
  rows = [json.loads(line) for line in lines if line.startswith('{"step"')]
  assert [(r["step"], r["loss"]) for r in rows if "loss" in r] == (
      [(s, 1.0) for s in range(1, 11)] + [(11, 2.0), (12, 2.0)])
