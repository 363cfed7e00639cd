"""Layers of the PyTorch LMConv baseline (``experiments/pytorch/lmconv.py``; official
``locally_masked_convolution.py`` and ``layers.py`` of ajayjain/lmconv), NCHW.

``locally_masked_conv2d`` / ``LocallyMaskedConv2d``: unfold (im2col) + mask + matmul, with
the official hand-written backward that recomputes the unfolded input instead of storing
it; ``WNLinear`` and ``Nin`` (weight-normalised 1x1 layers); the normalisations (``pono``,
``order_rescale``) and the gated residual block (``GatedResnet``, grouped in ``_Stage``).
Parameter names are the official ones (``state_dict`` keys).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _masked_unfold(x, mask, k1, k2, dilation, padding):
  """x [B,Cin,H,W], mask [M,k1*k2,L] (M in {1,B}) -> masked columns [B, Cin*k1*k2, L]."""
  b, cin = x.shape[:2]
  cols = F.unfold(x, (k1, k2), dilation=dilation, padding=padding)
  kk, l = k1 * k2, cols.shape[-1]
  return (cols.view(b, cin, kk, l) * mask.view(-1, 1, kk, l)).view(b, cin * kk, l)


class _LocallyMaskedConvFn(torch.autograd.Function):
  """out[b,o,p] = sum_{i,t} W[o,i,t] m[t,p] x[b,i,p + d t] + bias[o] + sum_t V[o,t] m[t,p].

  Backward recomputes the masked im2col instead of saving it (the official trade of
  compute for memory); the mask gets no gradient.
  """

  @staticmethod
  def forward(ctx, x, mask, weight, mask_weight, bias, dilation, padding):
    cout, _, k1, k2 = weight.shape
    h, w = x.shape[2:]
    cols = _masked_unfold(x, mask, k1, k2, dilation, padding)
    out = weight.reshape(cout, -1).matmul(cols)
    if bias is not None:
      out = out + bias.view(1, cout, 1)
    if mask_weight is not None:
      out = out + mask_weight.reshape(cout, -1).matmul(mask)
    ctx.save_for_backward(x, mask, weight, mask_weight)
    ctx.conv_args = (dilation, padding, (h, w), bias is not None)
    return out.view(x.shape[0], cout, h, w)

  @staticmethod
  def backward(ctx, grad_out):
    x, mask, weight, mask_weight = ctx.saved_tensors
    dilation, padding, (h, w), has_bias = ctx.conv_args
    cout, cin, k1, k2 = weight.shape
    kk = k1 * k2
    g = grad_out.reshape(grad_out.shape[0], cout, -1)  # [B, Cout, L]
    grad_x = grad_w = grad_mw = grad_b = None
    if ctx.needs_input_grad[0]:
      gcols = weight.reshape(cout, -1).t().matmul(g)  # [B, Cin*kk, L]
      b, _, l = gcols.shape
      gcols = (gcols.view(b, cin, kk, l) * mask.view(-1, 1, kk, l)).view(b, cin * kk, l)
      grad_x = F.fold(gcols, (h, w), (k1, k2), dilation=dilation, padding=padding)
    if ctx.needs_input_grad[2]:
      cols = _masked_unfold(x, mask, k1, k2, dilation, padding)
      grad_w = g.matmul(cols.transpose(1, 2)).sum(0).view_as(weight)
    if mask_weight is not None and ctx.needs_input_grad[3]:
      grad_mw = g.matmul(mask.transpose(-1, -2)).sum(0).view_as(mask_weight)
    if has_bias and ctx.needs_input_grad[4]:
      grad_b = g.sum(dim=(0, 2))
    return grad_x, None, grad_w, grad_mw, grad_b, None, None


def locally_masked_conv2d(x, mask, weight, bias=None, mask_weight=None, dilation: int = 1):
  """Functional locally masked convolution ("same" padding, stride 1).

  x: [B,Cin,H,W]; mask: [k*k, H*W] or [M, k*k, H*W] (M = 1 or B, per-example masks);
  weight: [Cout,Cin,k,k]; bias: [Cout]; mask_weight: [Cout,k,k]. Returns [B,Cout,H,W].
  """
  k1, k2 = weight.shape[2:]
  if mask.dim() == 2:
    mask = mask.unsqueeze(0)
  h, w = x.shape[2:]
  if mask.shape[-2:] != (k1 * k2, h * w):
    raise ValueError(f"mask must be [M, {k1 * k2}, {h * w}]; got {tuple(mask.shape)}")
  padding = (dilation * (k1 - 1) // 2, dilation * (k2 - 1) // 2)
  return _LocallyMaskedConvFn.apply(x, mask.to(device=x.device, dtype=x.dtype), weight,
                                    mask_weight, bias, dilation, padding)


def _weight_norm(v, g):
  """w = g * v / ||v||, the norm over every axis but the first (torch weight_norm, dim=0)."""
  norm = v.reshape(v.shape[0], -1).norm(dim=1).view(g.shape)
  return v * (g / norm)


class LocallyMaskedConv2d(nn.Module):
  """Official ``locally_masked_conv2d`` module; with ``weight_norm`` the names of
  ``torch.nn.utils.weight_norm`` (``weight_g`` [Cout,1,1,1], ``weight_v``)."""

  def __init__(self, in_channels, out_channels, kernel_size=3, dilation=1, bias=True,
               mask_weight=False, weight_norm=False):
    super().__init__()
    k = kernel_size
    self.dilation = dilation
    self.use_weight_norm = weight_norm
    weight = torch.empty(out_channels, in_channels, k, k)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if not weight_norm:
      self.weight = nn.Parameter(weight)
    self.mask_weight = None
    if mask_weight:
      self.mask_weight = nn.Parameter(torch.empty(out_channels, k, k))
      nn.init.kaiming_uniform_(self.mask_weight, a=math.sqrt(5))
    self.bias = None
    if bias:
      bound = 1.0 / math.sqrt(in_channels * k * k)
      self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))
    if weight_norm:
      self.weight_g = nn.Parameter(weight.reshape(out_channels, -1).norm(dim=1).view(-1, 1, 1, 1))
      self.weight_v = nn.Parameter(weight)

  def kernel(self):
    return _weight_norm(self.weight_v, self.weight_g) if self.use_weight_norm else self.weight

  def forward(self, x, mask):
    return locally_masked_conv2d(x, mask, self.kernel(), self.bias, self.mask_weight,
                                 self.dilation)


class WNLinear(nn.Module):
  """``weight_norm(nn.Linear)``: parameters ``bias`` [out], ``weight_g`` [out,1],
  ``weight_v`` [out,in]."""

  def __init__(self, dim_in, dim_out):
    super().__init__()
    lin = nn.Linear(dim_in, dim_out)
    self.bias = nn.Parameter(lin.bias.detach().clone())
    self.weight_g = nn.Parameter(lin.weight.detach().norm(dim=1, keepdim=True))
    self.weight_v = nn.Parameter(lin.weight.detach().clone())

  def forward(self, x):
    return F.linear(x, _weight_norm(self.weight_v, self.weight_g), self.bias)


class Nin(nn.Module):
  """Network-in-network (a 1x1 conv as a weight-normalised Linear over channels), NCHW."""

  def __init__(self, dim_in, dim_out):
    super().__init__()
    self.lin_a = WNLinear(dim_in, dim_out)

  def forward(self, x):
    return self.lin_a(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------
# Normalisations and the gated residual block
# ---------------------------------------------------------------------------

def concat_elu(x):
  """elu([x, -x]) along channels: [B,C,H,W] -> [B,2C,H,W]."""
  return F.elu(torch.cat([x, -x], dim=1))


def pono(x, mask=None, eps: float = 1e-5):
  """Positional normalisation: per location over channels, (x - mean) / sqrt(var + eps),
  var unbiased (torch ``var`` default), as the official ``PONO``. ``mask`` is unused."""
  del mask
  mean = x.mean(dim=1, keepdim=True)
  return (x - mean) / (x.var(dim=1, keepdim=True) + eps).sqrt()


def order_rescale(x, mask):
  """Divides each location by its number of visible taps (official ``OrderRescale``)."""
  counts = mask.sum(dim=-2)  # [H*W] or [M, H*W]
  return x / counts.reshape(-1, 1, *x.shape[2:])


def _identity(x, mask=None):
  del mask
  return x


class GatedResnet(nn.Module):
  """u + a * sigmoid(b), [a, b] = conv_out(dropout(concat_elu(norm(conv_input(concat_elu(u)))
  + nin_skip(concat_elu(skip))))), a normalised; official ``gated_resnet``."""

  def __init__(self, nf, conv_op, norm_op, skip: bool, dropout_prob: float):
    super().__init__()
    self.conv_input = conv_op(2 * nf, nf)
    self.norm = norm_op
    if skip:
      self.nin_skip = Nin(2 * nf, nf)
    self.dropout = nn.Dropout2d(dropout_prob) if dropout_prob > 0 else None
    self.conv_out = conv_op(2 * nf, 2 * nf)

  def forward(self, u, skip=None, mask=None):
    x = self.norm(self.conv_input(concat_elu(u), mask), mask)
    if skip is not None:
      x = x + self.nin_skip(concat_elu(skip))
    x = concat_elu(x)
    if self.dropout is not None:
      x = self.dropout(x)
    a, b = torch.chunk(self.conv_out(x, mask), 2, dim=1)
    return u + self.norm(a, mask) * torch.sigmoid(b)


class _Stage(nn.Module):
  """``OurPixelCNNLayer_up``/``_down``: a list ``u_stream`` of gated residual blocks."""

  def __init__(self, n, nf, conv_op, norm_op, skip, dropout_prob):
    super().__init__()
    self.u_stream = nn.ModuleList(
        [GatedResnet(nf, conv_op, norm_op, skip, dropout_prob) for _ in range(n)])

