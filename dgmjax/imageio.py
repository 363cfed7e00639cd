"""Writing images: a grid of uint8 samples as a PNG, and a ``.npz`` of the raw images."""

from __future__ import annotations

import math
import os

import numpy as np


def to_uint8_255(x, num_bins: int) -> np.ndarray:
  """Levels {0..num_bins-1} -> {0..255} for display (x: int [..., H, W, C])."""
  x = np.asarray(x).astype(np.float32)
  return np.round(x * (255.0 / (num_bins - 1))).astype(np.uint8)


def make_grid(x, num_bins: int, ncol: int | None = None, pad: int = 1) -> np.ndarray:
  """x: int [N,H,W,C] (C in {1,3}) -> uint8 [rows*(H+pad)+pad, ncol*(W+pad)+pad, C]."""
  x = np.asarray(x)
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"images must be [N,H,W,C] with C in (1, 3); got shape {x.shape}")
  n, h, w, c = x.shape
  ncol = ncol or int(math.ceil(math.sqrt(n)))
  nrow = int(math.ceil(n / ncol))
  grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
  img = to_uint8_255(x, num_bins)
  for i in range(n):
    r, q = divmod(i, ncol)
    grid[pad + r * (h + pad): pad + r * (h + pad) + h,
         pad + q * (w + pad): pad + q * (w + pad) + w] = img[i]
  return grid


def save_png(path: str, image: np.ndarray, scale: int = 1) -> str:
  """Writes uint8 [H,W,C] (C in {1,3}) as a PNG, nearest-neighbour upscaled by ``scale``."""
  from PIL import Image
  image = np.asarray(image)
  if scale > 1:
    image = image.repeat(scale, axis=0).repeat(scale, axis=1)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)
  return path


def save_grid(path: str, x, num_bins: int, ncol: int | None = None) -> str:
  """Saves a batch of samples as one PNG grid, upscaled so small images stay visible."""
  h = np.asarray(x).shape[1]
  return save_png(path, make_grid(x, num_bins, ncol), scale=max(1, 64 // max(h, 1)))


def save_npz(path: str, x, num_bins: int) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez_compressed(path, images=np.asarray(x, np.uint8), num_bins=num_bins)
  return path
