"""The trainer's config schema, and the checks that run before anything is compiled.

Every config in ``configs/`` starts from :func:`default_config` and changes values; the result is
locked, so a misspelt key (in the file or in a ``--config.x=y`` override) is an error naming the
key instead of a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence

import ml_collections
from absl import flags
from ml_collections import config_dict
from ml_collections import config_flags

from lamb_optax.train.recipes import LR_SCHEDULES, OPTIMIZERS


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
  """The keys of fine-tuning tasks (docs_classification, glue, squad); pretraining ignores them.

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


def paper_lamb_phase(preset: str, *, global_batch_size: int, num_train_steps: int,
                     max_seq_length: int, max_predictions_per_seq: int, micro_batch_size: int,
                     init_from: str = "") -> ml_collections.ConfigDict:
  """One phase of the paper's LAMB BERT pretraining, the base of ``configs/bert_*_phase*.py``.

  LAMB with weight decay 0.01 and ε 1e-6, bfloat16 compute, the learning rate and warmup of the
  paper's square-root rule for ``global_batch_size`` (:func:`lamb_optax.schedules.
  paper_learning_rate` / ``paper_warmup_ratio``), linear decay; ``init_from`` for phase 2.

  >>> config = paper_lamb_phase("base", global_batch_size=32768, num_train_steps=100,
  ...                           max_seq_length=128, max_predictions_per_seq=20, micro_batch_size=128)
  >>> config.learning_rate, config.warmup_steps
  (0.005, 20)
  """
  from lamb_optax import schedules  # pylint: disable=g-import-not-at-top
  config = default_config()
  config.model.preset = preset
  config.model.dtype = "bfloat16"
  config.optimizer.name = "lamb"
  config.optimizer.kwargs.weight_decay = 0.01
  config.optimizer.kwargs.eps = 1e-6
  config.global_batch_size = global_batch_size
  config.micro_batch_size = micro_batch_size
  config.num_train_steps = num_train_steps
  config.learning_rate = schedules.paper_learning_rate(global_batch_size)
  config.warmup_steps = round(schedules.paper_warmup_ratio(global_batch_size) * num_train_steps)
  config.data.max_seq_length = max_seq_length
  config.data.max_predictions_per_seq = max_predictions_per_seq
  config.init_from = init_from
  config.log_every_steps = 50
  config.eval_every_steps = 1000 if max_seq_length <= 128 else 500
  config.checkpoint_every_steps = 500 if max_seq_length <= 128 else 250
  return config


# ImageNet-1k's training images: TFDS imagenet2012's train split, and the `num_train_images`
# default of the TPU ResNet code (fastalgo/imagenet_resnet50_lamb resnet_main.py).
IMAGENET_TRAIN_IMAGES = 1_281_167


def epochs_to_steps(epochs: float, global_batch_size: int,
                    num_examples: int = IMAGENET_TRAIN_IMAGES) -> int:
  """Optimizer steps that cover ``epochs`` passes over ``num_examples``, rounded up.

  >>> epochs_to_steps(90, 32768), epochs_to_steps(20, 32768)  # the LAMB author's ImageNet run
  (3519, 782)
  """
  return math.ceil(epochs * num_examples / global_batch_size - 1e-9)


def imagenet_config(model: str, preset: str, *, global_batch_size: int, micro_batch_size: int,
                    num_train_steps: int, warmup_steps: int) -> ml_collections.ConfigDict:
  """The common part of ``configs/imagenet_*.py``: TFDS imagenet2012 at 224 pixels with the
  Inception crop + flip (evaluation: resize 256, centre crop 224), bfloat16 compute, the whole
  validation split (50,000 images) at each evaluation, about every 4 epochs."""
  config = default_config()
  config.task = "image_classification"
  config.image.model = model
  config.image.preset = preset
  config.image.dataset = "imagenet2012"
  config.image.augment = "imagenet"
  config.image.dtype = "bfloat16"
  config.global_batch_size = global_batch_size
  config.micro_batch_size = micro_batch_size
  config.num_train_steps = num_train_steps
  config.warmup_steps = warmup_steps
  config.log_every_steps = 50
  config.eval_every_steps = max(1, min(num_train_steps, epochs_to_steps(4, global_batch_size)))
  config.checkpoint_every_steps = config.eval_every_steps
  config.eval_batches = 1000  # an upper bound: evaluation stops at the end of the split
  return config


def _model_overrides() -> ml_collections.ConfigDict:
  """Every BertConfig field as an unset typed placeholder: ``--config.model.overrides.
  hidden_dropout=0.0`` then works from the command line, and unset fields keep the preset's."""
  from lamb_optax.models.config import BertConfig  # pylint: disable=g-import-not-at-top
  fields = {f.name: config_dict.placeholder(type(f.default))
            for f in dataclasses.fields(BertConfig) if f.name not in ("dtype", "remat")}
  return ml_collections.ConfigDict(fields)


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks ``config`` has exactly the schema's keys, then locks it against new ones."""
  unknown = sorted(_flat_keys(config) - _flat_keys(default_config(), allow_open=("optimizer.kwargs",)))
  # optimizer.kwargs is open: recipes.build_optimizer checks it against the optimizer's signature.
  unknown = [k for k in unknown if not k.startswith("optimizer.kwargs.")]
  if unknown:
    raise ValueError(f"Unknown config keys {unknown}; the trainer reads the keys of "
                     "lamb_optax.train.config.default_config(). Check the spelling.")
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


@dataclasses.dataclass(frozen=True)
class BatchPlan:
  """How a global batch maps onto processes, devices and micro-batches."""

  global_batch_size: int
  per_process_batch_size: int
  data_parallel_devices: int
  micro_batch_size: int  # per device
  num_micro_batches: int
  eval_batch_size: int  # global
  per_process_eval_batch_size: int


def plan_batches(config: ml_collections.ConfigDict, data_parallel_devices: int,
                 process_count: int) -> BatchPlan:
  """Validates the batch sizes against the mesh; raises a ValueError that says what to change."""
  g, b, d = config.global_batch_size, config.micro_batch_size, data_parallel_devices
  if g < 1 or b < 1:
    raise ValueError(f"global_batch_size ({g}) and micro_batch_size ({b}) must be positive.")
  if g % (d * b):
    good = [m for m in range(1, b + 1) if g % (d * m) == 0]
    hint = f"micro_batch_size={max(good)}" if good else f"a global batch that is a multiple of {d}"
    raise ValueError(
        f"global_batch_size {g} is not divisible by (data-parallel devices {d} × micro_batch_size "
        f"{b} = {d * b}). Use {hint}, or a global batch that is a multiple of {d * b}.")
  if g % process_count:
    raise ValueError(f"global_batch_size {g} is not divisible by the {process_count} processes.")
  e = config.eval_batch_size or d * b
  if e < 1 or e % d or e % process_count:
    raise ValueError(
        f"eval_batch_size {e} must be a positive multiple of the data-parallel devices ({d}) and "
        f"of the processes ({process_count}); e.g. eval_batch_size={d * b}, or 0 for that "
        "default (micro_batch_size × data-parallel devices).")
  return BatchPlan(g, g // process_count, d, b, g // (d * b), e, e // process_count)


MESH_AXES = ("data", "fsdp", "tensor")  # config.mesh's keys, in lamb_optax.train.sharding's order


def mesh_shape(axis_sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """The mesh ``config.mesh`` makes on ``num_devices`` devices: one size may be -1, the rest.

  The rule of ``lamb_optax.train.sharding.make_mesh``, without devices: axes not named are 1.

  >>> mesh_shape({"data": -1, "fsdp": 1, "tensor": 2}, 64)
  {'data': 32, 'fsdp': 1, 'tensor': 2}
  """
  unknown = set(axis_sizes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"Unknown mesh axes {sorted(unknown)} in config.mesh; use some of "
                     f"{MESH_AXES}.")
  sizes = {name: int(axis_sizes.get(name, 1)) for name in MESH_AXES}
  if list(sizes.values()).count(-1) > 1:
    raise ValueError(f"config.mesh {sizes}: at most one axis may be -1 (the rest of the devices).")
  if any(s == 0 or s < -1 for s in sizes.values()):
    raise ValueError(f"config.mesh {sizes}: axis sizes must be positive (or one -1).")
  known = math.prod(s for s in sizes.values() if s != -1)
  if -1 in sizes.values():
    if num_devices % known:
      raise ValueError(
          f"config.mesh {sizes} needs a multiple of {known} devices to fill its -1 axis, but there "
          f"are {num_devices}. Change --config.mesh.* or the number of devices.")
    sizes = {k: num_devices // known if s == -1 else s for k, s in sizes.items()}
  elif known != num_devices:
    raise ValueError(f"config.mesh {sizes} uses {known} devices, but there are {num_devices}; "
                     "make the sizes multiply to that, or set one of them to -1.")
  return sizes


def data_parallel_size(mesh_config: Mapping[str, int], num_devices: int) -> int:
  """Data-parallel devices (``data × fsdp``) of ``config.mesh`` on ``num_devices`` devices: the
  ``data_parallel_devices`` that :func:`plan_batches` takes.

  >>> data_parallel_size({"data": -1, "fsdp": 1, "tensor": 4}, 512)
  128
  """
  sizes = mesh_shape(mesh_config, num_devices)
  return sizes["data"] * sizes["fsdp"]


# Keys that count things and may be 0 (0 = none, or "look it up"), but never negative.
_NON_NEGATIVE = ("eval_batches", "eval_batch_size", "data.worker_count", "peak_flops_per_device",
                 "data.embedded_max_documents")
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
  :func:`lock`, :func:`check_schedule` and :func:`plan_batches` are the trainer's next checks.
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
                                           flag_values=flag_values, lock_config=False,
                                           sys_argv=argv)
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
  return holder.value
