"""The train step: accumulation and data parallelism give the same update; non-finite skips."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lamb_optax
from lamb_optax import sharding
from lamb_optax.models import dropout
from lamb_optax.tpu import program_stats
from lamb_optax.train import step as step_lib


def objective(params, batch, rng, normalizers):
  """Weighted squared error: a sum over examples divided by the global weight (see step.py)."""
  del rng
  pred = jnp.tanh(batch["x"] @ params["dense"]["kernel"] + params["dense"]["bias"])
  per_example = batch["w"] * jnp.sum((pred - batch["y"]) ** 2, axis=-1)
  loss = jnp.sum(per_example) / normalizers["weight"]
  return loss, {"weight": jnp.sum(batch["w"]),
                "examples": jnp.asarray(batch["w"].shape[0], jnp.float32)}


def normalizers(batch):
  return {"weight": jnp.sum(batch["w"])}


def make_problem(batch_size=32):
  rng = np.random.default_rng(0)
  params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
                      "bias": jnp.zeros(3, jnp.float32)}}
  batches = [{"x": jnp.asarray(rng.normal(size=(batch_size, 5)), jnp.float32),
              "y": jnp.asarray(rng.normal(size=(batch_size, 3)), jnp.float32),
              "w": jnp.asarray(rng.integers(0, 3, size=batch_size), jnp.float32)} for _ in range(3)]
  return params, batches


def run(params, batches, num_micro_batches, num_devices, *, objective=objective, data_axis=None):
  """Steps as the trainer takes them (the mesh set with jax.set_mesh, micro-batches constrained
  by logical name); returns the losses, the final state and the step's HLO statistics."""
  tx = lamb_optax.lamb(0.05)
  mesh = sharding.make_mesh({"data": num_devices}, devices=jax.devices()[:num_devices])
  constraint = lambda b: jax.tree.map(lambda x: sharding.constrain(x, ("batch", None)[:x.ndim]), b)
  with jax.set_mesh(mesh):
    train_step = jax.jit(step_lib.make_train_step(
        objective, normalizers, tx, num_micro_batches, micro_batch_constraint=constraint,
        data_axis=data_axis))
    state = jax.device_put(step_lib.create_train_state(params, tx, seed=0),
                           sharding.replicated(mesh))
    batches = [jax.device_put(b, sharding.batch_sharding(mesh, rank=1)) for b in batches]
    stats = program_stats.analyse(train_step.lower(state, batches[0]).compile().as_text())
    losses = []
    for batch in batches:
      state, metrics = train_step(state, batch)
      losses.append(float(metrics["loss"]))
      assert float(metrics["weight"]) == float(jnp.sum(batch["w"]))
      assert float(metrics["examples"]) == batch["w"].shape[0]
  return losses, state, stats


def full_batch_reference(params, batches, objective=objective):
  """Plain full-batch gradient steps with the same optimizer, no accumulation, no mesh."""
  tx = lamb_optax.lamb(0.05)
  opt_state = tx.init(params)
  losses = []
  for batch in batches:
    loss_fn = lambda p, b=batch: objective(p, b, None, normalizers(b))[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    losses.append(float(loss))
  return losses, params


@pytest.mark.parametrize("num_micro_batches, num_devices",
                         [(1, 1), (4, 1), (1, 4), (2, 8), (4, 8)])
def test_accumulation_and_data_parallelism_match_one_full_batch_step(num_micro_batches,
                                                                     num_devices):
  params, batches = make_problem()
  expected_losses, expected_params = full_batch_reference(params, batches)
  losses, state, _ = run(params, batches, num_micro_batches, num_devices)
  np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               state.params, expected_params)
  assert int(state.step) == len(batches)


def test_micro_batches_take_rows_from_every_device():
  batch = {"x": jnp.arange(16)}
  micro = step_lib.split_micro_batches(batch, 4)["x"]
  assert micro.shape == (4, 4)
  # Rows of device d (4 devices, 4 rows each) are d*4 .. d*4+3: each micro-batch holds one of them.
  for i in range(4):
    assert sorted(np.asarray(micro[i]) // 4) == [0, 1, 2, 3]


def test_nonfinite_step_is_skipped_and_counted():
  params, batches = make_problem()
  tx = lamb_optax.lamb(0.05)
  train_step = jax.jit(step_lib.make_train_step(objective, normalizers, tx, 2))
  state = step_lib.create_train_state(params, tx, seed=0)
  bad = dict(batches[0], x=batches[0]["x"].at[3, 1].set(jnp.nan))
  new_state, metrics = train_step(state, bad)
  assert int(metrics["update_skipped"]) == 1 and int(new_state.nonfinite_in_a_row) == 1
  jax.tree.map(np.testing.assert_array_equal, new_state.params, state.params)
  jax.tree.map(np.testing.assert_array_equal, new_state.opt_state, state.opt_state)
  new_state, metrics = train_step(new_state, batches[0])
  assert int(metrics["update_skipped"]) == 0 and int(new_state.nonfinite_in_a_row) == 0


def dropout_objective(params, batch, rng, normalizers):
  """:func:`objective` with the models' position-keyed dropout on its hidden rows."""
  hidden = sharding.constrain(batch["x"] @ params["dense"]["kernel"], ("batch", None))
  pred = jnp.tanh(dropout.dropout(hidden, 0.3, rng) + params["dense"]["bias"])
  per_example = batch["w"] * jnp.sum((pred - batch["y"]) ** 2, axis=-1)
  return jnp.sum(per_example) / normalizers["weight"], {
      "weight": jnp.sum(batch["w"]), "examples": jnp.asarray(batch["w"].shape[0], jnp.float32)}


@pytest.mark.parametrize("num_devices, data_axis", [(8, "data"), (4, "data"), (8, None)])
def test_each_shard_accumulating_its_own_gradients_matches_one_device(num_devices, data_axis):
  """With dropout on: the shard's rows draw the masks they draw on one device."""
  params, batches = make_problem()
  expected_losses, expected_state, _ = run(params, batches, 4, 1, objective=dropout_objective,
                                          data_axis="data")
  losses, state, _ = run(params, batches, 4, num_devices, objective=dropout_objective,
                         data_axis=data_axis)
  np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               state.params, expected_state.params)


def test_gradients_are_summed_across_devices_once_per_step_not_per_micro_batch():
  params, batches = make_problem()
  reduced = {m: run(params, batches[:1], m, 8, data_axis="data")[2].collectives["all-reduce"]
             for m in (2, 4)}
  assert reduced[2] == reduced[4]  # the same all-reduces, however many micro-batches
  in_loop = {m: run(params, batches[:1], m, 8)[2].collectives["all-reduce"] for m in (2, 4)}
  assert in_loop[4]["count"] > in_loop[2]["count"] > reduced[2]["count"]  # XLA's own placement


def stacked_objective(last_layer):
  """:func:`objective` through BERT's parameter accesses: a scan indexing a stacked kernel,
  then its last layer taken by ``last_layer`` (BERT's ``index_in_dim``, or ``x[-1]``: a static
  slice without strides, whose transpose jax 0.10.2 cannot add into a ref)."""

  def fun(params, batch, rng, normalizers):
    del rng
    stacked = params["stacked"]
    layer = lambda h, i: (jnp.tanh(h @ jax.lax.dynamic_index_in_dim(stacked, i, keepdims=False)),
                          None)
    hidden, _ = jax.lax.scan(layer, batch["x"], jnp.arange(stacked.shape[0] - 1))
    pred = jnp.tanh(hidden @ last_layer(stacked) @ params["dense"]["kernel"])
    per_example = batch["w"] * jnp.sum((pred - batch["y"]) ** 2, axis=-1)
    return jnp.sum(per_example) / normalizers["weight"], {
        "weight": jnp.sum(batch["w"]), "examples": jnp.asarray(batch["w"].shape[0], jnp.float32)}

  return fun


_LAST_LAYER = {"index_in_dim": lambda a: jax.lax.index_in_dim(a, -1, keepdims=False),
               "static_slice": lambda a: a[-1]}


@pytest.mark.parametrize("last_layer", sorted(_LAST_LAYER))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_accumulating_into_one_buffer_matches_one_full_batch_step(dtype, last_layer, monkeypatch):
  """float32 params: each micro-batch's backward pass adds into one float32 accumulator (the
  stacked kernel's layers in place); other dtypes, and models whose transposes cannot add into
  a ref, sum the returned gradients in float32. Every way gives the full batch's step."""
  params, batches = make_problem()
  stacked = np.random.default_rng(1).normal(size=(3, 5, 5)) * 0.4
  params = jax.tree.map(lambda x: x.astype(dtype), {**params, "stacked": jnp.asarray(stacked)})
  assert step_lib._accumulates_in_place(params) == (dtype == "float32")
  in_place = []
  accumulate_into_refs = step_lib._accumulate_into_refs

  def spy(*args):
    result = accumulate_into_refs(*args)
    in_place.append(True)
    return result

  monkeypatch.setattr(step_lib, "_accumulate_into_refs", spy)
  objective_fn = stacked_objective(_LAST_LAYER[last_layer])
  expected_losses, expected_params = full_batch_reference(params, batches, objective_fn)
  tolerance = {"float32": 1e-5, "bfloat16": 2e-2}[dtype]
  for num_micro_batches, num_devices, data_axis in ((4, 1, None), (2, 8, "data")):
    losses, state, _ = run(params, batches, num_micro_batches, num_devices,
                           objective=objective_fn, data_axis=data_axis)
    np.testing.assert_allclose(losses, expected_losses, rtol=tolerance)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tolerance, atol=tolerance),
        state.params, expected_params)
  # The in-place path ran where it can (float32, index_in_dim), and only there.
  assert bool(in_place) == (dtype == "float32" and last_layer == "index_in_dim")
