"""The reversible Glow's studies for ``experiments/bench/glow.py`` (``--reversible``,
``--memory-vs-k``, ``--drift-steps``): the train step's XLA temp memory against the number
of steps per level, standard and reversible (compile only), the reversible gradient's
drift on ``digits``, and their tables. Same sizes and data as ``experiments.bench.glow``."""

from __future__ import annotations

import time

from experiments.bench.glow import NUM_BINS, SIZES, batch, temp_mb


def digits_split():
  """scikit-learn's digits as uint8 [N, 8, 8, 1]: the first 1500 of a fixed permutation
  (train) and the other 297 (test)."""
  import numpy as np
  from sklearn.datasets import load_digits
  xs = load_digits().images.astype(np.uint8).reshape(-1, 8, 8, 1)
  idx = np.random.RandomState(0).permutation(len(xs))
  return xs[idx[:1500]], xs[idx[1500:]]


def memory_vs_k(size: str, ks=(8, 16, 32, 64)) -> list[dict]:
  """XLA temp MB of the train step's gradient at ``size`` for each K, standard and
  reversible; compile only."""
  import jax
  import jax.numpy as jnp
  import dgmjax

  cfg = SIZES[size]
  x = jnp.asarray(batch(size))
  rows = []
  for k in ks:
    row = {"K": k}
    for name, kw in (("standard", {}), ("reversible", dict(compute=dict(remat="reversible")))):
      model = dgmjax.models.create("glow", cfg["image"], NUM_BINS, levels=cfg["levels"],
                                   steps=k, width=cfg["width"], **kw)
      v = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
      rest = {n: a for n, a in v.items() if n != "params"}
      grad = jax.jit(jax.grad(lambda p, r, m=model: m.loss({"params": p, **r}, x,
                                                          jax.random.PRNGKey(1))[0]))
      row[name + "_temp_mb"] = temp_mb(grad.lower(v["params"], rest).compile())
    rows.append(row)
  return rows


def digits_drift(steps: int, batch: int = 32, levels: int = 3, k: int = 32,
                 width: int = 512, lr: float = 1e-4, dtype: str = "float32") -> dict:
  """Reversible drift on digits at K=32, L=3, width 512, initialised and after ``steps``
  Adam steps of the reversible gradient (lr warmed up to ``lr`` over 20 steps, clipping
  at 50; at lr 1e-3 this Glow diverges by step 14 with either gradient, rev_recon_err
  2e-6 -> 0.4 on the way): per level [max abs, relative] error of the first step's
  rebuilt input on 64 held-out images, and max|g_rev - g_std| / max|g_std| per parameter
  array on one batch (both in ``dtype``): max, median, worst array and its scale, and the
  largest difference against the whole gradient's largest entry."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  import dgmjax

  train, test = digits_split()
  kw = dict(levels=levels, steps=k, width=width, compute=dict(dtype=dtype))
  rev = dgmjax.models.create("glow", (8, 8, 1), 17,
                             **dict(kw, compute=dict(dtype=dtype, remat="reversible")))
  std = dgmjax.models.create("glow", (8, 8, 1), 17, **kw)
  v = jax.jit(rev.init)(jax.random.PRNGKey(0), jnp.asarray(train[:256]))
  rest = {n: a for n, a in v.items() if n != "params"}
  opt = optax.chain(optax.clip_by_global_norm(50.0),
                    optax.adam(optax.linear_schedule(0.0, lr, 20)))
  errs = jax.jit(lambda v, x: rev.reconstruction_errors(v, x, jax.random.PRNGKey(7)))
  grad = lambda m: jax.jit(jax.grad(lambda p, x: m.loss({"params": p, **rest}, x,
                                                        jax.random.PRNGKey(5))[0]))
  g_rev, g_std = grad(rev), grad(std)

  def measure(params):
    x = jnp.asarray(test[:64])
    e = np.asarray(errs({"params": params, **rest}, x))
    a, b = g_rev(params, x), g_std(params, x)
    flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
    flat_b = jax.tree_util.tree_leaves(b)
    rel = [float(jnp.max(jnp.abs(u - w)) / jnp.maximum(jnp.max(jnp.abs(w)), 1e-30))
           for (_, u), w in zip(flat_a, flat_b)]
    worst = int(np.argmax(rel))
    top = max(float(jnp.max(jnp.abs(w))) for w in flat_b)
    return dict(level_abs_err=e[:, 0].tolist(), level_rel_err=e[:, 1].tolist(),
                grad_rel_diff_max=max(rel), grad_rel_diff_median=float(np.median(rel)),
                grad_rel_diff_worst_array=jax.tree_util.keystr(flat_a[worst][0]),
                grad_worst_array_scale=float(jnp.max(jnp.abs(flat_b[worst]))) / top,
                grad_global_rel_diff=max(float(jnp.max(jnp.abs(u - w)))
                                         for (_, u), w in zip(flat_a, flat_b)) / top)

  @jax.jit
  def step(params, state, x, rng):
    (loss, aux), g = jax.value_and_grad(
        lambda p: rev.loss({"params": p, **rest}, x, rng), has_aux=True)(params)
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state, loss, aux["metrics"]["rev_recon_err"]

  params = v["params"]
  out = {"config": dict(kw, dtype=dtype, batch=batch, steps_trained=steps),
         "init": measure(params)}
  state, rs, metric, losses = opt.init(params), np.random.RandomState(0), [], []
  t0 = time.perf_counter()
  for i in range(steps):
    params, state, loss, m = step(params, state, jnp.asarray(train[rs.randint(0, 1500, batch)]),
                                  jax.random.PRNGKey(i))
    metric.append(float(m))
    losses.append(float(loss))
  out["train_s"] = time.perf_counter() - t0
  out["trained"] = dict(measure(params), train_loss_first=losses[0] if losses else None,
                        train_loss_last=losses[-1] if losses else None,
                        rev_recon_err_max_during_training=float(np.max(metric)) if metric
                        else None)
  return out


def print_reversible_table(results: dict) -> None:
  """The ``--reversible`` table: each size's reversible train step and memory against the
  standard dgmjax step and PyTorch."""
  print("\ncompute.remat=reversible: train step and memory against the standard dgmjax step "
        "(ratio rev/std) and PyTorch (ratio rev/PyTorch); temp = XLA temp MB of the step")
  print("| size | train step rev (s) | std (s) | PyTorch (s) | rev/std | rev/PyTorch "
        "| peak RSS rev (MB) | std (MB) | PyTorch (MB) | temp rev (MB) | temp std (MB) |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  fmt = lambda a: "n/a" if a is None else f"{a:.0f}"
  for size, r in results["sizes"].items():
    j, t, rv = r["dgmjax"], r["pytorch"], r["dgmjax_reversible"]
    print(f"| {size} | {rv['train_step_s']:.4f} | {j['train_step_s']:.4f} | "
          f"{t['train_step_s']:.4f} | {rv['train_step_s'] / j['train_step_s']:.2f} | "
          f"{rv['train_step_s'] / t['train_step_s']:.2f} | {rv['peak_rss_mb']:.0f} | "
          f"{j['peak_rss_mb']:.0f} | {t['peak_rss_mb']:.0f} | {fmt(rv.get('temp_mb'))} | "
          f"{fmt(j.get('temp_mb'))} |")


def print_memory_vs_k(study: dict) -> None:
  """The ``--memory-vs-k`` table of ``{"size", "rows": memory_vs_k(size)}``."""
  print(f"\ntrain-step XLA temp memory (MB) vs K at {study['size']} (compile only)")
  print("| K | standard (scan) | reversible |")
  print("|---|---|---|")
  for row in study["rows"]:
    print(f"| {row['K']} | {row['standard_temp_mb']:.1f} | {row['reversible_temp_mb']:.1f} |")


def print_drift(drift: dict) -> None:
  """The ``--drift-steps`` lines of a ``digits_drift`` result."""
  print(f"\nreversible drift on digits ({drift['config']})")
  for when in ("init", "trained"):
    r = drift[when]
    print(f"{when}: per-level max abs error {['%.2e' % e for e in r['level_abs_err']]}, "
          f"relative {['%.2e' % e for e in r['level_rel_err']]}; gradient rel. diff "
          f"max {r['grad_rel_diff_max']:.2e} median {r['grad_rel_diff_median']:.2e} "
          f"(worst array {r['grad_rel_diff_worst_array']}, whose largest entry is "
          f"{r['grad_worst_array_scale']:.1e} of the gradient's largest; against the "
          f"gradient's largest entry: {r['grad_global_rel_diff']:.2e})")
