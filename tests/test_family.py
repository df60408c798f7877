"""LARS, NVLAMB, N-LAMB/NN-LAMB and the AdamW baseline against float64 NumPy transcriptions."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lamb_optax
from reference import family_np
from test_lamb import DECAYED
from test_lamb import SHAPES
from test_lamb import max_rel_err
from test_lamb import random_problem
from test_lamb import run_optax

DECAY = {n: n in DECAYED for n in SHAPES}
STEPS = 5
LRS = [0.1 * (i + 1) / STEPS for i in range(STEPS)]


def schedule(count):
  return 0.1 * (count + 1) / STEPS


def run64(tx, params, grads):
  with jax.enable_x64(True):
    actual, state = run_optax(tx, params, grads)
    assert actual["dense/kernel"].dtype == jnp.float64
  return actual, state


@pytest.mark.parametrize("ratio_before_momentum", [False, True])
def test_lars_matches_algorithm_1(ratio_before_momentum):
  params, grads = random_problem(seed=10, steps=STEPS)
  expected = family_np.lars(params, grads, LRS, weight_decay=0.05, decay=DECAY, adapt=DECAY,
                            ratio_before_momentum=ratio_before_momentum)
  actual, _ = run64(lamb_optax.lars(schedule, weight_decay=0.05,
                                    ratio_before_momentum=ratio_before_momentum), params, grads)
  assert max_rel_err(actual, expected) <= 1e-6


def test_lars_orderings_differ_and_ratio_before_momentum_is_optax_lars_up_to_dampening():
  params, grads = random_problem(seed=11, steps=STEPS)
  a = family_np.lars(params, grads, LRS, decay=DECAY, adapt=DECAY)
  b = family_np.lars(params, grads, LRS, decay=DECAY, adapt=DECAY, ratio_before_momentum=True)
  assert max_rel_err(a, b) > 1e-3
  # optax.lars: m = β m + ratio·(g+λx), no (1-β): ours with lr/(1-β) takes the same steps.
  everything = lambda p: jax.tree.map(lambda _: True, p)
  ours, _ = run64(lamb_optax.lars(0.01 / 0.1, momentum=0.9, weight_decay=0.05,
                                  weight_decay_mask=True, trust_ratio_mask=True,
                                  ratio_before_momentum=True), params, grads)
  with jax.enable_x64(True):
    theirs, _ = run_optax(optax.lars(0.01, weight_decay=0.05, momentum=0.9,
                                     weight_decay_mask=everything, trust_ratio_mask=everything,
                                     trust_coefficient=1.0, eps=0.0), params, grads)
  for name in SHAPES:
    if name != "zero_init/kernel":  # optax.lars gives ratio 0 there instead of 1 (zero norm rule)
      np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-9, err_msg=name)


@pytest.mark.parametrize("adapt_all_leaves", [False, True], ids=["recipe", "use_nvlamb"])
@pytest.mark.parametrize("bias_correction", [True, False])
def test_nvlamb_clips_globally_and_adapts_like_apex(bias_correction, adapt_all_leaves):
  """Default: adapt only decayed leaves (apex use_nvlamb=False, NVIDIA's BERT recipe);
  adapt_all_leaves=True: every leaf (use_nvlamb=True)."""
  params, grads = random_problem(seed=12, steps=STEPS)
  total = np.sqrt(sum(np.sum(g ** 2) for g in grads[0].values()))
  assert total > 1.0  # clipping must be active or the test proves nothing
  adapt = {n: True for n in SHAPES} if adapt_all_leaves else DECAY
  expected = family_np.nvlamb(params, grads, LRS, max_grad_norm=1.0, decay=DECAY, adapt=adapt,
                              bias_correction=bias_correction)
  unclipped = family_np.nvlamb(params, grads, LRS, max_grad_norm=np.inf, decay=DECAY,
                               adapt=adapt, bias_correction=bias_correction)
  assert max_rel_err(unclipped, expected) > 1e-4
  actual, _ = run64(lamb_optax.nvlamb(schedule, bias_correction=bias_correction,
                                      adapt_all_leaves=adapt_all_leaves), params, grads)
  assert max_rel_err(actual, expected) <= 1e-6


@pytest.mark.parametrize("nesterov_second_moment", [False, True], ids=["nlamb", "nnlamb"])
def test_nesterov_variants(nesterov_second_moment):
  params, grads = random_problem(seed=13, steps=STEPS)
  expected = family_np.nesterov_lamb(params, grads, LRS, decay=DECAY, adapt=DECAY,
                                     nesterov_second_moment=nesterov_second_moment)
  other = family_np.nesterov_lamb(params, grads, LRS, decay=DECAY, adapt=DECAY,
                                  nesterov_second_moment=not nesterov_second_moment)
  assert max_rel_err(other, expected) > 1e-6
  alias = lamb_optax.nnlamb if nesterov_second_moment else lamb_optax.nlamb
  actual, _ = run64(alias(schedule), params, grads)
  assert max_rel_err(actual, expected) <= 1e-6


@pytest.mark.parametrize("b1, b2", [(0.9, 0.999), (0.975, 0.999)])
def test_nlamb_moment_is_optax_nadam(b1, b2):
  """N-LAMB's r = m̂/(sqrt(v̂)+ε) is optax's Nadam (scale_by_adam(nesterov=True): Dozat 2016
  with constant b1), step for step in float64; NN-LAMB's differs from it (its v̂ looks ahead)."""
  params, grads = random_problem(seed=15, steps=STEPS)
  with jax.enable_x64(True):
    ours = lamb_optax.transforms.scale_by_nesterov_adam(b1, b2, 1e-6)
    theirs = optax.scale_by_adam(b1, b2, 1e-6, nesterov=True)
    nn = lamb_optax.transforms.scale_by_nesterov_adam(b1, b2, 1e-6, nesterov_second_moment=True)
    x = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    states = [tx.init(x) for tx in (ours, theirs, nn)]
    for step_grads in grads:
      g = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), step_grads)
      (a, s0), (b, s1), (c, s2) = (
          tx.update(g, st) for tx, st in zip((ours, theirs, nn), states, strict=True))
      states = [s0, s1, s2]
      assert max_rel_err(a, jax.tree.map(np.asarray, b)) <= 1e-12
      assert max_rel_err(c, jax.tree.map(np.asarray, b)) > 1e-6


def test_adamw_baseline_matches_adamw_with_the_lamb_masks():
  params, grads = random_problem(seed=14, steps=STEPS)
  expected = family_np.adamw(params, grads, LRS, weight_decay=0.1, decay=DECAY)
  actual, _ = run64(lamb_optax.adamw_baseline(schedule, weight_decay=0.1), params, grads)
  assert max_rel_err(actual, expected) <= 1e-6


@pytest.mark.parametrize("alias", [lamb_optax.lars, lamb_optax.nvlamb, lamb_optax.nlamb,
                                   lamb_optax.nnlamb])
def test_stacked_layers_equal_separate_layers(alias):
  rng = np.random.default_rng(3)
  layers = [{"w": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}}
            for _ in range(2)]
  grads = [{"w": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}}
           for _ in range(2)]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  g_stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *grads)
  kwargs = dict(max_grad_norm=None) if alias is lamb_optax.nvlamb else {}  # clip is global
  tx = alias(0.1, stacked_axes=1, **kwargs)
  u, _ = tx.update(g_stacked, tx.init(stacked), stacked)
  for i in range(2):
    tx1 = alias(0.1, **kwargs)
    ui, _ = tx1.update(grads[i], tx1.init(layers[i]), layers[i])
    np.testing.assert_allclose(u["w"]["kernel"][i], ui["w"]["kernel"], rtol=1e-5)


@pytest.mark.parametrize("build, match", [
    (lambda: lamb_optax.lars(0.1, momentum=1.5), "momentum"),
    (lambda: lamb_optax.lars(-0.1), "learning_rate"),
    (lambda: lamb_optax.nvlamb(0.1, max_grad_norm=-1.0), "max_grad_norm"),
    (lambda: lamb_optax.nlamb(0.1, b2=1.0), "b2"),
    (lambda: lamb_optax.adamw_baseline(0.1, weight_decay=-0.01), "weight_decay"),
])
def test_bad_input(build, match):
  with pytest.raises(ValueError, match=match):
    build()
