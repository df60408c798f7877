r"""The embedded default: tiny BERT pretrained with LAMB on the Python-docs corpus, on a CPU.

Hardware: any machine, no accelerator, no downloads (the corpus is built from text that ships
with Python).
Published result: none (our own CPU-scale default, not a paper setting).
Expected: on an idle 2-core CPU it finishes in about 5 minutes (600 steps of 64 sequences); the
eval MLM loss falls from 9.0 (ln of the vocabulary) to about 6 and the eval MLM accuracy rises
from 0 to over 10%.

Run:
  python -m lamb_optax.train --config=configs/tiny.py --workdir=/tmp/lamb_tiny
"""

from lamb_optax.train.config import default_config


def get_config():
  config = default_config()
  config.model.preset = "tiny"
  config.optimizer.name = "lamb"
  config.optimizer.kwargs.weight_decay = 0.01
  config.learning_rate = 1e-2
  config.warmup_steps = 60
  config.num_train_steps = 600
  config.global_batch_size = 64
  config.micro_batch_size = 32
  config.data.max_seq_length = 128
  config.data.max_predictions_per_seq = 20
  config.log_every_steps = 10
  config.eval_every_steps = 200
  config.eval_batches = 2
  config.eval_batch_size = 64  # 2 x 64 held-out sequences, the eval set of the README's figures
  config.checkpoint_every_steps = 200
  config.mesh.data = -1
  return config
