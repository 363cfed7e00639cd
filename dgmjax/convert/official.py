"""Official PyTorch checkpoint files -> ``(model_name, hparams, variables)``.

- ``detect_format``: which official format a loaded file is (ajayjain/lmconv, NVlabs/NVAE,
  rosinality/glow-pytorch, ``module.`` prefixes of ``DataParallel`` included);
- ``read_official_checkpoint``: reads one and converts its weights (one module per model
  maps the official parameter names: ``glow``, ``lmconv``, ``nvae``);
- ``hparams_conflicts``: the keys where a file's hyper-parameters and a config's differ.

No command-line parsing: every function takes Python values and raises ValueError naming
what was expected (``dgmjax import`` is the command around them).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from dgmjax import models
from dgmjax.convert import common as convert_common

WEIGHTS = ("ema", "model")


def detect_format(obj: Mapping[str, Any]) -> str:
  """The model a loaded checkpoint mapping holds: "lmconv" | "nvae" | "glow".

  - ajayjain/lmconv ``main.py``: ``{"model_state_dict", "ema_state_dict"?, "args": dict,
    "optimizer_state_dict", "epoch", ...}`` -> "lmconv";
  - NVlabs/NVAE ``train.py`` ``checkpoint.pt``: ``{"state_dict", "args": Namespace,
    "arch_instance", "optimizer", "scheduler", "grad_scalar", "epoch", ...}`` -> "nvae";
  - a bare state_dict: rosinality/glow-pytorch (``blocks.*`` keys, ``model_*.pt``) ->
    "glow"; an LMConv ``OurPixelCNN`` state_dict (``u_init.weight``) -> "lmconv".
  """
  if "model_state_dict" in obj:
    return "lmconv"
  if "state_dict" in obj and "args" in obj:
    return "nvae"
  keys = [k[len("module."):] if k.startswith("module.") else k for k in obj]
  if keys and all(isinstance(k, str) for k in keys):
    if any(k.startswith("blocks.") for k in keys):
      return "glow"
    if "u_init.weight" in keys:
      return "lmconv"
  raise ValueError("unrecognised checkpoint: expected an ajayjain/lmconv *.pth (with "
                   "'model_state_dict'), an NVlabs/NVAE checkpoint.pt (with 'state_dict' and "
                   "'args') or a rosinality/glow-pytorch state_dict ('blocks.*' keys); got "
                   f"entries {sorted(map(str, obj))[:8]}")


def read_official_checkpoint(path, weights: str = "ema", *, hparams: Mapping | None = None,
                             model_name: str | None = None):
  """Reads an official checkpoint file and converts it to dgmjax variables.

  Args:
    path: the file (``torch.load(weights_only=True)``, zip CRC checked; see
      ``dgmjax.convert.common``), or an already-loaded mapping.
    weights: "ema" (default) takes LMConv's ``ema_state_dict`` when the file has one (the
      official ``--ema 1`` default keeps none: then the trained weights are used); "model"
      always takes ``model_state_dict``. NVAE and Glow files store one set of weights.
    hparams: create() kwargs (image_shape and num_bins included) for a file that stores no
      arguments (a rosinality Glow or a bare LMConv state_dict): required there; for files
      with arguments only its ``scan`` (the parameter layout, which official files do not
      store) is used (compare the rest with ``hparams_conflicts`` first).
    model_name: when given, the file must hold this model.

  Returns:
    ``(model_name, hparams, variables)``: "lmconv" | "nvae" | "glow", the create()
    kwargs that build the model (``models.create(model_name, **hparams)``), and its
    variables (LMConv {"params"}; NVAE {"params", "batch_stats", "spectral"}; Glow
    {"params", "constants"}).
  """
  if weights not in WEIGHTS:
    raise ValueError(f"weights must be one of {WEIGHTS}; got {weights!r}")
  obj = convert_common.load_checkpoint(path)
  name = detect_format(obj)
  if model_name is not None and model_name != name:
    raise ValueError(f"the checkpoint holds a {name!r} model; expected {model_name!r}")
  layout = {"scan": True} if (hparams or {}).get("scan") else {}
  if name == "nvae":
    from dgmjax.convert import nvae as cn
    hp = cn.hparams_from_args(obj["args"])
    model, variables = cn.load_nvae(obj, **layout)
    return name, hp, variables
  if name == "lmconv":
    from dgmjax.convert import lmconv as cl
    if "model_state_dict" in obj:
      if "args" not in obj:
        raise ValueError("the LMConv checkpoint has no 'args'; pass hparams= from a config")
      hp = cl.hparams_from_args(obj["args"])
      use_ema = weights == "ema" and "ema_state_dict" in obj
    else:
      hp = _need_hparams(hparams, name)
      use_ema = False
    model = models.create(name, **hp)
    return name, hp, cl.load_lmconv(obj, model, use_ema=use_ema)
  from dgmjax.convert import glow as cg
  hp = _need_hparams(hparams, name)
  model = models.create(name, **hp)
  return name, hp, cg.load_glow(obj, model)


def _need_hparams(hparams, name):
  if not hparams:
    raise ValueError(f"this {name} checkpoint stores no hyper-parameters: give the model's "
                     f"config (create() kwargs with image_shape and num_bins)")
  hp = dict(hparams)
  for key in ("image_shape", "num_bins"):
    if key not in hp:
      raise ValueError(f"hparams for a {name} checkpoint must include {key!r}")
  return hp


def _normalise(v):
  if isinstance(v, (list, tuple)):
    return tuple(_normalise(e) for e in v)
  if isinstance(v, (np.integer, np.floating, np.bool_)):
    return v.item()
  return v


def hparams_conflicts(file_hparams: Mapping[str, Any], config_hparams: Mapping[str, Any]
                      ) -> list[str]:
  """Sorted keys present in both mappings whose values differ (lists and tuples compare
  alike, numbers by value). Keys in only one of them are not conflicts."""
  out = []
  for k in sorted(set(file_hparams) & set(config_hparams)):
    a, b = _normalise(file_hparams[k]), _normalise(config_hparams[k])
    if a != b:
      out.append(k)
  return out
