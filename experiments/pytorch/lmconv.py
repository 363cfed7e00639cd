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

Modules: orders and masks in ``lmconv_masks.py``, the masked convolution and the blocks in
``lmconv_layers.py``, the likelihood heads in ``lmconv_heads.py``; this module holds the
network and re-exports their public names, so ``experiments.pytorch.lmconv`` is the one
import the tests and benchmarks need.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from experiments.pytorch.lmconv_heads import (  # noqa: F401 (re-exported)
    binarized_log_probs, dmol_1d_log_probs, dmol_rgb_log_probs)
from experiments.pytorch.lmconv_layers import (  # noqa: F401 (re-exported)
    GatedResnet, LocallyMaskedConv2d, Nin, WNLinear, _identity, _Stage, concat_elu,
    locally_masked_conv2d, order_rescale, pono)
from experiments.pytorch.lmconv_masks import (  # noqa: F401 (re-exported)
    check_order, get_masks, kernel_masks, raster_order, s_curve_order)

NORMALIZATIONS = ("pono", "weight_norm", "order_rescale", "none")


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



def official_state_dict_shapes(model: nn.Module) -> dict[str, list[int]]:
  """{key: shape} of a model's state_dict, the layout of ``tests/testdata/state_dicts``."""
  return {k: list(v.shape) for k, v in model.state_dict().items()}
