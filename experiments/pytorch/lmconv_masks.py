"""Generation orders and the locally masked convolution's masks of the PyTorch LMConv
baseline (``experiments/pytorch/lmconv.py``; official ``masking.py`` of ajayjain/lmconv).

An ``order`` is an int array [H*W] of flat pixel indices ``r*W + c`` in generation order
(``raster_order``, ``s_curve_order`` build two of them). ``kernel_masks`` gives, for each
location p and kernel tap t, 1 when the neighbour p + dilation*t is inside the image and
generated strictly before p (or observed); the centre tap is 0 for the first layer ("A"),
1 afterwards ("B"). ``get_masks`` unfolds them to [k*k, H*W] in ``F.unfold``'s tap order.
"""

from __future__ import annotations

import numpy as np
import torch


def raster_order(h: int, w: int) -> np.ndarray:
  """Row by row, left to right: int64 [H*W] of flat indices r*W + c."""
  return np.arange(h * w, dtype=np.int64)


def s_curve_order(h: int, w: int) -> np.ndarray:
  """Rows top to bottom, even rows left to right, odd rows right to left: [H*W]."""
  grid = np.arange(h * w, dtype=np.int64).reshape(h, w)
  grid[1::2] = grid[1::2, ::-1]
  return grid.reshape(-1)


def check_order(order, h: int, w: int) -> np.ndarray:
  """Returns ``order`` as int64 [H*W] if it is a permutation of range(H*W), else ValueError."""
  arr = np.asarray(order)
  if arr.shape != (h * w,) or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"order must be an int array [H*W] = [{h * w}] of flat pixel indices; "
                     f"got shape {arr.shape}, dtype {arr.dtype}")
  if not np.array_equal(np.sort(arr), np.arange(h * w)):
    raise ValueError(f"order must be a permutation of range({h * w})")
  return arr.astype(np.int64)


def kernel_masks(order, h: int, w: int, k: int = 3, dilation: int = 1, mask_type: str = "B",
                 observed=None) -> np.ndarray:
  """Per-location k x k masks for one generation order (official ``kernel_masks``).

  mask[p, i, j] = 1 iff the neighbour q = (r + (i - k//2) d, c + (j - k//2) d) of
  p = (r, c) lies inside the image and rank(q) < rank(p) or q is observed; the centre is
  1 for mask type "B" and 0 for "A". Taps over the zero padding are 0.

  Args:
    order: int [H*W] flat indices in generation order.
    observed: optional bool [H*W] (flat, row-major) of pixels every location may see.

  Returns:
    float32 [H*W, k, k], indexed by the row-major location p = r*W + c.
  """
  if k % 2 != 1:
    raise ValueError(f"kernel size must be odd; got {k}")
  if mask_type not in ("A", "B"):
    raise ValueError(f"mask_type must be 'A' or 'B'; got {mask_type!r}")
  order = check_order(order, h, w)
  rank = np.empty(h * w, np.int64)
  rank[order] = np.arange(h * w)
  rank = rank.reshape(h, w)
  seen = np.zeros((h, w), bool) if observed is None else np.asarray(observed, bool).reshape(h, w)
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  half = k // 2
  masks = np.zeros((h, w, k, k), np.float32)
  for i in range(k):
    for j in range(k):
      if i == half and j == half:
        continue
      qr, qc = rows + (i - half) * dilation, cols + (j - half) * dilation
      inside = (qr >= 0) & (qr < h) & (qc >= 0) & (qc < w)
      qr_c, qc_c = np.clip(qr, 0, h - 1), np.clip(qc, 0, w - 1)
      earlier = (rank[qr_c, qc_c] < rank) | seen[qr_c, qc_c]
      masks[:, :, i, j] = inside & earlier
  masks[:, :, half, half] = 1.0 if mask_type == "B" else 0.0
  return masks.reshape(h * w, k, k)


def get_masks(order, h: int, w: int, k: int = 3, max_dilation: int = 2, observed=None):
  """(mask_init, mask_undilated, mask_dilated), each float32 tensor [k*k, H*W].

  Type A for the first layer, type B for the others, type B with ``max_dilation`` for
  the dilated layers; taps in ``F.unfold`` order (row-major over the kernel).
  """
  def unfolded(dilation, mask_type):
    m = kernel_masks(order, h, w, k, dilation, mask_type, observed)
    return torch.from_numpy(np.ascontiguousarray(m.reshape(h * w, k * k).T))
  mask_init = unfolded(1, "A")
  mask_undilated = unfolded(1, "B")
  mask_dilated = mask_undilated if max_dilation == 1 else unfolded(max_dilation, "B")
  return mask_init, mask_undilated, mask_dilated
