"""Bernoulli and categorical: normalisation, reference values, sampling frequencies."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from dgmjax import distributions as D

LOGITS = np.array([-1e4, -30.0, -3.0, -0.4, 0.0, 0.7, 2.5, 30.0, 1e4], np.float32)


def test_bernoulli_log_prob_normalised_and_matches_reference():
  zeros, ones = np.zeros(LOGITS.shape, np.uint8), np.ones(LOGITS.shape, np.uint8)
  l0 = np.asarray(D.bernoulli_log_prob(zeros, LOGITS))
  l1 = np.asarray(D.bernoulli_log_prob(ones, LOGITS))
  assert l1.dtype == np.float32 and np.all(np.isfinite(l0)) and np.all(np.isfinite(l1))
  np.testing.assert_allclose(np.exp(l0) + np.exp(l1), 1.0, atol=1e-6)
  ref = special.log_expit(LOGITS.astype(np.float64))
  np.testing.assert_allclose(l1, ref, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(l0, special.log_expit(-LOGITS.astype(np.float64)), rtol=1e-6,
                             atol=1e-6)
  grad = jax.grad(lambda l: jnp.sum(D.bernoulli_log_prob(ones, l)))(jnp.asarray(LOGITS))
  assert np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_bernoulli_sample_frequency_matches_sigmoid(temperature):
  n = 100_000
  logits = np.array([-3.0, -0.4, 0.0, 0.7, 2.5], np.float32)
  x = np.asarray(D.bernoulli_sample(jax.random.key(0), np.broadcast_to(logits, (n, 5)),
                                    temperature))
  assert x.dtype == np.uint8 and set(np.unique(x)) <= {0, 1}
  p = special.expit(logits / temperature)
  se = np.sqrt(p * (1 - p) / n)
  assert np.all(np.abs(x.mean(0) - p) < 5 * se)


def test_bernoulli_zero_temperature_is_the_mode():
  x = D.bernoulli_sample(jax.random.key(1), jnp.asarray(LOGITS), 0.0)
  np.testing.assert_array_equal(np.asarray(x), (LOGITS > 0).astype(np.uint8))


def test_categorical_log_prob_normalised_and_two_way_equals_bernoulli():
  rng = np.random.default_rng(0)
  logits = (rng.normal(size=(6, 5)) * 4).astype(np.float32)
  every = np.broadcast_to(np.arange(5), (6, 5)).T.astype(np.int32)  # [5, 6]: x = k per row
  lp = np.stack([np.asarray(D.categorical_log_prob(every[k], logits)) for k in range(5)])
  np.testing.assert_allclose(np.exp(lp).sum(0), 1.0, atol=1e-6)
  np.testing.assert_allclose(lp.T, special.log_softmax(logits.astype(np.float64), -1), atol=1e-5)
  two = (rng.normal(size=(50, 2)) * 5).astype(np.float32)
  x = rng.integers(0, 2, size=50).astype(np.uint8)
  np.testing.assert_allclose(np.asarray(D.categorical_log_prob(x, two)),
                             np.asarray(D.bernoulli_log_prob(x, two[:, 1] - two[:, 0])), atol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_categorical_sample_histogram_matches_softmax(temperature):
  n, logits = 100_000, np.array([1.0, -0.5, 0.3, 2.0, -2.0], np.float32)
  x = np.asarray(D.categorical_sample(jax.random.key(2), np.broadcast_to(logits, (n, 5)),
                                      temperature))
  assert x.dtype == np.uint8 and x.shape == (n,)
  p = special.softmax(logits.astype(np.float64) / temperature)
  assert stats.chisquare(np.bincount(x, minlength=5), p * n / p.sum()).pvalue > 1e-3
  argmax = D.categorical_sample(jax.random.key(3), jnp.asarray(logits), 0.0)
  assert int(argmax) == int(np.argmax(logits))


def test_bad_input_raises_value_error():
  logits = np.zeros((4,), np.float32)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    D.bernoulli_log_prob(np.full((4,), 2, np.int32), logits)
  with pytest.raises(ValueError, match="integers"):
    D.bernoulli_log_prob(np.zeros((4,), np.float32), logits)
  with pytest.raises(ValueError, match="same shape"):
    D.bernoulli_log_prob(np.zeros((3,), np.int32), logits)
  with pytest.raises(ValueError, match=r"\[0, 3\]"):
    D.categorical_log_prob(np.full((2,), 4, np.int32), np.zeros((2, 4), np.float32))
  with pytest.raises(ValueError, match="shape"):
    D.categorical_log_prob(np.zeros((3,), np.int32), np.zeros((2, 4), np.float32))
  with pytest.raises(ValueError, match="temperature"):
    D.categorical_sample(jax.random.key(0), np.zeros((2, 4), np.float32), -1.0)
  with pytest.raises(ValueError, match="dtype"):
    D.categorical_sample(jax.random.key(0), np.zeros((2, 300), np.float32))


class BernoulliUnderJitTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_log_prob_and_sample(self):
    x = (np.arange(LOGITS.size) % 2).astype(np.uint8)
    lp = self.variant(D.bernoulli_log_prob)(x, LOGITS)
    want = np.where(x == 1, special.log_expit(LOGITS.astype(np.float64)),
                    special.log_expit(-LOGITS.astype(np.float64)))
    chex.assert_shape(lp, LOGITS.shape)
    chex.assert_trees_all_close(lp, want, rtol=1e-6, atol=1e-6)
    s = self.variant(D.bernoulli_sample)(jax.random.key(0), LOGITS)
    chex.assert_shape(s, LOGITS.shape)
