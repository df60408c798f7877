r"""The trainer's command line: ``python -m lamb_optax.train --config=CONFIG --workdir=DIR``.

It trains the task ``config.task`` names: BERT pretraining with LAMB in ``configs/tiny.py`` (the
README's main job), fine-tuning or image classification in other configs.

Config values can be overridden on the command line (``--config.global_batch_size=256``).
Running the same command again resumes from the last checkpoint in ``--workdir``.

``--compile_for=v4-1024 [--compile_report=R.json]`` compiles the train step for that Cloud TPU
slice on this machine (no TPU, no data, no ``--workdir``) and says whether it fits
(``lamb_optax/tpu/compile_for.py``); it exits 0 when it fits, 1 when not, 2 on bad input.
``--compile_sweep=8:none,16:dots,32:full`` with it compiles each (micro-batch per device, remat)
pair and prints the fastest that fits (``lamb_optax/tpu/compile_sweep.py``).

SIGTERM (preemption) and SIGINT (Ctrl-C) save the last finished step and exit with status 143
and 130 (lamb_optax/train/preemption.py); running the same command resumes.

Multi-host: on Cloud TPU, ``jax.distributed`` finds its peers by itself. Elsewhere pass
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` on every host.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lamb_optax.train import config as train_config
from lamb_optax.train import distributed
from lamb_optax.train import preemption
from lamb_optax.train import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.",
                                          **train_config.CONFIG_FLAG_OPTIONS)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, TensorBoard.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for multi-host runs outside Cloud TPU.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index in [0, num_processes).")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout_seconds", 300, "How long to wait for all processes to join.")
_COMPILE_FOR = flags.DEFINE_string(
    "compile_for", None, "Compile the train step for this Cloud TPU slice (e.g. v4-1024, "
    "v5litepod-256) on this machine instead of training, and report whether it fits.")
_COMPILE_REPORT = flags.DEFINE_string(
    "compile_report", None, "With --compile_for: write the report here as JSON.")
_COMPILE_SWEEP = flags.DEFINE_string(
    "compile_sweep", None, "With --compile_for: compile each MICRO:REMAT pair (e.g. "
    "8:none,16:dots,32:full; micro-batch per device, model.remat) and print the fastest that "
    "fits, by the roofline estimate.")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if _COMPILE_SWEEP.value and not _COMPILE_FOR.value:
    raise app.UsageError("--compile_sweep needs --compile_for=SLICE (e.g. --compile_for=v4-128).")
  if _COMPILE_FOR.value:
    from lamb_optax.tpu import compile_for  # pylint: disable=g-import-not-at-top
    from lamb_optax.tpu import compile_sweep  # pylint: disable=g-import-not-at-top
    if _COMPILE_SWEEP.value:
      sys.exit(compile_sweep.main(_CONFIG.value, _COMPILE_FOR.value, _COMPILE_SWEEP.value,
                                  _COMPILE_REPORT.value))
    sys.exit(compile_for.main(_CONFIG.value, _COMPILE_FOR.value, _COMPILE_REPORT.value))
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required (except with --compile_for).")
  try:
    with preemption.Guard():  # the loop installs its own: this one covers the start-up
      from lamb_optax.train import loop  # pylint: disable=g-import-not-at-top
      distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                             timeout_seconds=_INIT_TIMEOUT.value)
      loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except workdir_lib.DiskFullError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  except preemption.Interrupted as stopped:
    print(f"Stopped by {preemption.name(stopped.signum)} before the first step: nothing new to "
          f"save; run the same command to resume (exit status {stopped.code}).", flush=True)
    raise


if __name__ == "__main__":
  app.run(main)
