"""BERT model: shapes, the loss, scan, dropout, remat, dtypes, the optimizer contract."""

import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lamb_optax
from lamb_optax.models import bert
from lamb_optax.models import dropout
from lamb_optax.models.bert import BertConfig
from lamb_optax.models.bert import BertForPreTraining

SMALL = BertConfig.tiny(vocab_size=211, max_position_embeddings=64)


def make_model(config=SMALL, seed=0):
  return BertForPreTraining(config, rngs=nnx.Rngs(seed))


def param_count(config):
  abstract = nnx.eval_shape(lambda: make_model(config))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def loss_fn(graphdef, params, batch, dropout_rng=None):
  return nnx.merge(graphdef, params).pretraining_loss(batch, dropout_rng=dropout_rng)


@pytest.fixture(scope="module")
def model():
  return make_model()


@pytest.fixture(scope="module")
def batch():
  return bert.random_batch(SMALL, batch_size=4, max_seq_length=32, seed=1)


def test_parameter_counts_match_published_bert_sizes():
  # Hugging Face's bert-base-uncased / bert-large-uncased: BertModel has 109,482,240 /
  # 335,141,888 parameters; the pretraining heads add the MLM transform, its LayerNorm, the
  # output bias and the NSP classifier (the decoder is tied to the word embeddings).
  def heads(h, v):
    return (h * h + h) + 2 * h + v + (2 * h + 2)

  assert param_count(BertConfig.base()) == 109_482_240 + heads(768, 30522)
  assert param_count(BertConfig.large()) == 335_141_888 + heads(1024, 30522)


def test_presets_have_the_published_shapes():
  for name, (h, n, a, i) in {"tiny": (128, 2, 2, 512), "mini": (256, 4, 4, 1024),
                             "base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096)}.items():
    c = BertConfig.preset(name)
    assert (c.hidden_size, c.num_layers, c.num_heads, c.intermediate_size) == (h, n, a, i)
    assert (c.vocab_size, c.max_position_embeddings, c.type_vocab_size) == (30522, 512, 2)
    assert (c.layer_norm_eps, c.hidden_dropout, c.attention_dropout) == (1e-12, 0.1, 0.1)


def test_losses_and_metrics_match_a_numpy_computation(model, batch):
  loss, metrics = model.pretraining_loss(batch)
  hidden = model.encode(batch["input_ids"], batch["segment_ids"], batch["input_mask"])
  mlm_logits = np.asarray(model.mlm_logits(hidden, batch["masked_lm_positions"]), np.float64)
  nsp_logits = np.asarray(model.nsp_logits(hidden), np.float64)

  def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))

  ids, w = batch["masked_lm_ids"], batch["masked_lm_weights"]
  token_lp = np.take_along_axis(log_softmax(mlm_logits), ids[..., None], -1)[..., 0]
  mlm = -(w * token_lp).sum() / (w.sum() + 1e-5)
  labels = batch["next_sentence_labels"].reshape(-1)
  nsp = -np.take_along_axis(log_softmax(nsp_logits), labels[:, None], -1).mean()
  np.testing.assert_allclose(metrics["mlm_loss"], mlm, rtol=1e-5)
  np.testing.assert_allclose(metrics["nsp_loss"], nsp, rtol=1e-5)
  np.testing.assert_allclose(loss, mlm + nsp, rtol=1e-5)
  mlm_acc = (w * (mlm_logits.argmax(-1) == ids)).sum() / (w.sum() + 1e-5)
  np.testing.assert_allclose(metrics["mlm_accuracy"], mlm_acc, rtol=1e-5)
  np.testing.assert_allclose(metrics["nsp_accuracy"], (nsp_logits.argmax(-1) == labels).mean())
  assert metrics["mlm_weight"] == w.sum()
  for value in metrics.values():
    assert value.dtype == jnp.float32 and value.shape == ()


def test_gathered_mlm_logits_equal_full_logits_at_the_positions(model, batch):
  full_logits, _ = model(batch["input_ids"], batch["segment_ids"], batch["input_mask"])
  gathered, _ = model(batch["input_ids"], batch["segment_ids"], batch["input_mask"],
                      batch["masked_lm_positions"])
  expected = np.take_along_axis(
      np.asarray(full_logits), batch["masked_lm_positions"][..., None], axis=1
  )
  assert full_logits.shape == (4, 32, SMALL.vocab_size)
  np.testing.assert_allclose(gathered, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_pretraining_logits_equal_the_full_computation(batch, num_layers):
  # The loss runs the last layer only at [CLS] and the masked positions: same values.
  model = make_model(SMALL.replace(num_layers=num_layers))
  mlm, nsp = model.pretraining_logits(batch)
  full_mlm, full_nsp = model(batch["input_ids"], batch["segment_ids"], batch["input_mask"],
                             batch["masked_lm_positions"])
  np.testing.assert_allclose(mlm, full_mlm, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(nsp, full_nsp, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_the_real_tokens(model):
  ids = jnp.asarray([[2, 5, 7, 9]])
  short = model.encode(ids)
  padded = model.encode(jnp.asarray([[2, 5, 7, 9, 0, 0]]),
                        attention_mask=jnp.asarray([[1, 1, 1, 1, 0, 0]]))
  np.testing.assert_allclose(padded[:, :4], short, atol=1e-5)


def test_scan_equals_running_the_layers_one_by_one(model, batch):
  bert_model = model.bert
  x = bert_model.embeddings(jnp.asarray(batch["input_ids"]), jnp.asarray(batch["segment_ids"]))
  mask = jnp.asarray(batch["input_mask"]).astype(bool)
  graphdef, stacked = nnx.split(bert_model.encoder.layers)
  expected = x
  for i in range(SMALL.num_layers):
    layer = nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], stacked))
    expected = layer(expected, mask)
  np.testing.assert_allclose(bert_model.encoder(x, mask), expected, atol=1e-5, rtol=1e-5)


def test_program_size_does_not_grow_with_depth(batch):
  # Scan traces one layer: the jaxpr (hence what XLA compiles) is the same for 2 and 12 layers.
  def num_equations(num_layers):
    config = SMALL.replace(num_layers=num_layers)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: make_model(config)), nnx.Param)
    jaxpr = jax.make_jaxpr(lambda p: loss_fn(graphdef, p, batch)[0])(params)
    return count(jaxpr.jaxpr)

  def count(jaxpr):  # equations, those of nested jaxprs (scan bodies, remat) included
    return sum(1 + sum(count(getattr(sub, "jaxpr", sub))
                       for sub in jax.extend.core.jaxprs_in_params(e.params))
               for e in jaxpr.eqns)

  assert num_equations(12) == num_equations(2)


@pytest.fixture(scope="module")
def value_and_grad(model):
  """One compiled (loss, metrics), grads function of (params, batch, dropout key or None)."""
  graphdef, _ = nnx.split(model, nnx.Param)
  return jax.jit(jax.value_and_grad(lambda p, b, k: loss_fn(graphdef, p, b, k), has_aux=True))


def test_jit_on_split_params_matches_eager_and_grads_are_finite(model, batch, value_and_grad):
  _, params = nnx.split(model, nnx.Param)
  (loss, metrics), grads = value_and_grad(params, batch, None)
  eager_loss, _ = model.pretraining_loss(batch)
  np.testing.assert_allclose(loss, eager_loss, rtol=1e-6)
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  # Every parameter takes part in the loss (the MLM output bias and NSP head included).
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_dropout_is_controlled_by_the_key(model, batch, value_and_grad):
  _, params = nnx.split(model, nnx.Param)

  def loss(key):
    return value_and_grad(params, batch, key)[0][0]

  key = jax.random.key(3)
  assert loss(key) == loss(key)
  assert loss(key) != loss(jax.random.key(4))
  assert loss(key) != loss(None)
  no_dropout = make_model(SMALL.replace(hidden_dropout=0.0, attention_dropout=0.0))
  np.testing.assert_allclose(no_dropout.pretraining_loss(batch, dropout_rng=key)[0],
                             no_dropout.pretraining_loss(batch)[0], rtol=1e-6)


@pytest.mark.parametrize("shape", [(64, 12, 128, 128), (3, 5, 7)])
def test_dropout_drops_at_its_rate_and_scales_the_rest(shape):
  rate = 0.1
  out = np.asarray(jax.jit(lambda k: dropout.dropout(jnp.ones(shape), rate, k))(jax.random.key(5)))
  assert set(np.unique(out)) <= {0.0, np.float32(1 / (1 - rate))}
  if out.size > 10**6:  # binomial standard deviation of the dropped fraction: 2.8e-4
    assert abs(np.mean(out == 0) - rate) < 1.5e-3
  other = np.asarray(dropout.dropout(jnp.ones(shape), rate, jax.random.key(6)))
  assert not np.array_equal(out == 0, other == 0)


def test_dropout_draws_are_uniform_and_independent_of_the_layout():
  draws = np.asarray(dropout.uniform16(jax.random.key(0), (256, 1024)))
  # Chi-square over the 256 values of the high byte (255 degrees of freedom; p = 1e-6 at 368),
  # and the low byte, and all four draws of a hash (the four blocks of the last axis) alike.
  for byte in (draws >> 8, draws & 255):
    counts = np.bincount(byte.ravel(), minlength=256)
    expected = draws.size / 256
    assert np.sum((counts - expected) ** 2 / expected) < 368
  assert np.ptp([np.mean(block < 6554) for block in np.split(draws, 4, axis=1)]) < 0.01
  # A draw depends on the key and its position only: a block computed on its own (as a device
  # holding those rows would) is the same block of the whole, and a sharded array agrees.
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  sharded = jax.jit(lambda k: dropout.uniform16(k, (256, 1024)),
                    out_shardings=jax.NamedSharding(mesh, jax.P("data")))(jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(sharded), draws)
  # BERT-Large phase 2's attention dropout over a micro-batch of 4,096 sequences (512 chips x 8)
  # has 2**32 groups of four: the counter's high word (the row) keeps them distinct.
  shape = (4096, 16, 512, 512)
  assert jax.eval_shape(lambda k: dropout.uniform16(k, shape), jax.random.key(0)).shape == shape


@pytest.mark.slow  # two more compiles of the gradient; remat is off by default
def test_remat_gives_the_same_gradients(model, batch, value_and_grad):
  key = jax.random.key(0)
  _, params = nnx.split(model, nnx.Param)
  expected = value_and_grad(params, batch, key)[1]
  for policy in ("full", "dots"):
    graphdef, _ = nnx.split(make_model(SMALL.replace(remat=policy)), nnx.Param)
    actual = jax.jit(jax.grad(lambda p, g=graphdef: loss_fn(g, p, batch, key)[0]))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                 actual, expected)


@pytest.mark.slow  # a compile of the unrolled gradient; scan_layers is on by default
def test_unrolled_layers_give_the_scans_loss_and_gradients(model, batch, value_and_grad):
  # scan_layers=False is the same computation without the loop: same params, dropout keys,
  # loss and gradients (float summation order aside).
  key = jax.random.key(0)
  _, params = nnx.split(model, nnx.Param)
  (loss, _), expected = value_and_grad(params, batch, key)
  graphdef, _ = nnx.split(make_model(SMALL.replace(scan_layers=False)), nnx.Param)
  unrolled = jax.jit(jax.value_and_grad(lambda p: loss_fn(graphdef, p, batch, key)[0]))
  actual_loss, actual = unrolled(params)
  np.testing.assert_allclose(actual_loss, loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
               actual, expected)
  with pytest.raises(ValueError, match="scan_layers must be True or False"):
    SMALL.replace(scan_layers="no")


def test_bfloat16_compute_keeps_float32_params_and_losses(model, batch):
  half = make_model(SMALL.replace(dtype="bfloat16"))
  assert {x.dtype for x in jax.tree.leaves(nnx.state(half, nnx.Param))} == {jnp.dtype("float32")}
  assert half.encode(batch["input_ids"]).dtype == jnp.bfloat16
  loss, metrics = half.pretraining_loss(batch)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, model.pretraining_loss(batch)[0], rtol=2e-2)


def test_flops_per_token_agrees_with_xla_cost_analysis(model, batch):
  # Independent count: XLA's own FLOP count of the compiled forward pass (which also counts
  # elementwise ops, hence the tolerance). XLA counts a loop body once: with two layers the scan
  # runs one full layer and the last layer runs at [CLS] + the 5 masked positions.
  config = SMALL.replace(num_layers=2, vocab_size=4000)
  one = {k: v[:1] for k, v in bert.random_batch(config, 1, 32, max_predictions_per_seq=5).items()}
  graphdef, params = nnx.split(make_model(config), nnx.Param)
  compiled = jax.jit(lambda p: loss_fn(graphdef, p, one)[0]).lower(params).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  xla_per_token = cost["flops"] / 32
  ours = bert.flops_per_token(config, 32, max_predictions_per_seq=5, training=False)
  assert ours == pytest.approx(xla_per_token, rel=0.1)
  assert bert.flops_per_token(config, 32, 5) == 3 * ours


def test_stacked_axes_drive_lamb_per_layer(model, batch, value_and_grad):
  _, params = nnx.split(model, nnx.Param)
  axes = bert.stacked_axes(params)
  assert {int(a) for a in jax.tree.leaves(axes)} == {0, 1}
  tx = lamb_optax.lamb(1e-3, stacked_axes=bert.stacked_axes)
  grads = value_and_grad(params, batch, None)[1]
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  ratios = lamb_optax.trust_ratios(state)
  assert ratios["bert/encoder/layers/intermediate/kernel"].shape == (SMALL.num_layers,)
  assert ratios["bert/embeddings/word_embeddings/embedding"].shape == ()
  assert "mlm/bias" not in ratios and "bert/encoder/layers/attention_norm/scale" not in ratios
  # The pure-dict form of the params works the same way.
  pure = nnx.to_pure_dict(params)
  assert bert.stacked_axes(pure)["bert"]["encoder"]["layers"]["output"]["kernel"] == 1
  lamb_optax.lamb(1e-3, stacked_axes=bert.stacked_axes).init(pure)


def test_default_decay_mask_spares_biases_and_layer_norms(model):
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  mask = lamb_optax.default_weight_decay_mask(params)
  decayed = {lamb_optax.masks.path_to_str(p) for p, m in
             jax.tree_util.tree_flatten_with_path(mask)[0] if m}
  assert decayed == {
      "bert/embeddings/word_embeddings/embedding", "bert/embeddings/position_embeddings/embedding",
      "bert/embeddings/token_type_embeddings/embedding", "bert/pooler/kernel",
      "mlm/transform/kernel", "nsp/kernel",
      *(f"bert/encoder/layers/{name}/kernel" for name in (
          "attention/query", "attention/key", "attention/value", "attention/output",
          "intermediate", "output")),
  }
