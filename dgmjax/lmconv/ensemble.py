"""LMConv's order ensemble (Jain, Abbeel & Pathak 2020, Table 1), written once.

For orders pi_1..pi_N (int [H*W] each) and an image x,

    log p_ens(x) = log (1/N) sum_k p_{pi_k}(x) = logsumexp_k log p_{pi_k}(x) - log N,

a mixture of the N autoregressive models the shared network defines, so
log p_ens(x) >= min_k log p_{pi_k}(x) and <= max_k. ``LMConvModel.log_prob`` (order
None: the configured orders), ``dgmjax eval --orders``, ``dgmjax compare`` and library
users all call this module.

    names, orders = parse_orders("s_curve:all,hilbert", h, w)   # 9 names, int32 [9, H*W]
    ens, per = ensemble_log_prob(model, variables, x, orders)     # [B], [N, B] nats
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import images
from dgmjax.lmconv import orders as orders_lib


def parse_orders(orders: str | Sequence, h: int, w: int) -> tuple[list[str], np.ndarray]:
  """Order specs -> ``(names, int32 [N, H*W])``.

  orders: comma-separated specs (``"s_curve:all,hilbert"``; ``orders.parse``: "NAME",
    "NAME:K", "NAME:all" = its 8 variants) or a sequence of specs and/or permutations.
  names: one per order ("s_curve:3" for the variants of ":all", "perm:i" for the i-th
    permutation given as an array). ValueError for a bad spec or none at all.
  """
  specs = [s.strip() for s in orders.split(",") if s.strip()] if isinstance(orders, str) \
      else list(orders)
  names, arrs = [], []
  for i, s in enumerate(specs):
    got = orders_lib.parse(s, h, w)
    if isinstance(s, str):
      base = s.split(":")[0]
      names += [f"{base}:{k}" for k in range(len(got))] if s.endswith(":all") else [s]
    else:
      names.append(f"perm:{i}")
    arrs += got
  if not arrs:
    raise ValueError(f"orders must name at least one order; got {orders!r}")
  return names, np.stack(arrs).astype(np.int32)


def log_mean_exp(per_order):
  """[N, B] log p_{pi_k}(x) -> [B] log (1/N) sum_k p_{pi_k}(x) (stable: logsumexp)."""
  return jax.nn.logsumexp(per_order, axis=0) - math.log(per_order.shape[0])


def per_order_log_prob(model, variables, x, orders=None):
  """[N, B] log p_{pi_k}(x) in nats, one ``jax.lax.map`` step per order (one network's
  memory at a time).

  orders: None for the model's configured orders; int [N, H*W] (concrete: their masks are
    built once in numpy; traced: inside the program).
  """
  if orders is None or not isinstance(orders, jax.core.Tracer):
    masks = model.order_masks(orders)
    return jax.lax.map(lambda m: model.masked_log_prob(variables, x, m), masks)
  return jax.lax.map(lambda o: model.log_prob(variables, x, order=o), orders)


def ensemble_log_prob(model, variables, x, orders: str | Sequence | None = "s_curve:all"):
  """``(ensemble float32 [B], per_order float32 [N, B])`` in nats: log p_ens(x) (module
  doc) and each log p_{pi_k}(x), one compiled program for all N orders.

  orders: specs or permutations (``parse_orders``), an int [N, H*W] array, or None for
  the model's configured orders. x: uint8 [B, H, W, C].
  """
  if getattr(model, "name", None) != "lmconv":
    raise ValueError(f"the order ensemble needs an LMConv model; got "
                     f"{getattr(model, 'name', model)!r}")
  images.check_images(x, model.image_shape, model.num_bins)
  if orders is not None and not isinstance(orders, np.ndarray):
    orders = parse_orders(orders, *model.image_shape[:2])[1]
  per = _per_order_masks(model, variables, jnp.asarray(x), model.order_masks(orders))
  return log_mean_exp(per), per


@functools.partial(jax.jit, static_argnums=0)
def _per_order_masks(model, variables, x, masks):
  """[N, B]: compiled once per (model, shapes); the masks [N, ...] are an argument."""
  return jax.lax.map(lambda m: model.masked_log_prob(variables, x, m), masks)
