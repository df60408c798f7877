"""Orbax checkpoints of the train state + Grain iterator: round trip, phase-2 params, refusal."""

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lamb_optax
from lamb_optax.train import checkpoint as checkpoint_lib
from lamb_optax.train import step as step_lib


def make_state(width=3, seed=0):
  rng = np.random.default_rng(seed)
  params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(width, 2)), jnp.float32),
                      "bias": jnp.zeros(2)}}
  tx = lamb_optax.lamb(1e-2)
  state = step_lib.create_train_state(params, tx, seed=seed)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, opt_state = tx.update(grads, state.opt_state, params)
  return state._replace(params=jax.tree.map(jnp.add, params, updates), opt_state=opt_state,
                        step=state.step + 1)


def abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      state)


def test_state_and_iterator_round_trip(tmp_path):
  state = make_state()
  iterator = iter(grain.MapDataset.range(100).shuffle(seed=3).batch(4).to_iter_dataset())
  for _ in range(5):
    next(iterator)
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=2)
  checkpointer.save(5, state, iterator)
  checkpointer.close()
  expected_batches = [next(iterator) for _ in range(3)]

  fresh = iter(grain.MapDataset.range(100).shuffle(seed=3).batch(4).to_iter_dataset())
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path))
  step, restored = checkpointer.restore(abstract(state), fresh)
  checkpointer.close()
  assert step == 5
  jax.tree.map(np.testing.assert_array_equal, restored, state)
  for expected in expected_batches:
    np.testing.assert_array_equal(next(fresh), expected)


def test_keeps_the_last_n(tmp_path):
  state = make_state()
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=2)
  for step in (1, 2, 3):
    checkpointer.save(step, state)
  checkpointer.close()
  assert checkpoint_lib.Checkpointer(str(tmp_path)).all_steps() == [2, 3]


def test_restore_params_for_phase_two(tmp_path):
  state = make_state()
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=2)
  checkpointer.save(7, state)
  checkpointer.close()
  params = checkpoint_lib.restore_params(str(tmp_path), abstract(state.params))
  jax.tree.map(np.testing.assert_array_equal, params, state.params)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    checkpoint_lib.restore_params(str(tmp_path / "nothing"), abstract(state.params))
  assert not (tmp_path / "nothing").exists()  # nothing is created at a mistyped init_from
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    checkpoint_lib.restore_params(str(tmp_path / "empty"), abstract(state.params))


def test_refuses_a_checkpoint_of_other_shapes(tmp_path):
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path))
  checkpointer.save(1, make_state(width=3))
  checkpointer.close()
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path))
  with pytest.raises(checkpoint_lib.ShapeMismatchError, match=r"different model.*kernel"):
    checkpointer.restore(abstract(make_state(width=4)))
  checkpointer.close()
