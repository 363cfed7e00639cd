"""Image conventions shared by every model: validation, scaling and bits/dim.

All data reach the models as integers ``x: uint8 [B,H,W,C]`` with values in
``{0, ..., num_bins-1}``. The likelihood of such an image is a probability mass, and
every model reports

    bits/dim = -log p(x) / (H * W * C * ln 2),

with ``log p`` in nats, whatever ``num_bins`` is (2 for binarised data, 17 for
``digits``, 2**n_bits otherwise). Converting integers to a model's continuous input
happens here and nowhere else.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
  """Returns ``image_shape`` as a tuple ``(H, W, C)`` of positive ints, else ValueError."""
  shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else None
  if (shape is None or len(shape) != 3
      or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape)):
    raise ValueError(f"image_shape must be (H, W, C) with positive ints; got {image_shape!r}")
  return tuple(int(d) for d in shape)


def check_num_bins(num_bins) -> int:
  if not isinstance(num_bins, (int, np.integer)) or not 2 <= num_bins <= 256:
    raise ValueError(f"num_bins must be an int in [2, 256]; got {num_bins!r}")
  return int(num_bins)


def check_images(x, image_shape: Sequence[int], num_bins: int, name: str = "x"):
  """Validates a batch of discrete images and returns it unchanged.

  Args:
    x: integer array [B,H,W,C] with values in [0, num_bins).
    image_shape: expected (H, W, C).
    num_bins: number of intensity levels.
    name: argument name used in error messages.

  Raises:
    ValueError: wrong rank, shape or dtype; values outside [0, num_bins) (checked
      when ``x`` is concrete, i.e. outside ``jit``).
  """
  h, w, c = image_shape
  shape = getattr(x, "shape", None)
  if shape is None or len(shape) != 4:
    raise ValueError(f"{name} must be an integer array [B,H,W,C] = [B,{h},{w},{c}]; "
                     f"got shape {shape}")
  if tuple(shape[1:]) != (h, w, c):
    raise ValueError(f"{name} must have shape [B,{h},{w},{c}]; got {tuple(shape)}")
  dtype = np.dtype(x.dtype)
  if not np.issubdtype(dtype, np.integer):
    raise ValueError(f"{name} must hold integers in [0, {num_bins}) (uint8 preferred); "
                     f"got dtype {dtype}")
  if _is_concrete(x) and x.size:
    lo, hi = int(np.min(np.asarray(x))), int(np.max(np.asarray(x)))
    if lo < 0 or hi >= num_bins:
      raise ValueError(f"{name} values must lie in [0, {num_bins - 1}] for num_bins="
                       f"{num_bins}; got min {lo}, max {hi}")
  return x


def to_centered(x, num_bins: int, dtype=jnp.float32):
  """Maps integer levels {0..num_bins-1} linearly onto [-1, 1] (bin centres).

  x: int [B,H,W,C] -> dtype [B,H,W,C]; level k goes to 2k/(num_bins-1) - 1, so the
  bin half-width is 1/(num_bins-1), the convention of PixelCNN++ and NVAE.
  """
  return (x.astype(dtype) / (num_bins - 1)) * 2.0 - 1.0


def from_centered(y, num_bins: int):
  """Inverse of ``to_centered``: rounds y in [-1,1] to the nearest level, uint8."""
  k = jnp.round((y + 1.0) / 2.0 * (num_bins - 1))
  return jnp.clip(k, 0, num_bins - 1).astype(jnp.uint8)


def dequantize(rng, x, num_bins: int, dtype=jnp.float32):
  """Uniform dequantisation: y = (x + u) / num_bins - 1/2,  u ~ U[0,1)^D.

  x: int [B,H,W,C] -> dtype [B,H,W,C] in [-1/2, 1/2). A density q on y then gives the
  bound log P(x) >= E_u[log q(y)] - D log(num_bins) (Theis et al. 2016), which is the
  convention of Glow (openai/glow ``preprocess``).
  """
  u = jax.random.uniform(rng, x.shape, dtype)
  return (x.astype(dtype) + u) / num_bins - 0.5


def quantize(y, num_bins: int):
  """Inverse of ``dequantize`` up to the noise: floor((y + 1/2) * num_bins), uint8."""
  k = jnp.floor((y + 0.5) * num_bins)
  return jnp.clip(k, 0, num_bins - 1).astype(jnp.uint8)


def num_dims(image_shape: Sequence[int]) -> int:
  return int(np.prod(image_shape))


def bits_per_dim(log_prob_nats, image_shape: Sequence[int] | int):
  """-log p(x) / (D ln 2) for log p in nats; works elementwise on [B] or on a mean.

  ``image_shape`` is (H, W, C), D = H*W*C, or D itself (a model scoring a crop).
  """
  dims = image_shape if isinstance(image_shape, (int, np.integer)) else num_dims(image_shape)
  return -log_prob_nats / (dims * math.log(2.0))
