"""Pre-processing of discrete images, in one place: n-bit reduction, padding,
dynamic binarisation and the CelebA-64 crop.

Every function maps integer images to integer images; the conversion to a model's
continuous input (uniform dequantisation, mapping to [-1, 1]) lives in
``dgmjax.images`` and is re-exported by ``dgmjax.data``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import images

# NVAE's CelebA-64 crop of the aligned 218x178 CelebA images (NVlabs/NVAE
# ``datasets.py``, ``CropCelebA64``, after andersbll/autoencoding_beyond_pixels):
# rows [40, 188), columns [15, 163): a 148x148 square, then resized to 64x64.
CELEBA64_CROP = (40, 188, 15, 163)  # (top, bottom, left, right), half-open


def _is_jax(x) -> bool:
  return isinstance(x, jax.Array)


def _check_integer(x, name: str = "x"):
  dtype = getattr(x, "dtype", None)
  if dtype is None or not np.issubdtype(np.dtype(dtype), np.integer):
    raise ValueError(f"{name} must be an integer image array (uint8 preferred); got "
                     f"{'dtype ' + str(dtype) if dtype is not None else type(x).__name__}")


def reduce_bits(x, n_bits: int, from_bits: int = 8):
  """n-bit reduction: x -> floor(x / 2**(from_bits - n_bits)), dtype kept.

  x: integer array (numpy or jax) of ``from_bits``-bit levels, any shape, e.g. uint8
  [B,H,W,C] in [0, 255]. Returns levels in [0, 2**n_bits), so ``num_bins = 2**n_bits``
  (Glow's 5-bit CelebA: n_bits=5, 256 -> 32 levels). ``n_bits == from_bits`` is the
  identity.

  Raises:
    ValueError: n_bits not an int in [1, from_bits], or x not an integer array.
  """
  if not isinstance(from_bits, (int, np.integer)) or not 1 <= from_bits <= 8:
    raise ValueError(f"from_bits must be an int in [1, 8]; got {from_bits!r}")
  if (not isinstance(n_bits, (int, np.integer)) or isinstance(n_bits, bool)
      or not 1 <= n_bits <= from_bits):
    raise ValueError(f"n_bits must be an int in [1, {from_bits}]; got {n_bits!r}")
  _check_integer(x)
  shift = int(from_bits - n_bits)
  if shift == 0:
    return x
  return x // (1 << shift)


def _pad_widths(size: int, extent: int, axis_name: str) -> tuple[int, int]:
  if size < extent:
    raise ValueError(f"pad size {size} is smaller than the image {axis_name} {extent}; "
                     "padding never crops")
  before = (size - extent) // 2
  return before, size - extent - before


def pad(x, size: int):
  """Zero-pads the height and width of images up to ``size`` x ``size``.

  x: integer (or float) array [..., H, W, C] (numpy or jax) -> [..., size, size, C].
  The padding is split evenly, ``(size - H) // 2`` rows above and the rest below
  (same for columns), so MNIST 28 -> 32 puts 2 zero pixels on each side, as NVAE's
  ``transforms.Pad(padding=2)`` does. Zero is the background level of MNIST.
  ``size`` equal to H and W is the identity.

  Raises:
    ValueError: size not a positive int, smaller than H or W, or x of rank < 3.
  """
  if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size <= 0:
    raise ValueError(f"pad size must be a positive int; got {size!r}")
  shape = getattr(x, "shape", None)
  if shape is None or len(shape) < 3:
    raise ValueError(f"x must be an image array [..., H, W, C]; got shape {shape}")
  h, w = shape[-3], shape[-2]
  ph, pw = _pad_widths(int(size), h, "height"), _pad_widths(int(size), w, "width")
  if ph == (0, 0) and pw == (0, 0):
    return x
  widths = [(0, 0)] * (len(shape) - 3) + [ph, pw, (0, 0)]
  return (jnp.pad if _is_jax(x) else np.pad)(x, widths)


def binarize(rng, x, num_bins: int):
  """Dynamic binarisation: b ~ Bernoulli(x / (num_bins - 1)), elementwise.

  x: integer levels [B,H,W,C] in [0, num_bins) -> uint8 [B,H,W,C] in {0, 1} (a jax
  array; the result has ``num_bins = 2``). A fresh ``rng`` per batch resamples the
  binarisation every time an image is seen, as LMConv and NVAE train on MNIST
  (``torch.bernoulli`` of the [0,1]-scaled image). Jittable with ``num_bins`` static.
  """
  num_bins = images.check_num_bins(num_bins)
  _check_integer(x)
  p = jnp.asarray(x).astype(jnp.float32) / (num_bins - 1)
  return jax.random.bernoulli(rng, p).astype(jnp.uint8)


def crop_and_resize(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
  """Crops ``image[top:bottom, left:right]`` and resizes it to ``size`` x ``size``.

  image: uint8 [H,W,C] -> uint8 [size,size,C]. Resizing uses PIL's bilinear filter,
  which widens its support when down-sampling (i.e. it anti-aliases); that is what
  torchvision's ``Resize`` does on PIL images, the pipeline of NVAE's CelebA-64.
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel

  top, bottom, left, right = box
  h, w, c = image.shape
  if not (0 <= top < bottom <= h and 0 <= left < right <= w):
    raise ValueError(f"crop box (top, bottom, left, right)={box} does not fit an image of "
                     f"shape {image.shape}")
  crop = np.ascontiguousarray(image[top:bottom, left:right])
  if c not in (1, 3) or crop.dtype != np.uint8:
    raise ValueError(f"crop_and_resize expects uint8 images with 1 or 3 channels; got "
                     f"{crop.dtype} with {c} channels")
  pil = Image.fromarray(crop[..., 0] if c == 1 else crop)  # mode L or RGB
  out = np.asarray(pil.resize((size, size), Image.BILINEAR), dtype=np.uint8)
  return out.reshape(size, size, c)
