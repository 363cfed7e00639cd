"""Diagonal normal distributions N(mu, sigma^2), parameterised by ``log_sigma``.

    log N(z; mu, sigma) = -(z - mu)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2
    KL(q || p) = log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2

All functions are elementwise over arrays of broadcast-compatible shapes; sum over the
latent axes yourself. Results are float32 (float64 for float64 inputs). NVAE's
``sigma = exp(log_sigma) + 1e-2`` is ``log_sigma' = logaddexp(log_sigma, log(1e-2))``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _broadcast(who, **arrays):
  for name, a in arrays.items():
    if getattr(a, "shape", None) is None or not jnp.issubdtype(jnp.result_type(a), jnp.floating):
      raise ValueError(f"{who}: {name} must be a floating-point array; got {a!r:.80}")
  try:
    shape = jnp.broadcast_shapes(*(a.shape for a in arrays.values()))
  except ValueError as e:
    shapes = {k: tuple(a.shape) for k, a in arrays.items()}
    raise ValueError(f"{who}: argument shapes must broadcast together; got {shapes}") from e
  dtype = jnp.promote_types(jnp.float32, jnp.result_type(*arrays.values()))
  return shape, [a.astype(dtype) for a in arrays.values()]


def normal_log_prob(z, mu, log_sigma):
  """log N(z; mu, exp(log_sigma)^2) elementwise: float32 [broadcast shape], nats."""
  _, (z, mu, log_sigma) = _broadcast("normal_log_prob", z=z, mu=mu, log_sigma=log_sigma)
  u = (z - mu) * jnp.exp(-log_sigma)
  return -0.5 * u * u - log_sigma - _HALF_LOG_2PI


def normal_sample(rng, mu, log_sigma, temperature=1.0):
  """Reparameterised z = mu + T exp(log_sigma) eps, eps ~ N(0, I): float32 [broadcast shape]."""
  shape, (mu, log_sigma) = _broadcast("normal_sample", mu=mu, log_sigma=log_sigma)
  eps = jax.random.normal(rng, shape, mu.dtype)
  return mu + temperature * jnp.exp(log_sigma) * eps


def normal_kl(mu_q, log_sigma_q, mu_p, log_sigma_p):
  """Analytic KL(q || p) elementwise, >= 0 and exactly 0 for q == p.

  Written as ``((mu_q - mu_p)/sigma_p)^2 / 2 + (expm1(2d) - 2d) / 2`` with
  ``d = log_sigma_q - log_sigma_p``, which avoids the cancellation of ``r^2 - 1 - 2 log r``.
  """
  _, (mu_q, log_sigma_q, mu_p, log_sigma_p) = _broadcast(
      "normal_kl", mu_q=mu_q, log_sigma_q=log_sigma_q, mu_p=mu_p, log_sigma_p=log_sigma_p)
  u = (mu_q - mu_p) * jnp.exp(-log_sigma_p)
  d = log_sigma_q - log_sigma_p
  return 0.5 * u * u + 0.5 * (jnp.expm1(2.0 * d) - 2.0 * d)
