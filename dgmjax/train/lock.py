"""One trainer per workdir: an exclusive lock file holding the owner's pid and host.

``WORKDIR/train.lock`` is opened and locked with ``fcntl.flock`` (exclusive,
non-blocking). The kernel drops the lock when its process dies, however it dies
(SIGKILL included), so a lock left by a killed trainer is taken over by the next one
with no stale-pid guessing and no race between two restarts. The file's content
(``{"pid", "host", "time"}``) only serves the error message of the trainer that is
refused; whatever it holds (a JSON list, garbage) is overwritten by the next owner.
On a multi-host run process 0 takes the lock and every process learns the
outcome, so all of them refuse together.

flock is advisory and per open file description: it guards against another dgmjax
trainer, not against other programs writing into the workdir. On network file systems
it is as reliable as their lock support (NFSv4 and Lustre with ``flock`` mounts are fine).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

LOCK_NAME = "train.lock"


class WorkdirLocked(RuntimeError):
  """Another live trainer holds the workdir."""


class WorkdirLock:
  """Context manager: ``with WorkdirLock(workdir): ...`` (a no-op off process 0)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
    self.enabled = enabled
    self._fd: int | None = None

  def acquire(self) -> None:
    if not self.enabled:
      return
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise OSError(e.errno, f"cannot open the lock file {self.path} ({e.strerror}); if no "
                    f"trainer runs in this workdir, remove it and rerun") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise WorkdirLocked(f"workdir {os.path.dirname(self.path)} is in use by another trainer "
                          f"({holder}); stop it first, or use another --workdir") from None
    self._fd = fd
    try:  # the content only serves the refusal message: a full disk must not stop us
      os.ftruncate(fd, 0)
      os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                               "time": time.time()}).encode())
      os.fsync(fd)
    except OSError:
      pass

  def release(self) -> None:
    if self._fd is not None:
      try:
        os.ftruncate(self._fd, 0)
      except OSError:
        pass
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def remove_if_alone(self) -> None:
    """Removes the released lock file, and the workdir, when nothing else is in it (a
    start that failed in a workdir it created: a missing dataset, a bad config)."""
    workdir = os.path.dirname(self.path)
    try:
      if os.listdir(workdir) == [LOCK_NAME]:
        os.remove(self.path)
        os.rmdir(workdir)
    except OSError:
      pass

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _read_holder(fd: int) -> str:
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    return f"pid {int(info['pid'])} on host {info['host']}"
  except (ValueError, KeyError, TypeError, OSError):  # damaged content: any JSON, any bytes
    return "holder unknown"
