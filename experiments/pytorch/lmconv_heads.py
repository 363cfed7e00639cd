"""Likelihood heads of the PyTorch LMConv baseline (``experiments/pytorch/lmconv.py``):
per-pixel log-probabilities of integer levels under the network's output.

The 10-component discretised logistic mixture with PixelCNN++'s RGB coupling (100
outputs for C=3), the one-channel mixture (30 outputs for C=1) and the binarised 2-way
softmax (C=1, num_bins=2); any ``num_bins``: level k sits at 2k/(num_bins-1) - 1 and bins
have half-width 1/(num_bins-1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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

