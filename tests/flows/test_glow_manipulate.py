"""Latent-space edits (``dgmjax.latents``) and Glow's semantic manipulation.

- ``attribute_direction`` on known latents is the difference of the two masked means
  (numpy), and the batched path (``masked_latent_sums`` over chunks with weight-0
  padding, then ``direction_from_sums``) gives the same direction; ``shift_latents``
  orders its rows image by image; all with and without ``jax.jit`` (``chex.variants``).
- A tiny two-level Glow with perturbed parameters: decode(encode(y)) = y within 1e-5 in
  float32 (y dequantised images); the direction of the encoded images is the difference
  of their mean latents; ``GlowModel.manipulate`` decodes z + alpha d (alpha = 0 gives
  the images back).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

import dgmjax
from dgmjax import images, latents
from tests.flows.glow_util import fast_jit, perturb


def _known():
  """Two levels of latents for B = 5 images, the attribute on images 0, 3 and 4."""
  rs = np.random.RandomState(0)
  zs = [rs.standard_normal((5, 2, 2, 3)).astype(np.float32),
        rs.standard_normal((5, 4)).astype(np.float32)]
  mask = np.array([True, False, False, True, True])
  return zs, mask


class LatentsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_direction_is_the_difference_of_masked_means(self):
    zs, mask = _known()
    d = self.variant(latents.attribute_direction)(zs, mask)
    want = [z[mask].mean(0) - z[~mask].mean(0) for z in zs]
    chex.assert_trees_all_close(d, want, rtol=1e-6, atol=1e-6)
    chex.assert_shape(d, [(2, 2, 3), (4,)])
    # chunks of 2 with a weight-0 padding row give the same direction
    sums = self.variant(latents.masked_latent_sums)
    pos = neg = None
    for s in range(0, 5, 2):
      z = [np.concatenate([a[s:s + 2], np.full((2 - len(a[s:s + 2]),) + a.shape[1:], 9.0,
                                                 np.float32)]) for a in zs]
      m = np.zeros(2, np.float32)
      m[:len(mask[s:s + 2])] = mask[s:s + 2]
      valid = (np.arange(2) < len(mask[s:s + 2])).astype(np.float32)
      p, n = sums(z, m), sums(z, valid - m)
      pos = p if pos is None else jax.tree_util.tree_map(jnp.add, pos, p)
      neg = n if neg is None else jax.tree_util.tree_map(jnp.add, neg, n)
    chex.assert_trees_all_close(float(pos[1]), 3.0)
    chex.assert_trees_all_close(float(neg[1]), 2.0)
    chex.assert_trees_all_close(latents.direction_from_sums(*pos, *neg), want,
                                rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_shift_latents_orders_rows_image_by_image(self):
    zs, _ = _known()
    d = [np.ones(z.shape[1:], np.float32) * (i + 1) for i, z in enumerate(zs)]
    alphas = np.array([-1.0, 0.0, 2.0], np.float32)
    out = self.variant(latents.shift_latents)(zs, d, alphas)
    chex.assert_shape(out, [(15, 2, 2, 3), (15, 4)])
    for level, (z, o) in enumerate(zip(zs, out)):
      for b in range(5):
        for k, a in enumerate(alphas):
          chex.assert_trees_all_close(o[b * 3 + k], z[b] + a * (level + 1), rtol=1e-6)


def _tiny_glow():
  model = dgmjax.models.create("glow", (8, 8, 1), 17, levels=2, steps=1, width=8)
  x = jax.random.randint(jax.random.PRNGKey(0), (6, 8, 8, 1), 0, 17).astype(jnp.uint8)
  v = perturb(fast_jit(model.init)(jax.random.PRNGKey(1), x), seed=2)
  return model, v, x


def test_glow_round_trip_and_manipulation():
  model, v, x = _tiny_glow()
  y = images.dequantize(jax.random.PRNGKey(3), x, 17)
  mask = np.array([True, True, False, False, True, False])
  alphas = jnp.asarray([-1.0, 0.0, 0.5])

  @fast_jit
  def run(v, y):
    zs, _ = model.encode(v, y)
    d = latents.attribute_direction(zs, mask)
    both = [jnp.concatenate([z, z + 0.5 * e]) for z, e in zip(zs, d)]
    return zs, d, model.decode(v, both), model.manipulate(v, y, d, alphas)

  zs, d, both, grid = run(v, y)
  y_back, half = both[:6], images.quantize(both[6:], 17)
  assert y_back.dtype == jnp.float32
  chex.assert_trees_all_close(y_back, y, atol=1e-5, rtol=0)
  chex.assert_shape(zs, [(6,) + s for s in model.latent_shapes()])
  want = [np.asarray(z)[mask].mean(0) - np.asarray(z)[~mask].mean(0) for z in zs]
  chex.assert_trees_all_close(d, want, rtol=1e-5, atol=1e-6)
  assert grid.shape == (6, 3, 8, 8, 1) and grid.dtype == jnp.uint8
  chex.assert_trees_all_equal(grid[:, 1], x)            # alpha = 0: the images themselves
  chex.assert_trees_all_equal(grid[:, 2], half)
  assert bool(jnp.any(grid[:, 0] != x))
