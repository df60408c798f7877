"""trust_ratio_summary on a model with a scan-stacked encoder, against float64 NumPy LAMB."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lamb_optax
from reference import lamb_np

L = 3  # stacked encoder layers
SHAPES = {
    "embeddings/word/embedding": (10, 4),
    "encoder/layers/attn/kernel": (L, 4, 4),
    "encoder/layers/attn/bias": (L, 4),
    "encoder/layers/mlp/kernel": (L, 4, 8),
    "mlm_head/dense/kernel": (4, 4),
    "mlm_head/LayerNorm/scale": (4,),
}
STACKED = {n: 1 if n.startswith("encoder") else 0 for n in SHAPES}
ADAPTED = {n for n in SHAPES if n.endswith(("kernel", "embedding"))}


def nest(flat):
  tree = {}
  for name, value in flat.items():
    *parents, leaf = name.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def problem():
  rng = np.random.default_rng(0)
  params = {n: rng.normal(size=s) for n, s in SHAPES.items()}
  grads = {n: rng.normal(size=s) * 10.0 ** rng.integers(-2, 2) for n, s in SHAPES.items()}
  return params, grads


def expected_summary(params, grads, lr, with_updates):
  new, history = lamb_np.lamb(params, [grads], [lr], decay={n: n in ADAPTED for n in SHAPES},
                              adapt={n: n in ADAPTED for n in SHAPES}, stacked_axes=STACKED)
  rows = {}  # group -> list of (ratio, ‖x‖, ‖Δx‖)
  for n in ADAPTED:
    x, dx, r = params[n], new[n] - params[n], history[0][n]
    if STACKED[n]:
      for i in range(L):
        rows.setdefault(f"layer_{i}", []).append(
            (r[i], np.linalg.norm(x[i]), np.linalg.norm(dx[i])))
    else:
      group = "embeddings" if n.startswith("embeddings") else "heads"
      rows.setdefault(group, []).append((float(r), np.linalg.norm(x), np.linalg.norm(dx)))
  out = {}
  for g, rs in rows.items():
    r, w, u = map(np.array, zip(*rs, strict=True))
    if not with_updates:  # the pre-ratio, pre-lr update u: Δx = −lr·ratio·u
      u = u / (lr * r)
    out.update({f"{g}/ratio_min": r.min(), f"{g}/ratio_mean": r.mean(), f"{g}/ratio_max": r.max(),
                f"{g}/weight_norm": np.sqrt(np.sum(w ** 2)), f"{g}/update_norm":
                np.sqrt(np.sum(u ** 2))})
  return out


@pytest.mark.parametrize("with_updates", [True, False])
def test_summary_per_group_on_a_stacked_model(with_updates):
  params, grads = problem()
  lr = 0.1
  expected = expected_summary(params, grads, lr, with_updates)
  assert {k.split("/")[0] for k in expected} == {"embeddings", "layer_0", "layer_1", "layer_2",
                                                 "heads"}
  with jax.enable_x64(True):
    p, g = nest(params), nest(grads)
    tx = lamb_optax.lamb(lr, stacked_axes=nest(STACKED))
    updates, state = tx.update(g, tx.init(p), p)
    summary = jax.jit(lamb_optax.trust_ratio_summary)(state, p, updates if with_updates else None)
  assert set(summary) == set(expected)
  for k, v in expected.items():
    np.testing.assert_allclose(float(summary[k]), v, rtol=1e-9, err_msg=k)


def test_unstacked_layers_are_grouped_by_name():
  params = {"encoder": {"layer_0": {"kernel": jnp.ones((2, 2))},
                        "layer_1": {"kernel": jnp.full((2, 2), 2.0)}},
            "cls": {"kernel": jnp.ones((2, 2))}}
  tx = lamb_optax.lamb(0.1)
  _, state = tx.update(params, tx.init(params), params)
  summary = lamb_optax.trust_ratio_summary(state, params)
  assert sorted({k.split("/")[0] for k in summary}) == ["heads", "layer_0", "layer_1"]
  assert float(summary["layer_1/weight_norm"]) == pytest.approx(4.0)
