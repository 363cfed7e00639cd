"""Metric writers: ``metrics.jsonl`` in the workdir plus TensorBoard event files.

Every row is one JSON object with at least ``step``; training rows carry ``loss``,
evaluation rows ``test_bpd``. Only process 0 writes. A writer opened with
``resume_step=S`` first drops the rows of steps after S (written by a run that was
killed before checkpointing them and that the resumed run writes again), so every
step appears once; TensorBoard purges those steps too (``purge_step``).
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np


class MetricWriter:

  def __init__(self, workdir: str, tensorboard: bool = True, resume_step: int | None = None):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      if resume_step is not None:
        _drop_rows_after(self.path, resume_step)
      if tensorboard:
        from tensorboardX import SummaryWriter
        purge = None if resume_step is None else resume_step + 1
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)

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
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except ValueError:  # a torn last line of a killed run
        continue
  return rows


def _drop_rows_after(path: str, step: int) -> None:
  """Rewrites ``path`` without rows whose step > ``step`` (atomically: tmp + rename).

  A torn last line (a kill mid-write) is dropped too.
  """
  if not os.path.exists(path):
    return
  keep = []
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:
        continue
      if int(row.get("step", 0)) <= step:
        keep.append(json.dumps(row) + "\n")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(keep)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
