"""What every command shares, with public names: the user-error type and the one-line
JSON output, flag helpers (``check_positive_int``...) and shared flag groups
(``define_which``, ``define_sample_flags``), the config a workdir stores
(``stored_config``, ``config_for``), checks on the workdir (``require_checkpoint``),
restoring its checkpoint (``restore``) and picture helpers. ``dgmjax.cli`` only registers
the commands; the command modules import from here, never from the CLI."""

from __future__ import annotations

import json
import math
import os

CONFIG_FILE = "config.json"
READJUST_DIR = "readjusted_bn"
FILE_DATA = "file"          # data settings derived from the checkpoint file's arguments


class UsageError(ValueError):
  """A mistake in the command line: one line ``dgmjax: error: ...``, exit status 2."""


def usage_error(msg: str) -> UsageError:
  return UsageError(msg)


def absl_flags():
  """absl's ``flags`` module, imported when a command defines its flags."""
  from absl import flags
  return flags


def print_json(obj) -> None:
  """A command's result: one JSON line on stdout (process 0 only)."""
  import jax
  if jax.process_index() == 0:
    print(json.dumps(obj))


def require_checkpoint(workdir: str) -> None:
  """UsageError unless ``workdir`` exists and holds a checkpoint (checked before anything
  is built, and creating nothing)."""
  from dgmjax.train import checkpoint as ckpt_lib
  if not os.path.isdir(workdir):
    raise UsageError(f"workdir {workdir} does not exist")
  if not ckpt_lib.has_checkpoint(workdir):
    raise UsageError(f"no checkpoint in {workdir} (expected {workdir}/checkpoints/<step>; "
                     f"run `dgmjax train` first)")


def define_which(fl) -> None:
  """--which: the checkpoint a command reads."""
  absl_flags().DEFINE_enum("which", "best", ["best", "last"], "checkpoint to evaluate",
                           flag_values=fl)


def define_sample_flags(fl) -> None:
  """--num, --temperature, --seed, --batch, --out of the commands that draw samples."""
  flags = absl_flags()
  flags.DEFINE_integer("num", 64, "number of samples (>= 1)", flag_values=fl)
  flags.DEFINE_float("temperature", None, "sampling temperature, > 0 (models that take one)",
                     flag_values=fl)
  flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=fl)
  flags.DEFINE_integer("batch", 256, "images drawn per program (device memory is bounded "
                       "by it, not by --num; the last batch is drawn whole and cut)",
                       flag_values=fl)
  flags.DEFINE_string("out", None, "output directory (default WORKDIR/samples)",
                      flag_values=fl)


def check_positive_float(name: str, v) -> None:
  if v is not None and not (math.isfinite(v) and v > 0):
    raise usage_error(f"--{name} must be a finite number > 0; got {v}")


def check_positive_int(name: str, v) -> None:
  if v is not None and v < 1:
    raise usage_error(f"--{name} must be >= 1; got {v}")


# ---------------------------------------------------------------------------- configs

def config_from_json(text: str):
  """A locked ConfigDict from ``cfg.to_json()`` (lists in ``model`` back to tuples)."""
  import ml_collections

  def tuples(v):
    if isinstance(v, list):
      return tuple(tuples(e) for e in v)
    if isinstance(v, dict):
      return {k: tuples(e) for k, e in v.items()}
    return v

  d = json.loads(text)
  if not isinstance(d, dict) or not isinstance(d.get("model"), dict) or "name" not in d["model"]:
    raise ValueError("the stored config is not a dgmjax config (no model.name)")
  d["model"] = tuples(d["model"])
  if d["model"].pop("reversible", False):  # stored before it moved into model.compute.remat
    d["model"].setdefault("compute", {})["remat"] = "reversible"
  cfg = ml_collections.ConfigDict(d)
  cfg.lock()
  return cfg


def stored_config(workdir: str, which: str = "best"):
  """The config a workdir stores, or None: ``meta["config"]`` of the first checkpoint
  ``restore_for_eval(which)`` tries whose meta reads, else ``WORKDIR/config.json``.

  A damaged ``config.json`` is a ValueError naming it and saying what to do."""
  from dgmjax.train import checkpoint as ckpt_lib
  checkpointer = ckpt_lib.Checkpointer(workdir, create=False)
  try:
    meta = checkpointer.read_meta(which)
  finally:
    checkpointer.close()
  if meta is not None and isinstance(meta.get("config"), str):
    try:
      return config_from_json(meta["config"])
    except ValueError:
      pass
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.isfile(path):
    try:
      with open(path, encoding="utf-8") as f:
        return config_from_json(f.read())
    except ValueError as e:  # JSON and UTF-8 errors included
      raise ValueError(f"{path} is damaged ({' '.join(str(e).split())[:200]}): pass "
                       f"--config path/to/config.py[:variant], or restore the file") from None
  return None


def config_for(fl, which: str = "best"):
  """``--config`` when given, else the workdir's stored config (UsageError if none)."""
  if fl.config is not None:
    return fl.config
  cfg = stored_config(fl.workdir, which)
  if cfg is None:
    raise usage_error(f"{fl.workdir} stores no config (checkpoints written before configs were "
                 f"stored): pass --config path/to/config.py[:variant]")
  return cfg


def restore(fl, cfg, need=()):
  """``(experiment, state)`` of the workdir's ``--which`` checkpoint. No data are read but
  the splits in ``need`` (e.g. ``("test",)``), read first: a missing dataset is one line
  naming it and how to prepare it (``loop.restore_for_eval``)."""
  from dgmjax.train import loop
  return loop.restore_for_eval(cfg, fl.workdir, getattr(fl, "which", "best"), need=need)


def need_model(cfg, names, what: str) -> None:
  name = cfg.model.name
  if name not in names:
    raise usage_error(f"{what} needs a {' or '.join(names)} model; {name!r} was given")


# --------------------------------------------------------------------------- pictures

def rgb255(x, num_bins: int):
  """int [..., H, W, C] levels -> uint8 [..., H, W, 3] for display."""
  import numpy as np
  from dgmjax import imageio
  img = imageio.to_uint8_255(x, num_bins)
  return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def save_rows(path: str, rows) -> str:
  """rows: uint8 [R, K, H, W, 3] -> one PNG, R rows of K images, small images upscaled."""
  import numpy as np
  from dgmjax import imageio
  rows = np.asarray(rows)
  r, k, h, w, c = rows.shape
  grid = imageio.make_grid(rows.reshape(r * k, h, w, c), 256, ncol=k)
  return imageio.save_png(path, grid, scale=max(1, 32 // max(h, 1)))


def test_images(exp, n: int, seed: int):
  """The first ``n`` test images (binarised as the model sees them): uint8 [n,H,W,C]."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  n = min(n, len(exp.test_data))
  x = exp.test_data.get(np.arange(n))
  if exp.preprocess is not None:
    x = np.asarray(exp.preprocess(jax.random.key(seed), jnp.asarray(x)))
  return np.asarray(x, np.uint8)
