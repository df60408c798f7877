"""Scores SQuAD v1.1 predictions as the official evaluate-v1.1.py does.

  python scripts/squad_eval.py dev-v1.1.json predictions.json
prints {"exact_match": ..., "f1": ...} (percent). predictions.json maps question ids to answer
text, as `python -m lamb_optax.train.predict --workdir=DIR` writes it. A file of another shape
(a list, answers that are not text, a data file with repeated question ids) is refused with
exit code 2 rather than scored as 0.
"""

import argparse
import json
import sys

from lamb_optax.data import squad_format
from lamb_optax.data import squad_metrics


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("data_file", help="a SQuAD v1.1 JSON file (e.g. dev-v1.1.json)")
  parser.add_argument("prediction_file", help="JSON object: question id -> predicted text")
  args = parser.parse_args(argv)
  try:
    dataset = squad_format.load_json(args.data_file)
    squad_format.check_data(dataset, args.data_file, scoring=True)
    predictions = squad_format.load_json(args.prediction_file)
    squad_format.check_predictions(predictions, args.prediction_file)
  except (OSError, ValueError) as e:
    print(f"squad_eval: {e}", file=sys.stderr)
    return 2
  print(json.dumps(squad_metrics.evaluate(dataset["data"], predictions)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
