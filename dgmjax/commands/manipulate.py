"""``dgmjax manipulate`` (Glow, NVAE): semantic manipulation in latent space, a PNG grid.

    dgmjax manipulate --workdir DIR --attribute NAME|class:C [--strengths -1,-0.5,0,0.5,1]
                      [--num 8] [--direction_images 2000] [--which best|last] [--out DIR]

The Glow paper's experiment (Kingma & Dhariwal 2018, Sec. 5; openai/glow
``demo/get_manipulators.py``): the first ``--direction_images`` training images are
encoded (Glow: every level's z at the bin centres; NVAE: every group's posterior mean,
NVlabs/NVAE#15) and split by a boolean attribute (a tfds ``attributes`` entry such as
celeb_a's ``Smiling``, or ``class:C``: label C against the other labels); the direction is
the difference of the two mean latents, d = mean(z | with) - mean(z | without)
(``dgmjax.latents``). Each of the first ``--num`` test images is decoded at
z + alpha d for every strength alpha: one row per image, one column per strength (alpha
= 0 is the image's reconstruction; for NVAE, the temperature-0 decoding).
"""

from __future__ import annotations

import math
import os

from dgmjax.commands.workdirs import (absl_flags, check_positive_int, config_for, define_which,
                                      need_model, print_json, require_checkpoint, restore, rgb255,
                                      save_rows, test_images, usage_error)

DEFAULT_STRENGTHS = "-1,-0.5,0,0.5,1"


def define_manipulate(fl) -> None:
  define_which(fl)
  flags = absl_flags()
  flags.DEFINE_string("attribute", None, "the attribute: NAME (a boolean of the dataset's "
                      "tfds 'attributes', e.g. Smiling for celeb_a) or class:C (label C "
                      "against the rest)", flag_values=fl)
  flags.DEFINE_string("strengths", DEFAULT_STRENGTHS, "comma-separated alphas: z + alpha d",
                      flag_values=fl)
  flags.DEFINE_integer("num", 8, "test images to manipulate (the first ones)", flag_values=fl)
  flags.DEFINE_integer("direction_images", 2000, "training images (the first ones) whose "
                       "mean latents give the direction", flag_values=fl)
  flags.DEFINE_integer("batch", 256, "images encoded per program", flag_values=fl)
  flags.DEFINE_integer("seed", 0, "seed (binarisation of the images)", flag_values=fl)
  flags.DEFINE_string("out", None, "output directory (default WORKDIR/manipulations)",
                      flag_values=fl)


def parse_strengths(text: str) -> list:
  """"-1,0,1" -> [-1.0, 0.0, 1.0]; UsageError for an empty list or a non-finite value."""
  try:
    vals = [float(t) for t in str(text).split(",") if t.strip()]
  except ValueError:
    vals = []
  if not vals or not all(math.isfinite(v) for v in vals):
    raise usage_error(f"--strengths must be comma-separated finite numbers such as "
                      f"{DEFAULT_STRENGTHS}; got {text!r}")
  return vals


def attribute_mask(data, attribute: str, indices):
  """bool [n]: which images ``indices`` of ``data`` (an ``ImageData``) have ``attribute``:
  ``class:C`` (label == C) or the name of a boolean attribute (``data.attribute``).
  UsageError (one line) for a malformed or unknown attribute, or a dataset without it."""
  import numpy as np
  if attribute.startswith("class:"):
    c = attribute[len("class:"):]
    if not c.lstrip("-").isdigit():
      raise usage_error(f"--attribute class:C needs an integer class C; got {attribute!r}")
    if not data.has_labels:
      raise usage_error(f"--attribute {attribute}: dataset {data.name!r} has no labels; use "
                        f"one of its attributes ({', '.join(data.attribute_names) or 'none'})")
    return np.asarray(data.labels(indices)) == int(c)
  try:
    return data.attribute(attribute, indices)
  except ValueError as e:
    hint = "; or class:C (label C against the rest)" if data.has_labels else ""
    raise usage_error(f"--attribute: {e}{hint}") from None


def run_manipulate(fl) -> int:
  check_positive_int("num", fl.num)
  check_positive_int("direction_images", fl.direction_images)
  check_positive_int("batch", fl.batch)
  strengths = parse_strengths(fl.strengths)
  require_checkpoint(fl.workdir)
  cfg = config_for(fl, fl.which)
  need_model(cfg, ("glow", "nvae"), "manipulate")
  import jax
  import jax.numpy as jnp
  import numpy as np
  exp, state = restore(fl, cfg, need=("train", "test"))
  model, variables = exp.model, state.variables(ema=True)
  data = exp.train_data
  idx = np.arange(min(fl.direction_images, len(data)))
  mask = attribute_mask(data, fl.attribute, idx)
  n_with = int(mask.sum())
  if n_with in (0, len(idx)):
    raise usage_error(f"--attribute {fl.attribute}: {n_with} of the first {len(idx)} training "
                      f"images have it; the direction needs images with and without it "
                      f"(raise --direction_images or pick another attribute)")
  direction = _direction(exp, cfg.model.name, variables, idx, mask, fl.batch, fl.seed)
  x = test_images(exp, fl.num, fl.seed)
  grid = np.asarray(jax.jit(model.manipulate)(variables, x, direction,
                                              jnp.asarray(strengths, jnp.float32)))
  out = fl.out or os.path.join(fl.workdir, "manipulations")
  png = None
  if jax.process_index() == 0:
    tag = fl.attribute.replace(":", "")
    png = save_rows(os.path.join(out, f"manipulate_{tag}.png"), rgb255(grid, exp.num_bins))
  norms = [float(jnp.sqrt(jnp.sum(jnp.square(d)))) for d in direction]
  print_json({"png": png, "model": cfg.model.name, "attribute": fl.attribute,
              "strengths": strengths, "images": int(x.shape[0]),
              "direction_images": int(len(idx)), "with": n_with,
              "without": int(len(idx) - n_with),
              "direction_norm": math.sqrt(sum(n * n for n in norms)),
              "direction_norms": [round(n, 5) for n in norms]})
  return 0


def _direction(exp, name: str, variables, idx, mask, batch: int, seed: int) -> list:
  """d = mean(z | mask) - mean(z | ~mask) over the training images ``idx``, encoded
  ``batch`` at a time (the last batch padded with weight-0 rows: one program)."""
  import jax
  import numpy as np
  from dgmjax import latents
  model = exp.model

  def sums(v, x, w_with, w_without):
    zs = model.encode(v, x)[0] if name == "glow" else model.encode(v, x)
    return latents.masked_latent_sums(zs, w_with), latents.masked_latent_sums(zs, w_without)

  fn, b, acc = jax.jit(sums), min(batch, len(idx)), None
  for i, start in enumerate(range(0, len(idx), b)):
    part, m = idx[start:start + b], mask[start:start + b].astype(np.float32)
    x = exp.train_data.get(part)
    if exp.preprocess is not None:
      key = jax.random.fold_in(jax.random.key(seed), i)
      x = np.asarray(exp.preprocess(key, jax.numpy.asarray(x)), np.uint8)
    pad = b - len(part)
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], np.uint8)])
    w = np.concatenate([m, np.zeros(pad, np.float32)])
    valid = np.concatenate([np.ones(len(part), np.float32), np.zeros(pad, np.float32)])
    got = fn(variables, x, w, valid - w)
    acc = got if acc is None else jax.tree_util.tree_map(lambda a, c: a + c, acc, got)
  (pos, n_pos), (neg, n_neg) = acc
  return latents.direction_from_sums(pos, n_pos, neg, n_neg)
