"""Packed rows: the same losses, gradients and hidden states as the examples one per row.

The reference is always the unpacked computation (each example alone in its row), which the
rest of tests/models checks against Hugging Face and float64 NumPy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lamb_optax import sharding
from lamb_optax.data import packing
from lamb_optax.models import bert
from lamb_optax.models.bert import BertConfig
from lamb_optax.models.bert import BertForPreTraining
from lamb_optax.tasks import bert_pretraining
from lamb_optax.train import config as config_lib

CONFIG = BertConfig.tiny(vocab_size=97, max_position_embeddings=64)
EXAMPLE_LENGTH, ROW_LENGTH, PREDICTIONS = 16, 48, 4
PACKING = packing.PackingConfig(max_seq_length=ROW_LENGTH, max_predictions_per_seq=PREDICTIONS,
                                max_examples_per_row=3, window_rows=4)


def unpacked_batch(num_examples=9, seed=0):
  return bert.random_batch(CONFIG, num_examples, EXAMPLE_LENGTH, PREDICTIONS, seed=seed)


def pack(batch):
  """The batch's examples packed into rows of ROW_LENGTH; all of them must fit."""
  examples = [{k: v[i] for k, v in batch.items()} for i in range(len(batch["input_ids"]))]
  rows, taken = packing.pack_window(examples, PACKING.window_rows, PACKING)
  assert taken == len(examples)
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


@pytest.fixture(scope="module")
def model():
  return BertForPreTraining(CONFIG, rngs=nnx.Rngs(0))


def test_packing_puts_several_examples_in_a_row():
  packed = pack(unpacked_batch())
  assert packed["input_ids"].shape == (4, ROW_LENGTH)
  assert packed["next_sentence_weights"].sum() == 9
  assert (packed["next_sentence_weights"].sum(1) >= 2).sum() >= 2


def test_packed_loss_and_gradients_equal_unpacked(model):
  batch = unpacked_batch()
  packed = pack(batch)
  graphdef, params = nnx.split(model, nnx.Param)

  def loss(params, batch):
    return nnx.merge(graphdef, params).pretraining_loss(batch)

  grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (ref_loss, ref_metrics), ref_grads = grad(params, batch)
  (got_loss, got_metrics), got_grads = grad(params, packed)
  np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-5)
  for name in ref_metrics:
    np.testing.assert_allclose(got_metrics[name], ref_metrics[name], rtol=1e-5, err_msg=name)
  assert_close_gradients(got_grads, ref_grads)


def assert_close_gradients(got, ref):
  # Absolute tolerance from the largest gradient: some are zero in exact arithmetic (the key
  # bias cancels in the softmax) and only rounding noise in either computation.
  scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(ref))
  for (path, r), g in zip(jax.tree_util.tree_leaves_with_path(ref), jax.tree.leaves(got),
                          strict=True):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6 * scale,
                               err_msg=jax.tree_util.keystr(path))


def _hidden(model, packed):
  return np.asarray(model.encode(packed["input_ids"], packed["segment_ids"],
                                 packed["input_mask"], position_ids=packed["position_ids"]))


def test_every_packed_token_equals_its_example_alone(model):
  batch = unpacked_batch(seed=1)
  packed = pack(batch)
  alone = np.asarray(model.encode(batch["input_ids"], batch["segment_ids"], batch["input_mask"]))
  together = _hidden(model, packed)
  placed = 0
  for i in range(len(batch["input_ids"])):
    n = int(batch["input_mask"][i].sum())
    tokens = batch["input_ids"][i, :n]
    for r in range(len(packed["input_ids"])):
      for k in np.flatnonzero(packed["next_sentence_weights"][r]):
        start = int(packed["next_sentence_positions"][r, k])
        if np.array_equal(packed["input_ids"][r, start:start + n], tokens) and (
            packed["input_mask"][r, start:start + n] == k + 1).all():
          np.testing.assert_allclose(together[r, start:start + n], alone[i, :n], atol=2e-5)
          assert packed["position_ids"][r, start:start + n].tolist() == list(range(n))
          placed += 1
  assert placed == len(batch["input_ids"])


def test_no_attention_across_examples(model):
  packed = pack(unpacked_batch(seed=2))
  row = int(np.argmax(packed["next_sentence_weights"].sum(1)))
  assert packed["next_sentence_weights"][row].sum() >= 2
  changed = {k: v.copy() for k, v in packed.items()}
  second = packed["input_mask"][row] == 2
  changed["input_ids"][row, second] = (changed["input_ids"][row, second] + 7) % CONFIG.vocab_size
  before, after = _hidden(model, packed), _hidden(model, changed)
  # The other examples' tokens; padding queries attend to every real key (their outputs are
  # never used), as in an unpacked row.
  others = (packed["input_mask"][row] != 2) & (packed["input_mask"][row] != 0)
  np.testing.assert_array_equal(after[row, others], before[row, others])
  assert not np.allclose(after[row, second], before[row, second])
  # The other rows are untouched too.
  np.testing.assert_array_equal(np.delete(after, row, 0), np.delete(before, row, 0))


def test_positions_restart_at_every_example(model):
  packed = pack(unpacked_batch(seed=3))
  # Positions counted along the whole row give different hidden states for later examples.
  along = {**packed, "position_ids": np.broadcast_to(np.arange(ROW_LENGTH), (4, ROW_LENGTH))}
  later = packed["input_mask"] >= 2
  assert not np.allclose(_hidden(model, along)[later], _hidden(model, packed)[later])
  first = packed["input_mask"] == 1
  np.testing.assert_allclose(_hidden(model, along)[first], _hidden(model, packed)[first],
                             atol=1e-6)


def test_packed_batch_errors(model):
  packed = pack(unpacked_batch())
  without = {k: v for k, v in packed.items() if k != "position_ids"}
  with pytest.raises(ValueError, match="a packed batch .* needs all of"):
    model.pretraining_loss(without)
  bad = {**packed, "next_sentence_labels": packed["next_sentence_labels"][:, :2]}
  with pytest.raises(ValueError, match="next_sentence_labels is one entry per example slot"):
    model.pretraining_loss(bad)
  bad = {**packed, "input_mask": np.where(packed["input_mask"] > 0, 4, 0).astype(np.int32)}
  with pytest.raises(ValueError, match="at most 3 examples"):
    model.pretraining_loss(bad)
  bad = {**packed, "next_sentence_positions": packed["next_sentence_positions"] + ROW_LENGTH}
  with pytest.raises(ValueError, match="next_sentence_positions has values outside"):
    model.pretraining_loss(bad)
  bad = {**packed, "position_ids": packed["position_ids"] + CONFIG.max_position_embeddings}
  with pytest.raises(ValueError, match="position_ids has values outside"):
    model.pretraining_loss(bad)


def test_task_objective_packed_equals_unpacked():
  """The trainer's objective: NSP averaged over examples (not rows), MLM over masked tokens."""
  config = config_lib.default_config()
  config.model.preset = "tiny"
  config.model.overrides.hidden_dropout = 0.0
  config.model.overrides.attention_dropout = 0.0
  config.model.overrides.max_position_embeddings = 64
  config.data.max_seq_length = ROW_LENGTH
  config.data.max_predictions_per_seq = PREDICTIONS
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  task = bert_pretraining.build_model(config, mesh, CONFIG.vocab_size)
  params = task.init_params()
  batch = unpacked_batch(seed=4)
  packed = pack(batch)
  key = jax.random.key(0)

  def objective(params, batch):
    return task.objective(params, batch, key, task.normalizers(batch))

  # Its gradients are the model's (test above) over normalisers that are constants: here the
  # normalisers and sums.
  objective = jax.jit(objective)
  ref, ref_sums = objective(params, batch)
  got, got_sums = objective(params, packed)
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  assert float(got_sums["nsp_count"]) == 9 and float(got_sums["real_tokens"]) == float(
      ref_sums["real_tokens"])
  np.testing.assert_allclose(got_sums["nsp_loss_sum"], ref_sums["nsp_loss_sum"], rtol=1e-5)
  summary = task.summarise(got_sums)
  assert summary["useful_token_fraction"] == pytest.approx(
      batch["input_mask"].sum() / packed["input_mask"].size)
