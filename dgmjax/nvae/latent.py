"""NVAE's latent normals and the residual parameterisation of the posterior.

Official ``distributions.Normal`` (NVlabs/NVAE): raw network outputs (mu, log_sigma)
are soft-clamped, ``soft_clamp5(t) = 5 tanh(t / 5)``, and

    sigma = (exp(soft_clamp5(log_sigma)) + 1e-2) * temperature.

The top prior is ``Normal(0, 0)``, i.e. sigma = 1.01. For the other groups the prior
p(z_l | z_<l) = N(mu_p, sigma_p) comes from the decoder and the posterior is the prior
shifted and scaled by the encoder's (delta mu, delta log_sigma) ("residual normal",
NVAE paper eq. 2, flag ``--res_dist``):

    q = Normal(mu_p_raw + dmu, log_sigma_p_raw + dlog_sigma)

with the soft clamp applied to the SUMS of raw outputs, as official. The analytic KL
(``dgmjax.distributions.normal_kl``) then reads

    KL(q||p) = 1/2 ((mu_q - mu_p)/sigma_p)^2 + 1/2 (sigma_q/sigma_p)^2 - 1/2 - log(sigma_q/sigma_p).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp

from dgmjax.distributions import normal_kl, normal_log_prob, normal_sample


def soft_clamp5(t):
  """5 tanh(t/5): a smooth clamp to (-5, 5)."""
  return 5.0 * jnp.tanh(t / 5.0)


class LatentNormal(NamedTuple):
  """Diagonal normal (mu, log sigma) after NVAE's clamp and +1e-2; arrays [B,h,w,L]."""
  mu: jnp.ndarray
  log_sigma: jnp.ndarray

  @classmethod
  def from_raw(cls, mu, log_sigma, temperature=1.0):
    """Official ``Normal(mu, log_sigma, temp)`` from raw network outputs (float32)."""
    mu = soft_clamp5(mu.astype(jnp.float32))
    ls = soft_clamp5(log_sigma.astype(jnp.float32))
    ls = jnp.logaddexp(ls, math.log(1e-2))          # log(exp(ls) + 1e-2)
    if not (isinstance(temperature, (int, float)) and temperature == 1.0):
      ls = ls + jnp.log(jnp.asarray(temperature, jnp.float32))
    return cls(mu, ls)

  def sample(self, rng):
    return normal_sample(rng, self.mu, self.log_sigma)

  def log_p(self, z):
    return normal_log_prob(z, self.mu, self.log_sigma)

  def kl(self, other: "LatentNormal"):
    return normal_kl(self.mu, self.log_sigma, other.mu, other.log_sigma)


def split_params(param):
  """[..., 2L] conv output -> (mu, log_sigma), each [..., L] (official torch.chunk)."""
  l = param.shape[-1] // 2
  return param[..., :l], param[..., l:]
