"""Cases of other implementations' LAMB test suites, transcribed (our code, their cases and
tolerances), against our float64 NumPy references in tests/reference/.

* TF-Addons ``tensorflow_addons/optimizers/tests/lamb_test.py``: sparse-as-dense gradients,
  learning-rate decay with weight decay, inverse-time schedule, decay/adaptation exclusion
  lists, the mean-square minimisation; float16/float32/float64.
* apex ``tests/L0/run_optimizers/test_lamb.py`` (RefLAMB vs FusedLAMB(use_nvlamb=True)): one
  278,011-element tensor, 7 iterations, lr 5e-4, eps 1e-8, weight decay 0 and 0.01, max abs
  difference 1e-3; with float32, float16 and bfloat16 gradients (float32 master params); the
  "lamb_option" case; and its multi-tensor case with sizes scaled down 32x for a 2-core CPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lamb_optax
from reference import family_np
from reference import lamb_np

TOL = {"float16": 1e-3, "float32": 1e-6, "float64": 1e-6}  # TF-Addons' tolerances by type


def run(tx, params, grads_per_step, dtype, grad_dtype=None):
  params = {k: jnp.asarray(v, dtype) for k, v in params.items()}
  state = tx.init(params)
  step = jax.jit(tx.update)
  for grads in grads_per_step:
    grads = {k: jnp.asarray(v, grad_dtype or dtype) for k, v in grads.items()}
    u, state = step(grads, state, params)
    params = optax.apply_updates(params, u)
  return {k: np.asarray(v, np.float64) for k, v in params.items()}


def check(actual, expected, dtype):
  for k in expected:
    np.testing.assert_allclose(actual[k], expected[k], rtol=TOL[dtype], atol=TOL[dtype], err_msg=k)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("case", ["sparse", "lr_decay", "inverse_time_decay"])
def test_tf_addons_cases(case, dtype):
  if case == "sparse":  # IndexedSlices with rows [0, 2]: as dense, the other rows are 0
    params = {"var0": np.array([1.0, 1.0, 2.0]), "var1": np.array([3.0, 3.0, 4.0])}
    grads = {"var0": np.array([0.1, 0.0, 0.1]), "var1": np.array([0.01, 0.0, 0.01])}
    lr, eps, wd, decay = 0.001, 1e-6, 0.0, 0.0
  else:
    params = {"var0": np.array([1.0, 2.0]), "var1": np.array([3.0, 4.0])}
    grads = {"var0": np.array([0.1, 0.1]), "var1": np.array([0.01, 0.01])}
    lr, eps, decay = 0.001, 1e-7, 0.5
    wd = 0.01 if case == "lr_decay" else 0.0
  lrs = [lr / (1 + decay * t) for t in range(3)]
  expected, _ = lamb_np.lamb(params, [grads] * 3, lrs, eps=eps, weight_decay=wd)
  tx = lamb_optax.lamb(lambda count: lr / (1 + decay * count), eps=eps, weight_decay=wd,
                       weight_decay_mask=True, trust_ratio_mask=True)
  with jax.enable_x64(dtype == "float64"):
    check(run(tx, params, [grads] * 3, dtype), expected, dtype)


def test_tf_addons_exclusion_lists():
  """exclude_from_weight_decay=["var1"] (and layer adaptation following it, TF-Addons' default)."""
  params = {"var0": np.array([1.0, 2.0]), "var1": np.array([3.0, 4.0]),
            "var1_weight": np.array([0.5, -1.0])}
  grads = {"var0": np.array([0.1, 0.1]), "var1": np.array([0.01, 0.01]),
           "var1_weight": np.array([0.2, 0.3])}
  mask = {"var0": True, "var1": False, "var1_weight": False}
  expected, _ = lamb_np.lamb(params, [grads] * 3, [0.01] * 3, weight_decay=0.01, decay=mask,
                             adapt=mask)
  tx = lamb_optax.lamb(0.01, weight_decay=0.01,
                       weight_decay_mask=lamb_optax.path_mask(exclude=["var1"]))
  assert jax.tree.map(bool, tx.init({k: jnp.asarray(v) for k, v in params.items()})[2].ratios
                      ) is not None
  check(run(tx, params, [grads] * 3, "float32"), expected, "float32")


def test_tf_addons_minimize_mean_square_loss_with_weight_decay():
  x = jnp.array([0.4, 0.2, -0.5])
  w = jnp.array([0.1, -0.2, -0.1])
  tx = lamb_optax.lamb(0.02, weight_decay=0.01, weight_decay_mask=True)
  state = tx.init(w)
  loss = lambda w: jnp.mean(jnp.square(x - w))
  for _ in range(200):
    u, state = tx.update(jax.grad(loss)(w), state, w)
    w = optax.apply_updates(w, u)
  np.testing.assert_allclose(w, x, rtol=1e-2, atol=1e-2)


def _apex_case(sizes, lr, betas, eps, wd, dtype, iters=7, seed=9876):
  rng = np.random.default_rng(seed)
  cast = lambda a: np.asarray(jnp.asarray(a, dtype), np.float64)  # values the dtype can hold
  params = {f"p{i}": cast(rng.uniform(size=s)) for i, s in enumerate(sizes)}
  grads = [{k: cast(rng.uniform(size=v.shape)) for k, v in params.items()} for _ in range(iters)]
  every = {k: True for k in params}
  expected = family_np.nvlamb(params, grads, [lr] * iters, max_grad_norm=1.0, b1=betas[0],
                              b2=betas[1], eps=eps, weight_decay=wd, decay=every, adapt=every)
  tx = lamb_optax.nvlamb(lr, b1=betas[0], b2=betas[1], eps=eps, weight_decay=wd,
                         weight_decay_mask=True, adapt_all_leaves=True, max_grad_norm=1.0)
  # apex's mixed-precision LAMB keeps float32 master weights: half-precision gradients, float32
  # params and optimizer math (half params alone would drop steps below half an ulp).
  return run(tx, params, grads, "float32", grad_dtype=dtype), expected


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_apex_single_tensor(dtype, wd):
  # ‖g‖ ≈ 304 > 256: in float16 the clipping norm overflows unless it is taken in float32.
  actual, expected = _apex_case([(278011,)], 5e-4, (0.9, 0.999), 1e-8, wd, dtype)
  for k in expected:
    assert np.max(np.abs(actual[k] - expected[k])) <= 1e-3, k  # apex's max_abs_diff


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_apex_lamb_option(wd):
  actual, expected = _apex_case([(1,)], 0.01, (0.6, 0.9), 3e-6, wd, "float32")
  for k in expected:
    assert np.max(np.abs(actual[k] - expected[k])) <= 1e-3, k


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_apex_multi_params_scaled_down(wd):
  sizes = [(128, 32), (128,), (128, 64), (1010, 32), (1,)]  # apex's sizes / 32
  actual, expected = _apex_case(sizes, 5e-4, (0.9, 0.999), 1e-8, wd, "float32")
  for k in expected:
    assert np.max(np.abs(actual[k] - expected[k])) <= 1e-3, k
