r"""BERT-Base, LAMB, phase 1 at the paper's batch 32,768 (sequence length 128, 90% of the steps).

Hardware: a Cloud TPU v4-128 / v5p-128 slice (or v5e-256) runs this comfortably; BERT-Base is ~3x
cheaper per token than Large (docs/tpu.md has step-time and cost estimates).
Published result: the LAMB paper reports BERT-Large only (32k: 15,625 steps, SQuAD v1.1 dev F1
91.460, 101 minutes on 1,024 TPUv3). For BERT-Base the reference is Devlin et al.'s Adam run
(batch 256, 1M steps): SQuAD v1.1 dev F1 88.5; expect about that.
Schedule: the paper's 32k row — lr 5e-3 (square-root rule), warmup 1/5 of the steps, linear
decay — over 14,063 steps at seq 128 (90% of 15,625, the paper's split); phase 2 does the rest.

Run (then configs/bert_base_phase2.py):
  python -m lamb_optax.train --config=configs/bert_base_phase1.py \
      --config.data.source=gs://BUCKET/bert_data_128 \
      --config.data.vocab_file=gs://BUCKET/vocab.txt \
      --workdir=gs://BUCKET/bert_base_phase1
"""

from lamb_optax.train.presets import paper_lamb_phase

GLOBAL_BATCH, STEPS, SEQ, PREDICTIONS = 32768, 14063, 128, 20


def get_config():
  # Per chip: 32,768 = 64 chips (v4-128) x 128 x 4 micro-batches.
  config = paper_lamb_phase("base", global_batch_size=GLOBAL_BATCH, num_train_steps=STEPS,
                            max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS,
                            micro_batch_size=128)
  return config
