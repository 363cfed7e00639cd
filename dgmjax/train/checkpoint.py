"""orbax checkpoints of the full training state plus the data position.

Layout in a workdir::

    checkpoints/<step>/{state, meta[, metrics]}   one orbax CheckpointManager
    quarantine/checkpoints-<step>-<time>/         checkpoints that failed to restore

``state`` is the whole ``TrainState`` (params, optimiser state, EMA, batch statistics
and other non-trainable collections); ``meta`` is JSON (data-iterator position, best
test bits/dim, the config, and ``test_bpd`` when the step was evaluated); ``metrics``
(``{"test_bpd": x}``, orbax's own file) marks an evaluated checkpoint. One manager keeps
the last ``keep`` checkpoints and, besides them, the evaluated one with the lowest test
bits/dim, by orbax's ``preservation_policy`` (``LatestN`` or ``BestN``): a step is saved
once, so no two saves (and no two multi-host commit barriers) can meet at one step.

orbax writes each checkpoint into a temporary directory and renames it only when
complete, so a write cut short (a crash, SIGKILL, a full disk) is never listed and never
restored; the trainer's manager removes such leftovers when it starts. Saving is
asynchronous: ``check()`` raises a finished save's error, ``wait()`` waits for the
running one; a full disk is ``DiskFull``, which names the directory.

What cannot wedge a run:
- A save whose step is already present is a no-op: the state of a step is a pure
  function of the run, so the checkpoint on disk is the one we would write.
- ``restore_newest`` tries every checkpoint, newest first (best first for
  ``which="best"``), and takes the first that restores cleanly with finite parameters;
  each one skipped is named in a one-line warning with the reason. With
  ``quarantine=True`` (the trainer, which holds the workdir lock) skipped checkpoints are
  moved to ``quarantine/``, never deleted, so the resumed run can write those steps again.
- A damaged ``metrics`` file (orbax reads it to rank checkpoints) does not stop orbax:
  the checkpoint's ``meta`` holds the same figure, which is used instead (the trainer
  also rewrites the file); without it the checkpoint counts as not evaluated. One
  warning names the file.
- A workdir of the earlier layout (a second manager's ``best/<step>``) is read as it is;
  the trainer moves ``best/`` into ``checkpoints/`` once, saying so in one line.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import time
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from dgmjax.train.orbax_manager import METRIC, Manager, manager_options
from dgmjax.train.preemption import any_process
from dgmjax.train.write_errors import (DiskFull, SaveFailed, disk_full_seen, hush_failed_writes,
                                       is_disk_full, one_line)

log = logging.getLogger("dgmjax")

KINDS = ("last", "best")
DIRNAME = "checkpoints"
LEGACY_BEST = "best"          # the best-checkpoint manager of the earlier layout
QUARANTINE = "quarantine"


class IncompatibleCheckpoint(ValueError):
  """A readable checkpoint whose arrays differ from what this config builds."""


class Restored(NamedTuple):
  state: Any
  meta: dict
  step: int
  kind: str  # "best" when it is the best evaluated checkpoint, else "last"


def has_checkpoint(workdir: str) -> bool:
  """True when ``workdir`` holds at least one finished checkpoint.

  Looks at directory names only (no jax, no orbax): cheap enough for the CLI to call
  before it builds anything, and it creates nothing.
  """
  for sub in (DIRNAME, LEGACY_BEST):
    d = os.path.join(workdir, sub)
    if os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d)):
      return True
  return False


class Checkpointer:
  """One orbax manager over ``workdir/checkpoints``: the last ``keep`` plus the best.

  ``create=True`` (the trainer and ``import``, which hold the workdir lock) creates the
  directory, removes unfinished temporary directories and repairs damaged metrics
  files; ``create=False`` (eval, sample) changes nothing in the workdir.
  """

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True,
               create: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, DIRNAME)
    self.manager = Manager(self.directory, manager_options(keep, create, async_save), repair=create)
    self.legacy = None
    if os.path.isdir(os.path.join(self.workdir, LEGACY_BEST)):
      self.legacy = Manager(os.path.join(self.workdir, LEGACY_BEST),
                             manager_options(1, False, False, read_only=True), repair=False)
    self._saving: int | None = None
    if create:
      hush_failed_writes()
      disk_full_seen.clear()

  # ------------------------------------------------------------------------- saving

  @staticmethod
  def _args(state, meta):
    return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))

  def save(self, step: int, state, meta: dict[str, Any], test_bpd: float | None = None
           ) -> bool:
    """Starts saving ``step`` (asynchronously) unless it is already there; returns whether
    a save started. ``test_bpd`` marks an evaluated step (it can then be the best one).

    Raises ``DiskFull`` / ``SaveFailed`` for this save's or an earlier save's failure.
    """
    step = int(step)
    self.check()
    if step in self.manager.all_steps():
      return False
    metrics = None
    if test_bpd is not None and math.isfinite(test_bpd):
      metrics = {METRIC: float(test_bpd)}
      meta = dict(meta, **metrics)
    try:
      started = bool(self.manager.save(step, args=self._args(state, meta), metrics=metrics,
                                       force=True))
    except Exception as e:  # pylint: disable=broad-except  (converted, see _failed)
      raise self._failed(step, e) from None
    self._saving = step if started else self._saving
    return started

  def check(self) -> None:
    """Raises the error of a finished asynchronous save (no-op while it still runs)."""
    if self._saving is not None and not self.manager.is_saving_in_progress():
      self.wait()

  def wait(self) -> None:
    """Waits for the running save; ``DiskFull`` / ``SaveFailed`` if it failed."""
    step, self._saving = self._saving, None
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  (converted, see _failed)
      raise self._failed(step, e) from None

  def _failed(self, step, e: BaseException) -> SaveFailed:
    self.manager.reload()  # forget the step that was not written
    where = os.path.join(self.directory, str(step)) if step is not None else self.directory
    kept = ", ".join(str(s) for s in self.manager.all_steps()) or "none"
    # orbax may raise a consequence (e.g. a temporary directory it could not remove)
    # after its threads logged the ENOSPC itself
    if is_disk_full(e) or any(where in seen for seen in disk_full_seen):
      return DiskFull(errno.ENOSPC, f"disk full: no space left on the device of {where} "
                      f"while saving checkpoint {step}; the earlier checkpoints ({kept}) are "
                      f"intact: free space, then rerun the same command to resume")
    return SaveFailed(f"could not save checkpoint {where} ({one_line(e)}); the earlier "
                      f"checkpoints ({kept}) are intact")

  # ---------------------------------------------------------------------- listing

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step() if self._bpds(self.manager) else None

  def _managers(self):
    return [m for m in (self.manager, self.legacy) if m is not None]

  def _bpds(self, mgr) -> dict[int, float]:
    out = {}
    for s in mgr.all_steps():
      m = mgr.metrics(s)
      if m is not None:
        out[s] = m[METRIC]
    return out

  def candidates(self, which: str = "last") -> list[tuple[int, Any, str]]:
    """``(step, manager, kind)`` of every listed checkpoint in the order ``which`` tries
    them: newest first for ``"last"``; for ``"best"`` the evaluated ones by test bits/dim,
    then the others newest first."""
    if which not in KINDS:
      raise ValueError(f"checkpoint kind must be one of {KINDS}; got {which!r}")
    listed = [(s, m) for m in self._managers() for s in m.all_steps()]
    newest = sorted(listed, key=lambda sm: -sm[0])  # stable: checkpoints/ before best/
    bpds = {(s, id(m)): v for m in self._managers() for s, v in self._bpds(m).items()}
    ranked = sorted((sm for sm in newest if (sm[0], id(sm[1])) in bpds),
                    key=lambda sm: bpds[(sm[0], id(sm[1]))])
    best = ranked[0] if ranked else None
    order = (ranked + [sm for sm in newest if sm not in ranked]) if which == "best" else newest
    return [(s, m, "best" if (s, m) == best else "last") for s, m in order]

  # ---------------------------------------------------------------------- restoring

  def restore(self, abstract_state, step: int | None = None, which: str = "last",
              manager=None):
    """Returns ``(state, meta)`` of ``step`` (default: the first of ``which``), shaped like
    ``abstract_state`` (arrays or ``jax.ShapeDtypeStruct`` with shardings)."""
    mgr = manager or self.manager
    if step is None:
      found = self.candidates(which)
      if not found:
        raise ValueError(f"no complete checkpoint in {self.directory}")
      step, mgr, _ = found[0]
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    out = mgr.restore(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    meta = out["meta"]
    if not isinstance(meta, dict):
      raise ValueError(f"meta of checkpoint {step} is {type(meta).__name__}, not a JSON object")
    return out["state"], dict(meta)

  def read_meta(self, which: str = "last") -> dict | None:
    """The ``meta`` of the first checkpoint of ``which`` whose meta reads, or None."""
    for step, mgr, _ in self.candidates(which):
      try:
        meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
      except Exception:  # pylint: disable=broad-except  (unreadable: try the next one)
        continue
      if isinstance(meta, dict):
        return dict(meta)
    return None

  def restore_newest(self, abstract_state, which: str = "last", quarantine: bool = False
                     ) -> Restored | None:
    """The first checkpoint of ``which`` that restores cleanly, or None if none does.

    A checkpoint is skipped (warning naming it and why) when orbax or the JSON reader
    fails on it, or when it restores non-finite parameters. A checkpoint that reads
    fine but holds other arrays than ``abstract_state`` (written with another model or
    optimiser config) is not damage: ``IncompatibleCheckpoint`` is raised, and nothing
    is moved.
    """
    wanted = _array_shapes(abstract_state)
    for step, mgr, kind in self.candidates(which):
      where = os.path.join(str(mgr.directory), str(step))
      try:
        stored = _stored_shapes(os.path.join(where, "state"))
      except Exception:  # pylint: disable=broad-except  (unreadable: damaged, see below)
        stored = None
      if stored:  # metadata without arrays (a lost manifest, an emptied state/) is damage
        _check_compatible(where, stored, wanted)
      try:
        state, meta = self.restore(abstract_state, step, manager=mgr)
        _check_finite(state)
        if not isinstance(meta.get("data"), dict):
          raise ValueError("its meta holds no data position")
        return Restored(state, meta, step, kind)
      except Exception as e:  # pylint: disable=broad-except  (any failure = skip it)
        log.warning("skipping checkpoint %s: %s", where, one_line(e))
        if quarantine:
          self._quarantine(mgr, step)
    return None

  def _quarantine(self, mgr, step: int) -> None:
    """Moves a bad checkpoint to ``quarantine/`` (process 0) and re-lists the manager.

    OSError naming both paths when it cannot be moved (e.g. ``quarantine`` is a file).
    """
    src = os.path.join(str(mgr.directory), str(step))
    name = os.path.basename(str(mgr.directory))
    dst = os.path.join(self.workdir, QUARANTINE,
                       f"{name}-{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    error = None
    if jax.process_index() == 0 and os.path.exists(src):
      try:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        while os.path.exists(dst):
          dst += "+"
        shutil.move(src, dst)
        log.warning("moved it to %s", dst)
      except OSError as e:
        error = e
    _raise_if_any_failed(error, f"cannot move the damaged checkpoint {src} to {dst}",
                         "move or delete it by hand, then rerun")
    mgr.reload()

  def migrate_legacy(self) -> None:
    """Moves the earlier layout's ``best/<step>`` into ``checkpoints/`` (one line).

    A step already in ``checkpoints/`` gets the best one's ``metrics`` file; the duplicate
    goes to ``quarantine/``. Call with the workdir lock held, on every process.
    """
    if self.legacy is None:
      return
    self.legacy.close()
    self.legacy = None
    src_dir = os.path.join(self.workdir, LEGACY_BEST)
    moved, error = [], None
    if jax.process_index() == 0:
      try:
        os.makedirs(self.directory, exist_ok=True)
        stamp = time.strftime('%Y%m%d-%H%M%S')
        for name in sorted(os.listdir(src_dir)):
          src, dst = os.path.join(src_dir, name), os.path.join(self.directory, name)
          if not name.isdigit():
            continue
          if not os.path.exists(dst):
            shutil.move(src, dst)
          else:
            if (os.path.isdir(os.path.join(src, "metrics"))
                and not os.path.exists(os.path.join(dst, "metrics"))):
              shutil.copytree(os.path.join(src, "metrics"), os.path.join(dst, "metrics"))
            os.makedirs(os.path.join(self.workdir, QUARANTINE), exist_ok=True)
            shutil.move(src, os.path.join(self.workdir, QUARANTINE, f"best-{name}-{stamp}"))
          moved.append(name)
        shutil.rmtree(src_dir)
      except OSError as e:
        error = e
    _raise_if_any_failed(error, f"cannot move {src_dir} of the earlier layout into "
                         f"{self.directory}", "move its <step> directories by hand, then rerun")
    if jax.process_index() == 0:
      log.warning("moved %s (the earlier layout's best checkpoint, step %s) into %s: one "
                  "manager keeps the last and the best checkpoints now", src_dir,
                  ", ".join(moved) or "none", self.directory)
    self.manager.reload()

  def close(self) -> None:
    """Closes the managers; a running save's error is raised (see ``wait``)."""
    try:
      self.wait()
    finally:
      for m in self._managers():
        try:
          m.close()
        except Exception:  # pylint: disable=broad-except  (already reported by wait)
          pass


def _check_finite(state) -> None:
  params = getattr(state, "params", state)
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    arr = np.asarray(leaf)
    if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
      raise ValueError(f"non-finite parameter {jax.tree_util.keystr(path)}")


def _key_name(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _array_shapes(tree) -> dict[str, tuple]:
  """{"a/b/0": shape} of every array leaf, the same for a live ``TrainState`` and for
  orbax's stored metadata (dict keys, attributes and tuple indices all become names)."""
  leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
  return {"/".join(_key_name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves
          if hasattr(leaf, "shape")}


def _stored_shapes(item_dir: str) -> dict[str, tuple]:
  """``_array_shapes`` of the ``state`` item of a checkpoint, from its array metadata alone.

  Read with the item's handler: the item directory has no step-level
  ``_CHECKPOINT_METADATA`` of its own (that file sits in ``<step>/``), so reading it with a
  ``Checkpointer`` as if it were a whole checkpoint makes orbax warn about the missing file
  on every restore."""
  from etils import epath
  return _array_shapes(ocp.StandardCheckpointHandler().metadata(epath.Path(item_dir)))


def _check_compatible(where: str, stored: dict, wanted: dict) -> None:
  if stored == wanted:
    return
  diff = sorted(set(stored.items()) ^ set(wanted.items()))
  shown = ", ".join(f"{p} {'stored' if (p, s) in stored.items() else 'expected'} {list(s)}"
                    for p, s in diff[:4])
  raise IncompatibleCheckpoint(
      f"checkpoint {where} was written by another model or optimiser configuration "
      f"({shown}{', ...' if len(diff) > 4 else ''}); resume with the config it was trained "
      f"with, or use a new --workdir")


def _raise_if_any_failed(error: OSError | None, what: str, todo: str) -> None:
  """OSError on every process when a file operation failed on this one or on process 0
  (which alone moves files): one line, what failed, why, and what to do."""
  if any_process(error is not None):
    raise OSError(f"{what} ({one_line(error) if error else 'failed on process 0'}); {todo}")
