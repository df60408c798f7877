"""LAMB, transcribed from You et al. (ICLR 2020), Algorithm 2, in float64 NumPy.

Per layer (one array, or one slice along the stacked axes), step t >= 1:
  m_t = b1 m + (1 - b1) g          v_t = b2 v + (1 - b2) g^2
  m^ = m_t / (1 - b1^t)            v^ = v_t / (1 - b2^t)         (if bias correction)
  r = m^ / (sqrt(v^ + eps_root) + eps)
  u = r + wd * x                                                  (if the layer is decayed)
  x <- x - lr_t * phi(||x||) / ||u|| * u                          (if the layer is adapted)
with phi(z) = clip(z, lo, hi), the ratio set to 1 when phi(||x||) or ||u|| is 0 (the paper's
phi(0) = lo: a zero layer gets lo/||u|| when lo > 0, as MXNet's lamb_update_phase2), and an optional
clamp of the ratio (DeepSpeed/timm's extension).
"""
from __future__ import annotations

import itertools

import numpy as np


def _ratio(x, u, weight_norm_bounds, trust_ratio_bounds):
  x_norm = np.sqrt(np.sum(np.abs(x) ** 2))
  u_norm = np.sqrt(np.sum(np.abs(u) ** 2))
  phi = x_norm if weight_norm_bounds is None else min(max(x_norm, weight_norm_bounds[0]),
                                                      weight_norm_bounds[1])
  ratio = 1.0 if phi == 0 or u_norm == 0 else phi / u_norm
  if trust_ratio_bounds is not None:
    ratio = min(max(ratio, trust_ratio_bounds[0]), trust_ratio_bounds[1])
  return ratio


def layerwise_scale(x, u, stacked_axes, weight_norm_bounds=None, trust_ratio_bounds=None):
  """Returns (u scaled per layer slice, array of ratios of shape x.shape[:stacked_axes])."""
  out = np.empty_like(u)
  ratios = np.empty(x.shape[:stacked_axes])
  for index in itertools.product(*(range(n) for n in x.shape[:stacked_axes])):
    ratios[index] = _ratio(x[index], u[index], weight_norm_bounds, trust_ratio_bounds)
    out[index] = ratios[index] * u[index]
  return out, ratios


def lamb(params, grads_per_step, learning_rates, *, b1=0.9, b2=0.999, eps=1e-6, eps_root=0.0,
         weight_decay=0.01, decay=None, adapt=None, bias_correction=True,
         weight_norm_bounds=None, trust_ratio_bounds=None, stacked_axes=None):
  """Runs LAMB on dicts of float64 arrays keyed by name.

  Args:
    params: {name: array}.
    grads_per_step: list of {name: array}, one dict per step.
    learning_rates: list of learning rates, one per step.
    decay / adapt: {name: bool}; default every leaf.
    stacked_axes: {name: int}; default 0.

  Returns:
    (final params, list of per-step {name: ratios} for adapted leaves).
  """
  x = {k: np.asarray(v, np.float64).copy() for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in x.items()}
  v = {k: np.zeros_like(a) for k, a in x.items()}
  decay = decay or {k: True for k in x}
  adapt = adapt or {k: True for k in x}
  stacked_axes = stacked_axes or {k: 0 for k in x}
  history = []
  for t, (grads, lr) in enumerate(zip(grads_per_step, learning_rates, strict=True), start=1):
    step_ratios = {}
    for k in x:
      g = np.asarray(grads[k], np.float64)
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g * g
      m_hat = m[k] / (1 - b1 ** t) if bias_correction else m[k]
      v_hat = v[k] / (1 - b2 ** t) if bias_correction else v[k]
      u = m_hat / (np.sqrt(v_hat + eps_root) + eps)
      if decay[k]:
        u = u + weight_decay * x[k]
      if adapt[k]:
        u, step_ratios[k] = layerwise_scale(x[k], u, stacked_axes[k], weight_norm_bounds,
                                            trust_ratio_bounds)
      x[k] = x[k] - lr * u
    history.append(step_ratios)
  return x, history
