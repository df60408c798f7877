r"""BERT's Adam baseline (Devlin et al. 2019's optimizer) for BERT-Large at the LAMB paper's
batch 512.

Hardware (published): 16 TPUv3 chips, about 81 hours (LAMB paper's account of the baseline).
Published result: SQuAD v1.1 dev F1 90.395 (LAMB paper, batch 512). A tuned AdamW reaches
F1 91.58 at batch 32k (Nado et al. 2021) — tune before comparing.
Optimizer, as read in google-research/bert optimization.py (create_optimizer +
AdamWeightDecayOptimizer): gradients clipped to global norm 1.0 ("This is how the model was
pre-trained"), Adam steps next_m / (sqrt(next_v) + ε) from the raw moments (no bias
correction), decoupled weight decay 0.01 excluding "LayerNorm", "layer_norm", "bias", β = (0.9,
0.999), ε 1e-6, linear warmup then linear (power 1) decay to 0. Hence bias_correction=False and
max_grad_norm=1.0 below. Peak lr 1e-4 and 10,000 warmup steps are Devlin et al.'s pretraining
values (run_pretraining.py's --num_warmup_steps default is 10,000); 1,000k steps at batch 512
follow the LAMB paper's Table 1 (Devlin et al. ran 1M steps at batch 256), so this is Devlin's
optimizer at the LAMB paper's batch, not Devlin's exact run.
The optimizer and its schedule differ from configs/lamb_paper.py:512; the rest is the same.

Run:
  python -m lamb_optax.train --config=configs/adamw_baseline.py --workdir=/tmp/adamw_512
"""

from lamb_optax.train.config import default_config


def get_config():
  config = default_config()
  config.model.preset = "large"
  config.model.dtype = "bfloat16"  # as lamb_paper.py:512: only the optimizer differs
  config.optimizer.name = "adamw"
  config.optimizer.kwargs.weight_decay = 0.01
  config.optimizer.kwargs.eps = 1e-6
  config.optimizer.kwargs.bias_correction = False  # AdamWeightDecayOptimizer has none
  config.optimizer.kwargs.max_grad_norm = 1.0  # tf.clip_by_global_norm(grads, clip_norm=1.0)
  config.global_batch_size = 512
  config.micro_batch_size = 32
  config.num_train_steps = 1_000_000
  config.learning_rate = 1e-4
  config.warmup_steps = 10_000
  config.decay_power = 1.0
  config.data.max_seq_length = 128
  config.data.max_predictions_per_seq = 20
  return config
