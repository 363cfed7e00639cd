"""Discretised mixture of logistics over image levels (PixelCNN++, NVAE).

Salimans et al. 2017, "PixelCNN++" (openai/pixel-cnn ``discretized_mix_logistic_loss``),
as used by LMConv (ajayjain/lmconv) and NVAE (NVlabs/NVAE ``DiscMixLogistic``).

Data ``x`` are integers in ``{0..K-1}`` (``K = num_bins``); level ``k`` has the centre
``c_k = 2k/(K-1) - 1`` (``dgmjax.images.to_centered``) and the bin ``[c_k - h, c_k + h]``
with half-width ``h = 1/(K-1)``, except that the lowest bin extends to ``-inf`` and the
highest to ``+inf``. With ``F(z) = sigmoid(z)`` the logistic CDF, a component with mean
``mu`` and scale ``s = exp(log_s)`` gives level ``k`` the mass

    P(k) = F((c_k + h - mu)/s) - F((c_k - h - mu)/s)      (F(-inf) = 0, F(+inf) = 1).

A pixel's ``C`` channels share one mixture over ``M`` components:

    p(x) = sum_m pi_m prod_c P_{m,c}(x_c),   pi = softmax(logit_probs).

With ``C == 3`` and ``coeffs`` the channel means are coupled autoregressively (RGB):

    mu_g' = mu_g + a_m x_r,   mu_b' = mu_b + b_m x_r + g_m x_g,   (a, b, g) = tanh(coeffs),

where ``x_r, x_g`` are the centred values ``c_k`` of the observed levels. ``coeffs`` are
the network's RAW outputs: ``tanh`` is applied here, as in both official codes.

Edge bins (``edge``): ``"exact"`` (default) makes exactly level 0 and level K-1 the open
edge bins, so the masses sum to one. ``"official"`` reproduces NVlabs/NVAE
``DiscMixLogistic.log_prob``, which picks the edges by thresholds on the centred value,
``c < -0.999`` (bottom) and ``c > 0.99`` (top): at 8 bits level 254 (c = 0.992) also gets
the whole upper tail ``1 - F(min_in)``, so its mass and level 255's overlap and the
likelihood is not normalised (it overstates log p wherever level 254 occurs); with
fewer than ~200 levels the two rules agree.

Numerics follow PixelCNN++: ``log_s`` is clamped below at ``min_log_scale``; the edge bins
use ``log F`` and ``log(1 - F)`` through softplus; an interior bin whose mass is below
1e-5 is approximated by the density at its centre times its width,
``log pdf(c_k) - log((K-1)/2)`` (``midpoint_fallback=True``, the default; False keeps the
exact mass). The interior mass itself is computed in log space with
no cancellation, ``log P = log F(a) + log F(-b) + log(1 - exp(b - a))`` for the bin edges
``a > b`` (from ``F(a) - F(b) = F(a) F(-b) (1 - e^{b-a})``), which equals the official
``log(F(a) - F(b))`` wherever that one is accurate. Log-probabilities are computed in
float32 (float64 when the parameters are float64).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_FALLBACK_LOG_MASS = math.log(1e-5)


def _check_num_bins(num_bins) -> int:
  if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
    raise ValueError(f"num_bins must be an int >= 2; got {num_bins!r}")
  return int(num_bins)


def _compute_dtype(*arrays):
  return jnp.promote_types(jnp.float32, jnp.result_type(*arrays))


def _check_params(batch_shape, c, logit_probs, means, log_scales, coeffs, who):
  """Checks parameter shapes against the data's [..., C]; returns M."""
  batch_shape = tuple(batch_shape)
  lp_shape = tuple(getattr(logit_probs, "shape", ()))
  if len(lp_shape) != len(batch_shape) + 1 or lp_shape[:-1] != batch_shape:
    raise ValueError(f"{who}: logit_probs must have shape {batch_shape + ('M',)}; got {lp_shape}")
  m = lp_shape[-1]
  if m < 1:
    raise ValueError(f"{who}: logit_probs needs at least one mixture component; got {lp_shape}")
  for name, arr in (("means", means), ("log_scales", log_scales)):
    shape = tuple(getattr(arr, "shape", ()))
    if shape != batch_shape + (c, m):
      raise ValueError(f"{who}: {name} must have shape {batch_shape + (c, m)} [..., C, M]; "
                       f"got {shape}")
  if coeffs is not None:
    if c != 3:
      raise ValueError(f"{who}: coeffs (RGB coupling) need C == 3 channels; got C = {c}")
    shape = tuple(getattr(coeffs, "shape", ()))
    if shape != batch_shape + (3, m):
      raise ValueError(f"{who}: coeffs must have shape {batch_shape + (3, m)} [..., 3, M]; "
                       f"got {shape}")
  for name, arr in (("logit_probs", logit_probs), ("means", means), ("log_scales", log_scales),
                    ("coeffs", coeffs)):
    if arr is not None and not jnp.issubdtype(jnp.result_type(arr), jnp.floating):
      raise ValueError(f"{who}: {name} must be a floating-point array; got {jnp.result_type(arr)}")
  return m


def _check_levels(x, num_bins, who):
  shape = getattr(x, "shape", None)
  if shape is None or len(shape) < 1:
    raise ValueError(f"{who}: x must be an integer array [B,H,W,C]; got {shape}")
  if not np.issubdtype(np.dtype(x.dtype), np.integer):
    raise ValueError(f"{who}: x must hold integer levels in [0, {num_bins}); got dtype {x.dtype}")
  if not isinstance(x, jax.core.Tracer) and x.size:
    lo, hi = int(np.min(np.asarray(x))), int(np.max(np.asarray(x)))
    if lo < 0 or hi >= num_bins:
      raise ValueError(f"{who}: x values must lie in [0, {num_bins - 1}]; got min {lo}, max {hi}")


def _log1mexp_from_log(log_d):
  """log(1 - exp(-d)) for d = exp(log_d) > 0, stable from underflowing to huge d.

  Three regimes: the series log d - d/2 + d^2/24 for d < 1e-3 (also when d underflows),
  log(-expm1(-d)) up to log 2 and log1p(-exp(-d)) above (Maechler 2012).
  """
  d = jnp.exp(log_d)
  d_safe = jnp.maximum(d, 1e-3)
  return jnp.where(d < 1e-3, log_d - 0.5 * d + d * d / 24.0,
                   jnp.where(d_safe < math.log(2.0), jnp.log(-jnp.expm1(-d_safe)),
                             jnp.log1p(-jnp.exp(-d_safe))))


def _centered(k, num_bins, dtype):
  return k.astype(dtype) * (2.0 / (num_bins - 1)) - 1.0


def _coupled_means(xc, means, coeffs):
  """means [..., 3, M] shifted by tanh(coeffs) times the centred observed xc [..., 3]."""
  a = jnp.tanh(coeffs)
  r, g = xc[..., 0, None], xc[..., 1, None]
  return jnp.stack([means[..., 0, :],
                    means[..., 1, :] + a[..., 0, :] * r,
                    means[..., 2, :] + a[..., 1, :] * r + a[..., 2, :] * g], axis=-2)


EDGES = ("exact", "official")


def _check_edge(edge, who):
  if edge not in EDGES:
    raise ValueError(f"{who}: edge must be one of {EDGES}; got {edge!r}")
  return edge


def _component_log_probs(x, means, log_scales, coeffs, num_bins, min_log_scale,
                         midpoint_fallback, edge="exact"):
  """log P_{m,c}(x_c): [..., C, M] for x int [..., C]."""
  dtype = _compute_dtype(means, log_scales, *(() if coeffs is None else (coeffs,)))
  means = means.astype(dtype)
  log_scales = jnp.maximum(log_scales.astype(dtype), min_log_scale)
  xc = _centered(x, num_bins, dtype)
  if coeffs is not None:
    means = _coupled_means(xc, means, coeffs.astype(dtype))
  half = 1.0 / (num_bins - 1)
  inv_s = jnp.exp(-log_scales)
  centred = xc[..., None] - means
  plus_in = inv_s * (centred + half)   # upper edge, standardised
  min_in = inv_s * (centred - half)    # lower edge
  mid_in = inv_s * centred
  log_cdf_plus = -jax.nn.softplus(-plus_in)            # log F(plus_in)
  log_one_minus_cdf_min = -jax.nn.softplus(min_in)      # log (1 - F(min_in))
  log_width = math.log(2.0 * half) - log_scales          # log(plus_in - min_in)
  interior = log_cdf_plus + log_one_minus_cdf_min + _log1mexp_from_log(log_width)
  if midpoint_fallback:
    log_pdf_mid = mid_in - log_scales - 2.0 * jax.nn.softplus(mid_in)
    interior = jnp.where(interior > _FALLBACK_LOG_MASS, interior,
                         log_pdf_mid - math.log((num_bins - 1) / 2.0))
  if edge == "official":   # NVlabs/NVAE thresholds on the centred value
    c = xc[..., None]
    return jnp.where(c < -0.999, log_cdf_plus,
                     jnp.where(c > 0.99, log_one_minus_cdf_min, interior))
  k = x[..., None]
  return jnp.where(k == 0, log_cdf_plus,
                   jnp.where(k == num_bins - 1, log_one_minus_cdf_min, interior))


def mixture_params(out, channels: int, mixtures: int):
  """A network's mixture head [..., M + C*P*M] -> (logit_probs [..., M], means [..., C, M],
  log_scales [..., C, M], coeffs [..., C, M] or None), P = 3 for RGB (with the raw
  coupling coefficients) and 2 otherwise: the PixelCNN++ output layout that the official
  LMConv and NVAE heads share."""
  m = mixtures
  per = 3 if channels == 3 else 2
  rest = out[..., m:].reshape(out.shape[:-1] + (channels, per * m))
  coeffs = rest[..., 2 * m:3 * m] if channels == 3 else None
  return out[..., :m], rest[..., :m], rest[..., m:2 * m], coeffs


def discretized_logistic_mixture_log_prob(x, logit_probs, means, log_scales, coeffs=None, *,
                                          num_bins, min_log_scale=-7.0, midpoint_fallback=True,
                                          edge="exact"):
  """Per-pixel log p(x) of a discretised logistic mixture, summed over channels.

  Args:
    x: int [B,H,W,C] levels in [0, num_bins) (any leading shape [...] works).
    logit_probs: float [B,H,W,M] unnormalised mixture logits.
    means: float [B,H,W,C,M] component means in centred units ([-1, 1] is the data range).
    log_scales: float [B,H,W,C,M] log logistic scales (clamped below at ``min_log_scale``).
    coeffs: None, or RAW float [B,H,W,3,M] RGB coupling coefficients (tanh applied here);
      requires C == 3.
    num_bins: number of levels K >= 2.
    min_log_scale: lower clamp of ``log_scales`` (PixelCNN++ and NVAE use -7).
    midpoint_fallback: True (default, as PixelCNN++/LMConv/NVAE) replaces an interior bin
      mass below 1e-5 by the midpoint density times the bin width; False keeps the exact
      mass everywhere (it sums to one for any parameters; the midpoint rule can be off by a
      factor sinh(h/s)/(h/s) when the scale s is small against the half-width h).
    edge: "exact" (default; only levels 0 and K-1 are edge bins) or "official" (NVAE's
      thresholds c < -0.999 and c > 0.99 on the centred value; see the module docstring).

  Returns:
    float32 [B,H,W]: log sum_m pi_m prod_c P_{m,c}(x_c), nats (float64 for float64 inputs).
  """
  who = "discretized_logistic_mixture_log_prob"
  num_bins = _check_num_bins(num_bins)
  _check_edge(edge, who)
  _check_levels(x, num_bins, who)
  _check_params(x.shape[:-1], x.shape[-1], logit_probs, means, log_scales, coeffs, who)
  lp = _component_log_probs(x, means, log_scales, coeffs, num_bins, min_log_scale,
                            midpoint_fallback, edge)
  log_pi = jax.nn.log_softmax(logit_probs.astype(lp.dtype), axis=-1)
  return jax.nn.logsumexp(log_pi + jnp.sum(lp, axis=-2), axis=-1)


def discretized_logistic_mixture_channel_log_prob(x, logit_probs, means, log_scales, coeffs=None,
                                                  *, num_bins, min_log_scale=-7.0,
                                                  midpoint_fallback=True, edge="exact"):
  """Per-channel conditionals log p(x_c | x_<c) of the same pixel distribution.

  Same arguments as ``discretized_logistic_mixture_log_prob``. Channel ``c`` gets

      log sum_m pi_m prod_{c' <= c} P_{m,c'} - log sum_m pi_m prod_{c' < c} P_{m,c'},

  so the result, float32 [B,H,W,C], sums over C to the joint log p(x) of the pixel.
  """
  who = "discretized_logistic_mixture_channel_log_prob"
  num_bins = _check_num_bins(num_bins)
  _check_edge(edge, who)
  _check_levels(x, num_bins, who)
  _check_params(x.shape[:-1], x.shape[-1], logit_probs, means, log_scales, coeffs, who)
  lp = _component_log_probs(x, means, log_scales, coeffs, num_bins, min_log_scale,
                            midpoint_fallback, edge)
  log_pi = jax.nn.log_softmax(logit_probs.astype(lp.dtype), axis=-1)
  joint = jax.nn.logsumexp(log_pi[..., None, :] + jnp.cumsum(lp, axis=-2), axis=-1)  # [..., C]
  previous = jnp.concatenate([jnp.zeros_like(joint[..., :1]), joint[..., :-1]], axis=-1)
  return joint - previous


def discretized_logistic_mixture_sample(rng, logit_probs, means, log_scales, coeffs=None, *,
                                        num_bins, mixture_temperature=1.0,
                                        logistic_temperature=1.0, min_log_scale=-7.0,
                                        couple_levels=True, dtype=jnp.uint8):
  """Draws levels from the discretised logistic mixture.

  One component per pixel by Gumbel-max, ``argmax_m(logit_probs_m / T_mix + g_m)``
  (computed as ``argmax(logit_probs + T_mix g)``, so ``T_mix = 0`` is the plain argmax);
  then, channel after channel, ``y_c = mu_c + T_log * s_c * L`` with ``L`` standard
  logistic (``T_log = 0`` gives the mean), the RGB coupling added to ``mu_c``, ``y_c``
  clipped to [-1, 1] and rounded to the nearest level. Clipping and rounding a logistic
  draw lands in level ``k`` with exactly the mass ``P(k)`` of the log-probability, so with
  both temperatures 1 the samples follow ``discretized_logistic_mixture_log_prob``; a
  temperature ``T_log`` equals using ``log_scales + log T_log`` and ``T_mix`` equals using
  ``logit_probs / T_mix`` (NVAE's ``t``).

  Args:
    rng: PRNG key.
    logit_probs, means, log_scales, coeffs: as for the log-probability, with any leading
      shape [B,H,W] (which is the shape of the sample without C).
    num_bins: number of levels K >= 2.
    mixture_temperature, logistic_temperature: floats >= 0 (may be traced).
    min_log_scale: lower clamp of ``log_scales`` before the temperature is applied.
    couple_levels: True (default) couples the later channels to the ROUNDED earlier levels,
      which is the distribution the log-probability scores. False couples them to the
      clipped continuous draws, as the official PixelCNN++/LMConv/NVAE samplers do.
    dtype: integer dtype of the result (uint8 by default; it must hold K - 1).

  Returns:
    ``dtype`` [B,H,W,C] levels in [0, num_bins).
  """
  who = "discretized_logistic_mixture_sample"
  num_bins = _check_num_bins(num_bins)
  if not jnp.issubdtype(dtype, jnp.integer) or jnp.iinfo(dtype).max < num_bins - 1:
    raise ValueError(f"{who}: dtype must be an integer type holding {num_bins - 1}; got {dtype}")
  batch_shape = tuple(getattr(logit_probs, "shape", ()))[:-1]
  means_shape = tuple(getattr(means, "shape", ()))
  c = means_shape[-2] if len(means_shape) >= 2 else 0
  _check_params(batch_shape, c, logit_probs, means, log_scales, coeffs, who)
  for name, t in (("mixture_temperature", mixture_temperature),
                  ("logistic_temperature", logistic_temperature)):
    if not isinstance(t, jax.core.Tracer) and not float(np.min(np.asarray(t))) >= 0.0:
      raise ValueError(f"{who}: {name} must be >= 0; got {t!r}")
  fdtype = _compute_dtype(means, log_scales, *(() if coeffs is None else (coeffs,)))
  rng_mix, rng_logistic = jax.random.split(rng)
  gumbel = jax.random.gumbel(rng_mix, logit_probs.shape, fdtype)
  component = jnp.argmax(logit_probs.astype(fdtype) + mixture_temperature * gumbel, axis=-1)
  index = component[..., None, None]

  def pick(p):  # [..., C, M] -> the chosen component's [..., C]
    idx = jnp.broadcast_to(index, p.shape[:-1] + (1,))
    return jnp.take_along_axis(p.astype(fdtype), idx, axis=-1)[..., 0]

  mu = pick(means)
  scale = jnp.exp(jnp.maximum(pick(log_scales), min_log_scale)) * logistic_temperature
  noise = jax.random.logistic(rng_logistic, mu.shape, fdtype)
  a = None if coeffs is None else jnp.tanh(pick(coeffs))

  def to_level(y):
    y = jnp.clip(y, -1.0, 1.0)
    return jnp.clip(jnp.round((y + 1.0) * ((num_bins - 1) / 2.0)), 0, num_bins - 1)

  levels, used = [], []
  for ch in range(c):
    y = mu[..., ch] + scale[..., ch] * noise[..., ch]
    if a is not None and ch == 1:
      y = y + a[..., 0] * used[0]
    elif a is not None and ch == 2:
      y = y + a[..., 1] * used[0] + a[..., 2] * used[1]
    k = to_level(y)
    levels.append(k)
    used.append(_centered(k, num_bins, fdtype) if couple_levels else jnp.clip(y, -1.0, 1.0))
  return jnp.stack(levels, axis=-1).astype(dtype)
