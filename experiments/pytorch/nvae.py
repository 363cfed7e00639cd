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

Modules: the official argument namespace in ``nvae_args.py``, the losses of ``utils.py``
in ``nvae_losses.py``, the layers and cells in ``nvae_ops.py``, ``nvae_iaf.py`` and
``nvae_distributions.py``; this module holds ``AutoEncoder`` and re-exports the argument
and loss functions, so ``experiments.pytorch.nvae`` is the one import callers need.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from experiments.pytorch.nvae_args import (  # noqa: F401 (re-exported)
    BINARY_DATASETS, CROP_DATASETS, OFFICIAL_DEFAULTS, args_from_hparams, default_args,
    faithful_args, groups_per_scale, input_size, tiny_args)
from experiments.pytorch.nvae_distributions import DiscMixLogistic, Normal, NormalDecoder
from experiments.pytorch.nvae_iaf import ARConv2d, PairedCellAR
from experiments.pytorch.nvae_losses import (  # noqa: F401 (re-exported)
    elbo_terms, images_to_input, kl_balancer, kl_balancer_coeff, kl_coeff, log_iw,
    pre_process, reconstruction_loss, training_loss)
from experiments.pytorch.nvae_ops import (CHANNEL_MULT, Cell, Conv2D, DecCombinerCell,
                                          EncCombinerCell, arch_cells)


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
