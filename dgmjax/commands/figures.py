"""``dgmjax complete`` (LMConv) and ``dgmjax interpolate`` (Glow, NVAE): PNG figures."""

from __future__ import annotations

import math
import os

from dgmjax.commands.sampling import check_temperatures, define_temperatures, lmconv_kwargs
from dgmjax.commands.workdirs import (absl_flags, check_positive_int, config_for, define_which,
                                      need_model, print_json, require_checkpoint, restore, rgb255,
                                      save_rows, test_images, usage_error)


# --------------------------------------------------------------------------- complete

def define_complete(fl) -> None:
  define_which(fl)
  flags = absl_flags()
  flags.DEFINE_string("observed", None, "the observed region: top | bottom | left | right | "
                      "center | random:P | MASK.png (white = observed)", flag_values=fl)
  flags.DEFINE_string("order", None, "base generation order (default the first configured); "
                      "the observed pixels are moved first", flag_values=fl)
  flags.DEFINE_integer("num", 4, "completions per image", flag_values=fl)
  flags.DEFINE_integer("images", 8, "test images to complete (the first ones)", flag_values=fl)
  flags.DEFINE_float("temperature", None, "sampling temperature, > 0", flag_values=fl)
  define_temperatures(fl)
  flags.DEFINE_integer("seed", 0, "seed (random masks, binarisation, sampling)", flag_values=fl)
  flags.DEFINE_string("out", None, "output directory (default WORKDIR/completions)",
                      flag_values=fl)


def run_complete(fl) -> int:
  check_positive_int("num", fl.num)
  check_positive_int("images", fl.images)
  check_temperatures(fl)
  require_checkpoint(fl.workdir)
  cfg = config_for(fl, fl.which)
  need_model(cfg, ("lmconv",), "complete")
  kwargs = lmconv_kwargs(fl, cfg)
  kwargs.pop("order", None)
  if fl.temperature is not None:
    kwargs["temperature"] = float(fl.temperature)
  import jax
  import numpy as np
  from dgmjax import workflows
  exp, state = restore(fl, cfg)
  h, w, _ = exp.model.image_shape
  mask = workflows.observed_mask(fl.observed, h, w, rng=fl.seed)
  x = test_images(exp, fl.images, fl.seed)
  done, bpd = workflows.complete(exp.model, state.variables(ema=True), x, mask, fl.order,
                                 jax.random.key(fl.seed), num=fl.num, **kwargs)
  done, bpd = np.asarray(done), np.asarray(bpd, np.float64)
  observed = rgb255(x, exp.num_bins)
  observed[:, ~mask] = np.array([70, 110, 200], np.uint8)        # the hidden region, blue
  rows = np.concatenate([observed[:, None], rgb255(done, exp.num_bins),
                         rgb255(x, exp.num_bins)[:, None]], axis=1)
  out = fl.out or os.path.join(fl.workdir, "completions")
  tag = "mask" if fl.observed.lower().endswith(".png") else fl.observed.replace(":", "")
  png = None
  if jax.process_index() == 0:
    png = save_rows(os.path.join(out, f"complete_{tag}.png"), rows)
  n_hidden = int((~mask).sum())
  c = exp.model.image_shape[2]
  print_json({"png": png, "observed": fl.observed, "order": fl.order or "configured[0]",
          "images": int(x.shape[0]), "num": fl.num, "hidden_pixels": n_hidden,
          "hidden_bpd": float(bpd.mean()),
          "hidden_nats": float(bpd.mean() * n_hidden * c * math.log(2.0)),
          "hidden_bpd_per_image": [round(float(b), 5) for b in bpd]})
  return 0


# ------------------------------------------------------------------------ interpolate

def define_interpolate(fl) -> None:
  define_which(fl)
  flags = absl_flags()
  flags.DEFINE_integer("num", 8, "images along each path (both ends included)",
                       flag_values=fl)
  flags.DEFINE_integer("pairs", 4, "pairs of test images (images 0-1, 2-3, ...)",
                       flag_values=fl)
  flags.DEFINE_integer("seed", 0, "seed (binarisation of the test images)", flag_values=fl)
  flags.DEFINE_string("out", None, "output directory (default WORKDIR/interpolations)",
                      flag_values=fl)


def run_interpolate(fl) -> int:
  check_positive_int("num", fl.num)
  check_positive_int("pairs", fl.pairs)
  require_checkpoint(fl.workdir)
  cfg = config_for(fl, fl.which)
  need_model(cfg, ("glow", "nvae"), "interpolate")
  import jax
  import numpy as np
  exp, state = restore(fl, cfg)
  x = test_images(exp, 2 * fl.pairs, fl.seed)
  if x.shape[0] < 2:
    raise usage_error("interpolate needs at least 2 test images")
  p = x.shape[0] // 2
  x1, x2 = x[0:2 * p:2], x[1:2 * p:2]
  model, num = exp.model, fl.num
  paths = np.asarray(jax.jit(lambda v, a, b: model.interpolate(v, a, b, num))(
      state.variables(ema=True), x1, x2))                                   # [P,num,H,W,C]
  rows = np.concatenate([rgb255(x1, exp.num_bins)[:, None], rgb255(paths, exp.num_bins),
                         rgb255(x2, exp.num_bins)[:, None]], axis=1)
  out = fl.out or os.path.join(fl.workdir, "interpolations")
  png = None
  if jax.process_index() == 0:
    png = save_rows(os.path.join(out, "interpolate.png"), rows)
  print_json({"png": png, "pairs": int(p), "num": num, "model": cfg.model.name})
  return 0
