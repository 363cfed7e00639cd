"""NVAE's image likelihood heads: the discretised logistic mixture's channel layout
(official ``DiscMixLogistic``) and its edge bins ("exact" vs "official")."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import models
from dgmjax.distributions import discretized_logistic_mixture_log_prob
from tests.nvae.test_nvae_model import TINY


@pytest.mark.parametrize("channels, bins", [(1, 17), (3, 4)])
def test_dmol_head_layout_sums_to_one(channels, bins):
  """The head's channel split gives a normalised distribution over all level vectors."""
  model = models.create("nvae", image_shape=(8, 8, channels), num_bins=bins, num_mixtures=3,
                        **{k: v for k, v in TINY.items() if k not in ("num_flows",)})
  assert model.out_channels == (10 * 3 if channels == 3 else 3 * 3)   # 10M RGB, 3M grey
  logits = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (1, 8, 8, model.out_channels))
  grids = np.stack(np.meshgrid(*[np.arange(bins)] * channels, indexing="ij"), -1)
  grids = grids.reshape(-1, channels)
  total = 0.0
  for levels in grids:   # every pixel takes the same level vector
    x = jnp.broadcast_to(jnp.asarray(levels, jnp.uint8), (1, 8, 8, channels))
    lp = discretized_logistic_mixture_log_prob(x, *model.split_logits(logits), num_bins=bins)
    total = total + jnp.exp(lp)
  np.testing.assert_allclose(total, 1.0, rtol=1e-4)
  lp, means, log_scales, coeffs = model.split_logits(logits)
  assert means.shape == (1, 8, 8, channels, 3) and (coeffs is None) == (channels == 1)
  # Official DiscMixLogistic layout: [logits M | per channel: means M, log_scales M, coeffs M].
  if channels == 3:
    np.testing.assert_array_equal(coeffs[..., 1, :], logits[..., 3 + 9 + 6:3 + 9 + 9])
    np.testing.assert_array_equal(means[..., 2, :], logits[..., 3 + 18:3 + 21])


def _official_dmol_grey(x, logits, means, log_scales, max_val):
  """numpy float64 transcription of NVlabs/NVAE DiscMixLogistic.log_prob's rule for one
  channel: thresholds c < -0.999 / c > 0.99, log(max(cdf_delta, 1e-10)) or the midpoint
  density when cdf_delta <= 1e-5. x int [N]; params [N, M]."""
  sp = lambda a: np.logaddexp(0.0, a)
  c = (2.0 * x / max_val - 1.0)[:, None]
  ls = np.maximum(log_scales, -7.0)
  inv = np.exp(-ls)
  plus, minus = inv * (c - means + 1 / max_val), inv * (c - means - 1 / max_val)
  mid = inv * (c - means)
  delta = 1 / (1 + np.exp(-plus)) - 1 / (1 + np.exp(-minus))
  inner = np.where(delta > 1e-5, np.log(np.maximum(delta, 1e-10)),
                   mid - ls - 2 * sp(mid) - np.log(max_val / 2))
  lp = np.where(c < -0.999, plus - sp(plus), np.where(c > 0.99, -sp(minus), inner))
  log_pi = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
  return np.logaddexp.reduce(lp + log_pi, axis=1)


def test_dmol_edge_official_matches_nvae_thresholds():
  """'official' reproduces NVlabs/NVAE DiscMixLogistic.log_prob: centred values > 0.99 (at
  8 bits level 254 too) score the whole upper tail; 'exact' is normalised over the levels."""
  rng = np.random.default_rng(0)
  m, k = 3, 256
  x = np.arange(k)
  logits = rng.normal(size=(1, m)).repeat(k, 0)
  means = rng.uniform(0.85, 1.0, size=(1, m)).repeat(k, 0)
  log_scales = rng.uniform(-4, -2, size=(1, m)).repeat(k, 0)
  f = lambda edge: np.asarray(discretized_logistic_mixture_log_prob(
      jnp.asarray(x[:, None]), jnp.asarray(logits, jnp.float32),
      jnp.asarray(means[:, None], jnp.float32), jnp.asarray(log_scales[:, None], jnp.float32),
      num_bins=k, edge=edge), np.float64)
  exact, official = f("exact"), f("official")
  np.testing.assert_allclose(official, _official_dmol_grey(x, logits, means, log_scales, k - 1),
                             atol=2e-4)
  np.testing.assert_array_equal(exact[:254], official[:254])
  assert official[254] > exact[254] + 0.1
  np.testing.assert_allclose(np.logaddexp.reduce(exact), 0.0, atol=1e-4)   # normalised
  assert np.logaddexp.reduce(official) > 0.05                              # mass counted twice
