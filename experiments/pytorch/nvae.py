"""The project's own PyTorch NVAE: the official architecture on CPU, for parity and benchmarks.

Follows NVlabs/NVAE's ``AutoEncoder`` (model.py, utils.py; Vahdat & Kautz, NeurIPS 2020)
with exactly its ``state_dict`` names and shapes, so that one dgmjax importer
(``dgmjax.convert.nvae``) reads both this model's and the official checkpoints. It takes
the official argument namespace (``default_args`` gives the official defaults).

Differences from the official code, none of which changes a result:
- plain ``nn.BatchNorm2d`` (momentum 0.05, eps 1e-5) instead of synchronised BN, and
  nothing is moved to CUDA;
- ``forward(x, eps=...)`` accepts the posterior noise of every group (so that two
  implementations can be compared on the same sample) or a ``torch.Generator``;
- the spectral regulariser recomputes the normalised kernels rather than reading the
  ones cached by the last forward (same value and gradient).

Shapes: ``x`` float [B,C,S,S] in [0,1] (MNIST padded to 32x32, as the official loader
does); latent group ``g`` has noise ``eps[g]`` [B, num_latent_per_group, h_g, w_g], group
0 being the top (coarsest) one; ``model.latent_shapes()`` lists them.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from experiments.pytorch.nvae_ops import (CHANNEL_MULT, ARConv2d, Cell, Conv2D, DecCombinerCell,
                                          DiscMixLogistic, EncCombinerCell, Normal, NormalDecoder,
                                          PairedCellAR, arch_cells)

BINARY_DATASETS = ("mnist", "omniglot")
CROP_DATASETS = ("mnist", "omniglot", "stacked_mnist")

# The architecture and loss arguments of the official train.py, with its defaults.
OFFICIAL_DEFAULTS = dict(
    dataset="mnist", arch_instance="res_mbconv", num_x_bits=8,
    num_latent_scales=1, num_groups_per_scale=10, num_latent_per_group=20,
    ada_groups=False, min_groups_per_scale=1,
    num_channels_enc=32, num_preprocess_blocks=2, num_preprocess_cells=3,
    num_cell_per_cond_enc=1,
    num_channels_dec=32, num_postprocess_blocks=2, num_postprocess_cells=3,
    num_cell_per_cond_dec=1, num_mixture_dec=10,
    use_se=False, res_dist=False, num_nf=0,
    learning_rate=1e-2, learning_rate_min=1e-4, weight_decay=3e-4,
    weight_decay_norm=0.0, weight_decay_norm_init=10.0, weight_decay_norm_anneal=False,
    kl_anneal_portion=0.3, kl_const_portion=1e-4, kl_const_coeff=1e-4,
    epochs=200, warmup_epochs=5, batch_size=200,
)


def default_args(**overrides) -> argparse.Namespace:
  """An official-style argument namespace: the train.py defaults, then ``overrides``."""
  unknown = sorted(set(overrides) - set(OFFICIAL_DEFAULTS) - {"input_size"})
  if unknown:
    raise ValueError(f"unknown NVAE arguments {unknown}; expected names among "
                     f"{sorted(OFFICIAL_DEFAULTS)} (or input_size)")
  return argparse.Namespace(**{**OFFICIAL_DEFAULTS, **overrides})


def tiny_args(dataset: str) -> argparse.Namespace:
  """The ``nvae_mnist_tiny`` / ``nvae_cifar_tiny`` configurations of the reference layouts."""
  common = dict(num_channels_enc=8, num_channels_dec=8, num_latent_per_group=4,
                num_groups_per_scale=2, num_cell_per_cond_enc=1, num_cell_per_cond_dec=1,
                num_preprocess_blocks=1, num_preprocess_cells=2, num_postprocess_blocks=1,
                num_postprocess_cells=2, use_se=True, res_dist=True, weight_decay_norm=1e-2)
  if dataset == "mnist":
    return default_args(dataset="mnist", num_latent_scales=2, ada_groups=True, num_nf=0, **common)
  if dataset == "cifar10":
    return default_args(dataset="cifar10", num_latent_scales=1, num_nf=1, **common)
  raise ValueError(f"tiny_args knows 'mnist' and 'cifar10'; got {dataset!r}")


def faithful_args(dataset: str) -> argparse.Namespace:
  """The README training commands for MNIST and CIFAR-10 (33.4M / 130.9M parameters)."""
  if dataset == "mnist":
    return default_args(
        dataset="mnist", num_latent_scales=2, num_groups_per_scale=10, num_postprocess_cells=3,
        num_preprocess_cells=3, num_cell_per_cond_enc=2, num_cell_per_cond_dec=2,
        num_latent_per_group=20, num_preprocess_blocks=2, num_postprocess_blocks=2,
        weight_decay_norm=1e-2, num_channels_enc=32, num_channels_dec=32, num_nf=0,
        ada_groups=True, use_se=True, res_dist=True, batch_size=200, epochs=400)
  if dataset == "cifar10":
    return default_args(
        dataset="cifar10", num_channels_enc=128, num_channels_dec=128, num_postprocess_cells=2,
        num_preprocess_cells=2, num_latent_scales=1, num_latent_per_group=20,
        num_cell_per_cond_enc=2, num_cell_per_cond_dec=2, num_preprocess_blocks=1,
        num_postprocess_blocks=1, num_groups_per_scale=30, batch_size=32,
        weight_decay_norm=1e-2, num_nf=1, use_se=True, res_dist=True, epochs=400)
  raise ValueError(f"faithful_args knows 'mnist' and 'cifar10'; got {dataset!r}")


def args_from_hparams(image_shape, num_bins=256, *, channels=32, scales=1, groups_per_scale=2,
                      latents_per_group=20, cells_per_group=2, preprocess_blocks=1,
                      preprocess_cells=2, postprocess_blocks=1, postprocess_cells=2, num_flows=0,
                      use_se=True, ada_groups=False, min_groups_per_scale=1, num_mixtures=10,
                      **training) -> argparse.Namespace:
  """dgmjax ``create("nvae", ...)`` hyper-parameters -> the official namespace of the same
  network (inverse of ``dgmjax.convert.nvae.hparams_from_args``), for benchmarks.

  Official datasets fix the image: (32,32,1) with num_bins 2 is MNIST (Bernoulli output,
  28x28 crop), (S,S,3) with 2**b bins is cifar10 (S = 32) or imagenet_S / celeba_64.
  ``training`` may hold weight_decay_norm, weight_decay_norm_init,
  weight_decay_norm_anneal, kl_const_coeff; dgmjax-only options (compute, decoder,
  crop_to, kl_*_steps, kl_balance, num_power_iter, dmol_edge) are ignored.
  """
  h, w, c = image_shape
  if (h, w, c) == (32, 32, 1) and num_bins == 2:
    dataset, bits = "mnist", 8
  elif c == 3 and h == w and num_bins >= 2 and (num_bins & (num_bins - 1)) == 0:
    dataset = {32: "cifar10", 64: "celeba_64"}.get(h, f"imagenet_{h}")
    bits = num_bins.bit_length() - 1
  else:
    raise ValueError(f"no official NVAE dataset has images {tuple(image_shape)} with "
                     f"{num_bins} levels; expected (32,32,1)/2 or (S,S,3)/2**bits")
  keep = {k: training[k] for k in ("weight_decay_norm", "weight_decay_norm_init",
                                   "weight_decay_norm_anneal", "kl_const_coeff") if k in training}
  return default_args(
      dataset=dataset, num_x_bits=bits, num_channels_enc=channels, num_channels_dec=channels,
      num_latent_scales=scales, num_groups_per_scale=groups_per_scale,
      num_latent_per_group=latents_per_group, num_cell_per_cond_enc=cells_per_group,
      num_cell_per_cond_dec=cells_per_group, num_preprocess_blocks=preprocess_blocks,
      num_preprocess_cells=preprocess_cells, num_postprocess_blocks=postprocess_blocks,
      num_postprocess_cells=postprocess_cells, num_nf=num_flows, use_se=use_se,
      ada_groups=ada_groups, min_groups_per_scale=min_groups_per_scale,
      num_mixture_dec=num_mixtures, res_dist=True, **keep)


def groups_per_scale(num_scales, num_groups, is_adaptive, divider=2, minimum_groups=1):
  """Groups at each scale, finest first; adaptive halves the count at each coarser scale."""
  out, n = [], num_groups
  for _ in range(num_scales):
    if n < 1:
      raise ValueError(f"groups per scale fell below 1: {out}")
    out.append(n)
    if is_adaptive:
      n = max(minimum_groups, n // divider)
  return out


def input_size(dataset: str) -> int:
  if dataset in ("mnist", "omniglot", "cifar10", "stacked_mnist"):
    return 32
  if dataset.startswith(("celeba", "imagenet", "lsun")):
    return int(dataset.split("_")[-1])
  if dataset == "ffhq":
    return 256
  raise ValueError(f"unknown dataset {dataset!r}")


class AutoEncoder(nn.Module):
  """NVAE: bottom-up encoder, top-down hierarchy of residual-normal latent groups, decoder.

  forward(x) -> (logits, log_q [B], log_p [B], kl_all: list of [B] per group,
  kl_diag: list of [num_latent_per_group] per group), as the official model.
  """

  def __init__(self, args: argparse.Namespace, writer=None, arch_instance=None):
    super().__init__()
    del writer
    if arch_instance is None:
      arch_instance = arch_cells(getattr(args, "arch_instance", "res_mbconv"))
    self.arch_instance = arch_instance
    self.dataset = args.dataset
    self.crop_output = self.dataset in CROP_DATASETS
    self.use_se = args.use_se
    self.res_dist = args.res_dist
    self.num_bits = args.num_x_bits
    self.num_latent_scales = args.num_latent_scales
    self.num_groups_per_scale = args.num_groups_per_scale
    self.num_latent_per_group = args.num_latent_per_group
    self.groups_per_scale = groups_per_scale(
        self.num_latent_scales, self.num_groups_per_scale, args.ada_groups,
        minimum_groups=getattr(args, "min_groups_per_scale", 1))
    self.vanilla_vae = self.num_latent_scales == 1 and self.num_groups_per_scale == 1
    self.num_channels_enc = args.num_channels_enc
    self.num_channels_dec = args.num_channels_dec
    self.num_preprocess_blocks = args.num_preprocess_blocks
    self.num_preprocess_cells = args.num_preprocess_cells
    self.num_cell_per_cond_enc = args.num_cell_per_cond_enc
    self.num_postprocess_blocks = args.num_postprocess_blocks
    self.num_postprocess_cells = args.num_postprocess_cells
    self.num_cell_per_cond_dec = args.num_cell_per_cond_dec
    self.input_size = getattr(args, "input_size", None) or input_size(self.dataset)
    self.num_mix_output = getattr(args, "num_mixture_dec", 10)

    depth = self.num_preprocess_blocks + self.num_latent_scales - 1
    top = self.input_size // 2 ** depth
    self.prior_ftr0 = nn.Parameter(
        torch.rand(int(CHANNEL_MULT ** depth * self.num_channels_dec), top, top))
    self.z0_size = [self.num_latent_per_group, top, top]

    self.stem = Conv2D(1 if self.dataset in BINARY_DATASETS else 3, self.num_channels_enc, 3,
                       padding=1, bias=True)
    self.pre_process, mult = self._pre_process(1)
    if self.vanilla_vae:
      self.enc_tower = []
    else:
      self.enc_tower, mult = self._encoder_tower(mult)
    self.with_nf = args.num_nf > 0
    self.num_flows = args.num_nf
    c = int(self.num_channels_enc * mult)
    self.enc0 = nn.Sequential(nn.ELU(), Conv2D(c, c, 1, bias=True), nn.ELU())
    self.enc_sampler, self.dec_sampler, self.nf_cells = self._samplers(mult)
    self.enc_kv, self.dec_kv, self.query = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
    if self.vanilla_vae:
      self.dec_tower = []
      self.stem_decoder = Conv2D(self.num_latent_per_group, int(mult * self.num_channels_enc),
                                 (1, 1), bias=True)
    else:
      self.dec_tower, mult = self._decoder_tower(mult)
    self.post_process, mult = self._post_process(mult)
    c = int(self.num_channels_dec * mult)
    if self.dataset in BINARY_DATASETS:
      c_out = 1
    else:
      c_out = 2 * 3 if self.num_mix_output == 1 else 10 * self.num_mix_output
    self.image_conditional = nn.Sequential(nn.ELU(), Conv2D(c, c_out, 3, padding=1, bias=True))

    self.all_log_norm, self.all_conv_layers, self.all_bn_layers = [], [], []
    for _, layer in self.named_modules():
      if isinstance(layer, (Conv2D, ARConv2d)):
        self.all_log_norm.append(layer.log_weight_norm)
        self.all_conv_layers.append(layer)
      if isinstance(layer, nn.BatchNorm2d):
        self.all_bn_layers.append(layer)
    self.sr_u, self.sr_v = {}, {}
    self.num_power_iter = 4

  # ---- construction (order of registration = official state_dict order) ----

  def _pre_process(self, mult):
    cells = nn.ModuleList()
    for _ in range(self.num_preprocess_blocks):
      for c in range(self.num_preprocess_cells):
        if c == self.num_preprocess_cells - 1:
          ci = int(self.num_channels_enc * mult)
          cells.append(Cell(ci, CHANNEL_MULT * ci, "down_pre", self.arch_instance["down_pre"],
                            self.use_se))
          mult *= CHANNEL_MULT
        else:
          ci = int(self.num_channels_enc * mult)
          cells.append(Cell(ci, ci, "normal_pre", self.arch_instance["normal_pre"], self.use_se))
    return cells, mult

  def _encoder_tower(self, mult):
    cells = nn.ModuleList()
    for s in range(self.num_latent_scales):
      for g in range(self.groups_per_scale[s]):
        ce = int(self.num_channels_enc * mult)
        for _ in range(self.num_cell_per_cond_enc):
          cells.append(Cell(ce, ce, "normal_enc", self.arch_instance["normal_enc"], self.use_se))
        if not (s == self.num_latent_scales - 1 and g == self.groups_per_scale[s] - 1):
          cells.append(EncCombinerCell(ce, int(self.num_channels_dec * mult), ce, "combiner_enc"))
      if s < self.num_latent_scales - 1:
        ci = int(self.num_channels_enc * mult)
        cells.append(Cell(ci, CHANNEL_MULT * ci, "down_enc", self.arch_instance["down_enc"],
                          self.use_se))
        mult *= CHANNEL_MULT
    return cells, mult

  def _samplers(self, mult):
    enc, dec, nf = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
    L = self.num_latent_per_group
    for s in range(self.num_latent_scales):
      for g in range(self.groups_per_scale[self.num_latent_scales - s - 1]):
        ce = int(self.num_channels_enc * mult)
        enc.append(Conv2D(ce, 2 * L, 3, padding=1, bias=True))
        for _ in range(self.num_flows):
          nf.append(PairedCellAR(L, ce, 8 * L))
        if not (s == 0 and g == 0):
          cd = int(self.num_channels_dec * mult)
          dec.append(nn.Sequential(nn.ELU(), Conv2D(cd, 2 * L, 1, bias=True)))
      mult /= CHANNEL_MULT
    return enc, dec, nf

  def _decoder_tower(self, mult):
    cells = nn.ModuleList()
    for s in range(self.num_latent_scales):
      for g in range(self.groups_per_scale[self.num_latent_scales - s - 1]):
        c = int(self.num_channels_dec * mult)
        if not (s == 0 and g == 0):
          for _ in range(self.num_cell_per_cond_dec):
            cells.append(Cell(c, c, "normal_dec", self.arch_instance["normal_dec"], self.use_se))
        cells.append(DecCombinerCell(c, self.num_latent_per_group, c, "combiner_dec"))
      if s < self.num_latent_scales - 1:
        ci = int(self.num_channels_dec * mult)
        cells.append(Cell(ci, ci // CHANNEL_MULT, "up_dec", self.arch_instance["up_dec"],
                          self.use_se))
        mult /= CHANNEL_MULT
    return cells, mult

  def _post_process(self, mult):
    cells = nn.ModuleList()
    for _ in range(self.num_postprocess_blocks):
      for c in range(self.num_postprocess_cells):
        ci = int(self.num_channels_dec * mult)
        if c == 0:
          cells.append(Cell(ci, ci // CHANNEL_MULT, "up_post", self.arch_instance["up_post"],
                            self.use_se))
          mult /= CHANNEL_MULT
        else:
          cells.append(Cell(ci, ci, "normal_post", self.arch_instance["normal_post"], self.use_se))
    return cells, mult

  # ---- shapes ----

  def latent_shapes(self) -> list[tuple[int, int, int]]:
    """(C, h, w) of each latent group in sampling order (top group first)."""
    shapes = []
    size = self.z0_size[1]
    for s in range(self.num_latent_scales):
      shapes += [(self.num_latent_per_group, size, size)] * self.groups_per_scale[
          self.num_latent_scales - s - 1]
      size *= 2
    return shapes

  # ---- forward ----

  def _noise(self, eps, g, dist, generator):
    if eps is None:
      return dist.sample(generator)[0]
    if g >= len(eps):
      raise ValueError(f"eps has {len(eps)} groups; the model has {len(self.latent_shapes())}")
    e = eps[g]
    if tuple(e.shape) != tuple(dist.mu.shape):
      raise ValueError(f"eps[{g}] has shape {tuple(e.shape)}, expected {tuple(dist.mu.shape)}")
    return dist.sample_given_eps(e)

  def forward(self, x, eps=None, generator=None):
    """x: float [B,C,S,S] in [0,1]. eps: optional list of posterior noise per group."""
    s = self.stem(2 * x - 1.0)
    for cell in self.pre_process:
      s = cell(s)
    comb_enc, comb_s = [], []
    for cell in self.enc_tower:
      if cell.cell_type == "combiner_enc":
        comb_enc.append(cell)
        comb_s.append(s)
      else:
        s = cell(s)
    comb_enc.reverse()
    comb_s.reverse()

    ftr = self.enc0(s)
    mu_q, log_sig_q = torch.chunk(self.enc_sampler[0](ftr), 2, dim=1)
    dist = Normal(mu_q, log_sig_q)
    z = self._noise(eps, 0, dist, generator)
    log_q_conv = dist.log_p(z)
    for n in range(self.num_flows):
      z, log_det = self.nf_cells[n](z, ftr)
      log_q_conv = log_q_conv - log_det
    nf_offset = self.num_flows
    all_q, all_log_q = [dist], [log_q_conv]
    dist = Normal(torch.zeros_like(z), torch.zeros_like(z))
    all_p, all_log_p = [dist], [dist.log_p(z)]

    idx_dec = 0
    s = self.prior_ftr0.unsqueeze(0).expand(z.size(0), -1, -1, -1)
    for cell in self.dec_tower:
      if cell.cell_type == "combiner_dec":
        if idx_dec > 0:
          mu_p, log_sig_p = torch.chunk(self.dec_sampler[idx_dec - 1](s), 2, dim=1)
          ftr = comb_enc[idx_dec - 1](comb_s[idx_dec - 1], s)
          mu_q, log_sig_q = torch.chunk(self.enc_sampler[idx_dec](ftr), 2, dim=1)
          dist = (Normal(mu_p + mu_q, log_sig_p + log_sig_q) if self.res_dist
                  else Normal(mu_q, log_sig_q))
          z = self._noise(eps, idx_dec, dist, generator)
          log_q_conv = dist.log_p(z)
          for n in range(self.num_flows):
            z, log_det = self.nf_cells[nf_offset + n](z, ftr)
            log_q_conv = log_q_conv - log_det
          nf_offset += self.num_flows
          all_log_q.append(log_q_conv)
          all_q.append(dist)
          dist = Normal(mu_p, log_sig_p)
          all_p.append(dist)
          all_log_p.append(dist.log_p(z))
        s = cell(s, z)
        idx_dec += 1
      else:
        s = cell(s)
    if self.vanilla_vae:
      s = self.stem_decoder(z)
    for cell in self.post_process:
      s = cell(s)
    logits = self.image_conditional(s)

    kl_all, kl_diag = [], []
    log_q, log_p = 0.0, 0.0
    for q, p, lq, lp in zip(all_q, all_p, all_log_q, all_log_p):
      kl_per_var = lq - lp if self.with_nf else q.kl(p)
      kl_diag.append(torch.mean(torch.sum(kl_per_var, dim=[2, 3]), dim=0))
      kl_all.append(torch.sum(kl_per_var, dim=[1, 2, 3]))
      log_q = log_q + torch.sum(lq, dim=[1, 2, 3])
      log_p = log_p + torch.sum(lp, dim=[1, 2, 3])
    return logits, log_q, log_p, kl_all, kl_diag

  def sample(self, num_samples, t=1.0, generator=None, eps=None):
    """Decoder logits of ``num_samples`` ancestral samples at temperature ``t``.

    eps: optional list of prior noise per group (same shapes as the posterior noise).
    """
    dev = self.prior_ftr0.device
    zeros = torch.zeros([num_samples] + self.z0_size, device=dev)
    dist = Normal(zeros, zeros, temp=t)
    z = self._noise(eps, 0, dist, generator)
    idx_dec = 0
    s = self.prior_ftr0.unsqueeze(0).expand(num_samples, -1, -1, -1)
    for cell in self.dec_tower:
      if cell.cell_type == "combiner_dec":
        if idx_dec > 0:
          mu, log_sigma = torch.chunk(self.dec_sampler[idx_dec - 1](s), 2, dim=1)
          z = self._noise(eps, idx_dec, Normal(mu, log_sigma, t), generator)
        s = cell(s, z)
        idx_dec += 1
      else:
        s = cell(s)
    if self.vanilla_vae:
      s = self.stem_decoder(z)
    for cell in self.post_process:
      s = cell(s)
    return self.image_conditional(s)

  def decoder_output(self, logits):
    if self.dataset in BINARY_DATASETS:
      return torch.distributions.Bernoulli(logits=logits)
    if self.num_mix_output == 1:
      return NormalDecoder(logits, num_bits=self.num_bits)
    return DiscMixLogistic(logits, self.num_mix_output, num_bits=self.num_bits)

  # ---- regularisers ----

  def spectral_norm_parallel(self, generator=None):
    """Sum over conv layers of the largest singular value of the [O, I*k*k] normalised kernel,
    by batched power iteration (kernels grouped by shape; vectors kept in sr_u/sr_v, 4
    iterations per call, 40 on a shape's first call)."""
    weights = {}
    for layer in self.all_conv_layers:
      w = layer.normalize_weight()
      w = w.reshape(w.size(0), -1)
      weights.setdefault(tuple(w.shape), []).append(w)
    loss = 0.0
    for shape, ws in weights.items():
      w = torch.stack(ws, dim=0)
      with torch.no_grad():
        num_iter = self.num_power_iter
        if shape not in self.sr_u:
          n, rows, cols = w.shape
          self.sr_u[shape] = F.normalize(
              torch.randn(n, rows, generator=generator, dtype=w.dtype), dim=1, eps=1e-3)
          self.sr_v[shape] = F.normalize(
              torch.randn(n, cols, generator=generator, dtype=w.dtype), dim=1, eps=1e-3)
          num_iter = 10 * self.num_power_iter
        for _ in range(num_iter):
          self.sr_v[shape] = F.normalize(
              torch.matmul(self.sr_u[shape].unsqueeze(1), w).squeeze(1), dim=1, eps=1e-3)
          self.sr_u[shape] = F.normalize(
              torch.matmul(w, self.sr_v[shape].unsqueeze(2)).squeeze(2), dim=1, eps=1e-3)
      sigma = torch.matmul(self.sr_u[shape].unsqueeze(1),
                           torch.matmul(w, self.sr_v[shape].unsqueeze(2)))
      loss = loss + torch.sum(sigma)
    return loss

  def batchnorm_loss(self):
    """Sum over affine BN layers of max |gamma|."""
    loss = 0.0
    for layer in self.all_bn_layers:
      if layer.affine:
        loss = loss + torch.max(torch.abs(layer.weight))
    return loss


# ---- losses (utils.py of the official code) ----------------------------------------


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
