"""Metric writers: ``metrics.jsonl`` in the workdir plus TensorBoard event files.

Every row is one JSON object with at least an integer ``step``; training rows carry
``loss``, evaluation rows ``test_bpd``. Only process 0 writes. A writer opened with
``resume_step=S`` (the restored step, 0 for a fresh run) first drops the rows of steps
after S, written by a run that was killed before checkpointing them and that this run
writes again, so every step appears once; TensorBoard hides those steps too
(``purge_step``).

Damage is not fatal: a line that is not a JSON object with an integer ``step`` (a torn
last line, ``null``, ``{"step": "abc"}``, bytes that are not UTF-8) is skipped by
``read_metrics`` and dropped by the resuming writer, which says how many lines it dropped
and names the file in one warning.

TensorBoard events are written synchronously from the training thread (tensorboardX's
event file writer, without its background thread): a failing write, such as a full disk,
raises here as an ``OSError`` instead of killing a thread that the training loop would
then wait on forever.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import jax
import numpy as np

log = logging.getLogger("dgmjax")


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
        purge = None if resume_step is None else resume_step + 1
        self._tb = _EventWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)

  def write(self, step: int, **scalars) -> dict:
    row = {"step": int(step)}
    row.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    if self.enabled:
      try:
        with open(self.path, "a", encoding="utf-8") as f:
          f.write(json.dumps(dict(row, time=time.time())) + "\n")
      except OSError as e:  # name the file (a write error carries no filename)
        raise OSError(e.errno, e.strerror, self.path) from None
      if self._tb is not None:
        self._tb.scalars(int(step), {k: v for k, v in row.items() if k != "step"})
    return row

  def close(self):
    if self._tb is not None:
      tb, self._tb = self._tb, None
      tb.close()


class _EventWriter:
  """TensorBoard scalars written and flushed in the calling thread."""

  def __init__(self, logdir: str, purge_step: int | None = None):
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    os.makedirs(logdir, exist_ok=True)
    self._writer = EventsWriter(os.path.join(logdir, "events"))
    self.path = self._writer._file_name  # pylint: disable=protected-access  (for messages)
    if purge_step is not None:
      self._writer.write_event(Event(step=purge_step, file_version="brain.Event:2"))
      self._writer.write_event(Event(step=purge_step,
                                     session_log=SessionLog(status=SessionLog.START)))
    self._writer.flush()

  def scalars(self, step: int, values: dict) -> None:
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.summary import scalar
    now = time.time()
    try:
      for k, v in values.items():
        self._writer.write_event(Event(wall_time=now, step=step, summary=scalar(k, v)))
      self._writer.flush()
    except OSError as e:
      raise OSError(e.errno, e.strerror, self.path) from None

  def close(self) -> None:
    try:
      self._writer.close()
    except OSError as e:
      raise OSError(e.errno, e.strerror, self.path) from None


def _parse(line: bytes) -> dict | None:
  """The row a line holds, or None when it is not a JSON object with an int ``step``."""
  try:
    row = json.loads(line.decode("utf-8"))
  except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
    return None
  if not isinstance(row, dict):
    return None
  step = row.get("step")
  if isinstance(step, bool) or not isinstance(step, (int, float)):
    return None
  if isinstance(step, float) and not (math.isfinite(step) and step == int(step)):
    return None
  row["step"] = int(step)
  return row


def _rows(path: str) -> tuple[list[dict], int]:
  """(rows, number of damaged lines) of ``path``; ([], 0) if it does not exist."""
  if not os.path.exists(path):
    return [], 0
  rows, bad = [], 0
  with open(path, "rb") as f:
    for line in f:
      if not line.strip():
        continue
      row = _parse(line)
      if row is None:
        bad += 1
      else:
        rows.append(row)
  return rows, bad


def read_metrics(workdir: str) -> list[dict]:
  """All well-formed rows of ``workdir/metrics.jsonl`` (empty list if none).

  Lines that are not a JSON object with an integer ``step`` are skipped.
  """
  return _rows(os.path.join(workdir, "metrics.jsonl"))[0]


def _drop_rows_after(path: str, step: int) -> None:
  """Rewrites ``path`` without rows whose step > ``step`` (atomically: tmp + rename).

  Damaged lines (a torn last line of a kill mid-write, or any other) are dropped too;
  when there were any but the last, one warning names the file.
  """
  if not os.path.exists(path):
    return
  rows, bad = _rows(path)
  torn_tail = False
  with open(path, "rb") as f:
    if f.seek(0, os.SEEK_END) > 0:
      f.seek(-1, os.SEEK_END)
      torn_tail = f.read(1) != b"\n"
  if bad - int(torn_tail) > 0:
    log.warning("%s: dropped %d damaged line(s) (not a JSON object with an integer step)",
                path, bad)
  keep = [json.dumps(r) + "\n" for r in rows if r["step"] <= step]
  if len(keep) == len(rows) and bad == 0:
    return
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(keep)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def finite_or_none(row: dict) -> dict:
  """JSON-safe: non-finite floats become None."""
  return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
          for k, v in row.items()}
