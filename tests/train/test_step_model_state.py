"""The step's optional non-trainable state: only "params" are optimised; the state's sums add over
micro-batches and update once per step, the same on every layout."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lamb_optax.train import step as step_lib

P = jax.sharding.PartitionSpec


def objective(params, batch, rng, normalizers):
  """Squared error of a linear model; the 'state' sum is the micro-batch's mean input."""
  del rng
  pred = batch["x"] @ params["params"]["w"]
  loss = jnp.sum((pred - batch["y"]) ** 2) / normalizers["n"]
  return loss, {"n": jnp.asarray(batch["x"].shape[0], jnp.float32),
                step_lib.MODEL_STATE: {"mean": jnp.mean(batch["x"], axis=0)}}


def update(running, summed, count):
  return jax.tree.map(lambda r, s: 0.5 * r + 0.5 * s / count, running, summed)


def run(num_micro_batches, devices):
  rng = np.random.default_rng(0)
  params = {"params": {"w": jnp.ones((3, 1))}, step_lib.MODEL_STATE: {"mean": jnp.zeros(3)}}
  batch = {"x": jnp.asarray(rng.normal(size=(16, 3)), jnp.float32),
           "y": jnp.asarray(rng.normal(size=(16, 1)), jnp.float32)}
  tx = optax.sgd(0.1)
  mesh = jax.make_mesh((devices,), ("data",), devices=jax.devices()[:devices],
                       axis_types=(jax.sharding.AxisType.Auto,))
  data = jax.sharding.NamedSharding(mesh, P("data"))
  train_step = jax.jit(step_lib.make_train_step(
      objective, lambda b: {"n": jnp.asarray(b["x"].shape[0], jnp.float32)}, tx,
      num_micro_batches, update_model_state=update))
  state = step_lib.create_train_state(params, tx, seed=0)
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(tx.init(params["params"]))
  state, metrics = train_step(state, jax.device_put(batch, data))
  assert step_lib.MODEL_STATE not in metrics
  return state, batch


def test_model_state_updates_once_per_step_by_the_mean_over_micro_batches():
  one, batch = run(num_micro_batches=1, devices=1)
  expected = 0.5 * np.mean(np.asarray(batch["x"]), axis=0)
  np.testing.assert_allclose(one.params[step_lib.MODEL_STATE]["mean"], expected, rtol=1e-6)
  for m, d in [(4, 1), (1, 4), (2, 2)]:
    other, _ = run(num_micro_batches=m, devices=d)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), other.params,
                 one.params)
