"""orbax checkpoints of the full training state plus the data position.

Layout in a workdir::

    checkpoints/<step>/{state, meta}   the last ``keep`` checkpoints (resume from here)
    best/<step>/{state, meta}          the one with the lowest test bits/dim

``state`` is the whole ``TrainState`` (params, optimiser state, EMA, batch statistics
and other non-trainable collections); ``meta`` is JSON (data-iterator position,
config name, metrics). orbax writes each checkpoint into a temporary directory and
renames it only when complete, so a write interrupted by a crash or SIGKILL is
never listed by ``latest_step`` and never restored. Saving is asynchronous; call
``wait()`` before exiting.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Last-K and best-by-``test_bpd`` orbax managers over one workdir."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    workdir = os.path.abspath(workdir)
    self.last = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save))
    self.best = ocp.CheckpointManager(
        os.path.join(workdir, "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda m: m["test_bpd"], best_mode="min",
            enable_async_checkpointing=async_save))

  @staticmethod
  def _args(state, meta):
    return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))

  def save(self, step: int, state, meta: dict[str, Any]) -> None:
    self.last.save(int(step), args=self._args(state, meta), force=True)

  def save_best(self, step: int, state, meta: dict[str, Any], test_bpd: float) -> None:
    self.best.save(int(step), args=self._args(state, meta),
                   metrics={"test_bpd": float(test_bpd)}, force=True)

  def latest_step(self) -> int | None:
    return self.last.latest_step()

  def restore(self, abstract_state, step: int | None = None, which: str = "last"):
    """Returns ``(state, meta)`` of ``step`` (default: latest / best), shaped like
    ``abstract_state`` (a pytree of arrays or ``jax.ShapeDtypeStruct`` with shardings)."""
    mgr = self.last if which == "last" else self.best
    if step is None:
      step = mgr.latest_step() if which == "last" else mgr.best_step()
    if step is None:
      raise ValueError(f"no complete checkpoint in {mgr.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    out = mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out["state"], dict(out["meta"])

  def wait(self) -> None:
    self.last.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.last.close()
    self.best.close()
