"""Compile time against depth: does a model's training step compile in time flat in depth?

    python -m experiments.bench.compile_depth [--models glow,lmconv,nvae] [--out F.json]
    dgmjax bench compile_depth

For each model, the ahead-of-time lowering + XLA compilation of one training step
(value_and_grad of ``loss`` + an Adam update, the step ``dgmjax train`` compiles) at a
small width and at depth d and 4d, each in its own subprocess (no cache shared):

- glow: K = 8 and 32 steps per level (L=3, width 64, 16x16x3, B8), each level's steps
  one scan body (the default), fully unrolled (``compute.unroll=True``) and
  ``compute.remat="reversible"``;
- lmconv: R = 1 and 4 gated resnets per stage (F=32, 16x16x1, B8), each stream's resnets
  one scan body (the default) and fully unrolled (``compute.unroll=True``);
- nvae: 2 and 8 groups per scale (channels 16, 2 scales, 16x16x1, B8), each scale's
  groups one scan body (the default), the same under the paper's objective (spectral/BN
  regulariser 1e-2, KL warm-up and balancing) and fully unrolled (``compute.unroll=True``).

Prints seconds per depth and the ratio compile(4d) / compile(d): ~4 for code that is
unrolled (XLA compiles every copy), ~1 when the repeated blocks are one loop body.
"""

from __future__ import annotations

import argparse
import sys

from experiments.bench import common, scaffold

CASES = {
    "glow": [("scan", {}), ("unrolled", {"compute": {"unroll": True}}),
             ("reversible", {"compute": {"remat": "reversible"}})],
    "lmconv": [("scan", {}), ("unrolled", {"compute": {"unroll": True}})],
    "nvae": [("scan", {}), ("scan, paper objective", {"weight_decay_norm": 1e-2,
                                                      "kl_warmup_steps": 100}),
             ("unrolled", {"compute": {"unroll": True}})],
}
DEPTH_KEY = {"glow": "steps", "lmconv": "resnets", "nvae": "groups_per_scale"}
DEPTHS = {"glow": (8, 32), "lmconv": (1, 4), "nvae": (2, 8)}


def _model(name: str, depth: int, extra: dict):
  import dgmjax
  if name == "glow":
    return dgmjax.models.create("glow", (16, 16, 3), 256, levels=3, steps=depth, width=64,
                                **extra), (8, 16, 16, 3), 256
  if name == "lmconv":
    return dgmjax.models.create("lmconv", (16, 16, 1), 2, filters=32, resnets=depth,
                                dropout=0.0, orders=("s_curve:all",), **extra), (8, 16, 16, 1), 2
  return dgmjax.models.create(
      "nvae", (16, 16, 1), 2, channels=16, scales=2, groups_per_scale=depth,
      latents_per_group=4, cells_per_group=1, preprocess_blocks=1, preprocess_cells=1,
      postprocess_blocks=1, postprocess_cells=1, **extra), (8, 16, 16, 1), 2


def worker(name: str, depth: int, extra: dict) -> dict:
  """Seconds to lower and compile the training step of ``name`` at ``depth``."""
  import time
  import jax
  import numpy as np
  import optax

  model, shape, bins = _model(name, depth, extra)
  x = np.random.RandomState(0).randint(0, bins, shape).astype(np.uint8)
  v = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  tx = optax.adam(1e-4)
  step = scaffold.train_step(model, tx, **({"step": 0} if name == "nvae" else {}))
  opt_state = jax.eval_shape(tx.init, v["params"])
  c0, t0 = time.process_time(), time.perf_counter()
  lowered = jax.jit(step).lower(v, opt_state, x, jax.random.PRNGKey(1))
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  return dict(lower_s=t1 - t0, compile_s=t2 - t1, total_s=t2 - t0,
              cpu_s=time.process_time() - c0,   # less sensitive to a busy machine
              xla_memory=common.xla_memory(compiled), device=str(jax.devices()[0]))


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--models", default="glow,lmconv,nvae")
  p.add_argument("--out", default="compile_depth.json")
  common.add_threads_argument(p)
  args = p.parse_args(argv)
  models = common.choices_argument(p, args.models, CASES, "models")
  threads = common.pin_threads(args.threads)
  results = {"platform": common.platform_line(threads), "rows": []}
  print(f"platform: {results['platform']}")
  print("| model | layout | depth | lower + compile (s) | depth x4 | lower + compile (s) "
        "| ratio x4 / x1 | CPU s: d, 4d, ratio |")
  print("|---|---|---|---|---|---|---|---|")
  for name in models:
    d1, d4 = DEPTHS[name]
    for layout, extra in CASES[name]:
      r = [common.run_worker("experiments.bench.compile_depth",
                             scaffold.worker_call("worker", name, d, extra)) for d in (d1, d4)]
      ratio = r[1]["total_s"] / r[0]["total_s"]
      results["rows"].append(dict(model=name, layout=layout, depth_key=DEPTH_KEY[name],
                                  depths=[d1, d4], results=r, ratio=ratio))
      print(f"| {name} | {layout} | {DEPTH_KEY[name]}={d1} | {r[0]['total_s']:.1f} | "
            f"{DEPTH_KEY[name]}={d4} | {r[1]['total_s']:.1f} | {ratio:.2f} | "
          f"{r[0]['cpu_s']:.1f}, {r[1]['cpu_s']:.1f}, {r[1]['cpu_s'] / r[0]['cpu_s']:.2f} |",
          flush=True)
  results["device"] = results["rows"][0]["results"][0]["device"] if results["rows"] else ""
  print(f"saved {common.save_json(args.out, results)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
