"""Two processes on 127.0.0.1 (JAX's CPU collectives over gloo) train, evaluate,
checkpoint and resume like one process over the same global batch.

Each process has 2 forced CPU devices, the single process 4: the same 4-way data-parallel
mesh, built once from two hosts and once from one. Both runs go through the CLI
(``dgmjax train --distributed --coordinator_address ... --process_id ...``).
"""

import os
import socket
import subprocess
import sys

import numpy as np

from dgmjax.train import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "experiments", "configs", "independent_digits.py") + ":smoke"
OVERRIDES = ["--config.train.log_every=1", "--config.train.eval_every=4",
             "--config.train.checkpoint_every=4", "--config.train.num_samples=4",
             "--config.train.batch_size=32", "--config.train.eval_batch_size=64"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _train_cmd(workdir, steps, *extra):
  return [sys.executable, "-m", "dgmjax", "train", f"--config={CONFIG}", f"--workdir={workdir}",
          f"--config.train.num_steps={steps}", *OVERRIDES, *extra]


def _run_two(workdir, steps):
  port = _free_port()
  procs = [subprocess.Popen(
      _train_cmd(workdir, steps, "--distributed", f"--coordinator_address=127.0.0.1:{port}",
                 "--num_processes=2", f"--process_id={i}"),
      env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=400)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    outs.append((p.returncode, out, err))
  for rc, out, err in outs:
    assert rc == 0, err[-3000:]
  return outs


def _rows(workdir):
  rows = metrics.read_metrics(workdir)
  losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
  bpds = [(r["step"], r["test_bpd"]) for r in rows if "test_bpd" in r]
  return losses, bpds


def test_two_hosts_train_eval_checkpoint_and_resume_like_one(tmp_path):
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  r = subprocess.run(_train_cmd(one, 8), env=_env(4), capture_output=True, text=True,
                     timeout=400)
  assert r.returncode == 0, r.stderr[-3000:]

  # 2 hosts: 4 steps, stop; then resume from the step-4 checkpoint up to step 8.
  outs = _run_two(two, 4)
  summaries = [[ln for ln in out.splitlines() if ln.startswith("{")] for _, out, _ in outs]
  assert len(summaries[0]) == 1 and summaries[1] == []  # only process 0 prints the summary
  assert sorted(os.listdir(os.path.join(two, "checkpoints"))) == ["4"]
  _run_two(two, 8)

  loss1, bpd1 = _rows(one)
  loss2, bpd2 = _rows(two)
  # Only process 0 writes, and the resumed run writes each step once.
  assert [s for s, _ in loss2] == list(range(1, 9))
  assert [s for s, _ in bpd2] == [4, 8]
  np.testing.assert_allclose([v for _, v in loss2], [v for _, v in loss1], rtol=1e-5)
  # Equal test bits/dim: each host scored its own rows of every batch, and together
  # they covered the 300 test digits once (the 1-process figure is the exact mean).
  np.testing.assert_allclose([v for _, v in bpd2], [v for _, v in bpd1], rtol=1e-5)
  assert sorted(os.listdir(os.path.join(two, "samples"))) == ["step_0000004.png",
                                                              "step_0000008.png"]
