"""The tfds path, offline and without TensorFlow.

Two kinds of test: ``tfds.testing.mock_data`` drives the real loading code for the
named datasets (mnist, cifar10, celeb_a; under the mock, preparing is a no-op, hence
``download=True``), and a tiny local builder prepared in the array_record format
exercises the unmocked reading path, including the not-prepared error.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dgmjax import data
from dgmjax.data import preprocess

TINY = "dgmjax_test_tiny_images"
TINY_SIZES = {"train": 10, "test": 4}


class DgmjaxTestTinyImages(tfds.core.GeneratorBasedBuilder):
  """Example i is the constant image i with label i % 3 (built offline, no TensorFlow:
  a uint8 Tensor feature instead of a PNG-encoded Image)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(6, 5, 1), dtype=np.uint8),
        "label": tfds.features.ClassLabel(num_classes=3),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {s: self._generate_examples(n) for s, n in TINY_SIZES.items()}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"image": np.full((6, 5, 1), i, np.uint8), "label": i % 3}


def mock():
  return tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE)


def raw_images(name, split):
  """The mocked tfds examples themselves, read with tfds directly."""
  src = tfds.builder(name).as_data_source(split=split)
  return [np.asarray(src[i]["image"]) for i in range(len(src))]


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_mock_tfds_loads_through_the_real_path(tmp_path, name, shape):
  with mock():
    ds = data.load(name, "train", data_dir=str(tmp_path), download=True)
    test = data.load(name, "test", data_dir=str(tmp_path), download=True)
    raw = np.stack(raw_images(name, "test"))
  assert ds.image_shape == shape and ds.num_bins == 256 and len(ds) == 6
  x = test.get(np.arange(len(test)))
  assert x.dtype == np.uint8 and x.shape == (6,) + shape
  np.testing.assert_array_equal(x, raw)
  labels = test.labels(np.arange(6))
  assert labels.dtype == np.int64 and labels.shape == (6,) and np.all((0 <= labels) & (labels < 10))
  # The iterators work on tfds sources too.
  b = next(data.Batches(ds, 4, seed=0, prefetch=1))
  assert b["image"].shape == (4,) + shape
  assert sum(n for _, n in data.eval_batches(test, 4)) == 6


def test_mock_tfds_n_bits_and_padding(tmp_path):
  with mock():
    plain = data.load("mnist", "test", data_dir=str(tmp_path), download=True)
    five = data.load("mnist", "test", data_dir=str(tmp_path), download=True, n_bits=5)
    padded = data.load("mnist", "test", data_dir=str(tmp_path), download=True, pad_to=32)
  x = plain.get(np.arange(6))
  assert five.num_bins == 32 and five.image_shape == (28, 28, 1)
  np.testing.assert_array_equal(five.get(np.arange(6)), x >> 3)
  assert padded.image_shape == (32, 32, 1) and padded.num_bins == 256
  np.testing.assert_array_equal(padded.get(np.arange(6)), data.pad(x, 32))


def test_mock_celeb_a_is_cropped_and_resized_to_64(tmp_path):
  with mock():
    ds = data.load("celeb_a", "test", data_dir=str(tmp_path), download=True)
    raw = raw_images("celeb_a", "test")
  assert ds.image_shape == (64, 64, 3) and ds.num_bins == 256
  assert raw[0].shape == (218, 178, 3)
  expected = np.stack([preprocess.crop_and_resize(r, preprocess.CELEBA64_CROP, 64) for r in raw])
  np.testing.assert_array_equal(ds.get(np.arange(len(ds))), expected)


def test_binarized_mnist_has_two_levels_and_rejects_other_values(tmp_path):
  with mock():  # the mock draws bytes in [0, 255]: not a binary image
    ds = data.load("binarized_mnist", "train", data_dir=str(tmp_path), download=True)
  assert ds.num_bins == 2 and ds.image_shape == (28, 28, 1)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    ds.get(np.arange(len(ds)))


def test_unprepared_dataset_fails_fast_naming_the_data_dir(tmp_path):
  start = time.perf_counter()
  for name in ("mnist", "downsampled_imagenet/64x64"):
    with pytest.raises(ValueError) as e:
      data.load(name, "train", data_dir=str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path) in msg and "download_and_prepare" in msg and "array_record" in msg
  assert time.perf_counter() - start < 10.0


def test_a_real_prepared_array_record_dataset(tmp_path):
  with pytest.raises(ValueError, match=str(tmp_path)):
    data.load(TINY, "train", data_dir=str(tmp_path))
  DgmjaxTestTinyImages(data_dir=str(tmp_path)).download_and_prepare(file_format="array_record")
  for split, n in TINY_SIZES.items():
    ds = data.load(TINY, split, data_dir=str(tmp_path))
    assert len(ds) == n and ds.image_shape == (6, 5, 1) and ds.num_bins == 256
    x, y = ds.get(np.arange(n)), ds.labels(np.arange(n))
    assert x.dtype == np.uint8 and x.shape == (n, 6, 5, 1)
    values = x[:, 0, 0, 0].astype(int)
    assert sorted(values) == list(range(n))  # every example once (tfds may reorder)
    assert np.all(x == x[:, :1, :1, :1])
    np.testing.assert_array_equal(y, values % 3)
  with pytest.raises(ValueError, match="validation"):
    data.load(TINY, "validation", data_dir=str(tmp_path))


def test_download_true_prepares_a_missing_dataset(tmp_path):
  ds = data.load(TINY, "test", data_dir=str(tmp_path), download=True)
  assert len(ds) == TINY_SIZES["test"]
