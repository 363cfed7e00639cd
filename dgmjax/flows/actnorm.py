"""``ActNorm``: Glow's per-channel affine normalisation (Kingma & Dhariwal 2018, section 3.1),
a ``dgmjax.flows.bijectors.Bijector`` on images [B,H,W,C]."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from dgmjax.flows.bijectors import Bijector, broadcast_logdet, check_nhwc, known_channels, wide


class ActNorm(Bijector):
  """Per-channel affine normalisation with data-dependent initialisation.

  forward:  y = (x + loc) * s,      inverse: x = y / s - loc,
  log_det = H * W * sum_c log|s_c|.

  ``s`` is the parameter ``scale`` (rosinality/glow-pytorch) or, when
  ``logscale_factor`` is set, ``s = exp(logscale_factor * logs)`` with the parameter
  ``logs`` (openai/glow, factor 3). At init on a batch x: loc = -mean(x), s = 1/(std(x)
  + eps) per channel over (B,H,W), so the output has zero mean and unit variance.
  Parameters: ``loc`` [C] and ``scale`` [C] (or ``logs`` [C]).
  """
  logscale_factor: float | None = None
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x, inverse=False):
    b, h, w, c = check_nhwc(x, "ActNorm", known_channels(self, "params", "loc"))
    x32 = x.astype(wide(x.dtype))
    if self.is_initializing() and not inverse:
      mean = jnp.mean(x32, axis=(0, 1, 2))
      std = jnp.sqrt(jnp.mean(jnp.square(x32 - mean), axis=(0, 1, 2)))
      inv_std = 1.0 / (std + self.eps)
    else:
      mean, inv_std = jnp.zeros((c,), jnp.float32), jnp.ones((c,), jnp.float32)
    loc = self.param("loc", lambda _: -mean)
    if self.logscale_factor is None:
      scale = self.param("scale", lambda _: inv_std)
      log_abs = jnp.log(jnp.abs(scale))
    else:
      logs = self.param("logs", lambda _: jnp.log(inv_std) / self.logscale_factor)
      log_abs = logs * self.logscale_factor
      scale = jnp.exp(log_abs)
    log_det = broadcast_logdet(h * w * jnp.sum(log_abs), b, x.dtype)
    if inverse:
      return (x32 / scale - loc).astype(x.dtype), -log_det
    return ((x32 + loc) * scale).astype(x.dtype), log_det
