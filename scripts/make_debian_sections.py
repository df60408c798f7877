r"""Makes a held-out "own data" text-classification task from any Debian machine's package lists:
predict a package's archive section from its description. Nothing is downloaded.

  apt-cache dumpavail > /tmp/avail.txt
  python scripts/make_debian_sections.py --avail=/tmp/avail.txt --out_dir=/tmp/debian_sections

Six sections whose descriptions are about what the software does (games, science, sound,
graphics, net, database; not the per-language sections, whose descriptions name the language).
Text: the short description and the first paragraph of the long one, whitespace collapsed, cut
at 400 characters; -dbg/-doc packages and repeated texts dropped. Splits are by *source*
package (hash of its name: 30% test, 10% dev, 60% train), so a program's binary packages never
straddle splits; then at most 400 / 80 / 150 rows per class in train / dev / test, drawn with a
fixed seed. Writes train.csv, dev.csv and test.csv with columns ``text,label`` (the format of
configs/text_classification.py) and prints the class counts.
"""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import os
import random

SECTIONS = ("games", "science", "sound", "graphics", "net", "database")
CAPS = {"train": 400, "dev": 80, "test": 150}


def stanzas(path: str):
  """The ``Field: value`` stanzas of a Packages file, continuation lines joined with newlines."""
  record: dict[str, str] = {}
  key = None
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      if not line.strip():
        if record:
          yield record
        record, key = {}, None
      elif line[0] in " \t" and key:
        record[key] += "\n" + line.strip()
      else:
        key, _, value = line.partition(":")
        record[key] = value.strip()
  if record:
    yield record


def description_text(description: str) -> str:
  lines = description.split("\n")
  first_paragraph = []
  for line in lines[1:]:
    if line == ".":
      break
    first_paragraph.append(line)
  text = f"{lines[0].strip()}. {' '.join(first_paragraph)}"
  return " ".join(text.split())[:400]


def split_of(source: str) -> str:
  bucket = int(hashlib.sha256(source.encode()).hexdigest(), 16) % 10
  return "test" if bucket < 3 else "dev" if bucket < 4 else "train"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--avail", required=True, help="the output of `apt-cache dumpavail`")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  seen: set[str] = set()
  by_split: dict[str, dict[str, list[str]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  for record in stanzas(args.avail):
    section, name = record.get("Section", ""), record.get("Package", "")
    if section not in SECTIONS or name.endswith(("-dbg", "-dbgsym", "-doc")):
      continue
    text = description_text(record.get("Description", ""))
    if text.lower() in seen:
      continue
    seen.add(text.lower())
    source = record.get("Source", name).split()[0]
    by_split[split_of(source)][section].append(text)
  paths = {split: os.path.join(args.out_dir, f"{split}.csv") for split in CAPS}
  existing = [p for p in paths.values() if os.path.exists(p)]
  if existing:  # checked before anything is written: no split set is left half replaced
    raise SystemExit(f"{', '.join(existing)} exist(s) and is kept; choose another --out_dir.")
  os.makedirs(args.out_dir, exist_ok=True)
  rng = random.Random(args.seed)
  for split, cap in CAPS.items():
    rows = []
    for section in SECTIONS:
      texts = sorted(by_split[split][section])
      rng.shuffle(texts)
      rows += [(t, section) for t in texts[:cap]]
    rng.shuffle(rows)
    path = paths[split]
    with open(path, "x", newline="", encoding="utf-8") as f:  # "x": never overwrite
      writer = csv.writer(f)
      writer.writerow(["text", "label"])
      writer.writerows(rows)
    counts = collections.Counter(label for _, label in rows)
    print(f"{path}: {len(rows)} rows, {dict(sorted(counts.items()))}")


if __name__ == "__main__":
  main()
