"""``dgmjax complete`` (LMConv) and ``dgmjax interpolate`` (Glow, NVAE): PNG figures.

``complete`` needs test images: without the dataset it stops with one line naming it and
how to prepare it. ``interpolate`` runs on a workdir alone: its endpoints are test images
where the test split can be read and, where it cannot (``--endpoints auto``, the
default), images drawn from the model, which its JSON output says (``"endpoints":
"samples"`` and a ``"note"``); ``--endpoints test`` insists on test images,
``--endpoints samples`` always draws them (at ``--temperature``)."""

from __future__ import annotations

import math
import os

from dgmjax.commands.sampling import check_temperatures, define_temperatures, lmconv_kwargs
from dgmjax.commands.workdirs import (absl_flags, check_positive_float, check_positive_int,
                                      config_for, define_which, need_model, print_json,
                                      require_checkpoint, restore, rgb255, save_rows,
                                      test_images, usage_error)


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
  from dgmjax.lmconv import completion
  exp, state = restore(fl, cfg, need=("test",))
  h, w, _ = exp.model.image_shape
  mask = completion.observed_mask(fl.observed, h, w, rng=fl.seed)
  x = test_images(exp, fl.images, fl.seed)
  done, bpd = completion.complete(exp.model, state.variables(ema=True), x, mask, fl.order,
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
  flags.DEFINE_integer("pairs", 4, "pairs of endpoints (test images 0-1, 2-3, ...)",
                       flag_values=fl)
  flags.DEFINE_enum("endpoints", "auto", ["auto", "test", "samples"], "the images the paths "
                    "join: test images (test), samples of the model (samples), or test images "
                    "when the test split can be read, else samples (auto; the JSON output "
                    "says which)", flag_values=fl)
  flags.DEFINE_float("temperature", None, "sampled endpoints: sampling temperature, > 0 "
                     "(default the model's)", flag_values=fl)
  flags.DEFINE_integer("seed", 0, "seed (binarisation of the test images; sampled endpoints)",
                       flag_values=fl)
  flags.DEFINE_string("out", None, "output directory (default WORKDIR/interpolations)",
                      flag_values=fl)


def run_interpolate(fl) -> int:
  check_positive_int("num", fl.num)
  check_positive_int("pairs", fl.pairs)
  check_positive_float("temperature", fl.temperature)
  require_checkpoint(fl.workdir)
  cfg = config_for(fl, fl.which)
  need_model(cfg, ("glow", "nvae"), "interpolate")
  import jax
  import numpy as np
  exp, state = restore(fl, cfg, need=("test",) if fl.endpoints == "test" else ())
  variables = state.variables(ema=True)
  x, info = _endpoints(fl, exp, variables)
  if x.shape[0] < 2:
    raise usage_error("interpolate needs at least 2 endpoints (test images)")
  p = x.shape[0] // 2
  x1, x2 = x[0:2 * p:2], x[1:2 * p:2]
  model, num = exp.model, fl.num
  paths = np.asarray(jax.jit(lambda v, a, b: model.interpolate(v, a, b, num))(
      variables, x1, x2))                                                   # [P,num,H,W,C]
  rows = np.concatenate([rgb255(x1, exp.num_bins)[:, None], rgb255(paths, exp.num_bins),
                         rgb255(x2, exp.num_bins)[:, None]], axis=1)
  out = fl.out or os.path.join(fl.workdir, "interpolations")
  png = None
  if jax.process_index() == 0:
    png = save_rows(os.path.join(out, "interpolate.png"), rows)
  print_json({"png": png, "pairs": int(p), "num": num, "model": cfg.model.name, **info})
  return 0


def _endpoints(fl, exp, variables):
  """uint8 [2P, H, W, C] endpoints and what the JSON output says of them (module doc)."""
  import jax
  from dgmjax.train import loop
  note = None
  if fl.endpoints != "samples":
    try:
      return test_images(exp, 2 * fl.pairs, fl.seed), {"endpoints": "test"}
    except loop.DataUnavailable:
      if fl.endpoints == "test":
        raise
      note = (f"the test split of {exp.config.data.name!r} cannot be read (not prepared?): "
              f"the endpoints are samples of the model; --endpoints=test requires test images")
  kwargs = {} if fl.temperature is None else {"temperature": float(fl.temperature)}
  x = loop.draw_samples(exp, variables, 2 * fl.pairs, jax.random.key(fl.seed), **kwargs)
  info = {"endpoints": "samples", "temperature": fl.temperature}
  return x, dict(info, note=note) if note else info
