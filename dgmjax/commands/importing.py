"""``dgmjax import``: an official checkpoint file -> a workdir that eval/sample use."""

from __future__ import annotations

import os

from dgmjax.commands.workdirs import (CONFIG_FILE, absl_flags, config_from_json, print_json,
                                      usage_error)


# ----------------------------------------------------------------------------- import

def define_import(fl) -> None:
  flags = absl_flags()
  flags.DEFINE_string("checkpoint", None, "official PyTorch checkpoint file: ajayjain/lmconv "
                      "*.pth, NVlabs/NVAE checkpoint.pt or rosinality/glow-pytorch model_*.pt",
                      flag_values=fl)
  flags.DEFINE_enum("weights", "ema", ["ema", "model"], "LMConv: the EMA weights when the file "
                    "has them (default) or the trained ones", flag_values=fl)
  flags.DEFINE_enum("dmol_edge", None, ["exact", "official"], "NVAE without --config: the "
                    "mixture likelihood's edge bins ('official' reproduces NVlabs/NVAE's "
                    "figures; default exact)", flag_values=fl)


def data_from_args(name: str, args) -> dict:
  """dgmjax ``config.data`` settings for the dataset an official file's arguments name.

  ValueError (asking for ``--config``) where dgmjax has no such dataset.
  """
  a = dict(vars(args)) if hasattr(args, "__dict__") and not isinstance(args, dict) else dict(args)
  ds = str(a.get("dataset", ""))
  if name == "lmconv":
    bits = int(a.get("n_bits", 8))
    if "mnist" in ds:
      return dict(name="mnist", binarize=bool(a.get("binarize", False)),
                  n_bits=0 if bits == 8 else bits)
    if "cifar" in ds:
      return dict(name="cifar10", n_bits=0 if bits == 8 else bits)
  elif name == "nvae":
    bits = int(a.get("num_x_bits", 8))
    table = {"mnist": dict(name="mnist", binarize=True, pad_to=32),
             "cifar10": dict(name="cifar10"), "celeba_64": dict(name="celeb_a"),
             "imagenet_32": dict(name="downsampled_imagenet/32x32"),
             "imagenet_64": dict(name="downsampled_imagenet/64x64")}
    if ds in table:
      d = dict(table[ds])
      if ds != "mnist" and bits != 8:
        d["n_bits"] = bits
      return d
  raise ValueError(f"the {name} checkpoint's dataset {ds!r} has no dgmjax data loader: pass "
                   f"--config with a data section that delivers its images")


def file_hparams(name: str, obj) -> dict | None:
  """create() kwargs the official file's own arguments give (NVAE; LMConv files with
  ``args``), read without converting a weight; None for files that store none."""
  if name == "nvae":
    from dgmjax.convert import nvae as cn
    return cn.hparams_from_args(obj["args"])
  if name == "lmconv" and "args" in obj and "model_state_dict" in obj:
    from dgmjax.convert import lmconv as cl
    return cl.hparams_from_args(obj["args"])
  return None


def _show(v) -> str:
  return str(list(v)) if isinstance(v, (list, tuple)) else repr(v)


def _import_config(fl, name: str, obj):
  """(config to store, create() kwargs, variables) for the loaded file ``obj``."""
  import ml_collections
  from dgmjax.convert import official
  from dgmjax.train import config as config_lib
  from dgmjax.train import loop
  from dgmjax.train.experiment import image_of
  cfg = fl.config
  if cfg is None:
    if name == "glow":
      raise usage_error("a rosinality/glow-pytorch file stores no hyper-parameters: pass --config "
                   "with the model's architecture and data")
    name_, file_hp, variables = official.read_official_checkpoint(obj, fl.weights)
    args = obj["args"]
    cfg = config_lib.base_config(name, "digits")
    cfg.data.update(data_from_args(name, args))
    model_hp = {k: v for k, v in file_hp.items() if k not in ("image_shape", "num_bins")}
    if name == "nvae" and fl.dmol_edge:
      model_hp["dmol_edge"] = fl.dmol_edge
    cfg.model.update(model_hp)
    cfg = config_lib.finalize(cfg)
    return config_from_json(cfg.to_json()), file_hp, variables
  if cfg.model.name != name:
    raise usage_error(f"the checkpoint holds a {name!r} model; --config describes "
                 f"{cfg.model.name!r}")
  if fl.dmol_edge:
    raise usage_error("--dmol_edge is for imports without --config; set config.model.dmol_edge")
  shape, num_bins = image_of(cfg)     # the data's description: no data are read
  cfg_hp = dict(loop.model_hparams(cfg), image_shape=shape, num_bins=num_bins)
  own = file_hparams(name, obj)   # compared before any weight is converted
  bad = official.hparams_conflicts(own, cfg_hp) if own else []
  if bad:
    parts = ", ".join(f"{k} (file {_show(own[k])}, config {_show(cfg_hp[k])})" for k in bad)
    raise usage_error(f"--config disagrees with the checkpoint's hyper-parameters: {parts}")
  _, file_hp, variables = official.read_official_checkpoint(obj, fl.weights, hparams=cfg_hp,
                                                             model_name=name)
  merged = ml_collections.ConfigDict(cfg.to_dict())
  merged.model.update({k: v for k, v in file_hp.items() if k not in ("image_shape", "num_bins")})
  return config_from_json(merged.to_json()), file_hp, variables


def _as_init_tree(model, variables):
  """The converted variables cast to the dtypes of ``model.init`` (ValueError if their tree
  differs: the checkpoint would not restore)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  x = jnp.zeros((1,) + tuple(model.image_shape), jnp.uint8)
  abstract = jax.eval_shape(lambda r: model.init(r, x), jax.random.key(0))
  a_paths = {jax.tree_util.keystr(p): s for p, s in jax.tree_util.tree_leaves_with_path(abstract)}
  v_paths = {jax.tree_util.keystr(p): np.shape(s)
             for p, s in jax.tree_util.tree_leaves_with_path(variables)}
  diff = sorted(set(a_paths) ^ set(v_paths)) or sorted(
      p for p in a_paths if tuple(a_paths[p].shape) != tuple(v_paths[p]))
  if diff:
    raise ValueError(f"the converted variables differ from the model's at {diff[:4]}")
  return jax.tree.map(lambda s, v: jnp.asarray(v, s.dtype), abstract, variables)


def run_import(fl) -> int:
  from dgmjax.train import checkpoint as ckpt_lib
  path = fl.checkpoint
  if not os.path.isfile(path):
    raise usage_error(f"checkpoint file not found: {path}")
  if os.path.exists(fl.workdir) and ckpt_lib.has_checkpoint(fl.workdir):
    raise usage_error(f"{fl.workdir} already holds a checkpoint; import into a new or empty "
                 f"--workdir")
  import jax
  from dgmjax import models
  from dgmjax.convert import official
  from dgmjax.convert import common as convert_common
  from dgmjax.train import lock as lock_lib
  from dgmjax.train import optim as optim_lib
  from dgmjax.train import state as state_lib
  from dgmjax.train.experiment import image_meta
  obj = convert_common.load_checkpoint(path)
  name = official.detect_format(obj)
  cfg, hp, variables = _import_config(fl, name, obj)
  model = models.create(name, **hp)
  variables = _as_init_tree(model, variables)
  tx = optim_lib.make_optimizer(cfg.optim, cfg.train.num_steps, cfg.train.grad_accum)
  state = state_lib.replicate(state_lib.create_state(variables, tx), state_lib.data_mesh())
  # Which weights were taken, only where the file offers a choice (an LMConv file with EMA
  # weights); the official --ema default stores none, and Glow/NVAE files one set.
  choice = ({"weights": fl.weights} if name == "lmconv" and "ema_state_dict" in obj else {})
  meta = {"data": {"epoch": 0, "index": 0}, "best_test_bpd": None, "config": cfg.to_json(),
          "image": image_meta(model), "imported_from": os.path.abspath(path), "format": name,
          **choice}
  os.makedirs(fl.workdir, exist_ok=True)
  with lock_lib.WorkdirLock(fl.workdir, enabled=jax.process_index() == 0):
    checkpointer = ckpt_lib.Checkpointer(fl.workdir, keep=cfg.train.keep_checkpoints)
    try:
      checkpointer.save(0, state, meta)
      checkpointer.wait()
    finally:
      checkpointer.close()
    if jax.process_index() == 0:
      tmp = os.path.join(fl.workdir, CONFIG_FILE + ".tmp")
      with open(tmp, "w", encoding="utf-8") as f:
        f.write(cfg.to_json(indent=2))
      os.replace(tmp, os.path.join(fl.workdir, CONFIG_FILE))
  n_params = sum(int(a.size) for a in jax.tree.leaves(variables["params"]))
  print_json({"workdir": fl.workdir, "model": name, "format": name, **choice,
          "params": n_params, "data": cfg.data.name, "config": os.path.join(fl.workdir,
                                                                           CONFIG_FILE)})
  return 0
