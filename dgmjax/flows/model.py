"""``GlowModel``: Glow (Kingma & Dhariwal 2018) behind the dgmjax model protocol.

    model = dgmjax.models.create("glow", image_shape=(32, 32, 3), num_bins=256,
                                 levels=3, steps=32, width=512, coupling="affine",
                                 permutation="lu", learn_top=True, num_classes=None)

Likelihood: the discrete image x (uint8 [B,H,W,C], levels 0..num_bins-1) is
dequantised as y = (x + u) / num_bins - 1/2 with u ~ U[0,1)^D
(``dgmjax.images.dequantize``) and

    log P(x) >= log q(y) - D log(num_bins),  log q(y) = log p(zs) + log|det dzs/dy|,

estimated with one u per image; ``log_prob`` returns this bound in nats [B] and
``loss`` its mean in bits/dim (plus ``class_loss_weight`` times the class-prediction
loss in bits when ``num_classes`` is set, openai/glow's ``weight_y``).

Hyper-parameters beyond the issue's: ``net_actnorm`` (ActNorm inside the coupling
network, openai), ``logscale_factor`` (None: ActNorm scale stored directly, rosinality;
3.0: openai's ``logs``), ``edge_bias`` (openai's edge-indicator padding instead of
rosinality's pad-with-ones), ``shuffle_seed``. The defaults express
rosinality/glow-pytorch exactly (``dgmjax.convert.glow.load_glow``), with the difference
that its last level always uses the LU 1x1 convolution.

Parameter layout: each level's K steps keep their variables stacked on a leading [K] axis
(``blocks_i/flows/...``, ``dgmjax.flows.glow``), run by the executor
``dgmjax.nn.repeat``: one compiled step whatever K. Variables saved in dgmjax's former
per-step layout (``blocks_i/flows_k/...``, or ``blocks_i/flows/scan/step/...``) are
refused with one line naming ``dgmjax.convert.glow.stack_steps``, which converts them.

``compute`` (``dgmjax.nn.compute.Compute``, or a mapping of its keys, or None for the
defaults): how the flow runs, never what it computes. ``dtype``: the coupling networks'
and priors' arithmetic (float32 or bfloat16; parameters, log-determinants and likelihood
sums stay float32). ``remat``: what the backward pass of a step stores. ``unroll``: steps
per loop iteration, or True for straight-line code. ``conv``: the 3x3 convolutions'
formulation (coupling networks and priors, ``dgmjax.nn.conv``); "auto" is XLA's
convolution on GPU/TPU, and on CPU a formulation whose gradient stays fast inside the
scan over the steps (XLA:CPU's derived backward convolutions run on a slow path in a
loop). The default Glow supports forward-mode differentiation (``jax.jvp``, ``jacfwd``)
as well as reverse mode wherever its convolutions do.

``compute.remat="reversible"`` (``dgmjax.flows.reversible``): the training gradient
rebuilds each step's input from its output with the step's inverse instead of storing the
K steps' activations, so the gradient's activation memory does not grow with K. Same
parameter layout; ``compute.unroll`` does not apply to it, and the flow's main path stays
float32 under bfloat16. Reverse mode only (a ``jax.custom_vjp``): ``jax.jvp`` through its
loss raises JAX's "can't apply forward-mode autodiff (jvp) to a custom_vjp function"; run
the same variables with another ``remat`` for forward mode. ``loss``
then reports the metric ``rev_recon_err``: the largest relative error, over levels, of
the first step's input rebuilt from the level's output, on the first
``reversible_check`` examples of the batch (0: off; it costs one inverse pass over those
examples). Do not trust the reversible gradient when it exceeds about 1e-3 (see
``dgmjax.flows.reversible``). ``reconstruction_errors(variables, x)`` gives the
per-level figures for a whole batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import images
from dgmjax.flows.glow import COUPLINGS, PERMUTATIONS, Glow
from dgmjax.image_model import ImageModel, check_ints, check_positive_int, check_temperatures
from dgmjax.latents import interpolate_latents, shift_latents
from dgmjax.nn.compute import Compute
from dgmjax.nn.init import fast_init_key


def check_layout(variables) -> None:
  """ValueError (one line, naming the converter) for variables in dgmjax's former
  per-step layouts: ``blocks_i/flows_k/...`` (unrolled) or ``blocks_i/flows/scan/step/...``."""
  params = variables.get("params") if isinstance(variables, Mapping) else None
  level = params.get("blocks_0") if isinstance(params, Mapping) else None
  if not isinstance(level, Mapping):
    return
  flows = level.get("flows")
  if "flows_0" in level or (isinstance(flows, Mapping) and "scan" in flows):
    raise ValueError("glow: these variables are in dgmjax's former per-step layout "
                     "(blocks_i/flows_k/... or blocks_i/flows/scan/step/...); convert them "
                     "once with dgmjax.convert.glow.stack_steps(variables)")


@dataclasses.dataclass(frozen=True)
class GlowModel(ImageModel):
  levels: int = 3
  steps: int = 32
  width: int = 512
  coupling: str = "affine"
  permutation: str = "lu"
  learn_top: bool = True
  num_classes: int | None = None
  class_loss_weight: float = 0.0
  net_actnorm: bool = False
  logscale_factor: float | None = None
  edge_bias: bool = False
  shuffle_seed: int = 0
  reversible_check: int = 1
  compute: Compute | Mapping[str, Any] | None = None
  name: str = dataclasses.field(default="glow", init=False)

  def __post_init__(self):
    super().__post_init__()
    shape = self.image_shape
    check_ints(self, ("levels", "steps", "width"), 1)
    f = 2 ** self.levels
    if shape[0] % f or shape[1] % f:
      raise ValueError(f"glow: image H and W must be divisible by 2**levels = {f} "
                       f"(levels={self.levels}); got image_shape {shape}")
    if self.coupling not in COUPLINGS:
      raise ValueError(f"glow: coupling must be one of {COUPLINGS}; got {self.coupling!r}")
    if self.permutation not in PERMUTATIONS:
      raise ValueError(f"glow: permutation must be one of {PERMUTATIONS}; "
                       f"got {self.permutation!r}")
    if self.num_classes is not None and (not isinstance(self.num_classes, (int, np.integer))
                                         or self.num_classes < 2):
      raise ValueError(f"glow: num_classes must be None or an int >= 2; got {self.num_classes!r}")
    if self.class_loss_weight and not self.num_classes:
      raise ValueError("glow: class_loss_weight needs num_classes")
    if (not isinstance(self.reversible_check, (int, np.integer))
        or isinstance(self.reversible_check, bool) or self.reversible_check < 0):
      raise ValueError(f"glow: reversible_check must be an int >= 0 (examples checked per "
                       f"loss); got {self.reversible_check!r}")
    if self.logscale_factor is not None and not self.logscale_factor > 0:
      raise ValueError(f"glow: logscale_factor must be None or > 0; got {self.logscale_factor!r}")
    object.__setattr__(self, "compute", Compute.make(self.compute))
    object.__setattr__(self, "module", Glow(
        shape, self.levels, self.steps, self.width, self.coupling, self.permutation,
        bool(self.learn_top), self.num_classes, bool(self.net_actnorm),
        self.logscale_factor, bool(self.edge_bias), int(self.shuffle_seed),
        compute=self.compute))

  # ------------------------------------------------------------------ helpers
  def _continuous(self, x, rng):
    """uint8 images -> dequantised float32 (at bin centres without rng); floats pass."""
    if np.issubdtype(np.dtype(x.dtype), np.integer):
      self.check_images(x)
      if rng is None:
        return (x.astype(jnp.float32) + 0.5) / self.num_bins - 0.5
      return images.dequantize(rng, x, self.num_bins)
    self.module._check(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"glow expects uint8 images or float images in the dequantised space "
                       f"[-1/2, 1/2]; got dtype {x.dtype}")
    if images._is_concrete(x) and x.size:
      xn = np.asarray(x, np.float64)
      if not np.isfinite(xn).all():
        raise ValueError("glow expects finite float images in the dequantised space "
                         "[-1/2, 1/2]; got NaN or inf")
      lo, hi = float(xn.min()), float(xn.max())
      if lo < -0.5 or hi > 0.5:
        raise ValueError(f"glow expects float images in the dequantised space [-1/2, 1/2] "
                         f"((x + u) / num_bins - 1/2); got values in [{lo:.4g}, {hi:.4g}]")
    return x.astype(jnp.float32)

  @staticmethod
  def _state(variables):
    return {k: v for k, v in variables.items() if k != "params"}

  # ------------------------------------------------------------------ protocol
  def init(self, rng, x, y=None):
    """Variables {"params", "constants"}; ActNorms initialise on the batch x (uint8 [B,H,W,C])."""
    self.check_images(x)
    labels = self.check_labels(y if y is not None or not self.num_classes
                               else jnp.zeros((x.shape[0],), jnp.int32), x.shape[0])
    r_deq, r_par = jax.random.split(rng)
    xc = images.dequantize(r_deq, x, self.num_bins)
    variables = self.module.init({"params": fast_init_key(r_par)}, xc, labels,
                                 method=Glow.log_density)
    return dict(variables)

  def _log_q(self, variables, x, rng, y, check=0):
    check_layout(variables)
    xc = self._continuous(x, rng)
    log_q, extras = self.module.apply(variables, xc, self.check_labels(y, x.shape[0]), check,
                                      method=Glow.log_density)
    return log_q, extras

  def log_prob(self, variables, x, rng, y=None):
    """x uint8 [B,H,W,C] -> [B] single-sample dequantisation lower bound of log P(x), nats."""
    self.check_images(x)
    log_q, _ = self._log_q(variables, x, rng, y)
    return log_q - self.num_dims * math.log(self.num_bins)

  def loss(self, variables, x, rng, train=True, step=None, y=None):
    """Mean bits/dim (+ class_loss_weight * class cross-entropy in bits)."""
    del train, step
    self.check_images(x)
    check = min(self.reversible_check, x.shape[0]) if self.compute.reversible else 0
    log_q, extras = self._log_q(variables, x, rng, y, check)
    log_p = log_q - self.num_dims * math.log(self.num_bins)
    bpd = jnp.mean(self.bits_per_dim(log_p))
    scale = 1.0 / (self.num_dims * math.log(2.0))
    metrics = {"bpd": bpd,
               "log_det_bpd": jnp.mean(extras["log_det"]) * scale,
               "log_pz_bpd": jnp.mean(extras["log_pz"]) * scale}
    total = bpd
    if self.num_classes:
      logits = extras["class_logits"]
      ce = -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(y, self.num_classes),
                             -1))
      metrics["class_bits"] = ce / math.log(2.0)
      metrics["class_acc"] = jnp.mean(jnp.argmax(logits, -1) == y)
      total = bpd + self.class_loss_weight * ce / math.log(2.0)
    if "rev_recon_err" in extras:
      metrics["rev_recon_err"] = extras["rev_recon_err"]
    metrics["loss"] = total
    return total, {"metrics": metrics, "state": self._state(variables)}

  def sample(self, variables, rng, num, temperature=1.0, y=None):
    """uint8 [num,H,W,C]; every prior's standard deviation is scaled by ``temperature``."""
    xc = self.sample_continuous(variables, rng, num, temperature, y)
    return images.quantize(xc, self.num_bins)

  # ------------------------------------------------------------------ extras
  def sample_continuous(self, variables, rng, num, temperature=1.0, y=None):
    """float32 [num,H,W,C] in the dequantised space (about [-1/2, 1/2)). ValueError for
    num < 1 or a temperature that is not finite and > 0 (checked when it is concrete)."""
    check_positive_int(num, "num")
    check_temperatures(temperature=temperature)
    check_layout(variables)
    return self.module.apply(variables, rng, num, temperature, self.check_labels(y, num),
                             method=Glow.sample)

  def encode(self, variables, x, rng=None):
    """x -> (zs, log_det [B]). x: uint8 (dequantised with rng, at bin centres when rng is
    None) or float32 [B,H,W,C] in the dequantised space [-1/2, 1/2] (ValueError for NaN,
    inf or values outside it, checked when x is concrete). zs: per-level latents,
    shapes ``latent_shapes()``."""
    check_layout(variables)
    return self.module.apply(variables, self._continuous(x, rng),
                             method=Glow.forward_and_log_det)

  def reconstruction_errors(self, variables, x, rng=None):
    """float32 [L,2]: per level, [max abs, relative] error of the first step's input as
    the reversible backward pass rebuilds it from the level's output, on the batch x
    (uint8, dequantised with rng or at bin centres; or float as for ``encode``).
    Needs ``compute.remat="reversible"``."""
    check_layout(variables)
    return self.module.apply(variables, self._continuous(x, rng),
                             method=Glow.reconstruction_errors)

  def decode(self, variables, zs):
    """zs -> float32 x [B,H,W,C] (exact inverse of ``encode``); ``images.quantize`` it for uint8."""
    check_layout(variables)
    return self.module.apply(variables, list(zs), method=Glow.inverse_and_log_det)[0]

  def latent_shapes(self):
    return self.module.latent_shapes()

  def interpolate(self, variables, x1, x2, num: int = 8):
    """Decodes (1-a) z(x1) + a z(x2) for a in linspace(0, 1, num): uint8 [B,num,H,W,C]."""
    z1, _ = self.encode(variables, x1)
    z2, _ = self.encode(variables, x2)
    b = z1[0].shape[0]
    zs = interpolate_latents(z1, z2, num)
    out = images.quantize(self.decode(variables, zs), self.num_bins)
    return out.reshape((b, num) + self.image_shape)

  def manipulate(self, variables, x, direction, strengths):
    """Semantic manipulation (Kingma & Dhariwal 2018, Sec. 5): decodes z_l(x) + alpha_k d_l
    for every level l and strength alpha_k. x: uint8 [B,H,W,C] (encoded at bin centres);
    direction: per-level [h_l,w_l,c_l] (``latent_shapes()``, e.g.
    ``dgmjax.latents.attribute_direction``); strengths [K] -> uint8 [B,K,H,W,C]."""
    zs, _ = self.encode(variables, x)
    k = jnp.asarray(strengths).reshape(-1).shape[0]
    out = images.quantize(self.decode(variables, shift_latents(zs, direction, strengths)),
                          self.num_bins)
    return out.reshape((zs[0].shape[0], k) + self.image_shape)
