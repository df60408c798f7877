"""Phase 2's optimizer state: afresh (Google's BERT, the default) or carried over from phase 1
with its step counts restarted (NVIDIA's run_pretraining.py --phase2)."""

import jax
import numpy as np
import optax
import pytest

import trainer_runs
from lamb_optax.train import checkpoint as checkpoint_lib
from lamb_optax.train import loop
from lamb_optax.train import trainer as trainer_lib


@pytest.fixture(scope="module")
def phase1(tmp_path_factory, pretraining_data_dir):
  workdir = str(tmp_path_factory.mktemp("phase1"))
  loop.train_and_evaluate(trainer_runs.small_config(
      pretraining_data_dir, num_train_steps=2, checkpoint_every_steps=2, eval_batches=0),
      workdir)
  return pretraining_data_dir, workdir


def _adam_states(opt_state):
  is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)
  return [s for s in jax.tree.leaves(opt_state, is_leaf=is_adam) if is_adam(s)]


def _phase2_state(phase1, carry):
  data_dir, workdir = phase1
  config = trainer_runs.small_config(data_dir, init_from=workdir, init_from_optimizer_state=carry)
  return trainer_lib.build(config, workdir=data_dir).fresh_state()


def test_by_default_phase2_starts_with_a_fresh_optimizer_state(phase1):
  (adam,) = _adam_states(_phase2_state(phase1, carry=False).opt_state)
  assert int(adam.count) == 0
  assert all(not np.any(np.asarray(m)) for m in jax.tree.leaves(adam.mu))


def test_nvidia_phase2_carries_the_moments_and_restarts_the_counts(phase1):
  state = _phase2_state(phase1, carry=True)
  (adam,) = _adam_states(state.opt_state)
  assert int(adam.count) == 0  # bias correction restarts, as NVIDIA sets 'step' to 0
  saved = checkpoint_lib.restore_state_parts(
      phase1[1], {"opt_state": jax.eval_shape(lambda: state.opt_state),
                  "params": jax.eval_shape(lambda: state.params)})
  (saved_adam,) = _adam_states(saved["opt_state"])
  assert int(saved_adam.count) == 2
  for carried, original in zip(jax.tree.leaves(adam.mu), jax.tree.leaves(saved_adam.mu),
                               strict=True):
    np.testing.assert_array_equal(np.asarray(carried), np.asarray(original))
  assert any(np.any(np.asarray(m)) for m in jax.tree.leaves(adam.mu))
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(saved["params"]), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
