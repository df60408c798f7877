"""The README's first two commands are the ones CI and the trainer tests actually exercise."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def first_commands():
  block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
  return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_main_job_is_the_tiny_trainer_run():
  main_job, tests = first_commands()
  assert main_job.startswith("pip install -e '.[train]' && ")
  assert "python -m lamb_optax.train --config=configs/tiny.py --workdir=" in main_job
  assert (ROOT / "configs" / "tiny.py").is_file()
  # tests/train/test_trainer.py runs this same module and config (shrunk by overrides).
  runs = (ROOT / "tests" / "trainer_runs.py").read_text()
  assert '"-m", "lamb_optax.train"' in runs and "'configs' / 'tiny.py'" in runs
  assert tests.endswith("python -m pytest")


def test_ci_runs_the_readme_commands_as_written():
  # .ci/run reads the commands from the README's first bash block itself, so they cannot drift.
  ci = (ROOT / ".ci" / "run").read_text()
  assert "README.md" in ci and 'bash -c "$command"' in ci
  assert len(first_commands()) == 2
