"""The main job: every model trained on the offline ``digits`` data, side by side.

    dgmjax demo [--workdir runs/demo] [--models independent,glow,lmconv,nvae] [--variant smoke]

Trains each model with ``experiments/configs/MODEL_digits.py`` in
``WORKDIR/MODEL`` (resuming if a checkpoint is there), then writes
``WORKDIR/results.md`` (test bits/dim of each model, exact or bound, and the
training time) and ``WORKDIR/samples.png`` (one row of samples per model).
This is the review's likelihood comparison at the smallest scale that runs on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from dgmjax import imageio
from dgmjax.train import config as config_lib
from dgmjax.train import loop

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
MODELS = ("independent", "glow", "lmconv", "nvae")
LIKELIHOOD = {"independent": "exact", "glow": "dequantisation bound",
              "lmconv": "exact (order ensemble)", "nvae": "ELBO"}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="dgmjax demo", description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default="runs/demo")
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--variant", default="", help="config variant, e.g. 'smoke'")
  p.add_argument("--num_samples", type=int, default=16)
  args = p.parse_args(argv)

  rows, sample_rows = [], []
  for name in [m for m in args.models.split(",") if m]:
    path = os.path.join(CONFIG_DIR, f"{name}_digits.py")
    if not os.path.exists(path):
      print(f"[demo] skipping {name}: no config {path}")
      continue
    config = config_lib.load_config(path + (f":{args.variant}" if args.variant else ""))
    workdir = os.path.join(args.workdir, name)
    print(f"[demo] training {name} ({config.train.num_steps} steps) in {workdir}", flush=True)
    t0 = time.time()
    summary = loop.train(config, workdir)
    seconds = time.time() - t0
    test_bpd = summary["best_test_bpd"]  # whole test split, EMA params, best checkpoint
    exp, state = loop.restore_for_eval(config, workdir, "best")
    x = loop.draw_samples(exp, state.variables(ema=True), args.num_samples,
                          jax.random.key(0))
    sample_rows.append(imageio.make_grid(x, exp.num_bins, ncol=args.num_samples))
    rows.append(dict(model=name, test_bpd=test_bpd, likelihood=LIKELIHOOD.get(name, ""),
                     steps=int(summary["step"]), train_seconds=round(seconds, 1)))
    print(f"[demo] {name}: test bits/dim {test_bpd:.4f}", flush=True)

  if not rows:
    print("[demo] nothing trained")
    return 1
  os.makedirs(args.workdir, exist_ok=True)
  table = ["| model | test bits/dim | likelihood | steps | wall time (s) this run |",
           "|---|---|---|---|---|"]
  table += [f"| {r['model']} | {r['test_bpd']:.4f} | {r['likelihood']} | {r['steps']} | "
            f"{r['train_seconds']} |" for r in rows]
  text = "\n".join(table)
  with open(os.path.join(args.workdir, "results.md"), "w") as f:
    f.write(f"digits (8x8x1, 17 levels), {jax.devices()[0].platform}\n\n{text}\n")
  with open(os.path.join(args.workdir, "results.json"), "w") as f:
    json.dump(rows, f, indent=1)
  width = max(r.shape[1] for r in sample_rows)
  grid = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)),
                                constant_values=255) for r in sample_rows], axis=0)
  png = imageio.save_png(os.path.join(args.workdir, "samples.png"), grid, scale=4)
  print(text)
  print(f"[demo] samples (one row per model: {', '.join(r['model'] for r in rows)}): {png}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
