"""Test-wide settings: the repository root on sys.path (for ``experiments``), and for the
default selection (``-m "not slow"``, the README's ``make test``) XLA:CPU's LLVM back end at
its lowest optimisation level.

The default tests build hundreds of small programs and run each a handful of times, so
most of their time is compilation; LLVM's optimisation level changes how fast the
generated code runs, not what it computes (XLA's HLO passes still run). Measured on
tests/lmconv/test_lmconv_model.py, tests/flows/test_glow_model.py and
tests/nn/test_nn_conv.py with ``pytest -n 2`` on the 2-core CPU: 162 -> 135 CPU s. The
tests marked slow (training runs, samplers) keep the default level. Set
``DGMJAX_TEST_XLA_OPT=1`` to run the default tests at the default level too; the flags
reach the tests' subprocesses through the environment.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def pytest_configure(config):
  """Runs in the xdist controller and in each worker before any test imports jax's
  backend; the workers inherit the environment."""
  if (config.getoption("markexpr", "") == "not slow"
      and os.environ.get("DGMJAX_TEST_XLA_OPT") != "1"
      and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE_FLAGS).strip()
