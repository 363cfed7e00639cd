"""Autoregressive (IAF) cells of the project's PyTorch NVAE (official
``neural_ar_operations.py`` of NVlabs/NVAE), NCHW: raster-order masks (``channel_mask``,
``conv_mask``), the masked weight-normalised ``ARConv2d`` (the mask is not part of the
``state_dict``) and the shift-only flow cells ``CellAR`` / ``PairedCellAR`` (log-det 0).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from experiments.pytorch.nvae_ops import weight_norm_kernel


def channel_mask(c_in, g_in, c_out, zero_diag) -> np.ndarray:
  """[c_out, c_in/g_in] connectivity of the centre tap: output block i sees inputs < i
  (<= i when zero_diag is False). Depthwise (g_in == c_in): all ones, or zeros."""
  if not (c_in % c_out == 0 or c_out % c_in == 0):
    raise ValueError(f"channel counts {c_in} and {c_out} must divide one another")
  if g_in == c_in:
    return np.full([c_out, 1], 0.0 if zero_diag else 1.0, np.float32)
  if g_in != 1:
    raise ValueError(f"masked conv supports groups 1 or c_in; got {g_in}")
  mask = np.ones([c_out, c_in], np.float32)
  if c_out >= c_in:
    r = c_out // c_in
    for i in range(c_in):
      mask[i * r:(i + 1) * r, i + (0 if zero_diag else 1):] = 0
  else:
    r = c_in // c_out
    for i in range(c_out):
      mask[i, (i + (0 if zero_diag else 1)) * r:] = 0
  return mask


def conv_mask(k, c_in, g_in, c_out, zero_diag, mirror) -> np.ndarray:
  """[c_out, c_in/g_in, k, k] raster-order mask: rows above the centre, the centre row left
  of the centre, and the centre tap by ``channel_mask``; ``mirror`` flips it spatially."""
  m = (k - 1) // 2
  mask = np.ones([c_out, c_in // g_in, k, k], np.float32)
  mask[:, :, m:, :] = 0
  mask[:, :, m, :m] = 1
  mask[:, :, m, m] = channel_mask(c_in, g_in, c_out, zero_diag)
  if mirror:
    mask = mask[:, :, ::-1, ::-1].copy()
  return mask


class ARConv2d(nn.Conv2d):
  """Masked, weight-normalised convolution (the mask is not part of the state_dict)."""

  def __init__(self, c_in, c_out, k, stride=1, padding=0, dilation=1, groups=1, bias=False,
               masked=False, zero_diag=False, mirror=False):
    super().__init__(c_in, c_out, k, stride, padding, dilation, groups, bias)
    self.masked = masked
    if masked:
      if k % 2 != 1:
        raise ValueError(f"masked conv needs an odd kernel; got {k}")
      mask = torch.tensor(conv_mask(k, c_in, groups, c_out, zero_diag, mirror),
                          device=self.weight.device)
    else:
      mask = torch.ones((), device=self.weight.device)
    self.register_buffer("mask", mask, persistent=False)
    norm = torch.sqrt(torch.sum((self.weight.detach() * mask) ** 2, dim=[1, 2, 3]))
    self.log_weight_norm = nn.Parameter(torch.log(norm.view(-1, 1, 1, 1) + 1e-2))

  def normalize_weight(self) -> torch.Tensor:
    return weight_norm_kernel(self.log_weight_norm, self.weight * self.mask)

  def forward(self, x):
    return F.conv2d(x, self.normalize_weight(), self.bias, self.stride, self.padding,
                    self.dilation, self.groups)


class ARELUConv(nn.Module):
  """ELU -> masked WN conv whose initial norm is scaled by ``weight_init_coeff``."""

  def __init__(self, c_in, c_out, k, padding=0, dilation=1, masked=True, zero_diag=True,
               weight_init_coeff=1.0, mirror=False):
    super().__init__()
    self.conv_0 = ARConv2d(c_in, c_out, k, 1, padding, dilation, bias=True, masked=masked,
                           zero_diag=zero_diag, mirror=mirror)
    self.conv_0.log_weight_norm.data += math.log(weight_init_coeff)

  def forward(self, x):
    return self.conv_0(F.elu(x))


class ARInvertedResidual(nn.Module):
  """Masked 3x3 (x``ex`` channels, strictly causal) -> ELU -> masked depthwise kxk -> ELU."""

  def __init__(self, inz, inf, ex=6, dil=1, k=5, mirror=False):
    super().__init__()
    hidden = int(round(inz * ex))
    self.convz = nn.Sequential(
        ARConv2d(inz, hidden, 3, padding=1, masked=True, mirror=mirror, zero_diag=True),
        nn.ELU(inplace=True),
        ARConv2d(hidden, hidden, k, padding=dil * (k - 1) // 2, dilation=dil, groups=hidden,
                 masked=True, mirror=mirror, zero_diag=False),
        nn.ELU(inplace=True))
    self.hidden_dim = hidden

  def forward(self, z, ftr):
    del ftr   # the official cell ignores the encoder features
    return self.convz(z)


class CellAR(nn.Module):
  """Shift-only IAF step: z' = z - mu(z), mu autoregressive in z; log-det 0."""

  def __init__(self, num_z, num_ftr, num_c, mirror):
    super().__init__()
    self.cell_type = "ar_nn"
    self.conv = ARInvertedResidual(num_z, num_ftr, ex=6, mirror=mirror)
    self.mu = ARELUConv(self.conv.hidden_dim, num_z, 1, padding=0, masked=True, zero_diag=False,
                        weight_init_coeff=0.1, mirror=mirror)

  def forward(self, z, ftr):
    new_z = z - self.mu(self.conv(z, ftr))
    return new_z, torch.zeros_like(new_z)


class PairedCellAR(nn.Module):
  """Two IAF steps, the second with the spatially mirrored mask."""

  def __init__(self, num_z, num_ftr, num_c, arch=None):
    super().__init__()
    self.cell1 = CellAR(num_z, num_ftr, num_c, mirror=False)
    self.cell2 = CellAR(num_z, num_ftr, num_c, mirror=True)

  def forward(self, z, ftr):
    z, ld1 = self.cell1(z, ftr)
    z, ld2 = self.cell2(z, ftr)
    return z, ld1 + ld2
