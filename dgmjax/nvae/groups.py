"""One latent group of NVAE's hierarchy, and each scale's groups as one repeated block.

Group j > 0 of the decoder (decoder order, coarsest first) with decoder state
s [B,h,w,C] and the encoder feature s_enc [B,h,w,C] recorded at its combiner:

    prior      p_j = Normal(split(dec_sampler(elu(s))))                 (raw, clamped)
    posterior  ftr = s_enc + enc_combiner.conv(s)
               q_j = Normal(mu_p + dmu, ls_p + dls),  (dmu, dls) = split(enc_sampler(ftr))
    z_j = mu_q + sigma_q eps (eps ~ N(0,1), or given, or 0 for "mean"), then the shift-only
    IAF cells: z <- z - mu_k(z), log q(z) unchanged by them (log-det 0).

The groups of one scale have equal shapes, so each scale's encoder groups (``EncGroup``:
``cells_per_group`` residual cells) and decoder groups (``DecGroup``: cells, samplers,
combiners, IAF cells) are one block each, run by ``dgmjax.nn.repeat`` (``run_groups``)
with every variable collection (params, BN statistics, the sown spectral kernels)
stacked on a leading [n] axis and the params/sample RNGs split per group: XLA compiles a
group once per scale, whatever ``groups_per_scale`` (unless ``compute.unroll`` asks for
straight-line code), and the parameter tree does not grow with depth.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax.nn.compute import Compute
from dgmjax.nn.repeat import repeat
from dgmjax.nvae.cells import Cell, DecCombiner, EncCombiner
from dgmjax.nvae.iaf import PairedCellAR
from dgmjax.nvae.layers import SPECTRAL_COLLECTION, WNConv
from dgmjax.nvae.latent import LatentNormal, split_params

COLLECTIONS = ("params", "batch_stats", SPECTRAL_COLLECTION)
RNGS = ("params", "sample")


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


class EncGroup(nn.Module):
  """The encoder cells of one group: ``cells_i`` (i < ``num_cells``), applied in turn."""
  features: int
  num_cells: int
  use_se: bool
  compute: Compute

  @nn.compact
  def __call__(self, s, train: bool):
    for i in range(self.num_cells):
      s = Cell(self.features, "normal_enc", self.use_se, self.compute, name=f"cells_{i}")(s, train)
    return s


class DecGroup(nn.Module):
  """One decoder group j > 0: ``cells_i``, then the latent (``dec_sampler``,
  ``enc_combiner``, ``enc_sampler``, ``flows_k``) and ``dec_combiner`` (module docstring).

  ``__call__(s, train, mode, xs, eps_mode)`` -> (new s, (z, record or None)) with
  ``mode``: ``"posterior"`` (xs = {"s_enc": [B,h,w,C], "eps": [B,h,w,L] when given},
  ``eps_mode`` None (RNG) or "mean"; record = (q, p, log q, log p)), ``"prior"``
  (xs = {"temperature", "eps" when given}), ``"given"`` (xs = {"z"}).
  """
  features: int
  num_cells: int
  latents: int
  num_flows: int
  use_se: bool
  compute: Compute

  def setup(self):
    cm, nz = self.compute, self.latents
    self.cells = [Cell(self.features, "normal_dec", self.use_se, cm)
                  for _ in range(self.num_cells)]
    self.dec_sampler = WNConv(2 * nz, 1, use_bias=True, compute=cm)
    self.enc_combiner = EncCombiner(self.features, compute=cm)
    self.enc_sampler = WNConv(2 * nz, 3, padding=1, use_bias=True, compute=cm)
    self.flows = [PairedCellAR(nz, compute=cm) for _ in range(self.num_flows)]
    self.dec_combiner = DecCombiner(self.features, compute=cm)

  def __call__(self, s, train: bool, mode: str, xs: dict, eps_mode=None):
    for cell in self.cells:
      s = cell(s, train)
    record = None
    if mode == "posterior":
      mu_p, ls_p = split_params(self.dec_sampler(nn.elu(s)).astype(jnp.float32))
      ftr = self.enc_combiner(xs["s_enc"], s)
      mu_q, ls_q = split_params(self.enc_sampler(ftr).astype(jnp.float32))
      q = LatentNormal.from_raw(mu_p + mu_q, ls_p + ls_q)
      p = LatentNormal.from_raw(mu_p, ls_p)
      z = draw(q, xs.get("eps", eps_mode), lambda: self.make_rng("sample"))
      z, log_q = run_flows(self.flows, z, ftr, q.log_p(z))
      record = (q, p, log_q, p.log_p(z))
    elif mode == "prior":
      mu, ls = split_params(self.dec_sampler(nn.elu(s)))
      z = draw(LatentNormal.from_raw(mu, ls, xs["temperature"]), xs.get("eps", eps_mode),
               lambda: self.make_rng("sample"))
    else:
      z = xs["z"]
    return self.dec_combiner(s, z), (z, record)


def run_groups(fn, module: nn.Module, carry, xs, length: int, compute: Compute):
  """``fn(module, carry, x) -> (carry, y)`` over ``length`` groups by the executor
  (``dgmjax.nn.repeat.repeat``: scan / unroll, remat around one group), with every
  variable collection of ``module`` stacked on a leading [length] axis and the
  params/sample RNGs split per group. xs and the ys carry the [length] axis first."""
  return repeat(fn, length, compute, collections=COLLECTIONS, rngs=RNGS)(module, carry, xs)
