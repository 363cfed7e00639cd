"""Smoke tests of ``dgmjax compare`` and ``dgmjax bench all`` (experiments/).

- the PIL figures: a log-log curve and labelled rows are real PNGs of the expected size,
  with the curve drawn; bad values are refused;
- ``compare --quick`` (untrained smoke models, tiny sizes) writes the report, the JSON and
  the PNGs, with finite likelihoods and Glow's decode(encode(y)) = y to float32
  precision; a later run of one section keeps the others. The run over every model and
  section (LMConv per-order values, ensemble <= mean of orders, NVAE IW <= ELBO) is
  marked slow: LMConv and NVAE compiles take minutes on a busy 2-core machine;
- ``bench all``'s merged rows: ratios are dgmjax / PyTorch of the same run's numbers.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

import dgmjax
from experiments import compare
from experiments.bench import all as bench_all
from experiments.compare import plot as compare_plot


def test_line_plot_and_labelled_rows(tmp_path):
  path = compare_plot.line_plot(str(tmp_path / "c.png"),
                                {"a": ([64, 256, 1024], [0.01, 0.1, 1.0]),
                                 "b": ([64, 256, 1024], [0.02, 0.02, 0.03])},
                                xtick_labels={64.0: "8x8", 256.0: "16x16", 1024.0: "32x32"},
                                size=(400, 300))
  img = np.asarray(Image.open(path).convert("RGB"))
  assert img.shape == (300, 400, 3)
  colours = {tuple(c) for c in compare_plot.COLOURS[:2]}
  drawn = {tuple(p) for p in img.reshape(-1, 3)}
  assert colours <= drawn          # both curves are on the canvas
  with pytest.raises(ValueError, match="> 0"):
    compare_plot.line_plot(str(tmp_path / "bad.png"), {"a": ([1, 2], [0.0, 1.0])})
  rows = [("first", np.zeros((5, 7, 1), np.uint8)), ("second", np.full((5, 9, 3), 200, np.uint8))]
  path = compare_plot.labelled_rows(str(tmp_path / "r.png"), rows, scale=2, label_width=50)
  assert Image.open(path).size == (50 + 18, 20)
  with pytest.raises(ValueError, match="uint8"):
    compare_plot.labelled_rows(str(tmp_path / "x.png"), [("f", np.zeros((5, 7), np.float32))])


def _png_ok(out, report, png):
  assert f"({png})" in report
  Image.open(os.path.join(out, png)).verify()


@pytest.mark.slow
def test_compare_quick_glow(tmp_path):
  """The default-run smoke test: every section but the LMConv/NVAE ones, Glow only."""
  out = str(tmp_path / "cmp")
  rc = compare.main(["--quick", "--out", out, "--models", "independent,glow",
                     "--sections", "likelihood,cost,latent,samples", "--sizes", "8,16",
                     "--sample_batch", "2", "--num_samples", "4", "--num_pairs", "2",
                     "--interp_steps", "3"])
  assert rc == 0
  report = open(os.path.join(out, "report.md")).read()
  res = json.load(open(os.path.join(out, "results.json")))
  for m in ("independent", "glow"):
    assert math.isfinite(res["likelihood"][m]["test_bpd"]) and res["likelihood"][m]["test_bpd"] > 0
  assert res["latent"]["glow"]["max_abs_recon_error"] < 1e-3   # an exact bijection
  assert res["latent"]["glow"]["recon_levels_exact_fraction"] == 1.0
  assert res["latent"]["lmconv"] == "no latent space"
  cost = res["cost"]["models"]
  assert set(cost) == {"glow"} and set(cost["glow"]) == {"8", "16"}
  assert all(e["sample_s"] > 0 for e in cost["glow"].values())
  for png in ("sampling_cost.png", "interp_glow.png", "samples.png"):
    _png_ok(out, report, png)
  # a second run of one section replaces it and keeps the others in the report
  assert compare.main(["--quick", "--out", out, "--models", "independent",
                       "--sections", "samples", "--num_samples", "2"]) == 0
  res2 = json.load(open(os.path.join(out, "results.json")))
  assert set(res2) >= {"likelihood", "cost", "latent", "samples"}
  assert set(res2["samples"]) - {"figure", "seconds", "runs", "dataset", "quick", "device",
                                 "finished"} == {"independent"}


@pytest.mark.slow   # LMConv and NVAE compiles: minutes on a busy 2-core CPU
def test_compare_quick_all(tmp_path):
  out = str(tmp_path / "cmp")
  rc = compare.main(["--quick", "--out", out, "--sizes", "8,16", "--naive_sizes", "8",
                     "--sample_batch", "2", "--num_samples", "4", "--num_figure", "3",
                     "--num_pairs", "2", "--interp_steps", "3"])
  assert rc == 0
  report = open(os.path.join(out, "report.md")).read()
  for title in compare.TITLES.values():
    assert f"## {title}" in report
  res = json.load(open(os.path.join(out, "results.json")))
  lik = res["likelihood"]
  for m in ("independent", "glow", "lmconv", "nvae"):
    assert math.isfinite(lik[m]["test_bpd"]) and lik[m]["test_bpd"] > 0
  # the importance-weighted bound is at least as tight as the ELBO (up to noise)
  assert lik["nvae"]["iw_bpd"] <= lik["nvae"]["test_bpd"] + 0.05
  config = compare.Runs(out, "digits", True).config("lmconv")
  n_orders = len(dgmjax.models.create("lmconv", (8, 8, 1), 17, **{
      k: val for k, val in config.model.to_dict().items() if k != "name"}).order_array)
  per = lik["lmconv"]["per_order_bpd"]
  assert len(per) == n_orders
  # log-mean-exp over orders: never worse than the mean of the per-order values (Jensen)
  assert lik["lmconv"]["test_bpd"] <= np.mean(per) + 1e-4
  orders = res["orders"]
  for key in ("raster_rearranged_bits", "raster_marginal_top_bits",
              "multi_rearranged_mean_bits"):
    assert math.isfinite(orders[key])
  assert res["latent"]["glow"]["max_abs_recon_error"] < 1e-3
  assert math.isfinite(res["latent"]["nvae"]["mean_abs_recon_error_levels"])
  assert set(res["cost"]["models"]) == {"lmconv (cached)", "lmconv (naive)", "glow", "nvae"}
  for png in ("completions.png", "sampling_cost.png", "interp_glow.png", "interp_nvae.png",
              "samples.png"):
    _png_ok(out, report, png)


def test_bench_all_rows_and_ratios():
  glow_like = {"sizes": {"tiny": {
      "config": {"batch": 16},
      "dgmjax": {"train_step_s": 0.3, "sample_s": 0.2, "peak_rss_mb": 900.0, "compile_s": 5.0},
      "pytorch": {"train_step_s": 0.6, "sample_s": 0.1, "peak_rss_mb": 450.0}}}}
  rows = bench_all._rows_glow_nvae("glow", glow_like)  # pylint: disable=protected-access
  lm = {"sizes": {"tiny": {"config": {"batch": 8},
                           "dgmjax": {"train_step_s": 0.5, "sample_s": 1.0,
                                      "train_peak_bytes": 2 ** 21},
                           "pytorch": {"train_step_s": 0.25, "sample_s": 4.0,
                                       "sample_extrapolated": True}}}}
  rows += bench_all._rows_lmconv(lm)  # pylint: disable=protected-access
  table = bench_all._table_rows(rows)  # pylint: disable=protected-access
  g, l = table
  assert g["train ratio"] == pytest.approx(0.3 / 0.6)
  assert g["sample ratio"] == pytest.approx(0.2 / 0.1)
  assert l["train ratio"] == pytest.approx(0.5 / 0.25)
  assert l["peak mem dgmjax (MB)"] == pytest.approx(2.0)
  assert "extrapolated" in l["PyTorch (s) "]
  md = bench_all.common.markdown_table(table, bench_all.COLUMNS)
  assert md.count("\n") == 3 and "| glow | tiny |" in md
