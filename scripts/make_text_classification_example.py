r"""Writes the shipped 3-class example of the ``text_classification`` task (no download).

  python scripts/make_text_classification_example.py [--out=docs/examples/text_classification]

Short customer-support messages, each labelled ``billing``, ``delivery`` or ``technical``: a
shared template ("hi team, ... please help") around two or three words drawn from the class's
own vocabulary, plus noise so that the task is not a lookup: in a third of the three-word
messages the third word is another class's, and 3% of the labels are flipped at random (so no
model scores 100%; a bag-of-words logistic regression scores 0.97 on dev and on test).
The output is deterministic (seed 0), and the files are committed: users need not run this.

Writes ``train.csv`` (300 rows), ``dev.csv`` (60), ``test.csv`` (60), and ``dev.tsv`` /
``dev.jsonl``, the same dev rows in the other two formats the task reads.
"""

from __future__ import annotations

import argparse
import csv
import json
import os

import numpy as np

# Mostly whole words of the embedded Python-docs vocabulary (the vocabulary of a random or a
# configs/tiny.py encoder), so that a tiny model reads them as one token each.
VOCABULARY = {
    "billing": ["bill", "subscription", "receipt", "cost", "pay", "account", "amount", "total",
                "license", "cancel", "invoice", "refund"],
    "delivery": ["package", "delivery", "order", "address", "box", "driver", "post", "mail",
                 "door", "deliver", "stamp", "destination"],
    "technical": ["error", "crash", "install", "password", "login", "browser", "update", "app",
                  "server", "bug", "restart", "download"],
}
TEMPLATES = [
    "{open} my {a} is wrong and the {b} did not help",
    "{open} a question about the {a}, the {b} and the {c}",
    "the {a} was a problem again today, {b} too",
    "{open} can you check the {a}? the {b} and {c} look odd",
    "why is the {a} still not working after the {b}",
    "{open} the {a} and {b} are a mess, {c} as well",
    "nothing happened with my {a} since the {b}",
    "I need help with the {a} please, and the {b} and {c}",
]
OPENINGS = ["hi team,", "hello,", "please help:", "urgent:", "", "good morning,"]
SPLITS = {"train": 300, "dev": 60, "test": 60}
OTHER_CLASS_WORD = 1 / 3
FLIPPED_LABELS = 0.03


def message(rng: np.random.Generator, label: str) -> str:
  """One message of class ``label``: a template filled with its words (and maybe another's)."""
  words = list(rng.choice(VOCABULARY[label], size=3, replace=False))
  if rng.random() < OTHER_CLASS_WORD:  # the third word, which half the templates show
    other = rng.choice([c for c in VOCABULARY if c != label])
    words[2] = str(rng.choice(VOCABULARY[other]))
  template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
  text = template.format(open=rng.choice(OPENINGS), a=words[0], b=words[1], c=words[2])
  return " ".join(text.split())


def examples(rng: np.random.Generator, n: int) -> list[dict[str, str]]:
  classes = sorted(VOCABULARY)
  rows = []
  for label in rng.permutation(np.resize(classes, n)):  # the classes balanced, in random order
    label = str(label)
    text = message(rng, label)
    if rng.random() < FLIPPED_LABELS:
      label = str(rng.choice([c for c in classes if c != label]))
    rows.append({"text": text, "label": label})
  return rows


def write(path: str, rows: list[dict[str, str]]) -> None:
  if path.endswith(".jsonl"):
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(row) + "\n" for row in rows)
    return
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.DictWriter(f, ["text", "label"], delimiter="\t" if path.endswith(".tsv") else ",",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="docs/examples/text_classification")
  out = parser.parse_args().out
  os.makedirs(out, exist_ok=True)
  rng = np.random.default_rng(0)
  splits = {name: examples(rng, n) for name, n in SPLITS.items()}
  for name, rows in splits.items():
    write(os.path.join(out, f"{name}.csv"), rows)
  for extension in ("tsv", "jsonl"):
    write(os.path.join(out, f"dev.{extension}"), splits["dev"])
  print(f"Wrote {', '.join(f'{k} ({len(v)})' for k, v in splits.items())} to {out}.")


if __name__ == "__main__":
  main()
