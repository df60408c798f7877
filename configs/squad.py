r"""SQuAD v1.1 fine-tuning from a pretrained BERT (Devlin et al.; Google's run_squad.py).

Hardware: one GPU/TPU for BERT-Base/Large (a CPU for BERT-Tiny); the data is the user's
(SQuAD is not downloaded by this package).
Published result: Devlin et al. (2019) Table 2 and You et al. (2020) Table 1 (below).

Run:
  python -m lamb_optax.train --config=configs/squad.py --workdir=/tmp/squad \
      --config.init_from=PRETRAINED --config.finetune.data_dir=SQUAD_DIR
  python -m lamb_optax.train.predict --workdir=/tmp/squad     # writes /tmp/squad/predictions.json
  python scripts/squad_eval.py SQUAD_DIR/dev-v1.1.json /tmp/squad/predictions.json
SQUAD_DIR holds train-v1.1.json and dev-v1.1.json; without finetune.data_dir the data is TFDS
squad/v1.1 prepared in finetune.tfds_data_dir.

Settings and their sources:
* max_seq_length 384, doc_stride 128, max_query_length 64, n-best 20, max answer length 30:
  google-research/bert run_squad.py flags and README ("SQuAD 1.1" section).
* lr 3e-5, 2 epochs, warmup 10%: the README's run_squad.py command (its batch is 12 for
  BERT-Base on one GPU, 24 for Large on a TPU); batch 32 as Devlin et al. Sec. 4.2 (who
  fine-tune 3 epochs at lr 5e-5, batch 32). Appendix A.3's grid: lr {5e-5, 3e-5, 2e-5}.
* Adam with weight decay 0.01, eps 1e-6, no bias correction, clipping at 1.0:
  google-research/bert optimization.py. LAMB instead: --config.optimizer.name=lamb.
* NVIDIA's recipe, as of today (NVIDIA/DeepLearningExamples, read at snapshot commit
  729963dd47e7, 2024-04-04; PyTorch/LanguageModeling/BERT/scripts/run_squad.sh last changed in
  a9e2c1d5fbf3, 2022-03-02, scripts/configs/squad_config.sh in 690233ca8eaf, 2022-03-03): the
  README's DGX A100 preset `dgxa100-80g_8gpu_fp16` is BERT-Large uncased, 2 epochs, batch 32 per
  GPU on 8 GPUs (256), lr 4.6e-5, warmup 0.2, fp16, seed 1; run_squad.sh fixes max_seq_length
  384 and doc_stride 128 (its own defaults: batch 4 per GPU, lr 3e-5, warmup 0.1, seed 1).
  Here: --config.global_batch_size=256 --config.learning_rate=4.6e-5, with num_train_steps for
  2 epochs at that batch and warmup_steps a fifth of them. These values are today's; the ones
  this docstring quoted before (batch 24 per GPU = 192, lr 3e-5, fp16, seed 42) are
  run_squad.sh's defaults at 0663b67c1afe (2019-07-08), not today's.
Steps: 2 epochs of ~88.6k training windows (train-v1.1.json at 384/128, uncased BERT
vocabulary; the exact count is printed at the start of the run) / 32.
Expected (Devlin et al. Table 2, dev): BERT-Base EM 80.8 / F1 88.5; BERT-Large 84.1 / 90.9.
The LAMB paper (You et al. 2020, Table 1; as transcribed in configs/lamb_paper.py) reports
BERT-Large SQuAD v1.1 dev F1 from 90.377 to 91.460 for LAMB pretraining at batch 512 to 32k,
and 90.584 for the 76-minute run (configs/bert_large_phase1.py / phase2.py).
"""

import math

from lamb_optax.train import presets
from lamb_optax.train.config import default_config

TRAIN_WINDOWS = 88_600  # approximate; see the docstring
EPOCHS, BATCH, WARMUP = 2, 32, 0.1


def get_config():
  config = default_config()
  config.task = "squad"
  config.finetune.max_seq_length = 384
  config.finetune.doc_stride = 128
  config.finetune.max_query_length = 64
  config.finetune.n_best_size = 20
  config.finetune.max_answer_length = 30
  config.model.preset = "base"  # only without init_from; else the source's model
  presets.bert_finetuning_optimizer(config)
  config.learning_rate = 3e-5
  config.global_batch_size = BATCH
  config.micro_batch_size = 32
  config.num_train_steps = math.ceil(EPOCHS * TRAIN_WINDOWS / BATCH)
  config.warmup_steps = round(WARMUP * config.num_train_steps)
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.log_every_steps = 50
  config.eval_batch_size = 64
  config.eval_batches = 50  # windows' loss/span accuracy on 3,200 dev windows; EM/F1 at predict
  config.mesh.data = -1
  return config
