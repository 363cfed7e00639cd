"""``dgmjax eval``: bits/dim and nats per image; NVAE's importance-weighted bound
(``--iw_samples``), LMConv's order ensemble and single orders (``--orders``)."""

from __future__ import annotations

import math

from dgmjax.commands.workdirs import (absl_flags, check_positive_int, config_for, define_which,
                                      need_model, print_json, require_checkpoint, restore,
                                      usage_error)


# ------------------------------------------------------------------------------- eval

def define_eval(fl) -> None:
  define_which(fl)
  flags = absl_flags()
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
  from tqdm import tqdm
  total, count = None, 0
  with tqdm(total=len(exp.test_data), desc="evaluating", unit="img", leave=False,
            disable=jax.process_index() != 0) as bar:   # progress on stderr
    for i, (batch, n_valid) in enumerate(data_lib.eval_batches(exp.test_data, bs)):
      out = np.asarray(f(variables, state_lib.shard_batches(batch, exp.mesh),
                         jax.random.fold_in(rng, i)), np.float64)[:, :n_valid].sum(axis=1)
      total = out if total is None else total + out
      count += n_valid
      bar.update(n_valid)
  return total / count


def _nats(exp, bpd: float) -> float:
  """Bits/dim -> nats per image over the model's ``num_dims``."""
  return float(bpd * exp.model.num_dims * math.log(2.0))


def _bpd(exp, log_prob_nats: float) -> float:
  return float(exp.model.bits_per_dim(log_prob_nats))


def run_eval(fl) -> int:
  check_positive_int("iw_samples", fl.iw_samples)
  check_positive_int("chunk_size", fl.chunk_size)
  if fl.chunk_size is not None and fl.iw_samples is None:
    raise usage_error("--chunk_size goes with --iw_samples")
  require_checkpoint(fl.workdir)
  cfg = config_for(fl, fl.which)
  if fl.iw_samples is not None:
    need_model(cfg, ("nvae",), "--iw_samples")
  if fl.orders is not None:
    need_model(cfg, ("lmconv",), "--orders")
  import jax
  from dgmjax.train import loop
  exp, state = restore(fl, cfg)
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
  print_json(out)
  return 0
