"""Failed writes: ``SaveFailed`` and ``DiskFull`` (one line naming the directory), telling
a full disk apart in any of the forms it reaches us (``is_disk_full``), and keeping the
tracebacks orbax's threads log for it out of the user's way (``_Quiet``,
``hush_failed_writes``): the failure is reported once, by the error the trainer raises."""

from __future__ import annotations

import errno
import logging
import sys


class SaveFailed(OSError):
  """A checkpoint could not be written; the message names the directory and the cause."""

  def __str__(self):
    return self.strerror or super().__str__()


class DiskFull(SaveFailed):
  """A checkpoint (or another workdir file) could not be written: no space left."""


def is_disk_full(e: BaseException | None) -> bool:
  """Whether ``e`` or an exception it was raised from is ENOSPC (also as tensorstore's
  text, which carries no errno)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
      return True
    if any(is_disk_full(x) for x in getattr(e, "exceptions", ())):
      return True
    e = e.__cause__ or e.__context__
  return False


def one_line(e: BaseException, limit: int = 300) -> str:
  text = " ".join(f"{type(e).__name__}: {e}".split())
  return text if len(text) <= limit else text[:limit] + " ..."


class _Quiet(logging.Filter):
  """Drops an orbax note (below), and the tracebacks orbax's threads log for a full
  disk, which ``DiskFull`` reports in one line (with those of its threads still running
  when the manager closes after it)."""

  def filter(self, record):
    msg = str(record.msg)
    # orbax's note on every save without metrics (a step not evaluated: by design)
    if "did not provide metrics" in msg:
      return False
    error = record.exc_info[1] if record.exc_info else None
    if error is None:
      return True
    if is_disk_full(error):
      disk_full_seen.append(one_line(error))
      return False
    return "cannot schedule new futures after" not in str(error)


disk_full_seen: list[str] = []  # ENOSPC errors logged by orbax's threads
logging.getLogger("absl").addFilter(_Quiet())
logging.getLogger("asyncio").addFilter(_Quiet())  # "Task exception was never retrieved"
_hushed = []


def hush_failed_writes() -> None:
  """When a save fails, the writes still pending in orbax's closed event loop report
  "Event loop is closed" to ``sys.unraisablehook`` as they finish; those are dropped
  (the failure itself is reported once, by ``SaveFailed``/``DiskFull``). Installed
  by every writing ``Checkpointer``."""
  if _hushed:
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    if "Event loop is closed" not in str(unraisable.exc_value):
      previous(unraisable)

  sys.unraisablehook = hook
  _hushed.append(hook)


def disk_full_error(e: OSError, workdir: str, checkpointer) -> DiskFull:
  """The one-line error for a full disk met outside a checkpoint save (a metrics or
  TensorBoard write), naming the checkpoints that are intact."""
  checkpointer.manager.reload()
  kept = ", ".join(str(s) for s in checkpointer.manager.all_steps()) or "none"
  return DiskFull(
      errno.ENOSPC, f"disk full: no space left writing {e.filename or workdir}; the "
      f"checkpoints ({kept}) are intact: free space, then rerun the same command to resume")
