"""Distributions of the project's PyTorch NVAE (official ``distributions.py`` of
NVlabs/NVAE): the soft-clamped diagonal ``Normal`` of the latents, and the decoders'
``NormalDecoder`` and ``DiscMixLogistic`` (PixelCNN++'s discretised mixture of logistics
with linear channel dependence), NCHW.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from experiments.pytorch.nvae_ops import soft_clamp5


class Normal:
  """Diagonal normal with soft-clamped parameters: mu = 5 tanh(mu/5),
  sigma = (exp(5 tanh(log_sigma/5)) + 0.01) * temp."""

  def __init__(self, mu, log_sigma, temp=1.0):
    self.mu = soft_clamp5(mu)
    self.sigma = torch.exp(soft_clamp5(log_sigma)) + 1e-2
    if temp != 1.0:
      self.sigma = self.sigma * temp

  def sample(self, generator=None):
    eps = torch.randn(self.mu.shape, generator=generator, dtype=self.mu.dtype,
                      device=self.mu.device)
    return self.sample_given_eps(eps), eps

  def sample_given_eps(self, eps):
    return eps * self.sigma + self.mu

  def log_p(self, samples):
    z = (samples - self.mu) / self.sigma
    return -0.5 * z * z - 0.5 * math.log(2 * math.pi) - torch.log(self.sigma)

  def kl(self, other: "Normal"):
    """Analytic KL(self || other), elementwise."""
    t1 = (self.mu - other.mu) / other.sigma
    t2 = self.sigma / other.sigma
    return 0.5 * (t1 * t1 + t2 * t2) - 0.5 - torch.log(t2)


class NormalDecoder:
  """Continuous normal output on [-1, 1] (``num_mixture_dec == 1``)."""

  def __init__(self, param, num_bits=8):
    del num_bits
    c = param.size(1) // 2
    self.dist = Normal(param[:, :c], param[:, c:])

  def log_prob(self, samples):
    return self.dist.log_p(2 * samples - 1.0)

  def sample(self, t=1.0, generator=None):
    x, _ = self.dist.sample(generator)
    return torch.clamp(x, -1, 1) / 2 + 0.5


class DiscMixLogistic:
  """Discretised mixture of logistics for RGB with linear channel dependence (PixelCNN++).

  param: [B, 10*M, H, W] = M mixture logits, then per channel (3) the M means, M log
  scales (clamped at -7) and M tanh coefficients. ``log_prob`` takes x in [0, 1] with
  2**num_bits levels and returns [B, H, W] (summed over channels and mixed).
  """

  def __init__(self, param, num_mix=10, num_bits=8):
    b, _, h, w = param.size()
    self.num_mix = num_mix
    self.logit_probs = param[:, :num_mix]
    rest = param[:, num_mix:].reshape(b, 3, 3 * num_mix, h, w)
    self.means = rest[:, :, :num_mix]
    self.log_scales = torch.clamp(rest[:, :, num_mix:2 * num_mix], min=-7.0)
    self.coeffs = torch.tanh(rest[:, :, 2 * num_mix:])
    self.max_val = 2.0 ** num_bits - 1

  def log_prob(self, samples):
    if samples.size(1) != 3:
      raise ValueError(f"DiscMixLogistic models RGB images; got {samples.size(1)} channels")
    x = (2 * samples - 1.0).unsqueeze(2)                       # B,3,1,H,W
    m = self.means
    mean_r = m[:, 0]
    mean_g = m[:, 1] + self.coeffs[:, 0] * x[:, 0]
    mean_b = m[:, 2] + self.coeffs[:, 1] * x[:, 0] + self.coeffs[:, 2] * x[:, 1]
    centered = x - torch.stack([mean_r, mean_g, mean_b], dim=1)  # B,3,M,H,W
    inv_s = torch.exp(-self.log_scales)
    plus_in = inv_s * (centered + 1.0 / self.max_val)
    min_in = inv_s * (centered - 1.0 / self.max_val)
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)
    log_one_minus_cdf_min = -F.softplus(min_in)
    mid_in = inv_s * centered
    log_pdf_mid = mid_in - self.log_scales - 2.0 * F.softplus(mid_in)
    log_mid = torch.where(cdf_delta > 1e-5, torch.log(torch.clamp(cdf_delta, min=1e-10)),
                          log_pdf_mid - np.log(self.max_val / 2))
    x = x.expand_as(centered)
    log_probs = torch.where(x < -0.999, log_cdf_plus,
                            torch.where(x > 0.99, log_one_minus_cdf_min, log_mid))
    log_probs = log_probs.sum(1) + F.log_softmax(self.logit_probs, dim=1)  # B,M,H,W
    return torch.logsumexp(log_probs, dim=1)

  def _select(self, sel):
    sel = sel.unsqueeze(1)
    return ((self.means * sel).sum(2), (self.log_scales * sel).sum(2), (self.coeffs * sel).sum(2))

  @staticmethod
  def _chain(x, coeffs):
    r = torch.clamp(x[:, 0], -1, 1)
    g = torch.clamp(x[:, 1] + coeffs[:, 0] * r, -1, 1)
    b = torch.clamp(x[:, 2] + coeffs[:, 1] * r + coeffs[:, 2] * g, -1, 1)
    return torch.stack([r, g, b], dim=1) / 2 + 0.5

  def sample(self, t=1.0, generator=None):
    """[B,3,H,W] in [0,1]: Gumbel-max component, logistic noise scaled by 1/t, not rounded."""
    def uniform(shape):
      u = torch.rand(shape, generator=generator, dtype=self.means.dtype, device=self.means.device)
      return u * (1 - 2e-5) + 1e-5
    gumbel = -torch.log(-torch.log(uniform(self.logit_probs.shape)))
    idx = torch.argmax(self.logit_probs / t + gumbel, dim=1)
    sel = F.one_hot(idx, self.num_mix).permute(0, 3, 1, 2).to(self.means.dtype)
    means, log_scales, coeffs = self._select(sel)
    u = uniform(means.shape)
    x = means + torch.exp(log_scales) / t * (torch.log(u) - torch.log(1.0 - u))
    return self._chain(x, coeffs)

  def mean(self):
    means, _, coeffs = self._select(torch.softmax(self.logit_probs, dim=1))
    return self._chain(means, coeffs)
