"""Writing images (a grid of uint8 samples as a PNG, a ``.npz`` of the raw images) and
reading a binary mask from a PNG by what it shows."""

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


# A mask pixel is observed when it shows white, hidden when it shows black; shown
# luminance strictly between these bounds (of 255) is ambiguous and refused.
MASK_BLACK_MAX, MASK_WHITE_MIN = 64, 191


def read_mask_png(path: str, h: int, w: int) -> np.ndarray:
  """bool [H, W] from the PNG at ``path``: True (observed) where the picture shows white,
  False where it shows black, for every PNG mode: 1-bit, palette (the palette's colours,
  not the indices), grey (8 or 16 bits), RGB and RGBA or grey+alpha (composited over
  black: a transparent pixel shows black). A pixel whose shown luminance lies between
  black and white (above 64 and below 191 of 255), a size other than H x W, or a file that
  is not a PNG image is refused with one line naming the file."""
  from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise ValueError(f"observed mask PNG not found: {path}")
  try:
    with Image.open(path) as img:
      img.load()
      shown = _luminance(img)
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise ValueError(f"observed mask {path} is not a readable PNG image ({e})") from None
  if shown.shape != (h, w):
    raise ValueError(f"observed mask PNG {path} must be {h}x{w} (H x W); got "
                     f"{shown.shape[0]}x{shown.shape[1]}")
  grey = (shown > MASK_BLACK_MAX) & (shown < MASK_WHITE_MIN)
  if grey.any():
    r, c = np.argwhere(grey)[0]
    raise ValueError(f"observed mask {path} is ambiguous: {int(grey.sum())} pixel(s) are "
                     f"neither black nor white (first at row {r}, column {c}: luminance "
                     f"{shown[r, c]:.0f} of 255); draw observed pixels white, hidden black")
  return shown >= MASK_WHITE_MIN


def _luminance(img) -> np.ndarray:
  """float [H, W] in [0, 255]: the luminance each pixel shows (alpha over black)."""
  if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
    a = np.asarray(img, np.float64)
    return a * (255.0 / 65535.0)
  if img.mode == "F":
    return np.asarray(img, np.float64) * 255.0
  la = np.asarray(img.convert("LA"), np.float64)   # 1-bit, palette, grey, RGB(A): as shown
  return la[..., 0] * la[..., 1] / 255.0
