"""The multi-scale Glow flow as a Flax module (Kingma & Dhariwal 2018, figure 2).

One step of flow:   ActNorm -> 1x1 permutation (LU conv | plain conv | reverse |
shuffle) -> coupling (affine | additive).
One level:          squeeze (H,W,C -> H/2,W/2,4C) -> K steps -> split (all levels but
                    the last: half the channels leave as z_i with p(z_i | rest)).
Top:                the last level's output is z_top with a learned prior.

``Glow.forward_and_log_det(x) -> (zs, log_det[B])`` maps a continuous image
x: float32 [B,H,W,C] to the list of latents ``zs = [z_0, ..., z_{L-2}, z_top]`` (z_i of
shape [B, H/2^(i+1), W/2^(i+1), 2^(i+1) C], z_top [B, H/2^L, W/2^L, 2^(L+1) C]);
``inverse_and_log_det(zs)`` is its exact inverse. ``log_density(x, labels)`` is
log q(x) = log p(zs) + log_det in nats [B].

Parameter layout (one, whatever the compute setting): level i's K steps are one stack,
``blocks_i/flows/{actnorm,invconv,coupling}/...`` with every leaf [K, *shape] (run by
``dgmjax.nn.repeat``: the number of arrays does not grow with K), split priors
``blocks_i/prior``, and ``top_prior``. rosinality/glow-pytorch's per-step layout is known
only to ``dgmjax.convert.glow``; ``dgmjax.convert.glow.stack_steps`` converts variables
saved in dgmjax's former per-step layout (``blocks_i/flows_k/...``). How the flow runs
(dtype, remat, unroll, the 3x3 convolutions' formulation) is one
``dgmjax.nn.compute.Compute`` value, ``compute``, handed to every level, coupling
network and prior.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.flows.actnorm import ActNorm
from dgmjax.flows.bijectors import CONSTANTS, Bijector
from dgmjax.flows.conditioners import CouplingNet
from dgmjax.flows.couplings import Coupling
from dgmjax.flows.permutations import InvConv1x1, InvConv1x1LU, Permute, permutation_indices
from dgmjax.flows.priors import ClassHead, SplitPrior, TopPrior, gaussian_log_prob, gaussian_sample
from dgmjax.flows.reversible import rebuild_input, reversible_steps
from dgmjax.flows.squeeze import squeeze2d, unsqueeze2d
from dgmjax.flows.step_spec import StepSpec
from dgmjax.nn.compute import DEFAULT, Compute
from dgmjax.nn.repeat import repeat

PERMUTATIONS = ("lu", "conv", "reverse", "shuffle")
COUPLINGS = ("affine", "additive")


def _step_layers(spec: StepSpec, compute: Compute, seed: int, perm):
  """ActNorm, the permutation and the coupling of one step, as submodules ``actnorm``,
  ``invconv``, ``coupling`` of the compact method that calls this. ``perm``: optional int
  [C] indices overriding a fixed permutation's (a stack feeds each step its own row)."""
  actnorm = ActNorm(spec.logscale_factor, name="actnorm")
  if spec.permutation == "lu":
    permute = InvConv1x1LU(name="invconv")
  elif spec.permutation == "conv":
    permute = InvConv1x1(name="invconv")
  else:
    fixed = Permute(spec.permutation, seed, name="invconv")
    permute = lambda u, inv: fixed(u, inv, perm)
  # parent=None: a template the coupling binds as its own submodule ``net``.
  net = CouplingNet(spec.width, net_actnorm=spec.net_actnorm, edge_bias=spec.edge_bias,
                    compute=compute, parent=None)
  return actnorm, permute, Coupling(affine=spec.affine, conditioner=net, name="coupling")


def _chain(layers, x, inverse):
  log_det = jnp.zeros((x.shape[0],), jnp.float32)
  for layer in (reversed(layers) if inverse else layers):
    x, ld = layer(x, inverse)
    log_det = log_det + ld
  return x, log_det


class FlowStep(Bijector):
  """One step of flow, ActNorm -> permutation -> coupling, as a bijector:
  ``__call__(x, inverse=False, perm=None) -> (y, log_det[B])``.

  ``spec``: the step's hyper-parameters (``StepSpec``); ``compute``: how its coupling
  network runs (``dgmjax.nn.compute``); ``seed``: the seed of a fixed ``shuffle``
  permutation. A Glow level stacks K of these (``Steps``)."""
  spec: StepSpec
  compute: Compute = DEFAULT
  seed: int = 0

  @nn.compact
  def __call__(self, x, inverse=False, perm=None):
    return _chain(_step_layers(self.spec, self.compute, self.seed, perm), x, inverse)


class Steps(nn.Module):
  """The K steps of flow of one level with their variables stacked on a leading [K] axis
  (``<this module>/{actnorm,invconv,coupling}/...``, every leaf [K, *shape]), run by the
  executor ``dgmjax.nn.repeat.repeat`` as ``compute`` says (scan, unroll, remat): one
  compiled step whatever K. ``__call__(h, inverse) -> (h, log_det[B])``; the inverse runs
  the steps from last to first. Fixed permutations (reverse, shuffle) are fed to the steps
  as int [K,C] indices, step k using seed + k.

  ``compute.remat == "reversible"``: after init, the forward direction runs
  ``dgmjax.flows.reversible.reversible_steps`` on the same stacked variables (a
  ``custom_vjp`` whose backward pass rebuilds each step's input instead of storing it;
  reverse mode only); init (ActNorm's data-dependent initialisation) and the inverse
  direction use the executor's scan.
  """
  spec: StepSpec
  compute: Compute = DEFAULT
  steps: int = 1
  seed: int = 0

  def permutations(self, c: int) -> np.ndarray | None:
    """int [K,C] indices of the fixed permutations, or None for the 1x1 convolutions."""
    if self.spec.permutation not in ("reverse", "shuffle"):
      return None
    return np.stack([permutation_indices(self.spec.permutation, self.seed + k, c)
                     for k in range(self.steps)]).astype(np.int32)

  def _stacked(self):
    return self.variables["params"], self.variables.get(CONSTANTS, {})

  @nn.compact
  def _step(self, carry, perm, inverse):
    """One step as the executor's body: carry (h, log_det) -> carry."""
    h, log_det = carry
    h, ld = _chain(_step_layers(self.spec, self.compute, self.seed, perm), h, inverse)
    return (h, log_det + ld.astype(log_det.dtype)), None

  def __call__(self, h, inverse=False):
    perms = self.permutations(h.shape[-1])
    if self.compute.reversible and not inverse and not self.is_initializing():
      params, consts = self._stacked()
      return reversible_steps(self.spec, self.compute, params, consts, perms, h)
    stack = repeat(lambda mdl, carry, perm: mdl._step(carry, perm, inverse), self.steps,
                   self.compute, reverse=inverse, collections=("params", CONSTANTS))
    log_det = jnp.zeros((h.shape[0],), jnp.promote_types(h.dtype, jnp.float32))
    (h, log_det), _ = stack(self, (h, log_det), perms)
    return h, log_det

  def rebuild(self, y):
    """The first step's input rebuilt from the last step's output y [B,H,W,C] with the
    reversible backward pass's inverses (``reversible.rebuild_input``)."""
    params, consts = self._stacked()
    return rebuild_input(self.spec, self.compute, params, consts,
                         self.permutations(y.shape[-1]), y)


class GlowLevel(nn.Module):
  """squeeze -> K steps (-> split). ``encode(h) -> (h_next | None, z, log_det, log_p)``.

  Submodules ``flows`` (``Steps``) and, when ``split``, ``prior`` (``SplitPrior``)."""
  spec: StepSpec
  compute: Compute = DEFAULT
  steps: int = 1
  split: bool = True
  seed: int = 0

  def setup(self):
    self.flows = Steps(self.spec, self.compute, self.steps, self.seed)
    if self.split:
      self.prior = SplitPrior(self.spec.edge_bias, self.compute)

  def encode(self, x, check: int = 0):
    """x [B,H,W,C] -> (h_next | None, z, log_det [B], log_p [B], err).

    ``check`` > 0 (reversible levels only): ``err`` = [abs, rel] float32 [2], the error of
    the level's first-step input rebuilt from its output as the reversible backward pass
    does, on the first ``check`` examples: abs = max|x_rebuilt - x|, rel = abs / max|x|
    (no gradient flows through it). Otherwise ``err`` is None.
    """
    h_in = squeeze2d(x)
    h, log_det = self.flows(h_in, False)
    err = None
    if check and self.compute.reversible and not self.is_initializing():
      real = jax.lax.stop_gradient(h_in[:check])
      rebuilt = self.flows.rebuild(jax.lax.stop_gradient(h[:check]))
      abs_err = jnp.max(jnp.abs(rebuilt - real))
      err = jnp.stack([abs_err, abs_err / jnp.maximum(jnp.max(jnp.abs(real)), 1e-30)])
    if not self.split:
      return None, h, log_det, jnp.zeros_like(log_det), err
    h, z, log_p = self.prior.split(h)
    return h, z, log_det, log_p, err

  def decode(self, h, z):
    """Inverse of ``encode`` given h_next (None for the top level) and z."""
    x = z if h is None else jnp.concatenate([h, z], -1)
    x, log_det = self.flows(x, True)
    return unsqueeze2d(x), log_det

  def sample_z(self, h, rng, temperature):
    return self.prior.sample(h, rng, temperature)


class Glow(nn.Module):
  """The whole flow; see the module docstring. ``image_shape`` = (H, W, C)."""
  image_shape: Sequence[int]
  levels: int = 3
  steps: int = 32
  width: int = 512
  coupling: str = "affine"
  permutation: str = "lu"
  learn_top: bool = True
  num_classes: int | None = None
  net_actnorm: bool = False
  logscale_factor: float | None = None
  edge_bias: bool = False
  shuffle_seed: int = 0
  compute: Compute = DEFAULT

  def setup(self):
    spec = StepSpec(self.width, self.coupling, self.permutation, self.net_actnorm,
                    self.logscale_factor, self.edge_bias)
    self.blocks = [GlowLevel(spec, self.compute, self.steps, split=i < self.levels - 1,
                             seed=self.shuffle_seed + 1000 * i)
                   for i in range(self.levels)]
    self.top_prior = TopPrior(self.learn_top, self.num_classes, self.edge_bias, self.compute)
    if self.num_classes:
      self.class_head = ClassHead(self.num_classes)

  def latent_shapes(self):
    """[(h, w, c)] of z_0 .. z_top."""
    h, w, c = self.image_shape
    shapes = []
    for i in range(self.levels):
      h, w, c = h // 2, w // 2, c * 4
      if i < self.levels - 1:
        c //= 2
        shapes.append((h, w, c))
    shapes.append((h, w, c))
    return shapes

  def _check(self, x):
    h, w, c = self.image_shape
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4 or tuple(shape[1:]) != (h, w, c):
      raise ValueError(f"Glow expects x of shape [B,{h},{w},{c}]; got shape {shape}")

  def _encode(self, x, check: int = 0):
    self._check(x)
    zs, log_det, log_p = [], jnp.zeros((x.shape[0],), jnp.float32), 0.0
    errs = []
    h = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # float64 stays (x64 tests)
    for block in self.blocks:
      h, z, ld, lp, err = block.encode(h, check)
      zs.append(z)
      errs.append(err)
      log_det, log_p = log_det + ld, log_p + lp
    return zs, log_det, log_p, errs

  def forward_and_log_det(self, x):
    """x float32 [B,H,W,C] -> (zs, log_det [B])."""
    zs, log_det, _, _ = self._encode(x)
    return zs, log_det

  def reconstruction_errors(self, x, check: int | None = None):
    """float32 [L,2]: per level, [max|x_rebuilt - x|, that / max|x|] of the level's
    first-step input rebuilt from its output by the reversible backward pass's inverses,
    on the first ``check`` examples of x (all when None). Needs ``compute.remat="reversible"``."""
    if not self.compute.reversible:
      raise ValueError("reconstruction_errors needs a reversible Glow "
                       "(compute.remat='reversible')")
    _, _, _, errs = self._encode(x, x.shape[0] if check is None else check)
    return jnp.stack(errs)

  def inverse_and_log_det(self, zs):
    """zs (as returned by ``forward_and_log_det``) -> (x [B,H,W,C], log_det [B])."""
    shapes = self.latent_shapes()
    if len(zs) != len(shapes):
      raise ValueError(f"Glow expects {len(shapes)} latents of shapes "
                       f"{[('B',) + s for s in shapes]}; got {len(zs)}")
    for i, (z, s) in enumerate(zip(zs, shapes)):
      if getattr(z, "ndim", None) != 4 or tuple(z.shape[1:]) != s:
        raise ValueError(f"latent {i} must have shape [B,{s[0]},{s[1]},{s[2]}]; got "
                         f"{getattr(z, 'shape', None)}")
    h, log_det = None, jnp.zeros((zs[0].shape[0],), jnp.float32)
    for block, z in zip(reversed(self.blocks), reversed(zs)):
      h, ld = block.decode(h, z.astype(jnp.float32))
      log_det = log_det + ld
    return h, log_det

  def log_density(self, x, labels=None, check: int = 0):
    """log q(x) [B] in nats and extras {"log_det", "log_pz", "class_logits"?,
    "rev_recon_err"?}; ``check`` > 0 on a reversible Glow adds "rev_recon_err", the
    largest relative error over levels of ``reconstruction_errors`` on ``check`` examples."""
    zs, log_det, log_p, errs = self._encode(x, check)
    mean, logsd = self.top_prior(zs[-1].shape[1:], x.shape[0], labels)
    log_p = log_p + gaussian_log_prob(zs[-1], mean, logsd)
    extras = {"log_det": log_det, "log_pz": log_p}
    if self.num_classes:
      extras["class_logits"] = self.class_head(zs[-1])
    if errs and errs[0] is not None:
      extras["rev_recon_err"] = jnp.max(jnp.stack(errs)[:, 1])
    return log_p + log_det, extras

  def sample(self, rng, num: int, temperature=1.0, labels=None):
    """x float32 [num,H,W,C] from the model with every prior's std scaled by temperature."""
    rngs = jax.random.split(rng, self.levels)
    top = self.latent_shapes()[-1]
    mean, logsd = self.top_prior(top, num, labels)
    z = gaussian_sample(rngs[-1], mean, logsd, temperature)
    h, _ = self.blocks[-1].decode(None, z)
    for i in range(self.levels - 2, -1, -1):
      z = self.blocks[i].sample_z(h, rngs[i], temperature)
      h, _ = self.blocks[i].decode(h, z)
    return h
