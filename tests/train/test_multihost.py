"""Two processes on 127.0.0.1 (JAX's CPU collectives over gloo) train, evaluate,
checkpoint every 2 steps and resume like one process over the same global batch.

Each process has 2 forced CPU devices, the single process 4: the same 4-way data-parallel
mesh, built once from two hosts and once from one. All runs go through the CLI
(``dgmjax train --distributed --coordinator_address ... --process_id ...``). The
two-process run is trained in three legs: to step 4; then towards 10, preempted by a
SIGTERM that only process 1 receives (both processes must stop after the same step and
save it); then to the end.

Checkpointing and evaluating every 2 steps is what made two orbax managers (regular and
best) save the same step at once and collide on orbax's commit barrier; one manager
saves each step once.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from dgmjax.train import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "experiments", "configs", "independent_digits.py") + ":smoke"
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cli_with_signal.py")
OVERRIDES = ["--config.train.log_every=1", "--config.train.eval_every=2",
             "--config.train.checkpoint_every=2", "--config.train.num_samples=4",
             "--config.train.batch_size=32", "--config.train.eval_batch_size=64",
             "--config.train.keep_checkpoints=2"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


def _train_cmd(workdir, steps, *extra):
  return [sys.executable, DRIVER, "train", f"--config={CONFIG}", f"--workdir={workdir}",
          f"--config.train.num_steps={steps}", *OVERRIDES, *extra]


def _run_two(workdir, steps, signal_at=None):
  """Both processes' (returncode, stdout, stderr); process 1 gets SIGTERM at its
  ``signal_at``-th batch."""
  port = _free_port()
  procs = []
  for i in range(2):
    extra = {"SIGNAL_AT_BATCH": str(signal_at)} if signal_at and i == 1 else {}
    procs.append(subprocess.Popen(
        _train_cmd(workdir, steps, "--distributed", f"--coordinator_address=127.0.0.1:{port}",
                   "--num_processes=2", f"--process_id={i}"),
        env=_env(2, **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    outs.append((p.returncode, out, err))
  return outs


def _rows(workdir):
  rows = metrics.read_metrics(workdir)
  losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
  bpds = [(r["step"], r["test_bpd"]) for r in rows if "test_bpd" in r]
  return losses, bpds


@pytest.mark.slow  # 4 CLI runs, 7 processes: about 60 s on 2 cores
def test_two_hosts_checkpoint_and_evaluate_every_2_steps_preempted_like_one(tmp_path):
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  r = subprocess.run(_train_cmd(one, 10), env=_env(4), capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]

  outs = _run_two(two, 4)
  for rc, _, err in outs:
    assert rc == 0, err[-3000:]
  summaries = [[ln for ln in out.splitlines() if ln.startswith("{")] for _, out, _ in outs]
  assert len(summaries[0]) == 1 and summaries[1] == []  # only process 0 prints the summary
  assert sorted(os.listdir(os.path.join(two, "checkpoints"))) == ["2", "4"]

  # Leg 2: process 1 alone gets SIGTERM while drawing its 3rd batch (step 7); both
  # processes finish step 7, save it together and exit 143 with the same line.
  outs = _run_two(two, 10, signal_at=3)
  for rc, _, err in outs:
    assert rc == 143, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("dgmjax")]
    assert len(lines) == 1 and "after step 7: saved checkpoint 7" in lines[0], err[-3000:]
    assert "Traceback" not in err
  assert "7" in os.listdir(os.path.join(two, "checkpoints"))
  assert not any("tmp" in n for n in os.listdir(os.path.join(two, "checkpoints")))

  outs = _run_two(two, 10)
  for rc, _, err in outs:
    assert rc == 0, err[-3000:]

  loss1, bpd1 = _rows(one)
  loss2, bpd2 = _rows(two)
  # Only process 0 writes, and the resumed runs write each step once.
  assert [s for s, _ in loss2] == list(range(1, 11))
  assert [s for s, _ in bpd2] == [2, 4, 6, 8, 10]
  np.testing.assert_allclose([v for _, v in loss2], [v for _, v in loss1], rtol=1e-5)
  # Equal test bits/dim: each host scored its own rows of every batch, and together
  # they covered the 300 test digits once (the 1-process figure is the exact mean).
  np.testing.assert_allclose([v for _, v in bpd2], [v for _, v in bpd1], rtol=1e-5)
  assert sorted(os.listdir(os.path.join(two, "samples"))) == [
      f"step_{s:07d}.png" for s in (2, 4, 6, 8, 10)]
  # One manager: the last 2 plus the best; no second directory.
  assert not os.path.exists(os.path.join(two, "best"))
