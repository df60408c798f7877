r"""The paper's 76-minute BERT-Large run: batch 64k at seq 128, then 32k at seq 512.

Hardware (published): 1,024 TPUv3 chips (a TPUv3 pod).
Published result: 76.19 minutes, SQuAD v1.1 dev F1 90.584, 8,599 steps in all (You et al.
2020, Table 1).
The per-stage split (7,038 + 1,561 steps) and the stage learning rates/warmups below are NOT
from the paper's text: the split matches NVIDIA's re-implementation of this recipe and the rates
follow the paper's square-root rule (schedules.paper_learning_rate/paper_warmup_ratio). Check
them against arXiv:1904.00962 before claiming a reproduction. Stage 2 re-warms from its own
warmup and starts from stage 1's final checkpoint.

Run:
  python -m lamb_optax.train --config=configs/lamb_76min.py:stage1 --workdir=/tmp/lamb_76min
  python -m lamb_optax.train --config=configs/lamb_76min.py:stage2 --workdir=/tmp/lamb_76min_2
"""

from lamb_optax import schedules
from lamb_optax.train.config import default_config

STAGES = {
    # stage: (global batch, steps, seq length, max predictions)
    "stage1": (65536, 7038, 128, 20),
    "stage2": (32768, 1561, 512, 80),
}


def get_config(stage: str = "stage1"):
  if stage not in STAGES:
    raise ValueError(f"lamb_76min.py:{stage}: choose one of {sorted(STAGES)}.")
  batch, steps, seq, predictions = STAGES[stage]
  config = default_config()
  config.model.preset = "large"
  config.optimizer.name = "lamb"
  config.optimizer.kwargs.weight_decay = 0.01
  config.optimizer.kwargs.eps = 1e-6
  config.global_batch_size = batch
  config.micro_batch_size = 32
  config.num_train_steps = steps
  config.learning_rate = schedules.paper_learning_rate(batch)
  config.warmup_steps = round(schedules.paper_warmup_ratio(batch) * steps)
  config.decay_power = 1.0
  config.data.seq_length = seq
  config.data.max_predictions = predictions
  return config
