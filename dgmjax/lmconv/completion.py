"""LMConv completion (Jain, Abbeel & Pathak 2020; ajayjain/lmconv): the hidden region of
an image drawn given the observed one, and scored.

- ``observed_mask``: the observed region, bool [H, W], from a spec ("top", "center",
  "random:P", a PNG mask);
- ``completion_order``: a base order with the observed pixels moved first (stable), so
  the hidden pixels' conditionals are p(x_i | observed, earlier hidden);
- ``complete``: completions of images and the conditional bits/dim of their hidden region,
  -log p(x_hidden | x_observed) / (n_hidden C ln 2).
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import imageio, images
from dgmjax.lmconv import orders as orders_lib

OBSERVED_SPECS = ("top", "bottom", "left", "right", "center", "random:P", "PATH.png")


def _check_hw(h, w):
  if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
             for d in (h, w)):
    raise ValueError(f"H and W must be positive ints; got {h!r}, {w!r}")
  return int(h), int(w)


def observed_mask(spec: str, h: int, w: int, rng=None) -> np.ndarray:
  """The observed region, bool [H, W] (True = observed, kept; False = to complete).

  spec:
    "top" | "bottom" | "left" | "right": that half observed (rows < H//2, rows >= H - H//2,
      ... ; the other half completed, e.g. "top" completes the bottom half);
    "center": the border observed and the central (H/2 x W/2) block hidden, the paper's
      centre-completion task (``orders.center_last`` puts that block last);
    "random:P": each pixel observed independently with probability P in [0, 1]
      (``rng``: a ``numpy.random.Generator`` or an int seed; default seed 0);
    a path to a PNG of size H x W: observed where it shows white, hidden where it shows
      black, in any PNG mode (``dgmjax.imageio.read_mask_png``; grey is refused).
  """
  h, w = _check_hw(h, w)
  if not isinstance(spec, (str, os.PathLike)):
    raise ValueError(f"observed spec must be a string, one of {OBSERVED_SPECS}; got {spec!r}")
  spec = os.fspath(spec)
  m = np.zeros((h, w), bool)
  if spec == "top":
    m[:h // 2] = True
  elif spec == "bottom":
    m[h - h // 2:] = True
  elif spec == "left":
    m[:, :w // 2] = True
  elif spec == "right":
    m[:, w - w // 2:] = True
  elif spec == "center":
    m[:] = True
    m[h // 4: h - h // 4, w // 4: w - w // 4] = False
  elif spec.startswith("random:"):
    try:
      p = float(spec.split(":", 1)[1])
    except ValueError:
      p = float("nan")
    if not 0.0 <= p <= 1.0:
      raise ValueError(f"observed spec 'random:P' needs P in [0, 1]; got {spec!r}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(
        0 if rng is None else rng)
    m = gen.random((h, w)) < p
  elif spec.lower().endswith(".png"):
    m = imageio.read_mask_png(spec, h, w)
  else:
    raise ValueError(f"unknown observed spec {spec!r}; expected one of {OBSERVED_SPECS}")
  return m


def completion_order(mask, base_order) -> np.ndarray:
  """``base_order`` (int [H*W]) reordered stably so every observed pixel (``mask`` True,
  bool [H, W]) comes before every hidden one: int32 [H*W]. Under it the hidden pixels'
  conditionals are p(x_i | observed, earlier hidden)."""
  base = np.asarray(base_order)
  mask = np.asarray(mask)
  if mask.dtype != bool or mask.ndim != 2 or mask.size != base.size:
    raise ValueError(f"mask must be bool [H, W] with H*W = {base.size}; got {mask.dtype} "
                     f"{mask.shape}")
  orders_lib.validate(base, *mask.shape)
  return orders_lib.observed_first(base, mask)


def complete(model, variables, x, mask, order, rng, num: int = 1, **temperatures):
  """LMConv completions of the hidden region and its conditional bits/dim.

  Args:
    model: an ``LMConvModel``; variables: its {"params"}.
    x: uint8 [B,H,W,C] test images (hidden values are ignored for sampling).
    mask: bool [H, W], True where observed (``observed_mask``).
    order: the base order (a spec like "s_curve", an index, or int [H*W]); the pixels are
      generated in ``completion_order(mask, order)``.
    rng: PRNG key; num: completions per image; temperatures: passed to ``model.complete``.

  Returns:
    (completions uint8 [B, num, H, W, C], equal to x where observed;
     hidden_bpd float32 [B] = -log p(x_hidden | x_observed) / (n_hidden C ln 2), the
     conditional bits/dim of the original hidden pixels under that order).
  """
  if getattr(model, "name", None) != "lmconv":
    raise ValueError(f"complete needs an LMConv model; got {getattr(model, 'name', model)!r}")
  if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
    raise ValueError(f"num must be a positive int; got {num!r}")
  h, w, c = model.image_shape
  images.check_images(x, model.image_shape, model.num_bins)
  mask = np.asarray(mask)
  if mask.dtype != bool or mask.shape != (h, w):
    raise ValueError(f"mask must be bool [H, W] = {(h, w)}; got {mask.dtype} {mask.shape}")
  n_hidden = int((~mask).sum())
  if n_hidden == 0:
    raise ValueError("the mask observes every pixel: nothing to complete")
  base = np.asarray(model._order(order))  # pylint: disable=protected-access
  b = x.shape[0]
  xs = jnp.repeat(jnp.asarray(x, jnp.uint8), num, axis=0)          # [B*num, H, W, C]
  done = jax.jit(lambda v, r, xs, o: model.complete(v, r, xs, mask, o, **temperatures))(
      variables, rng, xs, jnp.asarray(base))
  hidden = jax.jit(lambda v, x, o: model.hidden_log_prob(v, x, mask, o))(
      variables, jnp.asarray(x), jnp.asarray(base))
  bpd = -hidden / (n_hidden * c * math.log(2.0))
  return done.reshape((b, num, h, w, c)), bpd
