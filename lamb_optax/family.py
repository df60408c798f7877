"""LAMB's relatives as ``optax.chain``s: LARS, NVLAMB, N-LAMB/NN-LAMB and the AdamW baseline.

Same conventions as :func:`lamb_optax.lamb`: ``weight_decay_mask`` (default: kernels and
embeddings), ``trust_ratio_mask=None`` meaning "the decay mask", per-layer norms over
``stacked_axes``, learning rate as a float or ``optax.Schedule``, validation at construction.
"""

from __future__ import annotations

from typing import Optional

import chex
import optax

from lamb_optax import masks
from lamb_optax import momentum
from lamb_optax import transforms
from lamb_optax.aliases import check_dtype
from lamb_optax.aliases import check_learning_rate
from lamb_optax.aliases import decay_mask_for_optax
from lamb_optax.aliases import lamb
from lamb_optax.masks import MaskSpec, StackedAxesSpec
from lamb_optax.transforms import Bounds


def lars(
    learning_rate: float | optax.Schedule,
    momentum: float = 0.9,
    weight_decay: float = 0.01,
    weight_decay_mask: MaskSpec = masks.default_weight_decay_mask,
    trust_ratio_mask: MaskSpec = None,
    weight_norm_bounds: Bounds = None,
    trust_ratio_bounds: Bounds = None,
    stacked_axes: StackedAxesSpec = None,
    ratio_before_momentum: bool = False,
) -> optax.GradientTransformation:
  """LARS as in the LAMB paper's Algorithm 1: weight decay inside the momentum.

  Per layer ``i``::

    m = β1·m + (1-β1)·(g + λ·x)        # add_decayed_weights, then optax.ema(β1, debias=False)
    x ← x − η · φ(‖x‖)/‖m‖ · m           # scale_by_trust_ratio on the momentum

  ``optax.lars`` instead applies the trust ratio to ``g + λx`` *before* an undampened momentum
  (``m = β·m + ratio·(g + λx)``, You et al. 2017 / Goyal-style); that ordering is available with
  ``ratio_before_momentum=True`` (still with the paper's ``(1-β1)`` dampening, so it differs
  from ``optax.lars`` by that constant factor only).

  Args:
    learning_rate: η, a float or schedule.
    momentum: β1.
    weight_decay: λ.
    weight_decay_mask / trust_ratio_mask / weight_norm_bounds / trust_ratio_bounds /
      stacked_axes: as in :func:`lamb_optax.lamb`.
    ratio_before_momentum: take the ratio from ``g + λx`` and accumulate the scaled steps.

  >>> import jax.numpy as jnp, lamb_optax
  >>> tx = lamb_optax.lars(0.1)
  >>> params = {"w": {"kernel": jnp.ones((2, 2))}}
  >>> u, _ = tx.update({"w": {"kernel": jnp.full((2, 2), 3.0)}}, tx.init(params), params)
  >>> u["w"]["kernel"]  # ratio·m has norm ‖x‖ = 2, spread over 4 entries: η·1
  Array([[-0.1, -0.1],
         [-0.1, -0.1]], dtype=float32)

  Reference: You et al., ICLR 2020, https://arxiv.org/abs/1904.00962, Algorithm 1.
  """
  check_learning_rate(learning_rate)
  transforms.check_decay_rate(momentum, "momentum")
  transforms.check_nonnegative(weight_decay, "weight_decay")
  if trust_ratio_mask is None:
    trust_ratio_mask = weight_decay_mask
  ratio = transforms.scale_by_trust_ratio(
      mask=trust_ratio_mask,
      weight_norm_bounds=weight_norm_bounds,
      trust_ratio_bounds=trust_ratio_bounds,
      stacked_axes=stacked_axes,
  )
  ema = optax.ema(momentum, debias=False)
  order = (ratio, ema) if ratio_before_momentum else (ema, ratio)
  return optax.chain(
      optax.add_decayed_weights(weight_decay, decay_mask_for_optax(weight_decay_mask)),
      *order,
      optax.scale_by_learning_rate(learning_rate),
  )


def nvlamb(
    learning_rate: float | optax.Schedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.01,
    weight_decay_mask: MaskSpec = masks.default_weight_decay_mask,
    trust_ratio_mask: MaskSpec = True,
    max_grad_norm: Optional[float] = 1.0,
    bias_correction: bool = True,
    stacked_axes: StackedAxesSpec = None,
    mu_dtype: Optional[chex.ArrayDType] = None,
) -> optax.GradientTransformation:
  """NVIDIA's LAMB ("NVLAMB", apex ``FusedLAMB(use_nvlamb=True)``).

  LAMB (:func:`lamb_optax.lamb`) with two changes:

  * the gradient is first clipped to global norm ``max_grad_norm`` (``g ← g·min(1, c/‖g‖)``,
    over all leaves together), before the moments; ``None`` turns clipping off, and
  * layer adaptation on every leaf (``trust_ratio_mask=True``), including biases and LayerNorm
    parameters that get no weight decay.

  ``bias_correction`` is NVIDIA's switch (on by default, as in apex).

  >>> import jax.numpy as jnp, lamb_optax
  >>> tx = lamb_optax.nvlamb(1e-3)
  >>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
  >>> sorted(lamb_optax.trust_ratios(tx.init(params)))
  ['dense/bias', 'dense/kernel']

  Reference: NVIDIA DeepLearningExamples BERT (PyTorch) and apex ``FusedLAMB``; You et al.,
  ICLR 2020, https://arxiv.org/abs/1904.00962
  """
  if max_grad_norm is not None:
    transforms.check_nonnegative(max_grad_norm, "max_grad_norm")
  inner = lamb(
      learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
      weight_decay_mask=weight_decay_mask, trust_ratio_mask=trust_ratio_mask,
      bias_correction=bias_correction, stacked_axes=stacked_axes, mu_dtype=mu_dtype,
  )
  if max_grad_norm is None:
    return inner
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), inner)


def _nesterov_lamb(learning_rate, b1, b2, eps, eps_root, weight_decay, weight_decay_mask,
                   trust_ratio_mask, stacked_axes, nesterov_second_moment):
  check_learning_rate(learning_rate)
  transforms.check_decay_rate(b1, "b1")
  transforms.check_decay_rate(b2, "b2")
  transforms.check_nonnegative(eps, "eps")
  transforms.check_nonnegative(eps_root, "eps_root")
  transforms.check_nonnegative(weight_decay, "weight_decay")
  if trust_ratio_mask is None:
    trust_ratio_mask = weight_decay_mask
  return optax.chain(
      momentum.scale_by_nesterov_adam(
          b1, b2, eps, eps_root, nesterov_second_moment=nesterov_second_moment),
      optax.add_decayed_weights(weight_decay, decay_mask_for_optax(weight_decay_mask)),
      transforms.scale_by_trust_ratio(mask=trust_ratio_mask, stacked_axes=stacked_axes),
      optax.scale_by_learning_rate(learning_rate),
  )


def nlamb(
    learning_rate: float | optax.Schedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.01,
    weight_decay_mask: MaskSpec = masks.default_weight_decay_mask,
    trust_ratio_mask: MaskSpec = None,
    stacked_axes: StackedAxesSpec = None,
) -> optax.GradientTransformation:
  """N-LAMB: LAMB with a Nesterov first moment (the paper's appendix; Nadam inside LAMB).

  ``r`` of :func:`lamb_optax.lamb` is replaced by the Nesterov estimate of
  :func:`lamb_optax.momentum.scale_by_nesterov_adam` (its docstring states the equations and
  their provenance); decay, trust ratio and masks are as in LAMB.

  >>> import jax.numpy as jnp, lamb_optax
  >>> tx = lamb_optax.nlamb(0.1)
  >>> params = {"w": {"kernel": jnp.ones((2, 2))}}
  >>> u, _ = tx.update({"w": {"kernel": jnp.ones((2, 2))}}, tx.init(params), params)
  >>> u["w"]["kernel"]  # the trust ratio fixes the per-entry step at η·‖x‖/2
  Array([[-0.1, -0.1],
         [-0.1, -0.1]], dtype=float32)

  Reference: You et al., ICLR 2020, https://arxiv.org/abs/1904.00962, appendix (N-LAMB).
  """
  return _nesterov_lamb(learning_rate, b1, b2, eps, eps_root, weight_decay, weight_decay_mask,
                        trust_ratio_mask, stacked_axes, nesterov_second_moment=False)


def nnlamb(
    learning_rate: float | optax.Schedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.01,
    weight_decay_mask: MaskSpec = masks.default_weight_decay_mask,
    trust_ratio_mask: MaskSpec = None,
    stacked_axes: StackedAxesSpec = None,
) -> optax.GradientTransformation:
  """NN-LAMB: N-LAMB with the Nesterov look-ahead on the second moment too (paper's appendix).

  >>> import jax.numpy as jnp, lamb_optax
  >>> tx = lamb_optax.nnlamb(0.1)
  >>> params = {"w": {"kernel": jnp.ones((2, 2))}}
  >>> u, _ = tx.update({"w": {"kernel": jnp.ones((2, 2))}}, tx.init(params), params)
  >>> u["w"]["kernel"]
  Array([[-0.1, -0.1],
         [-0.1, -0.1]], dtype=float32)

  Reference: You et al., ICLR 2020, https://arxiv.org/abs/1904.00962, appendix (NN-LAMB).
  """
  return _nesterov_lamb(learning_rate, b1, b2, eps, eps_root, weight_decay, weight_decay_mask,
                        trust_ratio_mask, stacked_axes, nesterov_second_moment=True)


def adamw_baseline(
    learning_rate: float | optax.Schedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.01,
    weight_decay_mask: MaskSpec = masks.default_weight_decay_mask,
    bias_correction: bool = True,
    stacked_axes: StackedAxesSpec = None,
    mu_dtype: Optional[chex.ArrayDType] = None,
) -> optax.GradientTransformation:
  """AdamW as BERT's baseline uses it: :func:`lamb_optax.lamb` without the trust ratio.

  ``x ← x − η·(m̂/(sqrt(v̂)+ε) + λ·x)`` with decoupled decay on the same default mask as LAMB
  (no decay on biases/LayerNorm), ε = 1e-6 as in Devlin et al.'s BERT; so swapping
  ``lamb_optax.lamb`` for ``lamb_optax.adamw_baseline`` changes one line and nothing else
  (Nado et al. 2021 show a tuned AdamW matches LAMB at batch 32k).

  >>> import jax.numpy as jnp, lamb_optax
  >>> tx = lamb_optax.adamw_baseline(0.1, weight_decay=0.0)
  >>> params = {"w": {"kernel": jnp.ones(2)}}
  >>> u, _ = tx.update({"w": {"kernel": jnp.ones(2)}}, tx.init(params), params)
  >>> [round(float(x), 5) for x in u["w"]["kernel"]]  # Adam's first step: η·g/(|g|+ε)
  [-0.1, -0.1]

  ``stacked_axes`` is accepted and unused (AdamW is element-wise, so stacking changes nothing);
  it is there so that code passing it to :func:`lamb_optax.lamb` can swap in this alias.

  Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
  """
  check_learning_rate(learning_rate)
  transforms.check_decay_rate(b1, "b1")
  transforms.check_decay_rate(b2, "b2")
  transforms.check_nonnegative(eps, "eps")
  transforms.check_nonnegative(eps_root, "eps_root")
  transforms.check_nonnegative(weight_decay, "weight_decay")
  check_dtype(mu_dtype, "mu_dtype")
  del stacked_axes  # element-wise: per-layer slices need no special treatment
  return optax.chain(
      transforms.scale_by_adam(
          b1, b2, eps, eps_root, bias_correction=bias_correction, mu_dtype=mu_dtype),
      optax.add_decayed_weights(weight_decay, decay_mask_for_optax(weight_decay_mask)),
      optax.scale_by_learning_rate(learning_rate),
  )
