"""NVAE benchmark: dgmjax against the project's PyTorch baseline, in the same run.

    python -m experiments.bench.nvae --sizes tiny --repeats 5 --out nvae_bench.json
    python -m experiments.bench.nvae --sizes tiny,mnist,cifar10 --repeats 3
    python -m experiments.bench.nvae --sizes mnist,cifar10 --unroll true   # straight-line

Both implementations build the same network (``experiments/pytorch/nvae.py`` from the
same hyper-parameters via ``args_from_hparams``) and each runs in its own subprocess so
peak memory is its own. Measured:
- train step: forward + backward of the official objective (KL warm-up and balancing,
  spectral + BN regularisers, lambda 1e-2) + Adamax update, median over ``repeats``;
- sampling: ``batch`` samples at temperature 0.7 (BN in inference mode), median;
- IW eval: the importance-weighted bound with ``iw_k`` samples for ``iw_batch`` images
  (dgmjax: ``log_prob(num_samples=K)``, chunked scan; PyTorch: the official loop of K
  forward passes), median;
- compile: dgmjax's ahead-of-time lowering + compilation of the train step alone
  (``step_compile_s``) and of the three functions (``compile_s``); ``init_s`` (its
  compile included); PyTorch runs eagerly; peak memory: the worker's peak RSS.
  ``--unroll``: dgmjax's ``compute.unroll`` (groups per scan iteration of each scale's
  stacked groups, or ``true``: fully unrolled straight-line code); ``--conv-impl``:
  ``compute.conv``.
Sizes: ``tiny`` (32x32x3, the ``nvae_cifar_tiny`` reference layout: channels 8, one
scale of 2 groups, 1 flow pair, batch 8), ``mnist`` (the paper's binarised-MNIST
network, 33.4M parameters, batch 8), ``cifar10`` (the paper's CIFAR-10 network,
130.9M parameters, batch 2). Also times NVAE's 5x5 depthwise convolution (B16, 16x16,
192 channels, forward+backward) for the two dgmjax implementations and PyTorch.
Prints a markdown table with dgmjax/PyTorch ratios (< 1: dgmjax faster/smaller) and
the platform line; saves JSON.
"""

from __future__ import annotations

import argparse
import sys
import time

from experiments.bench import common  # noqa: E402

ROOT = common.ROOT

SIZES = {
    "tiny": dict(image=(32, 32, 3), bins=256, batch=8, iw_batch=4, iw_k=32, hp=dict(
        channels=8, scales=1, groups_per_scale=2, latents_per_group=4, cells_per_group=1,
        preprocess_blocks=1, preprocess_cells=2, postprocess_blocks=1, postprocess_cells=2,
        num_flows=1)),
    "mnist": dict(image=(32, 32, 1), bins=2, batch=8, iw_batch=2, iw_k=8, hp=dict(
        channels=32, scales=2, groups_per_scale=10, ada_groups=True, latents_per_group=20,
        cells_per_group=2, preprocess_blocks=2, preprocess_cells=3, postprocess_blocks=2,
        postprocess_cells=3, num_flows=0, crop_to=(28, 28))),
    "cifar10": dict(image=(32, 32, 3), bins=256, batch=2, iw_batch=1, iw_k=4, hp=dict(
        channels=128, scales=1, groups_per_scale=30, latents_per_group=20, cells_per_group=2,
        preprocess_blocks=1, preprocess_cells=2, postprocess_blocks=1, postprocess_cells=2,
        num_flows=1)),
}
TRAINING = dict(weight_decay_norm=1e-2, kl_warmup_steps=1000, kl_const_steps=1)


def _data(cfg, n, seed=0):
  import numpy as np
  h, w, c = cfg["image"]
  x = np.random.RandomState(seed).randint(0, cfg["bins"], (n, h, w, c)).astype(np.uint8)
  if "crop_to" in cfg["hp"]:   # zero padding outside the crop, as the padded MNIST data
    ch, cw = cfg["hp"]["crop_to"]
    mask = np.zeros((h, w, c), np.uint8)
    mask[(h - ch) // 2:(h + ch) // 2, (w - cw) // 2:(w + cw) // 2] = 1
    x = x * mask
  return x


def worker_jax(size: str, repeats: int, dtype: str = "float32", unroll: int | bool = 1,
               conv_impl: str = "auto") -> dict:
  import jax
  import jax.numpy as jnp
  import optax
  import dgmjax

  cfg = SIZES[size]
  model = dgmjax.models.create("nvae", cfg["image"], cfg["bins"], **cfg["hp"], **TRAINING,
                               compute=dict(dtype=dtype, unroll=unroll, conv=conv_impl))
  x = jnp.asarray(_data(cfg, cfg["batch"]))
  xi = jnp.asarray(_data(cfg, cfg["iw_batch"], 1))
  t0 = time.perf_counter()
  v = jax.block_until_ready(model.init(jax.random.PRNGKey(0), x))
  init_s = time.perf_counter() - t0
  tx = optax.chain(optax.add_decayed_weights(3e-4), optax.scale_by_adamax(eps=1e-3),
                   optax.scale(-1e-2))

  def step(v, opt, x, rng, i):
    (loss, aux), g = jax.value_and_grad(
        lambda p: model.loss({**v, "params": p}, x, rng, step=i), has_aux=True)(v["params"])
    up, opt = tx.update(g, opt, v["params"])
    return {**v, "params": optax.apply_updates(v["params"], up), **aux["state"]}, opt, loss

  opt = tx.init(v["params"])
  t0 = time.perf_counter()
  step_c = jax.jit(step, donate_argnums=(0, 1)).lower(v, opt, x, jax.random.PRNGKey(1), 0).compile()
  step_compile_s = time.perf_counter() - t0
  samp_c = jax.jit(lambda v, r: model.sample(v, r, cfg["batch"], temperature=0.7)).lower(
      v, jax.random.PRNGKey(0)).compile()
  iw_c = jax.jit(lambda v, x, r: model.log_prob(v, x, r, num_samples=cfg["iw_k"])).lower(
      v, xi, jax.random.PRNGKey(0)).compile()
  compile_s = time.perf_counter() - t0
  state = {"v": v, "opt": opt, "i": 0}

  def train():
    state["v"], state["opt"], loss = step_c(state["v"], state["opt"], x,
                                            jax.random.PRNGKey(state["i"]), state["i"])
    state["i"] += 1
    loss.block_until_ready()
    state["loss"] = float(loss)

  train_s, train_min = common.median_and_min(train, repeats)
  v = state["v"]
  sample_s, sample_min = common.median_and_min(
      lambda: samp_c(v, jax.random.PRNGKey(3)).block_until_ready(),
                                max(2, repeats // 2))
  iw_s, iw_min = common.median_and_min(
      lambda: iw_c(v, xi, jax.random.PRNGKey(4)).block_until_ready(),
                        max(2, repeats // 2))
  return dict(train_step_s=train_s, train_step_min_s=train_min, sample_s=sample_s,
              sample_min_s=sample_min, iw_s=iw_s, iw_min_s=iw_min, compile_s=compile_s,
              step_compile_s=step_compile_s, unroll=unroll, conv_impl=conv_impl,
              init_s=init_s, peak_rss_mb=common.peak_rss_mb(), final_loss_bpd=state["loss"],
              xla_memory=common.xla_memory(step_c), dtype=dtype,
              params=int(sum(a.size for a in jax.tree_util.tree_leaves(v["params"]))),
              device=str(jax.devices()[0]), jax=jax.__version__)


def worker_torch(size: str, repeats: int) -> dict:
  import math
  import torch
  sys.path.insert(0, ROOT)
  from experiments.pytorch import nvae as tnvae

  cfg = SIZES[size]
  torch.manual_seed(0)
  hp = {k: val for k, val in cfg["hp"].items() if k != "crop_to"}
  args = tnvae.args_from_hparams(cfg["image"], cfg["bins"], **hp,
                                 weight_decay_norm=TRAINING["weight_decay_norm"])
  t0 = time.perf_counter()
  model = tnvae.AutoEncoder(args)
  init_s = time.perf_counter() - t0
  x = tnvae.images_to_input(_data(cfg, cfg["batch"]), cfg["bins"])
  xi = tnvae.images_to_input(_data(cfg, cfg["iw_batch"], 1), cfg["bins"])
  opt = torch.optim.Adamax(model.parameters(), lr=1e-2, weight_decay=3e-4, eps=1e-3)
  total = TRAINING["kl_warmup_steps"] / args.kl_anneal_portion
  state = {"i": 0}

  def train():
    model.train()
    loss, _ = tnvae.training_loss(model, x, args, state["i"], total)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    state["i"] += 1
    state["loss"] = float(loss) / (math.log(2) * (784 if model.crop_output else x[0].numel()))

  train_s, train_min = common.median_and_min(train, repeats)
  model.eval()

  def sample():
    with torch.no_grad():
      out = model.decoder_output(model.sample(cfg["batch"], 0.7))
      out.sample()

  def iw():
    with torch.no_grad():
      log_w = torch.stack([tnvae.elbo_terms(model, xi)["log_iw"] for _ in range(cfg["iw_k"])], 1)
      return torch.logsumexp(log_w, 1) - math.log(cfg["iw_k"])

  sample_s, sample_min = common.median_and_min(sample, max(2, repeats // 2))
  iw_s, iw_min = common.median_and_min(iw, max(2, repeats // 2))
  return dict(train_step_s=train_s, train_step_min_s=train_min, sample_s=sample_s,
              sample_min_s=sample_min, iw_s=iw_s, iw_min_s=iw_min, compile_s=0.0,
              init_s=init_s, peak_rss_mb=common.peak_rss_mb(), final_loss_bpd=state["loss"],
              params=int(sum(p.numel() for p in model.parameters())), device="cpu",
              torch=torch.__version__, threads=torch.get_num_threads())


def depthwise(repeats: int = 5) -> dict:
  """Forward+backward of a 5x5 depthwise conv, B16 16x16 192 channels, fp32."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  from dgmjax.nn.depthwise import depthwise_conv

  x = np.random.RandomState(0).randn(16, 16, 16, 192).astype(np.float32)
  k = np.random.RandomState(1).randn(5, 5, 1, 192).astype(np.float32)
  out = {}
  for impl in ("shift", "grouped"):
    f = jax.jit(jax.grad(lambda x, k: jnp.sum(depthwise_conv(x, k, 2, impl=impl) ** 2), (0, 1)))
    xj, kj = jnp.asarray(x), jnp.asarray(k)
    jax.block_until_ready(f(xj, kj))
    out[f"dgmjax_{impl}_s"] = common.median_and_min(
        lambda: jax.block_until_ready(f(xj, kj)), repeats)[0]
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
  kt = torch.from_numpy(k.transpose(3, 2, 0, 1).copy()).requires_grad_()

  def torch_step():
    (torch.nn.functional.conv2d(xt, kt, padding=2, groups=192) ** 2).sum().backward()

  out["pytorch_s"] = common.median_and_min(torch_step, repeats)[0]
  return out


def _run_worker(kind: str, size: str, repeats: int, dtype: str = "float32",
                unroll: int | bool = 1, conv_impl: str = "auto") -> dict:
  extra = (f", dtype={dtype!r}, unroll={unroll!r}, conv_impl={conv_impl!r}" if kind == "jax"
           else "")
  return common.run_worker("experiments.bench.nvae", f"worker_{kind}({size!r}, {repeats}{extra})")


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--sizes", default="tiny", help=f"comma-separated from {sorted(SIZES)}")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--out", default="nvae_bench.json")
  p.add_argument("--no-depthwise", action="store_true", help="skip the depthwise conv timing")
  common.add_threads_argument(p)
  common.add_dtype_argument(p)
  p.add_argument("--unroll", default="1",
                 help="compute.unroll: groups per scan iteration, or 'true' (straight-line)")
  p.add_argument("--conv-impl", default="auto", help="compute.conv (dgmjax.nn.conv)")
  args = p.parse_args(argv)
  unroll = True if args.unroll.lower() == "true" else int(args.unroll)
  sizes = common.choices_argument(p, args.sizes, SIZES)
  threads = common.pin_threads(args.threads)
  results = {"platform": f"{common.platform_line(threads)} | dgmjax dtype: {args.dtype}, "
                         f"unroll: {unroll}", "dtype": args.dtype, "unroll": unroll, "sizes": {}}
  for size in sizes:
    torch_r = _run_worker("torch", size, args.repeats)
    jax_r = _run_worker("jax", size, args.repeats, args.dtype, unroll, args.conv_impl)
    results["sizes"][size] = {"config": SIZES[size], "pytorch": torch_r, "dgmjax": jax_r}
  results["device"] = next(iter(results["sizes"].values()))["dgmjax"]["device"] if sizes else ""
  print(f"platform: {results['platform']}; dgmjax device: {results['device']}")
  print("times: median (min) over repeats; ratio = dgmjax / PyTorch of the medians (mins)")
  print("| size | params | train step dgmjax (s) | PyTorch (s) | ratio | sample dgmjax (s) | "
        "PyTorch (s) | ratio | IW eval dgmjax (s) | PyTorch (s) | ratio | peak RSS dgmjax (MB) "
        "| PyTorch (MB) | ratio | compile dgmjax (s): step, all |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for size, r in results["sizes"].items():
    j, t = r["dgmjax"], r["pytorch"]
    cell = lambda k: common.ratio_cells(j, t, k)
    print(f"| {size} | {j['params'] / 1e6:.2f}M / {t['params'] / 1e6:.2f}M | {cell('train_step')} "
          f"| {cell('sample')} | {cell('iw')} | {j['peak_rss_mb']:.0f} | {t['peak_rss_mb']:.0f} "
          f"| {j['peak_rss_mb'] / t['peak_rss_mb']:.2f} | {j['step_compile_s']:.1f}, "
          f"{j['compile_s']:.1f} |")
  if not args.no_depthwise:
    dw = depthwise(args.repeats)
    results["depthwise_5x5_fwd_bwd"] = dw
    print("depthwise 5x5 fwd+bwd (B16 16x16 192ch): "
          f"dgmjax shift {dw['dgmjax_shift_s'] * 1e3:.1f} ms, "
          f"grouped {dw['dgmjax_grouped_s'] * 1e3:.1f} ms, PyTorch {dw['pytorch_s'] * 1e3:.1f} ms")
  print(f"saved {common.save_json(args.out, results)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
