"""Datasets by name: digits, synthetic, from_array, option and name errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dgmjax import data
from dgmjax.data import datasets


@pytest.fixture(scope="module")
def digits():
  return data.load("digits", "train"), data.load("digits", "test")


def test_digits_shapes_levels_and_labels(digits):
  from sklearn.datasets import load_digits

  ref = load_digits()
  train, test = digits
  assert len(train) + len(test) == len(ref.images)
  assert (len(train), len(test)) == (len(ref.images) - datasets.DIGITS_TEST_SIZE,
                                     datasets.DIGITS_TEST_SIZE)
  for ds, split in ((train, "train"), (test, "test")):
    assert ds.num_bins == 17 and ds.image_shape == (8, 8, 1)
    x = ds.get(np.arange(len(ds)))
    assert x.dtype == np.uint8 and x.shape == (len(ds), 8, 8, 1)
    assert x.min() == 0 and x.max() == 16  # all 17 levels in range, extremes used
    idx = datasets.digits_split_indices(split)
    np.testing.assert_array_equal(x[..., 0], ref.images[idx].astype(np.uint8))
    np.testing.assert_array_equal(ds.labels(np.arange(len(ds))), ref.target[idx])
    np.testing.assert_array_equal(ds.get_labels([0, 1]), ref.target[idx[:2]])
    assert set(np.unique(ds.labels(np.arange(len(ds))))) == set(range(10))


def test_digits_split_is_disjoint_and_covers_everything():
  tr, te = datasets.digits_split_indices("train"), datasets.digits_split_indices("test")
  assert not set(tr) & set(te)
  np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), np.arange(len(tr) + len(te)))


def test_digits_split_is_the_same_in_a_fresh_process_and_import_is_light():
  code = ("import sys, json, dgmjax.data as d; light = 'tensorflow_datasets' not in sys.modules; "
          "t = d.load('digits', 'test'); import numpy as np; "
          "print(json.dumps([light, d.datasets.digits_split_indices('test').tolist(), "
          "int(t.get(np.arange(len(t))).sum())]))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  light, idx, total = json.loads(out.stdout.strip().splitlines()[-1])
  assert light, "import dgmjax.data must not import tensorflow_datasets"
  assert idx == datasets.digits_split_indices("test").tolist()
  test = data.load("digits", "test")
  assert total == int(test.get(np.arange(len(test))).sum())


def test_digits_padding_and_n_bits(digits):
  train = digits[0]
  padded = data.load("digits", "train", pad_to=12)
  assert padded.image_shape == (12, 12, 1) and padded.num_bins == 17
  np.testing.assert_array_equal(padded.get([3, 7]), data.pad(train.get([3, 7]), 12))
  with pytest.raises(ValueError, match="power of two"):
    data.load("digits", "train", n_bits=4)  # 17 levels are not 2**k
  with pytest.raises(ValueError, match="smaller"):
    data.load("digits", "train", pad_to=6)


def test_synthetic_is_deterministic_structured_and_configurable():
  kw = dict(image_shape=(6, 5, 3), num_bins=8, num_examples=40)
  a, b = data.load("synthetic", "train", **kw), data.load("synthetic", "train", **kw)
  test = data.load("synthetic", "test", **kw)
  assert len(a) == 40 and a.image_shape == (6, 5, 3) and a.num_bins == 8
  xa = a.get(np.arange(40))
  assert xa.dtype == np.uint8 and xa.shape == (40, 6, 5, 3)
  assert set(np.unique(xa)) == set(range(8))
  np.testing.assert_array_equal(xa, b.get(np.arange(40)))
  assert np.any(xa != test.get(np.arange(40)))
  assert a.labels([0]) is None and not a.has_labels
  # Structure: neighbouring pixels are closer than random pairs of pixels.
  x = xa.astype(float)
  near = np.abs(np.diff(x, axis=2)).mean()
  far = np.abs(x - x[np.random.default_rng(0).permutation(40)]).mean()
  assert near < far
  default = data.load("synthetic", "test")
  assert default.image_shape == (8, 8, 1) and default.num_bins == 4 and len(default) == 128


def test_from_array_and_get_errors():
  x = np.arange(24, dtype=np.uint8).reshape(6, 2, 2, 1)
  ds = data.from_array(x, num_bins=24, labels=np.arange(6))
  np.testing.assert_array_equal(ds.get(np.array([5, 0])), x[[5, 0]])
  np.testing.assert_array_equal(ds.labels([5, 0]), [5, 0])
  assert ds.get(np.array([], np.int64)).shape == (0, 2, 2, 1)
  for bad in ([6], [-1], [[0, 1]], [0.5]):
    with pytest.raises(ValueError, match="indices"):
      ds.get(bad)
  with pytest.raises(ValueError, match="values"):
    data.from_array(x, num_bins=8)
  with pytest.raises(ValueError, match="uint8"):
    data.from_array(x.astype(np.float32), num_bins=24)


def test_unknown_names_splits_and_options():
  with pytest.raises(ValueError) as e:
    data.load("no_such_dataset_xyz")
  for name in data.names():
    assert name in str(e.value)
  assert {"digits", "synthetic", "mnist", "binarized_mnist", "cifar10", "celeb_a",
          "downsampled_imagenet/32x32", "downsampled_imagenet/64x64"} == set(data.names())
  with pytest.raises(ValueError, match="split"):
    data.load("digits", "validation")
  with pytest.raises(ValueError, match="keyword"):
    data.load("digits", "train", num_bins=4)
  with pytest.raises(ValueError, match="keyword"):
    data.load("synthetic", "train", colour=True)
  with pytest.raises(ValueError, match="namespace"):
    data.load("huggingface:mnist")
