"""The init-time PRNG (``dgmjax.nn.init.INIT_PRNG``): deterministic, and statistically
sound enough for initial weights: moments of its uniforms and normals, balanced bits,
uncorrelated sibling streams after split and fold_in, no key collisions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.nn.init import INIT_PRNG, fast_init_key

N = 1_000_000


def test_key_is_deterministic_and_of_the_init_impl():
  a, b = fast_init_key(jax.random.PRNGKey(3)), fast_init_key(jax.random.PRNGKey(3))
  assert jax.random.key_impl(a) == INIT_PRNG
  np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
  assert fast_init_key(a) is a
  c = fast_init_key(jax.random.PRNGKey(4))
  assert not np.array_equal(jax.random.key_data(a), jax.random.key_data(c))


def test_uniform_and_normal_moments():
  k = fast_init_key(jax.random.PRNGKey(0))
  u = np.asarray(jax.random.uniform(k, (N,)), np.float64)
  # 5-sigma bounds for the sample mean and variance of U(0,1)
  assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / N)
  assert abs(u.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / N)
  hist, _ = np.histogram(u, bins=100, range=(0, 1))
  chi2 = float(np.sum((hist - N / 100) ** 2 / (N / 100)))
  assert chi2 < 99 + 5 * np.sqrt(2 * 99)          # chi-square, 99 degrees of freedom
  z = np.asarray(jax.random.normal(jax.random.fold_in(k, 1), (N,)), np.float64)
  assert abs(z.mean()) < 5 / np.sqrt(N) and abs(z.std() - 1) < 5 / np.sqrt(2 * N)
  assert abs(np.mean(z ** 4) - 3) < 0.05


def test_bits_are_balanced():
  bits = np.asarray(jax.random.bits(fast_init_key(jax.random.PRNGKey(1)), (N // 10,)))
  freq = np.array([np.mean((bits >> i) & 1) for i in range(32)])
  assert np.all(np.abs(freq - 0.5) < 5 * 0.5 / np.sqrt(N // 10))


def test_split_and_fold_in_streams_are_uncorrelated():
  k = fast_init_key(jax.random.PRNGKey(2))
  for keys in (jax.random.split(k, 256),
               jax.vmap(lambda i: jax.random.fold_in(k, i))(jnp.arange(256))):
    data = np.asarray(jax.random.key_data(keys))
    assert len({tuple(r) for r in data}) == 256        # no two siblings share a key
    u = np.asarray(jax.vmap(lambda kk: jax.random.uniform(kk, (4096,)))(keys), np.float64)
    corr = np.corrcoef(u)[np.triu_indices(256, 1)]
    assert np.max(np.abs(corr)) < 6 / np.sqrt(4096)     # 32640 pairs, null sd 1/64
    assert abs(corr.mean()) < 1e-3                      # its sd: ~1/64/sqrt(32640) = 9e-5


def test_glow_init_draws_the_stated_distribution():
  import dgmjax
  model = dgmjax.models.create("glow", (8, 8, 1), 16, levels=1, steps=1, width=256)
  x = np.random.RandomState(0).randint(0, 16, (4, 8, 8, 1)).astype(np.uint8)
  v = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  k = v["params"]["blocks_0"]["flows"]["coupling"]["net"]["conv2"]["kernel"]   # N(0, 0.05^2)
  assert k.shape == (1, 256, 256)                      # one step, stacked
  assert abs(float(k.std()) - 0.05) < 0.001 and abs(float(k.mean())) < 0.001


@pytest.mark.parametrize("name", ["glow", "lmconv", "nvae"])
def test_models_draw_their_initial_weights_from_the_init_prng(name):
  """Every random draw of a model's init but the few that seed it (dequantisation noise,
  the bits that seed ``fast_init_key``) uses an INIT_PRNG key: no threefry or rbg draw
  per parameter, the compile cost this PRNG removes."""
  import dgmjax
  from tests.jaxpr_walk import equations
  from tests.test_models_protocol import TINY
  model = dgmjax.models.create(name, image_shape=(8, 8, 1), num_bins=16, **TINY[name])
  x = np.zeros((2, 8, 8, 1), np.uint8)
  keys = [str(e.invars[0].aval.dtype) for e in equations(model.init, jax.random.PRNGKey(0), x)
          if e.primitive.name == "random_bits"]
  init_draws = [k for k in keys if k == "key<dgi>"]
  assert len(init_draws) >= 3 and len(keys) - len(init_draws) <= 3, keys
