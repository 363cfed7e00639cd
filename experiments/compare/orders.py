"""The ``orders`` section: LMConv over its configured orders vs raster order alone.

Both are scored on the test likelihood and on completing the TOP half of each test
image given the BOTTOM half: the conditional NLL -log p(x_top | x_bottom) in bits per
hidden dimension, under an order that visits the observed bottom first. The multi-order
model has such orders among its training orders (s-curves starting at the bottom row).
The raster model has none: it is scored (a) under raster re-arranged with the bottom
first (masks it never trained on) and (b) with its own order, which can only give the
marginal p(x_top), ignoring the bottom. ``completions.png`` shows samples of both.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import imageio, images
from dgmjax.lmconv import orders as orders_lib
from dgmjax.train import loop
from experiments.compare import plot
from experiments.compare.runs import Runs, batched, load_test_images


def _hidden_bits(lp_nats: np.ndarray, hidden_dims: int) -> float:
  return float(images.bits_per_dim(np.mean(lp_nats), hidden_dims))


def section_orders(runs: Runs, args) -> tuple[dict, str]:
  if not (runs.available("lmconv") and runs.available("lmconv_raster")):
    return {}, f"LMConv not selected (--models) or no config for {runs.dataset}."
  (exp_m, v_m), (exp_r, v_r) = runs.get("lmconv"), runs.get("lmconv_raster")
  mm, mr = exp_m.model, exp_r.model
  h, w, c = mm.image_shape
  x = load_test_images(exp_m)
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

  def natively_bottom_first(o):
    return bool(np.array_equal(orders_lib.observed_first(o, obs), o))

  def top_given_nothing(m, v, o):  # log p(x_top) under order o, the bottom ignored
    return batched(lambda xb: jnp.sum(jnp.where(obs_j, 0.0, cond(m, v, xb, jnp.asarray(o))),
                                      axis=(1, 2)), x, bs, np.float64)

  res = {"observed": "bottom half", "hidden_dims": hidden_dims}
  # multi-order model: every configured order, re-arranged bottom first when needed
  per = []
  for o in mm.order_array:
    lp = batched(lambda xb: hidden(mm, v_m, xb, jnp.asarray(o)), x, bs, np.float64)
    per.append(dict(native=natively_bottom_first(o), bits=_hidden_bits(lp, hidden_dims)))
  native = [p["bits"] for p in per if p["native"]]
  native_idx = [i for i, p in enumerate(per) if p["native"]]
  res["multi_per_order"] = per
  top_first = np.asarray(mm.order_array[0])
  lp_top_m = (None if natively_bottom_first(top_first)
              else top_given_nothing(mm, v_m, top_first))
  # raster model: (a) bottom-first re-arrangement of raster, (b) its own order: p(x_top)
  raster = np.asarray(mr.order_array[0])
  lp_r_re = batched(lambda xb: hidden(mr, v_r, xb, jnp.asarray(raster)), x, bs, np.float64)
  lp_r_top = top_given_nothing(mr, v_r, raster)
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
  png = plot.labelled_rows(
      os.path.join(args.out, "completions.png"),
      [(label, imageio.make_grid(r, exp_m.num_bins, ncol=n)) for label, r in rows],
      scale=max(2, 32 // h))
  res["figure"] = png
  lines += ["", f"![completions]({os.path.basename(png)})"]
  return res, "\n".join(lines)
