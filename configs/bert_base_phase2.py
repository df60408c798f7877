r"""BERT-Base, LAMB, phase 2 at batch 32,768: sequence length 512, the last 10% of the steps.

Hardware: as configs/bert_base_phase1.py (a v4-128 / v5p-128 slice).
Published result: see phase 1 (Devlin et al.'s BERT-Base: SQuAD v1.1 dev F1 88.5).
Starts from phase 1's final params (``init_from``) with a fresh optimizer state and a re-warmed
schedule (1,562 steps: the paper's 32k run spends 10% of its 15,625 steps at seq 512).

Run (after phase 1):
  python -m lamb_optax.train --config=configs/bert_base_phase2.py \
      --config.init_from=gs://BUCKET/bert_base_phase1 \
      --config.data.source=gs://BUCKET/bert_data_512 \
      --config.data.vocab_file=gs://BUCKET/vocab.txt \
      --workdir=gs://BUCKET/bert_base_phase2
"""

from lamb_optax.train.presets import paper_lamb_phase

GLOBAL_BATCH, STEPS, SEQ, PREDICTIONS = 32768, 1562, 512, 80


def get_config():
  # Per chip: 32,768 = 64 chips (v4-128) x 32 x 16 micro-batches.
  config = paper_lamb_phase("base", global_batch_size=GLOBAL_BATCH, num_train_steps=STEPS,
                            max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS,
                            micro_batch_size=32, init_from="/tmp/bert_base_phase1")
  return config
