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

One module per section (``likelihood``, ``orders``, ``cost``, ``latent``, ``samples``);
``runs`` loads or trains the models, ``report`` writes and assembles the sections,
``plot`` draws the figures.

``--train_steps N``: a run counts as trained once its latest checkpoint reaches N steps
(or the config's num_steps if smaller); a missing run is trained for N steps (its
schedule shortened to N). The report gives every run's step count.
``--quick`` (the smoke test): the smoke configs' initial (untrained) weights, nothing
trained or written but ``OUT``, K = 4, sizes 8 and 16: every code path in about a
minute; the numbers then mean nothing. ``--models`` restricts the models.
"""

from __future__ import annotations

import argparse
import os
import time

from experiments.compare.cost import section_cost
from experiments.compare.latent import section_latent
from experiments.compare.likelihood import section_likelihood
from experiments.compare.orders import section_orders
from experiments.compare.report import SECTIONS, TITLES, assemble, write_section
from experiments.compare.runs import DATASETS, MODELS, Runs, log
from experiments.compare.samples import section_samples

__all__ = ["Runs", "SECTIONS", "SECTION_FNS", "TITLES", "assemble", "main"]

SECTION_FNS = {"likelihood": section_likelihood, "orders": section_orders,
               "cost": section_cost, "latent": section_latent, "samples": section_samples}


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
  p.add_argument("--models", default=",".join(MODELS),
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
  bad = [m for m in models if m not in MODELS]
  if bad:
    p.error(f"unknown models {bad}; expected some of {', '.join(MODELS)}")
  runs = Runs(args.workdir, args.dataset, args.quick, models, args.train_steps)
  t_start = time.time()
  os.makedirs(os.path.join(args.out, "sections"), exist_ok=True)
  for name in sections:
    t0 = time.time()
    log(f"section {name}")
    res, text = SECTION_FNS[name](runs, args)
    write_section(args.out, name, res, text, time.time() - t0, runs.info, args.dataset,
                  args.quick)
  report, _ = assemble(args.out)
  print(report)
  log(f"wrote {os.path.join(args.out, 'report.md')} and results.json in {args.out} "
      f"({time.time() - t_start:.0f} s this run)")
  return 0
