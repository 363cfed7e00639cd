"""Losses of the project's PyTorch NVAE (``utils.py`` and ``train.py`` of NVlabs/NVAE):
reconstruction and importance weights, KL balancing and warm-up, the ELBO's terms and
the official training objective, and the conversion of uint8 images to the model's input.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
  from experiments.pytorch.nvae import AutoEncoder


def pre_process(x, num_bits):
  """x in [0,1] with 256 levels -> 2**num_bits levels, still in [0,1]."""
  if num_bits != 8:
    x = torch.floor(x * 255 / 2 ** (8 - num_bits)) / (2 ** num_bits - 1)
  return x


def reconstruction_loss(decoder, x, crop=False):
  """-log p(x | z) per image [B]; MNIST-like data are scored on the central 28x28 crop."""
  recon = decoder.log_prob(x)
  if crop:
    recon = recon[..., 2:30, 2:30]
  return -torch.sum(recon, dim=list(range(1, recon.dim())))


def log_iw(decoder, x, log_q, log_p, crop=False):
  """One importance weight log p(x|z) + log p(z) - log q(z|x) per image [B]."""
  return -reconstruction_loss(decoder, x, crop) - log_q + log_p


def kl_balancer_coeff(num_scales, groups_per_scale, fun="square"):
  """alpha_i per group (top group first), normalised so the smallest is 1."""
  per_scale = {"equal": lambda i, n: 1.0, "linear": lambda i, n: 2.0 ** i,
               "sqrt": lambda i, n: math.sqrt(2.0 ** i),
               "square": lambda i, n: (2.0 ** i) ** 2 / n}
  if fun not in per_scale:
    raise ValueError(f"unknown KL balancing {fun!r}; expected one of {sorted(per_scale)}")
  coeff = torch.cat([per_scale[fun](i, groups_per_scale[num_scales - i - 1])
                     * torch.ones(groups_per_scale[num_scales - i - 1])
                     for i in range(num_scales)])
  return coeff / coeff.min()


def kl_balancer(kl_all, kl_coeff=1.0, kl_balance=False, alpha_i=None):
  """Weighted KL [B]: during warm-up (coeff < 1) each group's KL is reweighted by
  mean|KL_g| / alpha_g, normalised to mean 1 (no gradient through the weights)."""
  kl_all = torch.stack(kl_all, dim=1)
  kl_vals = torch.mean(kl_all, dim=0)
  if kl_balance and kl_coeff < 1.0:
    coeff_i = torch.mean(torch.abs(kl_all), dim=0, keepdim=True) + 0.01
    total = torch.sum(coeff_i)
    coeff_i = coeff_i / alpha_i.unsqueeze(0) * total
    coeff_i = coeff_i / torch.mean(coeff_i, dim=1, keepdim=True)
    kl = torch.sum(kl_all * coeff_i.detach(), dim=1)
    coeffs = coeff_i.squeeze(0)
  else:
    kl = torch.sum(kl_all, dim=1)
    coeffs = torch.ones(len(kl_vals))
  return kl_coeff * kl, coeffs, kl_vals


def kl_coeff(step, total_step, constant_step, min_kl_coeff):
  """KL warm-up: linear from 0 to 1 over total_step after constant_step, at least min."""
  return max(min((step - constant_step) / total_step, 1.0), min_kl_coeff)


def elbo_terms(model: AutoEncoder, x, eps=None, generator=None) -> dict[str, torch.Tensor]:
  """The ELBO's parts for images x: float [B,C,S,S] in [0,1].

  Returns ``recon`` [B] (-log p(x|z) in nats), ``kl`` [B,G] (per group, analytic, or
  log q - log p with flows), ``nelbo`` [B] = recon + sum kl, ``log_q``/``log_p`` [B],
  ``log_iw`` [B] and ``logits``.
  """
  logits, log_q, log_p, kl_all, _ = model(x, eps=eps, generator=generator)
  recon = reconstruction_loss(model.decoder_output(logits), x, crop=model.crop_output)
  kl = torch.stack(kl_all, dim=1)
  return {"recon": recon, "kl": kl, "nelbo": recon + kl.sum(1), "log_q": log_q, "log_p": log_p,
          "log_iw": -recon - log_q + log_p, "logits": logits}


def training_loss(model: AutoEncoder, x, args, global_step, num_total_iter, alpha_i=None,
                  generator=None):
  """The official training objective for one batch (train.py): mean(recon + balanced,
  annealed KL) + lambda * (spectral + BN) regularisers; returns (loss, metrics dict)."""
  if alpha_i is None:
    alpha_i = kl_balancer_coeff(model.num_latent_scales, model.groups_per_scale, "square")
  logits, log_q, log_p, kl_all, _ = model(x, generator=generator)
  coeff = kl_coeff(global_step, args.kl_anneal_portion * num_total_iter,
                   args.kl_const_portion * num_total_iter, args.kl_const_coeff)
  recon = reconstruction_loss(model.decoder_output(logits), x, crop=model.crop_output)
  balanced, _, _ = kl_balancer(kl_all, coeff, kl_balance=True, alpha_i=alpha_i)
  loss = torch.mean(recon + balanced)
  norm_loss = model.spectral_norm_parallel(generator)
  bn_loss = model.batchnorm_loss()
  if args.weight_decay_norm_anneal:
    wdn = math.exp((1.0 - coeff) * math.log(args.weight_decay_norm_init)
                   + coeff * math.log(args.weight_decay_norm))
  else:
    wdn = args.weight_decay_norm
  loss = loss + (norm_loss + bn_loss) * wdn
  return loss, {"recon": recon.mean().detach(), "kl_coeff": coeff,
                "norm_loss": torch.as_tensor(norm_loss).detach(),
                "bn_loss": torch.as_tensor(bn_loss).detach()}


def images_to_input(x_uint8_nhwc: np.ndarray, num_bins: int, pad_to: int | None = None):
  """uint8 [B,H,W,C] with num_bins levels -> float NCHW in [0,1] (zero-padded to pad_to)."""
  x = torch.as_tensor(np.asarray(x_uint8_nhwc), dtype=torch.float32) / (num_bins - 1)
  x = x.permute(0, 3, 1, 2)
  if pad_to is not None and pad_to != x.shape[-1]:
    p = (pad_to - x.shape[-1]) // 2
    if p < 0 or pad_to - x.shape[-1] != 2 * p:
      raise ValueError(f"cannot centre-pad {x.shape[-1]} pixels to {pad_to}")
    x = F.pad(x, (p, p, p, p))
  return x
