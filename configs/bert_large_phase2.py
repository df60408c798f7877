r"""BERT-Large, LAMB, phase 2 of the paper's 76-minute run: batch 32,768 at sequence length 512.

Hardware (published): 1,024 TPUv3 chips; see configs/bert_large_phase1.py and docs/tpu.md.
Published result: with phase 1, 76.19 minutes and SQuAD v1.1 dev F1 90.584 (You et al. 2020).
Starts from phase 1's final params (``init_from``) with a fresh optimizer state and its own
re-warmed schedule, as in the paper and NVIDIA's recipe; 1,561 steps (NVIDIA's split).
Data: scripts/create_pretraining_data.py --max_seq_length=512 --max_predictions_per_seq=80.

Run (after phase 1):
  python -m lamb_optax.train --config=configs/bert_large_phase2.py \
      --config.init_from=gs://BUCKET/bert_large_phase1 \
      --config.data.source=gs://BUCKET/bert_data_512 --config.data.vocab_file=gs://BUCKET/vocab.txt \
      --workdir=gs://BUCKET/bert_large_phase2
"""

from lamb_optax import schedules
from lamb_optax.train.config import default_config

GLOBAL_BATCH, STEPS, SEQ, PREDICTIONS = 32768, 1561, 512, 80


def get_config():
  config = default_config()
  config.model.preset = "large"
  config.model.dtype = "bfloat16"
  config.model.remat = "dots"  # seq 512 activations; trades ~20% compute for memory
  config.optimizer.name = "lamb"
  config.optimizer.kwargs.weight_decay = 0.01
  config.optimizer.kwargs.eps = 1e-6
  config.global_batch_size = GLOBAL_BATCH
  config.micro_batch_size = 8  # per chip: 32,768 = 512 chips (v4-1024) x 8 x 8 micro-batches
  config.num_train_steps = STEPS
  config.learning_rate = schedules.paper_learning_rate(GLOBAL_BATCH)
  config.warmup_steps = round(schedules.paper_warmup_ratio(GLOBAL_BATCH) * STEPS)
  config.data.seq_length = SEQ
  config.data.max_predictions = PREDICTIONS
  config.init_from = "/tmp/bert_large_phase1"  # override with --config.init_from
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 250
  return config
