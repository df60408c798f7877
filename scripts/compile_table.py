"""Prints a markdown table of ``--compile_report`` files, one row per file (docs/tpu.md's table).

  python -m lamb_optax.train --config=configs/bert_base_phase1.py --compile_for=v4-128 \
      --compile_report=reports/base_p1_v4-128.json
  python scripts/compile_table.py reports/*.json
"""

import argparse
import json
import os

from lamb_optax.tpu import compile_for


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("reports", nargs="+", help="JSON files written by --compile_report")
  args = parser.parse_args()
  reports = {}
  for path in args.reports:
    with open(path, encoding="utf-8") as f:
      reports[os.path.splitext(os.path.basename(path))[0]] = json.load(f)
  print(compile_for.markdown_table(reports))


if __name__ == "__main__":
  main()
