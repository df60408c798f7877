r"""Pretrain BERT with LAMB: ``python -m lamb_optax.train --config=configs/tiny.py --workdir=DIR``.

Config values can be overridden on the command line (``--config.global_batch_size=256``).
Running the same command again resumes from the last checkpoint in ``--workdir``.

Multi-host: on Cloud TPU, ``jax.distributed`` finds its peers by itself. Elsewhere pass
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` on every host.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lamb_optax.train import distributed
from lamb_optax.train import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, TensorBoard.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for multi-host runs outside Cloud TPU.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout_seconds", 300, "How long to wait for all processes to join.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         timeout_seconds=_INIT_TIMEOUT.value)
  loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
