"""Scores a fine-tuning run's newest checkpoint on its whole dev set, with every metric of its task.

  python -m lamb_optax.train.predict --workdir=DIR
  python -m lamb_optax.train.predict --workdir=DIR --input_file=test.csv --output_file=pred.csv

Reads ``DIR/config.json``, builds the run's task and calls its module's ``predict(workdir,
restore_params)``: GLUE writes ``glue_<task>_dev.json`` (Spearman included) and a predictions
TSV; SQuAD writes ``predictions.json`` in the official format and prints EM/F1.
text_classification predicts every row of ``--input_file`` (default: the run's validation
file) into ``--output_file`` (default ``DIR/predictions_<input name>``; CSV, TSV or JSON Lines
by its extension) and, when the input has labels, prints and writes accuracy and macro-F1.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
from collections.abc import Sequence

from lamb_optax import tasks
from lamb_optax.train import checkpoint
from lamb_optax.train import workdir as workdir_lib

# The tasks whose module has a predict step.
PREDICTING = ("glue", "squad", "text_classification")


def predict(workdir: str, input_file: str | None = None,
            output_file: str | None = None) -> dict[str, float]:
  """The metrics of ``workdir``'s newest checkpoint (see the module docstring)."""
  workdir = workdir_lib.expand(workdir)
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{workdir} has no config.json: is it a lamb_optax.train workdir?")
  with open(path, encoding="utf-8") as f:
    task_name = json.load(f).get("task", "bert_pretraining")
  module = importlib.import_module(tasks.TASKS[task_name])
  if not hasattr(module, "predict"):
    raise ValueError(f"The {task_name!r} task has no predict step; these do: {list(PREDICTING)}.")
  files = {k: v for k, v in (("input_file", input_file), ("output_file", output_file)) if v}
  if files and "input_file" not in inspect.signature(module.predict).parameters:
    raise ValueError(f"--input_file/--output_file: the {task_name!r} task scores its own dev "
                     "set; only text_classification reads other files.")
  return module.predict(workdir, checkpoint.restore_params, **files)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="the workdir of a fine-tuning run")
  parser.add_argument("--input_file", default=None,
                      help="text_classification: a CSV, TSV or JSON Lines file to predict "
                           "(default: the run's validation file)")
  parser.add_argument("--output_file", default=None,
                      help="text_classification: where to write the predictions (its extension "
                           "sets the format; default: WORKDIR/predictions_<input name>)")
  args = parser.parse_args(argv)
  print(json.dumps(predict(args.workdir, args.input_file, args.output_file)))


if __name__ == "__main__":
  main(sys.argv[1:])
