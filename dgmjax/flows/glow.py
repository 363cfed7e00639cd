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
log q(x) = log p(zs) + log_det in nats [B]. The parameter layout mirrors
rosinality/glow-pytorch: ``blocks_i/flows_k/{actnorm,invconv,coupling}``, split priors
``blocks_i/prior``, and ``top_prior``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.flows.actnorm import ActNorm
from dgmjax.flows.bijectors import CONSTANTS
from dgmjax.flows.conditioners import CouplingNet
from dgmjax.flows.couplings import Coupling
from dgmjax.flows.permutations import InvConv1x1, InvConv1x1LU, Permute, permutation_indices
from dgmjax.flows.priors import ClassHead, SplitPrior, TopPrior, gaussian_log_prob, gaussian_sample
from dgmjax.flows.reversible import rebuild_input, reversible_steps
from dgmjax.flows.squeeze import squeeze2d, unsqueeze2d
from dgmjax.flows.step_spec import StepSpec
from dgmjax.nn.remat import remat_module
from dgmjax.nn.stacking import stack_trees, unstack_tree

PERMUTATIONS = ("lu", "conv", "reverse", "shuffle")
COUPLINGS = ("affine", "additive")


class FlowStep(nn.Module):
  """ActNorm -> permutation -> coupling; ``__call__(x, inverse) -> (y, log_det[B])``.

  ``spec``: the step's hyper-parameters (``StepSpec``); ``seed``: the seed of a fixed
  ``shuffle`` permutation."""
  spec: StepSpec
  seed: int = 0

  @nn.compact
  def __call__(self, x, inverse=False, perm=None):
    """``perm``: optional int [C] overriding a fixed permutation's indices (a scan feeds
    each step its own row, so that every step keeps the permutation of seed + k)."""
    spec = self.spec
    actnorm = ActNorm(spec.logscale_factor, name="actnorm")
    if spec.permutation == "lu":
      permute = InvConv1x1LU(name="invconv")
    elif spec.permutation == "conv":
      permute = InvConv1x1(name="invconv")
    else:
      fixed = Permute(spec.permutation, self.seed, name="invconv")
      permute = lambda u, inv: fixed(u, inv, perm)
    # parent=None: a template the coupling binds as its own submodule ``net``.
    net = CouplingNet(spec.width, net_actnorm=spec.net_actnorm, edge_bias=spec.edge_bias,
                      dtype=spec.dtype, conv_impl=spec.conv_impl, parent=None)
    coupling = Coupling(affine=spec.affine, conditioner=net, name="coupling")
    return _chain((actnorm, permute, coupling), x, inverse)

  def forward_and_log_det(self, x):
    return self(x, False)

  def inverse_and_log_det(self, y):
    return self(y, True)


class _ScanBody(nn.Module):
  """One FlowStep as an nn.scan body: carry (h, log_det), x = this step's permutation
  indices (int [C], or None) -> carry."""
  spec: StepSpec
  seed: int = 0
  inverse: bool = False
  remat: bool | str = False

  @nn.compact
  def __call__(self, carry, perm):
    h, log_det = carry
    step_cls = remat_module(FlowStep, self.remat, static_argnums=(2,))
    h, ld = step_cls(self.spec, self.seed, name="step")(h, self.inverse, perm)
    return (h, log_det + ld.astype(log_det.dtype)), None


class ScannedSteps(nn.Module):
  """K FlowSteps run by ``nn.scan``: parameters stacked over a leading [K] axis, one
  compiled body instead of K (compile time independent of K). ``__call__(h, inverse)``;
  the inverse runs the steps from last to first. Fixed permutations (reverse, shuffle)
  are fed to the body as scanned int [K,C] indices, so step k uses seed + k exactly as
  the unrolled steps do.

  ``reversible=True``: after init, the forward direction runs
  ``dgmjax.flows.reversible.reversible_steps`` on the same stacked variables (a
  ``custom_vjp`` whose backward pass rebuilds each step's input instead of storing it);
  init (ActNorm's data-dependent initialisation) and the inverse direction use the
  ordinary scan.
  """
  spec: StepSpec
  seed: int = 0
  steps: int = 1
  remat: bool | str = False
  reversible: bool = False

  def permutations(self, c: int) -> np.ndarray | None:
    """int [K,C] indices of the fixed permutations, or None for the 1x1 convolutions."""
    if self.spec.permutation not in ("reverse", "shuffle"):
      return None
    return np.stack([permutation_indices(self.spec.permutation, self.seed + k, c)
                     for k in range(self.steps)]).astype(np.int32)

  def _stacked(self):
    params = self.variables["params"]["scan"]["step"]
    consts = self.variables.get(CONSTANTS, {}).get("scan", {}).get("step", {})
    return params, consts

  @nn.compact
  def __call__(self, h, inverse=False):
    perms = self.permutations(h.shape[-1])
    if self.reversible and not inverse and not self.is_initializing():
      params, consts = self._stacked()
      return reversible_steps(self.spec, params, consts, perms, h)
    scan = nn.scan(_ScanBody, variable_axes={"params": 0, CONSTANTS: 0},
                   split_rngs={"params": True}, length=self.steps, reverse=inverse)
    log_det = jnp.zeros((h.shape[0],), jnp.promote_types(h.dtype, jnp.float32))
    (h, log_det), _ = scan(self.spec, self.seed, inverse, False if self.reversible else self.remat,
                           name="scan")((h, log_det), perms)
    return h, log_det

  def rebuild(self, y):
    """The first step's input rebuilt from the last step's output y [B,H,W,C] with the
    reversible backward pass's inverses (``reversible.rebuild_input``)."""
    params, consts = self._stacked()
    return rebuild_input(self.spec, params, consts, self.permutations(y.shape[-1]), y)


def _chain(layers, x, inverse):
  log_det = jnp.zeros((x.shape[0],), jnp.float32)
  for layer in (reversed(layers) if inverse else layers):
    x, ld = layer(x, inverse)
    log_det = log_det + ld
  return x, log_det


class GlowLevel(nn.Module):
  """squeeze -> K steps (-> split). ``encode(h) -> (h_next | None, z, log_det, log_p)``."""
  steps: int
  width: int
  split: bool = True
  coupling: str = "affine"
  permutation: str = "lu"
  net_actnorm: bool = False
  logscale_factor: float | None = None
  edge_bias: bool = False
  seed: int = 0
  remat: bool | str = False
  scan: bool = False
  dtype: jnp.dtype = jnp.float32
  reversible: bool = False
  conv_impl: str = "auto"

  @property
  def scanned(self) -> bool:
    """Whether the steps use the stacked (scan) layout: ``scan`` or ``reversible``."""
    return self.scan or self.reversible

  def setup(self):
    spec = StepSpec(self.width, self.coupling, self.permutation, self.net_actnorm,
                    self.logscale_factor, self.edge_bias, self.dtype, self.conv_impl)
    if self.scanned:
      self.flows = ScannedSteps(spec, self.seed, self.steps, self.remat, self.reversible)
    else:
      step_cls = remat_module(FlowStep, self.remat, static_argnums=(2,))
      self.flows = [step_cls(spec, self.seed + k) for k in range(self.steps)]
    if self.split:
      self.prior = SplitPrior(self.edge_bias, self.conv_impl)

  def _run_steps(self, h, inverse):
    if self.scanned:
      return self.flows(h, inverse)
    log_det = jnp.zeros((h.shape[0],), jnp.float32)
    for flow in (reversed(self.flows) if inverse else self.flows):
      h, ld = flow(h, inverse)
      log_det = log_det + ld
    return h, log_det

  def encode(self, x, check: int = 0):
    """x [B,H,W,C] -> (h_next | None, z, log_det [B], log_p [B], err).

    ``check`` > 0 (reversible levels only): ``err`` = [abs, rel] float32 [2], the error of
    the level's first-step input rebuilt from its output as the reversible backward pass
    does, on the first ``check`` examples: abs = max|x_rebuilt - x|, rel = abs / max|x|
    (no gradient flows through it). Otherwise ``err`` is None.
    """
    h_in = squeeze2d(x)
    h, log_det = self._run_steps(h_in, False)
    err = None
    if check and self.reversible and not self.is_initializing():
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
    x, log_det = self._run_steps(x, True)
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
  remat: bool | str = False
  scan: bool = False
  dtype: jnp.dtype = jnp.float32
  reversible: bool = False
  conv_impl: str = "auto"

  def setup(self):
    self.blocks = [GlowLevel(self.steps, self.width, split=i < self.levels - 1,
                             coupling=self.coupling, permutation=self.permutation,
                             net_actnorm=self.net_actnorm,
                             logscale_factor=self.logscale_factor, edge_bias=self.edge_bias,
                             seed=self.shuffle_seed + 1000 * i, remat=self.remat,
                             scan=self.scan, dtype=self.dtype, reversible=self.reversible,
                             conv_impl=self.conv_impl)
                   for i in range(self.levels)]
    self.top_prior = TopPrior(self.learn_top, self.num_classes, self.edge_bias, self.conv_impl)
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
    on the first ``check`` examples of x (all when None). Needs ``reversible=True``."""
    if not self.reversible:
      raise ValueError("reconstruction_errors needs a reversible Glow (reversible=True)")
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


def stack_steps(variables: dict) -> dict:
  """Unrolled variables (``blocks_i/flows_k/...``) -> the ``scan=True`` layout
  (``blocks_i/flows/scan/step/...`` with a leading [K] axis). Same model, same outputs."""
  out = {}
  for col, tree in variables.items():
    out[col] = {}
    for name, sub in tree.items():
      keys = sorted((k for k in sub if k.startswith("flows_")), key=lambda k: int(k[6:])) \
          if name.startswith("blocks_") else []
      if not keys:
        out[col][name] = sub
        continue
      rest = {k: v for k, v in sub.items() if not k.startswith("flows_")}
      steps = [sub[k] for k in keys]
      rest["flows"] = {"scan": {"step": stack_trees(steps)}}
      out[col][name] = rest
  return out


def unstack_steps(variables: dict) -> dict:
  """The inverse of ``stack_steps``: the ``scan=True``/``reversible=True`` layout
  (``blocks_i/flows/scan/step/...``, leading [K] axis) -> the unrolled one
  (``blocks_i/flows_k/...``), e.g. to run a scanned checkpoint with ``scan=False`` or to
  export it in rosinality/glow-pytorch's per-step layout."""
  out = {}
  for col, tree in variables.items():
    out[col] = {}
    for name, sub in tree.items():
      stacked = sub.get("flows", {}).get("scan", {}).get("step") \
          if name.startswith("blocks_") and isinstance(sub, dict) else None
      if stacked is None:
        out[col][name] = sub
        continue
      rest = {n: v for n, v in sub.items() if n != "flows"}
      for i, step in enumerate(unstack_tree(stacked)):
        rest[f"flows_{i}"] = step
      out[col][name] = rest
  return out

