"""The one orbax ``CheckpointManager`` of a workdir: its options (keep the last K plus the
best by test bits/dim, orbax's own ``preservation_policy``, so two saves of one step never
race) and a manager whose damaged per-checkpoint ``metrics`` file is read from the
checkpoint's meta, or counted as not evaluated, with one warning naming it."""

from __future__ import annotations

import json
import logging
import math
import os
import threading

import jax
import orbax.checkpoint as ocp

from dgmjax.train.write_errors import one_line

log = logging.getLogger("dgmjax")
METRIC = "test_bpd"
_policies = ocp.checkpoint_managers


def _bpd_of(metrics) -> float:
  return float(metrics[METRIC])


class Manager(ocp.CheckpointManager):
  """orbax's manager; a damaged ``metrics`` file is read from the checkpoint's meta, or
  as "not evaluated", with one warning naming it, instead of stopping orbax."""

  def __init__(self, directory, options, repair: bool):
    self._repair = repair
    self._warned: set[str] = set()
    self._warn_lock = threading.Lock()
    super().__init__(directory, options=options)

  def metrics(self, step: int):
    path = os.path.join(str(self.directory), str(step), "metrics", "metrics")
    try:
      m = super().metrics(step)
      if m is None:
        return None
      value = float(m[METRIC])
      if not math.isfinite(value):
        raise ValueError(f"{METRIC} is {value}")
      return {METRIC: value}
    except Exception as e:  # pylint: disable=broad-except  (damage: see the class doc)
      reason = one_line(e, 120)
    value = _meta_bpd(os.path.join(str(self.directory), str(step), "meta", "metadata"))
    with self._warn_lock:
      first = path not in self._warned
      self._warned.add(path)
    if value is None:
      if first:
        log.warning("damaged checkpoint metrics file %s (%s): checkpoint %d counts as not "
                    "evaluated", path, reason, step)
      return None
    if first:
      fixed = self._repair and _rewrite_json(path, {METRIC: value})
      log.warning("damaged checkpoint metrics file %s (%s): using the test bits/dim %s "
                  "stored in its meta%s", path, reason, value, "; rewrote it" if fixed else "")
    return {METRIC: value}


def _meta_bpd(path: str) -> float | None:
  try:
    with open(path, encoding="utf-8") as f:
      value = float(json.load(f)[METRIC])
    return value if math.isfinite(value) else None
  except Exception:  # pylint: disable=broad-except  (absent or damaged too: no figure)
    return None


def _rewrite_json(path: str, obj) -> bool:
  if jax.process_index() != 0:
    return False
  try:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(obj, f)
    os.replace(tmp, path)
    return True
  except OSError:
    return False


def manager_options(keep: int, create: bool, async_save: bool, read_only: bool = False):
  """Keep the last ``keep`` checkpoints and the one with the lowest test bits/dim."""
  return ocp.CheckpointManagerOptions(
      create=create, read_only=read_only, enable_async_checkpointing=async_save,
      cleanup_tmp_directories=create and not read_only,
      best_fn=_bpd_of, best_mode="min",
      preservation_policy=_policies.AnyPreservationPolicy([
          _policies.LatestN(n=keep),
          _policies.BestN(get_metric_fn=_bpd_of, reverse=True, n=1,
                          keep_checkpoints_without_metrics=False)]))
