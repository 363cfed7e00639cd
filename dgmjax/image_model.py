"""``ImageModel``: the plumbing every dgmjax model shares, written once.

A model is a frozen dataclass of hyper-parameters that subclasses ``ImageModel``; this
base holds the fields and checks of the protocol (``dgmjax.models.GenerativeModel``):

- ``image_shape`` (H, W, C) and ``num_bins`` validated at construction;
- ``num_dims``: the dimensions the likelihood covers (H*W*C unless a subclass crops);
- ``num_classes``: None for unconditional models; a class-conditional model declares it
  as a field and takes labels ``y: int [B]`` as ``y=``;
- ``check_images`` / ``check_labels`` / ``check_num`` / ``check_temperatures``: the
  input checks every method starts with (a clear ``ValueError`` naming what was
  expected, never a silent clip);
- ``bits_per_dim(log_prob)``: -log p / (num_dims ln 2), one convention for all models.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import images


def check_positive_int(v, name: str) -> int:
  """``v`` as an int >= 1, else ValueError naming ``name``."""
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
    raise ValueError(f"{name} must be a positive int; got {v!r}")
  return int(v)


def check_ints(obj, names, minimum: int) -> None:
  """Each attribute ``names`` of ``obj`` must be an int >= ``minimum`` (not a bool)."""
  for k in names:
    v = getattr(obj, k)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
      raise ValueError(f"{k} must be an int >= {minimum}; got {v!r}")


def check_dtype(d, model: str, allowed=("float32", "bfloat16", "float64")):
  """The compute dtype named (or given) by ``d``, one of ``allowed``, else ValueError.

  float16 is refused with its reason: without loss scaling (which dgmjax does not
  implement) small gradients underflow; bfloat16 has float32's exponent range.
  float64 serves the ``jax_enable_x64`` tests."""
  try:
    name = d if isinstance(d, str) else jnp.dtype(d).name
  except TypeError:
    name = None
  if name == "float16":
    raise ValueError(f"{model}: dtype float16 needs loss scaling, which dgmjax does not "
                     f"implement; use bfloat16 (same memory, float32's exponent range)")
  if name not in allowed:
    raise ValueError(f"{model}: dtype must be one of {sorted(allowed)}; got {d!r}")
  return jnp.dtype(name)


def check_temperatures(**temperatures) -> None:
  """Each named temperature must be a finite float > 0 (traced values are not checked)."""
  for name, t in temperatures.items():
    if isinstance(t, jax.core.Tracer):
      continue
    arr = np.asarray(t)
    if arr.shape != () or arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
      raise ValueError(f"{name} must be a float > 0; got {t!r}")
    if not (np.isfinite(arr) and arr > 0):
      raise ValueError(f"{name} must be a finite float > 0; got {t!r}")


def check_finite(name: str, value) -> None:
  """A hyper-parameter that must be a finite number (no NaN/inf)."""
  if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
      np.isfinite(value)):
    raise ValueError(f"{name} must be a finite float; got {value!r}")


@dataclasses.dataclass(frozen=True)
class ImageModel:
  """Base of every model: ``image_shape`` (H, W, C) and ``num_bins`` (2..256)."""
  image_shape: tuple[int, int, int]
  num_bins: int = 256

  # Unconditional by default; a conditional subclass declares ``num_classes`` as a field.
  num_classes: Any = dataclasses.field(default=None, init=False)

  def __post_init__(self):
    object.__setattr__(self, "image_shape", images.check_image_shape(self.image_shape))
    object.__setattr__(self, "num_bins", images.check_num_bins(self.num_bins))

  def _set(self, key: str, value) -> None:
    """Sets a derived attribute on the frozen dataclass (in ``__post_init__``)."""
    object.__setattr__(self, key, value)

  @property
  def num_dims(self) -> int:
    """Dimensions the likelihood covers; bits/dim divides by it."""
    return images.num_dims(self.image_shape)

  def bits_per_dim(self, log_prob_nats):
    """-log p(x) / (num_dims ln 2) for log-likelihoods in nats (any shape)."""
    return images.bits_per_dim(log_prob_nats, self.num_dims)

  def check_images(self, x, name: str = "x"):
    """x: integer [B,H,W,C] with values in [0, num_bins); returned unchanged."""
    return images.check_images(x, self.image_shape, self.num_bins, name)

  def check_labels(self, y, batch: int | None = None):
    """``y=`` of a method: None for unconditional models; int [B] in [0, num_classes)
    for conditional ones (values checked when concrete)."""
    if self.num_classes is None:
      if y is not None:
        raise ValueError(f"{type(self).__name__} is not class-conditional (num_classes is "
                         "None); it takes no labels y")
      return None
    if y is None:
      raise ValueError(f"{type(self).__name__} is class-conditional (num_classes="
                       f"{self.num_classes}): pass labels y: int [B]")
    shape = getattr(y, "shape", None)
    if shape is None or len(shape) != 1 or (batch is not None and shape[0] != batch):
      raise ValueError(f"y must be int [B] = [{batch}]; got shape {shape}")
    if not np.issubdtype(np.dtype(y.dtype), np.integer):
      raise ValueError(f"y must hold integer class labels; got dtype {y.dtype}")
    if not isinstance(y, jax.core.Tracer) and y.size:
      lo, hi = int(np.min(np.asarray(y))), int(np.max(np.asarray(y)))
      if lo < 0 or hi >= self.num_classes:
        raise ValueError(f"y must lie in [0, {self.num_classes - 1}]; got min {lo}, max {hi}")
    return y

  @staticmethod
  def check_num(num, name: str = "num") -> int:
    return check_positive_int(num, name)

  check_temperatures = staticmethod(check_temperatures)
