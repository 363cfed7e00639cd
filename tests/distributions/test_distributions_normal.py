"""Diagonal normal: density against scipy, sampling moments, KL against Monte Carlo."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dgmjax import distributions as D


def test_log_prob_matches_scipy():
  rng = np.random.default_rng(0)
  z, mu = rng.normal(size=(2, 100)) * 3
  log_sigma = rng.uniform(-4, 3, size=100)
  with jax.enable_x64(True):
    got = np.asarray(D.normal_log_prob(z, mu, log_sigma))
    assert got.dtype == np.float64
  np.testing.assert_allclose(got, stats.norm.logpdf(z, mu, np.exp(log_sigma)), rtol=1e-12)
  got32 = np.asarray(D.normal_log_prob(z.astype(np.float32), mu.astype(np.float32),
                                       log_sigma.astype(np.float32)))
  assert got32.dtype == np.float32
  np.testing.assert_allclose(got32, stats.norm.logpdf(z, mu, np.exp(log_sigma)), rtol=1e-5,
                             atol=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sample_moments_and_broadcasting(temperature):
  n = 200_000
  mu = np.array([-2.0, 0.0, 1.5], np.float32)
  log_sigma = np.array([[-1.0, 0.0, 0.8]] * n, np.float32)
  z = D.normal_sample(jax.random.key(0), mu, log_sigma, temperature)
  chex.assert_shape(z, (n, 3))
  z = np.asarray(z, np.float64)
  sd = temperature * np.exp(log_sigma[0])
  assert np.all(np.abs(z.mean(0) - mu) < 5 * sd / np.sqrt(n))
  # sample variance has standard error sd^2 sqrt(2 / n) for a normal.
  assert np.all(np.abs(z.var(0) - sd**2) < 5 * sd**2 * np.sqrt(2.0 / n))


def test_kl_matches_monte_carlo():
  n = 400_000
  mu_q = np.array([0.0, 1.0, -2.0, 0.3, 0.0], np.float64)
  ls_q = np.array([0.0, -1.0, 0.5, -2.0, 1.5], np.float64)
  mu_p = np.array([0.0, 0.0, 1.0, 0.2, -1.0], np.float64)
  ls_p = np.array([0.0, 0.3, -0.5, -2.5, 0.0], np.float64)
  with jax.enable_x64(True):
    kl = np.asarray(D.normal_kl(mu_q, ls_q, mu_p, ls_p))
    z = D.normal_sample(jax.random.key(1), np.broadcast_to(mu_q, (n, 5)), ls_q)
    ratio = np.asarray(D.normal_log_prob(z, mu_q, ls_q) - D.normal_log_prob(z, mu_p, ls_p))
  est, se = ratio.mean(0), ratio.std(0) / np.sqrt(n)
  assert np.all(np.abs(kl - est) < 5 * se + 1e-9)
  assert kl[0] == 0.0


def test_kl_is_zero_on_itself_nonnegative_and_stationary():
  rng = np.random.default_rng(2)
  mu, ls = (rng.normal(size=(2, 1000)) * 3).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(D.normal_kl(mu, ls, mu, ls)), 0.0)
  near = (ls + rng.normal(size=1000).astype(np.float32) * 1e-4).astype(np.float32)
  others = (rng.normal(size=(2, 1000)) * 3).astype(np.float32)
  for q in [(mu, near), (others[0], others[1])]:
    assert np.all(np.asarray(D.normal_kl(q[0], q[1], mu, ls)) >= 0.0)
  grads = jax.grad(lambda a, b: jnp.sum(D.normal_kl(a, b, mu, ls)), argnums=(0, 1))(mu, ls)
  for g in grads:
    np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_bad_input_raises_value_error():
  with pytest.raises(ValueError, match="broadcast"):
    D.normal_kl(np.zeros(3, np.float32), np.zeros(4, np.float32), 0.0 * np.ones(3), np.zeros(3))
  with pytest.raises(ValueError, match="floating"):
    D.normal_log_prob(np.zeros(3, np.int32), np.zeros(3, np.float32), np.zeros(3, np.float32))


class NormalUnderJitTest(chex.TestCase):
  """The same values with and without ``jax.jit`` (traced arguments take the same path)."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_log_prob_kl_and_sample(self):
    rng = np.random.default_rng(3)
    z, mu, mu_p = rng.normal(size=(3, 7, 5)).astype(np.float32)
    ls, ls_p = rng.uniform(-2, 1, size=(2, 7, 5)).astype(np.float32)
    lp = self.variant(D.normal_log_prob)(z, mu, ls)
    chex.assert_shape(lp, (7, 5))
    chex.assert_trees_all_close(lp, stats.norm.logpdf(z, mu, np.exp(ls)), rtol=1e-5, atol=1e-5)
    kl = self.variant(D.normal_kl)(mu, ls, mu_p, ls_p)
    want = (ls_p - ls + (np.exp(2 * ls) + (mu - mu_p) ** 2) / (2 * np.exp(2 * ls_p)) - 0.5)
    chex.assert_trees_all_close(kl, want, rtol=1e-5, atol=1e-5)
    s = self.variant(D.normal_sample)(jax.random.key(4), mu, ls, 1.0)
    chex.assert_shape(s, (7, 5))
    chex.assert_tree_all_finite(s)
