"""Datasets by name, delivered as uint8 NHWC images plus their number of levels.

    ds = load("digits", "train")          # ImageData
    x = ds.get(np.arange(16))             # uint8 [16, 8, 8, 1], levels 0..16
    ds.num_bins, ds.image_shape, len(ds)  # 17, (8, 8, 1), 1497

Names (``names()``):

* ``digits``: scikit-learn's bundled ``load_digits`` (1797 real 8x8 handwritten digits,
  values 0..16, so 17 levels). Fixed split: a ``numpy.random.default_rng(0)``
  permutation of the 1797 indices; its first 300 are ``test``, the other 1497
  ``train`` (each kept in the original order). Needs no network: the offline default.
* ``synthetic``: deterministic structured images (random plane waves) for tests;
  keyword arguments ``image_shape=(8, 8, 1)``, ``num_bins=4``, ``num_examples``
  (default 512 for train, 128 for test).
* ``mnist``, ``cifar10`` (256 levels), ``binarized_mnist`` (the fixed binarisation of
  Larochelle & Murray 2011 in tfds, 2 levels; *dynamic* binarisation is ``mnist`` plus
  ``dgmjax.data.binarize`` in the training step), ``celeb_a`` (64x64x3: NVAE's 148x148
  crop of the aligned CelebA images, resized with PIL's bilinear filter, see
  ``preprocess.crop_and_resize``), ``downsampled_imagenet/32x32`` and ``/64x64``
  (van den Oord et al. 2016; they have no test split, ``split="test"`` reads
  ``validation`` as the papers report).
* any other tfds dataset with an image feature (``image`` if present, else the first
  ``Image`` feature), by its tfds name (``"fashion_mnist"``, ``"svhn_cropped"``, ...).

tfds datasets are read with ``tfds.data_source`` (the ``array_record`` format, random
access, no TensorFlow needed), so large datasets are never loaded into memory. They
must be prepared beforehand; ``load`` never downloads unless ``download=True``.

Boolean attributes: ``ImageData.attribute_names`` and ``attribute(name, indices)`` read a
tfds dataset's ``attributes`` feature dict (celeb_a's 40, e.g. ``Smiling``).

Options applied by ``ImageData.get`` (in this order): ``n_bits`` (num_bins =
2**n_bits, ``reduce_bits``), then ``pad_to`` (``pad``: zero-pad H and W up to
``pad_to``, e.g. MNIST 28 -> 32).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import numpy as np

from dgmjax import images
from dgmjax.data import preprocess

SPLITS = ("train", "test")
DIGITS_TEST_SIZE = 300


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """How a named tfds dataset becomes uint8 images.

  tfds_name: the tfds builder name (with config).
  image_shape: (H, W, C) delivered, after ``crop``/``resize``.
  num_bins: native number of levels.
  splits: our split name -> tfds split name, where they differ.
  crop: (top, bottom, left, right) crop box applied before ``resize``.
  resize: output side length of the square resize after the crop.
  """
  tfds_name: str
  image_shape: tuple[int, int, int]
  num_bins: int = 256
  splits: tuple[tuple[str, str], ...] = ()
  crop: tuple[int, int, int, int] | None = None
  resize: int | None = None


_TFDS = {
    "mnist": TfdsSpec("mnist", (28, 28, 1)),
    "binarized_mnist": TfdsSpec("binarized_mnist", (28, 28, 1), num_bins=2),
    "cifar10": TfdsSpec("cifar10", (32, 32, 3)),
    "celeb_a": TfdsSpec("celeb_a", (64, 64, 3), crop=preprocess.CELEBA64_CROP, resize=64),
    "downsampled_imagenet/32x32": TfdsSpec("downsampled_imagenet/32x32", (32, 32, 3),
                                           splits=(("test", "validation"),)),
    "downsampled_imagenet/64x64": TfdsSpec("downsampled_imagenet/64x64", (64, 64, 3),
                                           splits=(("test", "validation"),)),
}


def names() -> tuple[str, ...]:
  """The dataset names ``load`` knows (any other tfds image dataset works too)."""
  return ("digits", "synthetic") + tuple(_TFDS)


class ArraySource:
  """An in-memory source: images uint8 [N,H,W,C], labels int [N] or None."""

  def __init__(self, images_: np.ndarray, labels: np.ndarray | None, num_bins: int):
    self._images = np.asarray(images_)
    if self._images.ndim != 4 or self._images.dtype != np.uint8:
      raise ValueError(f"images must be uint8 [N,H,W,C]; got {self._images.dtype} "
                       f"{self._images.shape}")
    if self._images.size and int(self._images.max()) >= num_bins:
      raise ValueError(f"image values must lie in [0, {num_bins - 1}]; got max "
                       f"{int(self._images.max())}")
    self._labels = None if labels is None else np.asarray(labels, np.int64)
    if self._labels is not None and self._labels.shape != (len(self._images),):
      raise ValueError(f"labels must have shape [{len(self._images)}]; got "
                       f"{self._labels.shape}")
    self.image_shape = tuple(int(d) for d in self._images.shape[1:])
    self.num_bins = int(num_bins)

  def __len__(self) -> int:
    return len(self._images)

  @property
  def has_labels(self) -> bool:
    return self._labels is not None

  def images(self, indices: np.ndarray) -> np.ndarray:
    return self._images[indices]

  def labels(self, indices: np.ndarray) -> np.ndarray | None:
    return None if self._labels is None else self._labels[indices]


class ImageData:
  """One split of a dataset: random access to pre-processed uint8 images.

  Attributes:
    name, split: what was loaded.
    num_bins: levels of the delivered images (2**n_bits when n_bits is set).
    image_shape: (H, W, C) of the delivered images (after padding).
  """

  def __init__(self, name: str, split: str, source, *, n_bits: int = 0, pad_to: int = 0):
    self.name, self.split, self._source = name, split, source
    native = images.check_num_bins(source.num_bins)
    h, w, c = images.check_image_shape(source.image_shape)
    if n_bits:
      from_bits = int(round(math.log2(native)))
      if 2 ** from_bits != native or n_bits > from_bits:
        raise ValueError(f"n_bits={n_bits!r} needs a dataset whose levels are a power of two "
                         f"with at least {n_bits!r} bits; {name!r} has {native} levels")
      preprocess.reduce_bits(np.zeros((1,), np.uint8), n_bits, from_bits)  # validates n_bits
      self._bits = (int(n_bits), from_bits)
      self.num_bins = 2 ** int(n_bits)
    else:
      self._bits = None
      self.num_bins = native
    if pad_to:
      preprocess.pad(np.zeros((1, h, w, c), np.uint8), pad_to)  # validates pad_to
      h = w = int(pad_to)
    self._pad_to = int(pad_to)
    self.image_shape = (h, w, c)

  def __len__(self) -> int:
    return len(self._source)

  def __repr__(self) -> str:
    return (f"ImageData({self.name!r}, split={self.split!r}, n={len(self)}, "
            f"image_shape={self.image_shape}, num_bins={self.num_bins})")

  @property
  def has_labels(self) -> bool:
    return self._source.has_labels

  def _indices(self, indices) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
      raise ValueError(f"indices must be a 1-D integer array; got {idx.dtype} {idx.shape}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
      raise ValueError(f"indices must lie in [0, {len(self)}); got min {idx.min()}, "
                       f"max {idx.max()}")
    return idx

  def get(self, indices) -> np.ndarray:
    """indices: int [n] -> uint8 [n,H,W,C] with levels in [0, num_bins)."""
    idx = self._indices(indices)
    x = np.asarray(self._source.images(idx))
    if x.dtype != np.uint8 or x.shape != (len(idx),) + tuple(self._source.image_shape):
      raise ValueError(f"{self.name!r} returned {x.dtype} {x.shape}; expected uint8 "
                       f"{(len(idx),) + tuple(self._source.image_shape)}")
    if self._bits is not None:
      x = preprocess.reduce_bits(x, *self._bits)
    if self._pad_to:
      x = preprocess.pad(x, self._pad_to)
    return x

  def labels(self, indices) -> np.ndarray | None:
    """indices: int [n] -> int64 [n] class labels, or None when the dataset has none."""
    idx = self._indices(indices)
    return self._source.labels(idx)

  get_labels = labels

  @property
  def attribute_names(self) -> tuple[str, ...]:
    """The names of the boolean attributes of each image (tfds ``attributes``, e.g.
    celeb_a's 40 such as ``Smiling``); () when the dataset has none."""
    return tuple(getattr(self._source, "attribute_names", ()))

  def attribute(self, name: str, indices) -> np.ndarray:
    """indices: int [n] -> bool [n], the boolean attribute ``name`` of those images.
    ValueError (one line naming the dataset and its attributes) for an unknown name."""
    names_ = self.attribute_names
    if name not in names_:
      have = f"its attributes: {', '.join(names_)}" if names_ else "it has no attributes"
      raise ValueError(f"dataset {self.name!r} has no attribute {name!r}; {have}")
    return np.asarray(self._source.attribute(name, self._indices(indices)), bool)


def _check_split(name: str, split: str, allowed: Sequence[str]) -> None:
  if split not in allowed:
    raise ValueError(f"unknown split {split!r} for {name!r}; expected one of {tuple(allowed)}")


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

  d = load_digits()
  x = np.asarray(d.images)
  if x.shape[1:] != (8, 8) or x.min() < 0 or x.max() > 16 or np.any(x != np.round(x)):
    raise ValueError(f"unexpected load_digits images: {x.shape}, range [{x.min()}, {x.max()}]")
  return x.astype(np.uint8)[..., None], np.asarray(d.target, np.int64)


def digits_split_indices(split: str) -> np.ndarray:
  """The indices (into ``load_digits``) of the fixed ``train``/``test`` split, sorted."""
  _check_split("digits", split, SPLITS)
  n = len(_digits_arrays()[0])
  perm = np.random.default_rng(0).permutation(n)
  part = perm[:DIGITS_TEST_SIZE] if split == "test" else perm[DIGITS_TEST_SIZE:]
  return np.sort(part)


def _load_digits(split: str) -> ArraySource:
  x, y = _digits_arrays()
  idx = digits_split_indices(split)
  return ArraySource(x[idx], y[idx], num_bins=17)


def synthetic_images(num_examples: int, image_shape: Sequence[int], num_bins: int,
                     seed: int) -> np.ndarray:
  """Deterministic structured images: one random plane wave per example and channel.

  Level = floor(num_bins * (1 + sin(2 pi f (i cos t + j sin t) / H + phase_c)) / 2),
  clipped to num_bins - 1, with frequency f in [0.5, 2], angle t and phases drawn from
  ``default_rng(seed)``. Returns uint8 [num_examples, H, W, C].
  """
  h, w, c = images.check_image_shape(image_shape)
  num_bins = images.check_num_bins(num_bins)
  if not isinstance(num_examples, (int, np.integer)) or num_examples <= 0:
    raise ValueError(f"num_examples must be a positive int; got {num_examples!r}")
  rng = np.random.default_rng(seed)
  freq = rng.uniform(0.5, 2.0, (num_examples, 1, 1, 1))
  angle = rng.uniform(0.0, 2 * np.pi, (num_examples, 1, 1, 1))
  phase = rng.uniform(0.0, 2 * np.pi, (num_examples, 1, 1, c))
  i = np.arange(h).reshape(1, h, 1, 1)
  j = np.arange(w).reshape(1, 1, w, 1)
  wave = np.sin(2 * np.pi * freq * (i * np.cos(angle) + j * np.sin(angle)) / max(h, w) + phase)
  levels = np.floor(num_bins * (1.0 + wave) / 2.0)
  return np.clip(levels, 0, num_bins - 1).astype(np.uint8)


def _load_synthetic(split: str, image_shape=(8, 8, 1), num_bins: int = 4,
                    num_examples: int | None = None) -> ArraySource:
  _check_split("synthetic", split, SPLITS)
  if num_examples is None:
    num_examples = 512 if split == "train" else 128
  x = synthetic_images(num_examples, image_shape, num_bins, seed=SPLITS.index(split))
  return ArraySource(x, None, num_bins)


class _NoImages:
  """A source that knows its images' shape and levels but holds none (``image_spec``)."""

  def __init__(self, image_shape, num_bins: int):
    self.image_shape, self.num_bins, self.has_labels = tuple(image_shape), num_bins, False

  def __len__(self) -> int:
    return 0


def image_spec(name: str, *, n_bits: int = 0, pad_to: int = 0,
               binarize: bool = False) -> tuple[tuple[int, int, int], int] | None:
  """((H, W, C), num_bins) of the images ``load(name, ...)`` delivers to a model (after
  ``n_bits``, ``pad_to`` and, with ``binarize``, 2 levels), read from the dataset's
  description alone: no file is opened, so it works where the data are not prepared
  (sampling from a checkpoint, importing one). None for a tfds dataset dgmjax has no
  description of (then only loading it tells)."""
  if name == "digits":
    source = _NoImages((8, 8, 1), 17)
  elif name == "synthetic":
    source = _NoImages((8, 8, 1), 4)
  elif name in _TFDS:
    source = _NoImages(_TFDS[name].image_shape, _TFDS[name].num_bins)
  else:
    return None
  data = ImageData(name, "test", source, n_bits=n_bits, pad_to=pad_to)
  return tuple(data.image_shape), (2 if binarize else data.num_bins)


def from_array(x, num_bins: int, labels=None, *, name: str = "array", split: str = "train",
               n_bits: int = 0, pad_to: int = 0) -> ImageData:
  """Wraps in-memory images as an ``ImageData``.

  x: uint8 [N,H,W,C] with levels in [0, num_bins); labels: int [N] or None.
  """
  return ImageData(name, split, ArraySource(x, labels, images.check_num_bins(num_bins)),
                   n_bits=n_bits, pad_to=pad_to)


def load(name: str, split: str = "train", *, data_dir: str | None = None, n_bits: int = 0,
         pad_to: int = 0, download: bool = False, **kwargs: Any) -> ImageData:
  """Loads one split of a dataset by name (see the module docstring).

  Args:
    name: one of ``names()`` or a tfds dataset name.
    split: ``"train"`` or ``"test"`` (tfds datasets accept any of their splits).
    data_dir: tfds data directory (None or "" = the tfds default, ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``); ignored by ``digits`` and ``synthetic``.
    n_bits: 0 keeps the native levels; else num_bins = 2**n_bits (``reduce_bits``).
    pad_to: 0 keeps the size; else zero-pad H and W up to pad_to (``pad``).
    download: prepare a missing tfds dataset (needs the network, and TensorFlow for
      most image builders). Off by default, so a missing dataset fails fast.
    **kwargs: ``synthetic`` only: image_shape, num_bins, num_examples.

  Raises:
    ValueError: unknown name (the message lists ``names()``), unknown split, bad
      options, or a tfds dataset that is not prepared (the message names the
      data_dir tfds looked in and the command that prepares it).
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"dataset name must be a non-empty string; got {name!r}; known: {names()}")
  if kwargs and name != "synthetic":
    raise ValueError(f"unexpected keyword arguments {sorted(kwargs)} for dataset {name!r} "
                     "(only 'synthetic' takes image_shape, num_bins, num_examples)")
  if name == "digits":
    _check_split(name, split, SPLITS)
    source = _load_digits(split)
  elif name == "synthetic":
    unknown = set(kwargs) - {"image_shape", "num_bins", "num_examples"}
    if unknown:
      raise ValueError(f"unexpected keyword arguments {sorted(unknown)} for 'synthetic'; "
                       "expected image_shape, num_bins, num_examples")
    source = _load_synthetic(split, **kwargs)
  else:
    from dgmjax.data import tfds_data  # pylint: disable=import-outside-toplevel

    spec = _TFDS.get(name)
    source = tfds_data.open_source(
        name if spec is None else spec.tfds_name, split,
        data_dir=data_dir or None, download=download,
        image_shape=None if spec is None else spec.image_shape,
        num_bins=256 if spec is None else spec.num_bins,
        split_map=dict(spec.splits) if spec is not None else {},
        crop=None if spec is None else spec.crop,
        resize=None if spec is None else spec.resize,
        known_names=names())
  return ImageData(name, split, source, n_bits=n_bits, pad_to=pad_to)
