"""Float64 NumPy transcriptions of a ResNet block and a ViT encoder block, written from the papers
(He et al. 2016 with the v1.5 stride placement; Dosovitskiy et al. 2021, eq. 1-4), independent of
Flax, to check lamb_optax.models.resnet / vit against."""

import math

import numpy as np

_erf = np.vectorize(math.erf)


def conv2d(x, kernel, stride):
  """NHWC convolution, 'same'-style padding k//2, kernel (kh, kw, cin, cout)."""
  kh, kw, _, cout = kernel.shape
  ph, pw = kh // 2, kw // 2
  xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  b, h, w, _ = x.shape
  oh, ow = (h + 2 * ph - kh) // stride + 1, (w + 2 * pw - kw) // stride + 1
  out = np.zeros((b, oh, ow, cout))
  for i in range(kh):
    for j in range(kw):
      patch = xp[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
      out += patch @ kernel[i, j]
  return out


def batch_norm_train(x, scale, bias, group_size, eps=1e-5):
  """Each group (rows k with the same k mod groups) normalised by its own biased moments."""
  b = x.shape[0]
  groups = b // group_size
  out = np.empty_like(x)
  for g in range(groups):
    rows = x[g::groups]
    mean = rows.mean(axis=(0, 1, 2))
    var = rows.var(axis=(0, 1, 2))
    out[g::groups] = (rows - mean) / np.sqrt(var + eps) * scale + bias
  return out


def bottleneck_block(x, p, stride, group_size):
  """ResNet v1.5 bottleneck: 1x1, 3x3 (strided), 1x1 expand, projection shortcut, ReLUs."""
  relu = lambda v: np.maximum(v, 0)
  bn = lambda v, name: batch_norm_train(v, p[name]["scale"], p[name]["bias"], group_size)
  y = relu(bn(conv2d(x, p["conv1"]["kernel"], 1), "bn1"))
  y = relu(bn(conv2d(y, p["conv2"]["kernel"], stride), "bn2"))
  y = bn(conv2d(y, p["conv3"]["kernel"], 1), "bn3")
  s = p["shortcut"]
  shortcut = batch_norm_train(conv2d(x, s["conv"]["kernel"], stride), s["bn"]["scale"],
                              s["bn"]["bias"], group_size)
  return relu(y + shortcut)


def layer_norm(x, scale, bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def vit_block(x, p, num_heads):
  """z' = MSA(LN(z)) + z; z = MLP(LN(z')) + z' with exact GELU."""
  b, n, d = x.shape
  hd = d // num_heads
  h = layer_norm(x, p["norm1"]["scale"], p["norm1"]["bias"])
  proj = lambda name: (h @ p[name]["kernel"].reshape(d, d) + p[name]["bias"].reshape(d)
                       ).reshape(b, n, num_heads, hd)
  q, k, v = proj("query"), proj("key"), proj("value")
  out = np.zeros((b, n, num_heads, hd))
  for head in range(num_heads):
    logits = q[:, :, head] @ k[:, :, head].transpose(0, 2, 1) / math.sqrt(hd)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out[:, :, head] = probs @ v[:, :, head]
  attended = out.reshape(b, n, d) @ p["out"]["kernel"].reshape(d, d) + p["out"]["bias"]
  x = x + attended
  h = layer_norm(x, p["norm2"]["scale"], p["norm2"]["bias"])
  hidden = h @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"]
  hidden = 0.5 * hidden * (1 + _erf(hidden / math.sqrt(2)))
  return x + hidden @ p["mlp_out"]["kernel"] + p["mlp_out"]["bias"]
