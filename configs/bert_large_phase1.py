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

from lamb_optax.train.config import paper_lamb_phase

GLOBAL_BATCH, STEPS, SEQ, PREDICTIONS = 65536, 7038, 128, 20


def get_config():
  # Per chip: 65,536 = 512 chips (v4-1024) x 32 x 4 micro-batches.
  config = paper_lamb_phase("large", global_batch_size=GLOBAL_BATCH, num_train_steps=STEPS,
                            max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS,
                            micro_batch_size=32)
  return config
