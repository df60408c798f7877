"""What ``scripts/tpu_pod.py`` checks before any gcloud call, so input that cannot work is
refused with a message that names the fix before a slice is paid for.

The config is loaded and checked by the trainer's own code (:func:`lamb_optax.train.config.load`,
:func:`lamb_optax.train.plan.check`) for the slice read from :mod:`lamb_optax.accelerators`, then
(unless skipped) the trainer's step is compiled for the slice in a subprocess. The command line's
own flags (the TPU name, ``--env``, overrides that mean nothing to a subcommand) and the project
and zone are checked here too.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence

from lamb_optax.accelerators import Slice
from lamb_optax.accelerators import parse_accelerator
from lamb_optax.tpu.pod import UsageError
from lamb_optax.train import config as config_lib
from lamb_optax.train import plan as plan_lib

# The checkout the package is imported from (``pip install -e .``, as ``setup`` installs it on
# the workers): configs are looked up under it, and the workers run their clone of it.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# Cloud TPU node names: a lowercase letter, then lowercase letters, digits or '-', at most 63.
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def _split_config_arg(config_arg: str) -> tuple[str, str | None]:
  """``configs/lamb_paper.py:32768`` -> (path, "32768"): the first ':' ends the path, as
  ml_collections.config_flags reads it."""
  path, sep, arg = config_arg.partition(":")
  return path, (arg if sep else None)


def load_config(config_arg: str, overrides: Sequence[str] = ()):
  """The trainer's config for ``--config=config_arg`` and ``--config.k=v`` overrides, parsed as
  the trainer parses them (:func:`lamb_optax.train.config.load`). A relative path is looked up
  in the working directory, then in the repository root."""
  path, arg = _split_config_arg(config_arg)
  if not os.path.isfile(path) and os.path.isfile(REPO_ROOT / path):
    config_arg = str(REPO_ROOT / path) + ("" if arg is None else f":{arg}")
  elif not os.path.isfile(path):
    raise UsageError(f"--config {config_arg!r}: no such file. Pass a config file path, e.g. "
                     "--config=configs/bert_base_phase1.py (relative to the repository root).")
  try:
    return config_lib.load(config_arg, overrides)
  except config_lib.ConfigError as e:
    raise UsageError(str(e)) from None


def remote_config_arg(config_arg: str) -> str:
  """The config path as the workers see it: relative to the repository they cloned."""
  path, arg = _split_config_arg(config_arg)
  p = pathlib.Path(path)
  if p.is_absolute():
    try:
      p = p.resolve().relative_to(REPO_ROOT)
    except ValueError:
      raise UsageError(
          f"--config {path} is outside the repository; the workers only have their clone of it. "
          "Put the config under configs/ (committed and pushed before `setup`), and pass it "
          "relative to the repository root.") from None
  return p.as_posix() + ("" if arg is None else f":{arg}")


def check_override_syntax(override: str) -> None:
  """The launcher takes overrides in one spelling only, ``--config.KEY=VALUE``: it passes them
  on to the trainer in a shell command, where a separate VALUE word could be mistaken."""
  if not override.startswith("--config.") or "=" not in override:
    raise UsageError(f"Unrecognised argument {override!r}: config overrides are written "
                     "--config.KEY=VALUE (with '=', e.g. --config.global_batch_size=8192).")


def check_config(config, slice_: Slice) -> plan_lib.BatchPlan:
  """The trainer's own pre-compile check (:func:`lamb_optax.train.plan.check`) for ``slice_``:
  the schema (a misspelt key), the schedule, and the batch arithmetic on the slice's mesh."""
  try:
    return plan_lib.check(config, slice_.devices, slice_.vms)
  except ValueError as e:
    raise UsageError(f"The trainer would refuse this config on {slice_.accelerator_type} "
                     f"({slice_.devices} devices, {slice_.vms} hosts): {e}") from None


def _looks_local(path: str) -> bool:
  return bool(path) and (path.startswith(("/", "~", "./", "../", "file:")) or
                         (os.sep in path and "://" not in path))


def check_run(config, slice_: Slice, workdir: str, allow_local_paths: bool = False) -> int:
  """Every check ``run`` makes before touching gcloud; returns micro-batches per step."""
  if not workdir:
    raise UsageError("--workdir is required: a gs://BUCKET/RUN directory shared by all workers.")
  n = check_config(config, slice_).num_micro_batches
  if slice_.multi_host and not allow_local_paths:
    if not workdir.startswith("gs://"):
      raise UsageError(
          f"--workdir {workdir!r} is local, but {slice_.accelerator_type} has {slice_.vms} hosts "
          "that must share checkpoints and metrics: use --workdir=gs://BUCKET/RUN (a GCS bucket "
          "in the slice's region).")
    paths = {"init_from": config.get("init_from", "")}
    data = config.get("data", {})
    paths["data.source"] = data.get("source", "")
    paths["data.vocab_file"] = data.get("vocab_file", "")
    paths["data.data_dir"] = data.get("data_dir", "")
    for key, value in paths.items():
      if _looks_local(value):
        raise UsageError(
            f"config.{key} = {value!r} is a local path, which the other {slice_.vms - 1} hosts "
            f"of {slice_.accelerator_type} do not have: pass --config.{key}=gs://BUCKET/... "
            "(or --allow-local-paths if every worker has a copy).")
  return n


def compile_check_argv(config_arg: str, slice_: Slice, overrides: Sequence[str] = (),
                       report: str | None = None) -> list[str]:
  """The local compile check: the trainer's own step compiled for the slice (no TPU needed)."""
  path, arg = _split_config_arg(config_arg)
  if not os.path.isfile(path) and os.path.isfile(REPO_ROOT / path):
    config_arg = str(REPO_ROOT / path) + ("" if arg is None else f":{arg}")
  argv = [sys.executable, "-m", "lamb_optax.train", f"--config={config_arg}",
          f"--compile_for={slice_.accelerator_type}", *overrides]
  return argv + ([f"--compile_report={report}"] if report else [])


def compile_check(config_arg: str, slice_: Slice, overrides: Sequence[str] = ()) -> None:
  """Runs :func:`compile_check_argv` in a subprocess (libtpu and XLA stay out of this one) and
  refuses a config that does not fit the slice or does not compile, before any gcloud call."""
  argv = compile_check_argv(config_arg, slice_, overrides)
  print("+ " + shlex.join(argv), file=sys.stderr, flush=True)
  env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
         "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                    os.environ.get("PYTHONPATH", "")]))}
  out = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
  lines = [line for line in out.stdout.splitlines() if line.strip()]
  print("\n".join(lines), file=sys.stderr)
  if out.returncode == 1:
    raise UsageError(f"The config does not fit {slice_.accelerator_type} (compile check above); "
                     "change it as it says, or pass --skip-compile-check.")
  if out.returncode:
    detail = "\n".join(lines[-3:] or out.stderr.strip().splitlines()[-5:])
    raise UsageError(f"The compile check for {slice_.accelerator_type} failed (exit status "
                     f"{out.returncode}):\n{detail}\nFix it, or pass --skip-compile-check.")


def _gcloud_config_value(prop: str) -> str:
  out = subprocess.run(["gcloud", "config", "get-value", prop], capture_output=True, text=True,
                       check=False)
  value = out.stdout.strip()
  return "" if value in ("", "(unset)") else value


def resolve_where(args) -> tuple[str, str]:
  """Project and zone from flags, the environment, or (not in dry-run) gcloud's config."""
  if not args.dry_run and shutil.which("gcloud") is None:
    raise UsageError("gcloud is not on PATH: install the Google Cloud CLI "
                     "(https://cloud.google.com/sdk/docs/install) and run `gcloud auth login`, "
                     "or use --dry-run to only print the commands.")
  project = args.project or os.environ.get("CLOUDSDK_CORE_PROJECT", "")
  zone = args.zone or os.environ.get("CLOUDSDK_COMPUTE_ZONE", "")
  if not args.dry_run:
    project = project or _gcloud_config_value("project")
    zone = zone or _gcloud_config_value("compute/zone")
  for flag, value, env, prop in (("--project", project, "CLOUDSDK_CORE_PROJECT", "project ID"),
                                 ("--zone", zone, "CLOUDSDK_COMPUTE_ZONE", "compute/zone ZONE")):
    if not value:
      default = "" if args.dry_run else f", or set a default: `gcloud config set {prop}`"
      raise UsageError(f"No {flag[2:]}: pass {flag} (or set ${env}){default}.")
  return project, zone


def check_arguments(args: argparse.Namespace, overrides: Sequence[str]) -> Slice | None:
  """Every check of a parsed ``scripts/tpu_pod.py`` command line and its ``--config.KEY=VALUE``
  ``overrides`` but the project and zone (:func:`resolve_where`); the slice of create and run."""
  slice_ = None
  # gcloud would read a name such as '--zone=x' or '-h' as an option.
  if not _NAME.fullmatch(args.name):
    raise UsageError(f"TPU name {args.name!r}: names are 1-63 lowercase letters, digits and '-', "
                     "starting with a letter and not ending with '-' (e.g. bert-base).")
  for o in overrides:
    check_override_syntax(o)
  if overrides and args.command not in ("run", "create"):
    raise UsageError(f"{args.command} takes no config overrides; got {overrides}.")
  if overrides and args.command == "create" and not args.config:
    raise UsageError("Config overrides on create need --config to apply to.")
  if args.command == "run":
    slice_ = parse_accelerator(args.accelerator_type)
    for e in args.env:
      if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", e):
        raise UsageError(f"--env {e!r}: write KEY=VALUE.")
    remote_config_arg(args.config)
    check_run(load_config(args.config, overrides), slice_, args.workdir, args.allow_local_paths)
    if not args.skip_compile_check:
      compile_check(args.config, slice_, overrides)
  elif args.command == "create":
    slice_ = parse_accelerator(args.accelerator_type)
    if args.config:
      check_config(load_config(args.config, overrides), slice_)
      if not args.skip_compile_check:
        compile_check(args.config, slice_, overrides)
  elif args.command == "logs" and (args.worker < 0 or args.lines < 1):
    raise UsageError("--worker must be >= 0 and --lines >= 1.")
  elif args.command == "stop" and args.grace_seconds < 0:
    raise UsageError(f"--grace-seconds={args.grace_seconds}: must be >= 0 (the seconds the "
                     "trainer gets to save after SIGTERM).")
  return slice_
