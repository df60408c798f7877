r"""The AdamW baseline for BERT-Large (Devlin et al. 2019's setup at the LAMB paper's batch 512).

Hardware (published): 16 TPUv3 chips, about 81 hours (LAMB paper's account of the baseline).
Published result: SQuAD v1.1 dev F1 90.395 (LAMB paper, batch 512). A tuned AdamW reaches
F1 91.58 at batch 32k (Nado et al. 2021) — tune before comparing.
Optimizer: Adam with decoupled weight decay 0.01 (not on bias/LayerNorm), β = (0.9, 0.999),
ε 1e-6, peak lr 1e-4, 10,000 warmup steps, linear decay (Devlin et al.); 1,000k steps at
batch 512 as in the LAMB paper's Table 1 (Devlin et al. ran 1M steps at batch 256).
Only the optimizer line differs from configs/lamb_paper.py:512.

Run:
  python -m lamb_optax.train --config=configs/adamw_baseline.py --workdir=/tmp/adamw_512
"""

from lamb_optax.train.config import default_config


def get_config():
  config = default_config()
  config.model.preset = "large"
  config.optimizer.name = "adamw"
  config.optimizer.kwargs.weight_decay = 0.01
  config.optimizer.kwargs.eps = 1e-6
  config.global_batch_size = 512
  config.micro_batch_size = 32
  config.num_train_steps = 1_000_000
  config.learning_rate = 1e-4
  config.warmup_steps = 10_000
  config.decay_power = 1.0
  config.data.max_seq_length = 128
  config.data.max_predictions_per_seq = 20
  return config
