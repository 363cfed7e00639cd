"""One latent group of NVAE's hierarchy, shared by the unrolled and the scanned layouts.

Group j > 0 of the decoder (decoder order, coarsest first) with decoder state
s [B,h,w,C] and the encoder feature s_enc [B,h,w,C] recorded at its combiner:

    prior      p_j = Normal(split(dec_sampler(elu(s))))                 (raw, clamped)
    posterior  ftr = s_enc + enc_combiner.conv(s)
               q_j = Normal(mu_p + dmu, ls_p + dls),  (dmu, dls) = split(enc_sampler(ftr))
    z_j = mu_q + sigma_q eps (eps ~ N(0,1), or given, or 0 for "mean"), then the shift-only
    IAF cells: z <- z - mu_k(z), log q(z) unchanged by them (log-det 0).

The functions below take the modules as arguments, so ``NVAENet`` (one module per group,
``hierarchy.py``) and ``DecGroup`` (the body of a ``flax.linen.scan`` over the groups of
a scale, parameters stacked on a leading axis) run exactly the same maths.

``scan=True`` (``NVAENet``): the groups of one scale have equal shapes, so each scale's
encoder groups (``EncGroup``: ``cells_per_group`` residual cells) and decoder groups
(``DecGroup``: cells, samplers, combiners, IAF cells) are one ``nn.scan`` body each:
XLA compiles a group once per scale instead of once per group (compile time flat in
``groups_per_scale``). ``dgmjax.nvae.layout`` converts the variables between layouts.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax.nvae.cells import DecCombiner, EncCombiner
from dgmjax.nvae.iaf import PairedCellAR
from dgmjax.nvae.layers import SPECTRAL_COLLECTION, WNConv
from dgmjax.nvae.latent import LatentNormal, split_params

def draw(q: LatentNormal, eps, rng_fn: Callable[[], jax.Array]):
  """z = mu + sigma eps: eps from ``rng_fn()`` (None), 0 (``"mean"``) or the given array."""
  if eps is None:
    return q.sample(rng_fn())
  if isinstance(eps, str):
    if eps != "mean":
      raise ValueError(f"eps must be None, 'mean' or a sequence of arrays; got {eps!r}")
    return q.mu
  return q.mu + jnp.exp(q.log_sigma) * eps.astype(jnp.float32)


def run_flows(flows, z, ftr, log_q):
  """The IAF cells in order: z <- cell(z, ftr), log q <- log q - log|det| (0 for NVAE's
  shift-only cells)."""
  for cell in flows:
    z, log_det = cell(z, ftr)
    log_q = log_q - log_det
  return z, log_q


def posterior_group(s, s_enc, eps, rng_fn, dec_sampler, enc_combiner, enc_sampler, flows):
  """Group j > 0 of q(z|x) (module docstring): (z [B,h,w,L], record)."""
  mu_p, ls_p = split_params(dec_sampler(nn.elu(s)).astype(jnp.float32))
  ftr = enc_combiner(s_enc, s)
  mu_q, ls_q = split_params(enc_sampler(ftr).astype(jnp.float32))
  q = LatentNormal.from_raw(mu_p + mu_q, ls_p + ls_q)
  p = LatentNormal.from_raw(mu_p, ls_p)
  z = draw(q, eps, rng_fn)
  z, log_q = run_flows(flows, z, ftr, q.log_p(z))
  return z, (q, p, log_q, p.log_p(z))


def prior_group(s, temperature, rng, dec_sampler):
  """Group j > 0 of the prior: z ~ Normal(split(dec_sampler(elu(s))), sigma * T)."""
  mu, ls = split_params(dec_sampler(nn.elu(s)))
  return LatentNormal.from_raw(mu, ls, temperature).sample(rng)


class EncGroup(nn.Module):
  """The encoder cells of one group: ``cells_i`` (i < ``len(cells)``), applied in turn."""
  cell_fn: Callable[[], nn.Module]
  num_cells: int

  def setup(self):
    self.cells = [self.cell_fn() for _ in range(self.num_cells)]

  def __call__(self, s, train: bool):
    for cell in self.cells:
      s = cell(s, train)
    return s


class DecGroup(nn.Module):
  """One decoder group j > 0: ``cells_i``, then the latent (``dec_sampler``,
  ``enc_combiner``, ``enc_sampler``, ``flows_k``) and ``dec_combiner`` (module docstring).

  ``__call__(s, train, mode, xs)`` -> (new s, (z, record or None)) with ``mode``:
  ``"posterior"`` (xs = {"s_enc": [B,h,w,C], "eps": [B,h,w,L] when given}, ``eps_mode``
  None (RNG) or "mean"), ``"prior"`` (xs = {"temperature"}), ``"given"`` (xs = {"z"}).
  """
  cell_fn: Callable[[], nn.Module]
  num_cells: int
  features: int
  latents: int
  num_flows: int
  dtype: Any = jnp.float32
  depthwise_impl: str = "auto"
  conv_impl: str = "auto"

  def setup(self):
    dt, nz = self.dtype, self.latents
    self.cells = [self.cell_fn() for _ in range(self.num_cells)]
    self.dec_sampler = WNConv(2 * nz, 1, use_bias=True, dtype=dt)
    self.enc_combiner = EncCombiner(self.features, dtype=dt)
    self.enc_sampler = WNConv(2 * nz, 3, padding=1, use_bias=True, dtype=dt,
                              conv_impl=self.conv_impl)
    self.flows = [PairedCellAR(nz, dtype=dt, depthwise_impl=self.depthwise_impl,
                               conv_impl=self.conv_impl) for _ in range(self.num_flows)]
    self.dec_combiner = DecCombiner(self.features, dtype=dt)

  def __call__(self, s, train: bool, mode: str, xs: dict, eps_mode=None):
    for cell in self.cells:
      s = cell(s, train)
    record = None
    if mode == "posterior":
      z, record = posterior_group(
          s, xs["s_enc"], xs.get("eps", eps_mode), lambda: self.make_rng("sample"),
          self.dec_sampler, self.enc_combiner, self.enc_sampler, self.flows)
    elif mode == "prior":
      z = prior_group(s, xs["temperature"], self.make_rng("sample"), self.dec_sampler)
    else:
      z = xs["z"]
    return self.dec_combiner(s, z), (z, record)


def scan_groups(fn, module: nn.Module, carry, xs, length: int):
  """``nn.scan`` of ``fn(module, carry, x) -> (carry, y)`` over ``length`` groups, with
  every variable collection of ``module`` (params, BN statistics, the sown spectral
  kernels) stacked on a leading [length] axis and the params/sample RNGs split per group."""
  return nn.scan(fn, variable_axes={"params": 0, "batch_stats": 0, SPECTRAL_COLLECTION: 0},
                 split_rngs={"params": True, "sample": True}, in_axes=0, out_axes=0,
                 length=length)(module, carry, xs)
