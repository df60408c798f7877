r"""BERT-Base, LAMB, phase 2 at batch 32,768: sequence length 512, the last 10% of the steps.

Hardware: as configs/bert_base_phase1.py (a v4-128 / v5p-128 slice).
Published result: see phase 1 (Devlin et al.'s BERT-Base: SQuAD v1.1 dev F1 88.5).
Starts from phase 1's final params (``init_from``) with a fresh optimizer state and a re-warmed
schedule (1,562 steps: the paper's 32k run spends 10% of its 15,625 steps at seq 512).

Run (after phase 1):
  python -m lamb_optax.train --config=configs/bert_base_phase2.py \
      --config.init_from=gs://BUCKET/bert_base_phase1 \
      --config.data.source=gs://BUCKET/bert_data_512 --config.data.vocab_file=gs://BUCKET/vocab.txt \
      --workdir=gs://BUCKET/bert_base_phase2
"""

from lamb_optax import schedules
from lamb_optax.train.config import default_config

GLOBAL_BATCH, STEPS, SEQ, PREDICTIONS = 32768, 1562, 512, 80


def get_config():
  config = default_config()
  config.model.preset = "base"
  config.model.dtype = "bfloat16"
  config.optimizer.name = "lamb"
  config.optimizer.kwargs.weight_decay = 0.01
  config.optimizer.kwargs.eps = 1e-6
  config.global_batch_size = GLOBAL_BATCH
  config.micro_batch_size = 32  # per chip: 32,768 = 64 chips (v4-128) x 32 x 16 micro-batches
  config.num_train_steps = STEPS
  config.learning_rate = schedules.paper_learning_rate(GLOBAL_BATCH)
  config.warmup_steps = round(schedules.paper_warmup_ratio(GLOBAL_BATCH) * STEPS)
  config.data.seq_length = SEQ
  config.data.max_predictions = PREDICTIONS
  config.init_from = "/tmp/bert_base_phase1"  # override with --config.init_from
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 250
  return config
