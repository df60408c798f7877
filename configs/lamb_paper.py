r"""LAMB BERT-Large pretraining at one of the paper's batch sizes (You et al. 2020, Table 1).

Hardware (published): TPUv3 — 1,024 chips for batch 32k (101 minutes); the Adam baseline at
batch 512 took ~81 hours on 16 chips.
Published result (SQuAD v1.1 dev F1, LAMB, fixed epochs), as in arXiv:1904.00962 **v1**,
Table 1: 512: 90.720, 1k: 90.377, 2k: 90.751, 4k: 90.548, 8k: 90.556, 16k: 90.679, 32k: 91.460.
These are arXiv v1's numbers; we could not find the final (ICLR 2020) version's Table 1 with the
search tools, so we do not know whether it lists the same values — check before quoting.
Schedule: lr = 5e-3·sqrt(B/32768), warmup B/32768/5 of the run, linear decay; steps
1,000k·512/B. These lr/warmup values are not verified against the paper (docs/lamb.md says
where they come from). This config is the sequence-length-128 phase only; the two-phase runs
(128, then 512) are configs/bert_large_phase{1,2}.py.

Run (the argument is the global batch size, one of 512 ... 32768):
  python -m lamb_optax.train --config=configs/lamb_paper.py:32768 --workdir=/tmp/lamb_32k
"""

from lamb_optax import schedules
from lamb_optax.train.config import default_config

# arXiv v1's Table 1: global batch -> published SQuAD F1 (the steps follow from fixed epochs).
PUBLISHED_F1 = {512: 90.720, 1024: 90.377, 2048: 90.751, 4096: 90.548, 8192: 90.556,
                16384: 90.679, 32768: 91.460}
STEPS_AT_512 = 1_000_000


def get_config(batch_size: str = "32768"):
  batch = int(batch_size)
  if batch not in PUBLISHED_F1:
    raise ValueError(f"lamb_paper.py:{batch_size}: the paper ran {sorted(PUBLISHED_F1)}; "
                     "pass one of those as the config argument.")
  config = default_config()
  config.model.preset = "large"
  # bfloat16 compute (float32 params, losses and softmax), as the bert_*_phase configs: without
  # it the step compiled for v4-1024 ran its matmuls and gradient all-reduces in float32.
  config.model.dtype = "bfloat16"
  config.optimizer.name = "lamb"
  config.optimizer.kwargs.weight_decay = 0.01
  config.optimizer.kwargs.eps = 1e-6
  config.global_batch_size = batch
  config.micro_batch_size = 32
  config.num_train_steps = STEPS_AT_512 * 512 // batch
  config.learning_rate = schedules.paper_learning_rate(batch)
  config.warmup_steps = round(schedules.paper_warmup_ratio(batch) * config.num_train_steps)
  config.decay_power = 1.0
  config.data.max_seq_length = 128
  config.data.max_predictions_per_seq = 20
  return config
