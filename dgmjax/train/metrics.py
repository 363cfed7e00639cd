"""Metric writers: ``metrics.jsonl`` in the workdir plus TensorBoard event files.

Every row is one JSON object with at least ``step``; training rows carry ``loss``,
evaluation rows ``test_bpd``. Only process 0 writes.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np


class MetricWriter:

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, **scalars) -> dict:
    row = {"step": int(step)}
    row.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps(dict(row, time=time.time())) + "\n")
      if self._tb is not None:
        for k, v in row.items():
          if k != "step":
            self._tb.add_scalar(k, v, int(step))
    return row

  def close(self):
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """All rows of ``workdir/metrics.jsonl`` (empty list if none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
