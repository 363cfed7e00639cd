"""``dgmjax complete`` (LMConv) and ``dgmjax interpolate`` (Glow, NVAE): PNG figures."""

from __future__ import annotations

import math
import os

from dgmjax.commands.sampling import _check_temperatures, _define_temperatures, _lmconv_kwargs
from dgmjax.commands.workdirs import (_flags, _need_model, _positive_int, _print, _restore, _rgb255,
                                      _save_rows, _test_images, _usage, config_for)


# --------------------------------------------------------------------------- complete

def define_complete(fl) -> None:
  from dgmjax import cli
  cli._define_eval(fl)  # pylint: disable=protected-access  (--which)
  flags = _flags()
  flags.DEFINE_string("observed", None, "the observed region: top | bottom | left | right | "
                      "center | random:P | MASK.png (white = observed)", flag_values=fl)
  flags.DEFINE_string("order", None, "base generation order (default the first configured); "
                      "the observed pixels are moved first", flag_values=fl)
  flags.DEFINE_integer("num", 4, "completions per image", flag_values=fl)
  flags.DEFINE_integer("images", 8, "test images to complete (the first ones)", flag_values=fl)
  flags.DEFINE_float("temperature", None, "sampling temperature, > 0", flag_values=fl)
  _define_temperatures(fl)
  flags.DEFINE_integer("seed", 0, "seed (random masks, binarisation, sampling)", flag_values=fl)
  flags.DEFINE_string("out", None, "output directory (default WORKDIR/completions)",
                      flag_values=fl)


def run_complete(fl) -> int:
  from dgmjax import cli
  _positive_int("num", fl.num)
  _positive_int("images", fl.images)
  _check_temperatures(fl)
  cli._require_checkpoint(fl.workdir)  # pylint: disable=protected-access
  cfg = config_for(fl, fl.which)
  _need_model(cfg, ("lmconv",), "complete")
  kwargs = _lmconv_kwargs(fl, cfg)
  kwargs.pop("order", None)
  if fl.temperature is not None:
    kwargs["temperature"] = float(fl.temperature)
  import jax
  import numpy as np
  from dgmjax import workflows
  exp, state = _restore(fl, cfg)
  h, w, _ = exp.model.image_shape
  mask = workflows.observed_mask(fl.observed, h, w, rng=fl.seed)
  x = _test_images(exp, fl.images, fl.seed)
  done, bpd = workflows.complete(exp.model, state.variables(ema=True), x, mask, fl.order,
                                 jax.random.key(fl.seed), num=fl.num, **kwargs)
  done, bpd = np.asarray(done), np.asarray(bpd, np.float64)
  observed = _rgb255(x, exp.num_bins)
  observed[:, ~mask] = np.array([70, 110, 200], np.uint8)        # the hidden region, blue
  rows = np.concatenate([observed[:, None], _rgb255(done, exp.num_bins),
                         _rgb255(x, exp.num_bins)[:, None]], axis=1)
  out = fl.out or os.path.join(fl.workdir, "completions")
  tag = "mask" if fl.observed.lower().endswith(".png") else fl.observed.replace(":", "")
  png = None
  if jax.process_index() == 0:
    png = _save_rows(os.path.join(out, f"complete_{tag}.png"), rows)
  n_hidden = int((~mask).sum())
  c = exp.model.image_shape[2]
  _print({"png": png, "observed": fl.observed, "order": fl.order or "configured[0]",
          "images": int(x.shape[0]), "num": fl.num, "hidden_pixels": n_hidden,
          "hidden_bpd": float(bpd.mean()),
          "hidden_nats": float(bpd.mean() * n_hidden * c * math.log(2.0)),
          "hidden_bpd_per_image": [round(float(b), 5) for b in bpd]})
  return 0


# ------------------------------------------------------------------------ interpolate

def define_interpolate(fl) -> None:
  from dgmjax import cli
  cli._define_eval(fl)  # pylint: disable=protected-access  (--which)
  flags = _flags()
  flags.DEFINE_integer("num", 8, "images along each path (both ends included)",
                       flag_values=fl)
  flags.DEFINE_integer("pairs", 4, "pairs of test images (images 0-1, 2-3, ...)",
                       flag_values=fl)
  flags.DEFINE_integer("seed", 0, "seed (binarisation of the test images)", flag_values=fl)
  flags.DEFINE_string("out", None, "output directory (default WORKDIR/interpolations)",
                      flag_values=fl)


def run_interpolate(fl) -> int:
  from dgmjax import cli
  _positive_int("num", fl.num)
  _positive_int("pairs", fl.pairs)
  cli._require_checkpoint(fl.workdir)  # pylint: disable=protected-access
  cfg = config_for(fl, fl.which)
  _need_model(cfg, ("glow", "nvae"), "interpolate")
  import jax
  import numpy as np
  exp, state = _restore(fl, cfg)
  x = _test_images(exp, 2 * fl.pairs, fl.seed)
  if x.shape[0] < 2:
    raise _usage("interpolate needs at least 2 test images")
  p = x.shape[0] // 2
  x1, x2 = x[0:2 * p:2], x[1:2 * p:2]
  model, num = exp.model, fl.num
  paths = np.asarray(jax.jit(lambda v, a, b: model.interpolate(v, a, b, num))(
      state.variables(ema=True), x1, x2))                                   # [P,num,H,W,C]
  rows = np.concatenate([_rgb255(x1, exp.num_bins)[:, None], _rgb255(paths, exp.num_bins),
                         _rgb255(x2, exp.num_bins)[:, None]], axis=1)
  out = fl.out or os.path.join(fl.workdir, "interpolations")
  png = None
  if jax.process_index() == 0:
    png = _save_rows(os.path.join(out, "interpolate.png"), rows)
  _print({"png": png, "pairs": int(p), "num": num, "model": cfg.model.name})
  return 0
