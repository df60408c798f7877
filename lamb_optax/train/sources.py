"""A run started from ``init_from`` keeps what it needs from it, and notices when it changes.

At a run's first start, process 0 writes ``<workdir>/init_from/source.json``: the source's path
and a fingerprint of what was read from it (the checkpoint step and a SHA-256 of its recorded
checksums, or of a Hugging Face directory's weight files; SHA-256 of its ``config.json`` and
vocabulary), and for fine-tuning the encoder's model config and lower-casing, with a copy of its
vocabulary (``lamb_optax.tasks.finetuning.RECORD_FILE``). A resumed run, and
``lamb_optax.train.predict``, build the task from these copies, so the source may move or go.
If it is still there but its fingerprint changed, resuming is refused (a different start than the
run's checkpoints came from) unless ``allow_config_change``; ``init_from`` may point at the source's
new place (same fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from typing import Any

import ml_collections

from lamb_optax.tasks import finetuning
from lamb_optax.train import checkpoint as checkpoint_lib
from lamb_optax.train import workdir as workdir_lib

_log = logging.getLogger(__name__)
_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 24):
      digest.update(chunk)
  return digest.hexdigest()


def fingerprint(source: str, vocab_file: str | None = None) -> dict[str, str]:
  """What identifies the start ``source`` gives a run (see the module docstring)."""
  source = os.path.expanduser(source)
  out = {}
  if os.path.isdir(os.path.join(source, "checkpoints")) or not any(
      os.path.isfile(os.path.join(source, w)) for w in _HF_WEIGHTS):
    step = checkpoint_lib.source_step(source)
    step_dir = checkpoint_lib.checkpoints_dir(source) / str(step)
    sums = step_dir / checkpoint_lib.CHECKSUM_FILE
    listing = (sums.read_text() if sums.exists() else
               json.dumps(sorted((str(p), p.stat().length) for p in step_dir.rglob("*"))))
    out["weights"] = f"step {step}, {hashlib.sha256(listing.encode()).hexdigest()}"
  else:
    weights = [w for w in _HF_WEIGHTS if os.path.isfile(os.path.join(source, w))]
    if "model.safetensors.index.json" in weights:  # sharded: the index names the shards
      with open(os.path.join(source, "model.safetensors.index.json"), encoding="utf-8") as f:
        weights += sorted(set(json.load(f).get("weight_map", {}).values()))
    out["weights"] = hashlib.sha256(
        "".join(_sha256(os.path.join(source, w)) for w in weights).encode()).hexdigest()
  for name, path in (("config.json", os.path.join(source, "config.json")),
                     ("vocabulary", vocab_file or os.path.join(source, "vocab.txt"))):
    if os.path.isfile(path):
      out[name] = _sha256(path)
  return out


def record(task: Any, config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes ``<workdir>/init_from`` for a run starting from ``config.init_from`` (process 0)."""
  encoder = getattr(task, "encoder", None)
  if encoder is not None and encoder.kind not in ("workdir", "huggingface"):
    encoder = None
  directory = os.path.join(workdir, finetuning.RECORD_DIR)
  os.makedirs(directory, exist_ok=True)
  entry: dict[str, Any] = {
      "path": os.path.abspath(os.path.expanduser(config.init_from)),
      "vocab_file": encoder.vocab_file if encoder else None,
      "fingerprint": fingerprint(config.init_from, encoder.vocab_file if encoder else None)}
  if encoder is not None:
    shutil.copyfile(encoder.vocab_file, os.path.join(directory, finetuning.RECORD_VOCAB))
    entry["encoder"] = finetuning.encoder_record(encoder)
    source_config = os.path.join(os.path.expanduser(config.init_from), "config.json")
    if os.path.isfile(source_config):  # for reference: the copies above are what is read
      shutil.copyfile(source_config, os.path.join(directory, "source_config.json"))
  tmp = os.path.join(directory, finetuning.RECORD_FILE + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(entry, f, indent=1)
  os.replace(tmp, os.path.join(directory, finetuning.RECORD_FILE))


def _read(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, finetuning.RECORD_DIR, finetuning.RECORD_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _has_checkpoints(workdir: str) -> bool:
  directory = os.path.join(workdir, "checkpoints")
  return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


def for_build(config: ml_collections.ConfigDict,
              workdir: str | None) -> ml_collections.ConfigDict:
  """``config``, or, for a run that recorded its encoder and is resumed (it has checkpoints), a
  copy whose ``init_from`` is its own copies (the task is built from them, wherever the source
  is now)."""
  if not workdir or not config.init_from or "://" in workdir or not _has_checkpoints(workdir):
    return config
  entry = _read(workdir)
  if entry is None or "encoder" not in entry:
    return config
  config = config.copy_and_resolve_references()
  config.init_from = os.path.join(workdir, finetuning.RECORD_DIR)
  return config


def check(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses to resume when ``config.init_from`` still exists but gives another start than the
  one recorded (see the module docstring); call before restoring."""
  entry = _read(workdir)
  if (entry is None or not config.init_from or config.allow_config_change
      or "://" in config.init_from):
    return
  source = os.path.expanduser(config.init_from)
  if not os.path.isdir(source):
    _log.warning("init_from=%s is gone; this run resumes from its own copies in %s.", source,
                 os.path.join(workdir, finetuning.RECORD_DIR))
    return
  vocab_file = entry.get("vocab_file")
  now = fingerprint(source, vocab_file if vocab_file and os.path.isfile(vocab_file) else None)
  changed = [f"{k}: {v} -> {now.get(k)}" for k, v in entry["fingerprint"].items()
             if k in now and now[k] != v]
  if changed:
    raise workdir_lib.WorkdirError(
        f"init_from={config.init_from} changed since this run started from it "
        f"({entry['path']}): " + "; ".join(changed) + ". Resuming would continue a run whose "
        "start no longer matches its source. This run needs nothing from it (its copies are in "
        f"{os.path.join(workdir, finetuning.RECORD_DIR)}): point init_from back at the source "
        "it started from, start afresh in a new --workdir, or pass "
        "--config.allow_config_change=True to resume anyway.")
