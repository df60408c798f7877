"""Bad configs and batches fail early with a ValueError naming the problem and the fix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lamb_optax.models import bert
from lamb_optax.models.bert import BertConfig

CONFIG = BertConfig.tiny(vocab_size=50, max_position_embeddings=16)


@pytest.fixture(scope="module")
def model():
  return bert.BertForPreTraining(CONFIG, rngs=nnx.Rngs(0))


@pytest.fixture
def batch():
  return bert.random_batch(CONFIG, batch_size=2, max_seq_length=16, seed=0)


@pytest.mark.parametrize("fields, message", [
    (dict(hidden_size=100, num_heads=12), "hidden_size 100 is not divisible by num_heads 12"),
    (dict(num_layers=0), "num_layers must be a positive int"),
    (dict(hidden_dropout=1.0), r"hidden_dropout must be in \[0, 1\)"),
    (dict(remat="some"), "remat must be one of"),
    (dict(hidden_act="relu"), "hidden_act must be one of"),
    (dict(dtype="int8"), "dtype must be a floating dtype"),
    (dict(param_dtype="float33"), "param_dtype is not a dtype"),
])
def test_bad_configs(fields, message):
  with pytest.raises(ValueError, match=message):
    BertConfig(**fields)
  with pytest.raises(ValueError, match="Unknown BERT preset 'huge'"):
    BertConfig.preset("huge")


def test_sequence_longer_than_positions_fails_before_tracing(model):
  ids = jnp.ones((1, 17), jnp.int32)
  expected = "Sequence length 17 exceeds max_position_embeddings 16.*Truncate"
  with pytest.raises(ValueError, match=expected):
    model.encode(ids)
  graphdef, params = nnx.split(model, nnx.Param)
  with pytest.raises(ValueError, match=expected):   # shapes are known at trace time
    jax.jit(lambda p, x: nnx.merge(graphdef, p).encode(x))(params, ids)


def test_token_ids_outside_the_vocabulary(model, batch):
  batch["input_ids"][1, 3] = 50
  batch["input_ids"][0, 0] = -1
  with pytest.raises(ValueError, match=r"input_ids has values outside \[0, 50\).*min -1, max 50, "
                                       r"2 bad entries.*vocab_size"):
    model.pretraining_loss(batch)
  with pytest.raises(ValueError, match="input_ids has values outside"):
    model.encode(batch["input_ids"])


@pytest.mark.parametrize("feature, value, message", [
    ("segment_ids", 2, r"token_type_ids/segment_ids has values outside \[0, 2\)"),
    ("masked_lm_positions", 16, r"masked_lm_positions has values outside \[0, 16\)"),
    ("masked_lm_ids", 99, r"masked_lm_ids has values outside \[0, 50\)"),
    ("next_sentence_labels", 2, r"next_sentence_labels has values outside \[0, 2\)"),
])
def test_values_out_of_range(batch, feature, value, message):
  batch[feature][0, 0] = value
  with pytest.raises(ValueError, match=message):
    bert.validate_batch(batch, CONFIG)


def test_missing_and_mis_shaped_features(batch):
  del batch["masked_lm_weights"]
  with pytest.raises(ValueError, match=r"Batch lacks features \['masked_lm_weights'\]"):
    bert.validate_batch(batch, CONFIG)
  batch["masked_lm_weights"] = np.ones((2, 4), np.float32)
  with pytest.raises(ValueError, match=r"masked_lm_weights has shape \(2, 4\), but "
                                       r"masked_lm_positions has \(2, 2\)"):
    bert.validate_batch(batch, CONFIG)
  batch["masked_lm_weights"] = np.ones((2, 2), np.float32)
  batch["input_mask"] = batch["input_mask"][:, :8]
  with pytest.raises(ValueError, match=r"attention_mask/input_mask has shape \(2, 8\)"):
    bert.validate_batch(batch, CONFIG)


def test_a_valid_batch_passes_inside_jit(model, batch):
  # Under jit the values are not known: only shapes are checked, and the loss is computed.
  graphdef, params = nnx.split(model, nnx.Param)
  loss, _ = jax.jit(lambda p, b: nnx.merge(graphdef, p).pretraining_loss(b))(params, batch)
  assert np.isfinite(loss)
