"""Optimizers as ``optax.chain``s of small transforms."""

from __future__ import annotations

from typing import Optional

import chex
import jax.numpy as jnp
import optax

from lamb_optax import masks
from lamb_optax import transforms
from lamb_optax.masks import MaskSpec, StackedAxesSpec
from lamb_optax.transforms import Bounds


def check_learning_rate(learning_rate: float | optax.Schedule) -> None:
  if not callable(learning_rate):
    transforms.check_nonnegative(learning_rate, "learning_rate")


def check_dtype(dtype, argname: str) -> None:
  if dtype is None:
    return
  try:
    dtype = jnp.dtype(dtype)
  except TypeError:
    raise TypeError(f"`{argname}` must be a dtype such as jnp.bfloat16, got {dtype!r}.") from None
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"`{argname}` must be a floating dtype, got {dtype}.")


def lamb(
    learning_rate: float | optax.Schedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.01,
    weight_decay_mask: MaskSpec = masks.default_weight_decay_mask,
    trust_ratio_mask: MaskSpec = None,
    bias_correction: bool = True,
    weight_norm_bounds: Bounds = None,
    trust_ratio_bounds: Bounds = None,
    stacked_axes: StackedAxesSpec = None,
    mu_dtype: Optional[chex.ArrayDType] = None,
) -> optax.GradientTransformation:
  """LAMB: Adam moments, decoupled weight decay, and a layer-wise trust ratio.

  The paper's Algorithm 2, per layer ``i`` (one parameter tensor, or one layer slice of a
  stacked tensor)::

    r = m̂ / (sqrt(v̂ + eps_root) + eps)            # optax.scale_by_adam
    u = r + λ·x      (leaves in weight_decay_mask)  # optax.add_decayed_weights
    u = φ(‖x‖) / ‖u‖ · u   (leaves in trust_ratio_mask) # scale_by_trust_ratio
    x ← x − η·u                                      # optax.scale_by_learning_rate

  Differences from ``optax.lamb``, all switchable back:

  * weight decay skips biases and normalisation parameters by default
    (:func:`lamb_optax.masks.default_weight_decay_mask`), and
  * layer adaptation follows the decay mask (``trust_ratio_mask=None``), as in Google's,
    TF-Addons' and NVIDIA's BERT recipes; ``trust_ratio_mask=True`` adapts every leaf, as
    ``optax.lamb`` does.

  Args:
    learning_rate: η, a float or an ``optax.Schedule``.
    b1: β1, decay of the first moment.
    b2: β2, decay of the second moment.
    eps: ε, added to ``sqrt(v̂)``.
    eps_root: added to ``v̂`` inside the square root.
    weight_decay: λ.
    weight_decay_mask: leaves to decay: bool pytree, callable ``params -> bool pytree``, or
      ``True``/``None`` for every leaf. Default: kernels and embeddings, not biases or norms.
    trust_ratio_mask: leaves that get layer adaptation; ``None`` means the leaves of
      ``weight_decay_mask``; ``True`` every leaf. Leaves outside it get ratio 1.
    bias_correction: divide the moments by ``1 - β^t`` (the paper); off as in NVIDIA's switch.
    weight_norm_bounds: (γ_l, γ_u) of the paper's φ, clipping ‖x‖; None for φ(z) = z.
    trust_ratio_bounds: (lo, hi) clamp of the ratio itself (DeepSpeed uses (0.01, 10)).
    stacked_axes: per leaf, the number of leading axes that index layers stacked by ``scan``
      (int pytree, callable, or one int for all leaves); norms are then taken per layer.
    mu_dtype: dtype of the first moment (e.g. ``jnp.bfloat16``).

  Returns:
    An ``optax.GradientTransformation``; its ``update`` needs ``params``.

  Example:
    One step on a layer whose weights are all 1: the trust ratio turns the kernel's step into
    exactly ``η·‖x‖/√n = η`` per entry, while the bias (no decay, no adaptation) takes Adam's
    first step of ``η·g/(|g| + ε) ≈ η``.

    >>> import jax, jax.numpy as jnp, optax, lamb_optax
    >>> params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}
    >>> loss = lambda p: jnp.sum((jnp.ones(3) @ p["dense"]["kernel"] + p["dense"]["bias"]) ** 2)
    >>> tx = lamb_optax.lamb(learning_rate=0.1)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jax.grad(loss)(params), state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> params["dense"]["kernel"]
    Array([[0.9, 0.9],
           [0.9, 0.9],
           [0.9, 0.9]], dtype=float32)
    >>> params["dense"]["bias"]
    Array([-0.1, -0.1], dtype=float32)

  Reference:
    You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 Minutes",
    ICLR 2020, https://arxiv.org/abs/1904.00962
  """
  check_learning_rate(learning_rate)
  transforms.check_decay_rate(b1, "b1")
  transforms.check_decay_rate(b2, "b2")
  transforms.check_nonnegative(eps, "eps")
  transforms.check_nonnegative(eps_root, "eps_root")
  transforms.check_nonnegative(weight_decay, "weight_decay")
  check_dtype(mu_dtype, "mu_dtype")
  if trust_ratio_mask is None:
    trust_ratio_mask = weight_decay_mask
  return optax.chain(
      transforms.scale_by_adam(
          b1, b2, eps, eps_root, bias_correction=bias_correction, mu_dtype=mu_dtype
      ),
      optax.add_decayed_weights(weight_decay, decay_mask_for_optax(weight_decay_mask)),
      transforms.scale_by_trust_ratio(
          mask=trust_ratio_mask,
          weight_norm_bounds=weight_norm_bounds,
          trust_ratio_bounds=trust_ratio_bounds,
          stacked_axes=stacked_axes,
      ),
      optax.scale_by_learning_rate(learning_rate),
  )


def decay_mask_for_optax(mask: MaskSpec):
  """Adapts our mask spec (which also accepts None/True for 'all') to ``optax.masked``."""
  if mask is None or mask is True:
    return None
  return lambda params: masks.resolve_mask(mask, params, "weight_decay_mask")
