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

That is the unrolled layout (``scan=False``, one module per cell). With ``scan=True`` the
groups of each scale run as one ``nn.scan`` body (``groups.py``) and their parameters sit
stacked under ``enc_groups_s``, ``dec_groups_t`` (plus ``enc_down_s``, ``dec_up_t``,
``dec_top``); ``layout.py`` maps the two trees onto each other.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax.nn.remat import remat_module
from dgmjax.nvae.cells import Cell, DecCombiner, EncCombiner
from dgmjax.nvae.groups import (DecGroup, EncGroup, draw, posterior_group, prior_group,
                                run_flows, scan_groups)
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


def _eps_at(eps, j):
  """Group j's posterior noise: None (the RNG) and "mean" stand for every group."""
  return eps if eps is None or isinstance(eps, str) else eps[j]


def _one_group(record):
  """A group's record with a leading group axis of size 1."""
  return jax.tree_util.tree_map(lambda a: a[None], record)


class NVAENet(nn.Module):
  """The encoder-decoder. ``__call__(x, train)`` runs q(z|x) and p(x|z) (one posterior
  sample per image, from the ``"sample"`` RNG stream); ``sample(num, temperature,
  train)`` runs the prior and decoder; ``decode(zs)`` the decoder on given latents. All
  return the decoder's output parameters ``logits`` float32 [B,H,W,out_channels].
  ``encode(x, eps)`` returns the posterior latents [z_j] (decoder order).

  The four methods differ only in how z_j is obtained at the j-th decoder combiner:
  ``mode`` "posterior" (draw from q, recording (q, p, log q, log p)), "prior" (draw from
  p at a temperature) or "given". ``_encode_tower`` and ``_decode_tower`` walk the
  towers, unrolled (one module per cell, the official layout) or with ``scan=True``
  scanned per scale (``dgmjax.nvae.groups``; same maths, stacked parameters, one
  compiled group body per scale; convert with ``dgmjax.nvae.layout``). The two layouts
  draw different random numbers from the same key (the scan splits the RNG per group).
  """
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
  depthwise_impl: str = "auto"
  conv_impl: str = "auto"
  scan: bool = False

  def setup(self):
    ch, dt, se = self.channels, self.dtype, self.use_se
    impls = dict(depthwise_impl=self.depthwise_impl, conv_impl=self.conv_impl)
    cell_cls = remat_module(Cell, self.remat, static_argnums=(2,))
    mk = lambda f, t: cell_cls(int(f), t, use_se=se, dtype=dt, **impls)
    factory = lambda f, t: functools.partial(cell_cls, int(f), t, use_se=se, dtype=dt, **impls)
    conv3 = lambda f: WNConv(f, 3, padding=1, use_bias=True, dtype=dt, conv_impl=self.conv_impl)
    num_scales = len(self.groups)
    h, w, _ = self.image_shape
    red = 2 ** (self.preprocess_blocks + num_scales - 1)
    self.top_shape = (h // red, w // red)
    self.stem = conv3(ch)
    pre, mult = [], 1
    for _ in range(self.preprocess_blocks):
      for c in range(self.preprocess_cells):
        if c == self.preprocess_cells - 1:
          pre.append(mk(CHANNEL_MULT * ch * mult, "down_pre"))
          mult *= CHANNEL_MULT
        else:
          pre.append(mk(ch * mult, "normal_pre"))
    self.pre_process = pre
    nz, ncells = self.latents_per_group, self.cells_per_group
    if self.scan:
      enc_groups, enc_down = [], []
      for s in range(num_scales):
        enc_groups.append(EncGroup(factory(ch * mult, "normal_enc"), ncells))
        if s < num_scales - 1:
          enc_down.append(mk(CHANNEL_MULT * ch * mult, "down_enc"))
          mult *= CHANNEL_MULT
      self.enc_groups, self.enc_down = enc_groups, enc_down
    else:
      enc = []
      for kind in encoder_layout(self.groups, ncells):
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
    if self.scan:
      # Group 0 (no cells, fixed prior) stays unrolled under its official names.
      self.enc_sampler = [conv3(2 * nz)]
      self.nf_cells = [PairedCellAR(nz, dtype=dt, **impls) for _ in range(self.num_flows)]
      self.dec_top = DecCombiner(ch * mult, dtype=dt)
      dec_groups, dec_up = [], []
      for s in range(num_scales):
        dec_groups.append(DecGroup(factory(ch * mult, "normal_dec"), ncells, ch * mult, nz,
                                   self.num_flows, dtype=dt, **impls))
        if s < num_scales - 1:
          dec_up.append(mk(ch * mult // CHANNEL_MULT, "up_dec"))
          mult //= CHANNEL_MULT
      self.dec_groups, self.dec_up = dec_groups, dec_up
    else:
      enc_s, dec_s, nf = [], [], []
      for s in range(num_scales):
        for g in range(self.groups[num_scales - s - 1]):
          enc_s.append(conv3(2 * nz))
          for _ in range(self.num_flows):
            nf.append(PairedCellAR(nz, dtype=dt, **impls))
          if not (s == 0 and g == 0):
            dec_s.append(WNConv(2 * nz, 1, use_bias=True, dtype=dt))
      self.enc_sampler, self.dec_sampler, self.nf_cells = enc_s, dec_s, nf
      dec = []
      for kind in decoder_layout(self.groups, ncells):
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
    self.image_conditional = conv3(self.out_channels)
    top_c = int(CHANNEL_MULT ** (self.preprocess_blocks + num_scales - 1) * ch)
    self.prior_ftr0 = self.param("prior_ftr0", nn.initializers.uniform(1.0),
                                 self.top_shape + (top_c,))

  @property
  def num_groups(self) -> int:
    return int(sum(self.groups))

  def _encode_tower(self, x, train):
    """x [B,H,W,C] -> (top features [B,h_top,w_top,C_top], the encoder features each
    decoder group j = 1..G-1 combines with, in decoder order: a list of [B,h_j,w_j,C_j]
    unrolled, a list per decoder scale of stacked [n_t,B,h,w,C] with ``scan``)."""
    s = self.stem(x.astype(self.dtype))
    for cell in self.pre_process:
      s = cell(s, train)
    if self.scan:
      feats, n = [], len(self.groups)
      for si, group in enumerate(self.enc_groups):
        s, ys = scan_groups(lambda m, c, _: (lambda o: (o, o))(m(c, train)), group, s, None,
                            self.groups[si])
        feats.append(ys[::-1])                    # decoder order within the scale
        if si < n - 1:
          s = self.enc_down[si](s, train)
      feats = feats[::-1]                         # coarsest scale first
      feats[0] = feats[0][1:]                     # its last group's output is the top
      return s, feats
    comb_s = []
    for kind, cell in zip(encoder_layout(self.groups, self.cells_per_group), self.enc_tower):
      if kind == "combiner":
        comb_s.append(s)
      else:
        s = cell(s, train)
    return s, comb_s[::-1]

  def _enc_combiners(self):
    kinds = encoder_layout(self.groups, self.cells_per_group)
    return [c for k, c in zip(kinds, self.enc_tower) if k == "combiner"][::-1]

  def _first_latent(self, batch, mode, inputs, records):
    """z_0 [B,h_top,w_top,L] of group 0: q from the top encoder feature, N(0, 1.01^2 T^2)
    prior, or given."""
    if mode == "posterior":
      ftr = nn.elu(self.enc0(nn.elu(inputs["top"])))
      q = LatentNormal.from_raw(*split_params(self.enc_sampler[0](ftr)))
      z = draw(q, _eps_at(inputs["eps"], 0), lambda: self.make_rng("sample"))
      z, log_q = run_flows(self.nf_cells[:self.num_flows], z, ftr, q.log_p(z))
      p = LatentNormal.from_raw(jnp.zeros_like(z), jnp.zeros_like(z))
      records.append(_one_group((q, p, log_q, p.log_p(z))))
      return z
    if mode == "prior":
      mu = jnp.zeros((batch,) + self.top_shape + (self.latents_per_group,), jnp.float32)
      return LatentNormal.from_raw(mu, mu, inputs["temperature"]).sample(self.make_rng("sample"))
    return inputs["zs"][0]

  def _latent(self, j, s, mode, inputs, enc_comb, records):
    """z_j for j >= 1 in the unrolled layout (``dgmjax.nvae.groups``)."""
    if mode == "posterior":
      nf = self.num_flows
      z, rec = posterior_group(
          s, inputs["feats"][j - 1], _eps_at(inputs["eps"], j), lambda: self.make_rng("sample"),
          self.dec_sampler[j - 1], enc_comb[j - 1], self.enc_sampler[j],
          self.nf_cells[j * nf:(j + 1) * nf])
      records.append(_one_group(rec))
      return z
    if mode == "prior":
      return prior_group(s, inputs["temperature"], self.make_rng("sample"),
                         self.dec_sampler[j - 1])
    return inputs["zs"][j]

  def _scan_scale(self, t, start, count, s, train, mode, inputs, records):
    """Decoder groups j = start..start+count-1 (all in decoder scale t) as one scan:
    (new s, z stacked [count,B,h,w,L])."""
    eps_mode = None
    if mode == "posterior":
      xs = {"s_enc": inputs["feats"][t]}
      eps = inputs["eps"]
      if eps is None or isinstance(eps, str):
        eps_mode = eps
      else:                                                 # one noise array per group
        xs["eps"] = jnp.stack([eps[j] for j in range(start, start + count)])
    elif mode == "prior":
      xs = {"temperature": jnp.broadcast_to(jnp.asarray(inputs["temperature"], jnp.float32),
                                            (count,))}
    else:
      xs = {"z": jnp.stack([inputs["zs"][j] for j in range(start, start + count)])}
    s, (zs, rec) = scan_groups(lambda m, c, x: m(c, train, mode, x, eps_mode),
                               self.dec_groups[t], s, xs, count)
    if rec is not None:
      records.append(rec)
    return s, zs

  def _decode_tower(self, batch, train, mode, inputs, records=None):
    """The decoder from ``prior_ftr0`` (batch ``batch``) to (logits [B,H,W,out], the z_j
    for j = 0..G-1 as a list of stacks [n,B,h,w,L] in decoder order). ``inputs``: "top",
    "feats" and "eps" (posterior: eps None, "mean" or G arrays), "temperature" (prior) or
    "zs" (given). Posterior groups append their
    (q, p, log q, log p) to ``records``, stacked on a leading group axis [n,B,h,w,L]
    (n = 1 unrolled, the scale's group count when scanned), in decoder order."""
    records = [] if records is None else records
    s = jnp.broadcast_to(self.prior_ftr0.astype(self.dtype)[None], (batch,) + self.prior_ftr0.shape)
    z = self._first_latent(batch, mode, inputs, records)
    zs, j = [z[None]], 1
    if self.scan:
      s = self.dec_top(s, z)
      n = len(self.groups)
      for t in range(n):
        count = self.groups[n - 1 - t] - (1 if t == 0 else 0)
        if count:
          s, new = self._scan_scale(t, j, count, s, train, mode, inputs, records)
          zs.append(new)
          j += count
        if t < n - 1:
          s = self.dec_up[t](s, train)
    else:
      enc_comb = self._enc_combiners() if mode == "posterior" else None
      kinds = decoder_layout(self.groups, self.cells_per_group)
      for i, (kind, cell) in enumerate(zip(kinds, self.dec_tower)):
        if kind == "combiner":
          if i:
            z = self._latent(j, s, mode, inputs, enc_comb, records)
            zs.append(z[None])
            j += 1
          s = cell(s, z)
        else:
          s = cell(s, train)
    for cell in self.post_process:
      s = cell(s, train)
    return self.image_conditional(nn.elu(s)).astype(jnp.float32), zs

  def _posterior_inputs(self, x, train, eps):
    if not (eps is None or isinstance(eps, str) or len(eps) == self.num_groups):
      raise ValueError(f"eps must hold {self.num_groups} arrays (one per latent group); "
                       f"got {len(eps)}")
    top, feats = self._encode_tower(x, train)
    return {"top": top, "feats": feats, "eps": eps}

  def __call__(self, x, train: bool = False, eps=None):
    """x: float [B,H,W,C] in [-1,1] -> (logits [B,H,W,out], terms). ``eps`` (optional):
    a sequence of G standard-normal arrays [B,h_j,w_j,L], decoder order, used as the
    posterior noise z_j = mu_j + sigma_j eps_j (for parity tests); else the "sample" RNG.
    ``terms`` holds
    float32 ``kl`` [G,B] (analytic, or log q - log p with flows), ``log_q`` and
    ``log_p`` [B] (sums over all latents) and ``kl_diag`` [G, L] (batch mean of the
    spatial sums: the official active-unit statistic)."""
    pairs = []
    logits, _ = self._decode_tower(x.shape[0], train, "posterior",
                                   self._posterior_inputs(x, train, eps), pairs)
    kls, diags, lq, lp = [], [], 0.0, 0.0
    for q, p, log_q, log_p in pairs:                   # each [n,B,h,w,L]
      kl = log_q - log_p if self.num_flows > 0 else q.kl(p)
      kls.append(jnp.sum(kl, axis=(2, 3, 4)))
      diags.append(jnp.mean(jnp.sum(kl, axis=(2, 3)), axis=1))
      lq = lq + jnp.sum(log_q, axis=(0, 2, 3, 4))
      lp = lp + jnp.sum(log_p, axis=(0, 2, 3, 4))
    return logits, {"kl": jnp.concatenate(kls), "kl_diag": jnp.concatenate(diags),
                    "log_q": lq, "log_p": lp}

  def encode(self, x, eps=None, train: bool = False):
    """x: float [B,H,W,C] in [-1,1] -> [z_j [B,h_j,w_j,L] for j = 0..G-1] (decoder order,
    coarsest first): the posterior latents the decoder consumes in ``__call__`` (after the
    IAF cells). ``eps``: None draws from the "sample" RNG, ``"mean"`` takes eps_j = 0
    (z_j = mu_j(x, z_<j) before the flows), or a sequence of G noise arrays as in
    ``__call__``. (The decoder tower runs too, as the posterior of group j needs the
    decoder state; its unused output is dead code under jit.)"""
    stacks = self._decode_tower(x.shape[0], train, "posterior",
                                self._posterior_inputs(x, train, eps))[1]
    return [z for stack in stacks for z in stack]

  def decode(self, zs, train: bool = False):
    """[z_j [B,h_j,w_j,L]] (decoder order, G arrays) -> logits [B,H,W,out]: the decoder
    on given latents (the prior is not consulted)."""
    zs = list(zs)
    if len(zs) != self.num_groups:
      raise ValueError(f"decode expects {self.num_groups} latent groups; got {len(zs)}")
    return self._decode_tower(zs[0].shape[0], train, "given", {"zs": zs})[0]

  def sample(self, num: int, temperature=1.0, train: bool = False):
    """Ancestral sampling at ``temperature`` (every sigma scaled): z_0 ~ N(0, 1.01^2 T^2),
    z_j ~ p_j(. | z_<j): logits [num,H,W,out]."""
    return self._decode_tower(num, train, "prior", {"temperature": temperature})[0]
