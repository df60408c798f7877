r"""BERT-Large, LAMB, phase 1 of the paper's 76-minute run: batch 65,536 at sequence length 128.

Hardware (published): 1,024 TPUv3 chips (a TPUv3 pod); on Cloud TPU today a v4-1024 or v5p-1024
slice is the nearest (docs/tpu.md).
Published result: 76.19 minutes for both phases, SQuAD v1.1 dev F1 90.584, 8,599 steps in all
(You et al. 2020, Table 1). The per-phase split (7,038 + 1,561 steps) is NVIDIA's
re-implementation of this recipe; the learning rate and warmup follow the paper's square-root
rule (schedules.paper_learning_rate/paper_warmup_ratio), recalled rather than re-read from the
paper: check them against arXiv:1904.00962 before claiming a reproduction.
Data: Wikipedia + BooksCorpus as a TFDS dataset made by scripts/create_pretraining_data.py
(--max_seq_length=128 --max_predictions_per_seq=20).

Run (then configs/bert_large_phase2.py):
  python -m lamb_optax.train --config=configs/bert_large_phase1.py \
      --config.data.source=gs://BUCKET/bert_data_128 --config.data.vocab_file=gs://BUCKET/vocab.txt \
      --workdir=gs://BUCKET/bert_large_phase1
"""

from lamb_optax import schedules
from lamb_optax.train.config import default_config

GLOBAL_BATCH, STEPS, SEQ, PREDICTIONS = 65536, 7038, 128, 20


def get_config():
  config = default_config()
  config.model.preset = "large"
  config.model.dtype = "bfloat16"
  config.optimizer.name = "lamb"
  config.optimizer.kwargs.weight_decay = 0.01
  config.optimizer.kwargs.eps = 1e-6
  config.global_batch_size = GLOBAL_BATCH
  config.micro_batch_size = 32  # per chip: 65,536 = 512 chips (v4-1024) x 32 x 4 micro-batches
  config.num_train_steps = STEPS
  config.learning_rate = schedules.paper_learning_rate(GLOBAL_BATCH)
  config.warmup_steps = round(schedules.paper_warmup_ratio(GLOBAL_BATCH) * STEPS)
  config.data.seq_length = SEQ
  config.data.max_predictions = PREDICTIONS
  config.log_every_steps = 50
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 500
  return config
