"""The ``latent`` section: encoding, decoding and interpolating test images.

Glow: an exact bijection z = f(x) (max |decode(encode(y)) - y| on the dequantised test
split) and linear interpolations in z; NVAE: posterior-mean encodings decoded at
temperature 0 (``NVAEModel.encode/decode/interpolate``) and interpolations per group;
LMConv has no latent space. ``interp_glow.png`` and ``interp_nvae.png`` show pairs of
test images (different digits when the data has labels) and the images between them.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import imageio, images
from experiments.compare import plot
from experiments.compare.runs import Runs, batched, load_test_images, load_test_labels, log


def _pairs(exp, n: int):
  """Indices of n pairs of test images (different digits when labels exist)."""
  labels = load_test_labels(exp)
  if labels is None:
    return list(range(n)), list(range(n, 2 * n))
  first = {}
  for i, y in enumerate(labels):
    first.setdefault(int(y), i)
  classes = sorted(first)
  a = [first[classes[(2 * k) % len(classes)]] for k in range(n)]
  b = [first[classes[(2 * k + 1) % len(classes)]] for k in range(n)]
  return a, b


def _interpolation_figure(name: str, exp, v, x: np.ndarray, args) -> tuple[int, str]:
  """Writes OUT/interp_NAME.png (one row per pair of test images): (pairs, path)."""
  m, steps = exp.model, args.interp_steps
  a, b = _pairs(exp, args.num_pairs)
  interp = np.asarray(jax.jit(lambda v, p, q: m.interpolate(v, p, q, steps))(
      v, jnp.asarray(x[a]), jnp.asarray(x[b])))
  rows = [(f"{name} pair {i + 1}", imageio.make_grid(interp[i], exp.num_bins, ncol=steps))
          for i in range(len(a))]
  png = plot.labelled_rows(os.path.join(args.out, f"interp_{name}.png"), rows,
                           scale=max(2, 32 // m.image_shape[0]))
  return len(a), png


def _glow(exp, v, args) -> tuple[dict, str, str]:
  m, nb = exp.model, exp.num_bins
  x = load_test_images(exp)
  y = images.dequantize(jax.random.key(args.seed), jnp.asarray(x), nb)
  rt = jax.jit(lambda v, y: m.decode(v, m.encode(v, y)[0]))
  err = float(np.max(np.abs(batched(lambda yb: rt(v, yb), np.asarray(y), 256)
                            - np.asarray(y))))
  codes = jax.jit(lambda v, xb: images.quantize(m.decode(v, m.encode(v, xb)[0]), nb))
  exact = float(np.mean(batched(lambda xb: codes(v, xb), x, 256) == x))
  pairs, png = _interpolation_figure("glow", exp, v, x, args)
  res = dict(max_abs_recon_error=err, recon_levels_exact_fraction=exact,
             latent_shapes=[list(s) for s in m.latent_shapes()])
  shapes = ", ".join(str(tuple(s)) for s in m.latent_shapes())
  line = (f"| glow | exact bijection z = f(x), latents per level {shapes} "
          f"| max abs decode(encode(y)) - y = {err:.2g} (float32, dequantised test "
          f"images); levels recovered: {100 * exact:.2f}% | linear in z, "
          f"{pairs} pairs x {args.interp_steps} steps |")
  log(f"latent glow: max recon error {err:.3g}")
  return res, line, png


def _nvae(exp, v, args) -> tuple[dict, str, str]:
  m, nb = exp.model, exp.num_bins
  x = load_test_images(exp)
  rt = jax.jit(lambda v, xb: m.decode(v, m.encode(v, xb)))
  rec = batched(lambda xb: rt(v, xb), x, 256)
  mae = float(np.mean(np.abs(rec.astype(np.float64) - x)))
  exact = float(np.mean(rec == x))
  pairs, png = _interpolation_figure("nvae", exp, v, x, args)
  res = dict(mean_abs_recon_error_levels=mae, recon_levels_exact_fraction=exact, num_bins=nb)
  line = (f"| nvae | approximate: posterior means z_j = mu_j(x, z_<j), decoded at "
          f"temperature 0 | mean abs error {mae:.3g} levels (of {nb}); exact pixels "
          f"{100 * exact:.1f}% | linear per group, {pairs} pairs x {args.interp_steps} "
          f"steps |")
  log(f"latent nvae: mean abs recon error {mae:.3g} levels")
  return res, line, png


def section_latent(runs: Runs, args) -> tuple[dict, str]:
  res, lines = {}, ["| model | encode / decode | reconstruction | interpolation |",
                    "|---|---|---|---|"]
  figs = []
  for name, measure in (("glow", _glow), ("nvae", _nvae)):
    if runs.available(name):
      res[name], line, png = measure(*runs.get(name), args)
      lines.append(line)
      figs.append((name, png))
  lines.append("| lmconv | none: an autoregressive model has no latent variables; "
               "p(x) = prod_t p(x_t \\| x_<t) | - | - |")
  res["lmconv"] = "no latent space"
  lines.append("")
  lines += [f"![{k} interpolations]({os.path.basename(p)})" for k, p in figs]
  res["figures"] = [p for _, p in figs]
  return res, "\n".join(lines)
