"""Edits in latent space for models with latent access (Glow, NVAE): pure functions of
lists of per-level (Glow) or per-group (NVAE) latents, each [B, ...], usable under jit.

Interpolation: (1-a) z1 + a z2. Semantic manipulation (Kingma & Dhariwal 2018, "Glow",
Sec. 5; openai/glow ``demo/get_manipulators.py``): with a boolean attribute m_b of image
b, the direction of level l is the difference of the attribute's mean latents

    d_l = sum_b m_b z_{l,b} / sum_b m_b - sum_b (1-m_b) z_{l,b} / sum_b (1-m_b),

and an image's latents move along it: z'_l = z_l + alpha d_l, decoded. Over a data set
too large for one batch, ``masked_latent_sums`` accumulates the sums batch by batch
(weights 0 drop padding rows) and ``direction_from_sums`` ends the computation.
"""

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


def masked_latent_sums(zs, weights) -> tuple:
  """Weighted sums over the batch: (list of S_l = sum_b w_b z_{l,b}, each [...] without
  the batch axis, float32; W = sum_b w_b, a float32 scalar).

  zs: list of arrays [B, ...]; weights: [B] (booleans or floats; 0 drops a row)."""
  w = jnp.asarray(weights, jnp.float32)
  sums = [jnp.tensordot(w, z.astype(jnp.float32), axes=1) for z in zs]
  return sums, jnp.sum(w)


def direction_from_sums(pos_sums, pos_count, neg_sums, neg_count) -> list:
  """d_l = S+_l / W+ - S-_l / W-: the difference of the two groups' mean latents, from
  ``masked_latent_sums`` of the images with (+) and without (-) the attribute. A group
  with no image (W = 0) gives NaN: the caller checks the counts."""
  return [p / pos_count - n / neg_count for p, n in zip(pos_sums, neg_sums)]


def attribute_direction(zs, mask) -> list:
  """The manipulation direction of one batch (module docstring): zs list of [B, ...],
  mask [B] bool (True: the image has the attribute) -> list of d_l [...] (no batch
  axis), float32."""
  m = jnp.asarray(mask, jnp.float32)
  pos, n_pos = masked_latent_sums(zs, m)
  neg, n_neg = masked_latent_sums(zs, 1.0 - m)
  return direction_from_sums(pos, n_pos, neg, n_neg)


def shift_latents(zs, direction, strengths) -> list:
  """z_l + alpha_k d_l for every image and strength, flattened into the batch.

  zs: list of [B, ...]; direction: list of [...] (the same shapes without B); strengths:
  [K] -> list of [B*K, ...] (float32), ordered image by image (row b*K + k is image b at
  alpha_k), as ``interpolate_latents``."""
  a = jnp.asarray(strengths, jnp.float32).reshape(-1)
  k = a.shape[0]
  out = []
  for z, d in zip(zs, direction):
    ab = a.reshape((1, k) + (1,) * (z.ndim - 1))
    moved = z.astype(jnp.float32)[:, None] + ab * jnp.asarray(d, jnp.float32)[None, None]
    out.append(moved.reshape((z.shape[0] * k,) + z.shape[1:]))
  return out
