"""lamb_optax.lamb against the paper's Algorithm 2 (float64 NumPy), optax.lamb, and itself
stacked."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lamb_optax
from reference import lamb_np

# A mixed model with the names Flax gives: decayed kernels/embeddings, undecayed biases and
# LayerNorm parameters, and a zero-initialised kernel (the zero-norm rule).
SHAPES = {
    "embed/embedding": (11, 4),
    "dense/kernel": (4, 6),
    "dense/bias": (6,),
    "LayerNorm_0/scale": (6,),
    "LayerNorm_0/bias": (6,),
    "head/kernel": (6, 3),
    "zero_init/kernel": (3, 3),
}
DECAYED = {"embed/embedding", "dense/kernel", "head/kernel", "zero_init/kernel"}


def nest(flat):
  tree = {}
  for name, value in flat.items():
    module, leaf = name.split("/")
    tree.setdefault(module, {})[leaf] = value
  return tree


def flatten(tree):
  return {f"{m}/{k}": v for m, leaves in tree.items() for k, v in leaves.items()}


def random_problem(seed, steps, dtype=np.float64):
  rng = np.random.default_rng(seed)
  params = {n: rng.normal(size=s).astype(dtype) for n, s in SHAPES.items()}
  params["zero_init/kernel"] = np.zeros(SHAPES["zero_init/kernel"], dtype)
  params["LayerNorm_0/scale"] = np.ones(SHAPES["LayerNorm_0/scale"], dtype)
  grads = [{n: (rng.normal(size=s) * 10.0 ** rng.integers(-3, 2)).astype(dtype)
            for n, s in SHAPES.items()} for _ in range(steps)]
  return params, grads


def run_optax(tx, params, grads_per_step):
  params = jax.tree.map(jnp.asarray, nest(params))
  state = tx.init(params)
  step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p)))
  for grads in grads_per_step:
    params, state = step(params, state, jax.tree.map(jnp.asarray, nest(grads)))
  return flatten(params), state


def max_rel_err(actual, expected):
  return max(float(np.max(np.abs(np.asarray(actual[k]) - expected[k])
                         / (np.abs(expected[k]) + 1e-12)))
             for k in expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(bias_correction=False),
        dict(weight_norm_bounds=(0.5, 2.0)),
        dict(trust_ratio_bounds=(0.05, 3.0)),
        dict(weight_norm_bounds=(0.1, 1.5), trust_ratio_bounds=(0.0, 1.0), bias_correction=False,
             eps_root=1e-8, weight_decay=0.1),
        dict(trust_ratio_mask=True),
    ],
    ids=["paper", "no_bias_correction", "weight_norm_bounds", "trust_ratio_bounds", "all_knobs",
         "adapt_all"],
)
def test_matches_float64_numpy_algorithm_2(kwargs):
  params, grads = random_problem(seed=0, steps=5)
  learning_rates = [0.1 * (i + 1) / 5 for i in range(5)]  # a warmup, via a schedule
  schedule = lambda count: 0.1 * (count + 1) / 5
  adapt_all = kwargs.pop("trust_ratio_mask", None) is True
  adapt = {n: adapt_all or n in DECAYED for n in SHAPES}
  expected, _ = lamb_np.lamb(params, grads, learning_rates,
                             decay={n: n in DECAYED for n in SHAPES}, adapt=adapt, **kwargs)
  if kwargs or adapt_all:  # the knob must matter on this problem, or the test proves nothing
    paper, _ = lamb_np.lamb(params, grads, learning_rates, decay={n: n in DECAYED for n in SHAPES},
                            adapt={n: n in DECAYED for n in SHAPES})
    assert max_rel_err(paper, expected) > 1e-4
  with jax.enable_x64(True):
    tx = lamb_optax.lamb(schedule, trust_ratio_mask=True if adapt_all else None, **kwargs)
    actual, _ = run_optax(tx, params, grads)
    assert actual["dense/kernel"].dtype == jnp.float64
  assert max_rel_err(actual, expected) <= 1e-6


def test_identical_to_optax_lamb_when_every_leaf_is_adapted():
  params, grads = random_problem(seed=1, steps=4, dtype=np.float32)
  decay_mask = lamb_optax.path_mask(exclude=(r"bias$", r"LayerNorm"))
  ours, _ = run_optax(
      lamb_optax.lamb(1e-2, weight_decay=0.05, weight_decay_mask=decay_mask, trust_ratio_mask=True),
      params, grads)
  theirs, _ = run_optax(optax.lamb(1e-2, weight_decay=0.05, mask=decay_mask), params, grads)
  for name in SHAPES:
    np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_default_masks_follow_the_bert_recipes():
  """Biases/LayerNorm: no decay and no adaptation, i.e. plain Adam steps."""
  params, grads = random_problem(seed=2, steps=3, dtype=np.float32)
  ours, _ = run_optax(lamb_optax.lamb(1e-2), params, grads)
  adam, _ = run_optax(optax.adam(1e-2, eps=1e-6), params, grads)
  for name in ("dense/bias", "LayerNorm_0/scale", "LayerNorm_0/bias"):
    np.testing.assert_allclose(ours[name], adam[name], rtol=1e-6, err_msg=name)
  assert not np.allclose(ours["dense/kernel"], adam["dense/kernel"])


def stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def test_stacked_layers_update_exactly_like_separate_layers():
  num_layers = 3
  rng = np.random.default_rng(3)
  layer = lambda: {"dense": {"kernel": rng.normal(size=(4, 4)) * rng.uniform(0.1, 3),
                             "bias": rng.normal(size=4)},
                   "LayerNorm_0": {"scale": rng.normal(size=4), "bias": rng.normal(size=4)}}
  as_f32 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), t)
  layers = [as_f32(layer()) for _ in range(num_layers)]
  head = as_f32({"kernel": rng.normal(size=(4, 2))})
  grads = [([as_f32(layer()) for _ in range(num_layers)],
            as_f32({"kernel": rng.normal(size=(4, 2))}))
           for _ in range(4)]

  separate = {"layers": {str(i): layer for i, layer in enumerate(layers)}, "head": head}
  stacked = {"layers": stack(layers), "head": head}
  tx_separate = lamb_optax.lamb(0.05, weight_decay=0.1)
  tx_stacked = lamb_optax.lamb(0.05, weight_decay=0.1, stacked_axes={"layers": 1, "head": 0})
  s_sep, s_stk = tx_separate.init(separate), tx_stacked.init(stacked)
  for layer_grads, head_grad in grads:
    g_sep = {"layers": {str(i): g for i, g in enumerate(layer_grads)}, "head": head_grad}
    g_stk = {"layers": stack(layer_grads), "head": head_grad}
    u, s_sep = tx_separate.update(g_sep, s_sep, separate)
    separate = optax.apply_updates(separate, u)
    u, s_stk = tx_stacked.update(g_stk, s_stk, stacked)
    stacked = optax.apply_updates(stacked, u)

  expected = {"layers": stack([separate["layers"][str(i)] for i in range(num_layers)]),
              "head": separate["head"]}
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               stacked, expected)
  ratios = lamb_optax.trust_ratios(s_stk)
  assert ratios["layers/dense/kernel"].shape == (num_layers,)
  separate_ratios = lamb_optax.trust_ratios(s_sep)
  np.testing.assert_allclose(
      ratios["layers/dense/kernel"],
      [separate_ratios[f"layers/{i}/dense/kernel"] for i in range(num_layers)], rtol=1e-6)


def test_stacked_ratios_match_numpy_reference():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(2, 3, 5, 4)) * np.array([0.1, 5.0])[:, None, None, None]
  u = rng.normal(size=x.shape)
  expected, expected_ratios = lamb_np.layerwise_scale(x, u, stacked_axes=2)
  tx = lamb_optax.scale_by_trust_ratio(stacked_axes=2)
  with jax.enable_x64(True):
    actual, state = tx.update(jnp.asarray(u), tx.init(jnp.asarray(x)), jnp.asarray(x))
    np.testing.assert_allclose(actual, expected, rtol=1e-12)
    np.testing.assert_allclose(state.ratios, expected_ratios, rtol=1e-12)


def test_zero_norm_rule_gives_ratio_one():
  tx = lamb_optax.scale_by_trust_ratio()
  params = {"zero_param": jnp.zeros(3), "zero_update": jnp.ones(3), "both": jnp.ones(3)}
  updates = {"zero_param": jnp.full(3, 2.0), "zero_update": jnp.zeros(3), "both": jnp.full(3, 2.0)}
  scaled, state = tx.update(updates, tx.init(params), params)
  np.testing.assert_array_equal(scaled["zero_param"], updates["zero_param"])
  np.testing.assert_array_equal(scaled["zero_update"], jnp.zeros(3))
  np.testing.assert_allclose(scaled["both"], jnp.ones(3))  # ratio ‖x‖/‖u‖ = 1/2
  assert lamb_optax.trust_ratios(state) == {"both": 0.5, "zero_param": 1.0, "zero_update": 1.0}


def test_all_zero_gradient():
  """Zero gradients leave Adam's r at 0: decayed leaves shrink by η (ratio ‖x‖/‖λx‖ = 1/λ
  turns the decay λx into x), undecayed ones stay (zero update, ratio 1)."""
  params = {"dense": {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full(2, 1.0)}}
  tx = lamb_optax.lamb(0.1, weight_decay=0.01)
  updates, state = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(updates["dense"]["kernel"], -0.1 * params["dense"]["kernel"],
                             rtol=1e-6)
  np.testing.assert_array_equal(updates["dense"]["bias"], jnp.zeros(2))
  np.testing.assert_allclose(lamb_optax.trust_ratios(state)["dense/kernel"], 100.0, rtol=1e-6)


def test_nonfinite_gradients_propagate_unless_wrapped_in_apply_if_finite():
  params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
  bad = {"dense": {"kernel": jnp.array([[1.0, jnp.nan], [1.0, 1.0]]),
                   "bias": jnp.array([jnp.inf, 1.0])}}
  tx = lamb_optax.lamb(0.1)
  updates, _ = tx.update(bad, tx.init(params), params)
  # The whole layer: its norm is NaN.
  assert not np.isfinite(np.asarray(updates["dense"]["kernel"])).any()

  guarded = optax.apply_if_finite(lamb_optax.lamb(0.1), max_consecutive_errors=3)
  state = guarded.init(params)
  updates, state = guarded.update(bad, state, params)
  jax.tree.map(lambda u: np.testing.assert_array_equal(u, jnp.zeros_like(u)), updates)
  assert int(state.notfinite_count) == 1
  good = jax.tree.map(jnp.ones_like, params)
  updates, state = guarded.update(good, state, params)
  assert int(state.notfinite_count) == 0
  # The bad step left no trace in the moments.
  expected, _ = tx.update(good, tx.init(params), params)
  jax.tree.map(np.testing.assert_allclose, updates, expected)


def test_multisteps_equals_one_step_on_the_mean_gradient():
  params, grads = random_problem(seed=5, steps=4, dtype=np.float32)
  params = jax.tree.map(jnp.asarray, nest(params))
  grads = [jax.tree.map(jnp.asarray, nest(g)) for g in grads]
  tx = optax.MultiSteps(lamb_optax.lamb(1e-2), every_k_schedule=4)
  state = tx.init(params)
  p = params
  for g in grads:
    u, state = tx.update(g, state, p)
    p = optax.apply_updates(p, u)
  plain = lamb_optax.lamb(1e-2)
  mean = jax.tree.map(lambda *g: sum(g) / len(g), *grads)
  u, _ = plain.update(mean, plain.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p,
               optax.apply_updates(params, u))
  assert set(lamb_optax.trust_ratios(state)) == DECAYED


def test_bfloat16_params_and_moments():
  params32, grads = random_problem(seed=6, steps=3, dtype=np.float32)
  params16 = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), nest(params32))
  tx = lamb_optax.lamb(1e-2, mu_dtype=jnp.bfloat16)
  state = tx.init(params16)
  for g in grads:
    u, state = jax.jit(tx.update)(jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), nest(g)),
                                  state, params16)
    params16 = optax.apply_updates(params16, u)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params16))
  assert all(m.dtype == jnp.bfloat16 for m in jax.tree.leaves(state[0].mu))
  reference, _ = run_optax(lamb_optax.lamb(1e-2), params32, grads)
  for name, value in flatten(params16).items():
    np.testing.assert_allclose(np.asarray(value, np.float32), reference[name], rtol=0.05, atol=0.02)


def test_sharded_params_give_the_unsharded_result():
  assert jax.device_count() == 8, "tests run with 8 fake CPU devices (see conftest.py)"
  mesh = jax.make_mesh((4, 2), ("data", "model"))
  P = jax.sharding.PartitionSpec
  rng = np.random.default_rng(7)
  params = {"embed": {"embedding": rng.normal(size=(16, 8))},
            "layers": {"dense": {"kernel": rng.normal(size=(3, 8, 4)),
                                 "bias": rng.normal(size=(3, 4))}}}
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  specs = {"embed": {"embedding": P("data", "model")},
           "layers": {"dense": {"kernel": P(None, "data", "model"), "bias": P(None, "model")}}}
  grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
           for _ in range(3)]
  tx = lamb_optax.lamb(0.05, stacked_axes={"embed": 0, "layers": 1})

  def train(params, shardings):
    put = (lambda t: jax.device_put(t, shardings)) if shardings else (lambda t: t)
    params = put(params)
    state = tx.init(params)
    step = jax.jit(
        lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p)))
    for g in grads:
      params, state = step(params, state, put(g))
    return params, state

  shardings = jax.tree.map(lambda s: jax.sharding.NamedSharding(mesh, s), specs)
  sharded, sharded_state = train(params, shardings)
  assert sharded["layers"]["dense"]["kernel"].sharding.is_equivalent_to(
      shardings["layers"]["dense"]["kernel"], 3)
  assert sharded_state[0].mu["embed"]["embedding"].sharding.is_equivalent_to(
      shardings["embed"]["embedding"], 2)
  unsharded, _ = train(params, None)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               sharded, unsharded)


def test_trust_ratios_are_logged_per_leaf():
  params, grads = random_problem(seed=8, steps=1, dtype=np.float32)
  _, state = run_optax(lamb_optax.lamb(1e-2), params, grads)
  ratios = lamb_optax.trust_ratios(state)
  assert set(ratios) == DECAYED
  expected_u = lamb_np.lamb(params, grads, [1e-2], decay={n: n in DECAYED for n in SHAPES},
                            adapt={n: n in DECAYED for n in SHAPES})[1][0]
  for name, ratio in ratios.items():
    np.testing.assert_allclose(ratio, expected_u[name], rtol=1e-5, err_msg=name)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(learning_rate=math.nan), "learning_rate"),
        (dict(learning_rate=1.0, eps=-1e-6), "eps"),
        (dict(learning_rate=1.0, eps_root=math.inf), "eps_root"),
        (dict(learning_rate=1.0, weight_decay=-0.01), "weight_decay"),
        (dict(learning_rate=1.0, b1=1.0), "b1"),
        (dict(learning_rate=1.0, b2=-0.1), "b2"),
        (dict(learning_rate=1.0, weight_norm_bounds=(2.0, 1.0)), "weight_norm_bounds"),
        (dict(learning_rate=1.0, trust_ratio_bounds=(-1.0, 1.0)), "trust_ratio_bounds"),
        (dict(learning_rate=1.0, mu_dtype=jnp.int32), "mu_dtype"),
    ],
)
def test_bad_hyperparameters_fail_at_construction(kwargs, message):
  with pytest.raises((ValueError, TypeError), match=message):
    lamb_optax.lamb(**kwargs)


def test_bad_masks_and_stacked_axes_fail_at_init():
  params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
  with pytest.raises(ValueError, match="weight_decay_mask"):
    lamb_optax.lamb(1.0, weight_decay_mask={"other": True}).init(params)
  with pytest.raises(ValueError, match="trust_ratio_mask"):
    lamb_optax.lamb(1.0, trust_ratio_mask={"dense": {"kernel": True}}).init(params)
  with pytest.raises(ValueError, match="stacked_axes"):
    lamb_optax.lamb(1.0, stacked_axes={"conv": 1}).init(params)
  with pytest.raises(ValueError, match=r"stacked_axes.*rank 1"):
    lamb_optax.lamb(1.0, stacked_axes={"dense": {"kernel": 1, "bias": 2}}).init(params)
  with pytest.raises(TypeError, match="stacked_axes"):
    lamb_optax.lamb(1.0, stacked_axes={"dense": 0.5}).init(params)
