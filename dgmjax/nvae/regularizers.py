"""NVAE's training-time terms: KL warm-up and balancing, spectral and BN regularisers.

Follows NVlabs/NVAE ``utils.py`` (``kl_coeff``, ``kl_balancer_coeff``, ``kl_balancer``)
and ``model.py`` (``spectral_norm_parallel``, ``batchnorm_loss``), with the spectral
power-iteration vectors made explicit state (the official keeps them in Python dicts
that no checkpoint saves).

KL warm-up:   beta(t) = max(min((t - t_const) / t_anneal, 1), beta_min).
KL balancing (only while beta < 1): with kl [B, G] the per-group KLs and alpha_g the
fixed 'square' coefficients, gamma_g = (mean_b |kl_bg| + 0.01) / alpha_g * sum_g'(...),
renormalised to mean 1 over groups and treated as constants; the KL term is
beta * sum_g gamma_g kl_bg.
Spectral regulariser: L_SR = sum_i sigma_max(W_i) over every convolution's effective
kernel W_i viewed as [O, I*kh*kw], each sigma estimated as u^T W v by power iteration
batched over the kernels of equal shape. BN regulariser: L_BN = sum_l max_c |gamma_lc|.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

NORMALIZE_EPS = 1e-3      # F.normalize(..., eps=1e-3) in the official power iteration
NUM_POWER_ITER = 4        # per training step; 10x on the first call (here: at init)


def kl_coeff(step, anneal_steps, const_steps, min_coeff):
  """beta(step) = max(min((step - const_steps) / anneal_steps, 1), min_coeff); 1 when
  ``anneal_steps`` is 0 or ``step`` is None."""
  if step is None or anneal_steps <= 0:
    return jnp.float32(1.0)
  step = jnp.asarray(step, jnp.float32)
  return jnp.maximum(jnp.minimum((step - const_steps) / anneal_steps, 1.0), min_coeff)


def kl_balancer_coeff(groups_per_scale: Sequence[int]):
  """The official 'square' alpha [G], in decoder order (coarsest scale first):
  alpha = 4**i / groups(i) for scale i (i = 0 coarsest), divided by its minimum."""
  n = len(groups_per_scale)
  coeff = []
  for i in range(n):
    g = groups_per_scale[n - i - 1]
    coeff += [float(np.square(2 ** i)) / g] * g
  coeff = np.asarray(coeff, np.float32)
  return coeff / coeff.min()


def kl_balancer(kl_all, beta, alpha, balance: bool = True):
  """kl_all [B, G] -> (beta * balanced kl [B], coefficients gamma [G]).

  While ``beta < 1`` (and ``balance``) each group's KL is reweighted by the stop-gradient
  coefficients gamma (see the module docstring); otherwise gamma = 1.
  """
  alpha = jnp.asarray(alpha, jnp.float32)[None, :]
  c = jnp.mean(jnp.abs(kl_all), axis=0, keepdims=True) + 0.01
  c = c / alpha * jnp.sum(c)
  c = c / jnp.mean(c, axis=1, keepdims=True)
  c = jax.lax.stop_gradient(c[0])
  if balance:
    gamma = jnp.where(beta < 1.0, c, jnp.ones_like(c))
  else:
    gamma = jnp.ones_like(c)
  return beta * jnp.sum(kl_all * gamma[None, :], axis=1), gamma


def _normalize(v):
  return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), NORMALIZE_EPS)


def _power_step(w, u, v):
  v = _normalize(jnp.einsum("nr,nrc->nc", u, w))
  u = _normalize(jnp.einsum("nrc,nc->nr", w, v))
  return u, v


def power_iteration(w, u, v, num_iter: int):
  """Batched power iteration on w [N, R, C] from u [N, R] (v [N, C] is overwritten first,
  as official): v <- normalize(u^T W), u <- normalize(W v), ``num_iter`` times."""
  return jax.lax.fori_loop(0, num_iter, lambda _, uv: _power_step(w, *uv), (u, v))


def _power_iteration_groups(weights: dict, uv: dict, num_iter: int) -> dict:
  """``power_iteration`` for every shape group inside ONE loop (one XLA while loop
  instead of one per group: much faster to compile)."""
  ws = {k: jax.lax.stop_gradient(w.astype(jnp.float32)) for k, w in weights.items()}
  body = lambda _, c: {k: _power_step(ws[k], *c[k]) for k in c}
  return jax.lax.fori_loop(0, num_iter, body, uv)


def group_key(shape) -> str:
  return f"{shape[0]}x{shape[1]}"


def group_weights(sown) -> dict:
  """Stacks the sown kernel matrices by shape: {"RxC": [N, R, C]}, in the order of the
  sown tree's leaves (module paths); a leaf [N,R,C] (sown by a scanned layer) gives its N
  members in turn."""
  groups: dict = {}
  for w in jax.tree_util.tree_leaves(sown):
    w = w if w.ndim == 3 else w[None]           # [N,R,C]: sown inside a scan over N groups
    groups.setdefault(group_key(w.shape[1:]), []).append(w)
  return {k: jnp.concatenate(ws) for k, ws in groups.items()}


def init_spectral_state(rng, weights: dict, num_iter: int = 10 * NUM_POWER_ITER) -> dict:
  """{"RxC": {"u": [N,R], "v": [N,C]}}: normalised Gaussian vectors, then ``num_iter``
  power iterations (the official first call). All groups' vectors are slices of ONE
  normal draw: a draw per group made XLA compile dozens of random-number kernels (NVAE
  digits smoke: 48 draws, 7.7 s of compilation; one draw: 4.9 s)."""
  shapes = [(k, w.shape) for k, w in sorted(weights.items())]
  z = jax.random.normal(rng, (sum(n * (r + c) for _, (n, r, c) in shapes),), jnp.float32)
  uv, off = {}, 0
  for k, (n, r, c) in shapes:
    u, v = z[off:off + n * r], z[off + n * r:off + n * (r + c)]
    off += n * (r + c)
    uv[k] = (_normalize(u.reshape(n, r)), _normalize(v.reshape(n, c)))
  uv = _power_iteration_groups(weights, uv, num_iter)
  return {k: {"u": u, "v": v} for k, (u, v) in uv.items()}


def spectral_loss(weights: dict, state: dict, num_iter: int = NUM_POWER_ITER):
  """(sum_i u_i^T W_i v_i, new state) after ``num_iter`` stop-gradient power iterations."""
  if set(weights) != set(state):
    raise ValueError(f"spectral state has groups {sorted(state)}, the model's kernels form "
                     f"{sorted(weights)}; re-initialise the model's variables")
  uv = _power_iteration_groups(weights, {k: (state[k]["u"], state[k]["v"]) for k in weights},
                               num_iter)
  loss = jnp.float32(0.0)
  new_state = {}
  for k in sorted(weights):
    u, v = (jax.lax.stop_gradient(a) for a in uv[k])
    w = weights[k].astype(jnp.float32)
    loss = loss + jnp.sum(jnp.einsum("nr,nrc,nc->n", u, w, v))
    new_state[k] = {"u": u, "v": v}
  return loss, new_state


def batchnorm_loss(params) -> jax.Array:
  """sum over BatchNorm layers of max_c |scale_c| (every dict holding a ``scale`` leaf;
  a scale [N,C] stacked by the scanned layout counts as N layers)."""
  total = jnp.float32(0.0)

  def walk(tree):
    nonlocal total
    if isinstance(tree, dict) or hasattr(tree, "items"):
      if "scale" in tree and not hasattr(tree["scale"], "items"):
        total = total + jnp.sum(jnp.max(jnp.abs(tree["scale"]), axis=-1))
      for k, v in tree.items():
        if hasattr(v, "items"):
          walk(v)
  walk(params)
  return total


def weight_decay_norm_coeff(beta, final: float, init: float, anneal: bool):
  """lambda: ``final``, or exp((1-beta) log init + beta log final) when annealed."""
  if not anneal:
    return jnp.float32(final)
  return jnp.exp((1.0 - beta) * np.log(init) + beta * np.log(final))
