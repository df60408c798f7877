"""The transforms optax lacks for the LAMB family, one per idea.

* :func:`scale_by_trust_ratio`: the layer-wise trust ratio (per layer slice of stacked tensors);
* :func:`scale_by_adam`: ``optax.scale_by_adam`` with a switch for bias correction;
* :func:`scale_by_nesterov_adam`: Nesterov-style Adam moments for N-LAMB and NN-LAMB;
* :func:`clip_by_global_norm`: ``optax.clip_by_global_norm`` with the norm taken in float32 (at
  least), as apex does, so that float16 gradients with a norm above 256 do not overflow.

Every transform takes any pytree of params (dicts, lists, tuples, NamedTuples, None leaves,
``nnx.State``, ``FrozenDict``, dataclasses, ``optax.masked``'s ``MaskedNode`` holes), real or
complex leaves (norms are ``sqrt(sum |x|²)``, ratios real), and keeps each state leaf's shape and
dtype across ``update`` (so states can be ``lax.scan``/``lax.cond`` carries, also under x64).
Hyperparameters may be traced (``optax.inject_hyperparams``), and ``jax.grad`` through ``update``
stays finite at zero-norm layers (meta-learned learning rates).

The LARS momentum of the paper's Algorithm 1 (``m = β1·m + (1-β1)·(g + λx)``) needs no new
transform: it is ``optax.add_decayed_weights`` followed by ``optax.ema(β1, debias=False)``.

Reference: Y. You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
Minutes", ICLR 2020 (arXiv:1904.00962), Algorithms 1 (LARS) and 2 (LAMB).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from lamb_optax import masks
from lamb_optax import validation
from lamb_optax.validation import Bounds

PyTree = Any


class ScaleByTrustRatioState(NamedTuple):
  """The trust ratios applied by the last update, for logging.

  ``ratios`` mirrors the params: for an adapted leaf, an array of shape
  ``leaf.shape[:stacked_axes]`` in :func:`ratio_dtype` of the leaf (float32 for float32,
  bfloat16, float16 and complex64 leaves; float64 for float64/complex128 ones) (a scalar for an
  ordinary leaf, one ratio per layer for a stacked one); ``None`` for a leaf outside the
  trust-ratio mask. Before the first update they are 1.

  Params without leaves give one empty float32 array of shape ``(0,)`` instead of a tree. That
  includes the leafless placeholder ``optax.tree_map_params`` initialises with, so there the
  ratios do not pass for a copy of the params (whose shardings or specs would not fit them):
  they go to its ``transform_non_params`` like the step count.
  """

  ratios: PyTree


def _no_ratios() -> jax.Array:
  return jnp.zeros((0,), jnp.float32)


def ratio_dtype(dtype: Any) -> jnp.dtype:
  """The real dtype norms and ratios of a ``dtype`` leaf are computed in: float32 at least.

  >>> ratio_dtype(jnp.bfloat16), ratio_dtype(jnp.complex64)
  (dtype('float32'), dtype('float32'))
  """
  return jnp.finfo(jnp.promote_types(dtype, jnp.float32)).dtype


def layer_norms(x: jax.Array, stacked_axes: int) -> jax.Array:
  """L2 norm ``sqrt(sum |x|²)`` of ``x`` per layer slice (over all but the first
  ``stacked_axes`` axes), real, in :func:`ratio_dtype` (float32 at least).

  >>> layer_norms(jnp.array([[3.0, 4.0], [0.0, 1.0]]), stacked_axes=1)
  Array([5., 1.], dtype=float32)
  >>> layer_norms(jnp.array([3j, 4.0]), stacked_axes=0)  # |3j|² + 4², not (3j)² + 4²
  Array(5., dtype=float32)
  """
  x = jnp.asarray(x)
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  sq = jnp.square(jnp.abs(x)) if jnp.iscomplexobj(x) else jnp.square(x)
  sum_sq = jnp.sum(sq, axis=tuple(range(stacked_axes, x.ndim)))
  # sqrt has an infinite derivative at 0, which turns a zero-norm layer's gradient (through
  # `update`, e.g. w.r.t. an injected learning rate) into NaN; the inner where keeps both
  # branches finite, as optax.safe_norm does. Per layer, so it costs nothing next to the sum.
  zero = sum_sq == 0
  return jnp.where(zero, 0, jnp.sqrt(jnp.where(zero, 1, sum_sq)))


def trust_ratio(
    param_norm: jax.Array,
    update_norm: jax.Array,
    *,
    min_norm: float = 0.0,
    trust_coefficient: float = 1.0,
    eps: float = 0.0,
    weight_norm_bounds: Bounds = None,
    trust_ratio_bounds: Bounds = None,
) -> jax.Array:
  """``trust_coefficient · φ(‖x‖) / (‖u‖ + eps)``, 1 where φ(‖x‖) or ‖u‖ is zero, then clamped.

  φ clips the weight norm to ``weight_norm_bounds`` (the paper's γ_l, γ_u); ``min_norm`` floors
  both norms first (optax's semantics). The zero rule (ratio 1) is tested *after* φ, as the
  paper's φ(0) = γ_l implies and as MXNet's ``lamb_update_phase2`` (GluonNLP's LAMB) does: with
  γ_l > 0 a zero-norm layer gets ``γ_l/‖u‖``; with φ(z) = z (no bounds) a zero weight gets 1
  (no scale to trust), and a zero update needs no scaling. ``trust_ratio_bounds`` clamps the
  final ratio (DeepSpeed, timm).

  >>> trust_ratio(jnp.array([2.0, 0.0]), jnp.array([4.0, 1.0]))
  Array([0.5, 1. ], dtype=float32)
  >>> trust_ratio(jnp.array([0.0]), jnp.array([4.0]), weight_norm_bounds=(0.5, 10.0))
  Array([0.125], dtype=float32)
  """
  param_norm = jnp.maximum(param_norm, min_norm)
  update_norm = jnp.maximum(update_norm, min_norm)
  phi = param_norm if weight_norm_bounds is None else jnp.clip(param_norm, *weight_norm_bounds)
  fallback = (phi == 0) | (update_norm == 0)
  # Divide by 1 where the ratio falls back, so that no 0/0 reaches the backward pass either.
  ratio = trust_coefficient * phi / jnp.where(fallback, 1, update_norm + eps)
  ratio = jnp.where(fallback, 1.0, ratio)
  if trust_ratio_bounds is not None:
    ratio = jnp.clip(ratio, *trust_ratio_bounds)
  return ratio


def _broadcast_to_leaf(ratio: jax.Array, leaf: jax.Array) -> jax.Array:
  return ratio.reshape(ratio.shape + (1,) * (leaf.ndim - ratio.ndim))


@masks.static_structure_args
def scale_by_trust_ratio(
    min_norm: float = 0.0,
    trust_coefficient: float = 1.0,
    eps: float = 0.0,
    *,
    mask: masks.MaskSpec = None,
    weight_norm_bounds: Bounds = None,
    trust_ratio_bounds: Bounds = None,
    stacked_axes: masks.StackedAxesSpec = None,
) -> optax.GradientTransformation:
  """Scales each layer's update by its trust ratio ``φ(‖x‖) / ‖u‖`` (LARS/LAMB layer adaptation).

  A superset of ``optax.scale_by_trust_ratio`` (same ``min_norm``, ``trust_coefficient``,
  ``eps`` and zero-norm rule), adding:

  * ``mask``: leaves to adapt (bool pytree, callable ``params -> bool pytree``, or None for all);
    the others pass through unscaled (ratio 1).
  * ``weight_norm_bounds=(lo, hi)``: the paper's φ, clipping ‖x‖ before the ratio.
  * ``trust_ratio_bounds=(lo, hi)``: a clamp of the ratio itself (DeepSpeed, timm).
  * ``stacked_axes``: per leaf, how many leading axes index independent layers (Flax ``scan``
    over layers). Norms and ratios are then per layer slice, so a stacked model is updated
    exactly like the same model with separate per-layer tensors.

  The state keeps the last ratios; read them with :func:`trust_ratios`.

  Args:
    min_norm: floor applied to both norms.
    trust_coefficient: multiplier of the ratio (LARS's η).
    eps: added to the update norm in the denominator.
    mask: which leaves get layer adaptation.
    weight_norm_bounds: (γ_l, γ_u) for the paper's φ, or None for φ(z) = z.
    trust_ratio_bounds: (lo, hi) clamp of the ratio, or None.
    stacked_axes: int pytree (or callable, or a single int) of leading layer axes per leaf.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> tx = scale_by_trust_ratio(stacked_axes={"w": 1})
    >>> params = {"w": jnp.array([[3.0, 4.0], [0.0, 2.0]])}
    >>> updates, state = tx.update({"w": jnp.ones((2, 2))}, tx.init(params), params)
    >>> updates["w"]  # layer 0: ‖x‖=5, ‖u‖=√2; layer 1: ‖x‖=2, ‖u‖=√2
    Array([[3.535534 , 3.535534 ],
           [1.4142135, 1.4142135]], dtype=float32)
    >>> trust_ratios(state)
    {'w': Array([3.535534 , 1.4142135], dtype=float32)}
  """
  validation.check_nonnegative(min_norm, "min_norm")
  validation.check_nonnegative(trust_coefficient, "trust_coefficient")
  validation.check_nonnegative(eps, "eps")
  validation.check_bounds(weight_norm_bounds, "weight_norm_bounds")
  validation.check_bounds(trust_ratio_bounds, "trust_ratio_bounds")
  ratio_kwargs: dict[str, Any] = dict(
      min_norm=min_norm,
      trust_coefficient=trust_coefficient,
      eps=eps,
      weight_norm_bounds=weight_norm_bounds,
      trust_ratio_bounds=trust_ratio_bounds,
  )

  def resolve(params):
    adapted = masks.resolve_mask(mask, params, "trust_ratio_mask")
    axes = masks.resolve_stacked_axes(stacked_axes, params)
    return adapted, axes

  def init_fn(params):
    if not jax.tree.leaves(params):
      return ScaleByTrustRatioState(ratios=_no_ratios())
    adapted, axes = resolve(params)
    ratios = jax.tree.map(
        lambda p, a, k: jnp.ones(jnp.shape(p)[:k], ratio_dtype(jnp.result_type(p))) if a else None,
        params, adapted, axes,
    )
    return ScaleByTrustRatioState(ratios=ratios)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(optax.NO_PARAMS_MSG)
    if not jax.tree.leaves(params):
      return updates, ScaleByTrustRatioState(ratios=_no_ratios())
    adapted, axes = resolve(params)
    # Work on flat leaf lists cut by the params' treedef: mapping a function that returns pairs
    # and unzipping them would mistake the user's own tuple nodes for pairs.
    treedef = jax.tree.structure(params)
    leaves = zip(treedef.flatten_up_to(updates), jax.tree.leaves(params),
                 treedef.flatten_up_to(adapted), treedef.flatten_up_to(axes), strict=True)
    new_updates: list[jax.Array] = []
    ratios: list[jax.Array | None] = []
    for u, p, a, k in leaves:
      if not a:
        new_updates.append(u)
        ratios.append(None)
        continue
      ratio = trust_ratio(layer_norms(p, k), layer_norms(u, k), **ratio_kwargs)
      ratio = ratio.astype(ratio_dtype(jnp.result_type(p)))
      new_updates.append(u * _broadcast_to_leaf(ratio, u).astype(u.dtype))
      ratios.append(ratio)
    return (treedef.unflatten(new_updates),
            ScaleByTrustRatioState(ratios=treedef.unflatten(ratios)))

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    *,
    bias_correction: bool = True,
    mu_dtype: chex.ArrayDType | None = None,
) -> optax.GradientTransformation:
  """``optax.scale_by_adam``, with a switch to turn bias correction off.

  With ``bias_correction=True`` this *is* ``optax.scale_by_adam``. Without it the update is
  ``m_t / (sqrt(v_t + eps_root) + eps)`` from the raw moments, as NVIDIA's and GluonNLP's LAMB
  allow. The state is ``optax.ScaleByAdamState`` either way, so checkpoints and tools that read
  ``count``/``mu``/``nu`` work with both.

  >>> import jax.numpy as jnp
  >>> tx = scale_by_adam(bias_correction=False)
  >>> updates, _ = tx.update(jnp.array([2.0]), tx.init(jnp.array([0.0])))
  >>> updates  # 0.1·2 / (sqrt(0.001·4) + 1e-6)
  Array([3.1622276], dtype=float32)
  """
  if bias_correction:
    return optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype)
  adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype)

  def update_fn(updates, state, params=None):
    del params
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), mu, nu)
    return updates, optax.ScaleByAdamState(
        count=optax.safe_increment(state.count),
        mu=optax.tree.cast(mu, mu_dtype),
        nu=nu,
    )

  return optax.GradientTransformation(adam.init, update_fn)


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

  Provenance, and what is not verified: the paper's appendix (N-LAMB and NN-LAMB, its
  Algorithms 3 and 4 as we understand them) could not be read: the search tools hold copies of
  arXiv:1904.00962 but return only their opening sections. So these equations are NOT verified
  against the appendix. What is verified: the N-LAMB first moment m̂ and v̂ equal optax's Nadam,
  ``optax.scale_by_adam(nesterov=True)`` (google-deepmind/optax ``optax/_src/transform.py``,
  read at commit 2edbcbe2390d), to float64 rounding (tests/test_family.py); optax's code notes
  that Dozat's Algorithm 2 also multiplies v̂ by β2 and that Nadam implementations omit it, as
  this one does. NN-LAMB's second-moment look-ahead (the same look-ahead applied to v with β2)
  has no independent source here. tests/reference/family_np.py transcribes these same equations
  in float64 NumPy; it checks the code against the equations above, not against the paper.

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
      # β·moment corrected with the *next* step's factor, plus the current gradient's share;
      # the factors are cast to the moment's real dtype so the update keeps the leaf's dtype.
      real = ratio_dtype(moment.dtype) if jnp.iscomplexobj(moment) else moment.dtype
      c_next = (b / (1 - b ** (t + 1))).astype(real)
      c_now = ((1 - b) / (1 - b ** t)).astype(real)
      return c_next * moment + c_now * g

    abs_sq = lambda g: jnp.square(jnp.abs(g)) if jnp.iscomplexobj(g) else jnp.square(g)
    m_hat = jax.tree.map(lambda m, g: look_ahead(m, g, b1), mu, updates)
    if nesterov_second_moment:
      v_hat = jax.tree.map(lambda v, g: look_ahead(v, abs_sq(g), b2), nu, updates)
    else:
      v_hat = jax.tree.map(lambda v: v / (1 - b2 ** t).astype(v.dtype), nu)
    updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), m_hat, v_hat)
    return updates, ScaleByNesterovAdamState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def promote_to_param_dtype() -> optax.GradientTransformation:
  """Casts each update up to its parameter's dtype where that is wider (float16 → float32).

  Mixed precision keeps float32 master params and produces float16 gradients; Adam squares the
  gradient for its second moment, and a float16 square of a clipped gradient (~1e-3) underflows.
  apex's ``FusedLAMB`` does this math in float32; promoting first does the same here.

  >>> import jax.numpy as jnp
  >>> tx = promote_to_param_dtype()
  >>> u, _ = tx.update(jnp.ones(2, jnp.float16), tx.init(None), jnp.zeros(2, jnp.float32))
  >>> u.dtype
  dtype('float32')
  """

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(optax.NO_PARAMS_MSG)
    promote = lambda u, p: u.astype(jnp.promote_types(u.dtype, p.dtype))
    return jax.tree.map(promote, updates, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def global_norm(updates: optax.Updates) -> jax.Array:
  """``sqrt(sum |u|²)`` over every leaf, accumulated in float32 at least (real).

  ``optax.global_norm`` sums in the leaves' dtype, so float16 gradients whose norm exceeds
  ``sqrt(65504) ≈ 256`` overflow to inf; apex's ``multi_tensor_l2norm`` accumulates in float32.

  >>> global_norm({"a": jnp.full(4, 200.0, jnp.float16), "b": jnp.ones(1, jnp.float16)})
  Array(400.00125, dtype=float32)
  """
  leaves = jax.tree.leaves(updates)
  if not leaves:
    return jnp.zeros([], jnp.float32)
  squares = [jnp.square(layer_norms(u, 0)) for u in leaves]
  dtype = functools.reduce(jnp.promote_types, [s.dtype for s in squares])
  return jnp.sqrt(sum(s.astype(dtype) for s in squares))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  """``optax.clip_by_global_norm`` with the norm in float32 at least: ``u ← u·c/max(‖u‖, c)``.

  The norm comes from :func:`global_norm`, the scale is applied in float32 and each leaf is cast
  back to its own dtype. apex's ``FusedLAMB`` clips this way (``max_grad_norm / max(global norm,
  max_grad_norm)``, the global norm from ``multi_tensor_l2norm`` in float32).

  >>> tx = clip_by_global_norm(1.0)
  >>> g = jnp.full(100_000, 1.0, jnp.float16)  # ‖g‖ = 316 > 256: inf in float16
  >>> u, _ = tx.update(g, tx.init(g))
  >>> float(u[0]) > 0  # optax.clip_by_global_norm would give 0 here
  True
  """
  validation.check_nonnegative(max_norm, "max_norm")

  def update_fn(updates, state, params=None):
    del params
    norm = global_norm(updates)
    scale = max_norm / jnp.maximum(norm, max_norm)
    updates = jax.tree.map(lambda u: (u * scale.astype(ratio_dtype(u.dtype))).astype(u.dtype),
                           updates)
    return updates, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _find_trust_ratio_states(opt_state: PyTree) -> list[ScaleByTrustRatioState]:
  is_state = lambda x: isinstance(x, ScaleByTrustRatioState)
  return [s for s in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(s)]


def trust_ratios(opt_state: PyTree) -> dict[str, jax.Array]:
  """The trust ratios of the last update, as a flat dict keyed by '/'-joined parameter path.

  Finds the :class:`ScaleByTrustRatioState` anywhere in ``opt_state`` (inside chains,
  ``optax.MultiSteps``, ``optax.apply_if_finite``...). Leaves outside the trust-ratio mask are
  absent; stacked leaves give one ratio per layer.

  >>> import jax.numpy as jnp, lamb_optax
  >>> tx = lamb_optax.lamb(1e-3)
  >>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
  >>> sorted(trust_ratios(tx.init(params)))
  ['dense/kernel']
  """
  found = _find_trust_ratio_states(opt_state)
  if len(found) != 1:
    raise ValueError(
        f"Expected exactly one ScaleByTrustRatioState in the optimizer state, found "
        f"{len(found)}. Pass the state of an optimizer built with lamb_optax's trust ratio."
    )
  leaves, _ = jax.tree_util.tree_flatten_with_path(found[0].ratios)
  if len(leaves) == 1 and jnp.shape(leaves[0][1]) == (0,):  # params without leaves
    return {}
  return {masks.path_to_str(path): ratio for path, ratio in leaves}

