"""``dgmjax sample``: samples with the model's temperatures, LMConv orders, NVAE BN
re-adjustment stored beside the checkpoints."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil

from dgmjax.commands.workdirs import (READJUST_DIR, absl_flags, check_positive_float,
                                      check_positive_int, config_for, define_sample_flags,
                                      need_model, require_checkpoint, restore, usage_error)


# ----------------------------------------------------------------------------- sample

def define_temperatures(fl) -> None:
  flags = absl_flags()
  flags.DEFINE_float("mixture_temperature", None, "LMConv (mixture head): the official "
                     "sampler's mixture temperature, > 0", flag_values=fl)
  flags.DEFINE_float("logistic_temperature", None, "LMConv (mixture head): the official "
                     "sampler's logistic temperature, > 0", flag_values=fl)


def define_sample(fl) -> None:
  define_sample_flags(fl)
  flags = absl_flags()
  flags.DEFINE_string("order", None, "LMConv: generation order (e.g. s_curve, hilbert:4; "
                      "default the first configured)", flag_values=fl)
  define_temperatures(fl)
  flags.DEFINE_string("group_temperatures", None, "NVAE: one temperature per latent group "
                      "in decoder order, comma-separated (instead of --temperature)",
                      flag_values=fl)
  flags.DEFINE_bool("readjust_bn", False, "NVAE: sample with BN statistics re-estimated from "
                    "prior samples at --temperature (stored in WORKDIR/readjusted_bn, reused)",
                    flag_values=fl)
  flags.DEFINE_integer("readjust_steps", 500, "NVAE --readjust_bn: sampling passes",
                       flag_values=fl)
  flags.DEFINE_integer("readjust_batch", 16, "NVAE --readjust_bn: images per sampling pass",
                       flag_values=fl)


def check_temperatures(fl) -> None:
  for k in ("temperature", "mixture_temperature", "logistic_temperature"):
    check_positive_float(k, getattr(fl, k))


def group_temperatures(fl, cfg):
  """``--group_temperatures "1,1,0.5"`` -> (1.0, 1.0, 0.5) (NVAE; the model checks the
  count), or None when not given; UsageError for a malformed list or both temperatures."""
  text = getattr(fl, "group_temperatures", None)
  if text is None:
    return None
  need_model(cfg, ("nvae",), "--group_temperatures")
  if fl.temperature is not None:
    raise usage_error("give --temperature or --group_temperatures, not both")
  try:
    values = tuple(float(t) for t in text.split(","))
  except ValueError:
    raise usage_error(f"--group_temperatures must be comma-separated floats > 0, one per "
                      f"latent group; got {text!r}") from None
  for v in values:
    check_positive_float("group_temperatures", v)
  return values


def lmconv_kwargs(fl, cfg) -> dict:
  kw = {}
  for k in ("mixture_temperature", "logistic_temperature"):
    v = getattr(fl, k)
    if v is not None:
      kw[k] = float(v)
  order = getattr(fl, "order", None)
  if kw or order is not None:
    need_model(cfg, ("lmconv",), "--order / --mixture_temperature / --logistic_temperature")
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
  saved there. Returns (stats, path, reused). ValueError for a non-finite statistic. A
  stored one that does not restore (damaged) is re-estimated, with one warning naming it."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  from dgmjax.nvae.model import READJUSTED
  model = exp.model
  variables = state.variables(ema=True)
  t = "_".join(f"{v:g}" for v in temperature) if isinstance(temperature, tuple) else \
      f"{temperature:g}"
  key = (f"step{int(state.step)}-t{t}-n{num}-i{iters}-"
         f"{_fingerprint({'p': variables['params'], 'b': variables['batch_stats']})}")
  path = os.path.abspath(os.path.join(workdir, READJUST_DIR, key))
  ckpt = ocp.StandardCheckpointer()
  try:
    if os.path.exists(path):
      try:
        stats = ckpt.restore(path, {READJUSTED: variables["batch_stats"]})
        for p, leaf in jax.tree_util.tree_leaves_with_path(stats):
          if not np.all(np.isfinite(np.asarray(leaf))):
            raise ValueError(f"non-finite statistic at {jax.tree_util.keystr(p)}")
        return stats, path, True
      except Exception as e:  # pylint: disable=broad-except  (a damaged cache: rebuild it)
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        logging.getLogger("dgmjax").warning(
            "damaged BN re-adjustment cache %s (%s): re-estimating it", path, reason)
        if jax.process_index() == 0:
          if os.path.isdir(path):
            shutil.rmtree(path)
          else:
            os.remove(path)
    stats = model.readjust_bn(variables, jax.random.fold_in(jax.random.key(0), 17), num=num,
                              temperature=temperature, iters=iters)
    ckpt.save(path, stats, force=True)
    ckpt.wait_until_finished()
  finally:
    ckpt.close()
  return stats, path, False


def sample_batches(exp, variables, num: int, rng, batch: int, what: str = "sampling",
                   progress: bool = True, **kwargs):
  """Yields uint8 [n,H,W,C] batches that together are ``num`` samples, drawn ``batch``
  images per program, so device memory is bounded by ``batch`` whatever ``num`` is (one
  compile: the last batch is drawn whole and cut to n). Batch i uses the key
  fold_in(rng, i); a single batch (num <= batch) uses rng itself, so small draws equal
  ``loop.draw_samples``. A class-conditional model cycles through its classes over the
  whole draw. Progress (images) goes to stderr when ``progress``."""
  import jax
  import numpy as np
  from tqdm import tqdm

  from dgmjax.train import loop
  if num <= batch:
    yield loop.draw_samples(exp, variables, num, rng, **kwargs)
    return
  conditional = loop.is_conditional(exp.model) and "y" not in kwargs
  with tqdm(total=num, desc=what, unit="img", leave=False,
            disable=not progress or jax.process_index() != 0) as bar:
    for i in range(-(-num // batch)):
      extra = {"y": (np.arange(batch) + i * batch) % exp.model.num_classes} if conditional \
          else {}
      take = min(batch, num - i * batch)
      yield loop.draw_samples(exp, variables, batch, jax.random.fold_in(rng, i), **kwargs,
                              **extra)[:take]
      bar.update(take)


def draw_in_batches(exp, variables, num: int, rng, batch: int, progress: bool = True,
                    **kwargs):
  """uint8 [num,H,W,C]: every batch of ``sample_batches`` in one array."""
  import numpy as np
  return np.concatenate(list(sample_batches(exp, variables, num, rng, batch,
                                            progress=progress, **kwargs)))


def run_sample(fl) -> int:
  check_positive_int("num", fl.num)
  check_positive_int("batch", fl.batch)
  check_temperatures(fl)
  check_positive_int("readjust_steps", fl.readjust_steps)
  check_positive_int("readjust_batch", fl.readjust_batch)
  require_checkpoint(fl.workdir)
  cfg = config_for(fl)
  kwargs = lmconv_kwargs(fl, cfg)
  if fl.readjust_bn:
    need_model(cfg, ("nvae",), "--readjust_bn")
  import jax
  from dgmjax import imageio
  exp, state = restore(fl, cfg)
  if "order" in kwargs:
    exp.model._order(kwargs["order"])  # pylint: disable=protected-access  (checks the spec)
  if fl.temperature is not None:
    kwargs["temperature"] = float(fl.temperature)
  per_group = group_temperatures(fl, cfg)
  if per_group is not None:
    exp.model.group_temperatures(per_group)    # one line when the count is wrong
    kwargs["temperature"] = per_group
  variables = state.variables(ema=True)
  info = {}
  if fl.readjust_bn:
    stats, path, reused = readjusted_stats(exp, state, fl.workdir, kwargs.get("temperature", 1.0),
                                           fl.readjust_batch, fl.readjust_steps)
    variables = {**variables, **stats}
    kwargs["readjusted_bn"] = True
    info = {"readjusted_bn": path, "reused": reused}
  x = draw_in_batches(exp, variables, fl.num, jax.random.key(fl.seed), fl.batch, **kwargs)
  if jax.process_index() == 0:
    out = fl.out or os.path.join(fl.workdir, "samples")
    png = imageio.save_grid(os.path.join(out, "samples.png"), x, exp.num_bins)
    npz = imageio.save_npz(os.path.join(out, "samples.npz"), x, exp.num_bins)
    print(json.dumps({"png": png, "npz": npz, "num": int(x.shape[0]), **info}))
  return 0
