"""Shared measuring tools for the benchmark drivers (``dgmjax bench MODEL``).

Machines are shared and noisy, so every figure is a median over repeats and every
dgmjax number is reported next to the PyTorch baseline measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable

import numpy as np


def device_line() -> str:
  """What ran the benchmark: JAX backend and device kind, torch version, CPU count."""
  import jax
  dev = jax.devices()[0]
  parts = [f"jax {jax.__version__} on {dev.platform} ({getattr(dev, 'device_kind', '?')}, "
           f"{jax.device_count()} device(s))",
           f"{os.cpu_count()} CPU cores ({len(os.sched_getaffinity(0))} usable)",
           platform.processor() or platform.machine()]
  try:
    import torch
    tdev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    parts.append(f"torch {torch.__version__} on {tdev} ({torch.get_num_threads()} threads)")
  except ImportError:
    parts.append("torch not installed")
  return "; ".join(parts)


def median_and_min(fn: Callable[[], object], repeats: int = 5, warmup: int = 1):
  """(median, min) wall time in seconds of ``fn()`` over ``repeats`` calls after
  ``warmup`` untimed ones; ``fn`` must block until its work is done."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), min(times)


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
  """Median wall time in seconds of ``fn()``, which must block until its work is done."""
  return median_and_min(fn, repeats, warmup)[0]


def ratio_cells(jax_result: dict, torch_result: dict, key: str) -> str:
  """Markdown cells 'dgmjax median (min) | PyTorch median (min) | ratio (ratio of mins)'
  for ``key`` + '_s' / '_min_s' entries of two worker results."""
  j, t = jax_result, torch_result
  return (f"{j[key + '_s']:.4f} ({j[key + '_min_s']:.4f}) | {t[key + '_s']:.4f} "
          f"({t[key + '_min_s']:.4f}) | {j[key + '_s'] / t[key + '_s']:.2f} "
          f"({j[key + '_min_s'] / t[key + '_min_s']:.2f})")


def peak_rss_mb() -> float:
  """Peak resident set size of this process so far, MiB (Linux ru_maxrss is KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def jax_device_memory_mb() -> float | None:
  """Peak bytes in use on the first JAX accelerator, MiB (None on CPU)."""
  import jax
  stats = jax.devices()[0].memory_stats() if jax.devices()[0].platform != "cpu" else None
  return None if not stats else stats.get("peak_bytes_in_use", 0) / 2**20


def xla_memory(compiled) -> dict | None:
  """XLA's buffer sizes of a compiled function, MiB: ``temp_mb`` (activations and scratch
  the call needs beyond its arguments), ``argument_mb``, ``output_mb``, ``alias_mb``
  (outputs that reuse donated arguments); None where the backend does not report them."""
  try:
    m = compiled.memory_analysis()
    return dict(temp_mb=m.temp_size_in_bytes / 2**20, argument_mb=m.argument_size_in_bytes / 2**20,
                output_mb=m.output_size_in_bytes / 2**20, alias_mb=m.alias_size_in_bytes / 2**20)
  except Exception:  # noqa: BLE001 (not every backend reports it)
    return None


def add_dtype_argument(parser) -> None:
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="dgmjax's compute dtype (parameters stay float32; PyTorch runs "
                           "float32)")


def xla_flops(jitted, *args) -> float | None:
  """FLOPs of one call of a jitted function from XLA's cost analysis (None if unknown)."""
  try:
    cost = jitted.lower(*args).compile().cost_analysis()
  except Exception:  # cost analysis is best-effort on some backends
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return None if not cost else float(cost.get("flops", 0.0)) or None


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> dict:
  """Measured float32 matmul throughput (GFLOP/s) of numpy and JAX on this machine."""
  import jax
  import jax.numpy as jnp
  a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
  flops = 2.0 * n ** 3
  t_np = median_time(lambda: a @ a, repeats)
  ja = jnp.asarray(a)
  mm = jax.jit(lambda x: x @ x)
  t_jax = median_time(lambda: mm(ja).block_until_ready(), repeats)
  return {"numpy": flops / t_np / 1e9, "jax": flops / t_jax / 1e9}


def markdown_table(rows: list[dict], columns: list[str]) -> str:
  def fmt(v):
    if isinstance(v, float):
      return f"{v:.4g}"
    return "" if v is None else str(v)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
  return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> float | None:
  return None if a is None or b is None or b == 0 else a / b


def save_json(path: str, payload: dict) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(payload, f, indent=1, default=float)
  return path


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pin_threads(threads: int) -> str:
  """Restricts this process (and the workers it starts) to ``threads`` CPU cores.

  Sets the CPU affinity to the first ``threads`` cores this process may use (XLA's and
  PyTorch's thread pools both size themselves from it) and ``OMP_NUM_THREADS`` /
  ``MKL_NUM_THREADS`` (inherited by subprocesses). Call it before JAX or PyTorch start
  their thread pools. ``threads=0`` leaves everything as it is. On a CPU shared with
  other jobs, one pinned thread per framework avoids the oversubscription stalls that
  make multi-threaded PyTorch up to 10x slower there (measured: Glow CIFAR-10 train step
  27 s with all threads against 3.0 s pinned, same load). Returns a line for the report.
  """
  if threads < 0:
    raise ValueError(f"threads must be >= 0 (0: all cores); got {threads}")
  if not threads:
    return f"threads: all ({os.cpu_count()} CPUs)"
  cores = sorted(os.sched_getaffinity(0))
  if threads > len(cores):
    raise ValueError(f"threads={threads} but this process may use only {len(cores)} cores")
  os.sched_setaffinity(0, cores[:threads])
  os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
  if "torch" in sys.modules:
    sys.modules["torch"].set_num_threads(threads)
  return f"threads: {threads} (pinned to cores {cores[:threads]})"


def choices_argument(parser, text: str, choices, what: str = "sizes") -> list[str]:
  """Comma-separated ``text`` -> the listed names, in order; ``parser.error`` (exit 2)
  naming the unknown ones and the valid ``choices``."""
  names = [s for s in text.split(",") if s]
  bad = [s for s in names if s not in choices]
  if bad:
    parser.error(f"unknown {what} {bad}; expected some of {sorted(choices)}")
  return names


def platform_line(threads: str) -> str:
  """OS, processor, CPU count and the ``pin_threads`` line, for a result's header."""
  return (f"{platform.platform()} | {platform.processor() or platform.machine()} | "
          f"{os.cpu_count()} CPUs | {threads}")


def thread_settings() -> dict:
  """What this process may use: usable cores and the OMP/MKL thread variables."""
  return dict(cores=len(os.sched_getaffinity(0)), omp=os.environ.get("OMP_NUM_THREADS"),
              mkl=os.environ.get("MKL_NUM_THREADS"))


def add_threads_argument(parser) -> None:
  """``--threads N`` for a benchmark driver (see ``pin_threads``)."""
  parser.add_argument("--threads", type=int, default=0,
                      help="pin both frameworks to N cores (0: all). On a shared machine "
                           "use 1: PyTorch's thread pool stalls under oversubscription")


def run_worker(module: str, call: str, env: dict | None = None) -> dict:
  """Evaluates ``module.call`` in a fresh Python process and returns its JSON result.

  Each framework is measured in its own process so that peak RSS and thread pools are
  its own. ``call`` is a Python expression such as ``"worker_jax('tiny', 5)"`` returning
  a JSON-able dict.
  """
  import subprocess
  env = dict(os.environ if env is None else env)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  code = f"import json, {module} as b; print('RESULT ' + json.dumps(b.{call}))"
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, check=False)
  for line in out.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[7:])
  raise RuntimeError(f"{module}.{call} failed:\n{out.stderr[-3000:]}")
