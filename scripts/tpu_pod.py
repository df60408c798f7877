r"""Create, set up, run, watch and delete a Cloud TPU VM slice (v2/v3/v4/v5e/v5p/v6e) for
pretraining.

A thin, checkable wrapper around ``gcloud compute tpus``: every subcommand builds its gcloud
command lines with a pure function (lists of argv lists, ``lamb_optax.tpu.pod``) and runs them,
or with ``--dry-run`` prints them, one per line, shell-quoted. Input that cannot work (no
project/zone, a batch the slice cannot divide, a local workdir on a multi-host slice, ...) is
refused with a message that names the fix *before* any gcloud call
(``lamb_optax.tpu.pod_checks``). The config is loaded and checked by the trainer's own
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
import shlex
import subprocess
import sys
from collections.abc import Sequence

from lamb_optax.accelerators import DEFAULT_RUNTIME
from lamb_optax.accelerators import AcceleratorError
from lamb_optax.tpu import pod
from lamb_optax.tpu import pod_checks
from lamb_optax.tpu.pod import UsageError


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
  p.add_argument("--repo", default=pod.DEFAULT_REPO_URL)
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
  overrides = list(extra)
  slice_ = pod_checks.check_arguments(args, overrides)
  project, zone = pod_checks.resolve_where(args)
  name, c = args.name, args.command
  if c == "create":
    cmds = pod.create_commands(name, slice_, zone, project, runtime=args.runtime,
                               queued=args.queued, spot=args.spot, preemptible=args.preemptible,
                               reserved=args.reserved)
  elif c == "setup":
    cmds = pod.setup_commands(name, zone, project, repo=args.repo, ref=args.ref, extras=args.extras)
  elif c == "run":
    cmds = pod.run_commands(name, zone, project, pod_checks.remote_config_arg(args.config),
                            args.workdir, overrides, args.env)
  elif c == "status":
    cmds = pod.status_commands(name, zone, project, queued=args.queued)
  elif c == "logs":
    cmds = pod.logs_commands(name, zone, project, args.worker, args.lines, args.follow)
  elif c == "stop":
    cmds = pod.stop_commands(name, zone, project, args.grace_seconds)
  else:
    cmds = pod.delete_commands(name, zone, project, queued=args.queued)
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
