"""NVAE beyond the ELBO: its latents (encode, decode, interpolate, manipulate, per-group
temperatures) and BN re-adjustment.

``LatentsAndBN`` is a mixin of ``NVAEModel`` (``dgmjax.nvae.model``): these methods use
the model's network (``net``), group layout and image decoding. Latents are lists of G
arrays z_j [B,h_j,w_j,L] in decoder order (coarsest first, ``latent_shapes()``); the
posterior means (``encode(rng=None)``) are the encoding to edit (the authors' advice,
NVlabs/NVAE#15: most groups are inactive, their means sit at the prior's), and sampling
takes one temperature per group (z_j = mu_j + T_j sigma_j eps_j). BN re-adjustment re-
estimates the decoder's batch statistics from prior samples (official ``evaluate.py
--readjust_bn``) and returns them as their own named state ``"readjusted_batch_stats"``,
to be saved with the checkpoint rather than recomputed on every call (NVlabs/NVAE PR#18).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.image_model import check_positive_int, check_temperatures
from dgmjax.latents import interpolate_latents, shift_latents
from dgmjax.nvae.hierarchy import NVAENet

READJUSTED = "readjusted_batch_stats"
PER_LAYER_NAMES = ("enc_tower_0", "dec_tower_0")   # modules only the old layout has


class LatentsAndBN:
  """Latent-space and BN re-adjustment methods of ``NVAEModel``."""

  def _net_vars(self, variables, stats: str = "batch_stats") -> dict:
    """{"params", "batch_stats": variables[stats]} for the network; variables in the old
    per-layer dgmjax layout are refused with the one call that converts them."""
    params = variables["params"]
    if any(k in params for k in PER_LAYER_NAMES):
      raise ValueError("these NVAE variables are in dgmjax's old per-layer layout "
                       "(enc_tower_i, dec_tower_i); convert them once with "
                       "dgmjax.convert.nvae.stack_groups(model, variables)")
    return {"params": params, "batch_stats": variables[stats]}

  def latent_shapes(self) -> list:
    """[(h_j, w_j, L)] of z_0 .. z_{G-1} (decoder order, coarsest first)."""
    h, w, _ = self.image_shape
    n = len(self._groups)
    shapes = []
    for s in range(n):
      red = 2 ** (self.preprocess_blocks + n - 1 - s)
      shapes += [(h // red, w // red, self.latents_per_group)] * self._groups[n - 1 - s]
    return shapes

  def encode(self, variables, x, rng=None):
    """x: uint8 [B,H,W,C] -> [z_j float32 [B,h_j,w_j,L] for j = 0..G-1]: z_j ~ q(z_j | x,
    z_<j) from ``rng``, or with ``rng=None`` the posterior mean z_j = mu_j(x, z_<j)
    (eps_j = 0), each passed through the IAF cells as in the ELBO. BN in inference mode."""
    self._check(x)
    v = self._net_vars(variables)
    if rng is None:
      return self.net.apply(v, self._inputs(x), "mean", method=NVAENet.encode)
    return self.net.apply(v, self._inputs(x), method=NVAENet.encode, rngs={"sample": rng})

  def decode_logits(self, variables, zs):
    """[z_j [B,h_j,w_j,L]] (``latent_shapes()``, decoder order) -> the image distribution's
    parameters float32 [B,H,W,out] (``split_logits`` for the mixture). BN in inference mode."""
    zs = list(zs)
    want = self.latent_shapes()
    got = [tuple(getattr(z, "shape", ())) for z in zs]
    b = got[0][0] if got and got[0] else None
    if len(got) != len(want) or any(g != (b,) + s for g, s in zip(got, want)):
      raise ValueError(f"zs must be {len(want)} arrays [B,h_j,w_j,L] with (h_j,w_j,L) = "
                       f"{want} and one B; got shapes {got}")
    return self.net.apply(self._net_vars(variables), zs, method=NVAENet.decode)

  def decode(self, variables, zs):
    """[z_j] -> uint8 [B,H,W,C], the deterministic temperature-0 image of p(x | z): the
    Bernoulli mode 1[logit > 0], or for the mixture the most likely component's mean
    (plus the RGB coupling) rounded to a level; zero outside ``crop_to``."""
    return self._decode_sample(None, self.decode_logits(variables, zs))

  def interpolate(self, variables, x1, x2, num: int = 8):
    """x1, x2: uint8 [B,H,W,C] -> uint8 [B,num,H,W,C]: decode((1-a) z_j(x1) + a z_j(x2))
    group by group, z the posterior means, a in linspace(0, 1, num)."""
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
      raise ValueError(f"num must be a positive int; got {num!r}")
    if tuple(getattr(x1, "shape", ())) != tuple(getattr(x2, "shape", ())):
      raise ValueError(f"x1 and x2 must have the same shape; got {getattr(x1, 'shape', None)} "
                       f"and {getattr(x2, 'shape', None)}")
    z1, z2 = self.encode(variables, x1), self.encode(variables, x2)
    zs = interpolate_latents(z1, z2, num)
    return self.decode(variables, zs).reshape((z1[0].shape[0], num) + tuple(self.image_shape))

  def manipulate(self, variables, x, direction, strengths):
    """Decodes z_j(x) + alpha_k d_j (z the posterior means) for every group j and strength
    alpha_k: x uint8 [B,H,W,C], direction [d_j [h_j,w_j,L]] (``latent_shapes()``, e.g.
    ``dgmjax.latents.attribute_direction`` of posterior means), strengths [K] -> uint8
    [B,K,H,W,C], the temperature-0 images of ``decode``."""
    zs = self.encode(variables, x)
    k = jnp.asarray(strengths).reshape(-1).shape[0]
    out = self.decode(variables, shift_latents(zs, direction, strengths))
    return out.reshape((zs[0].shape[0], k) + tuple(self.image_shape))

  def group_temperatures(self, temperature):
    """``temperature`` checked: a finite float > 0 (every group) is returned as it is; a
    sequence (or array) of G values > 0, one per group in decoder order, as float32 [G].
    ValueError otherwise (values of traced arrays are not checked)."""
    g = int(sum(self._groups))
    if isinstance(temperature, (list, tuple)) and any(
        isinstance(t, jax.core.Tracer) for t in temperature):
      temperature = jnp.stack([jnp.asarray(t, jnp.float32) for t in temperature])
    if isinstance(temperature, jax.core.Tracer):
      if temperature.shape not in ((), (g,)):
        raise ValueError(f"temperature must be a float or {g} values (one per latent group); "
                         f"got shape {temperature.shape}")
      return temperature if temperature.ndim == 0 else temperature.astype(jnp.float32)
    t = np.asarray(temperature)
    if t.ndim == 0:
      check_temperatures(temperature=temperature)
      return temperature
    if t.ndim != 1 or len(t) != g or t.dtype == bool or not np.issubdtype(t.dtype, np.number):
      raise ValueError(f"temperature must be a float or a sequence of {g} floats (one per "
                       f"latent group, decoder order); got {' '.join(repr(temperature).split())}")
    if not (np.all(np.isfinite(t)) and np.all(t > 0)):
      raise ValueError(f"temperature: every group's value must be a finite float > 0; "
                       f"got {' '.join(repr(temperature).split())}")
    return jnp.asarray(t, jnp.float32)

  def sample_latents(self, variables, rng, num, temperature=1.0):
    """[z_j float32 [num,h_j,w_j,L] for j = 0..G-1] drawn from the prior as ``sample``
    draws them (with the same ``rng``, ``decode_logits`` of them gives ``sample``'s
    logits): z_0 ~ N(0, (1.01 T_0)^2), z_j ~ N(mu_j, (T_j sigma_j)^2) given z_<j.
    ``temperature``: a float or one value per group (``group_temperatures``)."""
    num = check_positive_int(num, "num")
    temperature = self.group_temperatures(temperature)
    r_z, _ = jax.random.split(rng)
    return self.net.apply(self._net_vars(variables), num, temperature, False,
                          method=NVAENet.sample_latents, rngs={"sample": r_z})

  def readjust_batch_stats(self, variables, rng, num: int = 16, temperature=1.0,
                           iters: int = 500):
    """New ``batch_stats`` re-estimated from prior samples at ``temperature`` (a float, or
    one per group: ``group_temperatures``) as official ``evaluate.py --readjust_bn``
    does it: ``iters`` sampling passes with BN in training mode,
    each moving the running statistics by momentum 0.05. Only the decoder's statistics
    change. Returns the batch_stats tree (save it; pass it back in ``variables``)."""
    params = self._net_vars(variables)["params"]

    def body(i, stats):
      _, new = self.net.apply({"params": params, "batch_stats": stats}, num, temperature, True,
                              method=NVAENet.sample, rngs={"sample": jax.random.fold_in(rng, i)},
                              mutable=["batch_stats"])
      return new["batch_stats"]

    return jax.lax.fori_loop(0, int(iters), body, variables["batch_stats"])

  def readjust_bn(self, variables, rng, *, num: int = 16, temperature=1.0,
                  iters: int = 500) -> dict:
    """BN re-adjustment as its own named state: ``{"readjusted_batch_stats": tree}``.

    The tree has the structure of ``variables["batch_stats"]``, re-estimated by
    ``readjust_batch_stats`` (``iters`` sampling passes of ``num`` images at
    ``temperature``, BN in training mode). Merge it into the variables
    (``{**variables, **model.readjust_bn(...)}``), save it with them, and sample with
    ``sample(..., readjusted_bn=True)``. Runs eagerly (not under ``jit``): every statistic
    is checked, and a non-finite one raises ValueError naming it (NVlabs/NVAE#36).
    """
    num = check_positive_int(num, "num")
    iters = check_positive_int(iters, "iters")
    temperature = self.group_temperatures(temperature)
    stats = jax.jit(lambda v, r, t: self.readjust_batch_stats(v, r, num, t, iters))(
        {"params": variables["params"], "batch_stats": variables["batch_stats"]}, rng,
        jnp.asarray(temperature, jnp.float32))
    for path, leaf in jax.tree_util.tree_flatten_with_path(stats)[0]:
      if not bool(jnp.all(jnp.isfinite(leaf))):
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        raise ValueError(f"BN re-adjustment gave a non-finite statistic at {name!r} "
                         f"(temperature {temperature}); the model's samples would be NaN: "
                         f"try a lower temperature or check the weights")
    return {READJUSTED: stats}
