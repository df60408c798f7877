r"""GLUE fine-tuning from a pretrained BERT: Devlin et al.'s recipe, one config per task.

Hardware: one GPU/TPU for BERT-Base/Large (a CPU for BERT-Tiny); the data is the user's
(GLUE is not downloaded by this package).
Published result: Devlin et al. (2019) Table 1 (below).

Run (TASK one of cola, sst2, mrpc, stsb, qnli, rte, mnli_matched, mnli_mismatched):
  python -m lamb_optax.train --config=configs/glue.py:mrpc --workdir=/tmp/glue_mrpc \
      --config.init_from=PRETRAINED --config.finetune.data_dir=GLUE_DIR/MRPC
  python -m lamb_optax.train.predict --workdir=/tmp/glue_mrpc   # every metric, Spearman included
PRETRAINED: a lamb_optax pretraining workdir or a Hugging Face BERT directory. Without
finetune.data_dir the data is TFDS glue/<task> prepared in finetune.tfds_data_dir.

Settings and their sources:
* batch 32, 3 epochs, lr chosen among {5e-5, 4e-5, 3e-5, 2e-5} on dev: Devlin et al. (2019),
  Sec. 4.1 (GLUE); Appendix A.3 gives the grid batch {16, 32}, lr {5e-5, 3e-5, 2e-5}, epochs
  {2, 3, 4}. Default here 2e-5; sweep with --config.learning_rate.
* warmup 10% then linear decay, Adam with weight decay 0.01, eps 1e-6, no bias correction,
  gradient clipping at norm 1.0: google-research/bert optimization.py (AdamWeightDecayOptimizer)
  and run_classifier.py (warmup_proportion 0.1, max_seq_length 128).
* NVIDIA's recipe, as of today (NVIDIA/DeepLearningExamples, read at snapshot commit
  729963dd47e7, 2024-04-04; PyTorch/LanguageModeling/BERT/scripts/run_glue.sh last changed in
  a9e2c1d5fbf3, 2022-03-02, scripts/configs/glue_config.sh in 690233ca8eaf, 2022-03-03): the
  README's DGX A100 presets are BERT-Large uncased, max_seq_length 128, fp16, 3 epochs; MRPC
  (`mrpc_dgxa100-80g_8gpu_fp16`): global batch 128 (16 per GPU on 8 GPUs), lr 1.8e-5, warmup
  0.3; SST-2: global batch 1,024, lr 1e-5, warmup 0.1; seed 2 (run_glue.sh's default, which the
  presets do not set). Here, MRPC: --config.global_batch_size=128 --config.learning_rate=1.8e-5
  with warmup_steps 30% of num_train_steps. These values are today's; the ones this docstring
  quoted before (MRPC only: 2 epochs, lr 5e-6, batch 12 per GPU = 96, fp32) are run_glue.sh's
  defaults at 0663b67c1afe (2019-07-08), not today's.
* LAMB instead: --config.optimizer.name=lamb (max_grad_norm then clips before LAMB, with a
  printed note; its learning rate needs its own sweep, docs/finetuning.md has a small one; the
  LAMB paper reports no GLUE recipe). --config.optimizer.kwargs.max_grad_norm=None: no clipping.
Expected (BERT-Large, Devlin et al. Table 1, GLUE test set): MNLI 86.7/85.9, QNLI 92.7, SST-2
94.9, CoLA 60.5, STS-B 86.5, MRPC 89.3, RTE 70.1. Dev-set figures are close to those.
"""

import math

from lamb_optax.tasks.glue import canonical_name
from lamb_optax.train import presets
from lamb_optax.train.config import default_config

# Training examples per task (GLUE's train sets, as TFDS glue/* counts them).
TRAIN_EXAMPLES = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "stsb": 5749, "qnli": 104743,
                  "rte": 2490, "mnli_matched": 392702, "mnli_mismatched": 392702}
EPOCHS, BATCH, WARMUP = 3, 32, 0.1


def get_config(task: str = "mrpc"):
  task = canonical_name(task)  # an unknown name lists the valid ones
  config = default_config()
  config.task = "glue"
  config.finetune.glue_task = task
  config.finetune.max_seq_length = 128
  config.model.preset = "base"  # only without init_from; else the source's model
  presets.bert_finetuning_optimizer(config)
  config.learning_rate = 2e-5
  config.global_batch_size = BATCH
  config.micro_batch_size = 32
  config.num_train_steps = math.ceil(EPOCHS * TRAIN_EXAMPLES[task] / BATCH)
  config.warmup_steps = round(WARMUP * config.num_train_steps)
  config.eval_every_steps = max(1, config.num_train_steps // 3)
  config.checkpoint_every_steps = config.eval_every_steps
  config.log_every_steps = 50
  config.eval_batch_size = 64
  config.eval_batches = 100_000  # a cap: the whole dev set is scored
  config.mesh.data = -1
  return config
