"""``dgmjax fid``: the Fréchet Inception distance of a workdir's samples to a reference.

    dgmjax fid --workdir W --inception pt_inception-2015-12-05-6726825d.pth
               [--num 50000] [--reference DATASET:SPLIT | STATS.npz] [--temperature T]

Samples ``--num`` images from the workdir's best checkpoint ``--batch`` at a time, takes
their Inception pool3 features under ``jit`` (``dgmjax.fid``) and keeps only running
statistics, so memory does not grow with ``--num``. The reference is a dataset split,
prepared as the model's data are (the config's ``n_bits``, ``pad_to``), whose statistics
are cached in ``W/fid/`` keyed by the split, its levels and the weights file; or a
pytorch-fid ``.npz`` (published statistics are used as they are). Both statistics files
are written in pytorch-fid's format. Prints one JSON line with ``fid``.
"""

from __future__ import annotations

import hashlib
import os

from dgmjax.commands.workdirs import (absl_flags, check_positive_float, check_positive_int,
                                      config_for, print_json, require_checkpoint, restore,
                                      usage_error)

FID_DIR = "fid"


def define_fid(fl) -> None:
  flags = absl_flags()
  flags.DEFINE_string("inception", None, "pytorch-fid's Inception weights file "
                      "(pt_inception-2015-12-05-6726825d.pth)", flag_values=fl)
  flags.DEFINE_integer("num", 50_000, "samples drawn (the papers use 50000)", flag_values=fl)
  flags.DEFINE_string("reference", None, "DATASET:SPLIT (statistics computed once and cached "
                      "in WORKDIR/fid) or a pytorch-fid STATS.npz; default: the config's "
                      "dataset, train split", flag_values=fl)
  flags.DEFINE_float("temperature", None, "sampling temperature, > 0 (models that take one)",
                     flag_values=fl)
  flags.DEFINE_integer("batch", 256, "images per sampling / feature program", flag_values=fl)
  flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=fl)


def _digest(path: str) -> str:
  h = hashlib.sha1()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()[:12]


def _feature_fn(num_bins: int):
  import jax

  from dgmjax.fid import inception
  return jax.jit(lambda params, x: inception.features(params, x, num_bins))


def _progress(total: int, what: str):
  import jax
  from tqdm import tqdm
  return tqdm(total=total, desc=what, unit="img", leave=False,
              disable=jax.process_index() != 0)


def sample_stats(exp, variables, params, num: int, batch: int, rng, **kwargs):
  """(mu, sigma) of the pool3 features of ``num`` samples drawn ``batch`` at a time
  (``sampling.sample_batches``)."""
  import numpy as np

  from dgmjax.commands.sampling import sample_batches
  from dgmjax.fid.frechet import RunningStats
  from dgmjax.fid.inception import FEATURES
  feats, stats = _feature_fn(exp.num_bins), RunningStats(FEATURES)
  size = min(batch, num)   # the feature program's batch: one compile, the last batch padded
  for x in sample_batches(exp, variables, num, rng, batch, "FID samples", **kwargs):
    padded = np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])
    stats.add(np.asarray(feats(params, padded))[:len(x)])
  return stats.finish()


def dataset_stats(cfg, name: str, split: str, params, num_bins: int, batch: int):
  """(mu, sigma) of the pool3 features of every image of ``name``'s ``split``, prepared
  with the config's ``n_bits`` and ``pad_to`` (binarised with a fixed key when the
  config binarises)."""
  import jax
  import numpy as np

  from dgmjax import data as data_lib
  from dgmjax.fid.frechet import RunningStats
  from dgmjax.fid.inception import FEATURES
  d = cfg.data
  images = data_lib.load(name, split, data_dir=d.data_dir or None, n_bits=d.n_bits,
                         pad_to=d.pad_to)
  feats, stats = _feature_fn(num_bins), RunningStats(FEATURES)
  n = len(images)
  with _progress(n, f"FID {name}:{split}") as bar:
    for i, start in enumerate(range(0, n, batch)):
      idx = np.arange(start, min(start + batch, n))
      x = images.get(np.concatenate([idx, np.full(batch - len(idx), idx[-1])]))
      if d.binarize:
        x = data_lib.binarize(jax.random.fold_in(jax.random.key(0), i), x, images.num_bins)
      stats.add(np.asarray(feats(params, x))[:len(idx)])
      bar.update(len(idx))
  return stats.finish()


def run_fid(fl) -> int:
  check_positive_int("num", fl.num)
  check_positive_int("batch", fl.batch)
  check_positive_float("temperature", fl.temperature)
  if fl.num < 2:
    raise usage_error("--num must be >= 2 (FID needs a covariance)")
  if not os.path.isfile(fl.inception):
    raise usage_error(f"--inception file not found: {fl.inception} (pytorch-fid's "
                 f"pt_inception-2015-12-05-6726825d.pth)")
  require_checkpoint(fl.workdir)
  cfg = config_for(fl)
  reference = fl.reference or f"{cfg.data.name}:train"
  import jax

  from dgmjax.convert.inception import load_inception
  from dgmjax.fid import frechet
  params = load_inception(fl.inception)
  exp, state = restore(fl, cfg)
  variables = state.variables(ema=True)
  out_dir = os.path.join(fl.workdir, FID_DIR)
  if reference.endswith(".npz"):
    ref_mu, ref_sigma = frechet.load_stats(reference)
    ref_path = reference
  else:
    name, _, split = reference.partition(":")
    if not split:
      raise usage_error(f"--reference must be DATASET:SPLIT or a .npz file; got {reference!r}")
    key = (f"{name.replace('/', '_')}-{split}-bins{exp.num_bins}-pad{cfg.data.pad_to}-"
           f"{_digest(fl.inception)}")
    ref_path = os.path.join(out_dir, key + ".npz")
    if os.path.isfile(ref_path):
      ref_mu, ref_sigma = frechet.load_stats(ref_path)
    else:
      ref_mu, ref_sigma = dataset_stats(cfg, name, split, params, exp.num_bins, fl.batch)
      if jax.process_index() == 0:
        frechet.save_stats(ref_path, ref_mu, ref_sigma)
  kwargs = {} if fl.temperature is None else {"temperature": float(fl.temperature)}
  mu, sigma = sample_stats(exp, variables, params, fl.num, fl.batch, jax.random.key(fl.seed),
                           **kwargs)
  t = "" if fl.temperature is None else f"-t{fl.temperature:g}"
  samples_path = os.path.join(out_dir, f"samples-step{int(state.step)}{t}-n{fl.num}.npz")
  if jax.process_index() == 0:
    frechet.save_stats(samples_path, mu, sigma)
  print_json({"fid": frechet.frechet_distance(mu, sigma, ref_mu, ref_sigma), "num": fl.num,
          "step": int(state.step), "reference": reference, "reference_stats": ref_path,
          "sample_stats": samples_path, **kwargs})
  return 0
