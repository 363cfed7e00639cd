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


def _mean_over_test(exp, variables, fn):
  """float64 [K]: the mean over the whole test split of ``fn(variables, x, rng) -> [B, K]``
  (nats), by the one whole-split evaluator (``dgmjax.train.evaluator``: the batching,
  sharding and per-batch keys of ``loop.evaluate``), with a progress bar on stderr."""
  from dgmjax.train import evaluator
  step = evaluator.batch_step(fn, mesh=exp.mesh, preprocess=exp.preprocess)
  return evaluator.evaluate_split(exp, variables, step, progress="evaluating")


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
  import jax.numpy as jnp
  from dgmjax.train import loop
  exp, state = restore(fl, cfg, need=("test",))
  variables = state.variables(ema=True)
  model = exp.model
  out = {"step": int(state.step), "checkpoint": fl.which}
  if fl.orders is not None:
    from dgmjax.lmconv import ensemble
    names, orders = ensemble.parse_orders(fl.orders, *model.image_shape[:2])

    def fn(v, x, rng, **labels):   # [B, 1 + N]: the ensemble, then each order
      per = ensemble.per_order_log_prob(model, v, x, orders)             # [N, B]
      return jnp.concatenate([ensemble.log_mean_exp(per)[None], per], axis=0).T

    means = _mean_over_test(exp, variables, fn)
    bpd = _bpd(exp, means[0])
    out.update(orders=fl.orders,
               per_order_bpd={n: _bpd(exp, s) for n, s in zip(names, means[1:])},
               per_order_nats={n: float(-s) for n, s in zip(names, means[1:])})
  elif fl.iw_samples is not None:
    k, chunk = fl.iw_samples, fl.chunk_size
    means = _mean_over_test(exp, variables, lambda v, x, rng, **labels: model.log_prob(
        v, x, jax.random.key(cfg.train.seed + 104729), iw_samples=k, chunk_size=chunk,
        **labels)[:, None])
    bpd = _bpd(exp, means[0])
    out["iw_samples"] = k
  else:
    bpd = loop.evaluate(exp, variables, progress="evaluating")
  out.update(test_bpd=bpd, test_nats=_nats(exp, bpd))
  print_json(out)
  return 0
