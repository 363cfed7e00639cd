"""NVAE's residual cells (Vahdat & Kautz 2020, NVlabs/NVAE ``model.py`` ``Cell``,
``EncCombinerCell``, ``DecCombinerCell``), NHWC, built from ``dgmjax.nvae.layers``.

``Cell(cell_type)``: the encoder's residual cell (BN-Swish-conv x2 + SE) and the
decoder's (1x1 expand, depthwise 5x5, 1x1 project, BN, Swish, SE), with the official
up/down-sampling variants and skip paths.
"""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.nn.compute import DEFAULT, Compute
from dgmjax.nvae.layers import (SE, BatchNorm, BNSwishConv, ConvBNSwish, FactorizedReduce,
                                UpSkip, WNConv, upsample_nearest)


class InvertedResidual(nn.Module):
  """Generative cell body (official ``InvertedResidual``, mconv_e{ex}k5g0):

      [nearest x2 if upsample] -> bn_in -> expand (1x1, ex*C_in, BN, Swish)
      -> depthwise (5x5, BN, Swish) -> project (1x1) -> bn_out

  Official Sequential ``conv.{i}`` -> names: bn_in (``.bn``), expand, depthwise, project,
  bn_out (``.bn``); the indices shift by one when up-sampling.
  """
  features: int
  ex: int = 6
  upsample: bool = False
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, x, train: bool):
    hidden = int(round(x.shape[-1] * self.ex))
    if self.upsample:
      x = upsample_nearest(x)
    cm = self.compute
    x = BatchNorm(compute=cm, name="bn_in")(x, train)
    x = ConvBNSwish(hidden, 1, compute=cm, name="expand")(x, train)
    x = ConvBNSwish(hidden, 5, groups=hidden, compute=cm, name="depthwise")(x, train)
    x = WNConv(self.features, 1, use_bias=False, weight_norm=False, compute=cm,
               name="project")(x)
    return BatchNorm(compute=cm, name="bn_out")(x, train)


# Cell types of the official ``res_mbconv`` architecture (utils.get_arch_cells).
CELL_TYPES = ("normal_pre", "down_pre", "normal_enc", "down_enc", "normal_dec", "up_dec",
              "normal_post", "up_post")


class Cell(nn.Module):
  """Residual cell: ``skip(x) + 0.1 * SE(ops(x))`` (official ``Cell``, arch res_mbconv).

  - normal_pre/normal_enc: ops_0, ops_1 = BNSwishConv(3x3); identity skip.
  - down_pre/down_enc: the same with stride 2 in ops_0; skip = FactorizedReduce.
  - normal_dec/normal_post: ops_0 = InvertedResidual (ex 6 in the decoder, 3 in post).
  - up_dec/up_post: the same up-sampling first; skip = UpSkip.
  ``features`` is the output width (2x the input for down, 1/2 for up).
  """
  features: int
  cell_type: str
  use_se: bool = True
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, x, train: bool):
    t, cm = self.cell_type, self.compute
    if t not in CELL_TYPES:
      raise ValueError(f"unknown cell type {t!r}; expected one of {CELL_TYPES}")
    if t.startswith("down"):
      skip = FactorizedReduce(self.features, compute=cm, name="skip")(x)
    elif t.startswith("up"):
      skip = UpSkip(self.features, compute=cm, name="skip")(x)
    else:
      skip = x
    if t.endswith("pre") or t.endswith("enc"):
      s = BNSwishConv(self.features, stride=2 if t.startswith("down") else 1, compute=cm,
                      name="ops_0")(x, train)
      s = BNSwishConv(self.features, compute=cm, name="ops_1")(s, train)
    else:
      s = InvertedResidual(self.features, ex=6 if t.endswith("dec") else 3,
                           upsample=t.startswith("up"), compute=cm, name="ops_0")(x, train)
    if self.use_se:
      s = SE(name="se")(s)
    return cm.cast(cm.cast(skip) + 0.1 * s)


class EncCombiner(nn.Module):
  """Encoder combiner: x_enc + conv(s_dec) with ``conv`` a 1x1 WNConv (bias)."""
  features: int
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, x_enc, s_dec):
    return x_enc + WNConv(self.features, 1, use_bias=True, compute=self.compute,
                          name="conv")(s_dec)


class DecCombiner(nn.Module):
  """Decoder combiner: conv(concat[s, z]) with ``conv`` a 1x1 WNConv (bias)."""
  features: int
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, s, z):
    x = jnp.concatenate([self.compute.cast(s), self.compute.cast(z)], axis=-1)
    return WNConv(self.features, 1, use_bias=True, compute=self.compute, name="conv")(x)


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))
