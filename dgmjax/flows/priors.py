"""Gaussian priors of Glow's multi-scale latents.

- ``SplitPrior`` (openai/glow ``split2d``): z = [z1, z2] split in channel halves;
  p(z2 | z1) = N(mean, exp(logsd)^2) with [mean, logsd] = ZeroConv(z1).
- ``TopPrior``: p(z_top) = N(mean, exp(logsd)^2) with [mean, logsd] = ZeroConv(0) when
  ``learn_top`` (a learned constant, spatially varying only through the padding, as in
  both official codes) else 0; with ``num_classes`` (openai ``ycond``) a zero-initialised
  linear map of the one-hot label is added to [mean, logsd].
- ``ClassHead``: logits = Linear_zeros(mean_{h,w} z_top), openai's class-prediction loss.

Shapes: z1, z2, z_top: float32 [B,h,w,c]; log-probabilities: float32 [B].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax.distributions.normal import normal_log_prob, normal_sample
from dgmjax.flows.bijectors import check_nhwc
from dgmjax.flows.conditioners import ZeroConv
from dgmjax.nn.compute import DEFAULT, Compute


def gaussian_log_prob(z, mean, logsd):
  """sum over (H,W,C) of log N(z; mean, exp(logsd)^2): [B,H,W,C] -> [B]."""
  return jnp.sum(normal_log_prob(z, mean, logsd), axis=(1, 2, 3))


def gaussian_sample(rng, mean, logsd, temperature=1.0):
  """z = mean + temperature * exp(logsd) * eps, eps ~ N(0, I): [B,H,W,C]."""
  return normal_sample(rng, mean, logsd, temperature)


class SplitPrior(nn.Module):
  """p(z2 | z1) for split2d; ``__call__(z1) -> (mean, logsd)`` of z2, each shaped like z1.

  The ZeroConv maps c -> 2c channels: the first c are the mean, the last c the log
  standard deviation (rosinality/glow-pytorch ``Block.prior``; openai interleaves them,
  an equivalent relabelling of a zero-initialised convolution).
  """
  edge_bias: bool = False
  compute: Compute = DEFAULT   # how the ZeroConv runs (dgmjax.nn.compute)

  @nn.compact
  def __call__(self, z1):
    _, _, _, c = check_nhwc(z1, "SplitPrior")
    h = ZeroConv(2 * c, self.edge_bias, compute=self.compute, name="conv")(z1)
    return h[..., :c], h[..., c:]

  def split(self, z):
    """z [B,h,w,2c] -> (z1, z2, log p(z2 | z1) [B])."""
    check_nhwc(z, "SplitPrior.split", even_channels=True)
    c = z.shape[-1] // 2
    z1, z2 = z[..., :c], z[..., c:]
    mean, logsd = self(z1)
    return z1, z2, gaussian_log_prob(z2, mean, logsd)

  def sample(self, z1, rng, temperature=1.0):
    mean, logsd = self(z1)
    return gaussian_sample(rng, mean, logsd, temperature)


class TopPrior(nn.Module):
  """p(z_top | y): ``__call__(shape=(h, w, c), batch, labels=None) -> (mean, logsd)``."""
  learn_top: bool = True
  num_classes: int | None = None
  edge_bias: bool = False
  compute: Compute = DEFAULT   # how the ZeroConv runs (dgmjax.nn.compute)

  @nn.compact
  def __call__(self, shape, batch: int, labels=None):
    h, w, c = shape
    if self.learn_top:
      out = ZeroConv(2 * c, self.edge_bias, compute=self.compute,
                     name="conv")(jnp.zeros((1, h, w, c), jnp.float32))
    else:
      out = jnp.zeros((1, h, w, 2 * c), jnp.float32)
    out = jnp.broadcast_to(out, (batch, h, w, 2 * c))
    if self.num_classes:
      if labels is None:
        raise ValueError(f"this Glow is class-conditional (num_classes={self.num_classes}): "
                         f"pass labels, int [B] in [0, {self.num_classes})")
      onehot = jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)
      cond = nn.Dense(2 * c, kernel_init=nn.initializers.zeros, name="ycond")(onehot)
      out = out + cond[:, None, None, :]
    return out[..., :c], out[..., c:]


class ClassHead(nn.Module):
  """Class logits [B, num_classes] from the spatial mean of z_top (zero-initialised)."""
  num_classes: int

  @nn.compact
  def __call__(self, z_top):
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                    name="classifier")(jnp.mean(z_top, axis=(1, 2)))
