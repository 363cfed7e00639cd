"""The report: each section's table and results on disk, and their assembly.

A section run writes ``OUT/sections/NAME.md`` (its titled text) and ``NAME.json`` (its
numbers, the runs it used, the device and the time); ``assemble`` joins every section
written so far into ``OUT/report.md`` and ``OUT/results.json``, so sections may come from
separate runs and a section run again replaces its earlier result.
"""

from __future__ import annotations

import json
import os
import time

import jax

SECTIONS = ("likelihood", "orders", "cost", "latent", "samples")
TITLES = {"likelihood": "Likelihood", "orders": "Any-order LMConv vs raster order: completion",
          "cost": "Sampling cost vs image size", "latent": "Latent access",
          "samples": "Samples"}


def write_section(out: str, name: str, res: dict, text: str, seconds: float, runs_info: dict,
                  dataset: str, quick: bool) -> None:
  """OUT/sections/NAME.md and NAME.json; adds the run's context to ``res``."""
  sec_dir = os.path.join(out, "sections")
  os.makedirs(sec_dir, exist_ok=True)
  res["seconds"] = round(seconds, 1)
  res["runs"] = dict(runs_info)
  res["dataset"], res["quick"] = dataset, quick
  res["device"] = (f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} "
                   f"CPU cores")
  res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
  with open(os.path.join(sec_dir, f"{name}.md"), "w") as f:
    f.write(f"## {TITLES[name]}\n\n{text}\n\n_(section run at {res['finished']}, "
            f"{res['seconds']:.0f} s)_\n")
  with open(os.path.join(sec_dir, f"{name}.json"), "w") as f:
    json.dump(res, f, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist")
              else str(o))


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
