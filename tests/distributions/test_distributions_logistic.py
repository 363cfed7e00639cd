"""Discretised logistic mixture: normalisation, a float64 reference, extremes, sampling."""

from __future__ import annotations

import functools
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from dgmjax import distributions as D


def _all_levels(num_bins, c):
  """Every level tuple once: int32 [K^C, 1, 1, C] (one pixel per batch row)."""
  grid = np.array(list(itertools.product(range(num_bins), repeat=c)), np.int32)
  return grid.reshape(-1, 1, 1, c)


def _params(seed, n, c, m, coupled, log_scale_range=(-3.0, 0.5), mean_range=1.3,
            dtype=np.float32):
  """One random pixel distribution, broadcast over n batch rows: [n,1,1,...]."""
  rng = np.random.default_rng(seed)
  raw = dict(logit_probs=rng.normal(size=m) * 1.5,
             means=rng.uniform(-mean_range, mean_range, size=(c, m)),
             log_scales=rng.uniform(*log_scale_range, size=(c, m)),
             coeffs=rng.normal(size=(3, m)) * 1.5 if coupled else None)
  return {k: None if v is None else np.broadcast_to(v, (n, 1, 1) + v.shape).astype(dtype)
          for k, v in raw.items()}


def _reference_probs(x, logit_probs, means, log_scales, coeffs, num_bins):
  """float64 numpy: mixture probability and per-(channel, component) bin masses.

  Masses are plain logistic-CDF (sigmoid) differences, evaluated on the side of the mean
  where the two CDF values are small, with the edge bins open to -inf / +inf.
  """
  x = x.astype(np.float64)
  xc = 2.0 * x / (num_bins - 1) - 1.0
  mu = means.astype(np.float64).copy()
  if coeffs is not None:
    a = np.tanh(coeffs.astype(np.float64))
    mu[..., 1, :] += a[..., 0, :] * xc[..., 0, None]
    mu[..., 2, :] += a[..., 1, :] * xc[..., 0, None] + a[..., 2, :] * xc[..., 1, None]
  s = np.exp(np.maximum(log_scales.astype(np.float64), -7.0))
  h = 1.0 / (num_bins - 1)
  up = (xc[..., None] + h - mu) / s
  lo = (xc[..., None] - h - mu) / s
  up = np.where(x[..., None] == num_bins - 1, np.inf, up)
  lo = np.where(x[..., None] == 0, -np.inf, lo)
  above = (up + lo) > 0  # bin right of the mean: use 1 - F(z) = F(-z)
  mass = np.where(above, special.expit(-lo) - special.expit(-up),
                  special.expit(up) - special.expit(lo))
  pi = special.softmax(logit_probs.astype(np.float64), axis=-1)
  return np.sum(pi * np.prod(mass, axis=-2), axis=-1), mass


@functools.lru_cache(maxsize=None)
def _jitted_log_prob(num_bins, midpoint_fallback=True):
  return jax.jit(functools.partial(D.discretized_logistic_mixture_log_prob, num_bins=num_bins,
                                   midpoint_fallback=midpoint_fallback))


SUM_CASES = [  # (C, num_bins, coupled, M)
    (1, 2, False, 3), (1, 5, False, 3), (1, 17, False, 4), (1, 256, False, 5),
    (3, 2, True, 3), (3, 4, True, 3), (3, 5, True, 4), (3, 5, False, 4)]


@pytest.mark.parametrize("c,num_bins,coupled,m", SUM_CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_probabilities_over_all_levels_sum_to_one(c, num_bins, coupled, m, seed):
  x = _all_levels(num_bins, c)
  p = _params(seed, len(x), c, m, coupled)
  logp = _jitted_log_prob(num_bins)(x, **p)
  chex.assert_shape(logp, (len(x), 1, 1))
  chex.assert_type(logp, jnp.float32)
  assert abs(float(jnp.sum(jnp.exp(logp))) - 1.0) < 1e-5


@pytest.mark.parametrize("c,num_bins", [(1, 256), (1, 5), (3, 4)])
def test_exact_masses_sum_to_one_for_extreme_scales(c, num_bins):
  # Scales from the clamp (e^-7 << bin width) to huge: the midpoint rule is poor there,
  # the exact masses are not.
  x = _all_levels(num_bins, c)
  p = _params(3, len(x), c, 3, c == 3, log_scale_range=(-9.0, 6.0), mean_range=2.0)
  logp = _jitted_log_prob(num_bins, False)(x, **p)
  assert abs(float(jnp.sum(jnp.exp(logp))) - 1.0) < 1e-5


@pytest.mark.parametrize("c,num_bins,coupled", [(1, 5, False), (1, 17, False), (1, 256, False),
                                                (3, 5, True)])
def test_matches_float64_sigmoid_difference_reference(c, num_bins, coupled):
  x = _all_levels(num_bins, c)
  with jax.enable_x64(True):
    p = _params(4, len(x), c, 3, coupled, dtype=np.float64)
    ref, mass = _reference_probs(x, **p, num_bins=num_bins)
    # Rows where no mass is near the 1e-5 midpoint threshold: every formula must agree.
    ok = np.all(mass > 2e-5, axis=(-1, -2)) & (ref > 1e-8)
    assert ok.mean() > 0.3
    got64 = np.asarray(_jitted_log_prob(num_bins)(x, **p))
    np.testing.assert_allclose(got64[ok], np.log(ref[ok]), rtol=0, atol=1e-9)
    exact64 = np.asarray(_jitted_log_prob(num_bins, False)(x, **p))
    fine = ref > 1e-200  # exact masses hold far into the tails in float64
    np.testing.assert_allclose(exact64[fine], np.log(ref[fine]), rtol=1e-9, atol=1e-9)
  p32 = {k: None if v is None else v.astype(np.float32) for k, v in p.items()}
  got32 = np.asarray(_jitted_log_prob(num_bins)(x, **p32))
  assert got32.dtype == np.float32
  np.testing.assert_allclose(got32[ok], np.log(ref[ok]), rtol=0, atol=1e-4)


def test_midpoint_fallback_is_density_times_width():
  num_bins = 256
  x = _all_levels(num_bins, 1)
  with jax.enable_x64(True):
    p = _params(5, len(x), 1, 1, False, log_scale_range=(-3.0, -3.0), dtype=np.float64)
    _, mass = _reference_probs(x, **p, num_bins=num_bins)
    got = np.asarray(_jitted_log_prob(num_bins)(x, **p))[:, 0, 0]
  mass = mass[:, 0, 0, 0, 0]
  k = np.arange(num_bins)
  tail = (mass < 1e-6) & (k > 0) & (k < num_bins - 1)
  assert tail.sum() > 10
  mu, s = p["means"][0, 0, 0, 0, 0], math.exp(p["log_scales"][0, 0, 0, 0, 0])
  centre = 2.0 * k / (num_bins - 1) - 1.0
  pdf = stats.logistic.pdf(centre, loc=mu, scale=s)
  np.testing.assert_allclose(got[tail], np.log(pdf[tail] * 2.0 / (num_bins - 1)), rtol=1e-9)
  normal = (mass > 2e-5) & (k > 0) & (k < num_bins - 1)
  np.testing.assert_allclose(got[normal], np.log(mass[normal]), rtol=1e-9)


def _official_formula(x, logit_probs, means, log_scales, coeffs, num_bins, dtype):
  """PixelCNN++'s published formula (sigmoid differences, x thresholds at +-0.999, the
  1e-5 midpoint rule), evaluated in numpy at ``dtype``: the parity target for LMConv/NVAE."""
  f = lambda a: np.asarray(a, dtype)
  softplus = lambda z: np.logaddexp(f(0.0), z)
  xc = x.astype(dtype) * f(2.0 / (num_bins - 1)) - f(1.0)
  mu, ls = means.astype(dtype), np.maximum(log_scales.astype(dtype), f(-7.0))
  a = np.tanh(coeffs.astype(dtype))
  mu = np.stack([mu[..., 0, :], mu[..., 1, :] + a[..., 0, :] * xc[..., 0, None],
                 mu[..., 2, :] + a[..., 1, :] * xc[..., 0, None] + a[..., 2, :] * xc[..., 1, None]],
                axis=-2)
  centred, inv_s, h = xc[..., None] - mu, np.exp(-ls), f(1.0 / (num_bins - 1))
  plus_in, min_in, mid_in = inv_s * (centred + h), inv_s * (centred - h), inv_s * centred
  with np.errstate(over="ignore"):
    delta = special.expit(plus_in) - special.expit(min_in)
  log_pdf_mid = mid_in - ls - f(2.0) * softplus(mid_in)
  inner = np.where(delta > 1e-5, np.log(np.maximum(delta, f(1e-12))),
                   log_pdf_mid - f(np.log((num_bins - 1) / 2.0)))
  xx = xc[..., None]
  out = np.where(xx < -0.999, plus_in - softplus(plus_in),
                 np.where(xx > 0.999, -softplus(min_in), inner))
  return special.logsumexp(out.sum(-2) + special.log_softmax(logit_probs.astype(dtype), -1), -1)


def test_parity_with_the_official_formula():
  num_bins, shape, m = 256, (2, 8, 8), 10
  rng = np.random.default_rng(11)
  x = rng.integers(0, num_bins, size=shape + (3,)).astype(np.uint8)
  p = dict(logit_probs=rng.normal(size=shape + (m,)), means=rng.normal(size=shape + (3, m)) * 0.5,
           log_scales=rng.normal(size=shape + (3, m)) - 1.0, coeffs=rng.normal(size=shape + (3, m)))
  with jax.enable_x64(True):
    ours64 = np.asarray(D.discretized_logistic_mixture_log_prob(x, **p, num_bins=num_bins))
  official64 = _official_formula(x, **p, num_bins=num_bins, dtype=np.float64)
  np.testing.assert_allclose(ours64, official64, rtol=0, atol=1e-9)  # same function
  p32 = {k: v.astype(np.float32) for k, v in p.items()}
  ours32 = np.asarray(D.discretized_logistic_mixture_log_prob(x, **p32, num_bins=num_bins))
  official32 = _official_formula(x, **p32, num_bins=num_bins, dtype=np.float32)
  # float32: the official CDF difference cancels near 1; the log-space masses do not.
  err_ours, err_official = np.abs(ours32 - ours64).max(), np.abs(official32 - ours64).max()
  assert err_ours < 1e-4 and err_ours < err_official < 1e-2


def test_channel_conditionals_are_the_chain_rule_of_the_joint():
  num_bins = 4
  x = _all_levels(num_bins, 3)
  p = _params(6, len(x), 3, 3, True)
  joint = np.asarray(D.discretized_logistic_mixture_log_prob(x, **p, num_bins=num_bins))
  cond = np.asarray(D.discretized_logistic_mixture_channel_log_prob(x, **p, num_bins=num_bins))
  assert cond.shape == (len(x), 1, 1, 3)
  np.testing.assert_allclose(cond.sum(-1), joint, atol=2e-5)
  probs = np.exp(joint).reshape(num_bins, num_bins, num_bins)
  cond = cond.reshape(num_bins, num_bins, num_bins, 3)
  # p(r) and p(r, g) are marginals of the joint; cond[..., 0] and cond[..., :2] give them.
  np.testing.assert_allclose(np.exp(cond[:, 0, 0, 0]), probs.sum((1, 2)), atol=1e-6)
  np.testing.assert_allclose(np.exp(cond[:, :, 0, :2].sum(-1)), probs.sum(2), atol=1e-6)


def _extreme_batch(num_bins, c=3, m=4):
  """Every combination of extreme parameters, with the levels 0, 1, K/2, K-1."""
  vals = dict(log_scales=[-50.0, -7.0, 0.0, 30.0, 1e4], means=[-1e4, -3.0, 0.0, 3.0, 1e4],
              coeffs=[-1e4, 0.0, 1e4], logits=[-1e4, 0.0, 1e4],
              level=sorted({0, 1, num_bins // 2, num_bins - 1}))
  combos = np.array(list(itertools.product(*vals.values())), np.float64)
  n = len(combos)
  rng = np.random.default_rng(7)
  idx = lambda: rng.permutation(n)
  ls, mu, co, lg, lv = (combos[idx(), j] for j in range(5))
  tile = lambda v, extra: np.broadcast_to(v.reshape((n, 1, 1) + (1,) * len(extra)),
                                          (n, 1, 1) + extra).astype(np.float32)
  x = np.broadcast_to(lv.reshape(n, 1, 1, 1), (n, 1, 1, c)).astype(np.int32)
  return x, dict(logit_probs=tile(lg, (m,)) * np.linspace(-1, 1, m, dtype=np.float32),
                 means=tile(mu, (c, m)), log_scales=tile(ls, (c, m)), coeffs=tile(co, (3, m)))


@pytest.mark.parametrize("num_bins", [2, 256])
@pytest.mark.parametrize("midpoint_fallback", [True, False])
def test_extreme_parameters_give_finite_values_and_gradients(num_bins, midpoint_fallback):
  x, p = _extreme_batch(num_bins)
  f = _jitted_log_prob(num_bins, midpoint_fallback)
  logp = np.asarray(f(x, **p))
  assert np.all(np.isfinite(logp)) and np.all(logp <= 1e-6)
  grads = jax.grad(lambda q: jnp.sum(f(x, **q)))(p)
  for name, g in grads.items():
    assert np.all(np.isfinite(np.asarray(g))), name
  # log_scales below the clamp act as the clamp.
  clamped = dict(p, log_scales=np.maximum(p["log_scales"], -7.0))
  np.testing.assert_array_equal(np.asarray(f(x, **clamped)), logp)


def test_huge_scale_gives_width_times_density():
  # s = e^40 >> bin: every interior level has mass 2h * pdf(0) = 2h / (4 s), exactly in the limit.
  num_bins = 17
  x = np.arange(1, num_bins - 1, dtype=np.int32).reshape(-1, 1, 1, 1)
  n = len(x)
  p = dict(logit_probs=np.zeros((n, 1, 1, 1), np.float32),
           means=np.zeros((n, 1, 1, 1, 1), np.float32),
           log_scales=np.full((n, 1, 1, 1, 1), 40.0, np.float32))
  expected = math.log(2.0 / (num_bins - 1) / 4.0) - 40.0
  for fallback in (True, False):
    got = np.asarray(_jitted_log_prob(num_bins, fallback)(x, **p))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("bad,match", [
    (dict(x=np.zeros((2, 1, 1, 3), np.float32)), "integer"),
    (dict(x=np.full((2, 1, 1, 3), 4, np.int32)), r"\[0, 3\]"),
    (dict(logit_probs=np.zeros((2, 1, 1), np.float32)), "logit_probs"),
    (dict(means=np.zeros((2, 1, 1, 3, 3), np.float32)), "means"),
    (dict(coeffs=np.zeros((2, 1, 1, 2, 2), np.float32)), "coeffs"),
    (dict(num_bins=1), "num_bins"),
])
def test_bad_input_raises_value_error(bad, match):
  args = dict(x=np.zeros((2, 1, 1, 3), np.int32), logit_probs=np.zeros((2, 1, 1, 2), np.float32),
              means=np.zeros((2, 1, 1, 3, 2), np.float32),
              log_scales=np.zeros((2, 1, 1, 3, 2), np.float32),
              coeffs=np.zeros((2, 1, 1, 3, 2), np.float32), num_bins=4)
  args.update(bad)
  with pytest.raises(ValueError, match=match):
    D.discretized_logistic_mixture_log_prob(**args)


def test_coupling_needs_three_channels():
  args = dict(logit_probs=np.zeros((2, 1, 1, 2), np.float32),
              means=np.zeros((2, 1, 1, 1, 2), np.float32),
              log_scales=np.zeros((2, 1, 1, 1, 2), np.float32),
              coeffs=np.zeros((2, 1, 1, 3, 2), np.float32), num_bins=4)
  with pytest.raises(ValueError, match="C == 3"):
    D.discretized_logistic_mixture_log_prob(np.zeros((2, 1, 1, 1), np.int32), **args)
  with pytest.raises(ValueError, match="C == 3"):
    D.discretized_logistic_mixture_sample(jax.random.key(0), **args)


# ---------------------------------------------------------------- sampling

NUM_SAMPLES = 100_000


@functools.lru_cache(maxsize=None)
def _jitted_sample(num_bins, couple_levels=True):
  return jax.jit(functools.partial(D.discretized_logistic_mixture_sample, num_bins=num_bins,
                                   couple_levels=couple_levels))


def _chi_square_p_value(samples, probs):
  """Pearson chi-square p-value of sample counts over cells against probs (cells < 5 pooled)."""
  n = len(samples)
  counts = np.bincount(samples, minlength=len(probs)).astype(np.float64)
  expected = probs * n
  big = expected >= 5
  obs = np.append(counts[big], counts[~big].sum())
  exp = np.append(expected[big], expected[~big].sum())
  if exp[-1] < 5:  # fold the pooled remainder into the largest cell
    obs[np.argmax(exp[:-1])] += obs[-1]
    exp[np.argmax(exp[:-1])] += exp[-1]
    obs, exp = obs[:-1], exp[:-1]
  return stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


@pytest.mark.parametrize("c,num_bins,t_mix,t_log", [
    (3, 4, 1.0, 1.0), (3, 4, 0.6, 0.5), (1, 17, 1.0, 1.0)])
def test_sample_histogram_matches_probabilities(c, num_bins, t_mix, t_log):
  # Tempered sampling is exact sampling from logits / t_mix and log_scales + log t_log.
  p = _params(8, NUM_SAMPLES, c, 3, c == 3, log_scale_range=(-2.5, 0.0))
  x = _jitted_sample(num_bins)(jax.random.key(1), **p, mixture_temperature=t_mix,
                               logistic_temperature=t_log)
  x = np.asarray(x)
  assert x.shape == (NUM_SAMPLES, 1, 1, c) and x.dtype == np.uint8
  assert x.min() >= 0 and x.max() <= num_bins - 1
  levels = _all_levels(num_bins, c)
  q = {k: None if v is None else v[:len(levels)] for k, v in p.items()}
  q["logit_probs"] = q["logit_probs"] / t_mix
  q["log_scales"] = q["log_scales"] + math.log(t_log)
  probs = np.exp(np.asarray(_jitted_log_prob(num_bins, False)(levels, **q), np.float64)).ravel()
  cell = np.ravel_multi_index(tuple(x.reshape(-1, c).T.astype(np.int64)), (num_bins,) * c)
  assert _chi_square_p_value(cell, probs / probs.sum()) > 1e-3
  if c == 3 and t_mix == 1.0:
    # The test has power: the official samplers' coupling to the continuous draws of the
    # earlier channels (couple_levels=False) is not the distribution that is scored.
    x = np.asarray(_jitted_sample(num_bins, False)(jax.random.key(1), **p))
    cell = np.ravel_multi_index(tuple(x.reshape(-1, c).T.astype(np.int64)), (num_bins,) * c)
    assert _chi_square_p_value(cell, probs / probs.sum()) < 1e-6


def test_zero_temperature_gives_the_coupled_mode():
  num_bins, n = 5, 64
  p = _params(9, n, 3, 3, True)
  kw = dict(mixture_temperature=0.0, logistic_temperature=0.0)
  a = np.asarray(_jitted_sample(num_bins)(jax.random.key(2), **p, **kw))
  b = np.asarray(_jitted_sample(num_bins)(jax.random.key(3), **p, **kw))
  np.testing.assert_array_equal(a, b)
  m = int(np.argmax(p["logit_probs"][0, 0, 0]))
  mu, co = p["means"][0, 0, 0, :, m], np.tanh(p["coeffs"][0, 0, 0, :, m])
  to_level = lambda y: int(np.clip(np.round((np.clip(y, -1, 1) + 1) * (num_bins - 1) / 2),
                                   0, num_bins - 1))
  centre = lambda k: 2.0 * k / (num_bins - 1) - 1.0
  r = to_level(mu[0])
  g = to_level(mu[1] + co[0] * centre(r))
  bl = to_level(mu[2] + co[1] * centre(r) + co[2] * centre(g))
  assert np.all(a.reshape(-1, 3) == np.array([r, g, bl]))


def test_low_temperature_concentrates_on_the_mode():
  num_bins, n = 5, 2000
  p = _params(9, n, 3, 3, True)
  f = _jitted_sample(num_bins)
  mode = np.asarray(f(jax.random.key(2), **p, mixture_temperature=0.0, logistic_temperature=0.0))
  low = np.asarray(f(jax.random.key(4), **p, mixture_temperature=0.0, logistic_temperature=1e-3))
  hot = np.asarray(f(jax.random.key(4), **p))
  agree = lambda s: np.mean(np.all(s == mode, axis=-1))
  assert agree(low) > 0.99 and agree(hot) < agree(low)


def test_sampling_clips_far_means_and_honours_dtype():
  num_bins, n = 1000, 8
  p = _params(10, n, 3, 2, True)
  p["means"] = np.where(np.arange(n)[:, None, None, None, None] % 2 == 0, -50.0, 50.0
                        ).astype(np.float32) * np.ones_like(p["means"])
  p["coeffs"] = np.zeros_like(p["coeffs"])
  for couple in (True, False):
    x = np.asarray(D.discretized_logistic_mixture_sample(
        jax.random.key(5), **p, num_bins=num_bins, couple_levels=couple, dtype=jnp.int32))
    assert x.dtype == np.int32
    np.testing.assert_array_equal(x[0::2], 0)
    np.testing.assert_array_equal(x[1::2], num_bins - 1)
  with pytest.raises(ValueError, match="dtype"):
    D.discretized_logistic_mixture_sample(jax.random.key(0), **p, num_bins=num_bins)
  with pytest.raises(ValueError, match="temperature"):
    D.discretized_logistic_mixture_sample(jax.random.key(0), **p, num_bins=num_bins,
                                          dtype=jnp.int32, logistic_temperature=-1.0)


class MixtureUnderJitTest(chex.TestCase):
  """log_prob and sample give the same results with and without ``jax.jit``."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_log_prob_and_sample(self):
    num_bins = 5
    x = _all_levels(num_bins, 3)
    p = _params(0, len(x), 3, 4, True)
    logp = self.variant(functools.partial(D.discretized_logistic_mixture_log_prob,
                                          num_bins=num_bins))(x, **p)
    chex.assert_shape(logp, (len(x), 1, 1))
    ref, _ = _reference_probs(x, num_bins=num_bins, **p)
    chex.assert_trees_all_close(np.exp(logp), ref, atol=1e-6)
    sample = self.variant(functools.partial(D.discretized_logistic_mixture_sample,
                                            num_bins=num_bins))
    s = sample(jax.random.key(0), **{k: v[:8] for k, v in p.items()})
    chex.assert_shape(s, (8, 1, 1, 3))
    assert np.all((np.asarray(s) >= 0) & (np.asarray(s) < num_bins))
