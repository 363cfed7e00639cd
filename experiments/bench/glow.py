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
``--reversible`` adds a third worker per size, dgmjax with ``reversible=True``
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

from experiments.bench import common  # noqa: E402

ROOT = common.ROOT

SIZES = {
    "tiny": dict(image=(32, 32, 3), levels=3, steps=2, width=32, batch=16),
    "mnist": dict(image=(28, 28, 1), levels=2, steps=32, width=512, batch=16),
    "cifar10": dict(image=(32, 32, 3), levels=3, steps=32, width=512, batch=16),
}
NUM_BINS = 256


def _data(cfg, seed=0):
  import numpy as np
  rs = np.random.RandomState(seed)
  return rs.randint(0, NUM_BINS, (cfg["batch"],) + cfg["image"]).astype(np.uint8)


def _temp_mb(compiled) -> float | None:
  m = common.xla_memory(compiled)
  return None if m is None else m["temp_mb"]


def worker_jax(size: str, repeats: int, unroll: bool = False, reversible: bool = False,
               dtype: str = "float32") -> dict:
  import jax
  import jax.numpy as jnp
  import optax
  import dgmjax

  cfg = SIZES[size]
  model = dgmjax.models.create("glow", cfg["image"], NUM_BINS, levels=cfg["levels"],
                               steps=cfg["steps"], width=cfg["width"], coupling="affine",
                               permutation="lu", reversible=reversible,
                               compute=dict(dtype=dtype, unroll=True if unroll else 1))
  x = jnp.asarray(_data(cfg))
  t0 = time.perf_counter()
  init = jax.jit(model.init).lower(jax.random.PRNGKey(0), x).compile()
  variables = jax.block_until_ready(init(jax.random.PRNGKey(0), x))
  init_s = time.perf_counter() - t0
  params = variables["params"]
  rest = {k: v for k, v in variables.items() if k != "params"}
  opt = optax.adam(1e-4)

  def step(params, opt_state, x, rng):
    loss, grads = jax.value_and_grad(
        lambda p: model.loss({"params": p, **rest}, x, rng)[0])(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = opt.init(params)
  t0 = time.perf_counter()
  step_c = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, x,
                                                      jax.random.PRNGKey(1)).compile()
  compile_s = time.perf_counter() - t0
  state = {"params": params, "opt": opt_state, "i": 0}

  def train():
    state["params"], state["opt"], state["loss"] = step_c(
        state["params"], state["opt"], x, jax.random.PRNGKey(state["i"]))
    state["i"] += 1
    state["loss"].block_until_ready()

  train_s, train_min = common.median_and_min(train, repeats)
  v = {"params": state["params"], **rest}
  sample = jax.jit(lambda v, r: model.sample(v, r, cfg["batch"], temperature=0.7))
  t0 = time.perf_counter()
  sample_c = sample.lower(v, jax.random.PRNGKey(0)).compile()
  sample_compile_s = time.perf_counter() - t0
  sample_s, sample_min = common.median_and_min(
      lambda: sample_c(v, jax.random.PRNGKey(0)).block_until_ready(), max(2, repeats // 2))
  return dict(train_step_s=train_s, train_step_min_s=train_min,
              sample_s=sample_s, sample_min_s=sample_min,
              compile_s=compile_s + sample_compile_s, init_s=init_s,
              peak_rss_mb=common.peak_rss_mb(),
              temp_mb=_temp_mb(step_c), xla_memory=common.xla_memory(step_c), dtype=dtype,
              final_loss=float(state["loss"]), device=str(jax.devices()[0]),
              jax=jax.__version__)


def worker_torch(size: str, repeats: int) -> dict:
  import torch
  sys.path.insert(0, ROOT)
  from experiments.pytorch import glow as tglow

  cfg = SIZES[size]
  h, w, c = cfg["image"]
  torch.manual_seed(0)
  dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
  model = tglow.Glow(c, cfg["steps"], cfg["levels"], affine=True, conv_lu=True,
                     filter_size=cfg["width"]).to(dev)
  x = torch.from_numpy(_data(cfg)).permute(0, 3, 1, 2).float().to(dev)
  t0 = time.perf_counter()
  with torch.no_grad():
    model((x + torch.rand_like(x)) / NUM_BINS - 0.5)  # ActNorm data-dependent init
  init_s = time.perf_counter() - t0
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  state = {}

  def train():
    y = (x + torch.rand_like(x)) / NUM_BINS - 0.5
    state["loss"] = tglow.nll_bits_per_dim(model, y, NUM_BINS)
    opt.zero_grad(set_to_none=True)
    state["loss"].backward()
    opt.step()
    sync()

  train_s, train_min = common.median_and_min(train, repeats)
  shapes = tglow.latent_shapes(c, h, cfg["levels"])

  def sample():
    with torch.no_grad():
      model.sample(cfg["batch"], shapes, temperature=0.7, device=dev)
    sync()

  sample_s, sample_min = common.median_and_min(sample, max(2, repeats // 2))
  return dict(train_step_s=train_s, train_step_min_s=train_min,
              sample_s=sample_s, sample_min_s=sample_min,
              compile_s=0.0, init_s=init_s, peak_rss_mb=common.peak_rss_mb(),
              final_loss=float(state["loss"]),
              device=str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(0),
              torch=torch.__version__, threads=torch.get_num_threads())


def digits_reconstruction(steps: int) -> dict:
  """Trains the glow_digits architecture for ``steps`` Adam steps; max |decode(encode(y)) - y|."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from sklearn.datasets import load_digits
  import dgmjax
  from dgmjax import images

  d = load_digits()
  xs = d.images.astype(np.uint8).reshape(-1, 8, 8, 1)
  idx = np.random.RandomState(0).permutation(len(xs))
  train, test = xs[idx[:1500]], xs[idx[1500:]]
  model = dgmjax.models.create("glow", (8, 8, 1), 17, levels=2, steps=4, width=32)
  v = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(train[:256]))
  rest = {k: a for k, a in v.items() if k != "params"}
  opt = optax.adam(3e-3)

  @jax.jit
  def step(params, state, x, rng):
    loss, g = jax.value_and_grad(lambda p: model.loss({"params": p, **rest}, x, rng)[0])(params)
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state, loss

  params, state = v["params"], opt.init(v["params"])
  rs = np.random.RandomState(0)
  for i in range(steps):
    params, state, loss = step(params, state, jnp.asarray(train[rs.randint(0, 1500, 64)]),
                               jax.random.PRNGKey(i))
  v = {"params": params, **rest}
  y = images.dequantize(jax.random.PRNGKey(123), jnp.asarray(test), 17)
  enc_dec = jax.jit(lambda v, y: model.decode(v, model.encode(v, y)[0]))
  err = float(jnp.max(jnp.abs(enc_dec(v, y) - y)))
  bpd = float(jnp.mean(images.bits_per_dim(
      jax.jit(lambda v, x, r: model.log_prob(v, x, r))(v, jnp.asarray(test),
                                                       jax.random.PRNGKey(9)), (8, 8, 1))))
  return dict(steps=steps, max_abs_recon_error=err, train_loss=float(loss), test_bpd=bpd,
              num_test=int(len(test)))


def _run_worker(kind: str, size: str, repeats: int, unroll: bool = False,
                reversible: bool = False, dtype: str = "float32") -> dict:
  extra = f", unroll={unroll}, reversible={reversible}, dtype={dtype!r}" if kind == "jax" else ""
  return common.run_worker("experiments.bench.glow", f"worker_{kind}({size!r}, {repeats}{extra})")


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--sizes", default="tiny", help=f"comma-separated from {sorted(SIZES)}")
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--out", default="glow_bench.json")
  common.add_threads_argument(p)
  common.add_dtype_argument(p)
  p.add_argument("--unroll", action="store_true",
                 help="dgmjax runs each level's steps fully unrolled (compute.unroll=True; "
                      "default: one scan, compile time flat in depth)")
  p.add_argument("--reversible", action="store_true",
                 help="also measure dgmjax with reversible=True (O(1)-memory gradient)")
  p.add_argument("--memory-vs-k", default="",
                 help="a size: tabulate the train step's XLA temp memory for K=8..64, "
                      "standard vs reversible (compile only)")
  p.add_argument("--drift-steps", type=int, default=-1,
                 help="measure reversible drift at K=32, L=3, width 512 on digits, initialised "
                      "and after this many training steps (-1: skip)")
  p.add_argument("--recon-steps", type=int, default=0,
                 help="also train on digits this many steps and report the reconstruction error")
  args = p.parse_args(argv)
  from experiments.bench import glow_reversible
  sizes = common.choices_argument(p, args.sizes, SIZES)
  threads = common.pin_threads(args.threads)
  results = {"platform": f"{common.platform_line(threads)} | dgmjax unroll: {args.unroll}, "
                         f"dtype: {args.dtype}", "dtype": args.dtype, "sizes": {}}
  for size in sizes:
    torch_r = _run_worker("torch", size, args.repeats)
    jax_r = _run_worker("jax", size, args.repeats, args.unroll, dtype=args.dtype)
    results["sizes"][size] = {"config": SIZES[size], "pytorch": torch_r, "dgmjax": jax_r}
    if args.reversible:
      results["sizes"][size]["dgmjax_reversible"] = _run_worker("jax", size, args.repeats,
                                                                args.unroll, True, args.dtype)
  first = next(iter(results["sizes"].values())) if sizes else None
  results["device"] = (f"dgmjax on {first['dgmjax']['device']}, PyTorch on "
                       f"{first['pytorch']['device']}" if first else "")
  print(f"platform: {results['platform']}; {results['device']}")
  print("times: median (min) over repeats; ratio = dgmjax / PyTorch of the medians (mins)")
  print("| size | train step dgmjax (s) | PyTorch (s) | ratio | sample dgmjax (s) | PyTorch (s) "
        "| ratio | peak RSS dgmjax (MB) | PyTorch (MB) | ratio | compile dgmjax (s) "
        "| init dgmjax (s) |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for size, r in results["sizes"].items():
    j, t = r["dgmjax"], r["pytorch"]
    cell = lambda k: common.ratio_cells(j, t, k)
    print(f"| {size} | {cell('train_step')} | {cell('sample')} | {j['peak_rss_mb']:.0f} | "
          f"{t['peak_rss_mb']:.0f} | {j['peak_rss_mb'] / t['peak_rss_mb']:.2f} | "
          f"{j['compile_s']:.1f} | {j['init_s']:.1f} |")
  if args.reversible and sizes:
    print("\nreversible=True: train step and memory against the standard dgmjax step "
          "(ratio rev/std) and PyTorch (ratio rev/PyTorch); temp = XLA temp MB of the step")
    print("| size | train step rev (s) | std (s) | PyTorch (s) | rev/std | rev/PyTorch "
          "| peak RSS rev (MB) | std (MB) | PyTorch (MB) | temp rev (MB) | temp std (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size, r in results["sizes"].items():
      j, t, rv = r["dgmjax"], r["pytorch"], r["dgmjax_reversible"]
      fmt = lambda a: "n/a" if a is None else f"{a:.0f}"
      print(f"| {size} | {rv['train_step_s']:.4f} | {j['train_step_s']:.4f} | "
            f"{t['train_step_s']:.4f} | {rv['train_step_s'] / j['train_step_s']:.2f} | "
            f"{rv['train_step_s'] / t['train_step_s']:.2f} | {rv['peak_rss_mb']:.0f} | "
            f"{j['peak_rss_mb']:.0f} | {t['peak_rss_mb']:.0f} | {fmt(rv.get('temp_mb'))} | "
            f"{fmt(j.get('temp_mb'))} |")
  if args.memory_vs_k:
    size = common.choices_argument(p, args.memory_vs_k, SIZES, "memory-vs-k size")[0]
    rows = glow_reversible.memory_vs_k(size)
    results["memory_vs_k"] = {"size": size, "rows": rows}
    print(f"\ntrain-step XLA temp memory (MB) vs K at {size} (compile only)")
    print("| K | standard (scan) | reversible |")
    print("|---|---|---|")
    for row in rows:
      print(f"| {row['K']} | {row['standard_temp_mb']:.1f} | {row['reversible_temp_mb']:.1f} |")
  if args.drift_steps >= 0:
    drift = glow_reversible.digits_drift(args.drift_steps, dtype=args.dtype)
    results["reversible_drift"] = drift
    print(f"\nreversible drift on digits ({drift['config']})")
    for when in ("init", "trained"):
      r = drift[when]
      print(f"{when}: per-level max abs error {['%.2e' % e for e in r['level_abs_err']]}, "
            f"relative {['%.2e' % e for e in r['level_rel_err']]}; gradient rel. diff "
            f"max {r['grad_rel_diff_max']:.2e} median {r['grad_rel_diff_median']:.2e} "
            f"(worst array {r['grad_rel_diff_worst_array']}, whose largest entry is "
            f"{r['grad_worst_array_scale']:.1e} of the gradient's largest; against the "
            f"gradient's largest entry: {r['grad_global_rel_diff']:.2e})")
  if args.recon_steps:
    rec = digits_reconstruction(args.recon_steps)
    results["digits_reconstruction"] = rec
    print(f"digits after {rec['steps']} steps: max |decode(encode(x)) - x| = "
          f"{rec['max_abs_recon_error']:.3g} (float32), held-out {rec['test_bpd']:.3f} bits/dim")
  print(f"saved {common.save_json(args.out, results)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
