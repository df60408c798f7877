"""Scores SQuAD v1.1 predictions as the official evaluate-v1.1.py does.

  python scripts/squad_eval.py dev-v1.1.json predictions.json
prints {"exact_match": ..., "f1": ...} (percent). predictions.json maps question ids to answer
text, as `python -m lamb_optax.train.predict --workdir=DIR` writes it.
"""

import argparse
import json
import sys

from lamb_optax.data import squad_metrics


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("data_file", help="a SQuAD v1.1 JSON file (e.g. dev-v1.1.json)")
  parser.add_argument("prediction_file", help="JSON object: question id -> predicted text")
  args = parser.parse_args(argv)
  with open(args.data_file, encoding="utf-8") as f:
    dataset = json.load(f)
  if not isinstance(dataset, dict) or "data" not in dataset:
    print(f"{args.data_file} has no 'data' list: not a SQuAD file.", file=sys.stderr)
    return 2
  with open(args.prediction_file, encoding="utf-8") as f:
    predictions = json.load(f)
  print(json.dumps(squad_metrics.evaluate(dataset["data"], predictions)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
