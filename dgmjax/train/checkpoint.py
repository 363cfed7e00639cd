"""orbax checkpoints of the full training state plus the data position.

Layout in a workdir::

    checkpoints/<step>/{state, meta}   the last ``keep`` checkpoints (resume from here)
    best/<step>/{state, meta}          the one with the lowest test bits/dim
    quarantine/<kind>-<step>-<time>/   checkpoints that failed to restore, moved aside

``state`` is the whole ``TrainState`` (params, optimiser state, EMA, batch statistics
and other non-trainable collections); ``meta`` is JSON (data-iterator position,
best test bits/dim, the config). orbax writes each checkpoint into a temporary
directory and renames it only when complete, so a write interrupted by a crash or
SIGKILL is never listed and never restored. Saving is asynchronous; call ``wait()``
before exiting.

What cannot wedge a run:
- A save whose step is already present (a best checkpoint written just before a kill,
  then the same step reached again after the resume) is a no-op: the state of a step
  is a pure function of the run, so the checkpoint on disk is the one we would write.
- ``restore_newest`` tries every checkpoint of both kinds, newest first, and takes the
  first that restores cleanly with finite parameters; each one skipped is named in a
  one-line warning with the reason. With ``quarantine=True`` (the trainer, which holds
  the workdir lock) skipped checkpoints are moved to ``quarantine/``, never deleted,
  so the resumed run can write those steps again.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger("dgmjax")

KINDS = ("last", "best")
_DIRS = {"last": "checkpoints", "best": "best"}


class IncompatibleCheckpoint(ValueError):
  """A readable checkpoint whose arrays differ from what this config builds."""


class Restored(NamedTuple):
  state: Any
  meta: dict
  step: int
  kind: str  # "last" or "best"


def has_checkpoint(workdir: str) -> bool:
  """True when ``workdir`` holds at least one finished checkpoint of either kind.

  Looks at directory names only (no jax, no orbax): cheap enough for the CLI to call
  before it builds anything, and it creates nothing.
  """
  for sub in _DIRS.values():
    d = os.path.join(workdir, sub)
    if os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d)):
      return True
  return False


class Checkpointer:
  """Last-K and best-by-``test_bpd`` orbax managers over one workdir."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True,
               create: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.last = ocp.CheckpointManager(
        os.path.join(self.workdir, _DIRS["last"]),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=create, enable_async_checkpointing=async_save))
    self.best = ocp.CheckpointManager(
        os.path.join(self.workdir, _DIRS["best"]),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=create, best_fn=lambda m: m["test_bpd"], best_mode="min",
            enable_async_checkpointing=async_save))

  def manager(self, kind: str) -> ocp.CheckpointManager:
    if kind not in KINDS:
      raise ValueError(f"checkpoint kind must be one of {KINDS}; got {kind!r}")
    return self.last if kind == "last" else self.best

  @staticmethod
  def _args(state, meta):
    return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))

  def save(self, step: int, state, meta: dict[str, Any]) -> bool:
    """Saves ``step`` unless it is already there; returns whether a save started."""
    if int(step) in self.last.all_steps():
      return False
    return bool(self.last.save(int(step), args=self._args(state, meta), force=True))

  def save_best(self, step: int, state, meta: dict[str, Any], test_bpd: float) -> bool:
    if int(step) in self.best.all_steps():
      return False
    return bool(self.best.save(int(step), args=self._args(state, meta),
                               metrics={"test_bpd": float(test_bpd)}, force=True))

  def latest_step(self) -> int | None:
    return self.last.latest_step()

  def candidates(self, kinds=KINDS) -> list[tuple[int, str]]:
    """(step, kind) of every listed checkpoint, newest first ("last" before "best")."""
    out = [(s, k) for k in kinds for s in self.manager(k).all_steps()]
    return sorted(out, key=lambda sk: (-sk[0], KINDS.index(sk[1])))

  def restore(self, abstract_state, step: int | None = None, which: str = "last"):
    """Returns ``(state, meta)`` of ``step`` (default: latest / best) of kind ``which``,
    shaped like ``abstract_state`` (arrays or ``jax.ShapeDtypeStruct`` with shardings)."""
    mgr = self.manager(which)
    if step is None:
      step = mgr.latest_step() if which == "last" else mgr.best_step()
    if step is None:
      raise ValueError(f"no complete checkpoint in {mgr.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    out = mgr.restore(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    meta = out["meta"]
    if not isinstance(meta, dict):
      raise ValueError(f"meta of checkpoint {step} is {type(meta).__name__}, not a JSON object")
    return out["state"], dict(meta)

  def restore_newest(self, abstract_state, kinds=KINDS, quarantine: bool = False
                     ) -> Restored | None:
    """The newest checkpoint of ``kinds`` that restores cleanly, or None if none does.

    A checkpoint is skipped (warning naming it and why) when orbax or the JSON reader
    fails on it, or when it restores non-finite parameters. A checkpoint that reads
    fine but holds other arrays than ``abstract_state`` (written with another model or
    optimiser config) is not damage: ``IncompatibleCheckpoint`` is raised, and nothing
    is moved.
    """
    wanted = _array_shapes(abstract_state)
    for step, kind in self.candidates(kinds):
      where = os.path.join(str(self.manager(kind).directory), str(step))
      try:
        stored = _array_shapes(ocp.StandardCheckpointer().metadata(
            os.path.join(where, "state")).item_metadata)
      except Exception:  # pylint: disable=broad-except  (unreadable: damaged, see below)
        stored = None
      if stored:  # metadata without arrays (a lost manifest, an emptied state/) is damage
        _check_compatible(where, stored, wanted)
      try:
        state, meta = self.restore(abstract_state, step, kind)
        _check_finite(state)
        return Restored(state, meta, step, kind)
      except Exception as e:  # pylint: disable=broad-except  (any failure = skip it)
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        log.warning("skipping checkpoint %s: %s", where, reason)
        if quarantine:
          self._quarantine(kind, step)
    return None

  def _quarantine(self, kind: str, step: int) -> None:
    """Moves a bad checkpoint to ``quarantine/`` (process 0) and re-lists the managers."""
    if jax.process_index() == 0:
      src = os.path.join(str(self.manager(kind).directory), str(step))
      dst = os.path.join(self.workdir, "quarantine",
                         f"{_DIRS[kind]}-{step}-{time.strftime('%Y%m%d-%H%M%S')}")
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      if os.path.exists(src):
        shutil.move(src, dst)
        log.warning("moved it to %s", dst)
    _sync(f"dgmjax_quarantine_{kind}_{step}")
    self.manager(kind).reload()

  def wait(self) -> None:
    self.last.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.last.close()
    self.best.close()


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


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
