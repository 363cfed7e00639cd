"""``experiments/bench/common``: thread pinning reaches the workers, bad counts are refused.

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
