"""NVAE (Vahdat & Kautz, NeurIPS 2020) implementing the dgmjax model protocol.

    model = dgmjax.models.create("nvae", image_shape=(32, 32, 3), num_bins=256,
                                 channels=128, scales=1, groups_per_scale=30, ...)

Objective (official train.py), per image, with beta the KL warm-up coefficient and
lambda the spectral coefficient:

    L = -log p(x|z) + beta * sum_g gamma_g KL_g + lambda (L_SR + L_BN),

``loss`` returns mean(L) / (D ln 2) (bits/dim scale; D = H W C, or the crop's size),
so an optimiser sees the official nats gradient divided by D ln 2: the configs divide
Adamax's eps and the coupled weight decay by the same factor, which makes the updates
identical to the official ones. ``metrics["bpd"]`` is the plain negative ELBO in
bits/dim (beta = 1, no balancing, no regularisers).

Variables: ``params``, ``batch_stats`` (BN running statistics) and ``spectral``
({"RxC": {"u": [N,R], "v": [N,C]}}, the power-iteration vectors per kernel shape). In
training ``aux["state"]`` returns the new ``batch_stats`` and ``spectral``.

Decoder heads (``image_conditional`` output channels):
- ``"dmol"`` (any ``num_bins``): a discretised logistic mixture with ``num_mixtures`` M
  components. Channel layout as the official ``DiscMixLogistic``: [logits M | for each
  image channel c: means M, log_scales M, coeffs M (coeffs only when C == 3)], i.e. 10M
  channels for RGB, 3M for grey. The data x in {0..K-1} sit at 2x/(K-1) - 1 and the bin
  half-width is 1/(K-1) (official: num_bits, max_val = 2^bits - 1). Edge bins
  (``dmol_edge``): "exact" (default) makes only level K-1 the top (and level 0 the bottom)
  edge bin, a normalised likelihood; "official" reproduces NVlabs/NVAE
  ``DiscMixLogistic.log_prob``, which treats centred values > 0.99 as the top bin (and
  < -0.999 as the bottom one), so at 8 bits level 254 (0.992) also gets the whole upper
  tail: the official likelihood counts that mass twice. Use "official" to report an
  imported official checkpoint's figures as the paper did.
- ``"bernoulli"`` (num_bins == 2; the default then): one logit per channel.
``crop_to=(h, w)``: the likelihood covers only the centred h x w crop (binarised MNIST:
28x28 inside the 32x32 padded input, official ``crop_output``); bits/dim and nats then
refer to the crop, and samples are zero outside it.

Evaluation (BN in inference mode): ``log_prob(..., num_samples=1)`` is the ELBO
(analytic KL, or its one-sample estimate with flows); ``num_samples=K`` the
importance-weighted bound (Burda et al. 2016, "Importance Weighted Autoencoders")

    L_K(x) = logsumexp_k(log p(x|z_k) + log p(z_k) - log q(z_k|x)) - log K,  z_k ~ q(z|x),

with E[L_1] = ELBO <= E[L_K] <= E[L_{K+1}] <= log p(x) (the paper's NLL uses K = 1000),
computed in chunks of ``chunk_size`` samples by ``lax.scan`` with a running
``logaddexp`` (memory ~ B * chunk_size forward passes, one compiled body).

BN re-adjustment (official ``evaluate.py --readjust_bn``, NVlabs/NVAE): the decoder's BN
running statistics are re-estimated from prior samples at the sampling temperature.
``readjust_bn`` returns them as their own collection ``{"readjusted_batch_stats": ...}``
(merge it into ``variables`` and save it with the checkpoint; official NVAE recomputes
them on every call and keeps nothing), and ``sample(..., readjusted_bn=True)`` uses them.
A non-finite re-estimated statistic is a ValueError naming it (NVlabs/NVAE#36: NaN
statistics otherwise give silent NaN images).

Latent access (BN in inference mode; G = sum(groups) groups, decoder order j = 0..G-1,
coarsest first, shapes ``latent_shapes()``): ``encode`` gives z_j drawn group by group
from q(z_j | x, z_<j), or with ``rng=None`` the posterior means (eps_j = 0, z_j = mu_j,
then the IAF cells): the z the ELBO's decoder consumes. ``decode_logits`` runs the
decoder on given z's (the prior is not consulted), ``decode`` turns them into the
temperature-0 image (Bernoulli mode 1[logit > 0], or the most likely mixture component's
mean rounded to a level), and ``interpolate`` decodes (1-a) z_j(x1) + a z_j(x2). Unlike
Glow's, this encoder is not an exact inverse: ``decode(encode(x))`` is a reconstruction.
Per-group temperatures, ``sample_latents`` and ``manipulate``: ``dgmjax.nvae.inference``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import images
from dgmjax.image_model import ImageModel, check_finite, check_ints, check_positive_int
from dgmjax.nn.compute import Compute
from dgmjax.nn.init import fast_init_key
from dgmjax.distributions import (bernoulli_log_prob, bernoulli_sample,
                                  discretized_logistic_mixture_log_prob,
                                  discretized_logistic_mixture_sample, mixture_params)
from dgmjax.nvae import regularizers as reg
from dgmjax.nvae.layers import SPECTRAL_COLLECTION
from dgmjax.nvae.hierarchy import NVAENet, groups_per_scale
from dgmjax.nvae.inference import READJUSTED, LatentsAndBN

EDGES = ("exact", "official")


@dataclasses.dataclass(frozen=True)
class NVAEModel(LatentsAndBN, ImageModel):
  """Hyper-parameters (official flag in brackets):

  channels [num_channels_enc = num_channels_dec], scales [num_latent_scales],
  groups_per_scale [num_groups_per_scale], ada_groups, min_groups_per_scale,
  latents_per_group [num_latent_per_group], cells_per_group [num_cell_per_cond_enc =
  num_cell_per_cond_dec], preprocess_blocks/cells, postprocess_blocks/cells,
  num_flows [num_nf], use_se, num_mixtures [num_mixture_dec], kl_warmup_steps
  [kl_anneal_portion * total steps], kl_const_steps [kl_const_portion * total],
  kl_const_coeff, kl_balance, weight_decay_norm, weight_decay_norm_init,
  weight_decay_norm_anneal. The residual normal posterior [--res_dist] and the
  ``res_mbconv`` cells are always used. ``dmol_edge``: "exact" | "official" top/bottom
  bins of the mixture likelihood (module docstring).

  ``compute`` (``dgmjax.nn.compute.Compute`` or a mapping of its keys; config
  ``model.compute``): how the model runs, not what it computes: dtype, remat, unroll
  (each scale's groups are one repeated block with stacked parameters, ``groups.py``),
  ``conv`` and ``depthwise`` (the kernels, ``layers.py``). Variables written in the old
  per-layer layout are converted by ``dgmjax.convert.nvae.stack_groups``.
  """
  channels: int = 32
  scales: int = 1
  groups_per_scale: int = 2
  latents_per_group: int = 20
  cells_per_group: int = 2
  preprocess_blocks: int = 1
  preprocess_cells: int = 2
  postprocess_blocks: int = 1
  postprocess_cells: int = 2
  num_flows: int = 0
  use_se: bool = True
  ada_groups: bool = False
  min_groups_per_scale: int = 1
  num_mixtures: int = 10
  decoder: str = "auto"
  crop_to: Optional[tuple] = None
  kl_warmup_steps: int = 0
  kl_const_steps: int = 0
  kl_const_coeff: float = 1e-4
  kl_balance: bool = True
  weight_decay_norm: float = 0.0
  weight_decay_norm_init: float = 10.0
  weight_decay_norm_anneal: bool = False
  num_power_iter: int = reg.NUM_POWER_ITER
  dmol_edge: str = "exact"
  compute: Any = None
  name: str = dataclasses.field(default="nvae", init=False)

  def __post_init__(self):
    super().__post_init__()
    set_ = self._set
    check_ints(self, ("channels", "scales", "groups_per_scale", "latents_per_group",
                      "cells_per_group", "preprocess_blocks", "preprocess_cells",
                      "postprocess_blocks", "postprocess_cells", "min_groups_per_scale",
                      "num_mixtures"), 1)
    check_ints(self, ("num_flows", "kl_warmup_steps", "kl_const_steps", "num_power_iter"), 0)
    if self.postprocess_blocks != self.preprocess_blocks:
      raise ValueError("postprocess_blocks must equal preprocess_blocks (the decoder must "
                       f"up-sample back to the image); got {self.postprocess_blocks} and "
                       f"{self.preprocess_blocks}")
    if self.scales == 1 and self.groups_per_scale == 1:
      raise ValueError("scales=1 with groups_per_scale=1 is the official 'vanilla VAE' "
                       "special case, which is not supported; use groups_per_scale >= 2")
    h, w, c = self.image_shape
    red = 2 ** (self.preprocess_blocks + self.scales - 1)
    if h % red or w % red:
      raise ValueError(f"image height and width must be divisible by 2**(preprocess_blocks + "
                       f"scales - 1) = {red}; got {self.image_shape} (pad the data)")
    if self.channels % 2:
      raise ValueError(f"channels must be even; got {self.channels}")
    decoder = self.decoder
    if decoder == "auto":
      decoder = "bernoulli" if self.num_bins == 2 else "dmol"
    if decoder not in ("dmol", "bernoulli"):
      raise ValueError(f"decoder must be 'auto', 'dmol' or 'bernoulli'; got {self.decoder!r}")
    if decoder == "bernoulli" and self.num_bins != 2:
      raise ValueError(f"the Bernoulli decoder needs num_bins == 2; got {self.num_bins}")
    set_("decoder", decoder)
    if self.crop_to is not None:
      crop = tuple(self.crop_to)
      if (len(crop) != 2 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in crop)
          or crop[0] > h or crop[1] > w or (h - crop[0]) % 2 or (w - crop[1]) % 2):
        raise ValueError(f"crop_to must be (h, w) positive, at most {(h, w)} and centred "
                         f"(even margins); got {self.crop_to!r}")
      set_("crop_to", tuple(int(d) for d in crop))
    for k in ("kl_const_coeff", "weight_decay_norm", "weight_decay_norm_init"):
      check_finite(k, getattr(self, k))
    if self.kl_const_coeff < 0:
      raise ValueError(f"kl_const_coeff must be >= 0 (the KL coefficient's floor); "
                       f"got {self.kl_const_coeff!r}")
    if self.dmol_edge not in EDGES:
      raise ValueError(f"dmol_edge must be one of {EDGES}; got {self.dmol_edge!r}")
    if self.weight_decay_norm < 0 or (self.weight_decay_norm_anneal and (
        self.weight_decay_norm <= 0 or self.weight_decay_norm_init <= 0)):
      raise ValueError("weight_decay_norm must be >= 0, and > 0 with weight_decay_norm_init "
                       "> 0 when weight_decay_norm_anneal is set")
    set_("compute", Compute.make(self.compute, invertible=False, model="nvae"))
    set_("_groups", groups_per_scale(self.scales, self.groups_per_scale, self.ada_groups,
                                     self.min_groups_per_scale))

  @property
  def groups(self) -> tuple:
    """Groups per scale, finest scale first (official ``model.groups_per_scale``)."""
    return self._groups

  @property
  def out_channels(self) -> int:
    c, m = self.image_shape[2], self.num_mixtures
    if self.decoder == "bernoulli":
      return c
    return m + c * (3 * m if c == 3 else 2 * m)

  @property
  def net(self) -> NVAENet:
    return NVAENet(image_shape=self.image_shape, out_channels=self.out_channels,
                   channels=self.channels, groups=self._groups,
                   latents_per_group=self.latents_per_group, cells_per_group=self.cells_per_group,
                   preprocess_blocks=self.preprocess_blocks, preprocess_cells=self.preprocess_cells,
                   postprocess_blocks=self.postprocess_blocks,
                   postprocess_cells=self.postprocess_cells, num_flows=self.num_flows,
                   use_se=self.use_se, compute=self.compute)

  @property
  def num_dims(self) -> int:
    h, w, c = self.image_shape
    if self.crop_to is not None:
      h, w = self.crop_to
    return h * w * c

  def _crop(self, a):
    if self.crop_to is None:
      return a
    h, w, _ = self.image_shape
    top, left = (h - self.crop_to[0]) // 2, (w - self.crop_to[1]) // 2
    return a[:, top:top + self.crop_to[0], left:left + self.crop_to[1]]

  def split_logits(self, logits):
    """DMOL head [B,H,W,out] -> (logit_probs [B,H,W,M], means [B,H,W,C,M],
    log_scales [B,H,W,C,M], coeffs [B,H,W,3,M] raw or None)."""
    return mixture_params(logits, self.image_shape[2], self.num_mixtures)

  def recon_log_prob(self, logits, x):
    """log p(x|z) [B] in nats, summed over the (cropped) image."""
    if self.decoder == "bernoulli":
      lp = bernoulli_log_prob(x, logits)
      return jnp.sum(self._crop(lp), axis=(1, 2, 3))
    lp = discretized_logistic_mixture_log_prob(x, *self.split_logits(logits),
                                               num_bins=self.num_bins, edge=self.dmol_edge)
    return jnp.sum(self._crop(lp), axis=(1, 2))

  def _check(self, x, y=None):
    self.check_labels(y)
    self.check_images(x)

  def _inputs(self, x):
    return images.to_centered(x, self.num_bins, jnp.float32)

  # ------------------------------------------------------------------ protocol
  def init(self, rng, x, y=None):
    """Variables {params, batch_stats, spectral} for x: uint8 [B,H,W,C]; the spectral
    vectors get the official first-call 40 power iterations."""
    self._check(x, y)
    return jax.jit(self._init)(rng, x)

  def _init(self, rng, x):
    # The initial weights and vectors are drawn from ``fast_init_key`` keys seeded by
    # ``rng``: XLA compiles the hundreds of threefry draws of a deep NVAE's init very slowly.
    r_params, r_sample, r_spec = (fast_init_key(r) for r in jax.random.split(rng, 3))
    variables = self.net.init({"params": r_params, "sample": r_sample}, self._inputs(x),
                              train=False)
    variables = dict(variables)
    sown = variables.pop(SPECTRAL_COLLECTION, {})
    weights = reg.group_weights(sown)
    variables["spectral"] = reg.init_spectral_state(r_spec, weights,
                                                    10 * max(self.num_power_iter, 1))
    return variables

  def _forward(self, variables, x, rng, train):
    v = self._net_vars(variables)
    mutable = ["batch_stats", SPECTRAL_COLLECTION] if train else False
    out = self.net.apply(v, self._inputs(x), train=train, rngs={"sample": rng}, mutable=mutable)
    if train:
      (logits, terms), new = out
      return logits, terms, new
    logits, terms = out
    return logits, terms, {}

  def loss(self, variables, x, rng, train=True, step=None, y=None):
    """(objective in bits/dim, {"metrics", "state"}); see the module docstring."""
    self._check(x, y)
    logits, terms, new = self._forward(variables, x, rng, train)
    recon = -self.recon_log_prob(logits, x)                      # [B]
    kl_all = terms["kl"].T                                        # [B, G]
    kl = jnp.sum(kl_all, axis=1)
    nelbo = recon + kl
    scale = 1.0 / (self.num_dims * math.log(2.0))
    metrics = {"bpd": jnp.mean(nelbo) * scale, "nelbo_nats": jnp.mean(nelbo),
               "recon_nats": jnp.mean(recon), "kl_nats": jnp.mean(kl),
               "active_units": jnp.sum(terms["kl_diag"] > 0.1).astype(jnp.float32)}
    if not train:
      return metrics["bpd"], {"metrics": metrics, "state": {}}
    beta = reg.kl_coeff(step, self.kl_warmup_steps, self.kl_const_steps, self.kl_const_coeff)
    alpha = reg.kl_balancer_coeff(self._groups)
    balanced, _ = reg.kl_balancer(kl_all, beta, alpha, self.kl_balance)
    objective = jnp.mean(recon + balanced)
    state = {"batch_stats": new["batch_stats"]}
    if self.weight_decay_norm > 0:
      weights = reg.group_weights(new.get(SPECTRAL_COLLECTION, {}))
      sr, state["spectral"] = reg.spectral_loss(weights, variables["spectral"],
                                                self.num_power_iter)
      bn = reg.batchnorm_loss(variables["params"])
      lam = reg.weight_decay_norm_coeff(beta, self.weight_decay_norm,
                                        self.weight_decay_norm_init,
                                        self.weight_decay_norm_anneal)
      objective = objective + lam * (sr + bn)
      metrics.update(spectral_loss=sr, bn_loss=bn, wdn_coeff=lam)
    else:
      state["spectral"] = variables["spectral"]
    metrics.update(kl_coeff=beta, objective_nats=objective)
    return objective * scale, {"metrics": metrics, "state": state}

  def log_iw_terms(self, variables, x, rng):
    """One posterior sample per image in inference mode: (log w [B], ELBO [B]) where
    log w = log p(x|z) + log p(z) - log q(z|x) and ELBO uses the analytic KL."""
    logits, terms, _ = self._forward(variables, x, rng, train=False)
    rec = self.recon_log_prob(logits, x)
    return rec + terms["log_p"] - terms["log_q"], rec - jnp.sum(terms["kl"], axis=0)

  def log_prob(self, variables, x, rng, num_samples: int = 1, chunk_size: Optional[int] = None,
               *, iw_samples: Optional[int] = None, y=None):
    """[B] nats: the ELBO (K = 1) or the importance-weighted bound L_K with K samples.

    x: uint8 [B,H,W,C]. ``num_samples`` (or its other name ``iw_samples``) is K;
    ``chunk_size`` samples per scan step (default: about 256 images per forward pass).
    """
    self._check(x, y)
    name = "num_samples"
    if iw_samples is not None:
      if num_samples not in (1, iw_samples):
        raise ValueError(f"give iw_samples or num_samples, not both; got {iw_samples!r} and "
                         f"{num_samples!r}")
      num_samples, name = iw_samples, "iw_samples"
    k = check_positive_int(num_samples, name)
    if chunk_size is not None:
      check_positive_int(chunk_size, "chunk_size")
    if k == 1:
      return self.log_iw_terms(variables, x, rng)[1]
    b = x.shape[0]
    c = int(chunk_size) if chunk_size else max(1, min(k, 256 // max(b, 1)))
    c = min(c, k)
    n_chunks = -(-k // c)
    xs = jnp.tile(x, (c, 1, 1, 1))                                 # [c*B, ...], sample-major

    def body(acc, i):
      log_w, _ = self.log_iw_terms(variables, xs, jax.random.fold_in(rng, i))
      log_w = log_w.reshape(c, b)
      valid = (i * c + jnp.arange(c)) < k
      log_w = jnp.where(valid[:, None], log_w, -jnp.inf)
      return jnp.logaddexp(acc, jax.nn.logsumexp(log_w, axis=0)), None

    acc, _ = jax.lax.scan(body, jnp.full((b,), -jnp.inf, jnp.float32), jnp.arange(n_chunks))
    return acc - math.log(k)

  def _decode_sample(self, rng, logits):
    """logits [B,H,W,out] -> uint8 [B,H,W,C]: a pixel sample, or with ``rng=None`` the
    temperature-0 image; zero outside ``crop_to``."""
    if self.decoder == "bernoulli":
      x = (logits > 0) if rng is None else bernoulli_sample(rng, logits)
    elif rng is None:
      x = discretized_logistic_mixture_sample(
          jax.random.PRNGKey(0), *self.split_logits(logits), num_bins=self.num_bins,
          mixture_temperature=0.0, logistic_temperature=0.0)
    else:
      x = discretized_logistic_mixture_sample(rng, *self.split_logits(logits),
                                              num_bins=self.num_bins)
    if self.crop_to is not None:
      h, w, _ = self.image_shape
      top, left = (h - self.crop_to[0]) // 2, (w - self.crop_to[1]) // 2
      keep = np.zeros((h, w, 1), bool)
      keep[top:top + self.crop_to[0], left:left + self.crop_to[1]] = True
      x = jnp.where(keep[None], x, jnp.zeros_like(x))
    return x.astype(jnp.uint8)

  def sample(self, variables, rng, num, temperature=1.0, *, readjusted_bn: bool = False,
             y=None):
    """uint8 [num,H,W,C]: latents at ``temperature`` (a finite float > 0 scaling every
    prior's sigma, or one per group: ``group_temperatures``), pixels at 1, BN in
    inference mode with ``variables["batch_stats"]``,
    or with ``readjusted_bn=True`` the re-estimated ``variables["readjusted_batch_stats"]``
    (``readjust_bn``; re-estimate them at the temperature you sample at)."""
    self.check_labels(y)
    num = check_positive_int(num, "num")
    temperature = self.group_temperatures(temperature)
    r_z, r_x = jax.random.split(rng)
    if readjusted_bn:
      if READJUSTED not in variables:
        raise ValueError(f"readjusted_bn=True needs variables[{READJUSTED!r}] (from "
                         f"model.readjust_bn); the variables hold {sorted(variables)}")
    v = self._net_vars(variables, READJUSTED if readjusted_bn else "batch_stats")
    logits = self.net.apply(v, num, temperature, False, method=NVAENet.sample,
                            rngs={"sample": r_z})
    return self._decode_sample(r_x, logits)
