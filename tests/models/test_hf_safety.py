"""load_hf on hostile or damaged checkpoints: shards outside the directory, absurd sizes,
non-finite weights. Each is refused with a clear error, before the model is allocated."""

import json
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from lamb_optax.models import bert
from lamb_optax.models import hf

pytestmark = pytest.mark.hf
pytest.importorskip("safetensors")


@pytest.fixture
def saved_tiny(tmp_path):
  model = bert.BertForPreTraining(bert.BertConfig.tiny(vocab_size=50, max_position_embeddings=16),
                                  rngs=nnx.Rngs(0))
  hf.save_hf(model, tmp_path / "ckpt")
  return tmp_path / "ckpt"


@pytest.fixture
def allocations(monkeypatch):
  """Counts the models load_hf builds with real (not abstract) parameters."""
  built = []
  real = hf.BertForPreTraining

  def counting(*args, **kwargs):
    model = real(*args, **kwargs)
    leaves = jax.tree.leaves(nnx.state(model))
    if leaves and not any(isinstance(x, jax.core.Tracer) for x in leaves):
      built.append(model.config)
    return model

  monkeypatch.setattr(hf, "BertForPreTraining", counting)
  return built


def _edit_config(directory, **changes):
  path = directory / "config.json"
  config = json.loads(path.read_text()) | changes
  path.write_text(json.dumps(config))


@pytest.mark.parametrize("shard", ["../outside/model-00001.safetensors", "ABSOLUTE"])
def test_index_pointing_outside_the_directory_is_refused(saved_tiny, shard):
  outside = saved_tiny.parent / "outside"
  outside.mkdir()
  shutil.move(saved_tiny / "model.safetensors", outside / "model-00001.safetensors")
  if shard == "ABSOLUTE":
    shard = str(outside / "model-00001.safetensors")
  from safetensors.numpy import load_file
  names = load_file(str(outside / "model-00001.safetensors"))
  (saved_tiny / "model.safetensors.index.json").write_text(
      json.dumps({"weight_map": {name: shard for name in names}}))
  with pytest.raises(ValueError, match="not a file inside the checkpoint directory"):
    hf.load_hf(saved_tiny)


def test_a_shard_inside_the_directory_still_loads(saved_tiny):
  (saved_tiny / "shards").mkdir()
  shutil.move(saved_tiny / "model.safetensors", saved_tiny / "shards" / "part.safetensors")
  from safetensors.numpy import load_file
  names = load_file(str(saved_tiny / "shards" / "part.safetensors"))
  (saved_tiny / "model.safetensors.index.json").write_text(
      json.dumps({"weight_map": {name: "shards/part.safetensors" for name in names}}))
  assert hf.load_hf(saved_tiny).config.vocab_size == 50


@pytest.mark.parametrize("value", [2_000_000_000, 2e9, -5, "50"])
def test_absurd_sizes_are_refused_before_allocating(saved_tiny, allocations, value):
  _edit_config(saved_tiny, vocab_size=value)
  with pytest.raises(ValueError, match=r"invalid sizes: vocab_size="):
    hf.load_hf(saved_tiny)
  assert not allocations


def test_sizes_that_do_not_match_the_tensors_allocate_nothing(saved_tiny, allocations):
  _edit_config(saved_tiny, vocab_size=1_000_000)
  with pytest.raises(ValueError, match=r"word_embeddings.weight: \(50, 128\), expected "
                                       r"\(1000000, 128\)"):
    hf.load_hf(saved_tiny)
  assert not allocations


def test_nonfinite_weights_are_refused_unless_allowed(saved_tiny):
  from safetensors.numpy import load_file
  from safetensors.numpy import save_file
  path = str(saved_tiny / "model.safetensors")
  tensors = load_file(path)
  tensors["bert.pooler.dense.bias"][3] = np.nan
  tensors["cls.predictions.transform.dense.weight"][0, :2] = np.inf
  save_file(tensors, path, metadata={"format": "pt"})
  with pytest.raises(ValueError, match=r"non-finite \(NaN/Inf\) tensors \(2\).*"
                                       r"bert.pooler.dense.bias \(1 values\).*allow_nonfinite"):
    hf.load_hf(saved_tiny)
  model = hf.load_hf(saved_tiny, allow_nonfinite=True)
  assert np.isnan(np.asarray(model.bert.pooler.bias[...])).sum() == 1
