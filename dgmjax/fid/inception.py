"""The Inception network the standard FID uses, in Flax: pool3 features of images.

The FID of Heusel et al. 2017 ("GANs Trained by a Two Time-Scale Update Rule Converge to
a Local Nash Equilibrium") is computed with TensorFlow's 2015 Inception graph; the de
facto PyTorch port, mseitzer/pytorch-fid ``InceptionV3``, patches torchvision's
Inception v3 (Szegedy et al. 2016) to match it: ``FIDInceptionA``/``C`` average-pool
without counting the zero padding, ``FIDInceptionE_1`` likewise, and ``FIDInceptionE_2``
max-pools in its pool branch. This module is that network, layer for layer and with its
parameter names (``convert.inception.load_inception`` reads pytorch-fid's weights file),
up to the final average pool:

    x uint8 [B,H,W,C] with ``num_bins`` levels -> x / (num_bins-1) in [0,1]; C=1 repeated
    to 3 -> bilinear resize to 299 x 299 (align_corners=False, as pytorch-fid's
    ``F.interpolate``) -> 2x - 1 -> stem (Conv2d_1a..4a, two 3x3/2 max pools)
    -> Mixed_5b,5c,5d (A) -> 6a (B) -> 6b..6e (C) -> 7a (D) -> 7b (E_1), 7c (E_2)
    -> mean over H, W -> float32 [B, 2048]

Every convolution is ``BasicConv2d``: conv (no bias) -> batch norm (inference
statistics, eps 1e-3) -> ReLU. Feature maps are NHWC. tests/fid/test_fid.py checks the
features against pytorch-fid's module given the same weights.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SIZE = 299
FEATURES = 2048
BN_EPS = 1e-3


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(nn.Module):
  """conv (HWIO ``kernel``, no bias) -> BN (``scale``, ``bias``, ``mean``, ``var``) -> ReLU."""
  features: int
  kernel_size: int | Sequence[int]
  stride: int = 1
  padding: int | Sequence[int] = 0

  @nn.compact
  def __call__(self, x):
    kh, kw = _pair(self.kernel_size)
    ph, pw = _pair(self.padding)
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features))
    y = jax.lax.conv_general_dilated(x, kernel, (self.stride, self.stride),
                                     ((ph, ph), (pw, pw)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ones, zeros = nn.initializers.ones, nn.initializers.zeros
    scale = self.param("scale", ones, (self.features,))
    bias = self.param("bias", zeros, (self.features,))
    mean = self.param("mean", zeros, (self.features,))
    var = self.param("var", ones, (self.features,))
    return nn.relu((y - mean) * (scale * jax.lax.rsqrt(var + BN_EPS)) + bias)


def max_pool(x, size: int = 3, stride: int = 2, padding: int = 0):
  return nn.max_pool(x, (size, size), (stride, stride), ((padding, padding),) * 2)


def avg_pool_excluding_pad(x):
  """3x3 stride-1 average over the window's pixels inside the image (TensorFlow's
  average pool; PyTorch's ``count_include_pad=False``)."""
  total = nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=True)
  ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
  count = nn.avg_pool(ones, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=True)
  return total / count


class InceptionA(nn.Module):   # FIDInceptionA
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, 1, name="branch1x1")(x)
    b5 = BasicConv2d(48, 1, name="branch5x5_1")(x)
    b5 = BasicConv2d(64, 5, padding=2, name="branch5x5_2")(b5)
    b3 = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
    b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(b3)
    b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_3")(b3)
    bp = BasicConv2d(self.pool_features, 1, name="branch_pool")(avg_pool_excluding_pad(x))
    return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):   # torchvision InceptionB (Mixed_6a)

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, 3, stride=2, name="branch3x3")(x)
    bd = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
    bd = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = BasicConv2d(96, 3, stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, max_pool(x)], -1)


class InceptionC(nn.Module):   # FIDInceptionC
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    b1 = BasicConv2d(192, 1, name="branch1x1")(x)
    b7 = BasicConv2d(c, 1, name="branch7x7_1")(x)
    b7 = BasicConv2d(c, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv2d(c, 1, name="branch7x7dbl_1")(x)
    bd = BasicConv2d(c, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv2d(c, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv2d(c, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv2d(192, 1, name="branch_pool")(avg_pool_excluding_pad(x))
    return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):   # torchvision InceptionD (Mixed_7a)

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, 1, name="branch3x3_1")(x)
    b3 = BasicConv2d(320, 3, stride=2, name="branch3x3_2")(b3)
    b7 = BasicConv2d(192, 1, name="branch7x7x3_1")(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv2d(192, 3, stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, max_pool(x)], -1)


class InceptionE(nn.Module):   # FIDInceptionE_1 (pool "avg") and FIDInceptionE_2 ("max")
  pool: str

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(320, 1, name="branch1x1")(x)
    b3 = BasicConv2d(384, 1, name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)],
                         -1)
    bd = BasicConv2d(448, 1, name="branch3x3dbl_1")(x)
    bd = BasicConv2d(384, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)],
                         -1)
    pooled = avg_pool_excluding_pad(x) if self.pool == "avg" else max_pool(x, 3, 1, 1)
    bp = BasicConv2d(192, 1, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], -1)


class FIDInception(nn.Module):
  """Images in [-1, 1], float32 [B,H,W,3] (H, W >= 75) -> pool3 features [B, 2048]."""

  @nn.compact
  def __call__(self, x):
    x = BasicConv2d(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, 3, name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
    x = max_pool(x)
    x = BasicConv2d(80, 1, name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, 3, name="Conv2d_4a_3x3")(x)
    x = max_pool(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE("avg", name="Mixed_7b")(x)
    x = InceptionE("max", name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


def _bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
  """[n_out, n_in]: PyTorch's bilinear interpolation weights along one axis with
  ``align_corners=False``: source = (i + 0.5) * n_in / n_out - 0.5, clamped at 0."""
  src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
  lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = src - lo
  m = np.zeros((n_out, n_in), np.float64)
  m[np.arange(n_out), lo] += 1.0 - frac
  m[np.arange(n_out), hi] += frac
  return m.astype(np.float32)


def resize_bilinear(x, size: int):
  """float [B,H,W,C] -> [B,size,size,C] as ``F.interpolate(mode='bilinear',
  align_corners=False)`` (no antialiasing, as pytorch-fid)."""
  rh = jnp.asarray(_bilinear_matrix(size, x.shape[1]))
  rw = jnp.asarray(_bilinear_matrix(size, x.shape[2]))
  return jnp.einsum("ih,bhwc,jw->bijc", rh, x, rw, precision=jax.lax.Precision.HIGHEST)


def preprocess(x, num_bins: int, resize: bool = True):
  """uint8 levels [B,H,W,C] (C = 1 or 3) -> the network's input float32 [B,299,299,3] in
  [-1, 1], as pytorch-fid prepares an image file: levels / (num_bins - 1) in [0, 1], grey
  repeated to RGB, bilinear resize to 299, then 2x - 1."""
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"FID needs images [B,H,W,1 or 3]; got shape {x.shape}")
  x = x.astype(jnp.float32) / float(num_bins - 1)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  if resize:
    x = resize_bilinear(x, SIZE)
  return 2.0 * x - 1.0


def features(params, x, num_bins: int, resize: bool = True):
  """pool3 features float32 [B, 2048] of uint8 images ``x`` [B,H,W,C] with ``num_bins``
  levels (``resize=False``: the images go in at their size, which must be >= 75)."""
  return FIDInception().apply({"params": params}, preprocess(x, num_bins, resize))
