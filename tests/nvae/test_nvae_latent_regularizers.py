"""Residual normal KL, KL warm-up/balancing and the spectral power iteration."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.nvae import regularizers as reg
from dgmjax.nvae.latent import LatentNormal, soft_clamp5


def test_residual_normal_kl_analytic_and_monte_carlo():
  rng = np.random.RandomState(0)
  mu_p, ls_p = rng.randn(2, 3).astype(np.float32), 0.5 * rng.randn(2, 3).astype(np.float32)
  dmu, dls = 0.7 * rng.randn(2, 3).astype(np.float32), 0.3 * rng.randn(2, 3).astype(np.float32)
  p = LatentNormal.from_raw(jnp.asarray(mu_p), jnp.asarray(ls_p))
  q = LatentNormal.from_raw(jnp.asarray(mu_p + dmu), jnp.asarray(ls_p + dls))
  # The official parameterisation, written out with numpy.
  s_p = np.exp(5 * np.tanh(ls_p / 5)) + 1e-2
  s_q = np.exp(5 * np.tanh((ls_p + dls) / 5)) + 1e-2
  m_p, m_q = 5 * np.tanh(mu_p / 5), 5 * np.tanh((mu_p + dmu) / 5)
  np.testing.assert_allclose(np.exp(q.log_sigma), s_q, rtol=1e-5)
  t1, t2 = (m_q - m_p) / s_p, s_q / s_p
  analytic = 0.5 * (t1 * t1 + t2 * t2) - 0.5 - np.log(t2)
  kl = q.kl(p)
  np.testing.assert_allclose(kl, analytic, rtol=1e-4, atol=1e-6)
  # Monte Carlo: E_q[log q - log p] with 200k draws, within 5 standard errors.
  z = q.mu + jnp.exp(q.log_sigma) * jax.random.normal(jax.random.PRNGKey(0), (200_000, 2, 3))
  lr = np.asarray(q.log_p(z) - p.log_p(z), np.float64)
  se = lr.std(0) / np.sqrt(lr.shape[0])
  assert np.all(np.abs(lr.mean(0) - analytic) < 5 * se + 1e-4)
  np.testing.assert_allclose(soft_clamp5(jnp.asarray([100.0, -100.0, 0.0])), [5, -5, 0], atol=1e-5)


def test_power_iteration_converges_to_top_singular_value():
  rng = np.random.RandomState(1)
  w = rng.randn(3, 6, 9).astype(np.float32)
  u = jnp.asarray(rng.randn(3, 6).astype(np.float32))
  v = jnp.zeros((3, 9))
  state = reg.init_spectral_state(jax.random.PRNGKey(0), {"6x9": jnp.asarray(w)}, num_iter=200)
  loss, new = reg.spectral_loss({"6x9": jnp.asarray(w)}, state, num_iter=4)
  top = np.linalg.svd(w, compute_uv=False)[:, 0]
  np.testing.assert_allclose(float(loss), top.sum(), rtol=1e-4)
  u2, v2 = reg.power_iteration(jnp.asarray(w), u, v, 300)
  sigma = np.einsum("nr,nrc,nc->n", u2, w, v2)
  np.testing.assert_allclose(sigma, top, rtol=1e-4)
  # The gradient of the loss is sum_i u_i v_i^T (vectors held fixed).
  g = jax.grad(lambda w: reg.spectral_loss({"6x9": w}, new, 4)[0])(jnp.asarray(w))
  assert np.all(np.isfinite(g)) and np.abs(np.linalg.norm(g[0]) - 1.0) < 1e-3


def test_kl_warmup_and_balancer():
  assert float(reg.kl_coeff(None, 100, 10, 1e-4)) == 1.0
  np.testing.assert_allclose(reg.kl_coeff(0, 100, 10, 1e-4), 1e-4)
  np.testing.assert_allclose(reg.kl_coeff(60, 100, 10, 1e-4), 0.5)
  np.testing.assert_allclose(reg.kl_coeff(500, 100, 10, 1e-4), 1.0)
  alpha = reg.kl_balancer_coeff((4, 2))     # decoder order: 2 coarse groups then 4 fine
  np.testing.assert_allclose(alpha, np.array([1 / 2, 1 / 2, 4 / 4, 4 / 4, 4 / 4, 4 / 4]) / 0.5)
  kl = jnp.asarray(np.random.RandomState(2).rand(5, 6).astype(np.float32) * 3)
  full, gamma = reg.kl_balancer(kl, jnp.float32(1.0), alpha)
  np.testing.assert_allclose(full, kl.sum(1), rtol=1e-6)
  np.testing.assert_array_equal(gamma, 1.0)
  part, gamma = reg.kl_balancer(kl, jnp.float32(0.5), alpha)
  np.testing.assert_allclose(gamma.mean(), 1.0, rtol=1e-6)
  c = np.abs(np.asarray(kl)).mean(0) + 0.01
  expect = c / alpha
  np.testing.assert_allclose(gamma, expect / expect.mean(), rtol=1e-5)
  want = 0.5 * (np.asarray(kl) * expect / expect.mean()).sum(1)
  np.testing.assert_allclose(part, want, rtol=1e-5)
  assert float(reg.weight_decay_norm_coeff(0.0, 1e-2, 1.0, True)) == 1.0
  np.testing.assert_allclose(reg.weight_decay_norm_coeff(1.0, 1e-2, 1.0, True), 1e-2, rtol=1e-6)
