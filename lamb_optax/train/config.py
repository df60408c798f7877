"""The trainer's config: its schema, locking, loading, and the checks of single values.

:func:`check_values` and :func:`check_schedule` look at a config alone; the one pre-compile check
that also plans the batch on a set of devices is :func:`lamb_optax.train.plan.check`, which runs
them.

Every config in ``configs/`` starts from :func:`default_config` and changes values; the result is
locked, so a misspelt key (in the file or in a ``--config.x=y`` override) is an error naming the
key instead of a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import re
from collections.abc import Sequence

import ml_collections
from absl import flags
from ml_collections import config_dict
from ml_collections import config_flags

from lamb_optax.recipes import LR_SCHEDULES
from lamb_optax.recipes import OPTIMIZERS


def default_config() -> ml_collections.ConfigDict:
  """All keys the trainer reads, with the tiny embedded-corpus defaults."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # What to train: a name from lamb_optax.tasks.TASKS.
  c.task = "bert_pretraining"
  # Model: a preset name plus BertConfig field overrides.
  c.model = ml_collections.ConfigDict(dict(
      preset="tiny", overrides=_model_overrides(), dtype="float32", remat="none"))
  # Optimizer: a name from OPTIMIZERS and its keyword arguments (learning rate is separate).
  c.optimizer = ml_collections.ConfigDict(dict(name="lamb", kwargs=ml_collections.ConfigDict(
      dict(weight_decay=0.01))))
  # Learning rate: linear warmup from 0 to `learning_rate` over `warmup_steps`, then the decay
  # `lr_schedule` names (recipes.LR_SCHEDULES): "polynomial" decays to `end_learning_rate` at the
  # last step with the power measured over the whole run (BERT); "warmup_polynomial" measures it
  # over the steps after the warmup (MLPerf LARS); "warmup_cosine" is a cosine to
  # `end_learning_rate`; "warmup_piecewise" multiplies by `lr_decay_factor` at each step of
  # `lr_boundaries` (Goyal et al.'s ×0.1 at epochs 30/60/80).
  c.learning_rate = 1e-3
  c.warmup_steps = 100
  c.lr_schedule = "polynomial"
  c.decay_power = 1.0
  c.end_learning_rate = 0.0
  c.lr_boundaries = ()  # "warmup_piecewise": absolute steps, e.g. (4680, 9360)
  c.lr_decay_factor = 0.1  # "warmup_piecewise"
  c.global_batch_size = 128
  c.micro_batch_size = 16  # per data-parallel device
  c.num_train_steps = 1000
  c.log_every_steps = 20
  c.eval_every_steps = 200
  c.eval_batches = 4
  # Global eval batch; 0 = one micro-step's global batch (micro_batch_size × data-parallel
  # devices), which fits memory whenever a training micro-step does, at any global batch.
  c.eval_batch_size = 0
  c.checkpoint_every_steps = 200
  c.keep_checkpoints = 3  # >= 1: a run must keep a checkpoint to resume from
  c.max_nonfinite_steps = 10  # stop after this many skipped updates in a row
  c.async_checkpointing = True
  # Resuming a workdir with a config that changes what the run computes (seed, data, batch,
  # model, schedule) is refused unless True; the old config.json is then kept beside the new.
  c.allow_config_change = False
  # Phase 2 of two-phase pretraining: the workdir (or its checkpoints/<step> directory) of phase
  # 1, whose params start this run; step and schedule start afresh (optimizer state: below).
  c.init_from = ""
  # Phase 2's optimizer state: False starts it afresh (Google's BERT: init_checkpoint restores the
  # model's trainable variables only); True carries init_from's Adam moments over, step counts
  # restarted (NVIDIA's DeepLearningExamples run_pretraining.py --phase2).
  c.init_from_optimizer_state = False
  # Peak FLOP/s of one device for the MFU column; 0 = look the device kind up (TPU/GPU).
  c.peak_flops_per_device = 0.0
  c.data = ml_collections.ConfigDict(dict(
      source="embedded",  # "embedded" (the Python-docs corpus) or a dataset directory / TFDS name
      train_split="train",
      eval_split="validation",
      max_seq_length=128,
      max_predictions_per_seq=20,
      whole_word_mask=False,
      dynamic_masking=True,  # re-mask every epoch (RoBERTa-style); False: the stored masks
      vocab_file="",  # the vocab.txt of a non-embedded dataset (needed for dynamic masking)
      worker_count=0,
      data_dir="",  # where the embedded corpus is built/cached; default: <workdir>/data
      embedded_max_documents=0,  # 0 = the whole embedded corpus (tests use a few documents)
      embedded_dupe_factor=5,  # copies with different pairs/masks (~3,300 examples each)
      # Several examples per row with attention kept inside each (lamb_optax/data/packing.py,
      # docs/data.md): fewer padding tokens; batch sizes count rows then. Eval is unpacked.
      pack_sequences=False,
      max_examples_per_row=4,
      pack_window_rows=256,  # rows packed together; a window is one unit of the loader's work
  ))
  # Image classification (task "image_classification"); BERT runs ignore this section.
  c.image = ml_collections.ConfigDict(dict(
      model="resnet",  # "resnet" (lamb_optax.models.resnet) or "vit" (lamb_optax.models.vit)
      preset="tiny",  # ResNetConfig / ViTConfig preset: resnet50, resnet18, tiny; base, small, tiny
      dataset="digits",  # "digits" (offline, inside scikit-learn) or a TFDS name: imagenet2012
      data_dir="",  # TFDS data_dir ("" = TFDS's default, ~/tensorflow_datasets)
      train_split="train",
      eval_split="validation",  # digits: validation or test; imagenet2012: validation
      split_seed=0,  # digits: the permutation that cuts train/validation/test
      image_size=0,  # 0 = the dataset's (digits 8, ImageNet 224)
      patch_size=16,  # ViT
      augment="none",  # "none" or "imagenet" (random-resized crop + flip; eval resize + crop)
      label_smoothing=0.0,
      dropout=0.0,  # ViT
      batch_norm_group_size=0,  # ResNet: examples per BatchNorm group; 0 = whole micro-batch
      batch_norm_momentum=0.9,
      dtype="float32",  # compute dtype; params stay float32
  ))
  # Mesh axis sizes; -1 fills with the remaining devices.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.finetune = _finetune_defaults()
  return c


def _finetune_defaults() -> ml_collections.ConfigDict:
  """The keys of fine-tuning tasks (docs_classification, glue, squad, text_classification);
  pretraining ignores them.

  The pretrained encoder is ``init_from`` (a lamb_optax pretraining workdir or a Hugging Face
  BERT directory); see lamb_optax/tasks/finetuning.py and docs/finetuning.md.
  """
  return ml_collections.ConfigDict(dict(
      max_seq_length=128,  # Google's run_classifier default; SQuAD uses 384
      # The vocabulary of a randomly initialised encoder (no init_from): "" = the embedded one.
      # With init_from it comes from the source (its config.json / vocab.txt).
      vocab_file="",
      do_lower_case=True,  # used unless a Hugging Face tokenizer_config.json says otherwise
      max_train_examples=0,  # 0 = all; tests and quick runs use a few
      max_eval_examples=0,  # 0 = the whole held-out set
      # The run's length in passes over the training set actually read (classification tasks):
      # num_train_steps = ceil(num_train_epochs x train examples / global_batch_size) and
      # warmup_steps = round(warmup_fraction x num_train_steps), both set when the data is read
      # (config.json records them). 0 = num_train_steps and warmup_steps as set.
      num_train_epochs=0.0,
      warmup_fraction=0.1,
      # Your own data (task "text_classification"): CSV, TSV or JSON Lines by extension (.csv,
      # .tsv, .jsonl/.json), with a "label" column and a "sentence" or "text" column, or a
      # "sentence1"/"sentence2" pair, as Hugging Face's run_glue.py reads them. The classes come
      # from train_file; validation_file ("" = none) is scored during training.
      train_file="",
      validation_file="",
      # GLUE: a task name (mrpc, sst2, cola, stsb, qnli, rte, mnli_matched, mnli_mismatched) and
      # where its data is: "" = TFDS glue/<task> prepared in tfds_data_dir, else a directory of
      # the GLUE TSV files (train.tsv, dev.tsv / dev_matched.tsv ...).
      glue_task="mrpc",
      data_dir="",
      tfds_data_dir="",
      # SQuAD v1.1 (Google's run_squad.py defaults): data_dir holds train-v1.1.json and
      # dev-v1.1.json, else TFDS squad/v1.1.
      doc_stride=128,
      max_query_length=64,
      n_best_size=20,
      max_answer_length=30,
  ))


def optional(value):
  """``value`` for a config key that may also be None, from the command line too.

  absl parses an override by the key's type, so ``--config.KEY=None`` fails on a float key
  ("could not convert string to float"); a key made with ``optional`` is parsed as a Python
  literal instead: ``None``, ``0.5`` and ``True`` are what they say (a word stays a string,
  which :func:`check_values` refuses in ``optimizer.kwargs``).

  >>> config = ml_collections.ConfigDict()
  >>> config.max_grad_norm = optional(1.0)
  >>> config.max_grad_norm, config.to_dict()
  (1.0, {'max_grad_norm': 1.0})
  """
  return config_dict.FieldReference(value, field_type=object)


def _model_overrides() -> ml_collections.ConfigDict:
  """Every BertConfig field as an unset typed placeholder: ``--config.model.overrides.
  hidden_dropout=0.0`` then works from the command line, and unset fields keep the preset's."""
  from lamb_optax.models.bert_config import BertConfig  # pylint: disable=g-import-not-at-top
  fields = {f.name: config_dict.placeholder(type(f.default))
            for f in dataclasses.fields(BertConfig) if f.name not in ("dtype", "remat")}
  return ml_collections.ConfigDict(fields)


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks ``config`` has exactly the schema's keys, then locks it against new ones."""
  known = _flat_keys(default_config(), allow_open=("optimizer.kwargs",))
  unknown = sorted(_flat_keys(config) - known)
  # optimizer.kwargs is open: recipes.build_optimizer checks it against the optimizer's signature.
  unknown = [k for k in unknown if not k.startswith(_KWARGS)]
  if unknown:
    hints = "".join(_hint(k, known) for k in unknown)
    raise ValueError(f"Unknown config keys {unknown}; the trainer reads the keys of "
                     f"lamb_optax.train.config.default_config(). {hints}Check the spelling.")
  config.lock()
  return config


def _flat_keys(config, prefix="", allow_open=()) -> set[str]:
  keys = set()
  for key, value in config.items():
    name = prefix + key
    keys.add(name)
    if isinstance(value, ml_collections.ConfigDict) and name not in allow_open:
      keys |= _flat_keys(value, name + ".", allow_open)
  return keys


# Keys that count things and may be 0 (0 = none, or "look it up"), but never negative.
_NON_NEGATIVE = ("eval_batches", "eval_batch_size", "data.worker_count", "peak_flops_per_device",
                 "data.embedded_max_documents", "finetune.num_train_epochs")
# Keys that must be >= 1: 0 would keep no checkpoint to resume from, or stop before any update.
_POSITIVE = ("keep_checkpoints", "max_nonfinite_steps")
# Optimizer arguments that are strings by design (a dtype name); elsewhere a string in
# optimizer.kwargs is a mistake (a mask leaf "False" is a truthy string).
_STRING_KWARGS = ("mu_dtype",)


def check_values(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the key for a value no run can use: a non-finite float anywhere
  (``nan < 0`` is False, so range checks alone let NaN through), a value of another type than
  the schema's (a string for a number), a string in ``optimizer.kwargs`` (``"False"`` is
  truthy), or a count out of range.

  >>> config = default_config(); config.end_learning_rate = float("nan")
  >>> check_values(config)
  Traceback (most recent call last):
  ...
  ValueError: end_learning_rate = nan is not a finite number; set a finite value.
  """
  schema = _flat_values(default_config())
  for key, value in _flat_values(config).items():
    if isinstance(value, float) and not math.isfinite(value):
      raise ValueError(f"{key} = {value} is not a finite number; set a finite value.")
    _check_type(key, value, schema.get(key))
    if (key.startswith("optimizer.kwargs.") and isinstance(value, str)
        and key.split(".")[2] not in _STRING_KWARGS):
      raise ValueError(
          f"{key} is the string {value!r}; optimizer arguments (numbers, masks) must be Python "
          f"values, e.g. False or 0.1, not strings (a non-empty string counts as True).")
  for key in _NON_NEGATIVE:
    if _get(config, key) < 0:
      raise ValueError(f"{key} must be >= 0, got {_get(config, key)}.")
  if not 0 <= config.finetune.warmup_fraction <= 1:
    raise ValueError(f"finetune.warmup_fraction must lie in [0, 1], got "
                     f"{config.finetune.warmup_fraction}.")
  for key in _POSITIVE:
    if _get(config, key) < 1:
      raise ValueError(f"{key} must be >= 1, got {_get(config, key)}" + (
          " (a run that keeps no checkpoint cannot resume)." if key == "keep_checkpoints" else
          " (the run would stop at its first skipped update)."))


def _check_type(key: str, value, default) -> None:
  """Values must have the schema default's kind (an int where a float is expected is fine)."""
  if default is None or value is None:
    return
  kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(type(default))
  if kinds and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
    raise ValueError(f"{key} must be a {type(default).__name__}, got {value!r} "
                     f"({type(value).__name__}).")


def _flat_values(tree, prefix: str = "") -> dict:
  """Every leaf by dotted key, through ConfigDicts, dicts and lists (e.g. a mask in kwargs)."""
  if isinstance(tree, (ml_collections.ConfigDict, dict)):
    items = tree.items()
  elif isinstance(tree, (list, tuple)):
    items = ((str(i), v) for i, v in enumerate(tree))
  else:
    return {prefix[:-1]: tree}
  out = {}
  for key, value in items:
    out.update(_flat_values(value, f"{prefix}{key}."))
  return out


def _get(config: ml_collections.ConfigDict, key: str):
  for part in key.split("."):
    config = config[part]
  return config


def check_schedule(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the key when the schedule or optimizer settings cannot work
  (after :func:`check_values`, which it runs first)."""
  check_values(config)
  if config.num_train_steps < 1:
    raise ValueError(f"num_train_steps must be >= 1, got {config.num_train_steps}.")
  if not 0 <= config.warmup_steps <= config.num_train_steps:
    raise ValueError(f"warmup_steps ({config.warmup_steps}) must lie in [0, num_train_steps "
                     f"= {config.num_train_steps}]: the warmup cannot be longer than the run.")
  if not config.decay_power > 0:
    raise ValueError(f"decay_power must be > 0, got {config.decay_power}.")
  if config.lr_schedule not in LR_SCHEDULES:
    raise ValueError(f"Unknown lr_schedule {config.lr_schedule!r}; choose one of "
                     f"{sorted(LR_SCHEDULES)}.")
  if config.lr_schedule == "warmup_piecewise" and not config.lr_boundaries:
    raise ValueError("lr_schedule 'warmup_piecewise' needs lr_boundaries (steps at which the rate "
                     "is multiplied by lr_decay_factor), e.g. --config.lr_boundaries='(30, 60)'.")
  if not (math.isfinite(config.learning_rate) and config.learning_rate >= 0):
    raise ValueError(f"learning_rate must be finite and >= 0, got {config.learning_rate}.")
  if config.optimizer.name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {config.optimizer.name!r}; choose one of "
                     f"{sorted(OPTIMIZERS)}.")
  for name in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
    if config[name] < 1:
      raise ValueError(f"{name} must be >= 1, got {config[name]}.")


class ConfigError(ValueError):
  """A config file or ``--config.KEY=VALUE`` override that cannot be loaded; says what to fix."""


def load(config_arg: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads a config as ``python -m lamb_optax.train`` does: ``config_arg`` is ``--config``'s value
  (``path.py`` or ``path.py:ARG``, ARG passed to ``get_config``), ``overrides`` are
  ``--config.KEY=VALUE`` arguments (absl syntax, so ``--config.KEY VALUE`` and ``--config.FLAG``
  for booleans work too).

  It parses them with ``ml_collections.config_flags.DEFINE_config_file`` on a fresh
  ``absl.flags.FlagValues``, exactly as the trainer's flags do, so overrides are typed and checked
  by the same rules. The config is returned unlocked and unchecked, as the trainer receives it;
  :func:`lamb_optax.train.plan.check` (lock, schedule, batch plan) is the trainer's next step.
  Raises :class:`ConfigError` for a missing file, an unknown key, a value of the wrong type or an
  argument that is not an override.
  """
  path = config_arg.split(":", 1)[0]  # config_flags passes what follows the first ':' on
  if not os.path.isfile(path):
    raise ConfigError(f"--config={config_arg}: no such file {path!r} (relative to "
                      f"{os.getcwd()}). Pass a config file, e.g. --config=configs/tiny.py.")
  argv = ["lamb_optax.train", f"--config={config_arg}", *overrides]
  flag_values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", None, "Path to a config file.",
                                           flag_values=flag_values, sys_argv=argv,
                                           **CONFIG_FLAG_OPTIONS)
  try:
    rest = flag_values(argv)
  except (AttributeError, KeyError) as e:  # an override naming a key the config does not have
    detail = e
    while isinstance(detail, BaseException) and detail.args:  # AttributeError(KeyError(str))
      detail = detail.args[0]
    name, _, hint = str(detail).partition("\n")  # "'sourcee'\nDid you mean "source" ...?"
    key = next((o.split("=", 1)[0][len("--config."):] for o in overrides
                if name.strip("'") in re.split(r"[.=]", o)), name.strip("'"))
    hint = f"{hint} " if hint else ""
    raise ConfigError(f"--config.{key}: the config has no key {key!r}. {hint}Check the "
                      "spelling: the trainer reads the keys of "
                      "lamb_optax.train.config.default_config().") from None
  except flags.Error as e:  # a value of the wrong type, a missing value, a non-config flag
    raise ConfigError(f"{str(e).rstrip('.')}. Config overrides are written --config.KEY=VALUE, "
                      "VALUE of the key's type (e.g. --config.global_batch_size=8192).") from None
  if rest[1:]:
    raise ConfigError(f"Unexpected arguments {rest[1:]}: config overrides are written "
                      "--config.KEY=VALUE (e.g. --config.global_batch_size=8192).")
  for key in _override_keys(overrides):
    _check_override_key(key)
  return holder.value


# How the trainer's --config flag parses: unlocked (the trainer locks it after checking it), and
# accepting keys the config file does not set, so that an optimizer argument the recipe leaves at
# its default can be given on the command line (--config.optimizer.kwargs.weight_decay_mask=True).
# A new key anywhere else is a misspelling, refused by load() and by lock().
CONFIG_FLAG_OPTIONS = dict(lock_config=False, accept_new_attributes=True)
_KWARGS = "optimizer.kwargs."


def _override_keys(overrides: Sequence[str]) -> list[str]:
  """The dotted keys of ``--config.KEY=VALUE``/``--config.KEY``/``--noconfig.KEY`` arguments."""
  matches = (re.match(r"^--?(?:no)?config\.([^=]+)", o) for o in overrides)
  return [m.group(1) for m in matches if m]


def optimizer_arguments() -> set[str]:
  """The keys ``optimizer.kwargs`` may hold: the arguments of the optimizers of
  :data:`lamb_optax.recipes.OPTIMIZERS` but the learning rate and stacked axes."""
  names = {n for f in OPTIMIZERS.values() for n in inspect.signature(f).parameters}
  return names - {"learning_rate", "stacked_axes"}


def _check_override_key(key: str) -> None:
  """Raises a ConfigError for an override key that neither the schema nor an optimizer has."""
  if key.startswith(_KWARGS):
    name, known = key[len(_KWARGS):].split(".")[0], optimizer_arguments()
    if name not in known:
      raise ConfigError(f"--config.{key}: the config has no key {key!r}, and no optimizer takes "
                        f"an argument {name!r}. {_did_you_mean(name, known)}optimizer.kwargs "
                        f"holds optimizer arguments: {sorted(known)}.")
  elif key not in (schema := _flat_keys(default_config(), allow_open=(_KWARGS[:-1],))):
    raise ConfigError(f"--config.{key}: the config has no key {key!r}. {_hint(key, schema)}"
                      "Check the spelling: the trainer reads the keys of "
                      "lamb_optax.train.config.default_config().")


def _hint(key: str, schema: set[str]) -> str:
  """'Did you mean ...' for a misspelt dotted key, from the keys beside it in the schema."""
  parent, _, name = key.rpartition(".")
  return _did_you_mean(name, {k.rpartition(".")[2] for k in schema
                              if k.rpartition(".")[0] == parent})


def _did_you_mean(name: str, candidates) -> str:
  close = difflib.get_close_matches(name, sorted(candidates), n=1)
  return f'Did you mean "{close[0]}" instead of "{name}"? ' if close else ""
