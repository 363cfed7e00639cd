"""NVAE's inverse autoregressive flow cells (NVlabs/NVAE ``neural_ar_operations.py``):
masked ``ARConv2d`` kernels and the paired ``CellAR`` of the normalising-flow posterior.
"""

from __future__ import annotations


import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from dgmjax.nn.compute import DEFAULT, Compute
from dgmjax.nvae.layers import WNConv


def _channel_mask(c_in, g_in, c_out, zero_diag):
  """[c_out, c_in/g] connectivity of the centre tap (official ``channel_mask``)."""
  if g_in == c_in:
    return np.zeros((c_out, 1), np.float32) if zero_diag else np.ones((c_out, 1), np.float32)
  mask = np.ones([c_out, c_in], np.float32)
  if c_out >= c_in:
    r = c_out // c_in
    for i in range(c_in):
      mask[i * r:(i + 1) * r, i + 1:] = 0
      if zero_diag:
        mask[i * r:(i + 1) * r, i:i + 1] = 0
  else:
    r = c_in // c_out
    for i in range(c_out):
      mask[i:i + 1, (i + 1) * r:] = 0
      if zero_diag:
        mask[i:i + 1, i * r:(i + 1) * r] = 0
  return mask


def ar_conv_mask(kernel_size, c_in, groups, c_out, zero_diag, mirror):
  """HWIO mask [k,k,c_in/g,c_out] of the official ``create_conv_mask``: the rows above
  the centre and the taps left of it are visible; the centre tap connects channel
  groups causally (strictly when ``zero_diag``); ``mirror`` flips both spatial axes."""
  if c_in % c_out and c_out % c_in:
    raise ValueError(f"masked conv needs c_in | c_out or c_out | c_in; got {c_in}, {c_out}")
  m = (kernel_size - 1) // 2
  mask = np.ones([c_out, c_in // groups, kernel_size, kernel_size], np.float32)
  mask[:, :, m:, :] = 0
  mask[:, :, m, :m] = 1
  mask[:, :, m, m] = _channel_mask(c_in, groups, c_out, zero_diag)
  if mirror:
    mask = mask[:, :, ::-1, ::-1]
  return np.ascontiguousarray(np.transpose(mask, (2, 3, 1, 0)))


class CellAR(nn.Module):
  """One shift-only IAF cell (official ``CellAR``): z' = z - mu(z), log-det 0, with

      h = elu(convz_2(elu(convz_0(z))))  (masked 3x3 to 6*nz, masked depthwise 5x5),
      mu = mu/conv_0(elu(h))             (masked 1x1, bias, initial scale 0.1).

  Names: ``conv/convz_0``, ``conv/convz_2``, ``mu/conv_0`` as official. ``ftr`` (the
  encoder feature) is accepted and unused, as in the official code.
  """
  num_z: int
  mirror: bool = False
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, z, ftr=None):
    del ftr
    nz, hidden = self.num_z, 6 * self.num_z
    h = _ConvZ(nz, hidden, self.mirror, self.compute, name="conv")(z)
    mu = _MuConv(nz, hidden, self.mirror, self.compute, name="mu")(h)
    return z - mu.astype(z.dtype), jnp.zeros_like(z)


class _ConvZ(nn.Module):
  nz: int
  hidden: int
  mirror: bool
  compute: Compute

  @nn.compact
  def __call__(self, z):
    m0 = ar_conv_mask(3, self.nz, 1, self.hidden, True, self.mirror)
    h = WNConv(self.hidden, 3, padding=1, mask=m0, compute=self.compute, name="convz_0")(z)
    h = nn.elu(h)
    m2 = ar_conv_mask(5, self.hidden, self.hidden, self.hidden, False, self.mirror)
    h = WNConv(self.hidden, 5, padding=2, groups=self.hidden, mask=m2, compute=self.compute,
               name="convz_2")(h)
    return nn.elu(h)


class _MuConv(nn.Module):
  nz: int
  hidden: int
  mirror: bool
  compute: Compute

  @nn.compact
  def __call__(self, h):
    mask = ar_conv_mask(1, self.hidden, 1, self.nz, False, self.mirror)
    return WNConv(self.nz, 1, use_bias=True, mask=mask, init_log_scale=float(np.log(0.1)),
                  compute=self.compute, name="conv_0")(nn.elu(h))


class PairedCellAR(nn.Module):
  """Two IAF cells, the second with mirrored masks (official ``PairedCellAR``)."""
  num_z: int
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, z, ftr=None):
    z, ld1 = CellAR(self.num_z, False, self.compute, name="cell1")(z, ftr)
    z, ld2 = CellAR(self.num_z, True, self.compute, name="cell2")(z, ftr)
    return z, ld1 + ld2
