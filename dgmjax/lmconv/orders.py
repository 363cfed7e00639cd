"""Pixel generation orders for locally masked PixelCNNs.

An order is an int32 array ``[H*W]`` of flat pixel indices ``r * W + c`` in the order
the pixels are generated (all channels of a pixel are generated together). Its inverse,
``ranks(order)`` (``[H, W]``, the position of each pixel in the order), is what the masks
are built from.

Named orders (Jain, Abbeel & Pathak 2020, "Locally Masked Convolution for Autoregressive
Models"; ajayjain/lmconv ``masking.py``):

- ``raster``: row by row, left to right.
- ``s_curve``: row by row, alternating left-to-right and right-to-left (boustrophedon).
- ``hilbert``: the Hilbert space-filling curve; square power-of-two images only.
- ``gilbert``: the generalised Hilbert curve of J. Cervený (``gilbert2d``), any rectangle.

Each has eight variants (``variant`` 0..7, ajayjain/lmconv ``augment_orders``): the
identity, reflected rows, reflected columns, both, and the same four applied after a
transpose. For a non-square image the transposed variants are the base curve of the
``[W, H]`` image transposed, so all eight exist for every shape.

A spec string names orders for configs: ``"s_curve"`` (variant 0), ``"s_curve:3"``
(variant 3) or ``"s_curve:all"`` (the eight variants); ``parse`` expands specs and
validates user permutations.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

NAMES = ("raster", "s_curve", "hilbert", "gilbert")
NUM_VARIANTS = 8


def _raster_rc(h: int, w: int) -> np.ndarray:
  r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  return np.stack([r.ravel(), c.ravel()], axis=1)


def _s_curve_rc(h: int, w: int) -> np.ndarray:
  rc = _raster_rc(h, w).reshape(h, w, 2)
  rc[1::2] = rc[1::2, ::-1]
  return rc.reshape(h * w, 2)


def _hilbert_rc(h: int, w: int) -> np.ndarray:
  """Hilbert curve on an n x n grid (n a power of two), as (row, col) pairs.

  Distance d -> (x, y) by the classic quadrant-by-quadrant construction: at each scale s
  the two bits of d pick a quadrant (rx, ry); the lower-scale coordinates are rotated or
  reflected so consecutive quadrants join. The pair is read as (col, row) = (x, y), which
  is the official order: ajayjain/lmconv ``masking.hilbert_idx`` takes
  ``hilbertcurve==1.0.3``'s ``coordinates_from_distance(d) = (x0, x1)`` as
  (col, row) = (x0, x1), and this construction gives the same curve. Variant 0 starts at
  the top-left pixel; its first step is down for n = 2, 8, 32, ... and right for
  n = 4, 16, 64, ... (the orientation alternates with log2 n), e.g. for 8 x 8 it starts
  (0,0) (1,0) (1,1) (0,1) (0,2) (0,3) (1,3) (1,2) (2,2) in (row, col).
  """
  if h != w or h & (h - 1):
    raise ValueError(f"the hilbert order needs a square power-of-two image; got {h}x{w} "
                     f"(use 'gilbert' for other shapes)")
  n = h
  out = np.zeros((n * n, 2), np.int64)
  for d in range(n * n):
    x = y = 0
    t = d
    s = 1
    while s < n:
      rx = 1 & (t // 2)
      ry = 1 & (t ^ rx)
      if ry == 0:
        if rx == 1:
          x, y = s - 1 - x, s - 1 - y
        x, y = y, x
      x += s * rx
      y += s * ry
      t //= 4
      s *= 2
    out[d] = (y, x)
  return out


def _sign(v: int) -> int:
  return (v > 0) - (v < 0)


def _gilbert_xy(x, y, ax, ay, bx, by, out):
  """Appends the generalised Hilbert curve filling the parallelogram spanned by the
  major axis (ax, ay) and minor axis (bx, by) from (x, y) (J. Cervený, gilbert2d).

  The rectangle is halved along its long side (or split in three when it is not much
  longer than wide), halves chosen even when possible so that sub-curves meet at
  adjacent cells; a single row or column is walked straight.
  """
  w, h = abs(ax + ay), abs(bx + by)
  dax, day, dbx, dby = _sign(ax), _sign(ay), _sign(bx), _sign(by)
  if h == 1:
    out.extend((x + i * dax, y + i * day) for i in range(w))
    return
  if w == 1:
    out.extend((x + i * dbx, y + i * dby) for i in range(h))
    return
  ax2, ay2, bx2, by2 = ax // 2, ay // 2, bx // 2, by // 2
  w2, h2 = abs(ax2 + ay2), abs(bx2 + by2)
  if 2 * w > 3 * h:
    if w2 % 2 and w > 2:
      ax2, ay2 = ax2 + dax, ay2 + day
    _gilbert_xy(x, y, ax2, ay2, bx, by, out)
    _gilbert_xy(x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by, out)
  else:
    if h2 % 2 and h > 2:
      bx2, by2 = bx2 + dbx, by2 + dby
    _gilbert_xy(x, y, bx2, by2, ax2, ay2, out)
    _gilbert_xy(x + bx2, y + by2, ax, ay, bx - bx2, by - by2, out)
    _gilbert_xy(x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby),
                -bx2, -by2, -(ax - ax2), -(ay - ay2), out)


def _gilbert_rc(h: int, w: int) -> np.ndarray:
  """The generalised Hilbert curve on h x w as (row, col) pairs, major axis along the
  longer side and along the rows for a square (ajayjain/lmconv calls
  ``gilbert2d_idx(rows, cols)`` and reads its (x, y) as (row, col))."""
  out: list = []
  if w > h:
    _gilbert_xy(0, 0, w, 0, 0, h, out)
  else:
    _gilbert_xy(0, 0, 0, h, w, 0, out)
  return np.array([(y, x) for x, y in out], np.int64)


_BASES = {"raster": _raster_rc, "s_curve": _s_curve_rc, "hilbert": _hilbert_rc,
          "gilbert": _gilbert_rc}


def _check_hw(h, w):
  if not all(isinstance(d, (int, np.integer)) and d > 0 for d in (h, w)):
    raise ValueError(f"image height and width must be positive ints; got {h!r}, {w!r}")
  return int(h), int(w)


def named(name: str, h: int, w: int, variant: int = 0) -> np.ndarray:
  """The named order ``name`` (one of ``NAMES``) on an h x w image, variant 0..7.

  Variants follow ajayjain/lmconv ``augment_orders``: 0 identity, 1 rows reflected,
  2 columns reflected, 3 both, 4..7 the same after a transpose. Returns int32 [h*w].
  """
  h, w = _check_hw(h, w)
  if name not in _BASES:
    raise ValueError(f"unknown order {name!r}; expected one of {NAMES}")
  if not isinstance(variant, (int, np.integer)) or not 0 <= variant < NUM_VARIANTS:
    raise ValueError(f"order variant must be an int in [0, {NUM_VARIANTS}); got {variant!r}")
  if variant >= 4:
    rc = _BASES[name](w, h)[:, ::-1].copy()   # the [w, h] curve, transposed
  else:
    rc = _BASES[name](h, w)
  if variant % 4 in (1, 3):
    rc[:, 0] = h - 1 - rc[:, 0]
  if variant % 4 in (2, 3):
    rc[:, 1] = w - 1 - rc[:, 1]
  return (rc[:, 0] * w + rc[:, 1]).astype(np.int32)


def validate(order, h: int, w: int) -> np.ndarray:
  """Checks that ``order`` is a permutation of range(h*w); returns it as int32 [h*w]."""
  h, w = _check_hw(h, w)
  arr = np.asarray(order)
  if arr.shape != (h * w,) or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
    raise ValueError(f"an order must be an int array [H*W] = [{h * w}] of flat pixel "
                     f"indices; got shape {arr.shape}, dtype {arr.dtype}")
  if not np.array_equal(np.sort(arr), np.arange(h * w)):
    raise ValueError(f"an order must be a permutation of range({h * w}) (each flat pixel "
                     f"index r*W+c exactly once)")
  return arr.astype(np.int32)


def parse(spec, h: int, w: int) -> list[np.ndarray]:
  """Expands one order spec into a list of orders (int32 [h*w] each).

  ``spec``: ``"NAME"``, ``"NAME:K"`` (variant K), ``"NAME:all"`` (8 variants), or a
  permutation (int sequence of length h*w).
  """
  if isinstance(spec, str):
    name, _, var = spec.partition(":")
    if var == "all":
      return [named(name, h, w, v) for v in range(NUM_VARIANTS)]
    if var == "":
      return [named(name, h, w, 0)]
    if not var.isdigit():
      raise ValueError(f"bad order spec {spec!r}; expected 'NAME', 'NAME:K' (K in 0..7) "
                       f"or 'NAME:all' with NAME in {NAMES}")
    return [named(name, h, w, int(var))]
  return [validate(spec, h, w)]


def parse_all(specs: Iterable, h: int, w: int) -> np.ndarray:
  """Expands a sequence of specs into int32 [N, h*w] (see ``parse``)."""
  if isinstance(specs, str) or not isinstance(specs, (tuple, list)):
    raise ValueError(f"orders must be a tuple of order specs (e.g. ('s_curve',) or "
                     f"('s_curve:all',)); got {specs!r}")
  out = [o for s in specs for o in parse(s, h, w)]
  if not out:
    raise ValueError("orders must name at least one order")
  return np.stack(out)


def ranks(order):
  """Inverse permutation: int32 [H*W] with ``ranks(order)[order[t]] == t``.

  Works on numpy and (traced) jax arrays; reshape to [H, W] for a rank image.
  """
  if isinstance(order, np.ndarray):
    out = np.empty_like(order)
    out[order] = np.arange(order.size, dtype=order.dtype)
    return out
  import jax.numpy as jnp
  n = order.shape[-1]
  return jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))


def region_last(order, region):
  """Stable reordering of ``order`` that moves the pixels where ``region`` is True last.

  order: int [H*W]; region: bool [H, W] (or [H*W]). The pixels outside the region keep
  their relative order and come first; those inside follow, also in their relative
  order. With ``region = ~observed`` this is the completion order: every observed pixel
  is generated (i.e. conditioned on) before any hidden one. Works on numpy or traced jax
  arrays (then with a jax argsort).
  """
  if isinstance(order, np.ndarray) and isinstance(region, np.ndarray):
    flat = region.reshape(-1).astype(bool)
    if flat.size != order.size:
      raise ValueError(f"region must have H*W = {order.size} entries; got shape {region.shape}")
    key = flat[order]
    return order[np.argsort(key, kind="stable")].astype(np.int32)
  import jax.numpy as jnp
  flat = jnp.reshape(region, (-1,)).astype(jnp.int32)
  key = flat[order]
  return order[jnp.argsort(key, stable=True)].astype(jnp.int32)


def observed_first(order, observed):
  """The completion order: ``order`` with the pixels where ``observed`` is True first."""
  return region_last(order, ~observed.astype(bool))


def center_last(name: str, h: int, w: int, variant: int = 0) -> np.ndarray:
  """The named order with the central (h/2 x w/2) block last (the paper's
  ``s_curve_center_quarter_last``)."""
  region = np.zeros((h, w), bool)
  region[h // 4: h - h // 4, w // 4: w - w // 4] = True
  return region_last(named(name, h, w, variant), region)
