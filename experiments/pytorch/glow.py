"""The project's PyTorch Glow baseline, with rosinality/glow-pytorch's parameter names.

Same architecture and ``state_dict`` layout as rosinality/glow-pytorch ``model.py``
(see tests/testdata/state_dicts/glow_*), written for parity tests and
benchmarks: images are NCHW float tensors in the dequantised space [-1/2, 1/2).

    Glow(in_channel, n_flow, n_block, affine, conv_lu, filter_size)
    log_p, log_det, zs = model(x)          # [B], [B], per-level latents (z2's and z_top)
    x = model.reverse(zs, reconstruct=True)

Layout per block i and step k: ``blocks.i.flows.k.actnorm.{loc,scale,initialized}``,
``...invconv.{w_p,u_mask,l_mask,s_sign,l_eye,w_l,w_s,w_u}`` (or ``invconv.weight``
with ``conv_lu=False``; the last block always uses LU as in the reference),
``...coupling.net.{0,2}.{weight,bias}``, ``...coupling.net.4.{scale,conv.weight,conv.bias}``,
``blocks.i.prior.{scale,conv.weight,conv.bias}``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ActNorm(nn.Module):
  """y = scale * (x + loc); initialised from the first batch it sees (unbiased std)."""

  def __init__(self, channels):
    super().__init__()
    self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
    self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))
    self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

  @torch.no_grad()
  def _data_init(self, x):
    per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)
    self.loc.copy_(-per_channel.mean(1).view(1, -1, 1, 1))
    self.scale.copy_(1.0 / (per_channel.std(1).view(1, -1, 1, 1) + 1e-6))
    self.initialized.fill_(1)

  def forward(self, x):
    if int(self.initialized) == 0:
      self._data_init(x)
    log_det = x.shape[2] * x.shape[3] * torch.log(torch.abs(self.scale)).sum()
    return self.scale * (x + self.loc), log_det

  def reverse(self, y):
    return y / self.scale - self.loc


class InvConv2d(nn.Module):
  """Plain invertible 1x1 conv, weight [C,C,1,1] initialised as a random rotation."""

  def __init__(self, channels):
    super().__init__()
    q, _ = torch.linalg.qr(torch.randn(channels, channels))
    self.weight = nn.Parameter(q[:, :, None, None])

  def forward(self, x):
    log_det = x.shape[2] * x.shape[3] * torch.slogdet(self.weight[:, :, 0, 0].double())[1].float()
    return F.conv2d(x, self.weight), log_det

  def reverse(self, y):
    return F.conv2d(y, torch.linalg.inv(self.weight[:, :, 0, 0])[:, :, None, None])


class InvConv2dLU(nn.Module):
  """W = P (L * l_mask + I) (U * u_mask + diag(s_sign * exp(w_s)))."""

  def __init__(self, channels):
    super().__init__()
    q, _ = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))
    p, lower, upper = torch.linalg.lu(q.float())
    diag = torch.diagonal(upper).clone()
    u_mask = torch.triu(torch.ones(channels, channels), 1)
    self.register_buffer("w_p", p)
    self.register_buffer("u_mask", u_mask)
    self.register_buffer("l_mask", u_mask.T.contiguous())
    self.register_buffer("s_sign", torch.sign(diag))
    self.register_buffer("l_eye", torch.eye(channels))
    self.w_l = nn.Parameter(lower)
    self.w_s = nn.Parameter(torch.log(torch.abs(diag)))
    self.w_u = nn.Parameter(torch.triu(upper, 1))

  def weight(self):
    lower = self.w_l * self.l_mask + self.l_eye
    upper = self.w_u * self.u_mask + torch.diag(self.s_sign * torch.exp(self.w_s))
    return self.w_p @ lower @ upper

  def forward(self, x):
    log_det = x.shape[2] * x.shape[3] * self.w_s.sum()
    return F.conv2d(x, self.weight()[:, :, None, None]), log_det

  def reverse(self, y):
    return F.conv2d(y, torch.linalg.inv(self.weight())[:, :, None, None])


class ZeroConv2d(nn.Module):
  """3x3 conv on the input padded with ones, zero-initialised, times exp(3 * scale)."""

  def __init__(self, in_channels, out_channels):
    super().__init__()
    self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=0)
    nn.init.zeros_(self.conv.weight)
    nn.init.zeros_(self.conv.bias)
    self.scale = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

  def forward(self, x):
    return self.conv(F.pad(x, [1, 1, 1, 1], value=1.0)) * torch.exp(3.0 * self.scale)


class AffineCoupling(nn.Module):
  """Affine (s = sigmoid(log_s + 2)) or additive coupling on the second channel half."""

  def __init__(self, channels, filter_size=512, affine=True):
    super().__init__()
    self.affine = affine
    self.net = nn.Sequential(
        nn.Conv2d(channels // 2, filter_size, 3, padding=1), nn.ReLU(),
        nn.Conv2d(filter_size, filter_size, 1), nn.ReLU(),
        ZeroConv2d(filter_size, channels if affine else channels // 2))
    for i in (0, 2):
      nn.init.normal_(self.net[i].weight, 0.0, 0.05)
      nn.init.zeros_(self.net[i].bias)

  def forward(self, x):
    xa, xb = x.chunk(2, 1)
    h = self.net(xa)
    if not self.affine:
      return torch.cat([xa, xb + h], 1), torch.zeros(x.shape[0], device=x.device)
    pre, t = h.chunk(2, 1)
    s = torch.sigmoid(pre + 2.0)
    return torch.cat([xa, (xb + t) * s], 1), F.logsigmoid(pre + 2.0).flatten(1).sum(1)

  def reverse(self, y):
    ya, yb = y.chunk(2, 1)
    h = self.net(ya)
    if not self.affine:
      return torch.cat([ya, yb - h], 1)
    pre, t = h.chunk(2, 1)
    return torch.cat([ya, yb / torch.sigmoid(pre + 2.0) - t], 1)


class Flow(nn.Module):
  def __init__(self, channels, affine=True, conv_lu=True, filter_size=512):
    super().__init__()
    self.actnorm = ActNorm(channels)
    self.invconv = InvConv2dLU(channels) if conv_lu else InvConv2d(channels)
    self.coupling = AffineCoupling(channels, filter_size, affine)

  def forward(self, x):
    x, ld0 = self.actnorm(x)
    x, ld1 = self.invconv(x)
    x, ld2 = self.coupling(x)
    return x, ld0 + ld1 + ld2

  def reverse(self, y):
    return self.actnorm.reverse(self.invconv.reverse(self.coupling.reverse(y)))


def gaussian_log_p(z, mean, log_sd):
  return -0.5 * math.log(2 * math.pi) - log_sd - 0.5 * (z - mean) ** 2 * torch.exp(-2 * log_sd)


def squeeze(x):
  b, c, h, w = x.shape
  x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
  return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x):
  b, c4, h, w = x.shape
  return x.view(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)


class Block(nn.Module):
  def __init__(self, channels, n_flow, split=True, affine=True, conv_lu=True, filter_size=512):
    super().__init__()
    self.split = split
    self.flows = nn.ModuleList([Flow(4 * channels, affine, conv_lu, filter_size)
                                for _ in range(n_flow)])
    self.prior = (ZeroConv2d(2 * channels, 4 * channels) if split
                  else ZeroConv2d(4 * channels, 8 * channels))

  def forward(self, x):
    h = squeeze(x)
    log_det = 0
    for flow in self.flows:
      h, ld = flow(h)
      log_det = log_det + ld
    if self.split:
      h, z = h.chunk(2, 1)
      mean, log_sd = self.prior(h).chunk(2, 1)
    else:
      z = h
      mean, log_sd = self.prior(torch.zeros_like(h)).chunk(2, 1)
    log_p = gaussian_log_p(z, mean, log_sd).flatten(1).sum(1)
    return h, log_det, log_p, z

  def reverse(self, h, z=None, eps=None, temperature=1.0):
    """h: the next level's output (ignored at the top); z given = reconstruct, else
    z = mean + temperature * exp(log_sd) * eps."""
    if z is None:
      src = h if self.split else torch.zeros_like(eps)
      mean, log_sd = self.prior(src).chunk(2, 1)
      z = mean + temperature * torch.exp(log_sd) * eps
    x = torch.cat([h, z], 1) if self.split else z
    for flow in reversed(self.flows):
      x = flow.reverse(x)
    return unsqueeze(x)


class Glow(nn.Module):
  def __init__(self, in_channel, n_flow, n_block, affine=True, conv_lu=True, filter_size=512):
    super().__init__()
    self.blocks = nn.ModuleList()
    c = in_channel
    for _ in range(n_block - 1):
      self.blocks.append(Block(c, n_flow, True, affine, conv_lu, filter_size))
      c *= 2
    self.blocks.append(Block(c, n_flow, False, affine, True, filter_size))

  def forward(self, x):
    log_p, log_det, zs, h = 0, 0, [], x
    for block in self.blocks:
      h, ld, lp, z = block(h)
      zs.append(z)
      log_det, log_p = log_det + ld, log_p + lp
    return log_p, log_det, zs

  def reverse(self, zs, reconstruct=True, eps=None, temperature=1.0):
    """reconstruct: zs are latents from ``forward``; else ``eps`` (same shapes) are
    standard-normal draws turned into samples at ``temperature``."""
    h = None
    for i in range(len(self.blocks) - 1, -1, -1):
      block = self.blocks[i]
      if reconstruct:
        h = block.reverse(h, z=zs[i])
      else:
        h = block.reverse(h, eps=eps[i], temperature=temperature)
    return h

  def sample(self, num, latent_shapes, temperature=1.0, device=None):
    eps = [torch.randn((num,) + tuple(s), device=device) for s in latent_shapes]
    return self.reverse(None, reconstruct=False, eps=eps, temperature=temperature)


def latent_shapes(in_channel, size, n_block):
  """NCHW latent shapes [(c, h, w)] of z_0 .. z_top for a square image."""
  shapes, c = [], in_channel
  for _ in range(n_block - 1):
    size //= 2
    c *= 2
    shapes.append((c, size, size))
  shapes.append((4 * c, size // 2, size // 2))
  return shapes


def nll_bits_per_dim(model, x, n_bins):
  """x: dequantised float NCHW -> mean bits/dim including the -D log(n_bins) term."""
  log_p, log_det, _ = model(x)
  d = x[0].numel()
  return (-(log_p + log_det - d * math.log(n_bins)) / (d * math.log(2))).mean()
