"""The configuration schema shared by every experiment config.

Each ``experiments/configs/MODEL_DATASET.py`` builds on ``base_config`` and sets the
model's hyper-parameters under ``config.model`` (``name`` plus keyword arguments of
``dgmjax.models.create``). The returned ConfigDict is locked, so a misspelt key in a
file or in a ``--config.a.b=...`` override is an error rather than a silent no-op.
"""

from __future__ import annotations

import math

import ml_collections


def base_config(model: str, dataset: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict({"name": model})
  c.data = ml_collections.ConfigDict(dict(
      name=dataset,
      data_dir="",          # tfds data_dir ("" = tfds default)
      n_bits=0,             # 0 = the dataset's own levels; else num_bins = 2**n_bits
      binarize=False,       # dynamic binarisation (resampled every batch)
      pad_to=0,             # pad H and W with zeros up to this size (MNIST 28 -> 32)
  ))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=1000,
      batch_size=64,
      eval_batch_size=256,
      seed=0,
      log_every=50,
      eval_every=500,
      checkpoint_every=500,
      keep_checkpoints=3,
      max_nonfinite=20,     # consecutive skipped updates before training stops
      grad_accum=1,         # micro-batches accumulated per update
      num_samples=64,       # samples drawn at each evaluation (PNG grid)
      init_batch_size=256,  # examples used for data-dependent initialisation
  ))
  c.optim = ml_collections.ConfigDict(dict(
      name="adam",          # adam | adamax | adamw
      lr=1e-3,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.0,
      warmup_steps=0,       # linear warm-up from 0 to lr
      schedule="constant",  # constant | cosine | exponential (after warm-up)
      decay_steps=0,        # 0 = num_steps - warmup_steps
      decay_rate=0.5,       # exponential: lr * decay_rate ** (t / decay_steps)
      end_lr_factor=0.0,    # cosine: final lr = end_lr_factor * lr
      clip_norm=0.0,        # global-norm clipping; 0 = off
      ema_decay=0.0,        # Polyak averaging for eval/sampling; 0 = off
  ))
  return c


# Variants every model config accepts, beside its own (``smoke``...): ``file.py:bf16``,
# combined with ``+`` (``file.py:smoke+bf16``). Each sets keys of ``model.compute``
# (``dgmjax.nn.compute.Compute``): how the model runs, never what it computes.
SHARED_VARIANTS = {
    "bf16": "model.compute.dtype = 'bfloat16': the networks compute in bfloat16; parameters, "
            "log-determinants and likelihood sums stay float32",
    "remat": "model.compute.remat = 'full': each repeated block's activations are recomputed "
             "in the backward pass (least memory; any jax.checkpoint_policies name via "
             "--config.model.compute.remat=...)",
    "unroll": "model.compute.unroll = 0 (fully unrolled): repeated blocks run as "
              "straight-line code (often faster steps on CPU; compile time grows with depth)",
}
_TUNABLE_MODELS = ("glow", "lmconv", "nvae")
# model.compute keys per model (NVAE alone has depthwise convolutions).
_COMPUTE_KEYS = {"glow": ("dtype", "remat", "unroll", "conv"),
                 "lmconv": ("dtype", "remat", "unroll", "conv"),
                 "nvae": ("dtype", "remat", "unroll", "conv", "depthwise")}


def split_variant(variant: str | None, own=()) -> tuple[str | None, tuple[str, ...]]:
  """``"smoke+bf16"`` -> (``"smoke"``, (``"bf16"``,)): the config's own variant (at most
  one, from ``own``) and the shared ones; ValueError naming both lists otherwise."""
  parts = [v for v in (variant or "").split("+") if v]
  mine = [v for v in parts if v in own]
  unknown = [v for v in parts if v not in own and v not in SHARED_VARIANTS]
  if unknown or len(mine) > 1:
    raise ValueError(f"unknown variant {variant!r}; expected at most one of {list(own)} "
                     f"combined with '+' with any of {list(SHARED_VARIANTS)}")
  return (mine[0] if mine else None), tuple(v for v in parts if v in SHARED_VARIANTS)


def _model_defaults(name: str) -> dict:
  """Every constructor argument of model ``name`` with its default (image_shape and
  num_bins, which come from the data, and ``compute`` excluded). A None default of an
  ``int | None`` (float, str, bool) argument is a typed placeholder, so that
  ``--config.model.KEY=value`` can set it (ml_collections refuses to override a plain
  None)."""
  import dataclasses
  import typing

  from ml_collections.config_dict import placeholder

  from dgmjax import models
  cls = models.model_class(name)
  hints = typing.get_type_hints(cls)
  out = {}
  for f in dataclasses.fields(cls):
    if not f.init or f.name in ("image_shape", "num_bins", "compute"):
      continue
    if f.default is not dataclasses.MISSING:
      out[f.name] = f.default
      args = [a for a in typing.get_args(hints.get(f.name)) if a is not type(None)]
      if f.default is None and len(args) == 1 and args[0] in (int, float, str, bool):
        out[f.name] = placeholder(args[0])
    elif f.default_factory is not dataclasses.MISSING:
      out[f.name] = f.default_factory()
  return out


def finalize(c: ml_collections.ConfigDict, shared=()) -> ml_collections.ConfigDict:
  """Completes and locks a config: ``model`` gets every constructor argument of its model
  that the file does not set (with the model's default), so ``--config.model.KEY=...``
  reaches each of them; glow/lmconv/nvae configs get ``model.compute``
  (``dgmjax.nn.compute``; defaults where the file sets none) and the ``shared`` variants
  (``SHARED_VARIANTS``) are applied to it. Locked: a misspelt key is an error."""
  name = c.model.name
  if name in _TUNABLE_MODELS:
    from dgmjax.nn.compute import Compute
    given = c.model.compute.to_dict() if "compute" in c.model else {}
    default = Compute().as_dict()
    c.model.compute = ml_collections.ConfigDict(
        {k: given.get(k, default[k]) for k in _COMPUTE_KEYS[name]})
    unknown = sorted(set(given) - set(_COMPUTE_KEYS[name]))
    if unknown:
      raise ValueError(f"config.model.compute: unknown key(s) {unknown} for {name}; expected "
                       f"{list(_COMPUTE_KEYS[name])}")
  elif shared:
    raise ValueError(f"variants {list(shared)} apply to {_TUNABLE_MODELS} configs only")
  if name in _TUNABLE_MODELS or name == "independent":
    for key, value in _model_defaults(name).items():
      if key not in c.model:
        c.model[key] = value
  if "bf16" in shared:
    c.model.compute.dtype = "bfloat16"
  if "remat" in shared:
    c.model.compute.remat = "full"
  if "unroll" in shared:
    c.model.compute.unroll = 0   # fully unrolled (the config spelling of True)
  c.lock()
  return c


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads ``path/to/config.py[:variant]`` by calling its ``get_config(variant)``.

  The same files the CLI's ``--config`` flag takes; used by drivers and tests.
  """
  import importlib.util
  import os

  path, _, variant = spec.partition(":")
  if not os.path.exists(path):
    raise ValueError(f"config file not found: {path}")
  name = "dgmjax_config_" + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)


# key -> (lowest allowed, whether the bound itself is allowed); ints unless a float bound.
_TRAIN_INTS = dict(num_steps=1, batch_size=1, eval_batch_size=1, log_every=1, eval_every=1,
                   checkpoint_every=1, keep_checkpoints=1, max_nonfinite=1, grad_accum=1,
                   num_samples=0, init_batch_size=1, seed=0)


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first out-of-range training/optimiser setting.

  Checked before anything is built, so a bad value costs no compile and no data load:
  a NaN or non-positive learning rate, ``checkpoint_every=0`` and the like.
  """
  for key, low in _TRAIN_INTS.items():
    if key not in c.train:
      continue
    v = c.train[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
      raise ValueError(f"config.train.{key} must be an int >= {low}; got {v!r}")
  o = c.optim

  def real(key, low, high=math.inf, low_ok=True, high_ok=False):
    v = o[key]
    ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
          and (v >= low if low_ok else v > low) and (v <= high if high_ok else v < high))
    if not ok:
      lo = "[" if low_ok else "("
      hi = "]" if high_ok else ")"
      raise ValueError(f"config.optim.{key} must be a finite number in {lo}{low}, {high}{hi}; "
                       f"got {v!r}")

  real("lr", 0.0, low_ok=False)
  for key in ("b1", "b2", "ema_decay"):
    real(key, 0.0, 1.0)
  real("eps", 0.0, low_ok=False)
  for key in ("weight_decay", "clip_norm", "end_lr_factor"):
    real(key, 0.0)
  real("decay_rate", 0.0, low_ok=False)
  for key in ("warmup_steps", "decay_steps"):
    if not isinstance(o[key], int) or o[key] < 0:
      raise ValueError(f"config.optim.{key} must be an int >= 0; got {o[key]!r}")
