r"""BERT-Large, LAMB, phase 1 of the paper's 76-minute run: batch 65,536 at sequence length 128.

Hardware (published): 1,024 TPUv3 chips (a TPUv3 pod); on Cloud TPU today a v4-1024 or v5p-1024
slice is the nearest (docs/tpu.md).
Published result: 76.19 minutes for both phases, SQuAD v1.1 dev F1 90.584, 8,599 steps in all
(You et al. 2020, Table 1, arXiv v1). Where each number comes from:
  * the paper's: batch 65,536 then 32,768 ("64k/32k"), 8,599 steps in total, LAMB, seq 128 then
    512. The paper gives no per-phase split that we found.
  * NVIDIA's (DeepLearningExamples PyTorch/LanguageModeling/BERT scripts/configs/
    pretrain_config.sh, read with the search tools): phase 1 65,536 x 7,038 steps at lr 6e-3
    with warmup 28.43%, phase 2 32,768 x 1,563 steps at lr 4e-3 with warmup 12.8%, polynomial
    decay power 0.5 (7,038 + 1,563 = 8,601). configs/nvlamb.py is that recipe.
  * ours: 7,038 steps here (NVIDIA's phase 1) and 1,561 in phase 2, chosen so the two add up
    to the paper's 8,599 (NVIDIA's phase 2 is 1,563); the learning rate and warmup extrapolate
    the square-root rule (schedules.paper_learning_rate/paper_warmup_ratio, 5e-3 at 32k) to
    65,536. The paper does not state a 64k rate by that rule; this is our extrapolation, and
    the lr/warmup values of the rule itself are not verified against the paper (docs/lamb.md).
Data: Wikipedia + BooksCorpus as a TFDS dataset made by scripts/create_pretraining_data.py
(--max_seq_length=128 --max_predictions_per_seq=20).

Run (then configs/bert_large_phase2.py):
  python -m lamb_optax.train --config=configs/bert_large_phase1.py \
      --config.data.source=gs://BUCKET/bert_data_128 \
      --config.data.vocab_file=gs://BUCKET/vocab.txt \
      --workdir=gs://BUCKET/bert_large_phase1
"""

from lamb_optax.train.presets import paper_lamb_phase

GLOBAL_BATCH, STEPS, SEQ, PREDICTIONS = 65536, 7038, 128, 20


def get_config():
  # Per chip: 65,536 = 512 chips (v4-1024) x 32 x 4 micro-batches.
  config = paper_lamb_phase("large", global_batch_size=GLOBAL_BATCH, num_train_steps=STEPS,
                            max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS,
                            micro_batch_size=32)
  return config
