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
  ``compute.conv``; ``--depthwise-impl``: ``compute.depthwise``.
Sizes: ``tiny`` (32x32x3, the ``nvae_cifar_tiny`` reference layout: channels 8, one
scale of 2 groups, 1 flow pair, batch 8), ``mnist`` (the paper's binarised-MNIST
network, 33.4M parameters, batch 8), ``cifar10`` (the paper's CIFAR-10 network,
130.9M parameters, batch 2). Also times NVAE's 5x5 depthwise convolution (B16, 16x16,
192 channels, forward+backward) for the two dgmjax implementations and PyTorch.
Prints a markdown table with dgmjax/PyTorch ratios (< 1: dgmjax faster/smaller) and
the platform line; saves JSON.
"""

from __future__ import annotations

import sys
import time

from experiments.bench import common, scaffold

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


def batch(size: str, n: int | None = None, seed: int = 0):
  """``n`` (default: the size's batch) random uint8 images of ``size``; zero outside the
  28x28 crop where the size has one, as the padded MNIST data."""
  import numpy as np
  cfg = SIZES[size]
  h, w, c = cfg["image"]
  n = cfg["batch"] if n is None else n
  x = np.random.RandomState(seed).randint(0, cfg["bins"], (n, h, w, c)).astype(np.uint8)
  if "crop_to" in cfg["hp"]:
    ch, cw = cfg["hp"]["crop_to"]
    mask = np.zeros((h, w, c), np.uint8)
    mask[(h - ch) // 2:(h + ch) // 2, (w - cw) // 2:(w + cw) // 2] = 1
    x = x * mask
  return x


def build_model(size: str, dtype: str = "float32", unroll: int | bool = 1,
                conv_impl: str = "auto", depthwise: str = "auto"):
  """dgmjax's NVAE at ``size`` with the official objective (``TRAINING``)."""
  import dgmjax
  cfg = SIZES[size]
  return dgmjax.models.create("nvae", cfg["image"], cfg["bins"], **cfg["hp"], **TRAINING,
                              compute=dict(dtype=dtype, unroll=unroll, conv=conv_impl,
                                           depthwise=depthwise))


def worker_jax(size: str, repeats: int, dtype: str = "float32", unroll: int | bool = 1,
               conv_impl: str = "auto", depthwise: str = "auto") -> dict:
  import jax
  import jax.numpy as jnp
  import optax

  cfg = SIZES[size]
  model = build_model(size, dtype, unroll, conv_impl, depthwise)
  x = jnp.asarray(batch(size))
  xi = jnp.asarray(batch(size, cfg["iw_batch"], 1))
  t0 = time.perf_counter()
  v = jax.block_until_ready(model.init(jax.random.PRNGKey(0), x))
  init_s = time.perf_counter() - t0
  tx = optax.chain(optax.add_decayed_weights(3e-4), optax.scale_by_adamax(eps=1e-3),
                   optax.scale(-1e-2))
  opt_state = tx.init(v["params"])
  step, step_compile_s = scaffold.aot(scaffold.train_step(model, tx), v, opt_state, x,
                                      jax.random.PRNGKey(1), 0, donate_argnums=(0, 1))
  sample, sample_s = scaffold.aot(
      lambda v, r: model.sample(v, r, cfg["batch"], temperature=0.7), v, jax.random.PRNGKey(0))
  iw, iw_s = scaffold.aot(lambda v, x, r: model.log_prob(v, x, r, num_samples=cfg["iw_k"]),
                          v, xi, jax.random.PRNGKey(0))
  train, v, loss = scaffold.time_jax_train(step, v, opt_state, x, repeats, pass_step=True)
  return dict(**train,
              **scaffold.timing("sample", scaffold.time_call(
                  lambda: sample(v, jax.random.PRNGKey(3)), repeats)),
              **scaffold.timing("iw", scaffold.time_call(
                  lambda: iw(v, xi, jax.random.PRNGKey(4)), repeats)),
              compile_s=step_compile_s + sample_s + iw_s, step_compile_s=step_compile_s,
              unroll=unroll, conv_impl=conv_impl, depthwise=depthwise, init_s=init_s,
              peak_rss_mb=common.peak_rss_mb(), final_loss_bpd=loss,
              xla_memory=common.xla_memory(step), dtype=dtype,
              params=int(sum(a.size for a in jax.tree_util.tree_leaves(v["params"]))),
              device=str(jax.devices()[0]), jax=jax.__version__)


def worker_torch(size: str, repeats: int) -> dict:
  import math
  import torch
  from experiments.pytorch import nvae as tnvae

  cfg = SIZES[size]
  torch.manual_seed(0)
  hp = {k: val for k, val in cfg["hp"].items() if k != "crop_to"}
  args = tnvae.args_from_hparams(cfg["image"], cfg["bins"], **hp,
                                 weight_decay_norm=TRAINING["weight_decay_norm"])
  t0 = time.perf_counter()
  model = tnvae.AutoEncoder(args)
  init_s = time.perf_counter() - t0
  x = tnvae.images_to_input(batch(size), cfg["bins"])
  xi = tnvae.images_to_input(batch(size, cfg["iw_batch"], 1), cfg["bins"])
  opt = torch.optim.Adamax(model.parameters(), lr=1e-2, weight_decay=3e-4, eps=1e-3)
  total = TRAINING["kl_warmup_steps"] / args.kl_anneal_portion
  model.train()
  train, loss = scaffold.time_torch_train(
      opt, lambda i: tnvae.training_loss(model, x, args, i, total)[0], repeats)
  model.eval()

  def sample():
    with torch.no_grad():
      out = model.decoder_output(model.sample(cfg["batch"], 0.7))
      out.sample()

  def iw():
    with torch.no_grad():
      log_w = torch.stack([tnvae.elbo_terms(model, xi)["log_iw"] for _ in range(cfg["iw_k"])], 1)
      return torch.logsumexp(log_w, 1) - math.log(cfg["iw_k"])

  repeats_eval = max(2, repeats // 2)
  return dict(**train, **scaffold.timing("sample", common.median_and_min(sample, repeats_eval)),
              **scaffold.timing("iw", common.median_and_min(iw, repeats_eval)), compile_s=0.0,
              init_s=init_s, peak_rss_mb=common.peak_rss_mb(),
              final_loss_bpd=loss / (math.log(2) * (784 if model.crop_output
                                                    else x[0].numel())),
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


def measure(size, args) -> dict:
  return {"config": SIZES[size], **scaffold.compare(
      "experiments.bench.nvae", size, args.repeats, dtype=args.dtype, unroll=args.unroll,
      conv_impl=args.conv_impl, depthwise=args.depthwise_impl)}


def report(results, args) -> None:
  print(scaffold.ratio_table(
      results, [("train_step", "train step"), ("sample", "sample"), ("iw", "IW eval")],
      first=[("params", lambda j, t: f"{j['params'] / 1e6:.2f}M / {t['params'] / 1e6:.2f}M")],
      last=[("compile dgmjax (s): step, all",
             lambda j, t: f"{j['step_compile_s']:.1f}, {j['compile_s']:.1f}")]))
  if not args.no_depthwise:
    dw = depthwise(args.repeats)
    results["depthwise_5x5_fwd_bwd"] = dw
    print("depthwise 5x5 fwd+bwd (B16 16x16 192ch): "
          f"dgmjax shift {dw['dgmjax_shift_s'] * 1e3:.1f} ms, "
          f"grouped {dw['dgmjax_grouped_s'] * 1e3:.1f} ms, PyTorch {dw['pytorch_s'] * 1e3:.1f} ms")


def arguments(p) -> None:
  p.add_argument("--no-depthwise", action="store_true", help="skip the depthwise conv timing")
  p.add_argument("--conv-impl", default="auto", help="compute.conv (dgmjax.nn.conv)")
  p.add_argument("--depthwise-impl", default="auto",
                 help="compute.depthwise (dgmjax.nn.depthwise)")


DRIVER = scaffold.Driver(
    __doc__, SIZES, measure, report, repeats=5, out="nvae_bench.json", arguments=arguments,
    unroll_help="compute.unroll: groups per scan iteration, or 'true' (straight-line)")


def main(argv: list[str] | None = None) -> int:
  return scaffold.main(DRIVER, argv)


if __name__ == "__main__":
  sys.exit(main())
