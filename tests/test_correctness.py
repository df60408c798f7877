"""Optax-grade correctness, one numbered section per property, plus transcriptions of the cases
of optax's ``alias_test.py`` (``test_optimization`` on the parabola and Rosenbrock problems in
float32 and complex64; ``test_state_shape_dtype_shard_stability``) for every alias."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lamb_optax
from lamb_optax import transforms

ALIASES = {
    "lamb": lamb_optax.lamb,
    "lars": lamb_optax.lars,
    "nvlamb": lamb_optax.nvlamb,
    "nlamb": lamb_optax.nlamb,
    "nnlamb": lamb_optax.nnlamb,
    "adamw_baseline": lamb_optax.adamw_baseline,
}


def abs_sq(x):
  return jnp.real(x * jnp.conj(x))


# --- optax alias_test's problems (our transcription of _setup_parabola / _setup_rosenbrock) ---

def parabola(dtype):
  start = jnp.array([-1.0, 10.0, 1.0], dtype)
  target = jnp.array([1.0, -1.0, 1.0], dtype)
  if jnp.iscomplexobj(start):
    target = target * (1 + 1j)
  return start, target, lambda x: jnp.sum(abs_sq(x - target))


def rosenbrock(dtype):
  a, b = (1 + 1j if jnp.issubdtype(dtype, jnp.complexfloating) else 1.0), 100.0
  start = jnp.zeros(2, dtype)
  target = jnp.array([a, a ** 2], dtype)
  return start, target, lambda x: abs_sq(a - x[0]) + b * abs_sq(x[1] - x[0] ** 2)


# optax's alias_test runs optax.lamb(learning_rate=1e-3): weight decay 1e-4 on every leaf, every
# leaf adapted. These are the same settings for each LAMB-family alias.
OPTAX_LAMB = dict(weight_decay=1e-4, weight_decay_mask=True, trust_ratio_mask=True)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64], ids=["float32", "complex64"])
@pytest.mark.parametrize("problem", [parabola, rosenbrock])
@pytest.mark.parametrize("name", ["lamb", "nlamb", "nnlamb"])
def test_optax_optimization_problems(name, problem, dtype):
  tx = ALIASES[name](1e-3, **OPTAX_LAMB)
  params, target, objective = problem(dtype)
  compilations = []

  @jax.jit
  def step(params, state):
    compilations.append(1)
    grads = jax.tree.map(jnp.conj, jax.grad(objective)(params))  # complex: descend along conj
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for _ in range(10_000):
    params, state = step(params, state)
  assert len(compilations) == 1
  assert params.dtype == dtype
  np.testing.assert_allclose(params, target, rtol=3e-2, atol=3e-2)


def test_complex_norms_and_real_ratios():
  """Item 2: ‖x‖ = sqrt(Σ|x|²), the ratio is real (float32 for complex64)."""
  x = jnp.array([3j, 4.0], jnp.complex64)
  u = jnp.array([1j, 0.0], jnp.complex64)
  tx = lamb_optax.scale_by_trust_ratio()
  scaled, state = tx.update(u, tx.init(x), x)
  assert state.ratios.dtype == jnp.float32 and tx.init(x).ratios.dtype == jnp.float32
  np.testing.assert_allclose(state.ratios, 5.0)
  np.testing.assert_allclose(scaled, jnp.array([5j, 0.0]))
  ours_tx, theirs_tx = lamb_optax.lamb(0.1, **OPTAX_LAMB), optax.lamb(0.1, weight_decay=1e-4)
  ours, _ = ours_tx.update(u, ours_tx.init(x), x)
  theirs, _ = theirs_tx.update(u, theirs_tx.init(x), x)
  np.testing.assert_allclose(ours, theirs, rtol=1e-6)


# --- item 1: any pytree ---------------------------------------------------------------------

class Pair(NamedTuple):
  kernel: jax.Array
  other: jax.Array


def _trees():
  a = jnp.array([[3.0, 4.0], [1.0, 2.0]])
  b = jnp.array([0.5, -1.0, 2.0])
  ga, gb = jnp.array([[1.0, -2.0], [0.5, 1.0]]), jnp.array([1.0, 1.0, -3.0])
  flat = ({"0": a, "1": b}, {"0": ga, "1": gb})
  return a, b, ga, gb, flat


@pytest.mark.parametrize("wrap", [
    lambda a, b: (a, b),
    lambda a, b: [a, b],
    lambda a, b: Pair(a, b),
    lambda a, b: {"layers": (a, b)},
    lambda a, b: {"layers": [{"kernel": a}, (b, None)]},
], ids=["tuple", "list", "namedtuple", "dict_of_tuple", "nested_with_none"])
@pytest.mark.parametrize("name", sorted(ALIASES))
def test_any_pytree_gives_the_flat_dict_result(name, wrap):
  a, b, ga, gb, (flat_p, flat_g) = _trees()
  kwargs = dict(weight_decay_mask=True) if name != "adamw_baseline" else {}
  tx = ALIASES[name](0.1, **kwargs)
  params, grads = wrap(a, b), wrap(ga, gb)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  assert jax.tree.structure(updates) == jax.tree.structure(params)
  expected, _ = tx.update(flat_g, tx.init(flat_p), flat_p)
  got = jax.tree.leaves(updates)
  np.testing.assert_allclose(got[0], expected["0"], rtol=1e-6)
  np.testing.assert_allclose(got[1], expected["1"], rtol=1e-6)


def test_scale_by_trust_ratio_on_a_bare_tuple():
  a, b, ga, gb, _ = _trees()
  tx = lamb_optax.scale_by_trust_ratio()
  (ua, ub), state = tx.update((ga, gb), tx.init((a, b)), (a, b))
  assert ua.shape == a.shape and ub.shape == b.shape
  np.testing.assert_allclose(ua, ga * jnp.linalg.norm(a) / jnp.linalg.norm(ga), rtol=1e-6)
  np.testing.assert_allclose(ub, gb * jnp.linalg.norm(b) / jnp.linalg.norm(gb), rtol=1e-6)
  assert isinstance(state.ratios, tuple) and len(state.ratios) == 2


# --- item 3: inject_hyperparams -------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ALIASES))
def test_inject_hyperparams_changes_the_rate_without_recompiling(name):
  params = {"dense": {"kernel": jnp.array([[1.0, 2.0], [3.0, -1.0]]), "bias": jnp.ones(2)}}
  grads = {"dense": {"kernel": jnp.array([[0.5, -1.0], [2.0, 1.0]]), "bias": jnp.ones(2)}}
  tx = optax.inject_hyperparams(ALIASES[name])(learning_rate=0.1)
  traces = []

  @jax.jit
  def update(state):
    traces.append(1)
    return tx.update(grads, state, params)

  state = tx.init(params)
  u1, _ = update(state)
  state.hyperparams["learning_rate"] = jnp.asarray(0.3, state.hyperparams["learning_rate"].dtype)
  u3, _ = update(state)
  assert len(traces) == 1
  jax.tree.map(lambda x, y: np.testing.assert_allclose(y, 3 * x, rtol=1e-5), u1, u3)
  plain = ALIASES[name](0.3)
  expected, _ = plain.update(grads, plain.init(params), params)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5), u3, expected)


@pytest.mark.parametrize("hyper, value", [("b1", 0.5), ("b2", 0.9), ("eps", 1e-2),
                                          ("weight_decay", 0.5)])
def test_injected_adam_hyperparameters(hyper, value):
  params = {"dense": {"kernel": jnp.array([[1.0, 2.0], [3.0, -1.0]])}}
  grads = [{"dense": {"kernel": jnp.array([[0.5, -1.0], [2.0, 1.0]]) * (i + 1)}} for i in range(3)]
  tx = optax.inject_hyperparams(lamb_optax.lamb)(learning_rate=0.1)
  state = tx.init(params)
  state.hyperparams[hyper] = jnp.asarray(value)
  plain = lamb_optax.lamb(0.1, **{hyper: value})
  plain_state = plain.init(params)
  step = jax.jit(tx.update)
  for g in grads:
    u, state = step(g, state, params)
    expected, plain_state = plain.update(g, plain_state, params)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), u, expected)


# --- item 4: state shapes and dtypes stable across update ------------------------------------

def _shape_dtypes(tree):
  return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64", "complex64"])
@pytest.mark.parametrize("name", sorted(ALIASES))
def test_state_shapes_and_dtypes_are_stable(name, dtype):
  with jax.enable_x64(dtype == "float64"):
    start, _, objective = parabola(jnp.dtype(dtype))
    params = {"dense": {"kernel": jnp.stack([start, 2 * start]), "bias": start}}
    loss = lambda p: objective(p["dense"]["bias"]) + jnp.sum(abs_sq(p["dense"]["kernel"]))
    tx = ALIASES[name](1e-2)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
      grads = jax.tree.map(jnp.conj, jax.grad(loss)(params))
      # optax's check: both branches of a cond must have the same types.
      cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
      updates, new_state = jax.lax.cond(cond, lambda: tx.update(grads, state, params),
                                        lambda: (params, state))
      return optax.apply_updates(params, updates), new_state

    for _ in range(2):
      params, new_state = step(params, state)
      assert _shape_dtypes(new_state) == _shape_dtypes(state)
      assert all(x.dtype == jnp.dtype(dtype) for x in jax.tree.leaves(params))
      state = new_state


def test_float64_ratio_state_is_float64_before_and_after_update():
  with jax.enable_x64(True):
    params = {"w": {"kernel": jnp.ones((2, 2), jnp.float64)}}
    tx = lamb_optax.lamb(0.1)
    state = tx.init(params)
    assert lamb_optax.trust_ratios(state)["w/kernel"].dtype == jnp.float64
    _, state = tx.update(params, state, params)
    assert lamb_optax.trust_ratios(state)["w/kernel"].dtype == jnp.float64
    carry = jax.lax.scan(lambda s, _: (tx.update(params, s, params)[1], None), state, None,
                         length=2)[0]
    assert _shape_dtypes(carry) == _shape_dtypes(state)


# --- item 5: float16 gradients and the clipping norm -----------------------------------------

def test_nvlamb_clips_float16_gradients_with_a_float32_norm():
  rng = np.random.default_rng(0)
  params = {"w": {"kernel": jnp.asarray(rng.uniform(size=(300, 1000)), jnp.float32)}}
  g32 = {"w": {"kernel": jnp.asarray(rng.uniform(size=(300, 1000)), jnp.float32)}}
  g16 = jax.tree.map(lambda g: g.astype(jnp.float16), g32)
  # ‖g‖ ≈ 316 > 256: Σg² ≈ 100,000 exceeds float16's 65,504, so a float16 norm is inf.
  assert float(optax.tree.norm(g16)) == np.inf
  clip = transforms.clip_by_global_norm(1.0)
  c16, _ = clip.update(g16, clip.init(params))
  c32, _ = clip.update(jax.tree.map(lambda g: g.astype(jnp.float32), g16), clip.init(params))
  assert c16["w"]["kernel"].dtype == jnp.float16
  np.testing.assert_allclose(c16["w"]["kernel"], c32["w"]["kernel"], rtol=1e-3, atol=1e-7)
  tx = lamb_optax.nvlamb(1e-2)
  u16, _ = tx.update(g16, tx.init(params), params)
  # optax.clip_by_global_norm divides by the inf norm here, which zeroes the whole step.
  assert np.isfinite(u16["w"]["kernel"]).all() and float(jnp.abs(u16["w"]["kernel"]).min()) > 0
  # the step is the LAMB step of the clipped gradient (g²/‖g‖² is formed in float16 by Adam's
  # second moment, so only the first moment's direction is compared): every entry descends.
  assert float(jnp.max(u16["w"]["kernel"])) < 0


def test_global_norm_is_float32_for_half_leaves():
  g = {"a": jnp.full((300, 300), 1.0, jnp.float16), "b": jnp.ones(3, jnp.bfloat16)}
  norm = transforms.global_norm(g)
  assert norm.dtype == jnp.float32
  np.testing.assert_allclose(norm, np.sqrt(90_003), rtol=1e-6)


# --- item 6: φ bounds and zero weights -------------------------------------------------------

def test_weight_norm_lower_bound_applies_to_zero_weights():
  tx = lamb_optax.scale_by_trust_ratio(weight_norm_bounds=(0.5, 10.0))
  params = {"zero": jnp.zeros(4), "small": jnp.full(4, 0.1)}
  updates = {"zero": jnp.full(4, 1.0), "small": jnp.full(4, 1.0)}  # ‖u‖ = 2
  _, state = tx.update(updates, tx.init(params), params)
  ratios = lamb_optax.trust_ratios(state)
  np.testing.assert_allclose(ratios["zero"], 0.25)  # φ(0) = γ_l = 0.5, over ‖u‖ = 2
  np.testing.assert_allclose(ratios["small"], 0.25)  # φ(0.2) = 0.5 as well
  plain = lamb_optax.scale_by_trust_ratio()
  _, state = plain.update(updates, plain.init(params), params)
  np.testing.assert_allclose(lamb_optax.trust_ratios(state)["zero"], 1.0)  # φ(z) = z: rule 1


# --- item 7: nvlamb's default adaptation mask ------------------------------------------------

def test_nvlamb_default_adapts_only_decayed_leaves_like_apex():
  params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
            "LayerNorm": {"scale": jnp.ones(2)}}
  assert set(lamb_optax.trust_ratios(lamb_optax.nvlamb(1e-3).init(params))) == {"dense/kernel"}
  every = lamb_optax.nvlamb(1e-3, adapt_all_leaves=True)
  assert len(lamb_optax.trust_ratios(every.init(params))) == 3
  with pytest.raises(ValueError, match="adapt_all_leaves"):
    lamb_optax.nvlamb(1e-3, adapt_all_leaves=True, trust_ratio_mask=True)
