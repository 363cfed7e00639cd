"""Glow benchmark: dgmjax against the project's PyTorch baseline, in the same run.

    python -m experiments.bench.glow --sizes tiny --repeats 10 --out glow_bench.json
    python -m experiments.bench.glow --sizes tiny,mnist,cifar10 --recon-steps 300
    python -m experiments.bench.glow --sizes tiny --threads 1   # steadier on a busy machine
    python -m experiments.bench.glow --sizes mnist,cifar10 --reversible --memory-vs-k cifar10
    python -m experiments.bench.glow --sizes tiny --drift-steps 100   # reversible drift

For each size both implementations build the same architecture (rosinality/glow-pytorch
layout: ActNorm, LU 1x1 conv, affine coupling with a biased conv3x3-conv1x1-ZeroConv
network, split priors, learned top) and measure, each in its own subprocess so peak
memory is its own:
- train step: forward + backward + Adam update on one batch (median of ``repeats``),
- sampling: ``batch`` samples at temperature 0.7 (median),
- compile: dgmjax's ahead-of-time lowering + compilation of the train step and of the
  sampler; init: compiling and running ``init`` (PyTorch runs eagerly: no compile),
- peak memory: the worker's peak resident set size (``ru_maxrss``).
Sizes: ``tiny`` (32x32x3, L=3, K=2, width 32, batch 16), ``mnist`` (28x28x1, L=2, K=32,
width 512, batch 16), ``cifar10`` (32x32x3, L=3, K=32, width 512, batch 16: the paper's
network at a CPU batch). ``--recon-steps N`` also trains a small Glow on digits for N
steps and reports max |decode(encode(x)) - x| in float32 on held-out images.
``--reversible`` adds a third worker per size, dgmjax with ``compute.remat="reversible"``
(``dgmjax.flows.reversible``), and a second table: its train step and peak RSS against
the standard dgmjax step and PyTorch, and XLA's temp bytes of both train steps
(``compiled.memory_analysis()``: the activation memory the gradient needs).
The two reversible studies live in ``experiments/bench/glow_reversible.py``:
``--memory-vs-k SIZE`` compiles (does not run) the train step at SIZE for K = 8, 16, 32,
64 steps per level, standard (same layout, ordinary autodiff of the scan) and reversible,
and tabulates the temp bytes. ``--unroll``: dgmjax runs each level's stack of steps
fully unrolled (``compute.unroll=True``), not as a scan. ``--drift-steps N`` measures the
reversible reconstruction drift at K=32, L=3, width 512 on ``digits`` (initialised, then
after N Adam steps): per level, max |x_rebuilt - x| of the first step's input, and the
relative difference between the reversible and the standard gradient.
Prints a markdown table with dgmjax/PyTorch ratios (< 1: dgmjax faster/smaller) and the
platform line; saves JSON.
"""
from __future__ import annotations

import argparse
import sys
import time

from experiments.bench import common, scaffold

SIZES = {
    "tiny": dict(image=(32, 32, 3), levels=3, steps=2, width=32, batch=16),
    "mnist": dict(image=(28, 28, 1), levels=2, steps=32, width=512, batch=16),
    "cifar10": dict(image=(32, 32, 3), levels=3, steps=32, width=512, batch=16),
}
NUM_BINS = 256


def batch(size: str, seed: int = 0):
  """The benchmark's batch at ``size``: uniform random uint8 images [B, H, W, C]."""
  import numpy as np
  cfg = SIZES[size]
  rs = np.random.RandomState(seed)
  return rs.randint(0, NUM_BINS, (cfg["batch"],) + cfg["image"]).astype(np.uint8)


def build_model(size: str, dtype: str = "float32", unroll: bool = False,
                reversible: bool = False, steps: int | None = None):
  """dgmjax's Glow at ``size`` in rosinality's layout (LU 1x1 convolutions, affine
  coupling); ``steps`` overrides K."""
  import dgmjax
  cfg = SIZES[size]
  return dgmjax.models.create("glow", cfg["image"], NUM_BINS, levels=cfg["levels"],
                              steps=steps or cfg["steps"], width=cfg["width"],
                              coupling="affine", permutation="lu",
                              compute=dict(dtype=dtype, unroll=True if unroll else 1,
                                           remat="reversible" if reversible else "none"))


def temp_mb(compiled) -> float | None:
  m = common.xla_memory(compiled)
  return None if m is None else m["temp_mb"]


def worker_jax(size: str, repeats: int, unroll: bool = False, reversible: bool = False,
               dtype: str = "float32") -> dict:
  import jax
  import jax.numpy as jnp
  import optax

  cfg = SIZES[size]
  model = build_model(size, dtype, unroll, reversible)
  x = jnp.asarray(batch(size))
  init, init_s = scaffold.aot(model.init, jax.random.PRNGKey(0), x)
  t0 = time.perf_counter()
  v = jax.block_until_ready(init(jax.random.PRNGKey(0), x))
  init_s += time.perf_counter() - t0
  tx = optax.adam(1e-4)
  opt_state = tx.init(v["params"])
  step, compile_s = scaffold.aot(scaffold.train_step(model, tx), v, opt_state, x,
                                 jax.random.PRNGKey(1), donate_argnums=(0, 1))
  train, v, loss = scaffold.time_jax_train(step, v, opt_state, x, repeats)
  sample, sample_compile_s = scaffold.aot(
      lambda v, r: model.sample(v, r, cfg["batch"], temperature=0.7), v, jax.random.PRNGKey(0))
  return dict(**train, **scaffold.timing("sample", scaffold.time_call(
                  lambda: sample(v, jax.random.PRNGKey(0)), repeats)),
              compile_s=compile_s + sample_compile_s, init_s=init_s,
              peak_rss_mb=common.peak_rss_mb(), temp_mb=temp_mb(step),
              xla_memory=common.xla_memory(step), dtype=dtype, final_loss=loss,
              device=str(jax.devices()[0]), jax=jax.__version__)


def worker_torch(size: str, repeats: int) -> dict:
  import torch
  from experiments.pytorch import glow as tglow

  cfg = SIZES[size]
  h, w, c = cfg["image"]
  torch.manual_seed(0)
  dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  sync = torch.cuda.synchronize if dev.type == "cuda" else None
  model = tglow.Glow(c, cfg["steps"], cfg["levels"], affine=True, conv_lu=True,
                     filter_size=cfg["width"]).to(dev)
  x = torch.from_numpy(batch(size)).permute(0, 3, 1, 2).float().to(dev)
  t0 = time.perf_counter()
  with torch.no_grad():
    model((x + torch.rand_like(x)) / NUM_BINS - 0.5)  # ActNorm data-dependent init
  init_s = time.perf_counter() - t0
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  train, loss = scaffold.time_torch_train(
      opt, lambda i: tglow.nll_bits_per_dim(model, (x + torch.rand_like(x)) / NUM_BINS - 0.5,
                                            NUM_BINS), repeats, sync)
  shapes = tglow.latent_shapes(c, h, cfg["levels"])

  def sample():
    with torch.no_grad():
      model.sample(cfg["batch"], shapes, temperature=0.7, device=dev)
    if sync is not None:
      sync()

  return dict(**train, **scaffold.timing("sample", common.median_and_min(
                  sample, max(2, repeats // 2))),
              compile_s=0.0, init_s=init_s, peak_rss_mb=common.peak_rss_mb(), final_loss=loss,
              device=str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(0),
              torch=torch.__version__, threads=torch.get_num_threads())


def digits_reconstruction(steps: int) -> dict:
  """Trains the glow_digits architecture for ``steps`` Adam steps; max |decode(encode(y)) - y|."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  import dgmjax
  from dgmjax import images
  from experiments.bench import glow_reversible

  train, test = glow_reversible.digits_split()
  model = dgmjax.models.create("glow", (8, 8, 1), 17, levels=2, steps=4, width=32)
  v = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(train[:256]))
  tx = optax.adam(3e-3)
  step, state = jax.jit(scaffold.train_step(model, tx)), tx.init(v["params"])
  rs = np.random.RandomState(0)
  for i in range(steps):
    v, state, loss = step(v, state, jnp.asarray(train[rs.randint(0, 1500, 64)]),
                          jax.random.PRNGKey(i))
  y = images.dequantize(jax.random.PRNGKey(123), jnp.asarray(test), 17)
  enc_dec = jax.jit(lambda v, y: model.decode(v, model.encode(v, y)[0]))
  err = float(jnp.max(jnp.abs(enc_dec(v, y) - y)))
  bpd = float(jnp.mean(images.bits_per_dim(
      jax.jit(lambda v, x, r: model.log_prob(v, x, r))(v, jnp.asarray(test),
                                                       jax.random.PRNGKey(9)), (8, 8, 1))))
  return dict(steps=steps, max_abs_recon_error=err, train_loss=float(loss), test_bpd=bpd,
              num_test=int(len(test)))


def measure(size, args) -> dict:
  r = {"config": SIZES[size], **scaffold.compare("experiments.bench.glow", size, args.repeats,
                                                  unroll=args.unroll, dtype=args.dtype)}
  if args.reversible:
    r["dgmjax_reversible"] = common.run_worker("experiments.bench.glow", scaffold.worker_call(
        "worker_jax", size, args.repeats, unroll=args.unroll, reversible=True,
        dtype=args.dtype))
  return r


def report(results, args) -> None:
  from experiments.bench import glow_reversible
  print(scaffold.ratio_table(results, [("train_step", "train step"), ("sample", "sample")],
                             last=[("compile dgmjax (s)", lambda j, t: f"{j['compile_s']:.1f}"),
                                   ("init dgmjax (s)", lambda j, t: f"{j['init_s']:.1f}")]))
  if args.reversible and results["sizes"]:
    glow_reversible.print_reversible_table(results)
  if args.memory_vs_k:
    size = args.memory_vs_k
    results["memory_vs_k"] = {"size": size, "rows": glow_reversible.memory_vs_k(size)}
    glow_reversible.print_memory_vs_k(results["memory_vs_k"])
  if args.drift_steps >= 0:
    results["reversible_drift"] = glow_reversible.digits_drift(args.drift_steps,
                                                               dtype=args.dtype)
    glow_reversible.print_drift(results["reversible_drift"])
  if args.recon_steps:
    rec = digits_reconstruction(args.recon_steps)
    results["digits_reconstruction"] = rec
    print(f"digits after {rec['steps']} steps: max |decode(encode(x)) - x| = "
          f"{rec['max_abs_recon_error']:.3g} (float32), held-out {rec['test_bpd']:.3f} bits/dim")


def _size_or_none(text: str) -> str:
  if text and text not in SIZES:
    raise argparse.ArgumentTypeError(f"unknown size {text!r}; expected one of {sorted(SIZES)}")
  return text


def arguments(p) -> None:
  p.add_argument("--unroll", action="store_true",
                 help="dgmjax runs each level's steps fully unrolled (compute.unroll=True; "
                      "default: one scan, compile time flat in depth)")
  p.add_argument("--reversible", action="store_true",
                 help="also measure dgmjax with compute.remat=reversible (O(1)-memory gradient)")
  p.add_argument("--memory-vs-k", default="", metavar="SIZE", type=_size_or_none,
                 help="a size: tabulate the train step's XLA temp memory for K=8..64, "
                      "standard vs reversible (compile only)")
  p.add_argument("--drift-steps", type=int, default=-1,
                 help="measure reversible drift at K=32, L=3, width 512 on digits, initialised "
                      "and after this many training steps (-1: skip)")
  p.add_argument("--recon-steps", type=int, default=0,
                 help="also train on digits this many steps and report the reconstruction error")


DRIVER = scaffold.Driver(__doc__, SIZES, measure, report, repeats=10, out="glow_bench.json",
                         arguments=arguments)


def main(argv: list[str] | None = None) -> int:
  return scaffold.main(DRIVER, argv)


if __name__ == "__main__":
  sys.exit(main())
