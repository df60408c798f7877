r"""Create, set up, run, watch and delete a Cloud TPU VM slice (v2/v3/v4/v5e/v5p/v6e) for
pretraining.

A thin, checkable wrapper around ``gcloud compute tpus``: every subcommand builds its gcloud
command lines with a pure function (lists of argv lists) and runs them, or with ``--dry-run``
prints them, one per line, shell-quoted. Input that cannot work (no project/zone, a batch the
slice cannot divide, a local workdir on a multi-host slice, ...) is refused with a message that
names the fix *before* any gcloud call. The config is loaded and checked by the trainer's own
code (``lamb_optax.train.config``: its flag parsing, ``lock``, ``check_schedule``,
``plan_batches``) and the slice read from ``lamb_optax.accelerators``, so the package must
be importable (``pip install -e .`` in the repository). docs/tpu.md walks through a whole run.

  python scripts/tpu_pod.py create bert --accelerator-type=v4-128 --zone=us-central2-b \
      --project=my-project --queued --spot
  python scripts/tpu_pod.py setup bert --zone=us-central2-b --project=my-project
  python scripts/tpu_pod.py run bert --accelerator-type=v4-128 --zone=us-central2-b \
      --project=my-project --config=configs/bert_base_phase1.py --workdir=gs://BUCKET/base_p1 \
      --config.data.source=gs://BUCKET/bert_data_128 --config.data.vocab_file=gs://BUCKET/vocab.txt
  python scripts/tpu_pod.py status bert ...   |  logs bert --worker=3  |  stop bert  |  delete bert

The trainer is started on every worker with the same command and *no* ``--coordinator_address``:
on Cloud TPU ``jax.distributed.initialize()`` finds the slice's hosts by itself
(lamb_optax/train/distributed.py). Re-running ``run`` after a preemption resumes from the last
checkpoint in the workdir. Project and zone come from the flags, else $CLOUDSDK_CORE_PROJECT /
$CLOUDSDK_COMPUTE_ZONE, else (not in --dry-run) ``gcloud config get-value``.
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

from lamb_optax.accelerators import DEFAULT_RUNTIME
from lamb_optax.accelerators import AcceleratorError
from lamb_optax.accelerators import Slice
from lamb_optax.accelerators import parse_accelerator
from lamb_optax.train import config as config_lib
from lamb_optax.train import plan as plan_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_REPO_URL = "https://github.com/lamb-optax/lamb_optax"  # placeholder org, see docs/tpu.md
REMOTE_DIR = "lamb_optax"  # relative to $HOME on every worker
LOG_DIR = "lamb_optax_logs"  # relative to $HOME; each worker writes its own log here
LOG_FILE = f"{LOG_DIR}/train.log"
PID_FILE = f"{LOG_DIR}/train.pid"
EXIT_FILE = f"{LOG_DIR}/train.exit"  # the trainer's exit status, written when it ends
# The trainer's exit statuses after SIGTERM / SIGINT (lamb_optax/train/preemption.py): it saved
# its last finished step (or, killed by the signal before it could, the last periodic checkpoint
# remains); either way `run` again resumes.
RESUMABLE = {143: "SIGTERM", 130: "SIGINT"}
# Cloud TPU node names: a lowercase letter, then lowercase letters, digits or '-', at most 63.
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


class UsageError(Exception):
  """Bad input; the message says what to change. Raised before any gcloud call."""


# --------------------------------------------------------------------------------------------
# The trainer config: loaded and checked by the trainer's own code (lamb_optax.train.config).
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Command construction: pure functions returning lists of argv lists.
# --------------------------------------------------------------------------------------------
def _where(zone: str, project: str) -> list[str]:
  return [f"--zone={zone}", f"--project={project}"]


def ssh_command(name: str, zone: str, project: str, worker: str, remote: str) -> list[str]:
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", name, *_where(zone, project),
          f"--worker={worker}", f"--command={remote}"]


def create_commands(name: str, slice_: Slice, zone: str, project: str, *,
                    runtime: str | None = None, queued: bool = False, spot: bool = False,
                    preemptible: bool = False, reserved: bool = False) -> list[list[str]]:
  if spot and preemptible:
    raise UsageError("--spot and --preemptible exclude each other; Spot is the newer kind.")
  if queued and preemptible:
    raise UsageError("Queued resources take --spot, not --preemptible.")
  runtime = runtime or DEFAULT_RUNTIME[slice_.generation]
  if queued:
    cmd = ["gcloud", "compute", "tpus", "queued-resources", "create", name, f"--node-id={name}",
           *_where(zone, project), f"--accelerator-type={slice_.accelerator_type}",
           f"--runtime-version={runtime}"]
  else:
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", "create", name, *_where(zone, project),
           f"--accelerator-type={slice_.accelerator_type}", f"--version={runtime}"]
  cmd += ["--spot"] * spot + ["--preemptible"] * preemptible + ["--reserved"] * reserved
  return [cmd]


def setup_commands(name: str, zone: str, project: str, *, repo: str = DEFAULT_REPO_URL,
                   ref: str = "main", extras: str = "tpu") -> list[list[str]]:
  d = shlex.quote(REMOTE_DIR)
  remote = "; ".join([
      "set -e",
      'cd "$HOME"',
      f"if [ ! -d {d}/.git ]; then git clone --quiet {shlex.quote(repo)} {d}; fi",
      f"cd {d}",
      "git fetch --quiet origin",
      f"git checkout --quiet {shlex.quote(ref)}",
      "if git symbolic-ref -q HEAD >/dev/null; then git pull --quiet --ff-only; fi",
      "python3 -m pip install --quiet --upgrade pip",
      f"python3 -m pip install --quiet -e {shlex.quote(f'.[{extras}]')}",
      "python3 -c 'import lamb_optax, jax; print(\"lamb_optax\", lamb_optax.__version__, "
      "\"jax\", jax.__version__)'",
  ])
  return [ssh_command(name, zone, project, "all", remote)]


def trainer_argv(config_arg: str, workdir: str, overrides: Sequence[str] = ()) -> list[str]:
  """The command every worker runs (no --coordinator_address: JAX finds the TPU hosts)."""
  return ["python3", "-m", "lamb_optax.train", f"--config={config_arg}", f"--workdir={workdir}",
          *overrides]


def run_commands(name: str, zone: str, project: str, config_arg: str, workdir: str,
                 overrides: Sequence[str] = (), env: Sequence[str] = ()) -> list[list[str]]:
  train = shlex.join(trainer_argv(config_arg, workdir, overrides))
  env_prefix = "".join(f"{shlex.quote(e)} " for e in env)
  pid, log, exit_ = PID_FILE, LOG_FILE, EXIT_FILE
  # A bash wrapper waits for the trainer to record its exit status (`status` and `stop` read it:
  # 143/130 mean preempted, resumable); the pid file names the trainer itself, which `stop`
  # signals.
  wrapper = (f'env {env_prefix}{train} & echo $! > "$HOME/{pid}"; wait $!; '
             f'echo $? > "$HOME/{exit_}"')
  remote = "; ".join([
      'cd "$HOME"',
      f"mkdir -p {LOG_DIR}",
      f'if [ -f {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then echo "$(hostname): a '
      f'trainer is already running (pid $(cat {pid})); run stop first" >&2; exit 1; fi',
      f'cd {shlex.quote(REMOTE_DIR)} || {{ echo "$(hostname): no ~/{REMOTE_DIR}; run setup first"'
      " >&2; exit 1; }",
      f'rm -f "$HOME/{pid}" "$HOME/{exit_}"',
      f'echo "=== $(date -u +%FT%TZ) $(hostname):" {shlex.quote(train)} >> "$HOME/{log}"',
      # `&` ends the nohup command itself, so it is not followed by `;`.
      f'nohup bash -c {shlex.quote(wrapper)} >> "$HOME/{log}" 2>&1 < /dev/null & '
      f'for i in $(seq 100); do [ -s "$HOME/{pid}" ] && break; sleep 0.1; done',
      f'echo "$(hostname): started pid $(cat "$HOME/{pid}"), log ~/{log}"',
  ])
  return [ssh_command(name, zone, project, "all", remote)]


def _last_exit() -> str:
  """Shell: says how the last trainer ended, from its recorded exit status."""
  resumable = " ".join(f"{code})" f' echo "$(hostname): the trainer was stopped by {sig} (exit '
                       f'status {code}): preempted, resumable; run again resumes it"; '
                       f'grep "^Stopped by" {LOG_FILE} | tail -n 1;;' for code, sig in
                       RESUMABLE.items())
  return (f'if [ -f {EXIT_FILE} ]; then S="$(cat {EXIT_FILE})"; case "$S" in {resumable} '
          '0) echo "$(hostname): the trainer finished (exit status 0)";; '
          '*) echo "$(hostname): the trainer failed (exit status $S); see logs";; esac; fi')


def status_commands(name: str, zone: str, project: str, queued: bool = False) -> list[list[str]]:
  kind = "queued-resources" if queued else "tpu-vm"
  remote = "; ".join([
      'cd "$HOME"',
      f'if [ -f {PID_FILE} ] && kill -0 "$(cat {PID_FILE})" 2>/dev/null; then echo "$(hostname):'
      f' trainer running (pid $(cat {PID_FILE}))"; else echo "$(hostname): no trainer running";'
      f" {_last_exit()}; fi",
      f"tail -n 2 {LOG_FILE} 2>/dev/null || true",
  ])
  return [["gcloud", "compute", "tpus", kind, "describe", name, *_where(zone, project)],
          ssh_command(name, zone, project, "all", remote)]


def logs_commands(name: str, zone: str, project: str, worker: int = 0, lines: int = 100,
                  follow: bool = False) -> list[list[str]]:
  tail = ["tail", "-n", str(lines)] + (["-F"] if follow else []) + [LOG_FILE]
  return [ssh_command(name, zone, project, str(worker), 'cd "$HOME"; ' + shlex.join(tail))]


def stop_commands(name: str, zone: str, project: str, grace_seconds: int = 120
                  ) -> list[list[str]]:
  """SIGTERM, which the trainer answers by saving its last finished step and exiting 143; SIGKILL
  if it is still running after ``grace_seconds`` (then the last periodic checkpoint remains)."""
  pid = PID_FILE
  remote = "; ".join([
      'cd "$HOME"',
      f'if [ -f {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then P="$(cat {pid})"; kill "$P"; '
      f'for i in $(seq {grace_seconds}); do kill -0 "$P" 2>/dev/null || break; sleep 1; done; '
      'if kill -9 "$P" 2>/dev/null; then echo "$(hostname): killed pid $P after '
      f'{grace_seconds} s without a final save; run again resumes from its last checkpoint"; '
      'else echo "$(hostname): stopped pid $P"; '
      f'for i in $(seq 50); do [ -f {EXIT_FILE} ] && break; sleep 0.1; done; {_last_exit()}; fi; '
      'else echo "$(hostname): no trainer running"; fi',
      f"rm -f {pid}",
  ])
  return [ssh_command(name, zone, project, "all", remote)]


def delete_commands(name: str, zone: str, project: str, queued: bool = False) -> list[list[str]]:
  if queued:  # --force also deletes the TPU VM the queued resource made.
    return [["gcloud", "compute", "tpus", "queued-resources", "delete", name,
             *_where(zone, project), "--force", "--quiet"]]
  return [["gcloud", "compute", "tpus", "tpu-vm", "delete", name, *_where(zone, project),
           "--quiet"]]


# --------------------------------------------------------------------------------------------
# The CLI.
# --------------------------------------------------------------------------------------------
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


def _add_compile_flag(p: argparse.ArgumentParser) -> None:
  p.add_argument("--skip-compile-check", action="store_true",
                 help="do not compile the train step for the slice before spending money "
                 "(the check needs libtpu: pip install 'lamb_optax[tpu]')")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="tpu_pod.py", description=__doc__.split("\n\n")[0], allow_abbrev=False,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)

  def add(name, help_):
    p = sub.add_parser(name, help=help_, allow_abbrev=False)
    p.add_argument("name", help="TPU VM (and queued resource) name")
    p.add_argument("--zone", default=None, help="e.g. us-central2-b")
    p.add_argument("--project", default=None, help="GCP project id")
    p.add_argument("--dry-run", action="store_true", help="print the gcloud commands, run nothing")
    return p

  p = add("create", "create the slice (tpu-vm create, or a queued resource with --queued)")
  p.add_argument("--accelerator-type", required=True, help="v4-128, v5p-128, v5litepod-256, ...")
  p.add_argument("--version", "--runtime-version", dest="runtime", default=None,
                 help="TPU VM software version (default by generation: "
                 + ", ".join(f"{k}: {v}" for k, v in DEFAULT_RUNTIME.items()) + ")")
  p.add_argument("--queued", action="store_true", help="gcloud compute tpus queued-resources")
  p.add_argument("--spot", action="store_true", help="Spot capacity (can be preempted)")
  p.add_argument("--preemptible", action="store_true", help="legacy preemptible (tpu-vm only)")
  p.add_argument("--reserved", action="store_true", help="use a reservation")
  p.add_argument("--config", default=None,
                 help="optional: refuse to create a slice the trainer would refuse this config on "
                 "(its checks, then its step compiled for the slice: it must fit HBM)")
  _add_compile_flag(p)

  p = add("setup", "clone the repository and pip install -e '.[tpu]' on every worker")
  p.add_argument("--repo", default=DEFAULT_REPO_URL)
  p.add_argument("--ref", default="main", help="branch, tag or commit to check out")
  p.add_argument("--extras", default="tpu", help="pip extras to install")

  p = add("run", "start the trainer on every worker (nohup, log per worker)")
  p.add_argument("--accelerator-type", required=True,
                 help="the slice's type, for the batch and host checks")
  p.add_argument("--config", required=True, help="config file (relative to the repo root)")
  p.add_argument("--workdir", required=True, help="gs://BUCKET/RUN (shared by all workers)")
  p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                 help="environment variable for the trainer (repeatable)")
  p.add_argument("--allow-local-paths", action="store_true",
                 help="skip the gs:// checks on multi-host slices")
  _add_compile_flag(p)

  p = add("status", "describe the slice and say whether each worker's trainer runs")
  p.add_argument("--queued", action="store_true", help="describe the queued resource")

  p = add("logs", "tail one worker's trainer log")
  p.add_argument("--worker", type=int, default=0)
  p.add_argument("--lines", type=int, default=100)
  p.add_argument("--follow", action="store_true")

  p = add("stop", "stop the trainer on every worker (SIGTERM: it saves its last step and exits "
          "143; SIGKILL after --grace-seconds)")
  p.add_argument("--grace-seconds", type=int, default=120,
                 help="how long the trainer may take to save before SIGKILL (default 120)")

  p = add("delete", "delete the slice")
  p.add_argument("--queued", action="store_true", help="delete the queued resource (and its VM)")
  return parser


def plan(argv: Sequence[str]) -> tuple[argparse.Namespace, list[list[str]]]:
  """Parses ``argv``, runs every check, and returns the gcloud commands to run."""
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  # gcloud would read a name such as '--zone=x' or '-h' as an option.
  if not _NAME.fullmatch(args.name):
    raise UsageError(f"TPU name {args.name!r}: names are 1-63 lowercase letters, digits and '-', "
                     "starting with a letter and not ending with '-' (e.g. bert-base).")
  overrides = list(extra)
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
  project, zone = resolve_where(args)
  name, c = args.name, args.command
  if c == "create":
    cmds = create_commands(name, slice_, zone, project, runtime=args.runtime, queued=args.queued,
                           spot=args.spot, preemptible=args.preemptible, reserved=args.reserved)
  elif c == "setup":
    cmds = setup_commands(name, zone, project, repo=args.repo, ref=args.ref, extras=args.extras)
  elif c == "run":
    cmds = run_commands(name, zone, project, remote_config_arg(args.config), args.workdir,
                        overrides, args.env)
  elif c == "status":
    cmds = status_commands(name, zone, project, queued=args.queued)
  elif c == "logs":
    cmds = logs_commands(name, zone, project, args.worker, args.lines, args.follow)
  elif c == "stop":
    cmds = stop_commands(name, zone, project, args.grace_seconds)
  else:
    cmds = delete_commands(name, zone, project, queued=args.queued)
  return args, cmds


def main(argv: Sequence[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    args, cmds = plan(argv)
  except (UsageError, AcceleratorError) as e:
    print(f"tpu_pod.py: error: {e}", file=sys.stderr)
    return 2
  if args.dry_run:
    for cmd in cmds:
      print(shlex.join(cmd))
    return 0
  status = 0
  for cmd in cmds:
    print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    rc = subprocess.run(cmd, check=False).returncode
    if rc:
      print(f"tpu_pod.py: command failed with exit status {rc}", file=sys.stderr)
      status = status or rc
      if args.command != "status":  # status shows what it can, e.g. a queued slice not yet up
        return rc
  return status


if __name__ == "__main__":
  sys.exit(main())
