"""The researcher's commands: ``dgmjax import|eval|sample|complete|interpolate``.

    dgmjax import --checkpoint FILE --workdir DIR [--config CFG] [--weights ema|model]
    dgmjax eval   --workdir DIR [--iw_samples K] [--orders s_curve:all]
    dgmjax sample --workdir DIR [--order NAME] [--temperature T] [--mixture_temperature T]
                  [--logistic_temperature T] [--readjust_bn [--readjust_steps N]]
    dgmjax complete --workdir DIR --observed top|bottom|left|right|center|random:P|MASK.png
                  [--order NAME] [--num N]                                     (LMConv)
    dgmjax interpolate --workdir DIR [--num N] [--pairs P]                 (Glow, NVAE)

Flag definitions and run functions registered in ``dgmjax.cli.COMMANDS``; the work itself
is done by ``dgmjax.workflows`` and the models. This module imports only the standard
library at load time (``dgmjax --help`` stays fast).

Configs: ``--config`` is optional for eval/sample/complete/interpolate when the workdir
stores one: ``dgmjax train`` and ``dgmjax import`` keep ``config.to_json()`` in every
checkpoint's meta (``meta["config"]``), and ``import`` also writes ``DIR/config.json``.

An imported workdir holds one regular checkpoint, step 0: a ``TrainState`` whose params
(and EMA params) are the file's weights, a fresh optimiser state of the config's
optimiser, and the file's BN statistics / constants as the model state; its meta records
the source file. ``dgmjax train`` on it fine-tunes from there.

NVAE BN re-adjustment (``sample --readjust_bn``) is stored beside the checkpoints, never
inside them: ``DIR/readjusted_bn/<key>/`` is an orbax item holding the tree
``readjusted_batch_stats`` (the model's named state), keyed by the checkpoint step, the
re-adjustment settings and a fingerprint of the weights, written atomically (orbax
renames a finished temporary directory), and restored on later calls with the same key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os

CONFIG_FILE = "config.json"
READJUST_DIR = "readjusted_bn"
FILE_DATA = "file"          # data settings derived from the checkpoint file's arguments


def _usage(msg: str):
  from dgmjax.cli import UsageError
  return UsageError(msg)


def _flags():
  from absl import flags
  return flags


def _print(obj) -> None:
  from dgmjax import cli
  cli._print(obj)  # pylint: disable=protected-access


def _positive_float(name: str, v) -> None:
  if v is not None and not (math.isfinite(v) and v > 0):
    raise _usage(f"--{name} must be a finite number > 0; got {v}")


def _positive_int(name: str, v) -> None:
  if v is not None and v < 1:
    raise _usage(f"--{name} must be >= 1; got {v}")


# ---------------------------------------------------------------------------- configs

def _config_from_json(text: str):
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
  cfg = ml_collections.ConfigDict(d)
  cfg.lock()
  return cfg


def stored_config(workdir: str, which: str = "best"):
  """The config a workdir stores, or None: ``meta["config"]`` of the newest checkpoint of
  the kinds ``restore_for_eval(which)`` looks at, else ``WORKDIR/config.json``."""
  import orbax.checkpoint as ocp
  from dgmjax.train import checkpoint as ckpt_lib
  kinds = ("best", "last") if which == "best" else ("last",)
  checkpointer = ckpt_lib.Checkpointer(workdir, create=False)
  absl_log = logging.getLogger("absl")
  level = absl_log.level
  absl_log.setLevel(logging.ERROR)       # orbax notes the state item it was not asked for
  try:
    for kind in kinds:
      mgr = checkpointer.manager(kind)
      for step in sorted(mgr.all_steps(), reverse=True):
        try:
          meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception:  # pylint: disable=broad-except  (unreadable: try the next one)
          continue
        if isinstance(meta, dict) and isinstance(meta.get("config"), str):
          return _config_from_json(meta["config"])
  finally:
    absl_log.setLevel(level)
    checkpointer.close()
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      return _config_from_json(f.read())
  return None


def config_for(fl, which: str = "best"):
  """``--config`` when given, else the workdir's stored config (UsageError if none)."""
  if fl.config is not None:
    return fl.config
  cfg = stored_config(fl.workdir, which)
  if cfg is None:
    raise _usage(f"{fl.workdir} stores no config (checkpoints written before configs were "
                 f"stored): pass --config path/to/config.py[:variant]")
  return cfg


def _restore(fl, cfg):
  from dgmjax.train import loop
  return loop.restore_for_eval(cfg, fl.workdir, getattr(fl, "which", "best"))


def _need_model(cfg, names, what: str) -> None:
  name = cfg.model.name
  if name not in names:
    raise _usage(f"{what} needs a {' or '.join(names)} model; {name!r} was given")


# ----------------------------------------------------------------------------- import

def define_import(fl) -> None:
  flags = _flags()
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


def _data_shape(cfg):
  """(image_shape, num_bins) the config's data deliver to the model (as ``loop.build``)."""
  from dgmjax import data as data_lib
  d = cfg.data
  test = data_lib.load(d.name, "test", data_dir=d.data_dir or None, n_bits=d.n_bits,
                       pad_to=d.pad_to)
  return tuple(test.image_shape), (2 if d.binarize else test.num_bins)


def _show(v) -> str:
  return str(list(v)) if isinstance(v, (list, tuple)) else repr(v)


def _import_config(fl, name: str, obj):
  """(config to store, create() kwargs, variables) for the loaded file ``obj``."""
  import ml_collections
  from dgmjax import workflows
  from dgmjax.train import config as config_lib
  from dgmjax.train import loop
  cfg = fl.config
  if cfg is None:
    if name == "glow":
      raise _usage("a rosinality/glow-pytorch file stores no hyper-parameters: pass --config "
                   "with the model's architecture and data")
    name_, file_hp, variables = workflows.read_official_checkpoint(obj, fl.weights)
    args = obj["args"]
    cfg = config_lib.base_config(name, "digits")
    cfg.data.update(data_from_args(name, args))
    model_hp = {k: v for k, v in file_hp.items() if k not in ("image_shape", "num_bins")}
    if name == "nvae" and fl.dmol_edge:
      model_hp["dmol_edge"] = fl.dmol_edge
    cfg.model.update(model_hp)
    cfg = config_lib.finalize(cfg)
    return _config_from_json(cfg.to_json()), file_hp, variables
  if cfg.model.name != name:
    raise _usage(f"the checkpoint holds a {name!r} model; --config describes "
                 f"{cfg.model.name!r}")
  if fl.dmol_edge:
    raise _usage("--dmol_edge is for imports without --config; set config.model.dmol_edge")
  shape, num_bins = _data_shape(cfg)
  cfg_hp = dict(loop.model_hparams(cfg), image_shape=shape, num_bins=num_bins)
  _, file_hp, variables = workflows.read_official_checkpoint(obj, fl.weights, hparams=cfg_hp,
                                                             model_name=name)
  bad = workflows.hparams_conflicts(file_hp, cfg_hp)
  if bad:
    parts = ", ".join(f"{k} (file {_show(file_hp[k])}, config {_show(cfg_hp[k])})"
                      for k in bad)
    raise _usage(f"--config disagrees with the checkpoint's hyper-parameters: {parts}")
  merged = ml_collections.ConfigDict(cfg.to_dict())
  merged.model.update({k: v for k, v in file_hp.items() if k not in ("image_shape", "num_bins")})
  return _config_from_json(merged.to_json()), file_hp, variables


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
    raise _usage(f"checkpoint file not found: {path}")
  if os.path.exists(fl.workdir) and ckpt_lib.has_checkpoint(fl.workdir):
    raise _usage(f"{fl.workdir} already holds a checkpoint; import into a new or empty "
                 f"--workdir")
  import jax
  from dgmjax import models, workflows
  from dgmjax.convert import common as convert_common
  from dgmjax.train import lock as lock_lib
  from dgmjax.train import optim as optim_lib
  from dgmjax.train import state as state_lib
  obj = convert_common.load_checkpoint(path)
  name = workflows.detect_format(obj)
  cfg, hp, variables = _import_config(fl, name, obj)
  model = models.create(name, **hp)
  variables = _as_init_tree(model, variables)
  tx = optim_lib.make_optimizer(cfg.optim, cfg.train.num_steps, cfg.train.grad_accum)
  state = state_lib.replicate(state_lib.create_state(variables, tx), state_lib.data_mesh())
  meta = {"data": {"epoch": 0, "index": 0}, "best_test_bpd": None, "config": cfg.to_json(),
          "imported_from": os.path.abspath(path), "format": name, "weights": fl.weights}
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
  _print({"workdir": fl.workdir, "model": name, "format": name, "weights": fl.weights,
          "params": n_params, "data": cfg.data.name, "config": os.path.join(fl.workdir,
                                                                           CONFIG_FILE)})
  return 0


# ------------------------------------------------------------------------------- eval

def define_eval(fl) -> None:
  from dgmjax import cli
  cli._define_eval(fl)  # pylint: disable=protected-access
  flags = _flags()
  flags.DEFINE_integer("iw_samples", None, "NVAE: the importance-weighted bound with K "
                       "posterior samples per image (the papers use 1000)", flag_values=fl)
  flags.DEFINE_integer("chunk_size", None, "NVAE with --iw_samples: samples per forward pass "
                       "(default: about 256 images per pass)", flag_values=fl)
  flags.DEFINE_string("orders", None, "LMConv: comma-separated order specs (e.g. s_curve:all, "
                      "the paper's 8-order ensemble); reports the ensemble and each order",
                      flag_values=fl)


def _expand_orders(spec: str, h: int, w: int):
  """'s_curve:all,hilbert' -> (names, int32 [N, H*W])."""
  import numpy as np
  from dgmjax.lmconv import orders as orders_lib
  names, arrs = [], []
  for s in [s.strip() for s in spec.split(",") if s.strip()]:
    got = orders_lib.parse(s, h, w)
    base = s.split(":")[0]
    names += [f"{base}:{i}" for i in range(len(got))] if s.endswith(":all") else [s]
    arrs += got
  if not arrs:
    raise ValueError(f"--orders must name at least one order; got {spec!r}")
  return names, np.stack(arrs)


def _evaluate_many(exp, variables, fn):
  """Sums over the whole test split of ``fn(variables, x) -> [K, B]`` (nats), divided by
  the number of images: float64 [K]. Batching, sharding and the per-batch preprocessing
  key are those of ``loop.evaluate``."""
  import jax
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec
  from dgmjax import data as data_lib
  from dgmjax.train import state as state_lib
  cfg = exp.config
  rng = jax.random.key(cfg.train.seed + 7919)
  pre = exp.preprocess

  def step(v, batch, r):
    x, _ = state_lib.split_batch(batch)
    if pre is not None:
      x = pre(jax.random.fold_in(r, 1), x)
    return fn(v, x)

  f = jax.jit(step, out_shardings=NamedSharding(exp.mesh, PartitionSpec()))
  bs = cfg.train.eval_batch_size
  bs = max(bs - bs % exp.mesh.devices.size, exp.mesh.devices.size)
  total, count = None, 0
  for i, (batch, n_valid) in enumerate(data_lib.eval_batches(exp.test_data, bs)):
    out = np.asarray(f(variables, state_lib.shard_batches(batch, exp.mesh),
                       jax.random.fold_in(rng, i)), np.float64)[:, :n_valid].sum(axis=1)
    total = out if total is None else total + out
    count += n_valid
  return total / count


def _nats(exp, bpd: float) -> float:
  dims = getattr(exp.model, "num_dims", None) or math.prod(exp.model.image_shape)
  return float(bpd * dims * math.log(2.0))


def _bpd(exp, log_prob_nats: float) -> float:
  from dgmjax import images
  dims = getattr(exp.model, "num_dims", None) or exp.model.image_shape
  return float(images.bits_per_dim(log_prob_nats, dims))


def run_eval(fl) -> int:
  from dgmjax import cli
  _positive_int("iw_samples", fl.iw_samples)
  _positive_int("chunk_size", fl.chunk_size)
  if fl.chunk_size is not None and fl.iw_samples is None:
    raise _usage("--chunk_size goes with --iw_samples")
  cli._require_checkpoint(fl.workdir)  # pylint: disable=protected-access
  cfg = config_for(fl, fl.which)
  if fl.iw_samples is not None:
    _need_model(cfg, ("nvae",), "--iw_samples")
  if fl.orders is not None:
    _need_model(cfg, ("lmconv",), "--orders")
  import jax
  from dgmjax.train import loop
  exp, state = _restore(fl, cfg)
  variables = state.variables(ema=True)
  model = exp.model
  out = {"step": int(state.step), "checkpoint": fl.which}
  if fl.orders is not None:
    import jax.numpy as jnp
    h, w, _ = model.image_shape
    names, arrs = _expand_orders(fl.orders, h, w)
    stacked = jnp.asarray(arrs)

    def fn(v, x):
      per = jax.lax.map(lambda o: model.log_prob(v, x, order=o), stacked)     # [N, B]
      ens = jax.nn.logsumexp(per, axis=0) - math.log(per.shape[0])
      return jnp.concatenate([ens[None], per], axis=0)

    sums = _evaluate_many(exp, variables, fn)
    bpd = _bpd(exp, sums[0])
    out.update(orders=fl.orders,
               per_order_bpd={n: _bpd(exp, s) for n, s in zip(names, sums[1:])},
               per_order_nats={n: float(-s) for n, s in zip(names, sums[1:])})
  elif fl.iw_samples is not None:
    k, chunk = fl.iw_samples, fl.chunk_size
    sums = _evaluate_many(exp, variables, lambda v, x: model.log_prob(
        v, x, jax.random.key(cfg.train.seed + 104729), iw_samples=k, chunk_size=chunk)[None])
    bpd = _bpd(exp, sums[0])
    out["iw_samples"] = k
  else:
    bpd = loop.evaluate(exp, variables)
  out.update(test_bpd=bpd, test_nats=_nats(exp, bpd))
  _print(out)
  return 0


# ----------------------------------------------------------------------------- sample

def _define_temperatures(fl) -> None:
  flags = _flags()
  flags.DEFINE_float("mixture_temperature", None, "LMConv (mixture head): the official "
                     "sampler's mixture temperature, > 0", flag_values=fl)
  flags.DEFINE_float("logistic_temperature", None, "LMConv (mixture head): the official "
                     "sampler's logistic temperature, > 0", flag_values=fl)


def define_sample(fl) -> None:
  from dgmjax import cli
  cli._define_sample(fl)  # pylint: disable=protected-access
  flags = _flags()
  flags.DEFINE_string("order", None, "LMConv: generation order (e.g. s_curve, hilbert:4; "
                      "default the first configured)", flag_values=fl)
  _define_temperatures(fl)
  flags.DEFINE_bool("readjust_bn", False, "NVAE: sample with BN statistics re-estimated from "
                    "prior samples at --temperature (stored in WORKDIR/readjusted_bn, reused)",
                    flag_values=fl)
  flags.DEFINE_integer("readjust_steps", 500, "NVAE --readjust_bn: sampling passes",
                       flag_values=fl)
  flags.DEFINE_integer("readjust_batch", 16, "NVAE --readjust_bn: images per sampling pass",
                       flag_values=fl)


def _check_temperatures(fl) -> None:
  for k in ("temperature", "mixture_temperature", "logistic_temperature"):
    _positive_float(k, getattr(fl, k))


def _lmconv_kwargs(fl, cfg) -> dict:
  kw = {}
  for k in ("mixture_temperature", "logistic_temperature"):
    v = getattr(fl, k)
    if v is not None:
      kw[k] = float(v)
  order = getattr(fl, "order", None)
  if kw or order is not None:
    _need_model(cfg, ("lmconv",), "--order / --mixture_temperature / --logistic_temperature")
  if order is not None:
    kw["order"] = order
  return kw


def _fingerprint(tree) -> str:
  import jax
  import numpy as np
  h = hashlib.sha1()
  for leaf in jax.tree.leaves(tree):
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()[:12]


def readjusted_stats(exp, state, workdir: str, temperature: float, num: int, iters: int):
  """``{"readjusted_batch_stats": tree}`` for the checkpoint ``state``: restored from
  ``WORKDIR/readjusted_bn/<key>`` when present, else computed (``model.readjust_bn``) and
  saved there. Returns (stats, path, reused). ValueError for a non-finite statistic."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  from dgmjax.nvae.model import READJUSTED
  model = exp.model
  variables = state.variables(ema=True)
  key = (f"step{int(state.step)}-t{temperature:g}-n{num}-i{iters}-"
         f"{_fingerprint({'p': variables['params'], 'b': variables['batch_stats']})}")
  path = os.path.abspath(os.path.join(workdir, READJUST_DIR, key))
  ckpt = ocp.StandardCheckpointer()
  try:
    if os.path.isdir(path):
      stats = ckpt.restore(path, ocp.args.StandardRestore({READJUSTED: variables["batch_stats"]}))
      for p, leaf in jax.tree_util.tree_leaves_with_path(stats):
        if not np.all(np.isfinite(np.asarray(leaf))):
          raise ValueError(f"stored BN re-adjustment {path} has a non-finite statistic at "
                           f"{jax.tree_util.keystr(p)}; delete it to re-estimate")
      return stats, path, True
    stats = model.readjust_bn(variables, jax.random.fold_in(jax.random.key(0), 17), num=num,
                              temperature=temperature, iters=iters)
    ckpt.save(path, stats)
    ckpt.wait_until_finished()
  finally:
    ckpt.close()
  return stats, path, False


def run_sample(fl) -> int:
  from dgmjax import cli
  _positive_int("num", fl.num)
  _check_temperatures(fl)
  _positive_int("readjust_steps", fl.readjust_steps)
  _positive_int("readjust_batch", fl.readjust_batch)
  cli._require_checkpoint(fl.workdir)  # pylint: disable=protected-access
  cfg = config_for(fl)
  kwargs = _lmconv_kwargs(fl, cfg)
  if fl.readjust_bn:
    _need_model(cfg, ("nvae",), "--readjust_bn")
  import jax
  from dgmjax import imageio
  from dgmjax.train import loop
  exp, state = _restore(fl, cfg)
  if "order" in kwargs:
    exp.model._order(kwargs["order"])  # pylint: disable=protected-access  (checks the spec)
  if fl.temperature is not None:
    kwargs["temperature"] = float(fl.temperature)
  variables = state.variables(ema=True)
  info = {}
  if fl.readjust_bn:
    stats, path, reused = readjusted_stats(exp, state, fl.workdir, kwargs.get("temperature", 1.0),
                                           fl.readjust_batch, fl.readjust_steps)
    variables = {**variables, **stats}
    kwargs["readjusted_bn"] = True
    info = {"readjusted_bn": path, "reused": reused}
  x = loop.draw_samples(exp, variables, fl.num, jax.random.key(fl.seed), **kwargs)
  if jax.process_index() == 0:
    out = fl.out or os.path.join(fl.workdir, "samples")
    png = imageio.save_grid(os.path.join(out, "samples.png"), x, exp.num_bins)
    npz = imageio.save_npz(os.path.join(out, "samples.npz"), x, exp.num_bins)
    print(json.dumps({"png": png, "npz": npz, "num": int(x.shape[0]), **info}))
  return 0


# --------------------------------------------------------------------------- pictures

def _rgb255(x, num_bins: int):
  """int [..., H, W, C] levels -> uint8 [..., H, W, 3] for display."""
  import numpy as np
  from dgmjax import imageio
  img = imageio.to_uint8_255(x, num_bins)
  return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def _save_rows(path: str, rows) -> str:
  """rows: uint8 [R, K, H, W, 3] -> one PNG, R rows of K images, small images upscaled."""
  import numpy as np
  from dgmjax import imageio
  rows = np.asarray(rows)
  r, k, h, w, c = rows.shape
  grid = imageio.make_grid(rows.reshape(r * k, h, w, c), 256, ncol=k)
  return imageio.save_png(path, grid, scale=max(1, 32 // max(h, 1)))


def _test_images(exp, n: int, seed: int):
  """The first ``n`` test images (binarised as the model sees them): uint8 [n,H,W,C]."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  n = min(n, len(exp.test_data))
  x = exp.test_data.get(np.arange(n))
  if exp.preprocess is not None:
    x = np.asarray(exp.preprocess(jax.random.key(seed), jnp.asarray(x)))
  return np.asarray(x, np.uint8)


# --------------------------------------------------------------------------- complete

def define_complete(fl) -> None:
  from dgmjax import cli
  cli._define_eval(fl)  # pylint: disable=protected-access  (--which)
  flags = _flags()
  flags.DEFINE_string("observed", None, "the observed region: top | bottom | left | right | "
                      "center | random:P | MASK.png (white = observed)", flag_values=fl)
  flags.DEFINE_string("order", None, "base generation order (default the first configured); "
                      "the observed pixels are moved first", flag_values=fl)
  flags.DEFINE_integer("num", 4, "completions per image", flag_values=fl)
  flags.DEFINE_integer("images", 8, "test images to complete (the first ones)", flag_values=fl)
  flags.DEFINE_float("temperature", None, "sampling temperature, > 0", flag_values=fl)
  _define_temperatures(fl)
  flags.DEFINE_integer("seed", 0, "seed (random masks, binarisation, sampling)", flag_values=fl)
  flags.DEFINE_string("out", None, "output directory (default WORKDIR/completions)",
                      flag_values=fl)


def run_complete(fl) -> int:
  from dgmjax import cli
  _positive_int("num", fl.num)
  _positive_int("images", fl.images)
  _check_temperatures(fl)
  cli._require_checkpoint(fl.workdir)  # pylint: disable=protected-access
  cfg = config_for(fl, fl.which)
  _need_model(cfg, ("lmconv",), "complete")
  kwargs = _lmconv_kwargs(fl, cfg)
  kwargs.pop("order", None)
  if fl.temperature is not None:
    kwargs["temperature"] = float(fl.temperature)
  import jax
  import numpy as np
  from dgmjax import workflows
  exp, state = _restore(fl, cfg)
  h, w, _ = exp.model.image_shape
  mask = workflows.observed_mask(fl.observed, h, w, rng=fl.seed)
  x = _test_images(exp, fl.images, fl.seed)
  done, bpd = workflows.complete(exp.model, state.variables(ema=True), x, mask, fl.order,
                                 jax.random.key(fl.seed), num=fl.num, **kwargs)
  done, bpd = np.asarray(done), np.asarray(bpd, np.float64)
  observed = _rgb255(x, exp.num_bins)
  observed[:, ~mask] = np.array([70, 110, 200], np.uint8)        # the hidden region, blue
  rows = np.concatenate([observed[:, None], _rgb255(done, exp.num_bins),
                         _rgb255(x, exp.num_bins)[:, None]], axis=1)
  out = fl.out or os.path.join(fl.workdir, "completions")
  tag = "mask" if fl.observed.lower().endswith(".png") else fl.observed.replace(":", "")
  png = None
  if jax.process_index() == 0:
    png = _save_rows(os.path.join(out, f"complete_{tag}.png"), rows)
  n_hidden = int((~mask).sum())
  c = exp.model.image_shape[2]
  _print({"png": png, "observed": fl.observed, "order": fl.order or "configured[0]",
          "images": int(x.shape[0]), "num": fl.num, "hidden_pixels": n_hidden,
          "hidden_bpd": float(bpd.mean()),
          "hidden_nats": float(bpd.mean() * n_hidden * c * math.log(2.0)),
          "hidden_bpd_per_image": [round(float(b), 5) for b in bpd]})
  return 0


# ------------------------------------------------------------------------ interpolate

def define_interpolate(fl) -> None:
  from dgmjax import cli
  cli._define_eval(fl)  # pylint: disable=protected-access  (--which)
  flags = _flags()
  flags.DEFINE_integer("num", 8, "images along each path (both ends included)",
                       flag_values=fl)
  flags.DEFINE_integer("pairs", 4, "pairs of test images (images 0-1, 2-3, ...)",
                       flag_values=fl)
  flags.DEFINE_integer("seed", 0, "seed (binarisation of the test images)", flag_values=fl)
  flags.DEFINE_string("out", None, "output directory (default WORKDIR/interpolations)",
                      flag_values=fl)


def run_interpolate(fl) -> int:
  from dgmjax import cli
  _positive_int("num", fl.num)
  _positive_int("pairs", fl.pairs)
  cli._require_checkpoint(fl.workdir)  # pylint: disable=protected-access
  cfg = config_for(fl, fl.which)
  _need_model(cfg, ("glow", "nvae"), "interpolate")
  import jax
  import numpy as np
  exp, state = _restore(fl, cfg)
  x = _test_images(exp, 2 * fl.pairs, fl.seed)
  if x.shape[0] < 2:
    raise _usage("interpolate needs at least 2 test images")
  p = x.shape[0] // 2
  x1, x2 = x[0:2 * p:2], x[1:2 * p:2]
  model, num = exp.model, fl.num
  paths = np.asarray(jax.jit(lambda v, a, b: model.interpolate(v, a, b, num))(
      state.variables(ema=True), x1, x2))                                   # [P,num,H,W,C]
  rows = np.concatenate([_rgb255(x1, exp.num_bins)[:, None], _rgb255(paths, exp.num_bins),
                         _rgb255(x2, exp.num_bins)[:, None]], axis=1)
  out = fl.out or os.path.join(fl.workdir, "interpolations")
  png = None
  if jax.process_index() == 0:
    png = _save_rows(os.path.join(out, "interpolate.png"), rows)
  _print({"png": png, "pairs": int(p), "num": num, "model": cfg.model.name})
  return 0
