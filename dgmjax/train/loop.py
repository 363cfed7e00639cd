"""The training loop: data -> jitted step -> metrics, evaluation, samples, checkpoints.

It uses only the model protocol (``init``, ``loss``, ``log_prob``, ``sample``) and
knows nothing of any particular model. Running ``train`` on a workdir that already
holds a checkpoint resumes from it: parameters, optimiser and EMA state, batch
statistics, the step counter and the data position, so the resumed run sees the
same batches and the same noise (``fold_in(seed, step)``) as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import data as data_lib
from dgmjax import imageio, images, models
from dgmjax.train import checkpoint as ckpt_lib
from dgmjax.train import metrics as metrics_lib
from dgmjax.train import optim as optim_lib
from dgmjax.train import state as state_lib

log = logging.getLogger("dgmjax")


class TrainingDiverged(RuntimeError):
  """Raised after ``train.max_nonfinite`` consecutive non-finite updates."""


@dataclasses.dataclass
class Experiment:
  """What ``train``/``evaluate``/``sample`` build from a config."""
  config: Any
  model: Any
  train_data: Any
  test_data: Any
  num_bins: int
  mesh: Any
  preprocess: Any


def model_hparams(config) -> dict:
  hp = config.model.to_dict()
  hp.pop("name")
  return hp


def _load_data(config, split):
  d = config.data
  return data_lib.load(d.name, split, data_dir=d.data_dir or None, n_bits=d.n_bits,
                       pad_to=d.pad_to)


def build(config) -> Experiment:
  """Loads the data and creates the model a config describes."""
  train_data = _load_data(config, "train")
  test_data = _load_data(config, "test")
  preprocess = None
  num_bins = train_data.num_bins
  if config.data.binarize:
    source_bins = num_bins
    preprocess = lambda rng, x: data_lib.binarize(rng, x, source_bins)
    num_bins = 2
  model = models.create(config.model.name, image_shape=train_data.image_shape,
                        num_bins=num_bins, **model_hparams(config))
  return Experiment(config, model, train_data, test_data, num_bins, state_lib.data_mesh(),
                    preprocess)


def _check_batch_size(global_batch: int, mesh) -> None:
  if global_batch % mesh.devices.size:
    raise ValueError(f"train.batch_size {global_batch} must be divisible by the number of "
                     f"devices ({mesh.devices.size})")


def _local_slice(batch):
  """This host's rows of a global batch (``x`` or ``(x, y)``) every host holds in full."""
  def rows(x):
    n = x.shape[0] // jax.process_count()
    i = jax.process_index()
    return x[i * n:(i + 1) * n]
  return jax.tree.map(rows, batch)


def is_conditional(model) -> bool:
  """Class-conditional models declare ``num_classes`` and take labels as ``y=``."""
  return getattr(model, "num_classes", None) is not None


def init_state(exp: Experiment, tx):
  cfg = exp.config
  rng = jax.random.key(cfg.train.seed)
  n = min(cfg.train.init_batch_size, len(exp.train_data))
  x = exp.train_data.get(np.arange(n))
  if exp.preprocess is not None:
    x = exp.preprocess(jax.random.fold_in(rng, 2), jnp.asarray(x))
  labels = {}
  if is_conditional(exp.model):
    labels = {"y": jnp.asarray(exp.train_data.labels(np.arange(n)), jnp.int32)}
  variables = exp.model.init(jax.random.fold_in(rng, 1), x, **labels)
  return state_lib.replicate(state_lib.create_state(variables, tx), exp.mesh)


def evaluate(exp: Experiment, variables, eval_fn=None, rng=None) -> float:
  """Bits/dim over the WHOLE test split (padded last batch masked out)."""
  cfg = exp.config
  eval_fn = eval_fn or state_lib.make_eval_step(exp.model, mesh=exp.mesh,
                                                preprocess=exp.preprocess)
  rng = jax.random.key(cfg.train.seed + 7919) if rng is None else rng
  bs = cfg.train.eval_batch_size
  bs -= bs % exp.mesh.devices.size
  total, count = 0.0, 0
  batches = data_lib.eval_batches(exp.test_data, bs, labels=is_conditional(exp.model))
  for i, (batch, n_valid) in enumerate(batches):
    logp = eval_fn(variables, state_lib.shard_batches(_local_slice(batch), exp.mesh),
                   jax.random.fold_in(rng, i))
    total += float(np.sum(np.asarray(logp, np.float64)[:n_valid]))
    count += n_valid
  dims = getattr(exp.model, "num_dims", None) or exp.model.image_shape
  return float(images.bits_per_dim(total / count, dims))


def draw_samples(exp: Experiment, variables, num: int, rng, **kwargs) -> np.ndarray:
  """uint8 [num,H,W,C]; a class-conditional model cycles through its classes."""
  if is_conditional(exp.model) and "y" not in kwargs:
    kwargs["y"] = jnp.arange(num) % exp.model.num_classes
  fn = jax.jit(lambda v, r: exp.model.sample(v, r, num, **kwargs))
  return np.asarray(fn(variables, rng))


def train(config, workdir: str, *, progress: bool = True) -> dict:
  """Trains (or resumes) the experiment ``config`` in ``workdir``; returns final metrics."""
  cfg = config
  os.makedirs(workdir, exist_ok=True)
  exp = build(cfg)
  tcfg = cfg.train
  tx = optim_lib.make_optimizer(cfg.optim, tcfg.num_steps, tcfg.grad_accum)
  state = init_state(exp, tx)
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=tcfg.keep_checkpoints)
  _check_batch_size(tcfg.batch_size, exp.mesh)
  batches = data_lib.Batches(exp.train_data, tcfg.batch_size, seed=tcfg.seed,
                             labels=is_conditional(exp.model))
  best = math.inf
  if checkpointer.latest_step() is not None:
    state, meta = checkpointer.restore(state)
    state = state_lib.replicate(state, exp.mesh)
    batches.restore(meta["data"])
    best = meta.get("best_test_bpd") or math.inf
    log.info("resumed from step %d in %s", int(state.step), workdir)

  writer = metrics_lib.MetricWriter(workdir)
  train_step = state_lib.make_train_step(exp.model, tx, ema_decay=cfg.optim.ema_decay,
                                         mesh=exp.mesh, preprocess=exp.preprocess)
  eval_fn = state_lib.make_eval_step(exp.model, mesh=exp.mesh, preprocess=exp.preprocess)
  rng = jax.random.key(tcfg.seed)
  sample_rng = jax.random.fold_in(rng, 3)

  def meta():
    return {"data": batches.state(), "best_test_bpd": best if math.isfinite(best) else None,
            "config": cfg.to_json()}

  start = int(state.step)
  summary: dict[str, Any] = {}
  bar = None
  if progress and jax.process_index() == 0:
    from tqdm import tqdm
    bar = tqdm(total=tcfg.num_steps, initial=start, dynamic_ncols=True, mininterval=1.0)
  t0, last_loss = time.time(), float("nan")
  try:
    for step in range(start + 1, tcfg.num_steps + 1):
      batch = state_lib.shard_batches(next(batches), exp.mesh)
      state, m = train_step(state, batch, rng)
      # Reading the loss every step syncs the host: it bounds the queue of launched
      # collectives (XLA's CPU runtime can deadlock otherwise) and costs little.
      last_loss = float(m["loss"])
      if int(state.nonfinite) >= tcfg.max_nonfinite:
        raise TrainingDiverged(
            f"{int(state.nonfinite)} consecutive non-finite losses/gradients at step {step} "
            f"(train.max_nonfinite={tcfg.max_nonfinite}); stopping. The last good checkpoint "
            f"in {workdir} is intact (step {checkpointer.latest_step()}).")
      if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
      if step % tcfg.log_every == 0 or step == tcfg.num_steps:
        row = writer.write(step, **{k: v for k, v in m.items()},
                           skipped_total=state.skipped,
                           steps_per_s=(step - start) / max(time.time() - t0, 1e-9))
        summary.update(row)
      if step % tcfg.eval_every == 0 or step == tcfg.num_steps:
        test_bpd = evaluate(exp, state.variables(ema=True), eval_fn)
        writer.write(step, test_bpd=test_bpd)
        summary["test_bpd"] = test_bpd
        if test_bpd < best:
          best = test_bpd
          checkpointer.save_best(step, state, meta(), test_bpd)
        if tcfg.num_samples > 0 and jax.process_index() == 0:
          s = draw_samples(exp, state.variables(ema=True), tcfg.num_samples,
                           jax.random.fold_in(sample_rng, step))
          imageio.save_grid(os.path.join(workdir, "samples", f"step_{step:07d}.png"), s,
                            exp.num_bins)
      if step % tcfg.checkpoint_every == 0 or step == tcfg.num_steps:
        checkpointer.save(step, state, meta())
  finally:
    if bar is not None:
      bar.close()
    batches.close()
    checkpointer.wait()
    checkpointer.close()
    writer.close()
  summary.update(step=int(state.step), loss=last_loss, best_test_bpd=best)
  return summary


def restore_for_eval(config, workdir: str, which: str = "best"):
  """Builds the experiment and restores the ``best`` (or ``last``) checkpoint state."""
  exp = build(config)
  tx = optim_lib.make_optimizer(config.optim, config.train.num_steps, config.train.grad_accum)
  state = init_state(exp, tx)
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  try:
    if which == "best" and checkpointer.best.latest_step() is None:
      which = "last"
    state, _ = checkpointer.restore(state, which=which)
  finally:
    checkpointer.close()
  return exp, state_lib.replicate(state, exp.mesh)
