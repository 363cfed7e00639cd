"""Helpers for models with latent access (Glow, NVAE): encode / decode / interpolate."""

from __future__ import annotations

import jax.numpy as jnp


def interpolate_latents(z1, z2, num: int) -> list:
  """Linear paths between two lists of latents, flattened into the batch.

  z1, z2: lists of arrays [B, ...] (one per level or group, same shapes) ->
  list of [B*num, ...] arrays holding (1-a) z1 + a z2 for a in linspace(0, 1, num),
  ordered image by image (row b*num + k is image b at a_k).
  """
  a = jnp.linspace(0.0, 1.0, num)
  out = []
  for p, q in zip(z1, z2):
    ab = a.reshape((1, num) + (1,) * (p.ndim - 1))
    out.append(((1 - ab) * p[:, None] + ab * q[:, None]).reshape((p.shape[0] * num,) + p.shape[1:]))
  return out
