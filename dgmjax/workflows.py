"""The researcher's workflows as plain functions (what ``dgmjax`` commands call).

No command-line parsing here: every function takes Python values and raises ValueError
naming what was expected.

- ``read_official_checkpoint(path, weights)``: an official PyTorch checkpoint file ->
  ``(model_name, hparams, variables)``; ``hparams_conflicts`` compares its hyper-parameters
  with a config's.
- LMConv completion (Jain et al. 2020, ajayjain/lmconv): ``observed_mask`` builds the
  observed region from a spec, ``completion_order`` visits the observed pixels first,
  ``complete`` draws completions and scores the hidden region.
- ``ensemble_log_prob``: LMConv's multi-order evaluation, the paper's ensemble
  log (1/N) sum_k p_{pi_k}(x) with the single-order values beside it.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import imageio, images, models
from dgmjax.convert import common as convert_common
from dgmjax.lmconv import orders as orders_lib

WEIGHTS = ("ema", "model")
OBSERVED_SPECS = ("top", "bottom", "left", "right", "center", "random:P", "PATH.png")


# ---------------------------------------------------------------------------
# Official checkpoints
# ---------------------------------------------------------------------------

def detect_format(obj: Mapping[str, Any]) -> str:
  """The model a loaded checkpoint mapping holds: "lmconv" | "nvae" | "glow".

  - ajayjain/lmconv ``main.py``: ``{"model_state_dict", "ema_state_dict"?, "args": dict,
    "optimizer_state_dict", "epoch", ...}`` -> "lmconv";
  - NVlabs/NVAE ``train.py`` ``checkpoint.pt``: ``{"state_dict", "args": Namespace,
    "arch_instance", "optimizer", "scheduler", "grad_scalar", "epoch", ...}`` -> "nvae";
  - a bare state_dict: rosinality/glow-pytorch (``blocks.*`` keys, ``model_*.pt``) ->
    "glow"; an LMConv ``OurPixelCNN`` state_dict (``u_init.weight``) -> "lmconv".
  """
  if "model_state_dict" in obj:
    return "lmconv"
  if "state_dict" in obj and "args" in obj:
    return "nvae"
  keys = [k[len("module."):] if k.startswith("module.") else k for k in obj]
  if keys and all(isinstance(k, str) for k in keys):
    if any(k.startswith("blocks.") for k in keys):
      return "glow"
    if "u_init.weight" in keys:
      return "lmconv"
  raise ValueError("unrecognised checkpoint: expected an ajayjain/lmconv *.pth (with "
                   "'model_state_dict'), an NVlabs/NVAE checkpoint.pt (with 'state_dict' and "
                   "'args') or a rosinality/glow-pytorch state_dict ('blocks.*' keys); got "
                   f"entries {sorted(map(str, obj))[:8]}")


def read_official_checkpoint(path, weights: str = "ema", *, hparams: Mapping | None = None,
                             model_name: str | None = None):
  """Reads an official checkpoint file and converts it to dgmjax variables.

  Args:
    path: the file (``torch.load(weights_only=True)``, zip CRC checked; see
      ``dgmjax.convert.common``), or an already-loaded mapping.
    weights: "ema" (default) takes LMConv's ``ema_state_dict`` when the file has one (the
      official ``--ema 1`` default keeps none: then the trained weights are used); "model"
      always takes ``model_state_dict``. NVAE and Glow files store one set of weights.
    hparams: create() kwargs (image_shape and num_bins included) for a file that stores no
      arguments (a rosinality Glow or a bare LMConv state_dict): required there; for files
      with arguments only its ``scan`` (the parameter layout, which official files do not
      store) is used (compare the rest with ``hparams_conflicts`` first).
    model_name: when given, the file must hold this model.

  Returns:
    ``(model_name, hparams, variables)``: "lmconv" | "nvae" | "glow", the create()
    kwargs that build the model (``models.create(model_name, **hparams)``), and its
    variables (LMConv {"params"}; NVAE {"params", "batch_stats", "spectral"}; Glow
    {"params", "constants"}).
  """
  if weights not in WEIGHTS:
    raise ValueError(f"weights must be one of {WEIGHTS}; got {weights!r}")
  obj = convert_common.load_checkpoint(path)
  name = detect_format(obj)
  if model_name is not None and model_name != name:
    raise ValueError(f"the checkpoint holds a {name!r} model; expected {model_name!r}")
  layout = {"scan": True} if (hparams or {}).get("scan") else {}
  if name == "nvae":
    from dgmjax.convert import nvae as cn
    hp = cn.hparams_from_args(obj["args"])
    model, variables = cn.load_nvae(obj, **layout)
    return name, hp, variables
  if name == "lmconv":
    from dgmjax.convert import lmconv as cl
    if "model_state_dict" in obj:
      if "args" not in obj:
        raise ValueError("the LMConv checkpoint has no 'args'; pass hparams= from a config")
      hp = cl.hparams_from_args(obj["args"])
      use_ema = weights == "ema" and "ema_state_dict" in obj
    else:
      hp = _need_hparams(hparams, name)
      use_ema = False
    model = models.create(name, **hp)
    return name, hp, cl.load_lmconv(obj, model, use_ema=use_ema)
  from dgmjax.convert import glow as cg
  hp = _need_hparams(hparams, name)
  model = models.create(name, **hp)
  return name, hp, cg.load_glow(obj, model)


def _need_hparams(hparams, name):
  if not hparams:
    raise ValueError(f"this {name} checkpoint stores no hyper-parameters: give the model's "
                     f"config (create() kwargs with image_shape and num_bins)")
  hp = dict(hparams)
  for key in ("image_shape", "num_bins"):
    if key not in hp:
      raise ValueError(f"hparams for a {name} checkpoint must include {key!r}")
  return hp


def _normalise(v):
  if isinstance(v, (list, tuple)):
    return tuple(_normalise(e) for e in v)
  if isinstance(v, (np.integer, np.floating, np.bool_)):
    return v.item()
  return v


def hparams_conflicts(file_hparams: Mapping[str, Any], config_hparams: Mapping[str, Any]
                      ) -> list[str]:
  """Sorted keys present in both mappings whose values differ (lists and tuples compare
  alike, numbers by value). Keys in only one of them are not conflicts."""
  out = []
  for k in sorted(set(file_hparams) & set(config_hparams)):
    a, b = _normalise(file_hparams[k]), _normalise(config_hparams[k])
    if a != b:
      out.append(k)
  return out


# ---------------------------------------------------------------------------
# LMConv completion
# ---------------------------------------------------------------------------

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


def ensemble_log_prob(model, variables, x, orders: str | Sequence = "s_curve:all"):
  """LMConv's multi-order evaluation (Jain et al. 2020, Table 1's order ensemble).

  orders: a spec ("s_curve:all" = the 8 s-curve variants), or a sequence of specs and/or
  permutations (``orders.parse``). Returns (ensemble float32 [B] = log (1/N) sum_k
  p_{pi_k}(x), per_order float32 [N, B] = log p_{pi_k}(x)), nats. One compiled program
  serves every order (the order is an argument, its masks built inside).
  """
  if getattr(model, "name", None) != "lmconv":
    raise ValueError(f"ensemble_log_prob needs an LMConv model; got "
                     f"{getattr(model, 'name', model)!r}")
  h, w, _ = model.image_shape
  specs = [orders] if isinstance(orders, str) else list(orders)
  if not specs:
    raise ValueError("orders must name at least one order")
  arrs = [o for s in specs for o in orders_lib.parse(s, h, w)]
  images.check_images(x, model.image_shape, model.num_bins)
  f = jax.jit(lambda v, x, o: model.log_prob(v, x, order=o))
  x = jnp.asarray(x)
  per = jnp.stack([f(variables, x, jnp.asarray(o)) for o in arrs])   # [N, B]
  return jax.nn.logsumexp(per, axis=0) - math.log(len(arrs)), per
