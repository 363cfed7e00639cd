"""Boolean attributes of images (``ImageData.attribute_names`` / ``attribute``) and the
``dgmjax manipulate`` selection built on them (``attribute_mask``): celeb_a's 40
attributes through the real tfds path under ``tfds.testing.mock_data`` (offline), the
``class:C`` selection from labels, and the one-line errors for a dataset without
attributes or an unknown name."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dgmjax import data
from dgmjax.commands.manipulate import attribute_mask, parse_strengths
from dgmjax.commands.workdirs import UsageError


def _mock():
  return tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE)


def test_celeb_a_attributes_through_the_tfds_path(tmp_path):
  with _mock():
    ds = data.load("celeb_a", "test", data_dir=str(tmp_path), download=True)
    raw = tfds.builder("celeb_a", data_dir=str(tmp_path)).as_data_source(split="test")
    want = np.array([bool(raw[i]["attributes"]["Smiling"]) for i in range(len(raw))])
    names = ds.attribute_names
    got = ds.attribute("Smiling", np.arange(6))
    assert got.dtype == bool and got.shape == (6,)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(attribute_mask(ds, "Smiling", np.arange(6)), want)
    np.testing.assert_array_equal(ds.attribute("Smiling", [4, 1]), want[[4, 1]])
    with pytest.raises(ValueError) as e:
      ds.attribute("Smiles", np.arange(2))
    mnist = data.load("mnist", "test", data_dir=str(tmp_path), download=True)
    assert mnist.attribute_names == ()
    with pytest.raises(ValueError, match="'mnist' has no attribute 'Smiling'; it has no "):
      mnist.attribute("Smiling", np.arange(2))
  assert len(names) == 40 and "Smiling" in names and "Eyeglasses" in names
  msg = str(e.value)
  assert "'celeb_a' has no attribute 'Smiles'" in msg and "Smiling" in msg and "\n" not in msg
  with pytest.raises(UsageError, match="has no labels"):   # celeb_a has no class labels
    attribute_mask(ds, "class:1", np.arange(2))


def test_class_selection_and_errors_on_digits():
  ds = data.load("digits", "train")
  idx = np.arange(50)
  np.testing.assert_array_equal(attribute_mask(ds, "class:3", idx), ds.labels(idx) == 3)
  for bad, match in [("Smiling", "'digits' has no attribute 'Smiling'; it has no attributes; "
                                 "or class:C"),
                     ("class:x", "integer class C"), ("class:", "integer class C")]:
    with pytest.raises(UsageError, match=match) as e:
      attribute_mask(ds, bad, idx)
    assert "\n" not in str(e.value)
  assert parse_strengths("-1, 0,2.5") == [-1.0, 0.0, 2.5]
  for bad in ("", "a,b", "1,nan", ","):
    with pytest.raises(UsageError, match="--strengths"):
      parse_strengths(bad)
