"""The project's PyTorch LMConv baseline (CPU-runnable, official parameter names).

Locally masked PixelCNN++ of Jain, Abbeel & Pathak, "Locally Masked Convolution for
Autoregressive Models" (UAI 2020), written to behave as the official ``OurPixelCNN``
of github.com/ajayjain/lmconv (``model.py``, ``layers.py``,
``locally_masked_convolution.py``, ``masking.py``, ``utils.py``) and to produce the same
``state_dict`` keys and shapes, so one importer (``dgmjax.convert.lmconv``) serves the
released checkpoints and this baseline. It needs torch and numpy only; ``dgmjax``
never imports it. Used for parity tests and as the benchmark baseline.

Pieces, with shapes (PyTorch NCHW inside, images NHWC uint8 at the API):

* orders: ``order`` is an int array [H*W] of flat pixel indices ``r*W + c`` in
  generation order (``raster_order``, ``s_curve_order`` build two of them);
* masks (``kernel_masks``, ``get_masks``): for each location p and kernel tap t, 1 when
  the neighbour p + dilation*t is inside the image and generated strictly before p
  (or observed); the centre tap is 0 for the first layer ("A"), 1 afterwards ("B").
  Unfolded layout [k*k, H*W] as ``F.unfold`` orders taps;
* ``LocallyMaskedConv2d``: unfold (im2col) + mask + matmul, with the official
  hand-written backward that recomputes the unfolded input instead of storing it;
* ``OurPixelCNN``: u_init (mask A, on x plus a ones channel), three up stages of
  ``nr_resnet`` gated residual blocks separated by two dilated masked convs
  (``downsize_u_stream``; they keep the resolution), three down stages of
  ``nr_resnet``, ``nr_resnet+1``, ``nr_resnet+1`` blocks that take the up-stream
  activations through ``nin_skip``, separated by ``upsize_u_stream``; PONO, weight
  norm or nothing as normalisation; ``nin_out`` on elu(u) gives the head;
* heads: the 10-component discretised logistic mixture with PixelCNN++'s RGB coupling
  (100 outputs for C=3), the one-channel mixture (30 outputs for C=1), and the
  binarised 2-way softmax (C=1, num_bins=2); any ``num_bins``: level k sits at
  2k/(num_bins-1) - 1 and bins have half-width 1/(num_bins-1);
* ``OurPixelCNN.conditional_log_prob(x, order)`` [B,H,W], ``nll`` [B],
  ``log_prob_ensemble`` (log-mean-exp over orders) and the naive ``sample`` (one full
  forward pass per pixel in a Python loop, as the official ``main.py`` does).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NORMALIZATIONS = ("pono", "weight_norm", "order_rescale", "none")


# ---------------------------------------------------------------------------
# Orders and masks
# ---------------------------------------------------------------------------

def raster_order(h: int, w: int) -> np.ndarray:
  """Row by row, left to right: int64 [H*W] of flat indices r*W + c."""
  return np.arange(h * w, dtype=np.int64)


def s_curve_order(h: int, w: int) -> np.ndarray:
  """Rows top to bottom, even rows left to right, odd rows right to left: [H*W]."""
  grid = np.arange(h * w, dtype=np.int64).reshape(h, w)
  grid[1::2] = grid[1::2, ::-1]
  return grid.reshape(-1)


def check_order(order, h: int, w: int) -> np.ndarray:
  """Returns ``order`` as int64 [H*W] if it is a permutation of range(H*W), else ValueError."""
  arr = np.asarray(order)
  if arr.shape != (h * w,) or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"order must be an int array [H*W] = [{h * w}] of flat pixel indices; "
                     f"got shape {arr.shape}, dtype {arr.dtype}")
  if not np.array_equal(np.sort(arr), np.arange(h * w)):
    raise ValueError(f"order must be a permutation of range({h * w})")
  return arr.astype(np.int64)


def kernel_masks(order, h: int, w: int, k: int = 3, dilation: int = 1, mask_type: str = "B",
                 observed=None) -> np.ndarray:
  """Per-location k x k masks for one generation order (official ``kernel_masks``).

  mask[p, i, j] = 1 iff the neighbour q = (r + (i - k//2) d, c + (j - k//2) d) of
  p = (r, c) lies inside the image and rank(q) < rank(p) or q is observed; the centre is
  1 for mask type "B" and 0 for "A". Taps over the zero padding are 0.

  Args:
    order: int [H*W] flat indices in generation order.
    observed: optional bool [H*W] (flat, row-major) of pixels every location may see.

  Returns:
    float32 [H*W, k, k], indexed by the row-major location p = r*W + c.
  """
  if k % 2 != 1:
    raise ValueError(f"kernel size must be odd; got {k}")
  if mask_type not in ("A", "B"):
    raise ValueError(f"mask_type must be 'A' or 'B'; got {mask_type!r}")
  order = check_order(order, h, w)
  rank = np.empty(h * w, np.int64)
  rank[order] = np.arange(h * w)
  rank = rank.reshape(h, w)
  seen = np.zeros((h, w), bool) if observed is None else np.asarray(observed, bool).reshape(h, w)
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  half = k // 2
  masks = np.zeros((h, w, k, k), np.float32)
  for i in range(k):
    for j in range(k):
      if i == half and j == half:
        continue
      qr, qc = rows + (i - half) * dilation, cols + (j - half) * dilation
      inside = (qr >= 0) & (qr < h) & (qc >= 0) & (qc < w)
      qr_c, qc_c = np.clip(qr, 0, h - 1), np.clip(qc, 0, w - 1)
      earlier = (rank[qr_c, qc_c] < rank) | seen[qr_c, qc_c]
      masks[:, :, i, j] = inside & earlier
  masks[:, :, half, half] = 1.0 if mask_type == "B" else 0.0
  return masks.reshape(h * w, k, k)


def get_masks(order, h: int, w: int, k: int = 3, max_dilation: int = 2, observed=None):
  """(mask_init, mask_undilated, mask_dilated), each float32 tensor [k*k, H*W].

  Type A for the first layer, type B for the others, type B with ``max_dilation`` for
  the dilated layers; taps in ``F.unfold`` order (row-major over the kernel).
  """
  def unfolded(dilation, mask_type):
    m = kernel_masks(order, h, w, k, dilation, mask_type, observed)
    return torch.from_numpy(np.ascontiguousarray(m.reshape(h * w, k * k).T))
  mask_init = unfolded(1, "A")
  mask_undilated = unfolded(1, "B")
  mask_dilated = mask_undilated if max_dilation == 1 else unfolded(max_dilation, "B")
  return mask_init, mask_undilated, mask_dilated


# ---------------------------------------------------------------------------
# The locally masked convolution
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------

class OurPixelCNN(nn.Module):
  """Official ``OurPixelCNN`` with the same submodule names (hence state_dict keys).

  Args:
    nr_resnet, nr_filters, nr_logistic_mix, input_channels, kernel_size, max_dilation,
    dropout_prob, conv_bias, conv_mask_weight, binarize: as the official constructor.
    normalization: "pono" (paper), "weight_norm", "order_rescale" or "none" (official
      ``--normalization``); weight norm applies to the masked convs only.
    num_bins: levels of the discrete data (the likelihood, not the network, needs it).
  """

  def __init__(self, nr_resnet=5, nr_filters=160, nr_logistic_mix=10, input_channels=3,
               kernel_size=3, max_dilation=2, normalization="pono", dropout_prob=0.5,
               conv_bias=True, conv_mask_weight=False, binarize=False, num_bins=256):
    super().__init__()
    if normalization not in NORMALIZATIONS:
      raise ValueError(f"normalization must be one of {NORMALIZATIONS}; got {normalization!r}")
    if input_channels not in (1, 3):
      raise ValueError(f"input_channels must be 1 or 3; got {input_channels}")
    if binarize and (input_channels != 1 or num_bins != 2):
      raise ValueError("the binarised head needs input_channels=1 and num_bins=2; got "
                       f"input_channels={input_channels}, num_bins={num_bins}")
    if not 2 <= num_bins <= 256:
      raise ValueError(f"num_bins must be in [2, 256]; got {num_bins}")
    self.nr_filters = nr_filters
    self.nr_logistic_mix = nr_logistic_mix
    self.input_channels = input_channels
    self.kernel_size = kernel_size
    self.max_dilation = max_dilation
    self.binarize = binarize
    self.num_bins = num_bins
    wn = normalization == "weight_norm"
    norm_op = {"pono": pono, "order_rescale": order_rescale}.get(normalization, _identity)

    def conv_op(cin, cout, dilation=1):
      return LocallyMaskedConv2d(cin, cout, kernel_size, dilation, conv_bias, conv_mask_weight, wn)

    nf = nr_filters
    self.norm = norm_op
    down_nr = [nr_resnet, nr_resnet + 1, nr_resnet + 1]
    self.down_layers = nn.ModuleList(
        [_Stage(down_nr[i], nf, conv_op, norm_op, True, dropout_prob) for i in range(3)])
    self.up_layers = nn.ModuleList(
        [_Stage(nr_resnet, nf, conv_op, norm_op, False, dropout_prob) for _ in range(3)])
    self.u_init = conv_op(input_channels + 1, nf)
    self.downsize_u_stream = nn.ModuleList(
        [conv_op(nf, nf, max_dilation) for _ in range(2)])
    self.upsize_u_stream = nn.ModuleList(
        [conv_op(nf, nf, max_dilation) for _ in range(2)])
    if binarize:
      n_out = 2
    else:
      n_out = (3 if input_channels == 1 else 10) * nr_logistic_mix
    self.nin_out = Nin(nf, n_out)

  # -- network -------------------------------------------------------------

  def forward(self, x, mask_init, mask_undilated, mask_dilated):
    """x: float [B,C,H,W] in [-1,1]; masks [k*k,H*W] or [M,k*k,H*W] -> head [B,n_out,H,W]."""
    ones = torch.ones_like(x[:, :1])
    x = torch.cat([x, ones], dim=1)
    # The init layer is normalised with the undilated mask (centre tap visible), as official.
    u_list = [self.norm(self.u_init(x, mask_init), mask_undilated)]
    for i in range(3):
      for block in self.up_layers[i].u_stream:
        u_list.append(block(u_list[-1], mask=mask_undilated))
      if i < 2:
        u = self.downsize_u_stream[i](u_list[-1], mask_dilated)
        u_list.append(self.norm(u, mask_dilated))
    u = u_list.pop()
    for i in range(3):
      for block in self.down_layers[i].u_stream:
        u = block(u, skip=u_list.pop(), mask=mask_undilated)
      if i < 2:
        u = self.norm(self.upsize_u_stream[i](u, mask_dilated), mask_dilated)
    return self.nin_out(F.elu(u))

  def masks(self, order, h, w, observed=None):
    """``get_masks`` for this network, on the device of its parameters."""
    device = self.nin_out.lin_a.bias.device
    return tuple(m.to(device) for m in get_masks(order, h, w, self.kernel_size,
                                                 self.max_dilation, observed))

  # -- likelihood ------------------------------------------------------------

  def _check_images(self, x):
    if not isinstance(x, torch.Tensor):
      x = torch.as_tensor(np.asarray(x))
    if x.dim() != 4 or x.shape[-1] != self.input_channels:
      raise ValueError(f"x must be an integer tensor [B,H,W,{self.input_channels}]; "
                       f"got shape {tuple(x.shape)}")
    if x.dtype.is_floating_point or x.dtype == torch.bool:
      raise ValueError(f"x must hold integer levels (uint8 preferred); got {x.dtype}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.num_bins):
      raise ValueError(f"x values must lie in [0, {self.num_bins - 1}]")
    return x.to(self.nin_out.lin_a.bias.device).long()

  def centered(self, x_int):
    """int [B,H,W,C] -> float [B,C,H,W], level k -> 2k/(num_bins-1) - 1."""
    return (x_int.permute(0, 3, 1, 2).float() / (self.num_bins - 1)) * 2.0 - 1.0

  def pixel_log_probs(self, x_int, head):
    """Per-pixel log p(x_p | context) [B,H,W] from ints [B,H,W,C] and the head [B,n,H,W]."""
    if self.binarize:
      return binarized_log_probs(x_int[..., 0], head)
    if self.input_channels == 1:
      return dmol_1d_log_probs(x_int[..., 0], head, self.num_bins)
    return dmol_rgb_log_probs(x_int, head, self.num_bins)

  def conditional_log_prob(self, x, order, masks=None):
    """x: uint8 [B,H,W,C], order int [H*W] -> [B,H,W] log p(x_p | x_<p in order), nats."""
    x = self._check_images(x)
    h, w = x.shape[1:3]
    masks = masks if masks is not None else self.masks(order, h, w)
    return self.pixel_log_probs(x, self(self.centered(x), *masks))

  def nll(self, x, order, masks=None):
    """x: uint8 [B,H,W,C] -> [B] -log p(x) in nats under one order."""
    return -self.conditional_log_prob(x, order, masks).sum(dim=(1, 2))

  def log_prob_ensemble(self, x, orders: Sequence):
    """[B] log (1/K) sum_k p(x | order_k): the paper's order ensemble."""
    lp = torch.stack([-self.nll(x, o) for o in orders], dim=1)
    return torch.logsumexp(lp, dim=1) - math.log(len(orders))

  def loss_bpd(self, x, order, masks=None):
    """Mean bits/dim of a batch under one order (the training objective)."""
    b, h, w, c = x.shape
    return self.nll(x, order, masks).mean() / (h * w * c * math.log(2.0))

  # -- sampling --------------------------------------------------------------

  @torch.no_grad()
  def sample(self, num, image_shape, order, generator=None, mixture_temperature=1.0,
             logistic_temperature=1.0, masks=None):
    """Naive sampling: one full forward pass per pixel, in a Python loop, as official.

    Each channel is drawn from its discretised distribution (a logistic sample clipped
    to [-1,1] and rounded to the nearest level, which is exact for the discretised
    logistic) and written back before the next pixel. The temperatures act as in the
    official ``sample_from_discretized_mix_logistic`` (the mixture temperature divides
    the component parameters). Returns uint8 [num,H,W,C].
    """
    h, w, c = image_shape
    if c != self.input_channels:
      raise ValueError(f"image_shape must end in {self.input_channels} channels; got {image_shape}")
    order = check_order(order, h, w)
    masks = masks if masks is not None else self.masks(order, h, w)
    device = self.nin_out.lin_a.bias.device
    levels = torch.zeros(num, h, w, c, dtype=torch.long, device=device)
    for p in order.tolist():
      r, col = divmod(p, w)
      head = self(self.centered(levels), *masks)[:, :, r, col]  # [num, n_out]
      levels[:, r, col] = self._sample_pixel(head, generator, mixture_temperature,
                                             logistic_temperature)
    return levels.to(torch.uint8)

  def _sample_pixel(self, head, generator, mixture_temperature, logistic_temperature):
    """head [N, n_out] at one location -> levels [N, C]."""
    nb = self.num_bins
    if self.binarize:
      u = torch.rand(head.shape[0], generator=generator, device=head.device)
      return (u < torch.sigmoid(head[:, 1] - head[:, 0])).long().unsqueeze(1)
    nm = self.nr_logistic_mix
    c = self.input_channels
    n = head.shape[0]
    logits = head[:, :nm]
    params = head[:, nm:].reshape(n, c, -1, nm) / mixture_temperature
    uniform = lambda *shape: torch.rand(*shape, generator=generator, device=head.device).clamp(
        1e-5, 1 - 1e-5)
    gumbel = -torch.log(-torch.log(uniform(n, nm)))
    comp = torch.argmax(logits + gumbel, dim=1)
    sel = params[torch.arange(n, device=head.device), :, :, comp]  # [N, C, 2 or 3]
    means, log_scales = sel[:, :, 0], sel[:, :, 1].clamp(min=-7.0)
    u = uniform(n, c)
    noise = torch.exp(log_scales) * logistic_temperature * (torch.log(u) - torch.log1p(-u))

    def level(y):
      return torch.round((y.clamp(-1.0, 1.0) + 1.0) / 2.0 * (nb - 1)).long()

    def centre(k):
      return k.float() / (nb - 1) * 2.0 - 1.0

    k0 = level(means[:, 0] + noise[:, 0])
    if c == 1:
      return k0.unsqueeze(1)
    coeffs = torch.tanh(sel[:, :, 2])
    x0 = centre(k0)
    k1 = level(means[:, 1] + coeffs[:, 0] * x0 + noise[:, 1])
    x1 = centre(k1)
    k2 = level(means[:, 2] + coeffs[:, 1] * x0 + coeffs[:, 2] * x1 + noise[:, 2])
    return torch.stack([k0, k1, k2], dim=1)


# ---------------------------------------------------------------------------
# Likelihood heads
# ---------------------------------------------------------------------------

def _discretized_logistic_log_probs(x, k, means, log_scales, num_bins):
  """log P(level k) of a logistic(means, exp(log_scales)) discretised on num_bins levels.

  Bins [x - 1/(nb-1), x + 1/(nb-1)]; the first and last bins take the tails; when the
  bin mass is below 1e-5 the density at the centre times the bin width is used (the
  PixelCNN++ fallback, log((nb-1)/2) = log(127.5) at 256 levels). Broadcasts.
  """
  centered = x - means
  inv_s = torch.exp(-log_scales)
  half = 1.0 / (num_bins - 1)
  plus_in = inv_s * (centered + half)
  min_in = inv_s * (centered - half)
  log_cdf_plus = plus_in - F.softplus(plus_in)
  log_one_minus_cdf_min = -F.softplus(min_in)
  cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
  mid_in = inv_s * centered
  log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)
  inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)),
                      log_pdf_mid - math.log((num_bins - 1) / 2.0))
  inner = torch.where(k == num_bins - 1, log_one_minus_cdf_min, inner)
  return torch.where(k == 0, log_cdf_plus, inner)


def dmol_rgb_log_probs(x_int, head, num_bins):
  """PixelCNN++ mixture with RGB coupling: ints [B,H,W,3], head [B,10*nm,H,W] -> [B,H,W].

  Head layout (official): nm mixture logits, then for each colour c in (R,G,B) the
  nm means, nm log-scales (clamped at -7) and nm raw coefficients (tanh). The means of
  G and B are shifted by a(c0) x_R and b(c1) x_R + g(c2) x_G.
  """
  b, h, w, _ = x_int.shape
  l = head.permute(0, 2, 3, 1)
  nm = l.shape[-1] // 10
  logit_probs = l[..., :nm]
  p = l[..., nm:].reshape(b, h, w, 3, 3 * nm)
  means, log_scales = p[..., :nm], p[..., nm:2 * nm].clamp(min=-7.0)
  coeffs = torch.tanh(p[..., 2 * nm:])
  k = x_int.unsqueeze(-1)  # [B,H,W,3,1]
  x = k.float() / (num_bins - 1) * 2.0 - 1.0
  m1 = means[..., 1, :] + coeffs[..., 0, :] * x[..., 0, :]
  m2 = means[..., 2, :] + coeffs[..., 1, :] * x[..., 0, :] + coeffs[..., 2, :] * x[..., 1, :]
  means = torch.stack([means[..., 0, :], m1, m2], dim=3)
  lp = _discretized_logistic_log_probs(x, k, means, log_scales, num_bins).sum(dim=3)
  return torch.logsumexp(lp + F.log_softmax(logit_probs, dim=-1), dim=-1)


def dmol_1d_log_probs(x_int, head, num_bins):
  """One-channel mixture: ints [B,H,W], head [B,3*nm,H,W] (logits, means, log-scales) -> [B,H,W]."""
  l = head.permute(0, 2, 3, 1)
  nm = l.shape[-1] // 3
  logit_probs, means = l[..., :nm], l[..., nm:2 * nm]
  log_scales = l[..., 2 * nm:].clamp(min=-7.0)
  k = x_int.unsqueeze(-1)
  x = k.float() / (num_bins - 1) * 2.0 - 1.0
  lp = _discretized_logistic_log_probs(x, k, means, log_scales, num_bins)
  return torch.logsumexp(lp + F.log_softmax(logit_probs, dim=-1), dim=-1)


def binarized_log_probs(x_int, head):
  """Binarised head: ints {0,1} [B,H,W], logits [B,2,H,W] -> log softmax at x, [B,H,W]."""
  lp = F.log_softmax(head, dim=1)
  return torch.gather(lp, 1, x_int.unsqueeze(1)).squeeze(1)


def official_state_dict_shapes(model: nn.Module) -> dict[str, list[int]]:
  """{key: shape} of a model's state_dict, the layout of ``tests/testdata/state_dicts``."""
  return {k: list(v.shape) for k, v in model.state_dict().items()}
