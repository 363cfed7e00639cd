"""The training loop: data -> jitted step -> metrics, evaluation, samples, checkpoints.

It uses only the model protocol (``init``, ``loss``, ``log_prob``, ``sample``) and
knows nothing of any particular model. Running ``train`` on a workdir that already
holds a checkpoint resumes from the newest one that restores cleanly: parameters,
optimiser and EMA state, batch statistics, the step counter and the data position, so
the resumed run sees the same batches and the same noise (``fold_in(seed, step)``) as
an uninterrupted one, and ``metrics.jsonl`` holds each step once.

Multi-host: every process runs this same loop on its rows of each global batch
(``data.Batches`` and ``data.eval_batches`` shard by ``jax.process_index()``); the
jitted steps see global arrays, only process 0 writes metrics, samples and the lock.
A workdir holds one trainer at a time (``dgmjax.train.lock``).

Stopping: SIGTERM (a cluster or TPU VM about to reclaim the machine) or SIGINT (Ctrl-C)
only sets a flag. Before each step the processes agree (one small all-gather per step
on multi-host runs) whether any of them was signalled or saw a save fail; if so all stop
at that same step, save it unless it is saved already, wait for the write, release the
lock and raise ``TrainingInterrupted`` (the CLI prints its one line and exits with 128 +
the signal's number). No step is lost and no metric row is written twice.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import data as data_lib
from dgmjax import imageio, images
from dgmjax.train import checkpoint as ckpt_lib
from dgmjax.train import config as config_lib
from dgmjax.train import lock as lock_lib
from dgmjax.train import metrics as metrics_lib
from dgmjax.train import optim as optim_lib
from dgmjax.train.write_errors import disk_full_error
from dgmjax.train.preemption import (SAVE_FAILED, StopSignals, TrainingInterrupted, any_process,
                                     poll)
from dgmjax.train import state as state_lib
from dgmjax.train.evaluator import evaluate_split
# what a config builds (re-exported: loop.build, loop.Experiment, ... are the public names)
from dgmjax.train.experiment import (DataUnavailable, Experiment, abstract_state,  # noqa: F401
                                     build, image_meta, init_state, is_conditional,
                                     model_hparams, stored_image)

log = logging.getLogger("dgmjax")


class TrainingDiverged(RuntimeError):
  """Raised after ``train.max_nonfinite`` consecutive non-finite updates."""


def _check_batch_size(global_batch: int, mesh) -> None:
  if global_batch % mesh.devices.size:
    raise ValueError(f"train.batch_size {global_batch} must be divisible by the number of "
                     f"devices ({mesh.devices.size})")


def evaluate(exp: Experiment, variables, eval_fn=None, rng=None, progress=None) -> float:
  """Bits/dim over the WHOLE test split, -mean log p(x) / (H W C ln 2), by the one
  whole-split evaluator (``evaluator.evaluate_split``: padded last batch cut; every host
  feeds its rows of each global batch and computes the same figure). ``eval_fn``: a step
  ``(variables, batch, rng) -> [B]`` log-likelihoods in nats (default the model's);
  ``progress``: a description shows a progress bar on stderr."""
  mean = evaluate_split(exp, variables, eval_fn, rng=rng, progress=progress)
  return float(images.bits_per_dim(float(mean), exp.model.num_dims))


def draw_samples(exp: Experiment, variables, num: int, rng, **kwargs) -> np.ndarray:
  """uint8 [num,H,W,C]; a class-conditional model cycles through its classes.

  Every process must call it on a multi-host run (the sampler is one global program);
  each gets the same images. Compiled once per ``(num, kwargs)`` for the experiment.
  """
  if not isinstance(num, (int, np.integer)) or isinstance(num, bool) or num < 1:
    raise ValueError(f"number of samples must be an int >= 1; got {num!r}")
  if is_conditional(exp.model) and "y" not in kwargs:
    kwargs["y"] = jnp.arange(num) % exp.model.num_classes
  arrays = {k: v for k, v in kwargs.items() if isinstance(v, (jax.Array, np.ndarray))}
  static = {k: v for k, v in kwargs.items() if k not in arrays}
  return np.asarray(exp.sampler(int(num), **static)(variables, rng, arrays))


def train(config, workdir: str, *, progress: bool = True) -> dict:
  """Trains (or resumes) the experiment ``config`` in ``workdir``; returns final metrics.

  Raises ValueError for an invalid config or a ``train.num_steps`` below the workdir's
  checkpoint, ``WorkdirLocked`` when another trainer holds ``workdir``,
  ``TrainingDiverged`` after ``train.max_nonfinite`` skipped steps in a row,
  ``TrainingInterrupted`` after SIGTERM/SIGINT (the step in progress is finished and
  saved first) and ``checkpoint.DiskFull`` when the disk fills up (the earlier
  checkpoints stay intact). The lock is released in every case; a start that fails in a
  workdir it created leaves nothing behind.
  """
  config_lib.validate(config)
  fresh = not os.path.isdir(workdir)
  with StopSignals() as signals:
    os.makedirs(workdir, exist_ok=True)
    lock = lock_lib.WorkdirLock(workdir, enabled=jax.process_index() == 0)
    error = None
    try:
      lock.acquire()
    except lock_lib.WorkdirLocked as e:
      error = e
    if any_process(error is not None):
      raise error or lock_lib.WorkdirLocked(f"workdir {workdir} is in use by another trainer "
                                            "(refused on process 0)")
    try:
      return _train_locked(config, workdir, progress, signals)
    except BaseException:
      lock.release()
      if fresh and jax.process_index() == 0:
        lock.remove_if_alone()   # a failed start in a new workdir leaves nothing behind
      raise
    finally:
      lock.release()


def _train_locked(cfg, workdir: str, progress: bool, signals: StopSignals) -> dict:
  exp = build(cfg)
  tcfg = cfg.train
  _check_batch_size(tcfg.batch_size, exp.mesh)
  tx = optim_lib.make_optimizer(cfg.optim, tcfg.num_steps, tcfg.grad_accum)
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=tcfg.keep_checkpoints)
  batches = None
  writer = None
  bar: list = []
  ok = False
  try:
    checkpointer.migrate_legacy()
    batches = data_lib.Batches(exp.train_data, tcfg.batch_size, seed=tcfg.seed,
                               labels=is_conditional(exp.model))
    best = math.inf
    restored = checkpointer.restore_newest(abstract_state(exp, tx), quarantine=True)
    if restored is not None:
      state = restored.state
      batches.restore(restored.meta["data"])
      best = restored.meta.get("best_test_bpd") or math.inf
      log.info("resumed from step %d (%s checkpoint) in %s", restored.step, restored.kind,
               workdir)
    else:
      state = init_state(exp, tx)
    start = int(state.step)
    saved = start if restored is not None else None
    if start > tcfg.num_steps:
      raise ValueError(f"{workdir} holds a checkpoint of step {start}, past train.num_steps="
                       f"{tcfg.num_steps}: nothing to train; raise train.num_steps above "
                       f"{start} to train on (dgmjax eval evaluates it as it is)")
    if start == tcfg.num_steps and restored is not None:
      log.info("%s is already trained to train.num_steps=%d", workdir, start)
    # Rows after the restored step (0 for a fresh run) were written by a run killed
    # before it checkpointed them; this run writes those steps again.
    writer = metrics_lib.MetricWriter(workdir, resume_step=start)
    summary = _loop(exp, cfg, workdir, tx, state, batches, checkpointer, writer, best,
                    saved, progress, signals, bar)
    ok = True
    return summary
  except OSError as e:
    if ckpt_lib.is_disk_full(e) and not isinstance(e, ckpt_lib.DiskFull):
      raise disk_full_error(e, workdir, checkpointer) from None
    raise
  finally:
    _cleanup(ok, bar[0] if bar else None, batches, checkpointer, writer)


def _cleanup(ok: bool, bar, batches, checkpointer, writer) -> None:
  """Closes everything; after a failure, later errors are logged, not raised (the first
  one is the one to report), and nothing waits on a writer that died."""
  for close in (bar and bar.close, batches and batches.close, checkpointer.close,
                writer and writer.close):
    if not close:
      continue
    try:
      close()
    except Exception as e:  # pylint: disable=broad-except
      if ok:
        raise
      log.debug("while stopping: %s", ckpt_lib.one_line(e))


def _loop(exp, cfg, workdir, tx, state, batches, checkpointer, writer, best, saved,
          progress, signals, bar_holder) -> dict:
  tcfg = cfg.train
  start = int(state.step)
  train_step = state_lib.make_train_step(exp.model, tx, ema_decay=cfg.optim.ema_decay,
                                         mesh=exp.mesh, preprocess=exp.preprocess)
  rng = jax.random.key(tcfg.seed)
  sample_rng = jax.random.fold_in(rng, 3)

  def meta():
    return {"data": batches.state(), "best_test_bpd": best if math.isfinite(best) else None,
            "config": cfg.to_json(), "image": image_meta(exp.model)}

  summary: dict[str, Any] = {}
  if progress and jax.process_index() == 0:
    from tqdm import tqdm
    bar_holder.append(tqdm(total=tcfg.num_steps, initial=start, dynamic_ncols=True,
                           mininterval=1.0))
  bar = bar_holder[0] if bar_holder else None
  t0, last_loss = time.time(), float("nan")
  stop = 0
  for step in range(start + 1, tcfg.num_steps + 1):
    stop, error = poll(signals, checkpointer)
    if stop:
      break
    batch = state_lib.shard_batches(next(batches), exp.mesh)
    state, m = train_step(state, batch, rng)
    # Reading the loss every step syncs the host: it bounds the queue of launched
    # collectives (XLA's CPU runtime can deadlock otherwise) and costs little.
    last_loss = float(m["loss"])
    if int(state.nonfinite) >= tcfg.max_nonfinite:
      checkpointer.wait()
      raise TrainingDiverged(
          f"{int(state.nonfinite)} consecutive non-finite steps (loss, gradients or "
          f"updated parameters) ending at step {step} (train.max_nonfinite="
          f"{tcfg.max_nonfinite}); stopping. The newest checkpoint in {workdir} holds the "
          f"finite state of step {checkpointer.latest_step()}.")
    if bar is not None:
      bar.update(1)
      bar.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
    if step % tcfg.log_every == 0 or step == tcfg.num_steps:
      row = writer.write(step, **{k: v for k, v in m.items()},
                         skipped_total=state.skipped,
                         steps_per_s=(step - start) / max(time.time() - t0, 1e-9))
      summary.update(row)
    test_bpd = None
    if step % tcfg.eval_every == 0 or step == tcfg.num_steps:
      test_bpd = evaluate(exp, state.variables(ema=True))
      writer.write(step, test_bpd=test_bpd)
      summary["test_bpd"] = test_bpd
      if tcfg.num_samples > 0:
        s = draw_samples(exp, state.variables(ema=True), tcfg.num_samples,
                         jax.random.fold_in(sample_rng, step))
        if jax.process_index() == 0:
          imageio.save_grid(os.path.join(workdir, "samples", f"step_{step:07d}.png"), s,
                            exp.num_bins)
    improved = test_bpd is not None and test_bpd < best
    if improved:
      best = test_bpd
    if improved or step % tcfg.checkpoint_every == 0 or step == tcfg.num_steps:
      checkpointer.save(step, state, meta(), test_bpd)
      saved = step
  else:
    stop, error = 0, None
  if stop == SAVE_FAILED:
    raise error or ckpt_lib.SaveFailed(f"another process failed to save a checkpoint in "
                                       f"{workdir} (see its message)")
  step = int(state.step)
  if stop and saved != step and step > 0:
    checkpointer.save(step, state, meta())
    saved = step
  checkpointer.wait()
  if stop:
    name = signal.Signals(stop).name
    if saved is None:
      msg = f"stopped by {name} before the first step: nothing to save in {workdir}"
    else:
      msg = (f"stopped by {name} after step {step}: saved checkpoint {saved} in "
             f"{os.path.join(workdir, ckpt_lib.DIRNAME)}; rerun the same command to resume")
    raise TrainingInterrupted(msg, stop, saved)
  summary.update(step=step, loss=last_loss, best_test_bpd=best)
  return metrics_lib.finite_or_none(summary)


def restore_for_eval(config, workdir: str, which: str = "best", *, need=()):
  """Builds the experiment and restores the ``best`` (or ``last``) checkpoint state.

  No data are read (``build(data=False)``: the image shape and levels come from the
  dataset's description or the checkpoint's meta), except the splits named in ``need``
  (e.g. ``("test",)``), read before the checkpoint so that a missing dataset is the first
  error (``DataUnavailable``, one line naming it and how to prepare it). The others are
  read on first use (``exp.test_data``).

  ``which="best"`` tries the evaluated checkpoints by test bits/dim, then the others
  newest first; a checkpoint that fails to restore is skipped with a warning, never
  modified (evaluation does not hold the workdir lock). ValueError when none restores.
  """
  if which not in ckpt_lib.KINDS:
    raise ValueError(f"which must be one of {ckpt_lib.KINDS}; got {which!r}")
  if not ckpt_lib.has_checkpoint(workdir):
    raise ValueError(f"no checkpoint in {workdir} (expected {workdir}/checkpoints/<step>; "
                     f"train first, or import one)")
  tx = optim_lib.make_optimizer(config.optim, config.train.num_steps, config.train.grad_accum)
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                       create=False)
  try:
    exp = build(config, data=False, image=stored_image(checkpointer.read_meta(which)))
    exp.read(*need)
    restored = checkpointer.restore_newest(abstract_state(exp, tx), which=which)
  finally:
    checkpointer.close()
  if restored is None:
    raise ValueError(f"no checkpoint in {workdir} restores cleanly (see the warnings above)")
  return exp, restored.state
