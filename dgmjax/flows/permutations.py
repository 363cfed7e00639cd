"""Glow's channel permutations (Kingma & Dhariwal 2018, section 3.2), as bijectors on
images [B,H,W,C] acting on each pixel's channel vector:

- ``InvConv1x1``: y = W x with a learned W [C,C]; log_det = H W log|det W|;
- ``InvConv1x1LU``: the same with W = P L (U + diag(s)); log_det = H W sum log|s|;
- ``Permute``: a fixed permutation, ``"reverse"`` or a seeded ``"shuffle"``; log_det = 0.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.flows.bijectors import (
  CONSTANTS,
  Bijector,
  broadcast_logdet,
  check_nhwc,
  known_channels,
  wide,
)


def random_rotation(rng, c: int) -> jax.Array:
  """An orthogonal [c,c] matrix: Q of the QR decomposition of a standard normal matrix."""
  q, _ = jnp.linalg.qr(jax.random.normal(rng, (c, c), jnp.float32))
  return q


def apply_1x1(x, w):
  """y[..., o] = sum_i w[o, i] x[..., i]: a 1x1 convolution with a PyTorch-layout [O,I] kernel."""
  return jnp.einsum("bhwi,oi->bhwo", x, w.astype(x.dtype))


class InvConv1x1(Bijector):
  """Invertible 1x1 convolution with a plain weight W [C,C] (initialised as a rotation).

  forward: y = W x per pixel; inverse: x = W^-1 y; log_det = H * W_img * log|det W|.
  log|det W| comes from ``jnp.linalg.slogdet`` (LU with partial pivoting). openai/glow
  evaluates it in float64; here it is float64 when ``jax_enable_x64`` is on and float32
  otherwise, which is accurate to ~1e-6 relative for the well-conditioned W a Glow
  learns (use ``InvConv1x1LU`` when exactness matters: its log-det is a plain sum).
  """

  @nn.compact
  def __call__(self, x, inverse=False):
    b, h, w, c = check_nhwc(x, "InvConv1x1", known_channels(self, "params", "weight"))
    weight = self.param("weight", lambda rng: random_rotation(rng, c))
    precision = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    logabsdet = jnp.linalg.slogdet(weight.astype(precision))[1].astype(wide(x.dtype))
    log_det = broadcast_logdet(h * w * logabsdet, b, x.dtype)
    if inverse:
      return apply_1x1(x, jnp.linalg.inv(weight)), -log_det
    return apply_1x1(x, weight), log_det


class InvConv1x1LU(Bijector):
  """Invertible 1x1 convolution in the LU parameterisation (Glow paper, section 3.2).

  W = P L (U + diag(sign * exp(log_s))), with P a fixed permutation (constant ``w_p``),
  L unit lower triangular (parameter ``w_l``, strict lower part used), U strictly upper
  (``w_u``), ``s_sign`` fixed (constant) and ``w_s = log|s|`` trained; initialised from
  the LU decomposition of a random rotation. log_det = H * W_img * sum(w_s), exact and
  cheap. Names follow rosinality/glow-pytorch's ``InvConv2dLU``.
  """

  @nn.compact
  def __call__(self, x, inverse=False):
    b, h, w, c = check_nhwc(x, "InvConv1x1LU", known_channels(self, "params", "w_s"))
    if self.is_initializing():
      p, l, u = jax.scipy.linalg.lu(random_rotation(self.make_rng("params"), c))
      diag = jnp.diag(u)
    else:
      p = l = u = jnp.eye(c, dtype=jnp.float32)
      diag = jnp.ones((c,), jnp.float32)
    w_p = self.variable(CONSTANTS, "w_p", lambda: p).value
    s_sign = self.variable(CONSTANTS, "s_sign", lambda: jnp.sign(diag)).value
    w_l = self.param("w_l", lambda _: l)
    w_u = self.param("w_u", lambda _: jnp.triu(u, 1))
    w_s = self.param("w_s", lambda _: jnp.log(jnp.abs(diag)))
    lower = jnp.tril(w_l, -1) + jnp.eye(c, dtype=w_l.dtype)
    upper = jnp.triu(w_u, 1) + jnp.diag(s_sign * jnp.exp(w_s))
    log_det = broadcast_logdet(h * w * jnp.sum(w_s), b, x.dtype)
    if inverse:
      # W^-1 = U^-1 L^-1 P^T with triangular solves (no general inverse).
      eye = jnp.eye(c, dtype=jnp.float32)
      l_inv = jax.scipy.linalg.solve_triangular(lower, eye, lower=True, unit_diagonal=True)
      u_inv = jax.scipy.linalg.solve_triangular(upper, eye, lower=False)
      return apply_1x1(x, u_inv @ l_inv @ w_p.T), -log_det
    return apply_1x1(x, w_p @ lower @ upper), log_det


def permutation_indices(mode: str, seed: int, c: int) -> np.ndarray:
  """int [c]: y[..., i] = x[..., perm[i]] for ``Permute(mode, seed)``."""
  if mode == "reverse":
    return np.arange(c)[::-1].copy()
  if mode == "shuffle":
    return np.random.RandomState(seed).permutation(c)
  raise ValueError(f"Permute mode must be 'reverse' or 'shuffle'; got {mode!r}")


class Permute(Bijector):
  """A fixed channel permutation: ``"reverse"`` (openai/glow's default ablation) or a
  ``"shuffle"`` drawn once from ``numpy.random.RandomState(seed)``. log_det = 0.
  """
  mode: str = "reverse"
  seed: int = 0

  def permutation(self, c: int) -> np.ndarray:
    return permutation_indices(self.mode, self.seed, c)

  def __call__(self, x, inverse=False, perm=None):
    """``perm``: an optional int [C] array (may be traced, e.g. one row of a scan's
    per-step permutations) used instead of ``permutation(C)``."""
    b, _, _, c = check_nhwc(x, "Permute")
    if perm is None:
      perm = self.permutation(c)
      if inverse:
        perm = np.argsort(perm)
    elif inverse:
      perm = jnp.zeros_like(perm).at[perm].set(jnp.arange(c, dtype=perm.dtype))
    return jnp.take(x, perm, axis=-1), jnp.zeros((b,), jnp.float32)
