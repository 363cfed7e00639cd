"""Preemption: SIGTERM/SIGINT during training, and the agreement of all processes on when
to stop. ``StopSignals`` turns the signals into a flag; before every step ``poll`` makes
every process see the same code (0, a signal number or ``SAVE_FAILED``), so a multi-host
run stops after the same step everywhere, saves it and raises ``TrainingInterrupted``.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
import numpy as np

log = logging.getLogger("dgmjax")


class TrainingInterrupted(RuntimeError):
  """SIGTERM or SIGINT stopped training; the checkpoint of ``step`` is on disk (or, with
  ``step`` None, nothing had been trained). ``signum`` is the signal's number."""

  def __init__(self, message: str, signum: int, step: int | None):
    super().__init__(message)
    self.signum, self.step = signum, step


class StopSignals:
  """While active (main thread only), SIGTERM and SIGINT only record that a stop was
  asked for: the loop finishes its step, saves it and raises ``TrainingInterrupted``.
  A second signal is noted and ignored (SIGKILL still stops at once)."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum = 0
    self._previous = {}

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.signum:
      log.warning("%s again: still finishing the current step and saving it (SIGKILL stops "
                  "at once, losing the steps since the last checkpoint)",
                  signal.Signals(signum).name)
      return
    self.signum = signum

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is threading.main_thread():
      for s in self.SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)


SAVE_FAILED = 1 << 20


def poll(signals: StopSignals, checkpointer) -> tuple[int, BaseException | None]:
  """What every process agrees on before a step: 0 (go on), a signal number, or
  ``SAVE_FAILED``, with this process's save error if it has one. Multi-host: the
  largest code of all processes, so all stop at the same step."""
  from dgmjax.train import checkpoint as ckpt_lib
  error = None
  try:
    checkpointer.check()
  except ckpt_lib.SaveFailed as e:
    error = e
  code = SAVE_FAILED if error is not None else signals.signum
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    code = int(np.max(multihost_utils.process_allgather(np.asarray(code, np.int32))))
  return code, error


def any_process(flag: bool) -> bool:
  """True on every process when ``flag`` is true on process 0 (or on this process)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))
