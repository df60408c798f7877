r"""NVIDIA's two-phase BERT-Large recipe with NVLAMB (DeepLearningExamples, PyTorch).

Hardware (published): 1,024 V100 GPUs (64 DGX-2H nodes).
Published result: 1.12 hours of pretraining, SQuAD v1.1 dev F1 91.24.
Phase 1: seq 128, 20 predictions, batch 65,536, lr 6e-3, warmup 28.43%, 7,038 steps.
Phase 2: seq 512, 80 predictions, batch 32,768, lr 4e-3, warmup 12.8%, 1,563 steps (re-warmed,
from phase 1's final checkpoint: ``init_from`` = phase 1's workdir, and, as NVIDIA does,
``init_from_optimizer_state=True``: NVIDIA/DeepLearningExamples
PyTorch/LanguageModeling/BERT/scripts/run_pretraining.sh runs phase 2 with
``--phase2 --resume_from_checkpoint``, and run_pretraining.py then loads phase 1's optimizer
state with each group's step zeroed and lr reset (both files read at commit
729963dd47e7c8bd462ad10bfac7a7b0b604e6dd, 2024-04-04).
Both: weight decay 0.01 (not on bias/LayerNorm), ε 1e-6, global gradient clip 1.0, polynomial
decay with power 0.5 (sources: docs/lamb.md).

Run:
  python -m lamb_optax.train --config=configs/nvlamb.py:phase1 --workdir=/tmp/nvlamb_1
  python -m lamb_optax.train --config=configs/nvlamb.py:phase2 --workdir=/tmp/nvlamb_2 \
      --config.init_from=/tmp/nvlamb_1    # the default; pass phase 1's workdir if elsewhere
"""

from lamb_optax.train.config import default_config

PHASES = {
    # phase: (global batch, steps, peak lr, warmup fraction, seq length, max predictions)
    "phase1": (65536, 7038, 6e-3, 0.2843, 128, 20),
    "phase2": (32768, 1563, 4e-3, 0.128, 512, 80),
}
# Phase 2 starts from here (the phase-1 workdir of the Run lines); override with
# --config.init_from=... as configs/bert_*_phase2.py.
PHASE1_WORKDIR = "/tmp/nvlamb_1"


def get_config(phase: str = "phase1"):
  if phase not in PHASES:
    raise ValueError(f"nvlamb.py:{phase}: choose one of {sorted(PHASES)}.")
  batch, steps, lr, warmup, seq, predictions = PHASES[phase]
  config = default_config()
  config.model.preset = "large"
  config.model.dtype = "bfloat16"  # NVIDIA trains in mixed precision (fp16 on V100)
  config.optimizer.name = "nvlamb"
  config.optimizer.kwargs.weight_decay = 0.01
  config.optimizer.kwargs.eps = 1e-6
  config.optimizer.kwargs.max_grad_norm = 1.0
  config.global_batch_size = batch
  config.micro_batch_size = 32
  config.num_train_steps = steps
  config.learning_rate = lr
  config.warmup_steps = round(warmup * steps)
  config.decay_power = 0.5
  config.data.max_seq_length = seq
  config.data.max_predictions_per_seq = predictions
  if phase == "phase2":
    config.init_from = PHASE1_WORKDIR
    config.init_from_optimizer_state = True  # NVIDIA's --phase2 --resume_from_checkpoint
  return config
