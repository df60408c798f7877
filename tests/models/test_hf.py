"""Hugging Face interop: parity with transformers (PyTorch), save/load round trip, bad checkpoints.

The parity tests need the 'hf' extra (torch, transformers, safetensors) and are skipped without
it; nothing is downloaded: transformers builds a randomly initialised BERT and saves it locally.
"""

import json
import logging
import os

import jax
import numpy as np
import pytest
from flax import nnx

from lamb_optax.models import bert
from lamb_optax.models import hf

pytestmark = pytest.mark.hf
pytest.importorskip("safetensors")

HF_SHAPE = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, max_position_embeddings=64)
TOLERANCE = 1e-4  # float32, as the project's standard asks


@pytest.fixture(scope="module")
def torch_bert(tmp_path_factory):
  """A random transformers.BertForPreTraining (every tensor perturbed), saved to disk."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(0)
  model = transformers.BertForPreTraining(transformers.BertConfig(**HF_SHAPE)).eval()
  with torch.no_grad():
    # Fresh biases are 0 and LayerNorm scales 1: perturb them so every tensor's mapping is tested.
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  directory = tmp_path_factory.mktemp("hf_bert")
  model.save_pretrained(directory)
  return model, directory


def inputs(batch=3, length=20, vocab=99, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, (batch, length))
  token_types = np.broadcast_to((np.arange(length) >= length // 2).astype(np.int64), ids.shape)
  mask = np.ones_like(ids)
  mask[1, length - 5:] = 0   # one padded example
  return ids, np.ascontiguousarray(token_types), mask


def torch_outputs(model, ids, token_types, mask):
  import torch

  with torch.no_grad():
    out = model(torch.tensor(ids), attention_mask=torch.tensor(mask),
                token_type_ids=torch.tensor(token_types), output_hidden_states=True)
  return (out.hidden_states[-1].numpy(), out.prediction_logits.numpy(),
          out.seq_relationship_logits.numpy())


def our_outputs(model, ids, token_types, mask):
  hidden = model.encode(ids, token_types, mask)
  mlm, nsp = model(ids, token_types, mask)
  return np.asarray(hidden), np.asarray(mlm), np.asarray(nsp)


def max_errors(ours, theirs):
  return {name: float(np.abs(a - b).max())
          for name, a, b in zip(("hidden", "mlm_logits", "nsp_logits"), ours, theirs, strict=True)}


def params_of(model):
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_loaded_checkpoint_matches_transformers(torch_bert):
  torch_model, directory = torch_bert
  model = hf.load_hf(directory)
  assert model.config.num_layers == 2 and model.config.vocab_size == 99
  x = inputs()
  errors = max_errors(our_outputs(model, *x), torch_outputs(torch_model, *x))
  print("load_hf parity, max abs error:", errors)
  assert max(errors.values()) < TOLERANCE, errors


def test_bare_bert_model_layout_loads_the_encoder(torch_bert, tmp_path, caplog):
  torch_model, _ = torch_bert
  torch_model.bert.save_pretrained(tmp_path)   # BertModel: no "bert." prefix, no cls.*
  with caplog.at_level(logging.WARNING):
    model = hf.load_hf(tmp_path)
  assert "MLM head" in caplog.text and "NSP head" in caplog.text
  x = inputs()
  hidden = np.asarray(model.encode(*x))
  np.testing.assert_allclose(hidden, torch_outputs(torch_model, *x)[0], atol=TOLERANCE)
  caplog.clear()
  with caplog.at_level(logging.WARNING):  # fine-tuning drops the MLM and NSP heads: no news
    hf.load_hf(tmp_path, heads=("pooler",))
  assert "head" not in caplog.text


def test_sharded_checkpoint_loads(torch_bert, tmp_path):
  torch_model, directory = torch_bert
  torch_model.save_pretrained(tmp_path, max_shard_size="20KB")
  assert os.path.exists(tmp_path / "model.safetensors.index.json")
  jax.tree.map(np.testing.assert_array_equal, params_of(hf.load_hf(tmp_path)),
               params_of(hf.load_hf(directory)))


def test_saved_checkpoint_loads_in_transformers_with_same_outputs(tmp_path):
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("torch")
  model = bert.BertForPreTraining(bert.BertConfig.tiny(vocab_size=99, max_position_embeddings=64),
                                  rngs=nnx.Rngs(1))
  # Non-trivial biases and norms, so a mix-up between tensors would show.
  state = nnx.state(model, nnx.Param)
  keys = iter(jax.random.split(jax.random.key(2), len(jax.tree.leaves(state))))
  nnx.update(model, jax.tree.map(lambda p: p + 0.05 * jax.random.normal(next(keys), p.shape),
                                 state))
  hf.save_hf(model, tmp_path)
  torch_model, info = transformers.BertForPreTraining.from_pretrained(
      tmp_path, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not info["mismatched_keys"], info
  x = inputs()
  errors = max_errors(our_outputs(model, *x), torch_outputs(torch_model.eval(), *x))
  print("save_hf parity, max abs error:", errors)
  assert max(errors.values()) < TOLERANCE, errors


def test_save_then_load_is_exact(tmp_path):
  config = bert.BertConfig.tiny(vocab_size=120, max_position_embeddings=40)
  model = bert.BertForPreTraining(config, rngs=nnx.Rngs(3))
  hf.save_hf(model, tmp_path)
  loaded = hf.load_hf(tmp_path)
  assert loaded.config == config
  jax.tree.map(np.testing.assert_array_equal, params_of(loaded), params_of(model))


@pytest.fixture
def saved_tiny(tmp_path):
  model = bert.BertForPreTraining(bert.BertConfig.tiny(vocab_size=50, max_position_embeddings=16),
                                  rngs=nnx.Rngs(0))
  hf.save_hf(model, tmp_path)
  return tmp_path


def rewrite(directory, edit_tensors=None, edit_config=None):
  from safetensors.numpy import load_file
  from safetensors.numpy import save_file

  path = os.path.join(directory, "model.safetensors")
  tensors = load_file(path)
  if edit_tensors:
    edit_tensors(tensors)
  save_file(tensors, path, metadata={"format": "pt"})
  if edit_config:
    with open(os.path.join(directory, "config.json")) as f:
      config = json.load(f)
    edit_config(config)
    with open(os.path.join(directory, "config.json"), "w") as f:
      json.dump(config, f)


def test_bad_tensors_are_all_listed(saved_tiny):
  def damage(tensors):
    del tensors["bert.encoder.layer.1.output.dense.bias"]
    tensors["classifier.weight"] = np.zeros((2, 128), np.float32)
    tensors["bert.pooler.dense.weight"] = np.zeros((128, 64), np.float32)

  rewrite(saved_tiny, damage)
  with pytest.raises(ValueError) as error:
    hf.load_hf(saved_tiny)
  message = str(error.value)
  assert "missing tensors (1): ['bert.encoder.layer.1.output.dense.bias']" in message
  assert "unexpected tensors (1): ['classifier.weight']" in message
  assert "bert.pooler.dense.weight: (128, 64), expected (128, 128)" in message


def test_unexpected_tensors_can_be_ignored(saved_tiny):
  rewrite(saved_tiny, lambda t: t.update({"classifier.weight": np.zeros((2, 128), np.float32)}))
  with pytest.raises(ValueError, match="classifier.weight"):
    hf.load_hf(saved_tiny)
  assert hf.load_hf(saved_tiny, strict=False).config.vocab_size == 50


def test_pretraining_checkpoint_without_its_heads_is_an_error(saved_tiny):
  def drop_nsp(tensors):
    del tensors["cls.seq_relationship.weight"], tensors["cls.seq_relationship.bias"]

  rewrite(saved_tiny, drop_nsp)
  with pytest.raises(ValueError, match=r"missing tensors \(2\).*cls\.seq_relationship"):
    hf.load_hf(saved_tiny)


def test_legacy_tensorflow_names_load(saved_tiny):
  expected = params_of(hf.load_hf(saved_tiny))

  def rename(tensors):
    for name in [n for n in tensors if n.endswith("LayerNorm.weight")]:
      tensors[name.replace(".weight", ".gamma")] = tensors.pop(name)

  rewrite(saved_tiny, rename)
  jax.tree.map(np.testing.assert_array_equal, params_of(hf.load_hf(saved_tiny)), expected)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(model_type="roberta", architectures=["RobertaForMaskedLM"]),
     "This is a 'roberta' checkpoint \\(RobertaForMaskedLM\\), not BERT"),
    (lambda c: c.update(position_embedding_type="relative_key"), "position_embedding_type"),
    (lambda c: c.update(hidden_act="relu"), "hidden_act='relu'"),
    (lambda c: c.update(num_attention_heads=5), "not divisible by num_heads 5"),
])
def test_unsupported_configs_are_rejected(saved_tiny, edit, message):
  rewrite(saved_tiny, edit_config=edit)
  with pytest.raises(ValueError, match=message):
    hf.load_hf(saved_tiny)


def test_missing_files_are_explained(tmp_path):
  with pytest.raises(ValueError, match="No config.json"):
    hf.load_hf(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(ValueError, match="No model.safetensors.*save_pretrained"):
    hf.load_hf(tmp_path)
