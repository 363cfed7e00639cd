"""Glow's space-to-depth reshapes (openai/glow ``squeeze2d``, rosinality/glow-pytorch):
volume-preserving bijectors, log_det = 0.

    squeeze2d:   [B,H,W,C] -> [B,H/2,W/2,4C], out[b,i,j,4c + 2dh + dw] = x[b,2i+dh,2j+dw,c]
    unsqueeze2d: its inverse, [B,H,W,4C] -> [B,2H,2W,C]
"""

from __future__ import annotations

import jax.numpy as jnp

from dgmjax.flows.bijectors import Bijector, check_nhwc


def squeeze2d(x):
  """[B,H,W,C] -> [B,H/2,W/2,4C]; output channel c*4 + 2*dh + dw (openai/glow, rosinality)."""
  b, h, w, c = check_nhwc(x, "squeeze", even_spatial=True)
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze2d(x):
  """Inverse of ``squeeze2d``: [B,H,W,4C] -> [B,2H,2W,C]."""
  b, h, w, c4 = check_nhwc(x, "unsqueeze")
  if c4 % 4:
    raise ValueError(f"unsqueeze expects a channel count divisible by 4, shape [B,H,W,4c]; "
                     f"got {tuple(x.shape)}")
  c = c4 // 4
  x = x.reshape(b, h, w, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, 2 * h, 2 * w, c)


class Squeeze(Bijector):
  """Space-to-depth by 2: forward ``squeeze2d``, inverse ``unsqueeze2d``; log_det = 0."""

  def __call__(self, x, inverse=False):
    out = unsqueeze2d(x) if inverse else squeeze2d(x)
    return out, jnp.zeros((x.shape[0],), jnp.float32)


class Unsqueeze(Bijector):
  """Depth-to-space by 2: forward ``unsqueeze2d``, inverse ``squeeze2d``; log_det = 0."""

  def __call__(self, x, inverse=False):
    out = squeeze2d(x) if inverse else unsqueeze2d(x)
    return out, jnp.zeros((x.shape[0],), jnp.float32)
