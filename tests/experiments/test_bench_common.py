"""``experiments/bench/common`` and ``scaffold``: thread pinning reaches the workers, bad
counts are refused; the drivers keep their flags and defaults, the scaffold measures each
size in order and writes the JSON the drivers share, the shared train step threads state.

Pinning changes the calling process, so each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from experiments.bench import common

ROOT = common.ROOT


def _python(code: str) -> str:
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT}, check=True, timeout=120)
  return out.stdout.strip().splitlines()[-1]


def test_pin_threads_limits_process_and_workers():
  # The worker started by run_worker must see the same single core and thread counts.
  code = ("import json, os; from experiments.bench import common; "
          "line = common.pin_threads(1); "
          "w = common.run_worker('experiments.bench.common', 'thread_settings()'); "
          "print(json.dumps(dict(line=line, cores=len(os.sched_getaffinity(0)), worker=w)))")
  got = json.loads(_python(code))
  assert got["cores"] == 1
  assert got["worker"] == {"cores": 1, "omp": "1", "mkl": "1"}
  assert got["line"].startswith("threads: 1 ")


def test_pin_threads_zero_changes_nothing():
  before = len(os.sched_getaffinity(0))
  got = json.loads(_python("import json, os; from experiments.bench import common; "
                           "common.pin_threads(0); "
                           "print(json.dumps(len(os.sched_getaffinity(0))))"))
  assert got == before


def test_pin_threads_rejects_bad_counts():
  with pytest.raises(ValueError, match=">= 0"):
    common.pin_threads(-1)
  with pytest.raises(ValueError, match="may use only"):
    common.pin_threads(len(os.sched_getaffinity(0)) + 1)


def test_choices_argument_keeps_order_and_names_unknown(capsys):
  import argparse
  p = argparse.ArgumentParser(prog="bench")
  assert common.choices_argument(p, "mnist,,tiny", {"tiny": 1, "mnist": 2}) == ["mnist", "tiny"]
  with pytest.raises(SystemExit):
    common.choices_argument(p, "tiny,huge", {"tiny": 1}, "sizes")
  assert "unknown sizes ['huge']; expected some of ['tiny']" in capsys.readouterr().err


def test_bench_all_expands_paper_sizes_per_model():
  from experiments.bench import all as bench_all
  assert bench_all.model_sizes("glow", "tiny,paper") == ["tiny", "mnist", "cifar10"]
  assert bench_all.model_sizes("lmconv", "paper") == ["paper", "cifar"]
  assert bench_all.model_sizes("nvae", "paper,mnist") == ["mnist", "cifar10"]
  assert bench_all.model_sizes("lmconv", "mnist") == []   # a size lmconv's script lacks


def test_xla_memory_reports_temp_and_argument_bytes():
  import jax
  import jax.numpy as jnp
  from experiments.bench import common as c
  # the gradient of a two-layer tanh net keeps its [256,128] hidden activations
  f = jax.jit(jax.grad(lambda w, x: jnp.sum(jnp.tanh(jnp.tanh(x @ w) @ w))))
  m = c.xla_memory(f.lower(jnp.ones((128, 128)), jnp.ones((256, 128))).compile())
  assert m is not None
  assert abs(m["argument_mb"] - (128 + 256) * 128 * 4 / 2**20) < 1e-9
  assert abs(m["output_mb"] - 128 * 128 * 4 / 2**20) < 1e-9
  assert m["temp_mb"] >= 256 * 128 * 4 / 2**20


# ------------------------------------------------------------------ the drivers' scaffold

def test_worker_call_and_unroll_flag():
  from experiments.bench import scaffold
  assert scaffold.worker_call("worker_jax", "tiny", 3, dtype="bfloat16", unroll=True) == \
      "worker_jax('tiny', 3, dtype='bfloat16', unroll=True)"
  assert scaffold.parse_unroll("TRUE") is True and scaffold.parse_unroll("4") == 4
  with pytest.raises(Exception, match="an int or 'true'"):
    scaffold.parse_unroll("yes")


def test_every_model_driver_keeps_its_flags_and_defaults():
  from experiments.bench import glow, lmconv, nvae, scaffold
  expect = {glow: (10, "glow_bench.json", False), lmconv: (3, "", 1),
            nvae: (5, "nvae_bench.json", 1)}
  for module, (repeats, out, unroll) in expect.items():
    args = scaffold.parser(module.DRIVER).parse_args([])
    assert (args.sizes, args.repeats, args.out, args.unroll, args.dtype, args.threads) == \
        ("tiny", repeats, out, unroll, "float32", 0)
    # what `dgmjax bench all` reads from a driver besides its JSON: sizes, model, batch
    assert callable(module.build_model) and callable(module.batch) and "tiny" in module.SIZES
  assert scaffold.parser(nvae.DRIVER).parse_args(["--unroll", "true"]).unroll is True
  assert scaffold.parser(glow.DRIVER).parse_args(["--unroll"]).unroll is True


def test_scaffold_main_measures_each_size_and_writes_the_json(tmp_path, capsys):
  from experiments.bench import scaffold
  seen = []

  def measure(size, args):
    seen.append((size, args.repeats, args.extra))
    run = {"train_step_s": 2.0, "train_step_min_s": 1.0, "peak_rss_mb": 100.0}
    return {"config": {"batch": 1}, "pytorch": {**run, "device": "cpu"},
            "dgmjax": {**run, "train_step_s": 1.0, "device": "TFRT_CPU_0"}}

  def report(results, args):
    results["extra"] = args.extra
    print(scaffold.ratio_table(results, [("train_step", "train step")]))

  driver = scaffold.Driver("Toy benchmark.\n\nMore.", {"a": 1, "b": 2}, measure, report,
                           unroll_help="blocks per iteration",
                           arguments=lambda p: p.add_argument("--extra", default="x"))
  out = tmp_path / "r.json"
  assert scaffold.main(driver, ["--sizes", "b,a", "--repeats", "2", "--unroll", "true",
                                "--out", str(out)]) == 0
  assert seen == [("b", 2, "x"), ("a", 2, "x")]
  got = json.loads(out.read_text())
  assert list(got["sizes"]) == ["b", "a"] and got["dtype"] == "float32" and got["unroll"] is True
  assert got["device"] == "dgmjax on TFRT_CPU_0, PyTorch on cpu" and got["extra"] == "x"
  text = capsys.readouterr().out
  assert "| b | 1.0000 (1.0000) | 2.0000 (1.0000) | 0.50 (1.00) | 100 | 100 | 1.00 |" in text
  with pytest.raises(SystemExit):
    scaffold.main(driver, ["--sizes", "c"])


def test_train_step_threads_state_and_passes_the_step():
  import jax.numpy as jnp
  import optax
  from experiments.bench import scaffold

  class Toy:
    def loss(self, variables, x, rng, step=None):
      del rng
      loss = jnp.sum((variables["params"]["w"] * x) ** 2)
      return loss, {"state": {"count": variables["count"] + (0 if step is None else step)}}

  tx = optax.sgd(0.1)
  v = {"params": {"w": jnp.ones(3)}, "count": jnp.zeros(())}
  step = scaffold.train_step(Toy(), tx)
  v2, _, loss = step(v, tx.init(v["params"]), jnp.ones(3), None, 5)
  assert float(loss) == 3.0 and float(v2["count"]) == 5.0
  assert jnp.allclose(v2["params"]["w"], 1.0 - 0.1 * 2.0)
