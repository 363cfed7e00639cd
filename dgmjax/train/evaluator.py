"""The one whole-split evaluator: a per-batch function over every example of a split.

The training loop (``loop.evaluate``), ``dgmjax eval`` (every figure it prints) and
``dgmjax compare`` all score a split through ``map_split``; nothing else batches a split.

A step is ``step(variables, batch, rng) -> array [B, ...]`` (one row per image of the
batch; ``batch`` is ``{"image": uint8 [B,H,W,C][, "label": int32 [B]]}``, ``rng`` the
key of batch i, ``fold_in(rng, i)``). The split is read by ``dgmjax.data.eval_batches``
in fixed-shape batches (one compilation; the last batch repeats valid rows, which are
cut here). With a mesh, each host feeds its rows of every global batch
(``state.shard_batches``) and the step must return the GLOBAL batch's rows replicated
on every host (``batch_step`` compiles it so): every host then sees each example
exactly once and computes the same figures.

    mean = split_mean(step, variables, exp.test_data, batch_size=256, mesh=exp.mesh,
                      rng=key)     # float64 [...] = (1/N) sum_n step(...)[n]
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import numpy as np

from dgmjax import data as data_lib
from dgmjax.train import state as state_lib

EVAL_SEED_OFFSET = 7919   # the evaluation key is key(train.seed + 7919)


def map_split(step: Callable, variables, data, *, batch_size: int, mesh=None, rng=None,
              labels: bool = False, progress: str | None = None) -> Iterator[np.ndarray]:
  """Yields ``step(variables, batch, fold_in(rng, i))`` of batch i, its valid rows only:
  numpy [n_valid, ...], the batches in order, every example of ``data`` (anything with
  ``len`` and ``get``: ``ImageData``, an array wrapper) once.

  mesh: None runs on one process (the whole batch, unsharded); a mesh shards each global
    batch over it (``batch_size`` must divide by its devices).
  rng: the evaluation key (default ``key(0)``; it is folded with the batch index).
  labels: the batches carry ``"label"`` (class-conditional models).
  progress: a description shows a progress bar (images, on stderr, process 0 only).
  """
  rng = jax.random.key(0) if rng is None else rng
  shards = {} if mesh is not None else {"shard_index": 0, "shard_count": 1}
  from tqdm import tqdm
  with tqdm(total=len(data), desc=progress, unit="img", leave=False,
            disable=progress is None or jax.process_index() != 0) as bar:
    for i, (batch, n_valid) in enumerate(data_lib.eval_batches(data, batch_size, labels=labels,
                                                               **shards)):
      if mesh is not None:
        batch = state_lib.shard_batches(batch, mesh)
      yield np.asarray(step(variables, batch, jax.random.fold_in(rng, i)))[:n_valid]
      bar.update(n_valid)


def split_mean(step: Callable, variables, data, **kwargs: Any) -> np.ndarray:
  """float64 [...]: the mean over the N examples of ``data`` of the rows of ``step``
  ([B, ...] per batch), each batch summed in float64. ``kwargs``: those of
  ``map_split``."""
  total, count = None, 0
  for out in map_split(step, variables, data, **kwargs):
    part = np.asarray(out, np.float64).sum(axis=0)
    total = part if total is None else total + part
    count += out.shape[0]
  if not count:
    raise ValueError(f"{data!r} holds no example to evaluate")
  return total / count


def eval_batch_size(config, mesh) -> int:
  """``train.eval_batch_size`` rounded down to a multiple of the devices (at least one
  image per device)."""
  n = mesh.devices.size
  bs = config.train.eval_batch_size
  return max(bs - bs % n, n)


def evaluate_split(exp, variables, step: Callable | None = None, *, rng=None,
                   split: str = "test", progress: str | None = None) -> np.ndarray:
  """``split_mean`` of ``step`` (default the experiment's eval step: log p(x) [B], nats)
  over a split of the experiment, as the training loop evaluates: batches of
  ``eval_batch_size``, sharded over ``exp.mesh``, labels for a class-conditional model,
  batch i scored with ``fold_in(rng, i)``, ``rng`` default ``key(train.seed + 7919)``."""
  from dgmjax.train.experiment import is_conditional
  cfg = exp.config
  rng = jax.random.key(cfg.train.seed + EVAL_SEED_OFFSET) if rng is None else rng
  data = exp.test_data if split == "test" else exp.train_data
  return split_mean(step or exp.eval_fn(), variables, data,
                    batch_size=eval_batch_size(cfg, exp.mesh), mesh=exp.mesh, rng=rng,
                    labels=is_conditional(exp.model), progress=progress)


def batch_step(fn: Callable, *, mesh, preprocess: Callable | None = None) -> Callable:
  """``step(variables, batch, rng)`` for ``map_split`` from ``fn(variables, x, rng, **labels)
  -> [B, ...]``: the batch split into images and labels (``y=``), the images preprocessed
  (``preprocess(fold_in(rng, 1), x)``, dynamic binarisation) as in training; jitted with
  the output replicated over ``mesh``."""
  return state_lib.make_batch_step(fn, mesh=mesh, preprocess=preprocess)
