"""The gcloud command lines and worker shell scripts of ``scripts/tpu_pod.py``.

Every subcommand's commands come from a pure function returning a list of argv lists, so the
launcher can print them (``--dry-run``) and the tests can run the remote shell snippets in a fake
``$HOME``. The snippets start the trainer under ``nohup`` on every worker, record its pid and exit
status, and read them back (``status``, ``stop``): an exit by SIGTERM or SIGINT is "preempted,
resumable" (:mod:`lamb_optax.train.preemption`).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from lamb_optax.accelerators import DEFAULT_RUNTIME
from lamb_optax.accelerators import Slice

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


class UsageError(Exception):
  """Bad input; the message says what to change. Raised before any gcloud call."""


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
