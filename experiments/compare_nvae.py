"""Latent access for NVAE (``dgmjax compare``): encode, decode and interpolate.

``NVAEModel`` exposes the ELBO and sampling but not its latents, so these functions run
the hierarchy's own sub-modules (``NVAENet``, ``dgmjax/nvae/hierarchy.py``) through
``nn.Module.apply(..., method=fn)`` with BN in inference mode:

- ``encode(model, variables, x, rng=None)``: the latents z_j (decoder order, coarsest
  first; shapes [B,h_j,w_j,L]) drawn group by group from the posterior
  q(z_j | x, z_<j); with ``rng=None`` each z_j is the posterior MEAN mu_j (eps = 0).
  These are the same z the ELBO's decoder consumes (after the IAF cells, if any).
- ``decode_logits(model, variables, zs)``: the decoder run on given z's (the prior is not
  consulted): image-distribution parameters [B,H,W,out].
- ``decode(model, variables, zs)``: uint8 [B,H,W,C], the most likely mixture component's
  mean rounded to a level (mixture and logistic temperature 0): a deterministic image.
- ``interpolate``: decode((1-a) z(x1) + a z(x2)) for each group, a in linspace(0, 1, n).

Unlike Glow's, this encoder is not an exact inverse: ``decode(encode(x))`` is a
reconstruction, not x. (NVAE: Vahdat & Kautz 2020, NVlabs/NVAE ``model.py``.)
A natural home for these is ``NVAEModel`` itself; they live here until then.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax.distributions import discretized_logistic_mixture_sample
from dgmjax.nvae.hierarchy import decoder_layout, encoder_layout
from dgmjax.nvae.latent import LatentNormal, split_params


def _encode(net, x, eps):
  """Bound-module body mirroring ``NVAENet.__call__``; returns the list of z_j."""
  s = net.stem(x.astype(net.dtype))
  for cell in net.pre_process:
    s = cell(s, False)
  comb_enc, comb_s = [], []
  for kind, cell in zip(encoder_layout(net.groups, net.cells_per_group), net.enc_tower):
    if kind == "combiner":
      comb_enc.append(cell)
      comb_s.append(s)
    else:
      s = cell(s, False)
  comb_enc.reverse()
  comb_s.reverse()
  ftr = nn.elu(net.enc0(nn.elu(s)))
  q = LatentNormal.from_raw(*split_params(net.enc_sampler[0](ftr)))
  z = net._draw(q, eps, 0)  # pylint: disable=protected-access
  z, _ = net._flows(z, ftr, 0, q.log_p(z))  # pylint: disable=protected-access
  zs = [z]
  nf_offset, idx = net.num_flows, 0
  s = jnp.broadcast_to(net.prior_ftr0.astype(net.dtype)[None], (x.shape[0],) + net.prior_ftr0.shape)
  for kind, cell in zip(decoder_layout(net.groups, net.cells_per_group), net.dec_tower):
    if kind != "combiner":
      s = cell(s, False)
      continue
    if idx > 0:
      mu_p, ls_p = split_params(net.dec_sampler[idx - 1](nn.elu(s)).astype(jnp.float32))
      ftr = comb_enc[idx - 1](comb_s[idx - 1], s)
      mu_q, ls_q = split_params(net.enc_sampler[idx](ftr).astype(jnp.float32))
      q = LatentNormal.from_raw(mu_p + mu_q, ls_p + ls_q)
      z = net._draw(q, eps, idx)  # pylint: disable=protected-access
      z, _ = net._flows(z, ftr, nf_offset, q.log_p(z))  # pylint: disable=protected-access
      nf_offset += net.num_flows
      zs.append(z)
    s = cell(s, z)
    idx += 1
  return zs


def _decode(net, zs):
  """Bound-module body: the decoder tower and post-processing on given z's."""
  s = jnp.broadcast_to(net.prior_ftr0.astype(net.dtype)[None],
                       (zs[0].shape[0],) + net.prior_ftr0.shape)
  idx = 0
  for kind, cell in zip(decoder_layout(net.groups, net.cells_per_group), net.dec_tower):
    if kind != "combiner":
      s = cell(s, False)
      continue
    s = cell(s, zs[idx])
    idx += 1
  for cell in net.post_process:
    s = cell(s, False)
  return net.image_conditional(nn.elu(s)).astype(jnp.float32)


def _net_vars(variables):
  return {k: variables[k] for k in ("params", "batch_stats")}


def encode(model, variables, x, rng=None):
  """x: uint8 [B,H,W,C] -> list of z_j [B,h_j,w_j,L] (posterior means when rng is None)."""
  model._check(x)  # pylint: disable=protected-access
  xin = model._inputs(x)  # pylint: disable=protected-access
  if rng is None:
    # eps_j = 0 for every group: z_j = mu_j(x, z_<j). The shapes are only known group by
    # group, so zeros are produced lazily by an object indexed like the eps list.
    class _Zeros:
      def __getitem__(self, j):
        return jnp.zeros((), jnp.float32)
    return model.net.apply(_net_vars(variables), xin, _Zeros(), method=_encode)
  return model.net.apply(_net_vars(variables), xin, None, method=_encode, rngs={"sample": rng})


def decode_logits(model, variables, zs):
  """list of z_j -> decoder output [B,H,W,out] (the image distribution's parameters)."""
  return model.net.apply(_net_vars(variables), list(zs), method=_decode)


def decode(model, variables, zs):
  """list of z_j -> uint8 [B,H,W,C], the deterministic (temperature 0) image."""
  logits = decode_logits(model, variables, zs)
  if model.decoder == "bernoulli":
    return (logits > 0).astype(jnp.uint8)
  return discretized_logistic_mixture_sample(
      jax.random.PRNGKey(0), *model.split_logits(logits), num_bins=model.num_bins,
      mixture_temperature=0.0, logistic_temperature=0.0)


def interpolate(model, variables, x1, x2, num: int = 8):
  """uint8 [B,num,H,W,C]: decode((1-a) z(x1) + a z(x2)) group by group."""
  z1, z2 = encode(model, variables, x1), encode(model, variables, x2)
  a = jnp.linspace(0.0, 1.0, num)[None, :, None, None, None]
  b = z1[0].shape[0]
  zs = [((1 - a) * p[:, None] + a * q[:, None]).reshape((b * num,) + p.shape[1:])
        for p, q in zip(z1, z2)]
  out = decode(model, variables, zs)
  return out.reshape((b, num) + tuple(model.image_shape))
