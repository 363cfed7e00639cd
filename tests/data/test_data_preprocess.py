"""Pre-processing: n-bit reduction, padding, dynamic binarisation, the CelebA crop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import data, images
from dgmjax.data import preprocess


@pytest.mark.parametrize("n_bits", [1, 3, 5, 8])
def test_reduce_bits_is_a_uniform_quantiser(n_bits):
  x = np.arange(256, dtype=np.uint8)
  y = data.reduce_bits(x, n_bits)
  assert y.dtype == np.uint8
  np.testing.assert_array_equal(y, np.floor(x / 2 ** (8 - n_bits)).astype(np.uint8))
  # 2**n_bits levels, each the image of the same number of 8-bit values, in order.
  counts = np.bincount(y, minlength=2 ** n_bits)
  assert counts.shape == (2 ** n_bits,) and np.all(counts == 2 ** (8 - n_bits))
  assert np.all(np.diff(y.astype(int)) >= 0)
  # jax arrays give the same result.
  np.testing.assert_array_equal(np.asarray(data.reduce_bits(jnp.asarray(x), n_bits)), y)


def test_reduce_bits_rejects_bad_input():
  x = np.zeros((2, 2), np.uint8)
  for bad in (0, 9, 2.5, True):
    with pytest.raises(ValueError, match="n_bits"):
      data.reduce_bits(x, bad)
  with pytest.raises(ValueError, match="integer"):
    data.reduce_bits(x.astype(np.float32), 5)


def test_pad_28_to_32_puts_two_zero_pixels_on_each_side():
  rng = np.random.default_rng(0)
  x = rng.integers(1, 256, (3, 28, 28, 1)).astype(np.uint8)  # no zeros inside
  y = data.pad(x, 32)
  assert y.shape == (3, 32, 32, 1) and y.dtype == np.uint8
  np.testing.assert_array_equal(y[:, 2:30, 2:30], x)
  mask = np.ones((32, 32), bool)
  mask[2:30, 2:30] = False
  assert np.all(y[:, mask] == 0)
  np.testing.assert_array_equal(np.asarray(data.pad(jnp.asarray(x), 32)), y)
  assert data.pad(x, 28) is x


def test_pad_odd_difference_and_errors():
  x = np.ones((5, 6, 2), np.uint8)  # a single image [H,W,C] also works
  y = data.pad(x, 8)
  assert y.shape == (8, 8, 2)
  rows, cols = np.nonzero(y[..., 0])
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (1, 5, 1, 6)
  with pytest.raises(ValueError, match="smaller"):
    data.pad(x, 4)
  with pytest.raises(ValueError, match="positive int"):
    data.pad(x, 0)


def test_binarize_is_bernoulli_of_the_scaled_level():
  num_bins = 17
  levels = np.arange(num_bins, dtype=np.uint8)
  x = np.broadcast_to(levels[:, None, None, None], (num_bins, 64, 64, 1))
  b = jax.jit(lambda r, v: data.binarize(r, v, num_bins))(jax.random.PRNGKey(0), x)
  b = np.asarray(b)
  assert b.dtype == np.uint8 and b.shape == x.shape
  assert set(np.unique(b)) <= {0, 1}
  images.check_images(b, (64, 64, 1), 2)
  p = levels / (num_bins - 1)
  mean = b.reshape(num_bins, -1).mean(axis=1)
  sigma = np.sqrt(p * (1 - p) / (64 * 64))
  assert np.all(np.abs(mean - p) <= 5 * sigma + 1e-12), (mean, p)
  assert mean[0] == 0.0 and mean[-1] == 1.0
  # A new key resamples.
  b2 = np.asarray(data.binarize(jax.random.PRNGKey(1), x, num_bins))
  assert np.any(b2 != b)


def test_crop_and_resize_takes_the_crop_box():
  top, bottom, left, right = preprocess.CELEBA64_CROP
  assert (bottom - top, right - left) == (148, 148)
  img = np.zeros((218, 178, 3), np.uint8)
  img[top:bottom, left:right] = (10, 120, 250)  # outside the box stays 0
  out = preprocess.crop_and_resize(img, preprocess.CELEBA64_CROP, 64)
  assert out.shape == (64, 64, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, np.broadcast_to(np.array([10, 120, 250], np.uint8),
                                                     (64, 64, 3)))
  # A smooth ramp keeps its mean through the bilinear resize.
  ramp = np.broadcast_to(np.linspace(0, 255, 178).astype(np.uint8)[None, :, None],
                         (218, 178, 1)).copy()
  small = preprocess.crop_and_resize(ramp, preprocess.CELEBA64_CROP, 64)
  assert small.shape == (64, 64, 1)
  assert abs(small.mean() - ramp[top:bottom, left:right].mean()) < 1.0
  with pytest.raises(ValueError, match="crop box"):
    preprocess.crop_and_resize(np.zeros((100, 100, 3), np.uint8), preprocess.CELEBA64_CROP, 64)


def test_dequantize_and_to_centered_are_the_images_helpers():
  assert data.dequantize is images.dequantize
  assert data.to_centered is images.to_centered
