"""tensorflow-datasets as a random-access source of uint8 images (no TensorFlow needed).

Imported only when a tfds dataset is loaded, so ``import dgmjax.data`` stays light.
Datasets are read with ``builder.as_data_source`` (the ``array_record`` file format),
which decodes examples with numpy/PIL and never loads a split into memory. A dataset
that is not prepared in ``data_dir`` is an immediate ValueError (no download is tried
unless ``download=True``: without network, a download attempt can hang on DNS).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from dgmjax.data import preprocess


def prepare_command(tfds_name: str, data_dir: str | None) -> str:
  """The shell command that prepares ``tfds_name`` in the array_record format."""
  dd = f", data_dir={data_dir!r}" if data_dir else ""
  return ("python -c \"import tensorflow_datasets as tfds; "
          f"tfds.builder({tfds_name!r}{dd}).download_and_prepare(file_format='array_record')\"")


def _not_prepared_message(tfds_name: str, builder, data_dir: str | None) -> str:
  return (
      f"tfds dataset {tfds_name!r} is not prepared: tfds looked in {builder.data_dir} "
      f"(data_dir={data_dir or str(builder.data_dir_root)!r}; set data_dir= or "
      "$TFDS_DATA_DIR to use another folder). Prepare it once on a machine with network "
      f"access (most image builders also need TensorFlow: pip install 'dgmjax[datasets]'):\n"
      f"  {prepare_command(tfds_name, data_dir)}\n"
      "then copy that data_dir here, or call dgmjax.data.load(..., download=True) where the "
      "network is reachable. The array_record format is required (random access without "
      "TensorFlow).")


def _builder(tfds_name: str, data_dir: str | None, known_names: Sequence[str]):
  unknown = (f"unknown dataset {tfds_name!r}; known names: {', '.join(known_names)}, "
             "or the name of a tfds image dataset (tfds.list_builders())")
  try:
    ds_name, _ = tfds.core.naming.parse_builder_name_kwargs(tfds_name)
  except Exception as e:  # tfds raises several types for malformed names
    raise ValueError(f"{unknown} ({e})") from None
  if ds_name.namespace:
    # Community datasets resolve through the network: refuse rather than hang.
    raise ValueError(f"{unknown}; community (namespace:) datasets are not supported")
  try:
    return tfds.builder(tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(unknown) from None
  except (ValueError, KeyError) as e:  # e.g. an unknown builder config
    raise ValueError(f"{unknown}: {e}") from None


@contextlib.contextmanager
def _no_probe_note():
  """Drops tfds' note on the folder of a dataset that is not prepared ("Variant folder
  ... has no dataset_info.json", absl logger): ``open_source`` raises the one-line error
  that says so, with the command that prepares it."""
  note = lambda record: "has no dataset_info.json" not in record.getMessage()
  absl = logging.getLogger("absl")
  absl.addFilter(note)
  try:
    yield
  finally:
    absl.removeFilter(note)


def _image_key(features) -> str:
  """``image`` if it is an Image (or a uint8 [H,W,C] Tensor), else the first Image feature."""
  keys = list(features.keys())
  if "image" in keys:
    f = features["image"]
    if isinstance(f, tfds.features.Image) or (
        isinstance(f, tfds.features.Tensor) and len(f.shape) == 3
        and np.dtype(f.np_dtype) == np.uint8):
      return "image"
  for k in keys:
    if isinstance(features[k], tfds.features.Image):
      return k
  raise ValueError(f"tfds dataset has no image feature; features: {keys}")


def _label_key(features) -> str | None:
  if "label" in features.keys() and isinstance(features["label"], tfds.features.ClassLabel):
    return "label"
  return None


def _attribute_names(features) -> tuple[str, ...]:
  """The boolean scalars of an ``attributes`` feature dict (celeb_a's 40), else ()."""
  attrs = features["attributes"] if "attributes" in features.keys() else None
  if not isinstance(attrs, tfds.features.FeaturesDict):
    return ()
  return tuple(k for k, f in attrs.items() if isinstance(f, tfds.features.Tensor)
               and tuple(f.shape) == () and np.dtype(f.np_dtype) == np.bool_)


class TfdsSource:
  """Random access to one tfds split: uint8 images [n,H,W,C] (+ labels, + the boolean
  ``attributes`` of datasets that have them, e.g. celeb_a)."""

  def __init__(self, data_source, image_key: str, label_key: str | None,
               image_shape: tuple[int, int, int], num_bins: int,
               crop: tuple[int, int, int, int] | None = None, resize: int | None = None,
               name: str = "", attribute_names: Sequence[str] = ()):
    self._source = data_source
    self._image_key, self._label_key = image_key, label_key
    self.attribute_names = tuple(attribute_names)
    self.image_shape, self.num_bins = tuple(image_shape), int(num_bins)
    self._crop, self._resize, self._name = crop, resize, name
    self._batched_read = hasattr(data_source, "__getitems__")

  def __len__(self) -> int:
    return len(self._source)

  @property
  def has_labels(self) -> bool:
    return self._label_key is not None

  def _records(self, indices: np.ndarray) -> list:
    keys = [int(i) for i in indices]
    if self._batched_read:
      try:
        return list(self._source.__getitems__(keys))
      except TypeError:
        # tfds.testing.mock_data's stand-in lacks a working __getitems__.
        self._batched_read = False
    return [self._source[k] for k in keys]

  def _image(self, record) -> np.ndarray:
    x = np.asarray(record[self._image_key])
    if x.ndim == 2:
      x = x[..., None]
    if self._crop is not None:
      x = preprocess.crop_and_resize(x, self._crop, self._resize)
    if x.dtype != np.uint8 or x.shape != self.image_shape:
      raise ValueError(f"tfds dataset {self._name!r} gave an image {x.dtype} {x.shape}; "
                       f"expected uint8 {self.image_shape} (all images must share one shape)")
    return x

  def images(self, indices: np.ndarray) -> np.ndarray:
    if len(indices) == 0:
      return np.zeros((0,) + self.image_shape, np.uint8)
    x = np.stack([self._image(r) for r in self._records(indices)])
    if int(x.max()) >= self.num_bins:
      raise ValueError(f"tfds dataset {self._name!r} has values up to {int(x.max())}; "
                       f"expected levels in [0, {self.num_bins - 1}]")
    return x

  def labels(self, indices: np.ndarray) -> np.ndarray | None:
    if self._label_key is None:
      return None
    return np.asarray([np.asarray(r[self._label_key]) for r in self._records(indices)],
                      np.int64).reshape(len(indices))


  def attribute(self, name: str, indices: np.ndarray) -> np.ndarray:
    """bool [n]: the boolean attribute ``name`` (one of ``attribute_names``)."""
    return np.asarray([bool(r["attributes"][name]) for r in self._records(indices)],
                      bool).reshape(len(indices))


def _resolve_split(tfds_name: str, split: str, builder, split_map: dict) -> str:
  split = split_map.get(split, split)
  try:
    available = [str(s) for s in builder.info.splits.keys()]
  except Exception:  # pylint: disable=broad-except
    available = []
  if available:
    base = split.split("[")[0]
    if base not in available:
      raise ValueError(f"tfds dataset {tfds_name!r} has no split {split!r}; available: "
                       f"{sorted(available)}")
  return split


def open_source(tfds_name: str, split: str, *, data_dir: str | None, download: bool,
                image_shape: tuple[int, int, int] | None, num_bins: int,
                split_map: dict, crop=None, resize=None,
                known_names: Sequence[str] = ()) -> TfdsSource:
  """Opens ``split`` of a prepared tfds dataset as a ``TfdsSource``.

  image_shape: the delivered (H, W, C) when known in advance (named datasets); else
  taken from the image feature, or from the first example if the feature's shape
  has unknown dimensions.
  """
  if not isinstance(split, str) or not split:
    raise ValueError(f"split must be a non-empty string such as 'train' or 'test'; got {split!r}")
  with _no_probe_note():
    builder = _builder(tfds_name, data_dir, known_names)
    prepared = builder.is_prepared()
  if not prepared:
    if not download:
      raise ValueError(_not_prepared_message(tfds_name, builder, data_dir))
    try:
      builder.download_and_prepare(file_format="array_record")
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"preparing tfds dataset {tfds_name!r} in {builder.data_dir} failed: "
                       f"{type(e).__name__}: {e}\n"
                       + _not_prepared_message(tfds_name, builder, data_dir)) from e
  features = builder.info.features
  image_key, label_key = _image_key(features), _label_key(features)
  image_feature = features[image_key]
  if np.dtype(image_feature.np_dtype) != np.uint8:
    raise ValueError(f"tfds dataset {tfds_name!r}: image feature {image_key!r} is "
                     f"{image_feature.np_dtype}; only uint8 images are supported")
  tfds_split = _resolve_split(tfds_name, split, builder, split_map)
  try:
    data_source = builder.as_data_source(split=tfds_split)
  except NotImplementedError as e:
    raise ValueError(
        f"tfds dataset {tfds_name!r} in {builder.data_dir} is not stored in a random-access "
        f"format ({e}). Prepare it again with file_format='array_record' in another "
        f"data_dir:\n  {prepare_command(tfds_name, data_dir)}") from None
  except KeyError as e:
    raise ValueError(f"tfds dataset {tfds_name!r}: cannot read split {tfds_split!r}: {e}") from None
  if image_shape is None:
    shape = tuple(image_feature.shape)
    if len(shape) == 2:
      shape = shape + (1,)
    if any(d is None for d in shape):
      if len(data_source) == 0:
        raise ValueError(f"tfds dataset {tfds_name!r} split {split!r} is empty")
      first = np.asarray(data_source[0][image_key])
      shape = first.shape if first.ndim == 3 else first.shape + (1,)
    image_shape = tuple(int(d) for d in shape)
  return TfdsSource(data_source, image_key, label_key, image_shape, num_bins,
                    crop=crop, resize=resize, name=tfds_name,
                    attribute_names=_attribute_names(features))
