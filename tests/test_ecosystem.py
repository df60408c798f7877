"""lamb_optax.lamb where optax optimizers go: nnx.Optimizer, Linen's TrainState, a plain optax loop,
any params container, optax.inject_hyperparams, optax.tree_map_params and meta-gradients.

Every run is checked against the float64 NumPy transcription of the paper's Algorithm 2
(tests/reference/lamb_np.py) or against the same optimizer on plain dict params.
"""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import lamb_optax
from lamb_optax import masks
from reference import lamb_np

# A stacked encoder (3 layers of different scales, so per-layer ratios differ), an embedding and a
# head; biases undecayed and unadapted.
SHAPES = {
    "embed/embedding": (6, 4),
    "layers/kernel": (3, 4, 4),
    "layers/bias": (3, 4),
    "head/kernel": (4, 2),
    "head/bias": (2,),
}
DECAY_MASK = {"embed": {"embedding": True}, "layers": {"kernel": True, "bias": False},
              "head": {"kernel": True, "bias": False}}
DECAYED = {"embed/embedding", "layers/kernel", "head/kernel"}
# The README's stacked_axes callable.
README_STACKED_AXES = lambda p: {k: int(k == "layers") for k in p}
LR = 0.05


def flat(tree: Any) -> dict[str, np.ndarray]:
  return {masks.path_to_str(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def nest(flat_tree: dict[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for name, value in flat_tree.items():
    *modules, leaf = name.split("/")
    node = tree
    for module in modules:
      node = node.setdefault(module, {})
    node[leaf] = jnp.asarray(value)
  return tree


def random_problem(seed: int, steps: int, shapes=SHAPES):
  rng = np.random.default_rng(seed)
  params = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
  for value in params.values():
    if value.ndim == 3:  # one scale per stacked layer
      value *= np.array([0.1, 1.0, 4.0], np.float32)[:, None, None]
  grads = [{n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
           for _ in range(steps)]
  return params, grads


def reference(params, grads, learning_rates, decayed=DECAYED):
  """Float64 NumPy LAMB (paper's Algorithm 2) on flat dicts, ``layers/*`` stacked on axis 0."""
  selected = {n: n in decayed for n in params}
  return lamb_np.lamb(params, grads, learning_rates, decay=selected, adapt=selected,
                      stacked_axes={n: int(n.startswith("layers/")) for n in params})


def assert_params_close(actual: dict, expected: dict):
  assert set(actual) == set(expected)
  for name in expected:
    np.testing.assert_allclose(actual[name], expected[name], rtol=2e-5, atol=2e-6, err_msg=name)


def assert_ratios_close(opt_state, expected: dict):
  ratios = lamb_optax.trust_ratios(opt_state)
  assert set(ratios) == set(expected)
  for name, value in expected.items():
    assert np.shape(ratios[name]) == np.shape(value), name
    np.testing.assert_allclose(ratios[name], value, rtol=2e-5, err_msg=name)
  # The stacked layers have different scales, so one shared norm would give equal ratios.
  assert len(set(np.round(np.asarray(ratios["layers/kernel"]), 4))) == 3


# --- framework entry points --------------------------------------------------------------------

class _Node(nnx.Module):

  def __init__(self, arrays):
    for name, value in arrays.items():
      setattr(self, name, nnx.Param(jnp.asarray(value)))


class _Tiny(nnx.Module):

  def __init__(self, nested):
    for name, arrays in nested.items():
      setattr(self, name, _Node(arrays))


def test_nnx_optimizer_with_a_dict_mask_and_stacked_axes_callable():
  params, grads = random_problem(seed=0, steps=3)
  model = _Tiny(nest(params))
  tx = lamb_optax.lamb(LR, weight_decay_mask=DECAY_MASK, stacked_axes=README_STACKED_AXES)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  def loss(model, coefficients):  # linear, so the gradient is `coefficients`
    return sum(jnp.vdot(coefficients[m][k], getattr(getattr(model, m), k)[...])
               for m, leaves in coefficients.items() for k in leaves)

  @nnx.jit
  def step(model, optimizer, coefficients):
    optimizer.update(model, nnx.grad(loss)(model, coefficients))

  for g in grads:
    step(model, optimizer, nest(g))
  expected, history = reference(params, grads, [LR] * 3)
  assert_params_close(flat(nnx.state(model, nnx.Param)), expected)
  assert_ratios_close(optimizer.opt_state, history[-1])


class _Block(nn.Module):

  @nn.compact
  def __call__(self, x, _):
    return nn.tanh(nn.Dense(4, name="dense")(x)), None


class _LinenTiny(nn.Module):

  @nn.compact
  def __call__(self, ids):
    x = nn.Embed(6, 4, name="embed")(ids)
    layers = nn.scan(_Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
    x, _ = layers(name="layers")(x, None)
    return nn.Dense(2, name="head")(x)


def test_linen_train_state_with_frozen_params_and_a_dict_mask():
  model = _LinenTiny()
  ids = jnp.array([0, 3, 5, 1])
  params = flax.core.freeze(model.init(jax.random.key(0), ids)["params"])
  assert jnp.shape(params["layers"]["dense"]["kernel"]) == (3, 4, 4)
  mask = {"embed": True, "layers": {"dense": {"kernel": True, "bias": False}},
          "head": {"kernel": True, "bias": False}}
  state = train_state.TrainState.create(
      apply_fn=model.apply, params=params,
      tx=lamb_optax.lamb(LR, weight_decay_mask=mask, stacked_axes=README_STACKED_AXES))
  loss = lambda p, ids: jnp.sum(jnp.sin(state.apply_fn({"params": p}, ids)))

  @jax.jit
  def step(state, ids):
    grads = jax.grad(loss)(state.params, ids)
    return state.apply_gradients(grads=grads), grads

  initial, used_grads = flat(params), []
  for i in range(3):
    state, grads = step(state, (ids + i) % 6)
    assert isinstance(grads, flax.core.FrozenDict)
    used_grads.append(flat(grads))
  decayed = {"embed/embedding", "layers/dense/kernel", "head/kernel"}
  expected, history = lamb_np.lamb(
      initial, used_grads, [LR] * 3, decay={n: n in decayed for n in initial},
      adapt={n: n in decayed for n in initial},
      stacked_axes={n: int(n.startswith("layers/")) for n in initial})
  assert_params_close(flat(state.params), expected)
  ratios = lamb_optax.trust_ratios(state.opt_state)
  assert set(ratios) == decayed and ratios["layers/dense/kernel"].shape == (3,)
  for name in decayed:
    np.testing.assert_allclose(ratios[name], history[-1][name], rtol=2e-5, err_msg=name)


def test_plain_optax_loop_as_in_the_readme():
  params, grads = random_problem(seed=1, steps=3)
  schedule = optax.linear_schedule(0.01, 0.05, transition_steps=2)
  tx = lamb_optax.lamb(learning_rate=schedule, weight_decay=0.01,
                       stacked_axes=README_STACKED_AXES)  # default mask: no biases
  p = nest(params)
  state = tx.init(p)
  for g in grads:
    updates, state = jax.jit(tx.update)(nest(g), state, p)
    p = optax.apply_updates(p, updates)
  expected, history = reference(params, grads, [float(schedule(t)) for t in range(3)])
  assert_params_close(flat(p), expected)
  assert_ratios_close(state, history[-1])


# --- 1. any params container -------------------------------------------------------------------

@flax.struct.dataclass
class _Params:
  embed: Any
  layers: Any
  head: Any


def _run(tx, params, grads):
  state = tx.init(params)
  step = jax.jit(tx.update)
  for g in grads:
    updates, state = step(g, state, params)
  return flat(updates), state


@pytest.mark.parametrize("container", [
    lambda t: nnx.state(_Tiny(t), nnx.Param),  # what nnx.Optimizer hands the optimizer
    nnx.State,
    flax.core.freeze,
    lambda t: _Params(**t),
], ids=["nnx_state_of_params", "nnx_state", "frozen_dict", "struct_dataclass"])
def test_dict_mask_and_stacked_axes_match_any_params_container(container):
  params, grads = random_problem(seed=2, steps=2)
  # A dict, not the README's callable: that one iterates keys, which a dataclass has not.
  tx = lamb_optax.lamb(LR, weight_decay_mask=DECAY_MASK,
                       stacked_axes={"embed": 0, "layers": 1, "head": 0})
  expected_updates, expected_state = _run(tx, nest(params), [nest(g) for g in grads])
  updates, state = _run(tx, container(nest(params)), [container(nest(g)) for g in grads])
  assert_params_close(updates, expected_updates)
  expected_ratios = lamb_optax.trust_ratios(expected_state)
  assert_ratios_close(state, {k: np.asarray(v) for k, v in expected_ratios.items()})
  summary = lamb_optax.trust_ratio_summary(state, container(nest(params)))
  np.testing.assert_allclose(summary["layer_2/ratio_max"], expected_ratios["layers/kernel"][2],
                             rtol=1e-6)


def test_inside_multi_transform_with_masked_node_holes():
  params, grads = random_problem(seed=3, steps=2)
  labels = {"embed": "sgd", "layers": "lamb", "head": "lamb"}
  # The full mask, "embed" included: there the inner optimizer sees a MaskedNode hole.
  inner = lamb_optax.lamb(LR, weight_decay_mask=DECAY_MASK, stacked_axes=README_STACKED_AXES)
  tx = optax.multi_transform({"lamb": inner, "sgd": optax.sgd(LR)}, labels)
  updates, state = _run(tx, nest(params), [nest(g) for g in grads])
  sub = lambda t: {k: v for k, v in nest(t).items() if k != "embed"}
  alone = lamb_optax.lamb(LR, weight_decay_mask={k: v for k, v in DECAY_MASK.items()
                                                 if k != "embed"},
                          stacked_axes=README_STACKED_AXES)
  expected, expected_state = _run(alone, sub(params), [sub(g) for g in grads])
  assert_params_close({k: v for k, v in updates.items() if not k.startswith("embed")}, expected)
  np.testing.assert_allclose(updates["embed/embedding"], -LR * grads[-1]["embed/embedding"],
                             rtol=1e-6)
  assert_ratios_close(state, lamb_optax.trust_ratios(expected_state))


@pytest.mark.parametrize("mask, message", [
    ({"embed": True, "layers": {"kernel": True, "bais": False}, "head": True},
     r"`weight_decay_mask` has \['bais'\] at 'layers', which the params lack"),
    ({"embed": True, "layers": {"kernel": True}, "head": True},
     r"`weight_decay_mask` has no entry for the params' 'layers/bias'"),
])
def test_mismatching_mask_gives_a_short_error_naming_the_path(mask, message):
  params = nnx.state(_Tiny(nest(random_problem(seed=4, steps=0)[0])), nnx.Param)
  with pytest.raises(ValueError, match=message) as error:
    lamb_optax.lamb(LR, weight_decay_mask=mask).init(params)
  assert len(str(error.value)) < 200


# --- 2. optax.inject_hyperparams keeps callables -----------------------------------------------

@pytest.mark.parametrize("static_args", [(), ("stacked_axes", "weight_decay_mask")],
                         ids=["no_static_args", "static_args"])
def test_inject_hyperparams_keeps_per_layer_ratios_and_callable_masks(static_args):
  params, grads = random_problem(seed=5, steps=3)
  tx = optax.inject_hyperparams(lamb_optax.lamb, static_args=static_args)(
      learning_rate=0.01, stacked_axes=README_STACKED_AXES,
      weight_decay_mask=lamb_optax.path_mask(exclude=(r"bias$",)))
  p = nest(params)
  state = tx.init(p)
  state.hyperparams["learning_rate"] = jnp.asarray(LR)  # injected: no recompilation
  step = jax.jit(tx.update)
  for g in grads:
    updates, state = step(nest(g), state, p)
    p = optax.apply_updates(p, updates)
  expected, history = reference(params, grads, [LR] * 3)
  assert_params_close(flat(p), expected)
  assert_ratios_close(state, history[-1])


def test_inject_hyperparams_keeps_int_stacked_axes_and_mu_dtype_static():
  params = {"layers": {"kernel": jnp.ones((3, 2, 2)) * jnp.array([1.0, 2.0, 3.0])[:, None, None]}}
  tx = optax.inject_hyperparams(lamb_optax.lamb)(
      learning_rate=LR, stacked_axes=1, mu_dtype=jnp.bfloat16)
  updates, state = jax.jit(tx.update)(params, tx.init(params), params)
  assert state.inner_state[0].mu["layers"]["kernel"].dtype == jnp.bfloat16
  ratios = lamb_optax.trust_ratios(state)["layers/kernel"]
  # Adam's first step is sign(g) = 1 everywhere, plus λx: per layer ‖x‖/‖1 + λx‖.
  x = np.array([1.0, 2.0, 3.0])
  np.testing.assert_allclose(ratios, 2 * x / (2 * (1 + 0.01 * x)), rtol=1e-5)


# --- 3. optax.tree_map_params: state shardings from the params' ---------------------------------

def test_tree_map_params_shards_the_state_like_the_params():
  assert jax.device_count() == 8, "tests run with 8 fake CPU devices (see conftest.py)"
  mesh = jax.make_mesh((4, 2), ("data", "model"))
  P = jax.sharding.PartitionSpec
  params, grads = random_problem(seed=6, steps=2, shapes={
      "embed/embedding": (8, 4), "layers/kernel": (3, 8, 4), "layers/bias": (3, 4),
      "head/kernel": (4, 2), "head/bias": (2,)})
  specs = {"embed": {"embedding": P("data", "model")},
           "layers": {"kernel": P(None, "data", "model"), "bias": P(None, "model")},
           "head": {"kernel": P("data"), "bias": P()}}
  param_shardings = jax.tree.map(lambda s: jax.sharding.NamedSharding(mesh, s), specs)
  replicated = jax.sharding.NamedSharding(mesh, P())
  tx = lamb_optax.lamb(LR, stacked_axes=README_STACKED_AXES)
  p = jax.device_put(nest(params), param_shardings)
  abstract_state = jax.eval_shape(tx.init, p)
  state_shardings = optax.tree_map_params(
      tx, lambda _, sharding: sharding, abstract_state, param_shardings,
      transform_non_params=lambda _: replicated)
  state = jax.device_put(tx.init(p), state_shardings)
  assert state[0].mu["layers"]["kernel"].sharding.is_equivalent_to(
      param_shardings["layers"]["kernel"], 3)
  step = jax.jit(tx.update, out_shardings=(param_shardings, state_shardings))
  for g in grads:
    updates, state = step(jax.device_put(nest(g), param_shardings), state, p)
    p = optax.apply_updates(p, updates)
  assert state[0].nu["embed"]["embedding"].sharding.is_equivalent_to(
      param_shardings["embed"]["embedding"], 2)
  expected, history = reference(params, grads, [LR] * 2)
  assert_params_close(flat(p), expected)
  assert_ratios_close(state, history[-1])


# --- 4. meta-gradients through update ----------------------------------------------------------

def test_meta_gradient_is_finite_at_a_zero_norm_leaf_and_matches_optax_lamb():
  params = {"zero": {"kernel": jnp.zeros((2, 3))},  # stays zero: ‖x‖ = ‖u‖ = 0 at every step
            "dense": {"kernel": jnp.array([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0]])}}
  grads = {"zero": {"kernel": jnp.zeros((2, 3))},
           "dense": {"kernel": jnp.array([[0.5, 1.0, -2.0], [1.0, -1.0, 0.3]])}}

  def meta_loss(factory, learning_rate):
    tx = optax.inject_hyperparams(factory)(learning_rate=learning_rate)
    p, state = params, tx.init(params)
    for _ in range(3):  # from step 2 on the norms depend on the rate
      updates, state = tx.update(grads, state, p)
      p = optax.apply_updates(p, updates)
    return sum(jnp.sum(jnp.square(x - 1.0)) for x in jax.tree.leaves(p))

  # The settings under which lamb_optax.lamb is optax.lamb (tests/test_lamb.py): every leaf
  # decayed and adapted.
  ours = lambda learning_rate: lamb_optax.lamb(learning_rate, weight_decay=0.05,
                                               weight_decay_mask=None, trust_ratio_mask=True)
  theirs = lambda learning_rate: optax.lamb(learning_rate, weight_decay=0.05)
  value, grad = jax.value_and_grad(lambda lr: meta_loss(ours, lr))(0.1)
  expected_value, expected_grad = jax.value_and_grad(lambda lr: meta_loss(theirs, lr))(0.1)
  assert np.isfinite(grad) and expected_grad != 0
  np.testing.assert_allclose(value, expected_value, rtol=1e-6)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-5)


# --- 5. strings refused at construction --------------------------------------------------------

_STRING_ARGS = [
    (dict(learning_rate="1e-3"), "learning_rate"),
    (dict(weight_decay="0.01"), "weight_decay"),
    (dict(weight_decay_mask="kernel"), "weight_decay_mask"),
    (dict(weight_decay_mask={"dense": "kernel"}), "weight_decay_mask"),
    (dict(trust_ratio_mask="kernel"), "trust_ratio_mask"),
    (dict(stacked_axes="layers"), "stacked_axes"),
]
_STRING_CASES = [
    pytest.param(alias, kwargs, argname, id=f"{alias.__name__}-{i}-{argname}")
    for alias in (lamb_optax.lamb, lamb_optax.lars, lamb_optax.nvlamb, lamb_optax.nlamb)
    for i, (kwargs, argname) in enumerate(_STRING_ARGS)
] + [
    pytest.param(lamb_optax.lamb, dict(b1="0.9"), "b1", id="lamb-b1"),
    pytest.param(lamb_optax.lamb, dict(weight_norm_bounds=("0.1", "10")), "weight_norm_bounds",
                 id="lamb-weight_norm_bounds"),
]


@pytest.mark.parametrize("alias, kwargs, argname", _STRING_CASES)
def test_strings_are_refused_at_construction(alias, kwargs, argname):
  with pytest.raises(TypeError, match=f"`{argname}`"):
    alias(**{"learning_rate": 1e-3, **kwargs})
