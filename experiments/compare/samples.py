"""The ``samples`` section: ``samples.png``, one row of samples (temperature 1) per model."""

from __future__ import annotations

import os

import jax

from dgmjax import imageio
from dgmjax.train import loop
from experiments.compare import plot
from experiments.compare.runs import Runs


def section_samples(runs: Runs, args) -> tuple[dict, str]:
  rows, res = [], {}
  n = args.num_samples
  for run in ("independent", "glow", "lmconv", "lmconv_raster", "nvae"):
    if not runs.available(run):
      continue
    exp, v = runs.get(run)
    s = loop.draw_samples(exp, v, n, jax.random.key(args.seed))
    rows.append((run, imageio.make_grid(s, exp.num_bins, ncol=n)))
    res[run] = dict(num=n)
  if not rows:
    return res, "No model to sample."
  scale = max(2, 32 // runs.get(next(iter(res)))[0].model.image_shape[0])
  png = plot.labelled_rows(os.path.join(args.out, "samples.png"), rows, scale=scale)
  res["figure"] = png
  return res, (f"{n} samples per model (temperature 1).\n\n![samples]({os.path.basename(png)})")
