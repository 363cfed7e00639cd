"""The review's comparison of LMConv, Glow and NVAE as one command, with tables and figures.

    dgmjax compare [--workdir runs/demo] [--out runs/compare] [--dataset digits]
                   [--sections likelihood,orders,cost,latent,samples] [--quick]

Every claim is measured on the same data (the offline ``digits`` by default). Trained
models are reused from ``WORKDIR/MODEL`` (as written by ``dgmjax demo``); a model whose
workdir lacks a finished run is trained there first with ``experiments/configs/MODEL_DATASET.py``
(resuming any partial run). The raster-only LMConv lives in ``WORKDIR/lmconv_raster``:
the same config with ``model.orders = ("raster",)``. Evaluations use the LAST checkpoint
(no selection on the test split).

Sections (each writes a table into ``OUT/report.md`` and its figure(s) into ``OUT``):

- ``likelihood``: test bits/dim = -log p(x) / (H W C ln 2) over the whole test split:
  exact for the independent baseline and LMConv (per order and the order ensemble
  log (1/N) sum_k p_k(x)); Glow's single-sample dequantisation lower bound; NVAE's ELBO
  and its importance-weighted bound with K samples (``--iw_samples``).
- ``orders``: LMConv trained over the configured orders vs the same network trained on
  raster only. Test likelihood, and completing the TOP half given the BOTTOM half: the
  conditional NLL -log p(x_top | x_bottom) (bits per hidden dimension) under an order that
  visits the observed bottom first. The multi-order model has such orders among its
  training orders (s-curves starting at the bottom row). The raster model has none: it
  is reported (a) under raster re-arranged with the bottom first (masks it never trained
  on) and (b) with its own order, which can only give the marginal p(x_top), ignoring the
  bottom. ``completions.png`` shows samples of both.
- ``cost``: seconds to draw a batch of samples at 8x8, 16x16 and 32x32 for a fixed small
  architecture of each model (untrained weights: the cost does not depend on them),
  compile time excluded; ``sampling_cost.png`` plots them. LMConv takes H*W sequential
  network steps, Glow and NVAE one pass.
- ``latent``: Glow's encode/decode (exact inverse: max |decode(encode(y)) - y| on the test
  split) and interpolations; NVAE's posterior-mean encoding, decoding and interpolations
  (``NVAEModel.encode/decode/interpolate``); LMConv has no latent space.
- ``samples``: ``samples.png``, one row of samples per model.

``--train_steps N``: a run counts as trained once its latest checkpoint reaches N steps
(or the config's num_steps if smaller); a missing run is trained for N steps (its
schedule shortened to N). The report gives every run's step count.
``--quick`` (the smoke test): the smoke configs' initial (untrained) weights, nothing
trained or written but ``OUT``, K = 4, sizes 8 and 16: every code path in about a
minute; the numbers then mean nothing. ``--models`` restricts the models.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import images, imageio
from dgmjax.train import checkpoint as ckpt_lib
from dgmjax.train import config as config_lib
from dgmjax.train import loop
from dgmjax.train import optim as optim_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "experiments", "configs")
SECTIONS = ("likelihood", "orders", "cost", "latent", "samples")
DATASETS = ("digits", "mnist", "cifar10")
# what each trained model is called in WORKDIR, and the config (model, overrides) behind it
RUNS = {
    "independent": ("independent", {}),
    "glow": ("glow", {}),
    "lmconv": ("lmconv", {}),
    "lmconv_raster": ("lmconv", {"model.orders": ("raster",)}),
    "nvae": ("nvae", {}),
}


def _log(msg: str) -> None:
  print(f"[compare] {msg}", flush=True)


def _bpd(logp_nats: float, dims: int) -> float:
  return -float(logp_nats) / (dims * math.log(2.0))


# ------------------------------------------------------------------------------- runs

class Runs:
  """Trained models by run name: loads (training first if needed) and caches them."""

  def __init__(self, workdir: str, dataset: str, quick: bool, models=None,
               train_steps: int | None = None):
    self.workdir, self.dataset, self.quick = workdir, dataset, quick
    self.models, self.train_steps = models, train_steps
    self._cache: dict[str, tuple] = {}
    self.info: dict[str, dict] = {}

  def config(self, run: str):
    model, overrides = RUNS[run]
    path = os.path.join(CONFIG_DIR, f"{model}_{self.dataset}.py")
    if not os.path.exists(path):
      return None
    config = config_lib.load_config(path + (":smoke" if self.quick else ""))
    for key, value in overrides.items():
      section, field = key.split(".")
      config[section][field] = value
    if self.train_steps and self.train_steps < config.train.num_steps:
      config.train.num_steps = self.train_steps
      for key in ("eval_every", "checkpoint_every"):
        config.train[key] = min(config.train[key], self.train_steps)
    return config

  def available(self, run: str) -> bool:
    if self.models is not None and RUNS[run][0] not in self.models:
      return False
    return self.config(run) is not None

  def get(self, run: str):
    """(experiment, variables) of ``run``; trains it in WORKDIR/run when unfinished."""
    if run in self._cache:
      return self._cache[run]
    config = self.config(run)
    if config is None:
      raise ValueError(f"no config experiments/configs/{RUNS[run][0]}_{self.dataset}.py")
    t0 = time.time()
    if self.quick:  # the smoke configs' initial weights: exercises every code path fast
      exp = loop.build(config)
      tx = optim_lib.make_optimizer(config.optim, config.train.num_steps, 1)
      state = loop.init_state(exp, tx)
      self.info[run] = dict(steps=0, workdir="(untrained, --quick)", seconds_to_load_or_train=
                            round(time.time() - t0, 1), params=_num_params(state))
      self._cache[run] = (exp, state.variables(ema=True))
      return self._cache[run]
    workdir = os.path.join(self.workdir, run)
    ck = ckpt_lib.Checkpointer(workdir)
    done = ck.latest_step()
    ck.close()
    if done is None or done < config.train.num_steps:
      _log(f"training {run} ({config.train.num_steps} steps, from step {done or 0}) in "
           f"{workdir}")
      loop.train(config, workdir, progress=False)
    try:
      exp, state = loop.restore_for_eval(config, workdir, "last")
    except Exception as e:  # a workdir written by another config: say which, do not guess
      raise RuntimeError(f"could not restore {run} from {workdir} with the config "
                         f"{RUNS[run][0]}_{self.dataset}.py{':smoke' if self.quick else ''} "
                         f"(a run with another config? use another --workdir): {e}") from e
    self.info[run] = dict(steps=int(state.step), workdir=workdir,
                          seconds_to_load_or_train=round(time.time() - t0, 1),
                          params=_num_params(state))
    self._cache[run] = (exp, state.variables(ema=True))
    return self._cache[run]


def _num_params(state) -> int:
  return int(sum(np.size(p) for p in jax.tree.leaves(state.variables()["params"])))


def _test_images(exp) -> np.ndarray:
  return np.asarray(exp.test_data.get(np.arange(len(exp.test_data))))


def _test_labels(exp):
  try:
    return exp.test_data.labels(np.arange(len(exp.test_data)))
  except Exception:  # datasets without labels
    return None


def _batched(fn, x: np.ndarray, batch: int) -> np.ndarray:
  """fn(x_batch) -> [b] for every row of x, with a fixed (padded) batch shape."""
  out = []
  for i in range(0, len(x), batch):
    xb = x[i:i + batch]
    n = len(xb)
    if n < batch:
      xb = np.concatenate([xb, np.repeat(xb[:1], batch - n, axis=0)])
    out.append(np.asarray(fn(jnp.asarray(xb)), np.float64)[:n])
  return np.concatenate(out)


# ------------------------------------------------------------------------------- sections

LIKELIHOOD_KIND = {"independent": "exact", "glow": "dequantisation bound (1 noise sample)",
                   "lmconv": "exact", "nvae": "ELBO"}


def section_likelihood(runs: Runs, args) -> tuple[dict, str]:
  rows, res = [], {}
  for run in ("independent", "glow", "lmconv", "nvae"):
    if not runs.available(run):
      rows.append(f"| {run} | not selected (--models) or no config for {runs.dataset} | | |")
      continue
    exp, v = runs.get(run)
    model, dims = exp.model, images.num_dims(exp.model.image_shape)
    t0 = time.time()
    bpd = loop.evaluate(exp, v)
    res[run] = {"test_bpd": bpd, "kind": LIKELIHOOD_KIND[run], "steps": runs.info[run]["steps"]}
    kind = LIKELIHOOD_KIND[run]
    if run == "lmconv" and len(model.order_array) > 1:
      kind = f"exact, ensemble of {len(model.order_array)} orders"
    rows.append(f"| {run} | {kind} | {bpd:.4f} | {runs.info[run]['steps']} |")
    if run == "lmconv":
      f = jax.jit(lambda v, x, o: model.log_prob(v, x, order=o))
      per = []
      for i, o in enumerate(model.order_array):
        lp = _batched(lambda x: f(v, x, jnp.asarray(o)), _test_images(exp),
                      exp.config.train.eval_batch_size)
        per.append(_bpd(lp.mean(), dims))
      res[run]["per_order_bpd"] = per
      res[run]["orders"] = list(model.orders)
      if len(per) > 1:
        rows.append(f"| lmconv | exact, single order: best / mean / worst of {len(per)} | "
                    f"{min(per):.4f} / {float(np.mean(per)):.4f} / {max(per):.4f} | |")
    if run == "nvae":
      k = args.iw_samples
      f = jax.jit(lambda v, x, r: model.log_prob(v, x, r, num_samples=k))
      iw = loop.evaluate(exp, v, eval_fn=f)
      res[run]["iw_bpd"], res[run]["iw_samples"] = iw, k
      rows.append(f"| nvae | importance-weighted bound, K={k} | {iw:.4f} | "
                  f"{runs.info[run]['steps']} |")
    _log(f"likelihood {run}: {bpd:.4f} bits/dim ({time.time() - t0:.0f} s)")
  table = ["| model | likelihood | test bits/dim | train steps |", "|---|---|---|---|"] + rows
  text = ("Test bits/dim over the whole test split (lower is better). Exact values and "
          "bounds on -log p(x) are comparable in one direction only: a bound is an upper "
          "bound on the model's bits/dim.\n\n" + "\n".join(table))
  return res, text


def _hidden_bits(lp_nats: np.ndarray, hidden_dims: int) -> float:
  return -float(np.mean(lp_nats)) / (hidden_dims * math.log(2.0))


def section_orders(runs: Runs, args) -> tuple[dict, str]:
  if not (runs.available("lmconv") and runs.available("lmconv_raster")):
    return {}, f"LMConv not selected (--models) or no config for {runs.dataset}."
  (exp_m, v_m), (exp_r, v_r) = runs.get("lmconv"), runs.get("lmconv_raster")
  mm, mr = exp_m.model, exp_r.model
  h, w, c = mm.image_shape
  x = _test_images(exp_m)
  bs = exp_m.config.train.eval_batch_size
  obs = np.zeros((h, w), bool)
  obs[h // 2:] = True                                   # the bottom half is given
  hidden_dims = int((~obs).sum()) * c
  obs_j = jnp.asarray(obs)
  jits = {id(m): (jax.jit(lambda v, x, o, m=m: m.hidden_log_prob(v, x, obs_j, order=o)),
                  jax.jit(lambda v, x, o, m=m: m.conditional_log_prob(v, x, order=o)),
                  jax.jit(lambda v, r, x, o, m=m: m.complete(v, r, x, obs_j, order=o)))
          for m in (mm, mr)}
  hidden = lambda m, *a: jits[id(m)][0](*a)
  cond = lambda m, *a: jits[id(m)][1](*a)
  comp = lambda m, *a: jits[id(m)][2](*a)
  from dgmjax.lmconv import orders as orders_lib

  def natively_bottom_first(o):
    return bool(np.array_equal(orders_lib.observed_first(o, obs), o))

  res = {"observed": "bottom half", "hidden_dims": hidden_dims}
  # multi-order model: every configured order, re-arranged bottom first when needed
  per = []
  for o in mm.order_array:
    lp = _batched(lambda xb: hidden(mm, v_m, xb, jnp.asarray(o)), x, bs)
    per.append(dict(native=natively_bottom_first(o), bits=_hidden_bits(lp, hidden_dims)))
  native = [p["bits"] for p in per if p["native"]]
  native_idx = [i for i, p in enumerate(per) if p["native"]]
  res["multi_per_order"] = per
  top_first = np.asarray(mm.order_array[0])
  lp_top_m = _batched(lambda xb: jnp.sum(jnp.where(obs_j, 0.0, cond(mm, v_m, xb, jnp.asarray(
      top_first))), axis=(1, 2)), x, bs) if not natively_bottom_first(top_first) else None
  # raster model: (a) bottom-first re-arrangement of raster, (b) its own order: p(x_top)
  raster = np.asarray(mr.order_array[0])
  lp_r_re = _batched(lambda xb: hidden(mr, v_r, xb, jnp.asarray(raster)), x, bs)
  lp_r_top = _batched(lambda xb: jnp.sum(jnp.where(obs_j, 0.0, cond(mr, v_r, xb, jnp.asarray(
      raster))), axis=(1, 2)), x, bs)
  ens = loop.evaluate(exp_m, v_m)
  r_bpd = loop.evaluate(exp_r, v_r)
  res.update(multi_test_bpd_ensemble=ens, raster_test_bpd=r_bpd,
             multi_native_bits=min(native) if native else None,
             multi_native_order_indices=native_idx,
             multi_rearranged_mean_bits=float(np.mean([p["bits"] for p in per])),
             multi_marginal_top_bits=None if lp_top_m is None else _hidden_bits(lp_top_m,
                                                                               hidden_dims),
             raster_rearranged_bits=_hidden_bits(lp_r_re, hidden_dims),
             raster_marginal_top_bits=_hidden_bits(lp_r_top, hidden_dims))
  # verdict
  best_raster = min(res["raster_rearranged_bits"], res["raster_marginal_top_bits"])
  multi = res["multi_native_bits"] if native else res["multi_rearranged_mean_bits"]
  holds = multi < best_raster
  res["claim_holds"] = bool(holds)

  lines = [f"Bits per hidden dimension of -log p(x_top | x_bottom) on the {len(x)} test "
           f"images (top {h // 2} rows hidden, {hidden_dims} dims; lower is better).", "",
           "| model | order used for the top half | conditional NLL (bits/dim of top) | "
           "test bits/dim (full image) |", "|---|---|---|---|"]
  orders_desc = ", ".join(mm.orders)
  if native:
    lines.append(f"| multi-order ({orders_desc}) | a training order that visits the bottom "
                 f"first (best of {len(native)}) | {res['multi_native_bits']:.4f} | "
                 f"{ens:.4f} (ensemble) |")
  lines.append(f"| multi-order | each of its {len(per)} orders re-arranged bottom first, mean "
               f"| {res['multi_rearranged_mean_bits']:.4f} | |")
  if lp_top_m is not None:
    lines.append(f"| multi-order | its first order (top first): marginal p(x_top), bottom "
                 f"ignored | {res['multi_marginal_top_bits']:.4f} | |")
  lines.append(f"| raster only | raster re-arranged bottom first (masks never trained) | "
               f"{res['raster_rearranged_bits']:.4f} | {r_bpd:.4f} |")
  lines.append(f"| raster only | its own raster order: marginal p(x_top), bottom ignored | "
               f"{res['raster_marginal_top_bits']:.4f} | |")
  verdict = ("holds" if holds else "does NOT hold at this scale")
  lines += ["", f"Claim (the multi-order model completes the top from the bottom better than "
            f"raster order can): **{verdict}** ({multi:.4f} vs the raster model's best "
            f"{best_raster:.4f} bits/dim)."]

  # figure: originals, observed, completions
  n = args.num_figure
  sel = x[:n]
  grey = np.full(sel.shape, exp_m.num_bins // 2, np.uint8)
  rng = jax.random.key(args.seed)
  order_c = jnp.asarray(mm.order_array[native_idx[0]] if native else mm.order_array[0])
  rows = [("test images", sel), ("observed: bottom half", np.where(obs[None, :, :, None], sel,
                                                                   grey))]
  for s in range(2):
    rows.append((f"multi-order, sample {s + 1}",
                 np.asarray(comp(mm, v_m, jax.random.fold_in(rng, s), jnp.asarray(sel), order_c))))
  rows.append(("raster re-arranged (untrained)",
               np.asarray(comp(mr, v_r, jax.random.fold_in(rng, 7), jnp.asarray(sel),
                               jnp.asarray(raster)))))
  top = np.asarray(loop.draw_samples(exp_r, v_r, n, jax.random.fold_in(rng, 9)))
  rows.append(("raster own order (top ignores bottom)", np.where(obs[None, :, :, None], sel, top)))
  from experiments import compare_plot
  png = compare_plot.labelled_rows(
      os.path.join(args.out, "completions.png"),
      [(label, imageio.make_grid(r, exp_m.num_bins, ncol=n)) for label, r in rows],
      scale=max(2, 32 // h))
  res["figure"] = png
  lines += ["", f"![completions]({os.path.basename(png)})"]
  return res, "\n".join(lines)


COST_ARCH = {
    "lmconv": dict(filters=16, resnets=1, mixtures=5, orders=("s_curve",), dropout=0.0),
    "glow": dict(levels=2, steps=4, width=32),
    "nvae": dict(channels=16, scales=2, groups_per_scale=2, ada_groups=True,
                 latents_per_group=4, cells_per_group=1, preprocess_blocks=1,
                 preprocess_cells=2, postprocess_blocks=1, postprocess_cells=2),
}


def _time_sampler(fn, repeats: int) -> tuple[float, float]:
  t0 = time.perf_counter()
  jax.block_until_ready(fn(0))
  first = time.perf_counter() - t0
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(i + 1))
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), first


def section_cost(runs: Runs, args) -> tuple[dict, str]:
  import dgmjax
  sizes = [int(s) for s in args.sizes.split(",")]
  b, nb = args.sample_batch, 17
  res = {"batch": b, "num_bins": nb, "sizes": sizes, "arch": COST_ARCH, "models": {}}
  variants = [("lmconv", "cached"), ("lmconv", "naive"), ("glow", None), ("nvae", None)]
  naive_max = max(int(s) for s in args.naive_sizes.split(",")) if args.naive_sizes else 0
  for name, method in variants:
    if runs.models is not None and name not in runs.models:
      continue
    label = f"lmconv ({method})" if name == "lmconv" else name
    entry = res["models"].setdefault(label, {})
    for s in sizes:
      if method == "naive" and s > naive_max:
        continue
      model = dgmjax.models.create(name, image_shape=(s, s, 1), num_bins=nb, **COST_ARCH[name])
      x = jax.random.randint(jax.random.key(0), (b, s, s, 1), 0, nb).astype(jnp.uint8)
      v = model.init(jax.random.key(1), x)
      kw = {"method": method} if method else {}
      fn = jax.jit(lambda v, r: model.sample(v, r, b, **kw))
      med, first = _time_sampler(lambda i: fn(v, jax.random.key(100 + i)), args.repeats)
      entry[s] = dict(sample_s=med, compile_and_first_s=first,
                      sequential_steps=s * s if name == "lmconv" else 1)
      _log(f"cost {label} {s}x{s}: {med:.4f} s per batch of {b} (first call {first:.1f} s)")
  lines = [f"Seconds to draw a batch of {b} samples (median of {args.repeats}, compile "
           f"excluded; untrained weights, fixed architecture, {jax.devices()[0].platform}). "
           "Sequential network steps per batch: LMConv H*W (the cached sampler updates one "
           "location per step; the naive one reruns the whole network per pixel), Glow and "
           "NVAE 1.", "",
           "| model | " + " | ".join(f"{s}x{s}" for s in sizes) + f" | growth {sizes[0]}->"
           f"{sizes[-1]} (pixels x{(sizes[-1] / sizes[0]) ** 2:g}) | sequential steps at the "
           f"largest size timed |", "|---|" + "---|" * (len(sizes) + 2)]
  growth = {}
  for label, entry in res["models"].items():
    cells = [f"{entry[s]['sample_s']:.4g}" if s in entry else "skipped" for s in sizes]
    have = [s for s in sizes if s in entry]
    g = entry[have[-1]]["sample_s"] / entry[have[0]]["sample_s"] if len(have) > 1 else None
    growth[label] = dict(factor=g, span=(have[0], have[-1]) if have else None)
    lines.append(f"| {label} | " + " | ".join(cells) + f" | "
                 f"{'' if g is None else f'x{g:.3g} ({have[0]}->{have[-1]})'} | "
                 f"{entry[have[-1]]['sequential_steps'] if have else ''} |")
  res["growth"] = growth
  g_ar = growth.get("lmconv (cached)", {}).get("factor")
  g_other = [growth[k]["factor"] for k in ("glow", "nvae") if growth.get(k, {}).get("factor")]
  last = sizes[-1]
  t_last = {k: e[last]["sample_s"] for k, e in res["models"].items() if last in e}
  if g_ar and g_other:
    grows_more = g_ar > max(g_other)
    slower = t_last.get("lmconv (cached)", 0) > max(t_last.get(k, 0) for k in ("glow", "nvae"))
    res["claim_holds"] = bool(grows_more and slower)
    lines += ["", f"Claim (autoregressive sampling time grows with the number of pixels, "
              f"Glow's and NVAE's do not): LMConv's time grows x{g_ar:.3g}, Glow's and "
              f"NVAE's x{min(g_other):.3g}-x{max(g_other):.3g}; at {last}x{last} LMConv is "
              f"{'slower' if slower else 'NOT slower'} than both. **"
              f"{'holds' if grows_more and slower else 'does NOT fully hold at this scale'}"
              f"**. Glow's and NVAE's work also grows with the pixel count (each convolution "
              f"covers more pixels), so their time is not constant; what they avoid is "
              f"LMConv's H*W sequential network steps."]
  from experiments import compare_plot
  series = {label: ([s * s for s in sizes if s in e], [e[s]["sample_s"] for s in sizes if s in e])
            for label, e in res["models"].items()}
  png = compare_plot.line_plot(
      os.path.join(args.out, "sampling_cost.png"), series,
      title=f"sampling time per batch of {b} vs image size",
      xlabel="pixels (H*W)", ylabel="seconds per batch",
      xtick_labels={float(s * s): f"{s}x{s}" for s in sizes})
  res["figure"] = png
  lines += ["", f"![sampling cost]({os.path.basename(png)})"]
  return res, "\n".join(lines)


def _pairs(exp, n: int):
  """Indices of n pairs of test images (different digits when labels exist)."""
  labels = _test_labels(exp)
  if labels is None:
    return list(range(n)), list(range(n, 2 * n))
  first = {}
  for i, y in enumerate(labels):
    first.setdefault(int(y), i)
  classes = sorted(first)
  a = [first[classes[(2 * k) % len(classes)]] for k in range(n)]
  b = [first[classes[(2 * k + 1) % len(classes)]] for k in range(n)]
  return a, b


def section_latent(runs: Runs, args) -> tuple[dict, str]:
  from experiments import compare_plot
  res, lines = {}, ["| model | encode / decode | reconstruction | interpolation |",
                    "|---|---|---|---|"]
  figs = []
  steps = args.interp_steps
  if runs.available("glow"):
    exp, v = runs.get("glow")
    m, nb = exp.model, exp.num_bins
    x = _test_images(exp)
    y = images.dequantize(jax.random.key(args.seed), jnp.asarray(x), nb)
    rt = jax.jit(lambda v, y: m.decode(v, m.encode(v, y)[0]))
    err = float(np.max(np.abs(_batched_arr(lambda yb: rt(v, yb), np.asarray(y), 256)
                              - np.asarray(y))))
    codes = jax.jit(lambda v, xb: images.quantize(m.decode(v, m.encode(v, xb)[0]), nb))
    exact = float(np.mean(_batched_arr(lambda xb: codes(v, xb), x, 256) == x))
    a, b = _pairs(exp, args.num_pairs)
    interp = np.asarray(jax.jit(lambda v, p, q: m.interpolate(v, p, q, steps))(
        v, jnp.asarray(x[a]), jnp.asarray(x[b])))
    res["glow"] = dict(max_abs_recon_error=err, recon_levels_exact_fraction=exact,
                       latent_shapes=[list(s) for s in m.latent_shapes()])
    rows = [(f"glow pair {i + 1}", imageio.make_grid(interp[i], nb, ncol=steps))
            for i in range(len(a))]
    figs.append(("glow", compare_plot.labelled_rows(os.path.join(args.out, "interp_glow.png"),
                                                    rows, scale=max(2, 32 // m.image_shape[0]))))
    shapes = ", ".join(str(tuple(s)) for s in m.latent_shapes())
    lines.append(f"| glow | exact bijection z = f(x), latents per level {shapes} "
                 f"| max abs decode(encode(y)) - y = {err:.2g} (float32, dequantised test "
                 f"images); levels recovered: {100 * exact:.2f}% | linear in z, "
                 f"{len(a)} pairs x {steps} steps |")
    _log(f"latent glow: max recon error {err:.3g}")
  if runs.available("nvae"):
    exp, v = runs.get("nvae")
    m, nb = exp.model, exp.num_bins
    x = _test_images(exp)
    rt = jax.jit(lambda v, xb: m.decode(v, m.encode(v, xb)))
    rec = _batched_arr(lambda xb: rt(v, xb), x, 256)
    mae = float(np.mean(np.abs(rec.astype(np.float64) - x)))
    exact = float(np.mean(rec == x))
    a, b = _pairs(exp, args.num_pairs)
    interp = np.asarray(jax.jit(lambda v, p, q: m.interpolate(v, p, q, steps))(
        v, jnp.asarray(x[a]), jnp.asarray(x[b])))
    res["nvae"] = dict(mean_abs_recon_error_levels=mae, recon_levels_exact_fraction=exact,
                       num_bins=nb)
    rows = [(f"nvae pair {i + 1}", imageio.make_grid(interp[i], nb, ncol=steps))
            for i in range(len(a))]
    figs.append(("nvae", compare_plot.labelled_rows(os.path.join(args.out, "interp_nvae.png"),
                                                    rows, scale=max(2, 32 // m.image_shape[0]))))
    lines.append(f"| nvae | approximate: posterior means z_j = mu_j(x, z_<j), decoded at "
                 f"temperature 0 | mean abs error {mae:.3g} levels (of {nb}); exact pixels "
                 f"{100 * exact:.1f}% | linear per group, {len(a)} pairs x {steps} steps |")
    _log(f"latent nvae: mean abs recon error {mae:.3g} levels")
  lines.append("| lmconv | none: an autoregressive model has no latent variables; "
               "p(x) = prod_t p(x_t \\| x_<t) | - | - |")
  res["lmconv"] = "no latent space"
  lines.append("")
  lines += [f"![{k} interpolations]({os.path.basename(p)})" for k, p in figs]
  res["figures"] = [p for _, p in figs]
  return res, "\n".join(lines)


def _batched_arr(fn, x: np.ndarray, batch: int) -> np.ndarray:
  """fn(x_batch) -> array with leading dim b, for every row of x (fixed batch shape)."""
  out = []
  for i in range(0, len(x), batch):
    xb = x[i:i + batch]
    n = len(xb)
    if n < batch:
      xb = np.concatenate([xb, np.repeat(xb[:1], batch - n, axis=0)])
    out.append(np.asarray(fn(jnp.asarray(xb)))[:n])
  return np.concatenate(out)


def section_samples(runs: Runs, args) -> tuple[dict, str]:
  from experiments import compare_plot
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
  png = compare_plot.labelled_rows(os.path.join(args.out, "samples.png"), rows, scale=scale)
  res["figure"] = png
  return res, (f"{n} samples per model (temperature 1).\n\n![samples]({os.path.basename(png)})")


SECTION_FNS = {"likelihood": section_likelihood, "orders": section_orders,
               "cost": section_cost, "latent": section_latent, "samples": section_samples}
TITLES = {"likelihood": "Likelihood", "orders": "Any-order LMConv vs raster order: completion",
          "cost": "Sampling cost vs image size", "latent": "Latent access",
          "samples": "Samples"}


def _check_dataset(name: str) -> str | None:
  """None if the test split loads, else the reason."""
  if name == "digits":
    return None
  try:
    from dgmjax import data as data_lib
    data_lib.load(name, "test")
  except Exception as e:  # tfds not prepared / not installed: explain, do not download
    return (f"dataset {name!r} is not available here ({type(e).__name__}: {e})\n"
            f"Or compare on the offline data: --dataset digits.")
  return None


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="dgmjax compare", description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default=None,
                 help="where trained models live / are trained (default runs/demo; "
                      "OUT/workdirs with --quick)")
  p.add_argument("--out", default="runs/compare")
  p.add_argument("--dataset", default="digits", choices=DATASETS)
  p.add_argument("--sections", default=",".join(SECTIONS))
  p.add_argument("--quick", action="store_true",
                 help="smoke configs, untrained weights, tiny sizes (a smoke test)")
  p.add_argument("--models", default="independent,glow,lmconv,nvae",
                 help="models to compare (lmconv includes the raster-only run)")
  p.add_argument("--train_steps", type=int, default=None,
                 help="accept / train runs of this many steps (default: the configs')")
  p.add_argument("--iw_samples", type=int, default=None, help="NVAE importance samples K "
                 "(default 100; 4 with --quick)")
  p.add_argument("--sizes", default=None, help="sampling-cost image sizes (default 8,16,32)")
  p.add_argument("--naive_sizes", default=None,
                 help="sizes at which LMConv's naive sampler is also timed (default 8,16)")
  p.add_argument("--sample_batch", type=int, default=16)
  p.add_argument("--repeats", type=int, default=None)
  p.add_argument("--num_samples", type=int, default=16)
  p.add_argument("--num_figure", type=int, default=10)
  p.add_argument("--num_pairs", type=int, default=4)
  p.add_argument("--interp_steps", type=int, default=8)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  sections = [s for s in args.sections.split(",") if s]
  bad = [s for s in sections if s not in SECTIONS]
  if bad:
    p.error(f"unknown sections {bad}; expected some of {list(SECTIONS)}")
  if args.workdir is None:
    args.workdir = "runs/demo"
  if args.iw_samples is None:
    args.iw_samples = 4 if args.quick else 100
  if args.sizes is None:
    args.sizes = "8,16" if args.quick else "8,16,32"
  if args.naive_sizes is None:
    args.naive_sizes = "8" if args.quick else "8,16"
  if args.repeats is None:
    args.repeats = 1 if args.quick else 3
  if args.iw_samples < 1:
    p.error("--iw_samples must be >= 1")
  reason = _check_dataset(args.dataset)
  if reason:
    print(f"dgmjax compare: {reason}")
    return 2
  os.makedirs(args.out, exist_ok=True)
  models = [m for m in args.models.split(",") if m]
  bad = [m for m in models if m not in ("independent", "glow", "lmconv", "nvae")]
  if bad:
    p.error(f"unknown models {bad}; expected some of independent, glow, lmconv, nvae")
  runs = Runs(args.workdir, args.dataset, args.quick, models, args.train_steps)
  t_start = time.time()
  sec_dir = os.path.join(args.out, "sections")
  os.makedirs(sec_dir, exist_ok=True)
  dev = jax.devices()[0]
  for name in sections:
    t0 = time.time()
    _log(f"section {name}")
    res, text = SECTION_FNS[name](runs, args)
    res["seconds"] = round(time.time() - t0, 1)
    res["runs"] = {k: runs.info[k] for k in runs.info}
    res["dataset"], res["quick"] = args.dataset, args.quick
    res["device"] = f"jax {jax.__version__} on {dev.platform}, {os.cpu_count()} CPU cores"
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with open(os.path.join(sec_dir, f"{name}.md"), "w") as f:
      f.write(f"## {TITLES[name]}\n\n{text}\n\n_(section run at {res['finished']}, "
              f"{res['seconds']:.0f} s)_\n")
    with open(os.path.join(sec_dir, f"{name}.json"), "w") as f:
      json.dump(res, f, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist")
                else str(o))
  report, results = assemble(args.out)
  print(report)
  _log(f"wrote {os.path.join(args.out, 'report.md')} and results.json in {args.out} "
       f"({time.time() - t_start:.0f} s this run)")
  return 0


def assemble(out: str) -> tuple[str, dict]:
  """report.md and results.json from every section written into OUT/sections so far (a
  section run again replaces its earlier result; sections may come from separate runs)."""
  sec_dir = os.path.join(out, "sections")
  results, parts, runs_info = {}, [], {}
  for name in SECTIONS:
    jpath = os.path.join(sec_dir, f"{name}.json")
    if not os.path.exists(jpath):
      continue
    with open(jpath) as f:
      results[name] = json.load(f)
    with open(os.path.join(sec_dir, f"{name}.md")) as f:
      parts.append(f.read())
    for run, info in results[name].get("runs", {}).items():
      runs_info.setdefault(run, dict(info, used_by={}))["used_by"][name] = info["steps"]
  first = next(iter(results.values()), {})
  quick = any(r.get("quick") for r in results.values())
  header = (f"# dgmjax compare: {first.get('dataset', '?')}"
            f"{' (--quick: untrained smoke models, numbers meaningless)' if quick else ''}\n\n"
            f"{first.get('device', '')}; trained models evaluated at their last checkpoint.\n\n")
  table = ["| run | train steps | parameters | workdir |", "|---|---|---|---|"]
  for k, i in sorted(runs_info.items()):
    steps = set(i["used_by"].values())
    if len(steps) > 1:   # sections run at different times saw different checkpoints
      steps = ", ".join(f"{v} ({sec})" for sec, v in i["used_by"].items())
    else:
      steps = str(i["steps"])
    table.append(f"| {k} | {steps} | {i['params']} | `{i['workdir']}` |")
  report = header + "\n".join(table) + "\n\n" + "\n".join(parts)
  with open(os.path.join(out, "report.md"), "w") as f:
    f.write(report)
  results["runs"] = runs_info
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  return report, results


if __name__ == "__main__":
  raise SystemExit(main())
