"""BERT with fine-tuning heads: sequence classification/regression and extractive QA (SQuAD).

Both models keep the pretrained encoder under ``bert`` (the same :class:`BertModel`, so the
parameter paths ``bert/...`` are those of :class:`lamb_optax.models.bert.BertForPreTraining` and
of Hugging Face's ``bert.*``), and add a small head initialised from N(0, 0.02) truncated, as
Google's ``run_classifier.py`` / ``run_squad.py``:

* :class:`BertForSequenceClassification`: dropout on the pooled [CLS] (``BertModel.pool``), then
  a dense layer to ``num_labels`` logits; ``num_labels=1`` is regression (STS-B);
* :class:`BertForQuestionAnswering`: a dense layer from every token's last hidden state to a
  start and an end logit.

>>> from flax import nnx
>>> from lamb_optax.models.bert_config import BertConfig
>>> model = BertForSequenceClassification(BertConfig.tiny(vocab_size=50), 3, rngs=nnx.Rngs(0))
>>> model(jnp.ones((2, 8), jnp.int32)).shape
(2, 3)
>>> qa = BertForQuestionAnswering(BertConfig.tiny(vocab_size=50), rngs=nnx.Rngs(0))
>>> [x.shape for x in qa(jnp.ones((2, 8), jnp.int32))]
[(2, 8), (2, 8)]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lamb_optax.models import bert_encoder
from lamb_optax.models.bert_config import BertConfig
from lamb_optax.models.dropout import dropout
from lamb_optax.models.inputs import encoder_inputs
from lamb_optax.sharding import constrain


class BertForSequenceClassification(nnx.Module):
  """BERT + dropout + dense on the pooled [CLS]: ``num_labels`` logits (1 = a regression)."""

  def __init__(self, config: BertConfig, num_labels: int, *, rngs: nnx.Rngs):
    if num_labels < 1:
      raise ValueError(f"num_labels must be >= 1 (1 = regression), got {num_labels}.")
    self.config = config
    self.num_labels = num_labels
    self.bert = bert_encoder.BertModel(config, rngs=rngs)
    self.classifier = bert_encoder._dense(config, config.hidden_size, num_labels, ("embed",),
                                          (None,), rngs)

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None, *,
               dropout_rng: jax.Array | None = None) -> jax.Array:
    """Float32 logits (batch, num_labels); dropout iff ``dropout_rng`` is given."""
    input_ids, token_type_ids, attention_mask = encoder_inputs(
        self.config, input_ids, token_type_ids, attention_mask)
    encoder_key, head_key = bert_encoder._split(dropout_rng, 2)
    # Only [CLS] is read: the last layer runs at position 0 alone (same values, less work).
    cls_only = jnp.zeros((input_ids.shape[0], 1), jnp.int32)
    hidden = self.bert(input_ids, token_type_ids, attention_mask, encoder_key,
                       last_layer_positions=cls_only)
    pooled = dropout(self.bert.pool(hidden), self.config.hidden_dropout, head_key)
    return self.classifier(pooled).astype(jnp.float32)


class BertForQuestionAnswering(nnx.Module):
  """BERT + a dense layer to (start, end) logits at every token (Google's ``run_squad.py``)."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.bert = bert_encoder.BertModel(config, rngs=rngs)
    self.qa_outputs = bert_encoder._dense(config, config.hidden_size, 2, ("embed",), (None,), rngs)

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None, *,
               dropout_rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Float32 (start logits, end logits), each (batch, length)."""
    input_ids, token_type_ids, attention_mask = encoder_inputs(
        self.config, input_ids, token_type_ids, attention_mask)
    hidden = self.bert(input_ids, token_type_ids, attention_mask, dropout_rng)
    logits = constrain(self.qa_outputs(hidden).astype(jnp.float32), ("batch", "length", None))
    return logits[..., 0], logits[..., 1]


def cross_entropy_and_confusion_sums(logits: jax.Array, labels: jax.Array,
                                     weights: jax.Array) -> dict[str, jax.Array]:
  """Summed cross-entropy, hits, weight and (for 2 classes) confusion counts of a batch.

  Weights are 0 on padding rows (an eval set padded to whole batches). The counts ``tp``, ``fp``,
  ``fn``, ``tn`` (class 1 = positive) add exactly across batches, so F1 and Matthews correlation
  come out exact from the sums (:mod:`lamb_optax.tasks.glue_metrics`).
  """
  labels = labels.reshape(-1).astype(jnp.int32)
  weights = weights.reshape(-1).astype(jnp.float32)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  predicted = jnp.argmax(logits, axis=-1)
  sums = {"loss_sum": jnp.sum(weights * nll),
          "correct": jnp.sum(weights * (predicted == labels)),
          "count": jnp.sum(weights)}
  if logits.shape[-1] == 2:
    p, y = predicted == 1, labels == 1
    for name, hit in (("tp", p & y), ("fp", p & ~y), ("fn", ~p & y), ("tn", ~p & ~y)):
      sums[name] = jnp.sum(weights * hit)
  return sums


def regression_sums(predictions: jax.Array, targets: jax.Array, weights: jax.Array,
                    center: float = 0.0) -> dict[str, jax.Array]:
  """Summed squared error and the moments Pearson's r needs (x = prediction, y = target).

  Sums of x, y, x², y², xy about ``center`` (e.g. the middle of the label range, for float32
  accuracy): they add across batches, and :func:`lamb_optax.tasks.glue_metrics.pearson_from_sums`
  gives the exact correlation.
  """
  x = predictions.reshape(-1).astype(jnp.float32) - center
  y = targets.reshape(-1).astype(jnp.float32) - center
  w = weights.reshape(-1).astype(jnp.float32)
  return {"loss_sum": jnp.sum(w * (x - y) ** 2), "count": jnp.sum(w),
          "sum_x": jnp.sum(w * x), "sum_y": jnp.sum(w * y), "sum_xx": jnp.sum(w * x * x),
          "sum_yy": jnp.sum(w * y * y), "sum_xy": jnp.sum(w * x * y)}
