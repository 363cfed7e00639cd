"""Orders are permutations with the advertised geometry; masks admit exactly the
earlier in-image taps (checked against a direct loop and against order-free counts)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.lmconv import masks, orders

SHAPES = [(4, 4), (5, 7), (8, 8), (7, 4)]


def _steps(order, w):
  r, c = np.divmod(order, w)
  return np.maximum(np.abs(np.diff(r)), np.abs(np.diff(c))), np.abs(np.diff(r)) + np.abs(np.diff(c))


@pytest.mark.parametrize("name", orders.NAMES)
@pytest.mark.parametrize("shape", SHAPES)
def test_named_orders_are_permutations_with_their_geometry(name, shape):
  h, w = shape
  if name == "hilbert" and (h != w or h & (h - 1)):
    with pytest.raises(ValueError, match="power-of-two"):
      orders.named(name, h, w)
    return
  variants = [orders.named(name, h, w, v) for v in range(8)]
  for o in variants:
    np.testing.assert_array_equal(np.sort(o), np.arange(h * w))
    cheb, manhattan = _steps(o, w)
    if name in ("s_curve", "hilbert"):
      assert np.all(manhattan == 1)              # each step moves to a 4-neighbour
    if name == "gilbert":
      assert np.all(cheb == 1)                   # 8-neighbours (a diagonal step when odd)
  # the eight reflections/transposes are different orders (images here are >= 4x4),
  # except that gilbert follows the long side, so on a non-square image its transposed
  # variants repeat the others
  distinct = len({tuple(o) for o in variants})
  assert distinct == (4 if name == "gilbert" and h != w else 8)


def test_variants_are_reflections_and_transposes():
  h, w = 5, 7
  base = orders.named("s_curve", h, w, 0)
  rc = np.stack(np.divmod(base, w), 1)
  flip_rows = (h - 1 - rc[:, 0]) * w + rc[:, 1]
  np.testing.assert_array_equal(orders.named("s_curve", h, w, 1), flip_rows)
  np.testing.assert_array_equal(orders.named("s_curve", h, w, 3),
                                (h - 1 - rc[:, 0]) * w + (w - 1 - rc[:, 1]))
  # variant 4 is the [w, h] s-curve transposed: its first column is walked top-down
  t = orders.named("s_curve", h, w, 4)
  np.testing.assert_array_equal(t[:h], np.arange(h) * w)
  np.testing.assert_array_equal(orders.named("raster", 3, 3), np.arange(9))
  np.testing.assert_array_equal(orders.named("s_curve", 2, 3), [0, 1, 2, 5, 4, 3])


# The official orders' first steps as (row, col), computed with ajayjain/lmconv's
# ``masking.hilbert_idx`` (hilbertcurve==1.0.3, its pinned version) and ``gilbert2d_idx``.
OFFICIAL_HILBERT_8X8 = [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (0, 3), (1, 3), (1, 2),
                        (2, 2), (2, 3), (3, 3), (3, 2), (3, 1), (2, 1), (2, 0), (3, 0)]
OFFICIAL_HILBERT_4X4 = [(0, 0), (0, 1), (1, 1), (1, 0), (2, 0), (3, 0), (3, 1), (2, 1),
                        (2, 2), (3, 2), (3, 3), (2, 3), (1, 3), (1, 2), (0, 2), (0, 3)]
OFFICIAL_GILBERT_5X5 = [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (0, 3), (0, 4), (1, 4),
                        (1, 3), (1, 2)]


@pytest.mark.parametrize("name,n,expected", [("hilbert", 8, OFFICIAL_HILBERT_8X8),
                                             ("hilbert", 4, OFFICIAL_HILBERT_4X4),
                                             ("gilbert", 5, OFFICIAL_GILBERT_5X5)])
def test_variant_zero_is_the_official_order(name, n, expected):
  order = orders.named(name, n, n, 0)
  rc = [tuple(int(v) for v in divmod(int(p), n)) for p in order[:len(expected)]]
  assert rc == expected
  # the transposed variant is not the official one (the former bug)
  t = orders.named(name, n, n, 4)
  assert [tuple(int(v) for v in divmod(int(p), n)) for p in t[:len(expected)]] != expected


def test_validation_and_specs():
  with pytest.raises(ValueError, match="permutation"):
    orders.validate([0, 0, 1, 2], 2, 2)
  with pytest.raises(ValueError, match="H\\*W"):
    orders.validate(np.arange(5), 2, 2)
  with pytest.raises(ValueError, match="H\\*W"):
    orders.validate(np.arange(4.0), 2, 2)
  with pytest.raises(ValueError, match="unknown order"):
    orders.named("zigzag", 4, 4)
  with pytest.raises(ValueError, match="variant"):
    orders.named("raster", 4, 4, 8)
  with pytest.raises(ValueError, match="bad order spec"):
    orders.parse("raster:x", 4, 4)
  assert len(orders.parse("s_curve:all", 4, 4)) == 8
  np.testing.assert_array_equal(orders.parse("s_curve:2", 4, 4)[0],
                                orders.named("s_curve", 4, 4, 2))
  perm = np.random.default_rng(0).permutation(16)
  np.testing.assert_array_equal(orders.parse_all(["raster", perm], 4, 4)[1], perm)
  with pytest.raises(ValueError, match="tuple"):
    orders.parse_all("raster", 4, 4)


def test_observed_first_is_a_stable_partition():
  h, w = 6, 5
  rng = np.random.default_rng(1)
  base = rng.permutation(h * w).astype(np.int32)
  observed = rng.random((h, w)) < 0.4
  comp = orders.observed_first(base, observed)
  n_obs = observed.sum()
  flat = observed.reshape(-1)
  assert flat[comp[:n_obs]].all() and not flat[comp[n_obs:]].any()
  np.testing.assert_array_equal(comp[:n_obs], [p for p in base if flat[p]])
  np.testing.assert_array_equal(comp[n_obs:], [p for p in base if not flat[p]])
  np.testing.assert_array_equal(np.asarray(orders.observed_first(jnp.asarray(base),
                                                                 jnp.asarray(observed))), comp)
  last = orders.center_last("s_curve", 8, 8)
  centre = {r * 8 + c for r in range(2, 6) for c in range(2, 6)}
  assert set(last[-16:].tolist()) == centre


def _loop_masks(order, h, w, k, d, center):
  rank = orders.ranks(np.asarray(order)).reshape(h, w)
  out = np.zeros((h, w, k, k), np.float32)
  for r in range(h):
    for c in range(w):
      for i in range(k):
        for j in range(k):
          rr, cc = r + (i - k // 2) * d, c + (j - k // 2) * d
          if (i, j) == (k // 2, k // 2):
            out[r, c, i, j] = center
          elif 0 <= rr < h and 0 <= cc < w and rank[rr, cc] < rank[r, c]:
            out[r, c, i, j] = 1
  return out


def _pairs(h, w, d):
  """Unordered in-image pairs at offsets d*(dr, dc) of a 3x3 kernel (8-neighbourhood)."""
  return (h * max(w - d, 0) + max(h - d, 0) * w + 2 * max(h - d, 0) * max(w - d, 0))


@pytest.mark.parametrize("order_name", ["raster", "s_curve:5", "hilbert:3", "gilbert:6", "random"])
def test_masks_match_definition_and_counts(order_name):
  h = w = 8
  order = (np.random.default_rng(2).permutation(64) if order_name == "random"
           else orders.parse(order_name, h, w)[0])
  first, later, dilated = (np.asarray(m) for m in masks.network_masks(order, h, w, 3, 2))
  np.testing.assert_array_equal(first, _loop_masks(order, h, w, 3, 1, 0))
  np.testing.assert_array_equal(later, _loop_masks(order, h, w, 3, 1, 1))
  np.testing.assert_array_equal(dilated, _loop_masks(order, h, w, 3, 2, 1))
  # of each in-image pair of neighbours exactly one is earlier: counts are order-free
  assert first.sum() == _pairs(h, w, 1)
  assert later.sum() == _pairs(h, w, 1) + h * w
  assert dilated.sum() == _pairs(h, w, 2) + h * w
  r0, c0 = divmod(int(order[0]), w)
  assert first[r0, c0].sum() == 0                 # the first pixel sees nothing
  k5 = np.asarray(masks.kernel_masks(order, h, w, 5, 1, False))
  np.testing.assert_array_equal(k5, _loop_masks(order, h, w, 5, 1, 0))


def test_raster_interior_mask_is_pixelcnn_mask_a():
  first = np.asarray(masks.kernel_masks(orders.named("raster", 5, 5), 5, 5))
  np.testing.assert_array_equal(first[2, 2], [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
  batched = masks.kernel_masks(np.stack([orders.named("raster", 5, 5)] * 2), 5, 5)
  assert batched.shape == (2, 5, 5, 3, 3)
  with pytest.raises(ValueError, match="odd"):
    masks.kernel_masks(orders.named("raster", 5, 5), 5, 5, kernel_size=2)
