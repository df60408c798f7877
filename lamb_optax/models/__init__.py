"""Models for pretraining with LAMB: BERT in Flax NNX, with Hugging Face checkpoint interop.

Importing this package pulls in Flax; the optimizer (``lamb_optax``) does not need it.
"""

from lamb_optax.models.bert import BertConfig
from lamb_optax.models.bert import BertForPreTraining
from lamb_optax.models.bert import flops_per_token
from lamb_optax.models.bert import masked_lm_loss
from lamb_optax.models.bert import next_sentence_loss
from lamb_optax.models.bert import random_batch
from lamb_optax.models.bert import stacked_axes
from lamb_optax.models.bert import validate_batch
from lamb_optax.models.bert_encoder import BertModel
from lamb_optax.models.hf import load_hf
from lamb_optax.models.hf import save_hf

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
