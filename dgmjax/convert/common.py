"""Safe reading of PyTorch state_dicts and strict key-by-key consumption.

PyTorch files are opened with ``torch.load(path, weights_only=True,
map_location="cpu")``: no arbitrary object is ever unpickled. Only the extra types a
real official checkpoint needs are allow-listed (NVAE stores its
``argparse.Namespace`` of arguments). torch is imported only when a path is given.

Integrity: a zip-based file (PyTorch >= 1.6) has every member's CRC-32 checked first
(``zipfile.ZipFile.testzip``), since ``torch.load`` reads a corrupted member without
complaint; every floating-point tensor taken from a state_dict must be finite. Both are
ValueErrors naming the member or key. ``check_model(model, name, who)`` refuses a model
of the wrong kind (e.g. an LMConv model given to ``load_glow``).
"""

from __future__ import annotations

import argparse
import os
import zipfile
from typing import Any, Iterable, Mapping

import numpy as np


def to_numpy(value) -> np.ndarray:
  """A torch tensor or array-like -> a float32/int numpy array (on CPU)."""
  if hasattr(value, "detach"):
    value = value.detach().cpu()
    if str(value.dtype).startswith("torch.bfloat16"):
      value = value.float()
    value = value.numpy()
  return np.asarray(value)


def load_checkpoint(path_or_dict, *, state_dict_key: str | None = None) -> dict[str, Any]:
  """Loads a checkpoint file (or passes a mapping through) without unpickling code.

  Args:
    path_or_dict: a ``.pt``/``.pth`` path, or an already-loaded mapping.
    state_dict_key: when the file holds a dict with the weights under this key (NVAE
      stores ``{"state_dict": ..., "args": Namespace, ...}``), it is returned whole
      and the caller picks the key.

  Returns:
    The loaded mapping (tensors left as they are).

  Raises:
    ValueError: the file is empty, truncated, or holds something other than
      allow-listed types.
  """
  if isinstance(path_or_dict, Mapping):
    return unwrap_parallel(path_or_dict)
  path = os.fspath(path_or_dict)
  if os.path.isdir(path):
    pts = sorted(f for f in os.listdir(path) if f.endswith((".pt", ".pth")))
    raise ValueError(f"{path} is a directory; give the checkpoint file inside it"
                     + (f" (it holds {', '.join(pts[:5])})" if pts else " (it holds no .pt file)"))
  if not os.path.exists(path):
    raise ValueError(f"checkpoint file not found: {path}")
  if os.path.isfile(path) and os.path.getsize(path) == 0:
    raise ValueError(f"{path} is empty (0 bytes): an interrupted download or copy? "
                     f"fetch the file again")
  check_zip_integrity(path)
  try:
    import torch
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ValueError("reading a PyTorch checkpoint needs torch: pip install 'dgmjax[torch]'") from e
  safe = [argparse.Namespace]
  try:
    with torch.serialization.safe_globals(safe):
      obj = torch.load(path, weights_only=True, map_location="cpu")
  except Exception as e:  # torch raises UnpicklingError with its own explanation
    if _truncated(path, e):
      raise ValueError(f"{path} is truncated (it ends after {os.path.getsize(path)} "
                       f"bytes): an interrupted download or copy? fetch the file again"
                       ) from None
    raise ValueError(f"refusing to load {path}: it holds objects outside the allow-list "
                     f"(tensors, containers, argparse.Namespace): {e}") from None
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path} holds a {type(obj).__name__}, expected a dict (a state_dict)")
  del state_dict_key
  return unwrap_parallel(obj)


PARALLEL_PREFIX = "module."


def unwrap_parallel(obj: Mapping) -> dict:
  """The mapping with ``torch.nn.DataParallel``'s / ``DistributedDataParallel``'s key
  prefix ``module.`` removed, at the top level and in every nested mapping, where ALL of
  that mapping's keys carry it (rosinality/glow-pytorch's train.py saves
  ``DataParallel(model).state_dict()``; the official LMConv and NVAE scripts can wrap
  their models too). A mapping where only some keys carry it is left as it is (its keys
  are then reported as unexpected, never silently dropped)."""
  def strip(d):
    keys = list(d)
    if keys and all(isinstance(k, str) and k.startswith(PARALLEL_PREFIX) for k in keys):
      return {k[len(PARALLEL_PREFIX):]: v for k, v in d.items()}
    return dict(d)
  return {k: strip(v) if isinstance(v, Mapping) else v for k, v in strip(obj).items()}


def _truncated(path: str, e: Exception) -> bool:
  """Whether torch.load's error ``e`` means the file ends early (not a refused object):
  a zip header without the central directory at the end, or an early end of data."""
  with open(path, "rb") as f:
    zip_head = f.read(4) == b"PK\x03\x04"
  if zip_head and not zipfile.is_zipfile(path):
    return True
  text = str(e)
  return isinstance(e, EOFError) or "unexpected EOF" in text or "Ran out of input" in text


def check_zip_integrity(path) -> None:
  """Raises ValueError if ``path`` is a zip archive (PyTorch's default format) with a
  member whose CRC-32 does not match, or that cannot be read; other files pass."""
  path = os.fspath(path)
  if not zipfile.is_zipfile(path):
    return
  try:
    with zipfile.ZipFile(path) as zf:
      bad = zf.testzip()
  except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
    raise ValueError(f"{path} is a corrupted zip-based checkpoint: {e}") from None
  if bad is not None:
    raise ValueError(f"{path} is corrupted: member {bad!r} fails its CRC-32 check")


def check_model(model, name: str, who: str) -> None:
  """Raises ValueError unless ``model`` is a dgmjax model whose ``name`` is ``name``."""
  got = getattr(model, "name", None)
  if got != name:
    raise ValueError(f"{who} needs a dgmjax {name!r} model (models.create({name!r}, ...)); "
                     f"got {type(model).__name__}" + (f" ({got!r})" if got else ""))


class StateDict:
  """A state_dict consumed key by key; unknown, missing or mis-shaped keys are errors.

  ``take(key, shape)`` returns the array and marks it used; ``finish()`` raises if any
  key was never taken (a silent partial load is impossible).
  """

  def __init__(self, tensors: Mapping[str, Any], ignore: Iterable[str] = ()):
    self._arrays = {k: to_numpy(v) for k, v in tensors.items()}
    self._used: set[str] = set()
    self._ignore = tuple(ignore)

  def __contains__(self, key: str) -> bool:
    return key in self._arrays

  def keys(self):
    return self._arrays.keys()

  def take(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if key not in self._arrays:
      raise ValueError(f"missing key in state_dict: {key!r}")
    arr = self._arrays[key]
    if shape is not None and tuple(arr.shape) != tuple(shape):
      raise ValueError(f"key {key!r} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
      raise ValueError(f"key {key!r} holds non-finite values (NaN or inf): "
                       f"{int(np.sum(~np.isfinite(arr)))} of {arr.size}")
    self._used.add(key)
    return arr

  def skip(self, key: str) -> None:
    """Marks a key (e.g. a buffer recomputed by dgmjax) as deliberately unused."""
    if key not in self._arrays:
      raise ValueError(f"missing key in state_dict: {key!r}")
    self._used.add(key)

  def finish(self) -> None:
    left = sorted(k for k in self._arrays if k not in self._used
                  and not any(k.endswith(s) for s in self._ignore))
    if left:
      raise ValueError(f"unexpected keys in state_dict ({len(left)}): {left[:10]}")


def torch_conv_to_flax(w: np.ndarray) -> np.ndarray:
  """PyTorch conv kernel [O,I,kh,kw] -> Flax HWIO [kh,kw,I,O]."""
  return np.transpose(w, (2, 3, 1, 0))


def flax_conv_to_torch(w: np.ndarray) -> np.ndarray:
  """Flax HWIO [kh,kw,I,O] -> PyTorch [O,I,kh,kw]."""
  return np.transpose(np.asarray(w), (3, 2, 0, 1))
