"""``dgmjax bench all``: every model's benchmark in one run, merged into one table.

    dgmjax bench all [--models glow,lmconv,nvae] [--sizes tiny,paper]
                     [--dtypes float32,bfloat16] [--repeats N] [--out PATH.json]

What a GPU or TPU owner runs to reproduce the README's tables:
``dgmjax bench all --sizes tiny,paper --dtypes float32,bfloat16`` writes
``experiments/results/bench_all_<backend>.json`` and ``.md`` with the device named.
``paper`` stands for each model's paper-size configurations (``PAPER_SIZES``); any
size name a model's script knows may be given too (a model that lacks it is skipped
for that size). ``--dtypes``: dgmjax's compute dtype, one run of every model per dtype
(parameters stay float32; the PyTorch baseline always runs float32, so a bfloat16 row's
ratio compares against float32 PyTorch).

Runs ``experiments/bench/{glow,lmconv,nvae}.py`` (each measures dgmjax and the project's
PyTorch baseline in the same run and writes its own JSON), then adds what the
per-model scripts do not measure:

- FLOPs per training step from XLA's cost analysis of the compiled dgmjax step
  (forward + backward + Adam update of the model's ``loss``, at the size the model's
  benchmark used). XLA counts a ``while`` loop body once, so the step counted is built
  fully unrolled (``compute.unroll=True``): a scan over the repeated blocks would be
  under-counted (LMConv's per-order ``lax.map`` is only in ``log_prob``).
- the achieved FLOP/s of the dgmjax step (FLOPs / median step time) and its fraction of
  the machine's float32 matmul peak, measured by this command (JAX ``x @ x``, n=2048;
  numpy's is printed too): how far each step is from the physical limit.

Prints the merged markdown table with the device line and writes the JSON (and the
table as ``.md`` beside it). A model whose benchmark fails is reported as failed and
the command exits with status 1 after the others ran.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
import time
import traceback
from contextlib import redirect_stdout

from experiments.bench import common, scaffold

MODELS = ("glow", "lmconv", "nvae")
PAPER_SIZES = {"glow": ("mnist", "cifar10"), "lmconv": ("paper", "cifar"),
               "nvae": ("mnist", "cifar10")}


# ------------------------------------------------------------------ normalising results

def _xla_temp_mb(result: dict) -> float | None:
  m = result.get("xla_memory")
  return None if not m else m.get("temp_mb")


def _rows_glow_nvae(model: str, res: dict) -> list[dict]:
  rows = []
  for size, r in res.get("sizes", {}).items():
    j, t = r["dgmjax"], r["pytorch"]
    rows.append(dict(
        model=model, size=size, dtype=res.get("dtype", "float32"), xla_temp_mb=_xla_temp_mb(j),
        train_dgmjax_s=j["train_step_s"], train_pytorch_s=t["train_step_s"],
        sample_dgmjax_s=j["sample_s"], sample_pytorch_s=t["sample_s"],
        mem_dgmjax_mb=j.get("peak_rss_mb"), mem_pytorch_mb=t.get("peak_rss_mb"),
        mem_kind="peak RSS", compile_dgmjax_s=j.get("compile_s"),
        batch=r["config"].get("batch")))
  return rows


def _rows_lmconv(res: dict) -> list[dict]:
  rows = []
  for size, r in res.get("sizes", {}).items():
    d, t = r["dgmjax"], r.get("pytorch") or {}
    peak = d.get("train_peak_bytes")
    rows.append(dict(
        model="lmconv", size=size, dtype=res.get("dtype", "float32"), xla_temp_mb=_xla_temp_mb(d),
        train_dgmjax_s=d["train_step_s"], train_pytorch_s=t.get("train_step_s"),
        sample_dgmjax_s=d["sample_s"], sample_pytorch_s=t.get("sample_s"),
        sample_note="PyTorch extrapolated" if t.get("sample_extrapolated") else "",
        mem_dgmjax_mb=None if peak is None else peak / 2**20, mem_pytorch_mb=None,
        mem_kind="XLA buffer estimate (dgmjax); PyTorch not measured",
        compile_dgmjax_s=None, batch=r["config"].get("batch")))
  return rows


# ------------------------------------------------------------------ FLOPs per train step

def flops_for(model_name: str, size: str, dtype: str = "float32") -> float | None:
  """XLA cost-analysis FLOPs of one dgmjax training step (value_and_grad of ``loss`` + an
  Adam update) of the model and batch ``experiments/bench/MODEL`` measures at ``size``,
  built fully unrolled so that XLA counts every repeated block (it counts a loop body
  once)."""
  import jax
  import optax
  if model_name not in MODELS:
    raise ValueError(f"unknown model {model_name!r}; expected one of {MODELS}")
  bench = importlib.import_module(f"experiments.bench.{model_name}")
  model = bench.build_model(size, dtype=dtype, unroll=True)
  x = bench.batch(size)
  v = model.init(jax.random.PRNGKey(0), x)
  tx = optax.adam(1e-4)
  step = scaffold.train_step(model, tx, step=0)
  return common.xla_flops(jax.jit(step), v, tx.init(v["params"]), x, jax.random.PRNGKey(1))


# ------------------------------------------------------------------ table

COLUMNS = ["model", "size", "dtype", "batch", "train step dgmjax (s)", "PyTorch (s)", "train ratio",
           "sample dgmjax (s)", "PyTorch (s) ", "sample ratio", "peak mem dgmjax (MB)",
           "PyTorch (MB)", "XLA temp dgmjax (MB)", "compile dgmjax (s)", "GFLOP / train step (XLA)",
           "achieved GFLOP/s", "% of matmul peak"]


def _table_rows(rows: list[dict]) -> list[dict]:
  out = []
  for r in rows:
    if r.get("failed"):
      out.append({"model": r["model"], "size": r.get("size", ""), "dtype": r.get("dtype", ""),
                  "train step dgmjax (s)": f"failed: {r['failed']}"})
      continue
    sample_pt = r.get("sample_pytorch_s")
    out.append({
        "model": r["model"], "size": r["size"], "dtype": r.get("dtype"), "batch": r.get("batch"),
        "train step dgmjax (s)": r["train_dgmjax_s"], "PyTorch (s)": r.get("train_pytorch_s"),
        "train ratio": common.ratio(r["train_dgmjax_s"], r.get("train_pytorch_s")),
        "sample dgmjax (s)": r["sample_dgmjax_s"],
        "PyTorch (s) ": (f"{sample_pt:.4g} (extrapolated)" if sample_pt is not None
                         and r.get("sample_note") else sample_pt),
        "sample ratio": common.ratio(r["sample_dgmjax_s"], sample_pt),
        "peak mem dgmjax (MB)": r.get("mem_dgmjax_mb"), "PyTorch (MB)": r.get("mem_pytorch_mb"),
        "XLA temp dgmjax (MB)": r.get("xla_temp_mb"),
        "compile dgmjax (s)": r.get("compile_dgmjax_s"),
        "GFLOP / train step (XLA)": None if r.get("flops") is None else r["flops"] / 1e9,
        "achieved GFLOP/s": r.get("achieved_gflops"),
        "% of matmul peak": (None if r.get("peak_fraction") is None
                             else 100.0 * r["peak_fraction"]),
    })
  return out


def model_sizes(model: str, sizes: str) -> list[str]:
  """The sizes of ``sizes`` (comma list, ``paper`` expanded) that ``model``'s script knows."""
  known = importlib.import_module(f"experiments.bench.{model}").SIZES
  out = []
  for s in (x.strip() for x in sizes.split(",") if x.strip()):
    for name in (PAPER_SIZES[model] if s == "paper" else (s,)):
      if name in known and name not in out:
        out.append(name)
  return out


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="dgmjax bench all", description=__doc__.split("\n")[0])
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--sizes", default="tiny",
                 help="comma list; 'paper' = each model's paper sizes " + str(PAPER_SIZES))
  p.add_argument("--dtypes", default="float32", help="comma list of float32, bfloat16")
  p.add_argument("--repeats", type=int, default=None,
                 help="passed to every model's benchmark (default: each script's own)")
  p.add_argument("--out", default=None,
                 help="JSON path (default experiments/results/bench_all_<backend>.json; the "
                      "table goes beside it as .md)")
  p.add_argument("--no-flops", action="store_true", help="skip the XLA FLOP counts")
  p.add_argument("--peak-n", type=int, default=2048, help="matmul size for the peak")
  p.add_argument("--quiet", action="store_true", help="hide the per-model scripts' output")
  common.add_threads_argument(p)
  args = p.parse_args(argv)
  threads = common.pin_threads(args.threads)
  models = common.choices_argument(p, args.models, MODELS, "models")
  dtypes = common.choices_argument(p, args.dtypes, ("float32", "bfloat16"), "dtypes")
  if args.out is None:
    import jax
    args.out = os.path.join(common.ROOT, "experiments", "results",
                            f"bench_all_{jax.default_backend()}.json")
  out_dir = os.path.dirname(os.path.abspath(args.out))
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.splitext(os.path.abspath(args.out))[0]

  payload = {"device": f"{common.device_line()}; {threads}", "sizes": args.sizes,
             "dtypes": dtypes, "models": {}, "rows": []}
  rows, failed = [], []
  for dtype, m in [(d, m) for d in dtypes for m in models]:
    sizes = model_sizes(m, args.sizes)
    if not sizes:
      print(f"[bench all] {m}: none of the sizes {args.sizes!r} (skipped)", flush=True)
      continue
    t0 = time.time()
    json_path = f"{stem}.{m}.{dtype}.json"
    margv = ["--sizes", ",".join(sizes), "--out", json_path, "--threads", str(args.threads),
             "--dtype", dtype]
    if args.repeats:
      margv += ["--repeats", str(args.repeats)]
    print(f"[bench all] {m}: {' '.join(margv)}", flush=True)
    buf = io.StringIO()
    try:
      mod = importlib.import_module(f"experiments.bench.{m}")
      if args.quiet:
        with redirect_stdout(buf):
          rc = mod.main(margv)
      else:
        rc = mod.main(margv)
      if rc:
        raise RuntimeError(f"exit status {rc}")
      import json
      with open(json_path) as f:
        res = json.load(f)
    except Exception as e:  # keep going: one model's failure must not hide the others
      traceback.print_exc()
      failed.append(f"{m} {dtype}")
      rows.append(dict(model=m, dtype=dtype, failed=f"{type(e).__name__}: {str(e)[:200]}"))
      payload["models"][f"{m}.{dtype}"] = {"failed": str(e)}
      continue
    payload["models"][f"{m}.{dtype}"] = res
    rows += _rows_lmconv(res) if m == "lmconv" else _rows_glow_nvae(m, res)
    print(f"[bench all] {m} done in {time.time() - t0:.0f} s", flush=True)

  peak = common.matmul_peak_gflops(args.peak_n)
  payload["matmul_peak_gflops"] = peak
  if not args.no_flops:
    for r in rows:
      if r.get("failed"):
        continue
      try:
        r["flops"] = flops_for(r["model"], r["size"], r.get("dtype", "float32"))
      except Exception as e:  # report the gap, do not invent a number
        r["flops"] = None
        r["flops_error"] = f"{type(e).__name__}: {e}"
        print(f"[bench all] FLOPs of {r['model']} {r['size']} unavailable: {e}", flush=True)
      if r["flops"]:
        r["achieved_gflops"] = r["flops"] / r["train_dgmjax_s"] / 1e9
        r["peak_fraction"] = r["achieved_gflops"] / peak["jax"]
  payload["rows"] = rows

  table = common.markdown_table(_table_rows(rows), COLUMNS)
  notes = [f"device: {payload['device']}",
           f"float32 matmul peak measured now (n={args.peak_n}): JAX {peak['jax']:.1f} GFLOP/s, "
           f"numpy {peak['numpy']:.1f} GFLOP/s; '% of matmul peak' is against JAX's.",
           "times are medians over repeats; ratio = dgmjax / PyTorch (< 1: dgmjax faster). "
           "Peak memory: process peak RSS (glow, nvae; each framework in its own process) or "
           "XLA's compiled buffer estimate (lmconv, dgmjax only). Compile: dgmjax ahead-of-time "
           "compilation of the measured functions (PyTorch is eager). XLA temp: "
           "compiled.memory_analysis() temp bytes of dgmjax's train step (activations and "
           "scratch beyond its arguments). dtype: dgmjax's compute dtype; PyTorch always "
           "runs float32."]
  text = "\n".join(notes) + "\n\n" + table + "\n"
  print("\n" + text)
  with open(stem + ".md", "w") as f:
    f.write(text)
  common.save_json(args.out, payload)
  print(f"[bench all] wrote {args.out} and {stem}.md")
  if failed:
    print(f"[bench all] FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
