r"""Fine-tuning on the offline downstream task: which kind of object a stdlib docstring documents.

Task: lamb_optax/tasks/docs_classification.py -- 4 classes (module, class, function, method)
from the standard library's real structure, split by module file (20% held out); every
evaluation reports majority_accuracy (always the most frequent training kind: 0.456).
Hardware: any machine, no accelerator, no downloads.
Published result: none (our own CPU-scale task, not a paper setting).
Settings: BERT-Tiny (the pretrained model of configs/tiny.py), batch 32, AdamW with warmup 10%
and linear decay, as Devlin et al.'s fine-tuning recipe (App. A.3), at the top of the learning
rates google-research/bert's README gives for its small BERTs (Turc et al. 2019: lr 3e-4, 1e-4,
5e-5, 3e-5; batch 8 to 128; 4 epochs);
max_seq_length 64 (the first ~50 words of a docstring) and ~1.6 epochs of the 2,917 training
docstrings (150 steps), so that a run takes minutes on a shared 2-core CPU.

Run (after `python -m lamb_optax.train --config=configs/tiny.py --workdir=/tmp/lamb_tiny`):
  python -m lamb_optax.train --config=configs/docs_classification.py \
      --workdir=/tmp/docs_ft --config.init_from=/tmp/lamb_tiny
and the same without --config.init_from for the random-initialisation baseline.

Expected (measured on a shared 2-core CPU, seeds 0 / 1, from the step-600 checkpoint of
configs/tiny.py; docs/finetuning.md has the learning-rate sweep): eval loss 1.083 / 1.165 and
accuracy 0.526 / 0.459, against 1.207 / 1.204 and 0.456 / 0.456 (= majority_accuracy) for the
same fine-tuning from random initialisation; 1 to 3 minutes a run. With a learning rate tuned
for each (1e-3 to 2e-3) random initialisation catches up: the pretrained head start is real at
this learning rate, a better end point is not.
"""

from lamb_optax.train.config import default_config


def get_config():
  config = default_config()
  config.task = "docs_classification"
  config.model.preset = "tiny"  # used only without init_from (else the source's model)
  config.optimizer.name = "adamw"
  config.optimizer.kwargs.weight_decay = 0.01
  config.learning_rate = 3e-4
  config.num_train_steps = 150
  config.warmup_steps = 15  # 10%
  config.global_batch_size = 32
  config.micro_batch_size = 32
  config.eval_batch_size = 64
  config.eval_batches = 1000  # a cap: the whole held-out set is scored
  config.log_every_steps = 25
  config.eval_every_steps = 75
  config.checkpoint_every_steps = 75
  config.mesh.data = -1
  config.finetune.max_seq_length = 64
  return config
