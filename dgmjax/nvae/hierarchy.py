"""The NVAE hierarchy as one Flax module (official ``AutoEncoder``, NVlabs/NVAE model.py).

Shapes for an image [B,H,W,C] with ``P = preprocess_blocks``, ``S = scales``,
``ch = channels``: the stem and pre-processing map to [B, H/2^P, W/2^P, ch 2^P]; the
encoder tower works at scales s = 0..S-1 (finest first) with width ch 2^(P+s); the
decoder starts from the learned constant ``prior_ftr0`` [H/2^(P+S-1), W/2^(P+S-1),
ch 2^(P+S-1)] and walks the scales coarsest first; post-processing up-samples P times;
``image_conditional`` gives the decoder's output parameters [B,H,W,out_channels].

Groups of latents (``latents_per_group`` channels each) sit at every scale: g_s groups
at encoder scale s (``groups_per_scale`` / halving with ``ada_groups``). Decoder order
(index j = 0..G-1) is coarsest first. For group j:

    prior  p_j = N(0, 1.01^2) (j = 0) or Normal(dec_sampler_{j-1}(elu(s)))
    post.  q_j = Normal(enc_sampler_j(ftr_j) + [raw prior params if j > 0])
    ftr_0 = elu(enc0(elu(s_enc_top))), ftr_j = s_enc_j + enc_combiner_j.conv(s_dec)
    z_j ~ q_j, then ``num_flows`` shift-only IAF pairs; s_dec <- dec_combiner_j(s_dec, z_j)

Parameter tree (official ``state_dict`` key -> Flax path; ``*`` the same index):

    prior_ftr0 [C,h,w]              -> prior_ftr0 [h,w,C]
    stem.*                          -> stem
    pre_process.i.*                 -> pre_process_i
    enc_tower.i.* (cells, combiners)-> enc_tower_i (EncCombiner: enc_tower_i/conv)
    enc0.1.*                        -> enc0
    enc_sampler.i.*                 -> enc_sampler_i
    dec_sampler.i.1.*               -> dec_sampler_i
    nf_cells.i.cell{1,2}.*          -> nf_cells_i/cell{1,2}/...
    dec_tower.i.* (cells, combiners)-> dec_tower_i
    post_process.i.*                -> post_process_i
    image_conditional.1.*           -> image_conditional

Inside cells (see ``cells.py``): ``_ops.k`` -> ``ops_k``; ``se.se.{0,2}`` ->
``se/se_{0,2}``; down skip ``skip.conv_{1..4}`` -> ``skip/conv_{1..4}``; up skip
``skip.1`` -> ``skip/conv``; BNSwishConv ``bn_act``/``conv_0`` as official;
InvertedResidual ``conv.{0|1}.bn`` -> ``bn_in``, ``conv.{1|2}.conv.{0,1}`` ->
``expand/{conv,bn}``, ``conv.{2|3}.conv.{0,1}`` -> ``depthwise/{conv,bn}``,
``conv.{3|4}`` -> ``project``, ``conv.{4|5}.bn`` -> ``bn_out`` (the second index when the
cell up-samples). Conv params: ``weight`` -> ``kernel`` (HWIO), ``bias``,
``log_weight_norm`` [O]; BN: ``weight``/``bias`` -> ``scale``/``bias`` and
``running_mean``/``running_var`` -> batch_stats ``mean``/``var``; Linear ``weight`` ->
``kernel`` transposed.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dgmjax.nn.remat import remat_module
from dgmjax.nvae.cells import Cell, DecCombiner, EncCombiner
from dgmjax.nvae.iaf import PairedCellAR
from dgmjax.nvae.layers import WNConv
from dgmjax.nvae.latent import LatentNormal, split_params

CHANNEL_MULT = 2


def groups_per_scale(scales: int, groups: int, ada_groups: bool, min_groups: int = 1,
                     divider: int = 2) -> tuple[int, ...]:
  """Official ``utils.groups_per_scale``: [g, g/2, ...] (finest first) with ada_groups."""
  out, n = [], groups
  for _ in range(scales):
    if n < 1:
      raise ValueError(f"groups per scale must be >= 1; got {n}")
    out.append(n)
    if ada_groups:
      n = max(min_groups, n // divider)
  return tuple(out)


def encoder_layout(groups, cells_per_group):
  """Kinds of the encoder tower entries: 'cell', 'combiner' or 'down'."""
  kinds = []
  for s, g_s in enumerate(groups):
    for g in range(g_s):
      kinds += ["cell"] * cells_per_group
      if not (s == len(groups) - 1 and g == g_s - 1):
        kinds.append("combiner")
    if s < len(groups) - 1:
      kinds.append("down")
  return kinds


def decoder_layout(groups, cells_per_group):
  """Kinds of the decoder tower entries: 'cell', 'combiner' or 'up'."""
  kinds = []
  n = len(groups)
  for s in range(n):
    for g in range(groups[n - s - 1]):
      if not (s == 0 and g == 0):
        kinds += ["cell"] * cells_per_group
      kinds.append("combiner")
    if s < n - 1:
      kinds.append("up")
  return kinds


class NVAENet(nn.Module):
  """The encoder-decoder. ``__call__(x, train)`` runs q(z|x) and p(x|z) (one posterior
  sample per image, from the ``"sample"`` RNG stream); ``sample(num, temperature,
  train)`` runs the prior and decoder; ``decode(zs)`` the decoder on given latents. All
  return the decoder's output parameters ``logits`` float32 [B,H,W,out_channels].
  ``encode(x, eps)`` returns the posterior latents [z_j] (decoder order).

  The decoder tower is walked by ``_decode_tower`` only, the encoder tower by
  ``_encode_tower`` only; the methods differ in the ``latent_fn(j, s)`` that supplies z_j
  at the j-th decoder combiner (posterior draw, prior draw or a given z)."""
  image_shape: tuple
  out_channels: int
  channels: int
  groups: tuple
  latents_per_group: int
  cells_per_group: int
  preprocess_blocks: int
  preprocess_cells: int
  postprocess_blocks: int
  postprocess_cells: int
  num_flows: int = 0
  use_se: bool = True
  remat: bool | str = False
  dtype: Any = jnp.float32
  depthwise_impl: str = "shift"

  def setup(self):
    ch, dt, se = self.channels, self.dtype, self.use_se
    cell_cls = remat_module(Cell, self.remat, static_argnums=(2,))
    mk = lambda f, t: cell_cls(int(f), t, use_se=se, dtype=dt, depthwise_impl=self.depthwise_impl)
    num_scales = len(self.groups)
    h, w, _ = self.image_shape
    red = 2 ** (self.preprocess_blocks + num_scales - 1)
    self.top_shape = (h // red, w // red)
    self.stem = WNConv(ch, 3, padding=1, use_bias=True, dtype=dt)
    pre, mult = [], 1
    for _ in range(self.preprocess_blocks):
      for c in range(self.preprocess_cells):
        if c == self.preprocess_cells - 1:
          pre.append(mk(CHANNEL_MULT * ch * mult, "down_pre"))
          mult *= CHANNEL_MULT
        else:
          pre.append(mk(ch * mult, "normal_pre"))
    self.pre_process = pre
    enc = []
    for kind in encoder_layout(self.groups, self.cells_per_group):
      if kind == "cell":
        enc.append(mk(ch * mult, "normal_enc"))
      elif kind == "combiner":
        enc.append(EncCombiner(ch * mult, dtype=dt))
      else:
        enc.append(mk(CHANNEL_MULT * ch * mult, "down_enc"))
        mult *= CHANNEL_MULT
    self.enc_tower = enc
    self.top_channels = ch * mult
    self.enc0 = WNConv(ch * mult, 1, use_bias=True, dtype=dt)
    nz = self.latents_per_group
    enc_s, dec_s, nf = [], [], []
    for s in range(num_scales):
      for g in range(self.groups[num_scales - s - 1]):
        enc_s.append(WNConv(2 * nz, 3, padding=1, use_bias=True, dtype=dt))
        for _ in range(self.num_flows):
          nf.append(PairedCellAR(nz, dtype=dt, depthwise_impl=self.depthwise_impl))
        if not (s == 0 and g == 0):
          dec_s.append(WNConv(2 * nz, 1, use_bias=True, dtype=dt))
    self.enc_sampler, self.dec_sampler, self.nf_cells = enc_s, dec_s, nf
    dec = []
    for kind in decoder_layout(self.groups, self.cells_per_group):
      if kind == "cell":
        dec.append(mk(ch * mult, "normal_dec"))
      elif kind == "combiner":
        dec.append(DecCombiner(ch * mult, dtype=dt))
      else:
        dec.append(mk(ch * mult // CHANNEL_MULT, "up_dec"))
        mult //= CHANNEL_MULT
    self.dec_tower = dec
    post = []
    for _ in range(self.postprocess_blocks):
      for c in range(self.postprocess_cells):
        if c == 0:
          post.append(mk(ch * mult // CHANNEL_MULT, "up_post"))
          mult //= CHANNEL_MULT
        else:
          post.append(mk(ch * mult, "normal_post"))
    self.post_process = post
    self.image_conditional = WNConv(self.out_channels, 3, padding=1, use_bias=True, dtype=dt)
    top_c = int(CHANNEL_MULT ** (self.preprocess_blocks + num_scales - 1) * ch)
    self.prior_ftr0 = self.param("prior_ftr0", nn.initializers.uniform(1.0),
                                 self.top_shape + (top_c,))

  def _flows(self, z, ftr, offset, log_q):
    for n in range(self.num_flows):
      z, log_det = self.nf_cells[offset + n](z, ftr)
      log_q = log_q - log_det
    return z, log_q

  def _draw(self, q, eps, j):
    if eps is None:
      return q.sample(self.make_rng("sample"))
    if isinstance(eps, str):
      if eps != "mean":
        raise ValueError(f"eps must be None, 'mean' or a sequence of arrays; got {eps!r}")
      return q.mu                # eps_j = 0
    return q.mu + jnp.exp(q.log_sigma) * eps[j].astype(jnp.float32)

  def _encode_tower(self, x, train):
    """x [B,H,W,C] -> (top features [B,h_top,w_top,C_top], the encoder combiners and the
    features they see, both in decoder order)."""
    s = self.stem(x.astype(self.dtype))
    for cell in self.pre_process:
      s = cell(s, train)
    comb_enc, comb_s = [], []
    for kind, cell in zip(encoder_layout(self.groups, self.cells_per_group), self.enc_tower):
      if kind == "combiner":
        comb_enc.append(cell)
        comb_s.append(s)
      else:
        s = cell(s, train)
    return s, comb_enc[::-1], comb_s[::-1]

  def _posterior_fn(self, x, train, eps, record=None):
    """The ``latent_fn`` of q(z|x): group j's posterior from the encoder features and the
    decoder state ``s``, z_j = mu_j + sigma_j eps_j (see ``_draw``), then the IAF cells.
    Appends (q, p, log q(z), log p(z)) to ``record`` when given."""
    top, comb_enc, comb_s = self._encode_tower(x, train)

    def latent(j, s):
      if j == 0:
        ftr = nn.elu(self.enc0(nn.elu(top)))
        q = LatentNormal.from_raw(*split_params(self.enc_sampler[0](ftr)))
      else:
        mu_p, ls_p = split_params(self.dec_sampler[j - 1](nn.elu(s)).astype(jnp.float32))
        ftr = comb_enc[j - 1](comb_s[j - 1], s)
        mu_q, ls_q = split_params(self.enc_sampler[j](ftr).astype(jnp.float32))
        q = LatentNormal.from_raw(mu_p + mu_q, ls_p + ls_q)
      z = self._draw(q, eps, j)
      z, log_q = self._flows(z, ftr, j * self.num_flows, q.log_p(z))
      if record is not None:
        p = (LatentNormal.from_raw(jnp.zeros_like(z), jnp.zeros_like(z)) if j == 0
             else LatentNormal.from_raw(mu_p, ls_p))
        record.append((q, p, log_q, p.log_p(z)))
      return z

    return latent

  def _decode_tower(self, batch, train, latent_fn):
    """The decoder from ``prior_ftr0`` (batch ``batch``) to logits [B,H,W,out]; at the
    j-th combiner (decoder order) ``latent_fn(j, s)`` gives z_j [B,h_j,w_j,L] from the
    decoder state s [B,h_j,w_j,C_j]."""
    s = jnp.broadcast_to(self.prior_ftr0.astype(self.dtype)[None], (batch,) + self.prior_ftr0.shape)
    idx = 0
    for kind, cell in zip(decoder_layout(self.groups, self.cells_per_group), self.dec_tower):
      if kind == "combiner":
        s = cell(s, latent_fn(idx, s))
        idx += 1
      else:
        s = cell(s, train)
    for cell in self.post_process:
      s = cell(s, train)
    return self.image_conditional(nn.elu(s)).astype(jnp.float32)

  def __call__(self, x, train: bool = False, eps=None):
    """x: float [B,H,W,C] in [-1,1] -> (logits [B,H,W,out], terms). ``eps`` (optional):
    a sequence of G standard-normal arrays [B,h_j,w_j,L], decoder order, used as the
    posterior noise z_j = mu_j + sigma_j eps_j (for parity tests); else the "sample" RNG.
    ``terms`` holds
    float32 ``kl`` [G,B] (analytic, or log q - log p with flows), ``log_q`` and
    ``log_p`` [B] (sums over all latents) and ``kl_diag`` [G, L] (batch mean of the
    spatial sums: the official active-unit statistic)."""
    pairs = []
    logits = self._decode_tower(x.shape[0], train, self._posterior_fn(x, train, eps, pairs))
    kls, diags, lq, lp = [], [], 0.0, 0.0
    for q, p, log_q, log_p in pairs:
      kl = log_q - log_p if self.num_flows > 0 else q.kl(p)
      kls.append(jnp.sum(kl, axis=(1, 2, 3)))
      diags.append(jnp.mean(jnp.sum(kl, axis=(1, 2)), axis=0))
      lq = lq + jnp.sum(log_q, axis=(1, 2, 3))
      lp = lp + jnp.sum(log_p, axis=(1, 2, 3))
    return logits, {"kl": jnp.stack(kls), "kl_diag": jnp.stack(diags), "log_q": lq, "log_p": lp}

  def encode(self, x, eps=None, train: bool = False):
    """x: float [B,H,W,C] in [-1,1] -> [z_j [B,h_j,w_j,L] for j = 0..G-1] (decoder order,
    coarsest first): the posterior latents the decoder consumes in ``__call__`` (after the
    IAF cells). ``eps``: None draws from the "sample" RNG, ``"mean"`` takes eps_j = 0
    (z_j = mu_j(x, z_<j) before the flows), or a sequence of G noise arrays as in
    ``__call__``. (The decoder tower runs too, as the posterior of group j needs the
    decoder state; its unused output is dead code under jit.)"""
    zs, latent = [], self._posterior_fn(x, train, eps)

    def keep(j, s):
      zs.append(latent(j, s))
      return zs[-1]

    self._decode_tower(x.shape[0], train, keep)
    return zs

  def decode(self, zs, train: bool = False):
    """[z_j [B,h_j,w_j,L]] (decoder order, G arrays) -> logits [B,H,W,out]: the decoder
    on given latents (the prior is not consulted)."""
    zs = list(zs)
    if len(zs) != len(self.enc_sampler):
      raise ValueError(f"decode expects {len(self.enc_sampler)} latent groups; got {len(zs)}")
    return self._decode_tower(zs[0].shape[0], train, lambda j, s: zs[j])

  def sample(self, num: int, temperature=1.0, train: bool = False):
    """Ancestral sampling at ``temperature`` (every sigma scaled): z_0 ~ N(0, 1.01^2 T^2),
    z_j ~ p_j(. | z_<j): logits [num,H,W,out]."""

    def prior(j, s):
      if j == 0:
        mu = ls = jnp.zeros((num,) + self.top_shape + (self.latents_per_group,), jnp.float32)
      else:
        mu, ls = split_params(self.dec_sampler[j - 1](nn.elu(s)))
      return LatentNormal.from_raw(mu, ls, temperature).sample(self.make_rng("sample"))

    return self._decode_tower(num, train, prior)
