"""LMConv benchmark: dgmjax against the project's PyTorch baseline, in the same run.

    dgmjax bench lmconv --sizes tiny,paper --repeats 3 --out lmconv_bench.json
    python -m experiments.bench.lmconv --sizes tiny

Per size: the training step (forward + backward + Adam update, one order per batch) and
sampling a whole batch of images.

- dgmjax sampling is the compiled ``cached`` sampler (one location per step, see
  ``dgmjax/lmconv/sampling.py``); at sizes where it is affordable also the compiled
  ``naive`` sampler (one full forward pass per pixel inside ``lax.fori_loop``).
- PyTorch sampling is the baseline's ``sample`` (one full forward pass per pixel in a
  Python loop, as ajayjain/lmconv). At large sizes it takes hours per batch, so it is
  timed over ``--torch-sample-steps`` pixel steps and extrapolated linearly to H*W steps
  (every step costs the same full forward pass); the table says so.
- dgmjax peak memory is XLA's compiled buffer estimate (arguments + outputs + temporaries)
  of the jitted function; PyTorch's is not measured on CPU (reported as n/a).

Prints a markdown table with dgmjax/PyTorch time ratios (< 1: dgmjax faster) and the
platform line, and writes the JSON to ``--out``.
"""

from __future__ import annotations

import json
import sys
import time

from experiments.bench import scaffold

SIZES = {
    # name: (image_shape, num_bins, filters, resnets, batch)
    "tiny": ((8, 8, 1), 17, 16, 1, 16),
    "small": ((28, 28, 1), 2, 32, 1, 16),
    "medium": ((28, 28, 1), 2, 64, 2, 8),
    "paper": ((28, 28, 1), 2, 160, 5, 16),       # binarised MNIST at the paper's width
    "cifar": ((32, 32, 3), 256, 160, 5, 16),
}


def batch(size: str):
  """The benchmark's batch at ``size``: random uint8 images [B, H, W, C]."""
  import jax
  import jax.numpy as jnp
  shape, nb, _, _, b = SIZES[size]
  return jax.random.randint(jax.random.PRNGKey(0), (b,) + shape, 0, nb).astype(jnp.uint8)


def build_model(size: str, dtype: str = "float32", unroll: int | bool = 1):
  """dgmjax's LMConv at ``size``: the 8 s-curve orders, no dropout."""
  import dgmjax
  shape, nb, f, r, _ = SIZES[size]
  return dgmjax.models.create("lmconv", image_shape=shape, num_bins=nb, filters=f, resnets=r,
                              dropout=0.0, orders=("s_curve:all",),
                              compute=dict(dtype=dtype, unroll=unroll))


def _buffer_bytes(compiled):
  """XLA's compiled buffer estimate: arguments + outputs + temporaries (bytes)."""
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
  except Exception:  # memory analysis is backend-dependent  # pylint: disable=broad-except
    return None


def bench_dgmjax(size, repeats, naive_sampling, dtype="float32", unroll=1):
  import jax
  import optax
  from experiments.bench import common

  b = SIZES[size][4]
  model = build_model(size, dtype, unroll)
  x = batch(size)
  v = model.init(jax.random.PRNGKey(1), x)
  tx = optax.adam(2e-4)
  opt_state = tx.init(v["params"])
  step, _ = scaffold.aot(scaffold.train_step(model, tx), v, opt_state, x, jax.random.PRNGKey(2))
  out = {"train_peak_bytes": _buffer_bytes(step), "xla_memory": common.xla_memory(step)}
  train, v, _ = scaffold.time_jax_train(step, v, opt_state, x, repeats)
  out.update(train_step_s=train["train_step_s"], dtype=dtype, unroll=unroll,
             device=str(jax.devices()[0]))
  sample_j = jax.jit(lambda v, rng: model.sample(v, rng, b))
  t0 = time.perf_counter()
  jax.block_until_ready(sample_j(v, jax.random.PRNGKey(3)))
  out["sample_compile_and_run_s"] = time.perf_counter() - t0
  out["sample_s"] = common.median_time(
      lambda: jax.block_until_ready(sample_j(v, jax.random.PRNGKey(4))), max(1, repeats // 2))
  out["sample_peak_bytes"] = _buffer_bytes(sample_j.lower(v, jax.random.PRNGKey(4)).compile())
  if naive_sampling:
    naive_j = jax.jit(lambda v, rng: model.sample(v, rng, b, method="naive"))
    out["sample_naive_s"] = common.median_time(
        lambda: jax.block_until_ready(naive_j(v, jax.random.PRNGKey(5))), 1)
  return out


def bench_torch(size, repeats, sample_steps):
  import numpy as np
  import torch  # pylint: disable=import-outside-toplevel
  from experiments.pytorch import lmconv as tl  # pylint: disable=import-outside-toplevel
  shape, nb, f, r, b = SIZES[size]
  h, w, c = shape
  torch.manual_seed(0)
  binarize = c == 1 and nb == 2
  net = tl.OurPixelCNN(nr_resnet=r, nr_filters=f, nr_logistic_mix=10, input_channels=c,
                       kernel_size=3, max_dilation=2, normalization="pono", dropout_prob=0.0,
                       binarize=binarize, num_bins=nb)
  opt = torch.optim.Adam(net.parameters(), lr=2e-4)
  x = torch.randint(0, nb, (b, h, w, c), dtype=torch.uint8)
  order = tl.s_curve_order(h, w)
  masks = net.masks(order, h, w)
  train, _ = scaffold.time_torch_train(opt, lambda i: net.loss_bpd(x, order, masks), repeats)
  out = {"train_step_s": train["train_step_s"], "train_peak_bytes": None, "device": "cpu"}
  steps = min(sample_steps, h * w)
  sub = np.asarray(order)[:steps]
  t0 = time.perf_counter()
  with torch.no_grad():
    levels = torch.zeros(b, h, w, c, dtype=torch.long)
    for p in sub.tolist():        # exactly the per-pixel work of OurPixelCNN.sample
      rr, cc = divmod(p, w)
      head = net(net.centered(levels), *masks)[:, :, rr, cc]
      # pylint: disable-next=protected-access
      levels[:, rr, cc] = net._sample_pixel(head, None, 1.0, 1.0)
  per_step = (time.perf_counter() - t0) / steps
  out["sample_s"] = per_step * h * w
  out["sample_extrapolated"] = steps < h * w
  out["sample_step_s"] = per_step
  return out


def _fmt(v, unit="s"):
  if v is None:
    return "n/a"
  if unit == "MB":
    return f"{v / 2**20:.0f} MB"
  return f"{v:.3g} s" if v >= 0.01 else f"{v * 1e3:.3g} ms"


def measure(s, args) -> dict:
  shape, nb, f, r, b = SIZES[s]
  res = {"config": dict(image_shape=shape, num_bins=nb, filters=f, resnets=r, batch=b)}
  res["dgmjax"] = bench_dgmjax(s, args.repeats, s in args.naive.split(","), args.dtype,
                               args.unroll)
  print(f"{s} dgmjax: {json.dumps(res['dgmjax'])}", flush=True)
  if not args.no_torch:
    import torch  # pylint: disable=import-outside-toplevel
    if args.threads:
      torch.set_num_threads(args.threads)
    res["torch_version"] = torch.__version__
    res["torch_threads"] = torch.get_num_threads()
    res["pytorch"] = bench_torch(s, args.repeats, args.torch_sample_steps)
    print(f"{s} pytorch: {json.dumps(res['pytorch'])}", flush=True)
  return res


def report(results, args) -> None:
  print("| size | what | dgmjax | PyTorch | dgmjax/PyTorch | dgmjax peak |")
  print("|---|---|---|---|---|---|")
  ratio = lambda a, b: "n/a" if b is None or a is None else f"{a / b:.3g}"
  for s, res in results["sizes"].items():
    shape, _, f, r, b = SIZES[s]
    d, t = res["dgmjax"], res.get("pytorch")
    print(f"| {s} {shape} F{f} R{r} B{b} | train step | {_fmt(d['train_step_s'])} | "
          f"{_fmt(t and t['train_step_s'])} | "
          f"{ratio(d['train_step_s'], t and t['train_step_s'])} | "
          f"{_fmt(d['train_peak_bytes'], 'MB')} |")
    naive = (f"; compiled naive {_fmt(d['sample_naive_s'])}" if "sample_naive_s" in d else "")
    ext = " (extrapolated)" if t and t.get("sample_extrapolated") else ""
    print(f"| {s} | sample {b} images{naive} | {_fmt(d['sample_s'])} | "
          f"{_fmt(t and t['sample_s'])}{ext} | {ratio(d['sample_s'], t and t['sample_s'])} | "
          f"{_fmt(d['sample_peak_bytes'], 'MB')} |")


def platform(args) -> str:
  """jax's device and, unless --no-torch, torch's version and threads."""
  import jax
  device = jax.devices()[0]
  line = f" | jax {jax.__version__} on {device.platform} ({getattr(device, 'device_kind', '')})"
  if not args.no_torch:
    import torch  # pylint: disable=import-outside-toplevel
    if args.threads:
      torch.set_num_threads(args.threads)
    line += f" | torch {torch.__version__}, {torch.get_num_threads()} threads"
  return line


def arguments(p) -> None:
  p.add_argument("--torch-sample-steps", type=int, default=8,
                 help="PyTorch pixel steps timed for sampling (extrapolated to H*W)")
  p.add_argument("--no-torch", action="store_true", help="measure dgmjax alone")
  p.add_argument("--naive", default="tiny,small",
                 help="sizes at which the compiled naive dgmjax sampler is also timed")


DRIVER = scaffold.Driver(
    __doc__, SIZES, measure, report, repeats=3, out="", arguments=arguments, platform=platform,
    unroll_help="compute.unroll: gated resnets per scan iteration, or 'true' (straight-line)")


def main(argv: list[str] | None = None) -> int:
  return scaffold.main(DRIVER, argv)


if __name__ == "__main__":
  sys.exit(main())
