"""Moment transforms optax lacks: Nesterov-style Adam moments for N-LAMB and NN-LAMB.

The LARS momentum of the paper's Algorithm 1 (``m = β1·m + (1-β1)·(g + λx)``) needs no new
transform: it is ``optax.add_decayed_weights`` followed by ``optax.ema(β1, debias=False)``.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax


class ScaleByNesterovAdamState(NamedTuple):
  count: chex.Array  # int32, the number of updates so far
  mu: optax.Updates
  nu: optax.Updates


def scale_by_nesterov_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    *,
    nesterov_second_moment: bool = False,
) -> optax.GradientTransformation:
  """Adam moments with a Nesterov look-ahead, as in N-LAMB / NN-LAMB (You et al., appendix).

  With constant β (the paper's β_t = β for all t), at step t ≥ 1::

    m_t = β1·m_{t-1} + (1-β1)·g_t        v_t = β2·v_{t-1} + (1-β2)·g_t²
    m̂  = β1·m_t / (1-β1^{t+1}) + (1-β1)·g_t / (1-β1^t)              (Nesterov, as Nadam)
    v̂  = v_t / (1-β2^t)                                              (N-LAMB)
    v̂  = β2·v_t / (1-β2^{t+1}) + (1-β2)·g_t² / (1-β2^t)             (NN-LAMB)
    r   = m̂ / (sqrt(v̂ + eps_root) + ε)

  These equations are transcribed from memory of the paper's Algorithms 3 and 4 (Dozat's Nadam
  with the schedule β_t held constant), not from the appendix text itself; check them against
  arXiv:1904.00962 before relying on bit-exact agreement.

  >>> import jax.numpy as jnp
  >>> tx = scale_by_nesterov_adam()
  >>> r, _ = tx.update(jnp.array([2.0]), tx.init(jnp.array([0.0])))
  >>> round(float(r[0]), 4)  # m̂ = 0.9·0.2/0.19 + 0.1·2/0.1 ≈ 2.9474, v̂ = 4: r ≈ 1.4737
  1.4737
  """

  def init_fn(params):
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    return ScaleByNesterovAdamState(jnp.zeros([], jnp.int32), zeros(), zeros())

  def update_fn(updates, state, params=None):
    del params
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.result_type(float))  # float64 under x64

    def look_ahead(moment, g, b):
      # β·moment corrected with the *next* step's factor, plus the current gradient's share.
      return b * moment / (1 - b ** (t + 1)) + (1 - b) * g / (1 - b ** t)

    m_hat = jax.tree.map(lambda m, g: look_ahead(m, g, b1), mu, updates)
    if nesterov_second_moment:
      v_hat = jax.tree.map(lambda v, g: look_ahead(v, g * g, b2), nu, updates)
    else:
      v_hat = jax.tree.map(lambda v: v / (1 - b2 ** t), nu)
    updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), m_hat, v_hat)
    return updates, ScaleByNesterovAdamState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)
