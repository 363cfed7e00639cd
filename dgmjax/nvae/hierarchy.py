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

Parameter tree (one layout: each scale's repeated groups stacked on a leading axis,
``groups.py``; the official per-layer ``state_dict`` keys are known only to
``dgmjax.convert.nvae``). With S scales, encoder scale s (finest first) holding g_s
groups and decoder scale t (coarsest first) holding n_t = g_{S-1-t} groups, group 0
excluded (n_0 = g_{S-1} - 1):

    prior_ftr0 [h,w,C], stem, pre_process_i, post_process_i, image_conditional
    enc_groups_s/cells_c                 [g_s]  the encoder cells of each group
    enc_down_s                                  the down-sampling cell after scale s
    enc0, enc_sampler_0, nf_cells_k             group 0's posterior (k < num_flows)
    dec_top                                     group 0's decoder combiner
    dec_groups_t/{cells_c, dec_sampler, enc_combiner, enc_sampler, flows_k,
                  dec_combiner}          [n_t]  decoder group j = j_t + p at index p
    dec_up_t                                    the up-sampling cell after scale t

(``batch_stats`` and the sown spectral kernels follow the same tree.) Inside cells (see
``cells.py``): ``ops_k``, ``se/se_{0,2}``, down skip ``skip/conv_{1..4}``, up skip
``skip/conv``, BNSwishConv ``bn_act``/``conv_0``, InvertedResidual ``bn_in``,
``expand/{conv,bn}``, ``depthwise/{conv,bn}``, ``project``, ``bn_out``; IAF cells
``cell{1,2}/conv/convz_{0,2}``, ``cell{1,2}/mu/conv_0``. Conv params ``kernel`` (HWIO),
``bias``, ``log_weight_norm`` [O]; BN ``scale``/``bias`` and batch_stats ``mean``/``var``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax.nn.compute import DEFAULT, Compute
from dgmjax.nvae.cells import Cell, DecCombiner
from dgmjax.nvae.groups import DecGroup, EncGroup, draw, run_flows, run_groups
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


def _eps_at(eps, j):
  """Group j's posterior noise: None (the RNG) and "mean" stand for every group."""
  return eps if eps is None or isinstance(eps, str) else eps[j]


def _temperatures(t, start: int, count: int):
  """Groups start..start+count-1's temperatures [count]: one value for all groups, or a
  slice of the per-group array [G]."""
  t = jnp.asarray(t, jnp.float32)
  return t[start:start + count] if t.ndim == 1 else jnp.broadcast_to(t, (count,))


class NVAENet(nn.Module):
  """The encoder-decoder. ``__call__(x, train)`` runs q(z|x) and p(x|z) (one posterior
  sample per image, from the ``"sample"`` RNG stream); ``sample(num, temperature,
  train)`` runs the prior and decoder; ``decode(zs)`` the decoder on given latents. All
  return the decoder's output parameters ``logits`` float32 [B,H,W,out_channels].
  ``encode(x, eps)`` returns the posterior latents [z_j] (decoder order).

  The four methods differ only in how z_j is obtained at the j-th decoder combiner:
  ``mode`` "posterior" (draw from q, recording (q, p, log q, log p)), "prior" (draw from
  p at a temperature) or "given". ``_encode_tower`` and ``_decode_tower`` walk the
  towers, each scale's groups one repeated block (``dgmjax.nvae.groups``) run as
  ``compute`` says (scan or unrolled, remat); the cells outside the groups are remat-ed
  one by one with the same policy.
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
  compute: Compute = DEFAULT

  def setup(self):
    ch, cm, se = self.channels, self.compute, self.use_se
    cell_cls = cm.checkpoint(Cell, static_argnums=(2,))
    mk = lambda f, t: cell_cls(int(f), t, use_se=se, compute=cm)
    conv3 = lambda f: WNConv(f, 3, padding=1, use_bias=True, compute=cm)
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
    enc_groups, enc_down = [], []
    for s in range(num_scales):
      enc_groups.append(EncGroup(ch * mult, ncells, se, cm))
      if s < num_scales - 1:
        enc_down.append(mk(CHANNEL_MULT * ch * mult, "down_enc"))
        mult *= CHANNEL_MULT
    self.enc_groups, self.enc_down = enc_groups, enc_down
    self.top_channels = ch * mult
    self.enc0 = WNConv(ch * mult, 1, use_bias=True, compute=cm)
    # Group 0 (no cells, fixed prior) is not a repeated block: official names.
    self.enc_sampler = [conv3(2 * nz)]
    self.nf_cells = [PairedCellAR(nz, compute=cm) for _ in range(self.num_flows)]
    self.dec_top = DecCombiner(ch * mult, compute=cm)
    dec_groups, dec_up = [], []
    for s in range(num_scales):
      dec_groups.append(DecGroup(ch * mult, ncells, nz, self.num_flows, se, cm))
      if s < num_scales - 1:
        dec_up.append(mk(ch * mult // CHANNEL_MULT, "up_dec"))
        mult //= CHANNEL_MULT
    self.dec_groups, self.dec_up = dec_groups, dec_up
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
    """x [B,H,W,C] -> (top features [B,h_top,w_top,C_top], the encoder features the
    decoder groups j = 1..G-1 combine with: per decoder scale t a stack [n_t,B,h,w,C] in
    decoder order)."""
    s = self.stem(self.compute.cast(x))
    for cell in self.pre_process:
      s = cell(s, train)
    feats, n = [], len(self.groups)
    for si, group in enumerate(self.enc_groups):
      s, ys = run_groups(lambda m, c, _: (lambda o: (o, o))(m(c, train)), group, s, None,
                         self.groups[si], self.compute)
      feats.append(ys[::-1])                      # decoder order within the scale
      if si < n - 1:
        s = self.enc_down[si](s, train)
    feats = feats[::-1]                           # coarsest scale first
    feats[0] = feats[0][1:]                       # its last group's output is the top
    return s, feats

  def _first_latent(self, batch, mode, inputs, records):
    """z_0 [B,h_top,w_top,L] of group 0: q from the top encoder feature, N(0, 1.01^2 T^2)
    prior, or given."""
    if mode == "posterior":
      ftr = nn.elu(self.enc0(nn.elu(inputs["top"])))
      q = LatentNormal.from_raw(*split_params(self.enc_sampler[0](ftr)))
      z = draw(q, _eps_at(inputs["eps"], 0), lambda: self.make_rng("sample"))
      z, log_q = run_flows(self.nf_cells, z, ftr, q.log_p(z))
      p = LatentNormal.from_raw(jnp.zeros_like(z), jnp.zeros_like(z))
      records.append(jax.tree_util.tree_map(lambda a: a[None], (q, p, log_q, p.log_p(z))))
      return z
    if mode == "prior":
      mu = jnp.zeros((batch,) + self.top_shape + (self.latents_per_group,), jnp.float32)
      t = inputs["temperature"]
      t = t if isinstance(t, (int, float)) else _temperatures(t, 0, 1)[0]
      return draw(LatentNormal.from_raw(mu, mu, t),
                  _eps_at(inputs["eps"], 0), lambda: self.make_rng("sample"))
    return inputs["zs"][0]

  def _scale(self, t, start, count, s, train, mode, inputs, records):
    """Decoder groups j = start..start+count-1 (all in decoder scale t) as one repeated
    block: (new s, z stacked [count,B,h,w,L])."""
    stack = lambda arrays: jnp.stack([arrays[j] for j in range(start, start + count)])
    eps_mode, eps = None, inputs.get("eps")
    if mode == "posterior":
      xs = {"s_enc": inputs["feats"][t]}
    elif mode == "prior":
      xs = {"temperature": _temperatures(inputs["temperature"], start, count)}
    else:
      xs = {"z": stack(inputs["zs"])}
    if eps is None or isinstance(eps, str):
      eps_mode = eps
    else:                                                   # one noise array per group
      xs["eps"] = stack(eps)
    s, (zs, rec) = run_groups(lambda m, c, x: m(c, train, mode, x, eps_mode),
                              self.dec_groups[t], s, xs, count, self.compute)
    if rec is not None:
      records.append(rec)
    return s, zs

  def _decode_tower(self, batch, train, mode, inputs, records=None):
    """The decoder from ``prior_ftr0`` (batch ``batch``) to (logits [B,H,W,out], the z_j
    for j = 0..G-1 as a list of stacks [n,B,h,w,L] in decoder order). ``inputs``: "top",
    "feats" and "eps" (posterior: eps None, "mean" or G arrays), "temperature" (prior) or
    "zs" (given). Posterior groups append their (q, p, log q, log p) to ``records``,
    stacked on a leading group axis [n,B,h,w,L] (n = 1 for group 0, a scale's group
    count for the others), in decoder order."""
    records = [] if records is None else records
    s = jnp.broadcast_to(self.compute.cast(self.prior_ftr0)[None],
                         (batch,) + self.prior_ftr0.shape)
    z = self._first_latent(batch, mode, inputs, records)
    zs, j = [z[None]], 1
    s = self.dec_top(s, z)
    n = len(self.groups)
    for t in range(n):
      count = self.groups[n - 1 - t] - (1 if t == 0 else 0)
      if count:
        s, new = self._scale(t, j, count, s, train, mode, inputs, records)
        zs.append(new)
        j += count
      if t < n - 1:
        s = self.dec_up[t](s, train)
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
    return self._decode_tower(zs[0].shape[0], train, "given", {"zs": zs, "eps": None})[0]

  def sample(self, num: int, temperature=1.0, train: bool = False, eps=None):
    """Ancestral sampling at ``temperature`` (every sigma scaled): z_0 ~ N(0, 1.01^2 T_0^2),
    z_j ~ N(mu_j, (T_j sigma_j)^2) with p_j(. | z_<j) = N(mu_j, sigma_j^2): logits
    [num,H,W,out]. ``temperature``: one value T for every group, or an array [G] of
    T_j (decoder order). ``eps``: None (the "sample" RNG) or G standard-normal arrays
    [num,h_j,w_j,L] (decoder order): z_j = mu_j + T_j sigma_j eps_j."""
    if not (eps is None or len(eps) == self.num_groups):
      raise ValueError(f"eps must hold {self.num_groups} arrays (one per latent group); "
                       f"got {len(eps)}")
    return self._decode_tower(num, train, "prior", {"temperature": temperature, "eps": eps})[0]

  def sample_latents(self, num: int, temperature=1.0, train: bool = False, eps=None):
    """The latents ``sample`` draws, [z_j [num,h_j,w_j,L] for j = 0..G-1] (decoder order;
    same arguments); ``decode`` of them gives ``sample``'s logits."""
    stacks = self._decode_tower(num, train, "prior", {"temperature": temperature, "eps": eps})[1]
    return [z for stack in stacks for z in stack]
