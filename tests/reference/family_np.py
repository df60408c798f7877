"""LARS, NVLAMB, N-LAMB/NN-LAMB and AdamW, transcribed in float64 NumPy (independent of lamb_optax).

All functions take {name: array} params, a list of {name: array} grads (one per step), a list of
learning rates, and {name: bool} decay/adapt masks (default: every leaf); they return final params.

LARS (You et al. 2020, Algorithm 1), per layer:
  m = b1 m + (1-b1)(g + wd x);  x <- x - lr * ||x||/||m|| * m
  ratio_before_momentum: m = b1 m + (1-b1) * ratio(x, g + wd x) * (g + wd x);  x <- x - lr m
NVLAMB: g <- g * min(1, c / ||g||_global), then LAMB (Algorithm 2).
N-LAMB / NN-LAMB (constant betas; not verified against the paper's appendix), see nesterov_lamb.
AdamW: x <- x - lr (m^/(sqrt(v^)+eps) + wd x).
"""
from __future__ import annotations

import numpy as np

from reference import lamb_np


def _f64(tree):
  return {k: np.asarray(v, np.float64).copy() for k, v in tree.items()}


def _masks(x, decay, adapt):
  return decay or {k: True for k in x}, adapt or {k: True for k in x}


def lars(params, grads_per_step, lrs, *, momentum=0.9, weight_decay=0.01, decay=None,
         adapt=None, stacked_axes=None, ratio_before_momentum=False):
  x = _f64(params)
  decay, adapt = _masks(x, decay, adapt)
  stacked_axes = stacked_axes or {k: 0 for k in x}
  m = {k: np.zeros_like(v) for k, v in x.items()}
  for grads, lr in zip(grads_per_step, lrs, strict=True):
    for k in x:
      d = np.asarray(grads[k], np.float64) + (weight_decay * x[k] if decay[k] else 0.0)
      if ratio_before_momentum:
        if adapt[k]:
          d, _ = lamb_np.layerwise_scale(x[k], d, stacked_axes[k])
        m[k] = momentum * m[k] + (1 - momentum) * d
        step = m[k]
      else:
        m[k] = momentum * m[k] + (1 - momentum) * d
        step = lamb_np.layerwise_scale(x[k], m[k], stacked_axes[k])[0] if adapt[k] else m[k]
      x[k] = x[k] - lr * step
  return x


def clip_by_global_norm(grads, max_norm):
  norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in grads.values()))
  scale = 1.0 if norm <= max_norm else max_norm / norm
  return {k: np.asarray(g, np.float64) * scale for k, g in grads.items()}


def nvlamb(params, grads_per_step, lrs, *, max_grad_norm=1.0, **lamb_kwargs):
  clipped = [clip_by_global_norm(g, max_grad_norm) for g in grads_per_step]
  return lamb_np.lamb(params, clipped, lrs, **lamb_kwargs)[0]


def nesterov_lamb(params, grads_per_step, lrs, *, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01,
                  decay=None, adapt=None, nesterov_second_moment=False):
  """N-LAMB (nesterov_second_moment=False) / NN-LAMB (True), constant betas, step t >= 1.

  Not a transcription of the paper: its appendix (N-LAMB / NN-LAMB) could not be read with the
  search tools, so these are the equations lamb_optax.transforms.scale_by_nesterov_adam
  documents (Dozat's Nadam with constant b1; the N-LAMB moment is also checked against
  optax.scale_by_adam(nesterov=True) in tests/test_family.py):
    m = b1 m + (1-b1) g;   v = b2 v + (1-b2) g^2
    m^ = b1 m / (1 - b1^(t+1)) + (1-b1) g / (1 - b1^t)
    v^ = v / (1 - b2^t)                                       (N-LAMB)
    v^ = b2 v / (1 - b2^(t+1)) + (1-b2) g^2 / (1 - b2^t)      (NN-LAMB)
    u = m^/(sqrt(v^)+eps) + wd x;  x <- x - lr ||x||/||u|| u
  """
  x = _f64(params)
  decay, adapt = _masks(x, decay, adapt)
  m = {k: np.zeros_like(a) for k, a in x.items()}
  v = {k: np.zeros_like(a) for k, a in x.items()}
  for t, (grads, lr) in enumerate(zip(grads_per_step, lrs, strict=True), start=1):
    for k in x:
      g = np.asarray(grads[k], np.float64)
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g * g
      m_hat = b1 * m[k] / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1 ** t)
      if nesterov_second_moment:
        v_hat = b2 * v[k] / (1 - b2 ** (t + 1)) + (1 - b2) * g * g / (1 - b2 ** t)
      else:
        v_hat = v[k] / (1 - b2 ** t)
      u = m_hat / (np.sqrt(v_hat) + eps)
      if decay[k]:
        u = u + weight_decay * x[k]
      if adapt[k]:
        u, _ = lamb_np.layerwise_scale(x[k], u, 0)
      x[k] = x[k] - lr * u
  return x


def adamw(params, grads_per_step, lrs, *, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01,
          decay=None):
  x = _f64(params)
  decay, _ = _masks(x, decay, None)
  m = {k: np.zeros_like(a) for k, a in x.items()}
  v = {k: np.zeros_like(a) for k, a in x.items()}
  for t, (grads, lr) in enumerate(zip(grads_per_step, lrs, strict=True), start=1):
    for k in x:
      g = np.asarray(grads[k], np.float64)
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g * g
      u = (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)
      x[k] = x[k] - lr * (u + (weight_decay * x[k] if decay[k] else 0.0))
  return x
