r"""BERT-Large, LAMB, phase 2 of the paper's 76-minute run: batch 32,768 at sequence length 512.

Hardware (published): 1,024 TPUv3 chips; see configs/bert_large_phase1.py and docs/tpu.md.
Published result: with phase 1, 76.19 minutes and SQuAD v1.1 dev F1 90.584 (You et al. 2020).
Starts from phase 1's final params (``init_from``) with a fresh optimizer state and its own
re-warmed schedule (the paper re-warms at the start of stage 2; NVIDIA's run_pretraining.py
reloads phase 1's optimizer state instead, resetting step, lr and warmup).
Where each number comes from (see configs/bert_large_phase1.py for the sources):
  * the paper's: batch 32,768 at seq 512 for the second stage, 8,599 steps in total.
  * NVIDIA's: phase 2 is 32,768 x 1,563 steps at lr 4e-3, warmup 12.8% (configs/nvlamb.py).
  * ours: 1,561 steps, so that with phase 1's 7,038 the total is the paper's 8,599 (NVIDIA's
    phases add up to 8,601); lr and warmup from our square-root-rule extrapolation
    (schedules.paper_learning_rate/paper_warmup_ratio at 32,768: 5e-3, 1/5 of the steps), not
    NVIDIA's 4e-3 / 12.8%.
Data: scripts/create_pretraining_data.py --max_seq_length=512 --max_predictions_per_seq=80.

Run (after phase 1):
  python -m lamb_optax.train --config=configs/bert_large_phase2.py \
      --config.init_from=gs://BUCKET/bert_large_phase1 \
      --config.data.source=gs://BUCKET/bert_data_512 \
      --config.data.vocab_file=gs://BUCKET/vocab.txt \
      --workdir=gs://BUCKET/bert_large_phase2
"""

from lamb_optax.train.presets import paper_lamb_phase

GLOBAL_BATCH, STEPS, SEQ, PREDICTIONS = 32768, 1561, 512, 80


def get_config():
  # Per chip: 32,768 = 512 chips (v4-1024) x 8 x 8 micro-batches.
  config = paper_lamb_phase("large", global_batch_size=GLOBAL_BATCH, num_train_steps=STEPS,
                            max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS,
                            micro_batch_size=8, init_from="/tmp/bert_large_phase1")
  config.model.remat = "dots"  # seq 512 activations; trades ~20% compute for memory
  return config
