"""The LAMB family as chains (``optax.chain``) of small transforms: LAMB, LARS, NVLAMB,
N-LAMB/NN-LAMB and the AdamW baseline.

Shared conventions: ``weight_decay_mask`` (default: kernels and embeddings),
``trust_ratio_mask=None`` meaning "the decay mask", per-layer norms over ``stacked_axes``, the
learning rate as a float or ``optax.Schedule``, and validation at construction
(:mod:`lamb_optax.validation`).

Every alias works under ``optax.inject_hyperparams``: numeric hyperparameters (learning rate,
betas, eps, weight decay, max_grad_norm...) may be injected and changed in the state without
recompiling. Arguments that decide the program's structure (masks, ``stacked_axes``,
``mu_dtype``) stay static as given, callables and ints included, with or without
``static_args`` (:func:`lamb_optax.masks.static_structure_args`; optax would otherwise call a
callable with the step count as if it were a schedule).

Params may be any pytree the ecosystem hands an optimizer (``nnx.State`` under
``nnx.Optimizer``, ``FrozenDict``, dataclasses, ``optax.masked`` trees); dict masks match them by
key names, and the state works with ``optax.tree_map_params``.

>>> import jax, jax.numpy as jnp, optax, lamb_optax
>>> tx = optax.inject_hyperparams(lamb_optax.lamb)(learning_rate=0.1)
>>> params = {"w": {"kernel": jnp.ones((2, 2))}}
>>> state = tx.init(params)
>>> state.hyperparams["learning_rate"] = jnp.asarray(0.2)
>>> u, state = jax.jit(tx.update)({"w": {"kernel": jnp.ones((2, 2))}}, state, params)
>>> u["w"]["kernel"]  # the step follows the injected rate: η·‖x‖/2 per entry
Array([[-0.2, -0.2],
       [-0.2, -0.2]], dtype=float32)
"""

from __future__ import annotations

import chex
import optax

from lamb_optax import masks
from lamb_optax import transforms
from lamb_optax import validation
from lamb_optax.masks import MaskSpec
from lamb_optax.masks import StackedAxesSpec
from lamb_optax.validation import Bounds


@masks.static_structure_args
def lamb(
    learning_rate: float | optax.Schedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.01,
    weight_decay_mask: MaskSpec = masks.DEFAULT_WEIGHT_DECAY_MASK,
    trust_ratio_mask: MaskSpec = None,
    bias_correction: bool = True,
    weight_norm_bounds: Bounds = None,
    trust_ratio_bounds: Bounds = None,
    stacked_axes: StackedAxesSpec = None,
    mu_dtype: chex.ArrayDType | None = None,
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
  validation.check_adam(learning_rate, b1, b2, eps, eps_root, weight_decay, mu_dtype)
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


@masks.static_structure_args
def lars(
    learning_rate: float | optax.Schedule,
    momentum: float = 0.9,
    weight_decay: float = 0.01,
    weight_decay_mask: MaskSpec = masks.DEFAULT_WEIGHT_DECAY_MASK,
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

  ``optax.lars`` instead applies the trust ratio to ``g + λx`` *before* the momentum, and puts
  the learning rate *inside* it: its chain is ``add_decayed_weights``, ``scale_by_trust_ratio``,
  ``scale_by_learning_rate``, ``trace(momentum)`` (optax ``_src/alias.py``), i.e.
  ``m = β·m − η_t·ratio·(g + λx); x ← x + m``. ``ratio_before_momentum=True`` takes the same
  ratio but keeps the paper's dampening and the rate outside: ``m = β·m + (1-β)·ratio·(g + λx);
  x ← x − η_t·m``. With a constant rate the two coincide when ``η_ours·(1-β) = η_optax``; with a
  schedule they do not, because here the current η_t rescales the whole momentum (past steps
  included) while ``optax.lars`` fixes each step's rate when it enters the momentum. (optax's
  defaults also differ: ``trust_coefficient=0.001``, no weight decay, every leaf masked in.)

  Args:
    learning_rate: η, a float or schedule.
    momentum: β1.
    weight_decay: λ.
    weight_decay_mask: as in :func:`lamb_optax.lamb`.
    trust_ratio_mask: as in :func:`lamb_optax.lamb`.
    weight_norm_bounds: as in :func:`lamb_optax.lamb`.
    trust_ratio_bounds: as in :func:`lamb_optax.lamb`.
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
  validation.check_learning_rate(learning_rate)
  validation.check_decay_rate(momentum, "momentum")
  validation.check_nonnegative(weight_decay, "weight_decay")
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


@masks.static_structure_args
def nvlamb(
    learning_rate: float | optax.Schedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.01,
    weight_decay_mask: MaskSpec = masks.DEFAULT_WEIGHT_DECAY_MASK,
    trust_ratio_mask: MaskSpec = None,
    max_grad_norm: float | None = 1.0,
    bias_correction: bool = True,
    stacked_axes: StackedAxesSpec = None,
    mu_dtype: chex.ArrayDType | None = None,
    adapt_all_leaves: bool = False,
) -> optax.GradientTransformation:
  """NVIDIA's LAMB as its BERT recipe runs it: apex ``FusedLAMB`` with its default
  ``use_nvlamb=False``.

  LAMB (:func:`lamb_optax.lamb`) with the gradient first clipped to global norm
  ``max_grad_norm`` (``g ← g·c/max(‖g‖, c)`` over all leaves together, before the moments; the
  norm in float32 as apex computes it, :func:`lamb_optax.transforms.clip_by_global_norm`);
  ``None`` turns clipping off. Gradients narrower than their params (float16 gradients of float32
  master params) are first promoted to the params' dtype, as apex does its math in float32.

  Layer adaptation: by default only the leaves with weight decay (``trust_ratio_mask=None``
  means ``weight_decay_mask``), as apex's kernel does with ``use_nvlamb=False``; biases and
  LayerNorm parameters take plain Adam steps. ``adapt_all_leaves=True`` adapts every leaf, as
  ``FusedLAMB(use_nvlamb=True)`` does (or pass your own ``trust_ratio_mask``, not both).

  What the sources say, read in their code:

  * NVIDIA/apex ``apex/optimizers/fused_lamb.py``: ``__init__(..., bias_correction=True,
    betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, ..., max_grad_norm=1.0,
    use_nvlamb=False)``, documented as "use_nvlamb (boolean, optional): Apply adaptive learning
    rate to 0.0 weight decay parameter (default: False)"; the global gradient norm comes from
    ``multi_tensor_l2norm`` (float32).
  * NVIDIA/apex ``csrc/multi_tensor_lamb.cu``: "nvlamb: apply adaptive learning rate to all
    parameters / otherwise, only apply to those with non-zero weight decay",
    ``if (use_nvlamb || (decay != 0.0))``.
  * NVIDIA/DeepLearningExamples ``PyTorch/LanguageModeling/BERT/run_pretraining.py``:
    ``FusedLAMB(optimizer_grouped_parameters, lr=args.learning_rate)`` (no ``use_nvlamb``), with
    ``weight_decay`` 0.0 for parameters whose names contain ``bias``, ``gamma``, ``beta`` or
    ``LayerNorm`` and 0.01 for the others.

  One difference remains: apex's test is on the group's decay *value*, so with
  ``weight_decay=0`` it adapts nothing; here the leaves of ``weight_decay_mask`` are adapted
  whatever λ is (pass ``trust_ratio_mask=False`` for apex's behaviour at λ = 0).
  ``bias_correction`` is NVIDIA's switch (on by default, as in apex).

  >>> import jax.numpy as jnp, lamb_optax
  >>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
  >>> sorted(lamb_optax.trust_ratios(lamb_optax.nvlamb(1e-3).init(params)))
  ['dense/kernel']
  >>> tx = lamb_optax.nvlamb(1e-3, adapt_all_leaves=True)  # apex use_nvlamb=True
  >>> sorted(lamb_optax.trust_ratios(tx.init(params)))
  ['dense/bias', 'dense/kernel']

  Reference: NVIDIA DeepLearningExamples BERT (PyTorch) and apex ``FusedLAMB``; You et al.,
  ICLR 2020, https://arxiv.org/abs/1904.00962
  """
  if max_grad_norm is not None:
    validation.check_nonnegative(max_grad_norm, "max_grad_norm")
  if adapt_all_leaves:
    if trust_ratio_mask is not None:
      raise ValueError("Pass either `adapt_all_leaves=True` or a `trust_ratio_mask`, not both.")
    trust_ratio_mask = True
  inner = lamb(
      learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
      weight_decay_mask=weight_decay_mask, trust_ratio_mask=trust_ratio_mask,
      bias_correction=bias_correction, stacked_axes=stacked_axes, mu_dtype=mu_dtype,
  )
  clip = [] if max_grad_norm is None else [transforms.clip_by_global_norm(max_grad_norm)]
  return optax.chain(transforms.promote_to_param_dtype(), *clip, inner)


def _nesterov_lamb_alias(name: str, nesterov_second_moment: bool, doc: str):
  """Builds :func:`nlamb` or :func:`nnlamb`: the two take the same arguments, written once here,
  and differ only in whether the second moment gets the Nesterov look-ahead too."""

  def alias(
      learning_rate: float | optax.Schedule,
      b1: float = 0.9,
      b2: float = 0.999,
      eps: float = 1e-6,
      eps_root: float = 0.0,
      weight_decay: float = 0.01,
      weight_decay_mask: MaskSpec = masks.DEFAULT_WEIGHT_DECAY_MASK,
      trust_ratio_mask: MaskSpec = None,
      stacked_axes: StackedAxesSpec = None,
  ) -> optax.GradientTransformation:
    validation.check_adam(learning_rate, b1, b2, eps, eps_root, weight_decay)
    if trust_ratio_mask is None:
      trust_ratio_mask = weight_decay_mask
    return optax.chain(
        transforms.scale_by_nesterov_adam(
            b1, b2, eps, eps_root, nesterov_second_moment=nesterov_second_moment),
        optax.add_decayed_weights(weight_decay, decay_mask_for_optax(weight_decay_mask)),
        transforms.scale_by_trust_ratio(mask=trust_ratio_mask, stacked_axes=stacked_axes),
        optax.scale_by_learning_rate(learning_rate),
    )

  # Named and documented before decorating: the decorator copies both onto its wrapper.
  alias.__name__ = alias.__qualname__ = name
  alias.__doc__ = doc
  return masks.static_structure_args(alias)


nlamb = _nesterov_lamb_alias("nlamb", nesterov_second_moment=False, doc="""\
N-LAMB: LAMB with a Nesterov first moment (Nadam inside LAMB; the paper's appendix).

  ``r`` of :func:`lamb_optax.lamb` is replaced by the Nesterov estimate of
  :func:`lamb_optax.transforms.scale_by_nesterov_adam`; decay, trust ratio and masks are as in
  LAMB. Not verified against the paper: its appendix could not be read with the search tools, so
  the equations follow Dozat's Nadam with constant β1, checked against ``optax.scale_by_adam(
  nesterov=True)`` (the transform's docstring gives the equations and what was checked).
  Arguments as :func:`lamb_optax.lamb`'s, without its bounds, bias-correction switch and
  ``mu_dtype``.

  >>> import jax.numpy as jnp, lamb_optax
  >>> tx = lamb_optax.nlamb(0.1)
  >>> params = {"w": {"kernel": jnp.ones((2, 2))}}
  >>> u, _ = tx.update({"w": {"kernel": jnp.ones((2, 2))}}, tx.init(params), params)
  >>> u["w"]["kernel"]  # the trust ratio fixes the per-entry step at η·‖x‖/2
  Array([[-0.1, -0.1],
         [-0.1, -0.1]], dtype=float32)

  Reference: You et al., ICLR 2020, https://arxiv.org/abs/1904.00962, appendix (N-LAMB).
  """)

nnlamb = _nesterov_lamb_alias("nnlamb", nesterov_second_moment=True, doc="""\
NN-LAMB: N-LAMB with the Nesterov look-ahead on the second moment too (paper's appendix).

  Same arguments as :func:`nlamb`. Not verified against the paper: its appendix could not be
  read with the search tools, and the second-moment look-ahead (v̂ = β2·v_t/(1-β2^{t+1}) +
  (1-β2)·g_t²/(1-β2^t)) has no independent source here; see
  :func:`lamb_optax.transforms.scale_by_nesterov_adam`.

  >>> import inspect, jax.numpy as jnp, lamb_optax
  >>> inspect.signature(lamb_optax.nnlamb) == inspect.signature(lamb_optax.nlamb)
  True
  >>> tx = lamb_optax.nnlamb(0.1)
  >>> params = {"w": {"kernel": jnp.ones((2, 2))}}
  >>> u, _ = tx.update({"w": {"kernel": jnp.ones((2, 2))}}, tx.init(params), params)
  >>> u["w"]["kernel"]
  Array([[-0.1, -0.1],
         [-0.1, -0.1]], dtype=float32)

  Reference: You et al., ICLR 2020, https://arxiv.org/abs/1904.00962, appendix (NN-LAMB).
  """)


@masks.static_structure_args
def adamw_baseline(
    learning_rate: float | optax.Schedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.01,
    weight_decay_mask: MaskSpec = masks.DEFAULT_WEIGHT_DECAY_MASK,
    bias_correction: bool = True,
    stacked_axes: StackedAxesSpec = None,
    mu_dtype: chex.ArrayDType | None = None,
    max_grad_norm: float | None = None,
) -> optax.GradientTransformation:
  """AdamW as BERT's baseline uses it: :func:`lamb_optax.lamb` without the trust ratio.

  ``x ← x − η·(m̂/(sqrt(v̂)+ε) + λ·x)`` with decoupled decay on the same default mask as LAMB
  (no decay on biases/LayerNorm), ε = 1e-6; so swapping ``lamb_optax.lamb`` for
  ``lamb_optax.adamw_baseline`` changes one line and nothing else (Nado et al. 2021 show a
  tuned AdamW matches LAMB at batch 32k).

  Devlin et al.'s BERT optimizer is this with ``bias_correction=False, max_grad_norm=1.0``:
  google-research/bert ``optimization.py`` clips with ``tf.clip_by_global_norm(grads,
  clip_norm=1.0)`` ("This is how the model was pre-trained") and its
  ``AdamWeightDecayOptimizer`` steps by ``next_m / (tf.sqrt(next_v) + epsilon)`` from the raw
  moments (no bias correction), weight_decay_rate 0.01, ε 1e-6, excluding "LayerNorm",
  "layer_norm", "bias" from decay. ``max_grad_norm`` clips the gradient to that global norm
  before the moments (:func:`lamb_optax.transforms.clip_by_global_norm`); ``None`` (the
  default) does not clip.

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
  validation.check_adam(learning_rate, b1, b2, eps, eps_root, weight_decay, mu_dtype)
  if max_grad_norm is not None:
    validation.check_nonnegative(max_grad_norm, "max_grad_norm")
  del stacked_axes  # element-wise: per-layer slices need no special treatment
  adamw = optax.chain(
      transforms.scale_by_adam(
          b1, b2, eps, eps_root, bias_correction=bias_correction, mu_dtype=mu_dtype),
      optax.add_decayed_weights(weight_decay, decay_mask_for_optax(weight_decay_mask)),
      optax.scale_by_learning_rate(learning_rate),
  )
  if max_grad_norm is None:
    return adamw
  return optax.chain(transforms.clip_by_global_norm(max_grad_norm), adamw)


def decay_mask_for_optax(mask: MaskSpec):
  """Adapts our mask spec (which also accepts None/True for 'all') to ``optax.masked``."""
  if mask is None or mask is True:
    return None
  return lambda params: masks.resolve_mask(mask, params, "weight_decay_mask")
