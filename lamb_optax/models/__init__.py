"""Models for pretraining with LAMB: BERT in Flax NNX, with Hugging Face checkpoint interop.

Importing this package pulls in Flax; the optimizer (``lamb_optax``) does not need it.
"""

from lamb_optax.models.bert import (
    BertConfig,
    BertForPreTraining,
    BertModel,
    flops_per_token,
    masked_lm_loss,
    next_sentence_loss,
    random_batch,
    stacked_axes,
    validate_batch,
)
from lamb_optax.models.hf import load_hf, save_hf

__all__ = [
    "BertConfig",
    "BertForPreTraining",
    "BertModel",
    "flops_per_token",
    "load_hf",
    "masked_lm_loss",
    "next_sentence_loss",
    "random_batch",
    "save_hf",
    "stacked_axes",
    "validate_batch",
]
