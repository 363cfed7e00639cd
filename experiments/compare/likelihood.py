"""The ``likelihood`` section: test bits/dim of every model over the whole test split.

Exact for the independent baseline and LMConv (the order ensemble
log (1/N) sum_k p_k(x), and each order alone); Glow's single-sample dequantisation lower
bound; NVAE's ELBO and its importance-weighted bound with K samples (``--iw_samples``).
"""

from __future__ import annotations

import time

import numpy as np

from dgmjax import images
from dgmjax.lmconv import ensemble
from dgmjax.train import evaluator, loop
from experiments.compare.runs import Runs, log

LIKELIHOOD_KIND = {"independent": "exact", "glow": "dequantisation bound (1 noise sample)",
                   "lmconv": "exact", "nvae": "ELBO"}


def _lmconv_per_order(exp, v) -> list[float]:
  """Test bits/dim of LMConv under each of its orders alone (``lmconv.ensemble``, every
  order in one pass over the test split)."""
  model = exp.model
  step = evaluator.batch_step(
      lambda v, x, rng: ensemble.per_order_log_prob(model, v, x, model.order_array).T,
      mesh=exp.mesh, preprocess=exp.preprocess)                         # [B, N] nats
  means = evaluator.evaluate_split(exp, v, step)
  return [float(images.bits_per_dim(m, model.image_shape)) for m in means]


def _iw_eval_fn(exp, k: int):
  """The eval step of ``loop.evaluate`` scoring NVAE's K-sample importance-weighted bound."""
  model = exp.model
  return evaluator.batch_step(
      lambda v, x, rng, **labels: model.log_prob(v, x, rng, num_samples=k, **labels),
      mesh=exp.mesh, preprocess=exp.preprocess)


def section_likelihood(runs: Runs, args) -> tuple[dict, str]:
  rows, res = [], {}
  for run in ("independent", "glow", "lmconv", "nvae"):
    if not runs.available(run):
      rows.append(f"| {run} | not selected (--models) or no config for {runs.dataset} | | |")
      continue
    exp, v = runs.get(run)
    model = exp.model
    t0 = time.time()
    bpd = loop.evaluate(exp, v)
    steps = runs.info[run]["steps"]
    res[run] = {"test_bpd": bpd, "kind": LIKELIHOOD_KIND[run], "steps": steps}
    kind = LIKELIHOOD_KIND[run]
    if run == "lmconv" and len(model.order_array) > 1:
      kind = f"exact, ensemble of {len(model.order_array)} orders"
    rows.append(f"| {run} | {kind} | {bpd:.4f} | {steps} |")
    if run == "lmconv":
      per = _lmconv_per_order(exp, v)
      res[run]["per_order_bpd"] = per
      res[run]["orders"] = list(model.orders)
      if len(per) > 1:
        rows.append(f"| lmconv | exact, single order: best / mean / worst of {len(per)} | "
                    f"{min(per):.4f} / {float(np.mean(per)):.4f} / {max(per):.4f} | |")
    if run == "nvae":
      k = args.iw_samples
      iw = loop.evaluate(exp, v, eval_fn=_iw_eval_fn(exp, k))
      res[run]["iw_bpd"], res[run]["iw_samples"] = iw, k
      rows.append(f"| nvae | importance-weighted bound, K={k} | {iw:.4f} | {steps} |")
    log(f"likelihood {run}: {bpd:.4f} bits/dim ({time.time() - t0:.0f} s)")
  table = ["| model | likelihood | test bits/dim | train steps |", "|---|---|---|---|"] + rows
  text = ("Test bits/dim over the whole test split (lower is better). Exact values and "
          "bounds on -log p(x) are comparable in one direction only: a bound is an upper "
          "bound on the model's bits/dim.\n\n" + "\n".join(table))
  return res, text
