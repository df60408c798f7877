r"""Fine-tuning on your own labelled text: N classes (or a score) from CSV, TSV or JSON Lines.

Task: lamb_optax/tasks/text_classification.py -- a `label` column and a `sentence` or `text`
column (or a `sentence1`/`sentence2` pair), as Hugging Face's run_glue.py reads a user's files;
the classes are the training file's sorted labels, recorded in WORKDIR/labels.json.
Hardware: one GPU/TPU for BERT-Base/Large; a CPU for BERT-Tiny and the shipped example.
Published result: none for your data; the recipe is Devlin et al.'s GLUE one (configs/glue.py).

Run:
  python -m lamb_optax.train --config=configs/text_classification.py --workdir=/tmp/my_ft \
      --config.init_from=PRETRAINED \
      --config.finetune.train_file=train.csv --config.finetune.validation_file=dev.csv
  python -m lamb_optax.train.predict --workdir=/tmp/my_ft --input_file=test.csv \
      --output_file=/tmp/my_ft/pred.csv
PRETRAINED: a Hugging Face BERT directory or a lamb_optax pretraining workdir; without it the
encoder is a random BERT of config.model (BERT-Base here).

Settings (Devlin et al. 2019, App. A.3, and google-research/bert run_classifier.py): 3 epochs
of the training file at batch 32 (num_train_steps follows from the file's size), warmup 10%
then linear decay, lr 2e-5 (sweep {5e-5, 3e-5, 2e-5} on dev), AdamW with weight decay 0.01,
eps 1e-6, no bias correction, gradients clipped at global norm 1.0, max_seq_length 128.
LAMB instead: --config.optimizer.name=lamb (max_grad_norm then clips before it, with a note)
at its own learning rate; docs/finetuning.md "Your own data" has a measured sweep.

Expected, on the shipped 3-class example (docs/examples/text_classification, 300 train / 60
dev / 60 test rows; measured on a shared 2-core CPU, a random BERT-Tiny, no init_from):
  python -m lamb_optax.train --config=configs/text_classification.py --workdir=/tmp/tc \
      --config.model.preset=tiny --config.learning_rate=1e-3 \
      --config.finetune.max_seq_length=32 --config.finetune.num_train_epochs=5 \
      --config.finetune.train_file=docs/examples/text_classification/train.csv \
      --config.finetune.validation_file=docs/examples/text_classification/dev.csv
47 steps in 11 s (8 s of it compiling): eval_accuracy 0.9667 (eval_majority_accuracy 0.35);
predict on test.csv: accuracy 0.967, macro-F1 0.967 (a bag-of-words logistic regression: 0.967).
From random initialisation some seeds stall in 47 steps (seed 1 at this rate: 0.317); the
learning-rate table over 3 seeds, AdamW and LAMB, is in docs/finetuning.md.
"""

from lamb_optax.train import presets
from lamb_optax.train.config import default_config


def get_config():
  config = default_config()
  config.task = "text_classification"
  config.finetune.train_file = ""  # required: --config.finetune.train_file=...
  config.finetune.validation_file = ""
  config.finetune.max_seq_length = 128
  config.finetune.num_train_epochs = 3.0  # sets num_train_steps from the training file's size
  config.finetune.warmup_fraction = 0.1  # sets warmup_steps
  config.model.preset = "base"  # only without init_from; else the source's model
  presets.bert_finetuning_optimizer(config)
  config.learning_rate = 2e-5
  config.global_batch_size = 32
  config.micro_batch_size = 32
  config.log_every_steps = 10
  config.eval_every_steps = 500  # and after the last step
  config.checkpoint_every_steps = 500  # and after the last step
  config.eval_batch_size = 64
  config.eval_batches = 100_000  # a cap: the whole validation file is scored
  config.mesh.data = -1
  return config
