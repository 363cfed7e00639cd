"""The scaffold of the model benchmarks (``dgmjax bench glow|lmconv|nvae``).

A model's driver declares a ``Driver`` (its sizes, its own flags, how it measures one
size and how it prints the result) and calls ``main(DRIVER, argv)``, which does what every
benchmark does the same way: the common flags (``--sizes``, ``--repeats``, ``--out``,
``--threads``, ``--dtype``, and ``--unroll N|true`` where the driver asks for it), thread
pinning, the loop over sizes, the platform and device lines and the JSON file:

    {"platform": str, "dtype": str, "unroll": ..., "sizes": {SIZE: driver.measure(SIZE)},
     "device": "dgmjax on ..., PyTorch on ...", ...whatever driver.report adds}

Measuring helpers the drivers' workers share: ``train_step`` (the gradient and optimiser
update of a model's ``loss``, as ``dgmjax train`` runs it), ``aot`` (ahead-of-time
compile, timed), ``time_jax_train`` / ``time_torch_train`` (median and min over repeated
steps), ``time_call``, ``timing`` (the ``NAME_s`` / ``NAME_min_s`` keys), ``compare`` (the
PyTorch and dgmjax workers of one size, each in a fresh process) and ``ratio_table``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Callable

from experiments.bench import common


@dataclasses.dataclass(frozen=True)
class Driver:
  """What a model's benchmark adds to the scaffold.

  ``doc``: the driver's docstring (its first paragraph is the ``--help`` description);
  ``sizes``: name -> configuration; ``measure(size, args)``: the JSON entry of one size;
  ``report(results, args)``: prints the tables (and may add keys to ``results``);
  ``arguments(parser)``: the driver's own flags; ``unroll_help``: when set, a
  ``--unroll`` flag (``compute.unroll``: an int or ``true``) with this help;
  ``platform(args)``: text appended to the platform line.
  """
  doc: str
  sizes: dict
  measure: Callable[[str, argparse.Namespace], dict]
  report: Callable[[dict, argparse.Namespace], None]
  repeats: int = 5
  out: str = ""
  arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
  unroll_help: str | None = None
  platform: Callable[[argparse.Namespace], str] = lambda args: ""


def parse_unroll(text: str) -> int | bool:
  """``--unroll``: ``true`` (fully unrolled straight-line code) or blocks per iteration."""
  if text.lower() == "true":
    return True
  try:
    return int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an int or 'true'; got {text!r}") from None


def parser(driver: Driver) -> argparse.ArgumentParser:
  """The flags every model benchmark takes, then the driver's own."""
  p = argparse.ArgumentParser(description=driver.doc.split("\n\n")[0])
  p.add_argument("--sizes", default="tiny", help=f"comma-separated from {sorted(driver.sizes)}")
  p.add_argument("--repeats", type=int, default=driver.repeats)
  p.add_argument("--out", default=driver.out,
                 help="the JSON results file" + ("" if driver.out else " (default: none)"))
  common.add_threads_argument(p)
  common.add_dtype_argument(p)
  if driver.unroll_help:
    p.add_argument("--unroll", default="1", type=parse_unroll, help=driver.unroll_help)
  driver.arguments(p)
  return p


def main(driver: Driver, argv: list[str] | None = None) -> int:
  """Parses ``argv``, measures every size, prints the report and writes the JSON."""
  p = parser(driver)
  args = p.parse_args(argv)
  sizes = common.choices_argument(p, args.sizes, driver.sizes)
  threads = common.pin_threads(args.threads)
  unroll = getattr(args, "unroll", None)
  results = {"platform": f"{common.platform_line(threads)} | dgmjax dtype: {args.dtype}, "
                         f"unroll: {unroll}{driver.platform(args)}",
             "dtype": args.dtype, "unroll": unroll, "sizes": {}}
  for size in sizes:
    results["sizes"][size] = driver.measure(size, args)
  results["device"] = device_line(results)
  print(f"platform: {results['platform']}; {results['device']}")
  driver.report(results, args)
  if args.out:
    print(f"saved {common.save_json(args.out, results)}")
  return 0


def device_line(results: dict) -> str:
  """``dgmjax on DEVICE, PyTorch on DEVICE`` from the first size's workers ("" if none)."""
  first = next(iter(results["sizes"].values()), {})
  parts = [f"{name} on {first[key]['device']}" for key, name in (("dgmjax", "dgmjax"),
                                                                  ("pytorch", "PyTorch"))
           if "device" in (first.get(key) or {})]
  return ", ".join(parts)


# ------------------------------------------------------------------ workers and timing

def worker_call(fn: str, *args, **kwargs) -> str:
  """The Python expression ``fn(*args, **kwargs)`` for ``common.run_worker``."""
  return f"{fn}({', '.join([repr(a) for a in args] + [f'{k}={v!r}' for k, v in kwargs.items()])})"


def compare(module: str, size: str, repeats: int, **jax_kwargs) -> dict:
  """``{"pytorch": worker_torch(size, repeats), "dgmjax": worker_jax(size, repeats,
  **jax_kwargs)}`` of ``module``, each in a fresh process (its own peak memory and
  thread pools), PyTorch first."""
  return {"pytorch": common.run_worker(module, worker_call("worker_torch", size, repeats)),
          "dgmjax": common.run_worker(module, worker_call("worker_jax", size, repeats,
                                                          **jax_kwargs))}


def timing(name: str, median_and_min: tuple[float, float]) -> dict:
  """``{NAME_s: median, NAME_min_s: min}``, the keys ``common.ratio_cells`` reads."""
  return {f"{name}_s": median_and_min[0], f"{name}_min_s": median_and_min[1]}


def train_step(model, tx, **loss_kwargs):
  """``step(variables, opt_state, x, rng, i=None) -> (variables, opt_state, loss)``: the
  gradient of ``model.loss`` in the parameters and an update by the optax transformation
  ``tx``; the model's other variables become ``aux["state"]`` (NVAE's batch statistics),
  as in ``dgmjax train``. ``i``: the step, passed to ``loss`` as ``step`` (KL warm-up);
  ``loss_kwargs``: fixed keyword arguments of ``loss``."""
  import jax
  import optax

  def step(variables, opt_state, x, rng, i=None):
    kw = dict(loss_kwargs) if i is None else dict(loss_kwargs, step=i)
    (loss, aux), grads = jax.value_and_grad(
        lambda p: model.loss({**variables, "params": p}, x, rng, **kw),
        has_aux=True)(variables["params"])
    updates, opt_state = tx.update(grads, opt_state, variables["params"])
    return ({**variables, **aux["state"],
             "params": optax.apply_updates(variables["params"], updates)}, opt_state, loss)
  return step


def aot(fn, *args, donate_argnums=()):
  """(compiled, seconds): ``fn`` jitted, lowered and compiled ahead of time for ``args``."""
  import jax
  t0 = time.perf_counter()
  compiled = jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile()
  return compiled, time.perf_counter() - t0


def time_jax_train(step, variables, opt_state, x, repeats: int, pass_step: bool = False):
  """Times the compiled ``train_step`` ``step`` over ``repeats`` steps (after one untimed),
  threading variables and optimiser state (donated) and a new key per step; ``pass_step``:
  the step index goes to ``loss``. Returns (``timing("train_step", ...)``, the trained
  variables, the last loss)."""
  import jax
  state = {"v": variables, "opt": opt_state, "i": 0}

  def train():
    extra = (state["i"],) if pass_step else ()
    state["v"], state["opt"], loss = step(state["v"], state["opt"], x,
                                          jax.random.PRNGKey(state["i"]), *extra)
    state["i"] += 1
    state["loss"] = float(loss)   # blocks until the step is done

  times = common.median_and_min(train, repeats)
  return timing("train_step", times), state["v"], state["loss"]


def time_call(fn, repeats: int) -> tuple[float, float]:
  """(median, min) seconds of ``fn()`` (a JAX computation, waited for) over
  ``max(2, repeats // 2)`` calls: sampling and evaluation, slower than a step."""
  import jax
  return common.median_and_min(lambda: jax.block_until_ready(fn()), max(2, repeats // 2))


def time_torch_train(opt, loss_fn, repeats: int, sync=None):
  """Times PyTorch optimiser steps on ``loss_fn(i)`` (i = 0, 1, ...: the step) over
  ``repeats`` steps after one untimed; ``sync`` waits for the device. Returns
  (``timing("train_step", ...)``, the last loss as a float)."""
  state = {"i": 0}

  def train():
    loss = loss_fn(state["i"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sync is not None:
      sync()
    state["i"] += 1
    state["loss"] = float(loss.detach())

  times = common.median_and_min(train, repeats)
  return timing("train_step", times), state["loss"]


# ------------------------------------------------------------------ report

def ratio_table(results: dict, timed: list[tuple[str, str]], first=(), last=()) -> str:
  """The markdown table of a ``compare`` benchmark: per size, for each (key, title) of
  ``timed`` the median (min) seconds of dgmjax and PyTorch and their ratio, then the peak
  RSS of both and its ratio; ``first`` / ``last``: (title, fn(dgmjax, pytorch) -> cell)
  columns before / after those."""
  heads = (["size"] + [t for t, _ in first]
           + [h for _, title in timed for h in (f"{title} dgmjax (s)", "PyTorch (s)", "ratio")]
           + ["peak RSS dgmjax (MB)", "PyTorch (MB)", "ratio"] + [t for t, _ in last])
  lines = ["times: median (min) over repeats; ratio = dgmjax / PyTorch of the medians (mins)",
           "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
  for size, r in results["sizes"].items():
    j, t = r["dgmjax"], r["pytorch"]
    cells = ([size] + [fn(j, t) for _, fn in first]
             + [common.ratio_cells(j, t, key) for key, _ in timed]
             + [f"{j['peak_rss_mb']:.0f} | {t['peak_rss_mb']:.0f} | "
                f"{j['peak_rss_mb'] / t['peak_rss_mb']:.2f}"] + [fn(j, t) for _, fn in last])
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
