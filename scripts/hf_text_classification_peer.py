r"""The peer for configs/text_classification.py: the same fine-tuning with Hugging Face
transformers + PyTorch, on the same files, to compare test accuracy and CPU time.

  pip install torch transformers
  python scripts/hf_text_classification_peer.py --model_dir=HF_BERT_DIR \
      --train_file=train.csv --validation_file=dev.csv --test_file=test.csv \
      --learning_rate=5e-5 --max_seq_length=64 --seed=0

Files are read as configs/text_classification.py reads them (a ``label`` column and a
``text``/``sentence`` column, CSV/TSV/JSON Lines by extension; the classes are the training
file's sorted labels). The recipe is the usual one for ``BertForSequenceClassification``
(Devlin et al. 2019; as transformers' ``Trainer`` runs it): 3 epochs at batch 32, shuffled
each epoch, AdamW (``torch.optim.AdamW``, betas 0.9/0.999, eps 1e-6, weight decay 0.01 except
biases and LayerNorm), linear warmup over 10% of the steps then linear decay to 0, gradient
clipping at global norm 1.0, dropout as the checkpoint's config.json says. Prints one JSON line:
validation and test accuracy and macro-F1, steps, and the process CPU and wall seconds of the
training loop (tokenisation and evaluation not included).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np

from lamb_optax.data import labelled_text


def macro_f1(gold: np.ndarray, pred: np.ndarray, classes: int) -> float:
  f1s = []
  for c in range(classes):
    tp = np.sum((pred == c) & (gold == c))
    fp, fn = np.sum((pred == c) & (gold != c)), np.sum((pred != c) & (gold == c))
    f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
  return float(np.mean(f1s))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  for name in ("model_dir", "train_file", "validation_file", "test_file"):
    parser.add_argument(f"--{name}", required=True)
  parser.add_argument("--learning_rate", type=float, default=5e-5)
  parser.add_argument("--max_seq_length", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--epochs", type=float, default=3.0)
  parser.add_argument("--warmup_fraction", type=float, default=0.1)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
  args = parser.parse_args()

  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  if args.threads:
    torch.set_num_threads(args.threads)
  random.seed(args.seed)
  np.random.seed(args.seed)
  torch.manual_seed(args.seed)

  table = labelled_text.read_table(args.train_file)  # the trainer's reader and classes
  schema = labelled_text.LabelSchema.from_training(table)
  if schema.regression:
    raise SystemExit("This peer covers classification only.")
  classes = schema.classes
  train_x = schema.texts(table)
  tokenizer = transformers.BertTokenizerFast.from_pretrained(args.model_dir)
  model = transformers.BertForSequenceClassification.from_pretrained(
      args.model_dir, num_labels=len(classes))

  def encode(texts):
    columns = list(zip(*texts, strict=True))
    return tokenizer(*columns, truncation=True, max_length=args.max_seq_length,
                     padding="max_length", return_tensors="pt")

  train = encode(train_x)
  labels = torch.tensor(schema.encode(table), dtype=torch.long)
  n = len(labels)
  steps_per_epoch = n // args.batch_size
  steps = max(1, int(args.epochs * steps_per_epoch))
  warmup = int(args.warmup_fraction * steps)
  no_decay = ("bias", "LayerNorm.weight")
  groups = [
      {"params": [p for k, p in model.named_parameters() if not k.endswith(no_decay)],
       "weight_decay": 0.01},
      {"params": [p for k, p in model.named_parameters() if k.endswith(no_decay)],
       "weight_decay": 0.0}]
  optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, eps=1e-6)
  schedule = transformers.get_linear_schedule_with_warmup(optimizer, warmup, steps)

  model.train()
  cpu, wall = time.process_time(), time.perf_counter()
  order, step = [], 0
  generator = torch.Generator().manual_seed(args.seed)
  while step < steps:
    if len(order) < args.batch_size:
      order = torch.randperm(n, generator=generator).tolist()
    batch, order = order[:args.batch_size], order[args.batch_size:]
    out = model(input_ids=train["input_ids"][batch],
                attention_mask=train["attention_mask"][batch],
                token_type_ids=train["token_type_ids"][batch], labels=labels[batch])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad()
    step += 1
    if step % 20 == 0 or step == steps:
      print(f"step {step}/{steps}: loss {out.loss.item():.4f}", flush=True)
  cpu, wall = time.process_time() - cpu, time.perf_counter() - wall

  model.eval()
  result = {"steps": steps, "train_cpu_s": round(cpu, 1), "train_wall_s": round(wall, 1),
            "learning_rate": args.learning_rate, "seed": args.seed}
  for name, path in (("validation", args.validation_file), ("test", args.test_file)):
    held_out = labelled_text.read_table(path)
    gold = np.asarray(schema.encode(held_out))  # unknown labels: a ValueError naming the line
    enc = encode(schema.texts(held_out))
    preds = []
    with torch.no_grad():
      for i in range(0, len(gold), 128):
        logits = model(**{k: v[i:i + 128] for k, v in enc.items()}).logits
        preds.append(logits.argmax(-1).numpy())
    pred = np.concatenate(preds)
    result[f"{name}_accuracy"] = float(np.mean(pred == gold))
    result[f"{name}_macro_f1"] = macro_f1(gold, pred, len(classes))
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
