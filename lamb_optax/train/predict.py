"""Scores a fine-tuning run's newest checkpoint on its whole dev set, with every metric of its task.

  python -m lamb_optax.train.predict --workdir=DIR

Reads ``DIR/config.json``, builds the run's task and calls its module's ``predict(workdir,
restore_params)``: GLUE writes ``glue_<task>_dev.json`` (Spearman included) and a predictions
TSV; SQuAD writes ``predictions.json`` in the official format and prints EM/F1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence

from lamb_optax import tasks
from lamb_optax.train import checkpoint


def predict(workdir: str) -> dict[str, float]:
  """The metrics of ``workdir``'s newest checkpoint (see the module docstring)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{workdir} has no config.json: is it a lamb_optax.train workdir?")
  with open(path, encoding="utf-8") as f:
    task_name = json.load(f).get("task", "bert_pretraining")
  module = importlib.import_module(tasks.TASKS[task_name])
  if not hasattr(module, "predict"):
    raise ValueError(f"The {task_name!r} task has no predict step; these do: "
                     f"{sorted(n for n, m in tasks.TASKS.items() if n in ('glue', 'squad'))}.")
  return module.predict(workdir, checkpoint.restore_params)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="the workdir of a fine-tuning run")
  print(json.dumps(predict(parser.parse_args(argv).workdir)))


if __name__ == "__main__":
  main(sys.argv[1:])
