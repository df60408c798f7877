r"""The tiny BERT at global batch 32,768 by gradient accumulation: the paper's batch on a CPU.

Hardware: any machine; memory is set by the micro-batch (256 examples per device), not by the
32,768-example global batch (the step accumulates 128 micro-batches in float32 inside one jit).
Published result: none (a CPU-scale demonstration of the paper's batch). Expected: each step
takes about 4-5 minutes on a 2-core CPU (4.2M tokens); the compile log line reports the step's
device memory (arguments + temporaries, tens of MiB) and the run ends with the peak host memory.
LAMB's learning rate for 32k is the paper's 5e-3 with warmup 1/5 of the steps.

Run:
  python -m lamb_optax.train --config=configs/tiny_32k.py --workdir=/tmp/lamb_tiny_32k
"""

from lamb_optax import schedules
from lamb_optax.train.config import default_config

GLOBAL_BATCH = 32768


def get_config():
  config = default_config()
  config.model.preset = "tiny"
  config.optimizer.name = "lamb"
  config.optimizer.kwargs.weight_decay = 0.01
  config.global_batch_size = GLOBAL_BATCH
  config.micro_batch_size = 256
  config.num_train_steps = 2
  config.learning_rate = schedules.paper_learning_rate(GLOBAL_BATCH)
  config.warmup_steps = 1
  config.data.max_seq_length = 128
  config.data.max_predictions_per_seq = 20
  # 11 copies of the corpus with different pairs and masks (~36k examples): one global batch
  # holds 32,768 distinct examples.
  config.data.embedded_dupe_factor = 11
  config.log_every_steps = 1
  config.eval_every_steps = 2
  # Eval batches are one micro-step's batch (eval_batch_size = 0): 4 x 256 held-out sequences.
  config.eval_batches = 4
  config.checkpoint_every_steps = 2
  return config
