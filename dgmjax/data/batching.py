"""Deterministic, resumable, host-sharded batching of an ``ImageData``.

Training (``Batches``): epoch ``e`` visits the examples in the order
``default_rng([seed, e]).permutation(N)`` (or ``0..N-1`` without shuffling), cut
into ``N // batch_size`` global batches (the remainder is dropped). Batch ``k`` of
epoch ``e`` is therefore a pure function of ``(seed, e, k)``; the iterator's
position ``{"epoch": e, "index": k}`` is all a checkpoint needs to resume exactly.
With ``shard_count`` hosts, host ``shard_index`` receives rows
``[shard_index * b, (shard_index + 1) * b)`` of every global batch, ``b =
batch_size // shard_count``: together the hosts cover each global batch exactly once.

Evaluation (``eval_batches``): the whole split in order, the last batch padded by
repeating its valid rows so that every batch has the same shape (one compilation).

A batch is a dict ``{"image": uint8 [b,H,W,C]}``, plus ``"label": int32 [b]`` when labels
are asked for; the same dict flows through the loop into the jitted steps.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from typing import Iterator

import numpy as np


def _check_int(value, name: str, minimum: int) -> int:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
  return int(value)


def _shards(batch_size: int, shard_index, shard_count) -> tuple[int, int]:
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=import-outside-toplevel

    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  shard_count = _check_int(shard_count, "shard_count", 1)
  shard_index = _check_int(shard_index, "shard_index", 0)
  if shard_index >= shard_count:
    raise ValueError(f"shard_index must lie in [0, {shard_count}); got {shard_index}")
  if batch_size % shard_count:
    raise ValueError(f"batch_size {batch_size} must be divisible by shard_count {shard_count}")
  return shard_index, shard_count


class Batches:
  """Infinite iterator of this host's uint8 [batch_size // shard_count, H, W, C] batches.

  Args:
    ds: an ``ImageData`` (anything with ``len`` and ``get(indices)``).
    batch_size: the GLOBAL batch size (all hosts together).
    seed: int >= 0; with the epoch it fixes every permutation.
    shuffle: reshuffle each epoch; False visits 0..N-1 in order every epoch.
    shard_index, shard_count: this host and the number of hosts; default
      ``jax.process_index()`` and ``jax.process_count()``.
    prefetch: batches read ahead in a background thread (0 = read synchronously).
      Reading ahead never changes which batches come out.
    labels: add ``"label"``: int32 [local_batch_size] class labels to each batch (for
      class-conditional models); ValueError if the dataset has none.

  Yields ``{"image": uint8 [local_batch_size,H,W,C]}`` (and ``"label"``).
  """

  def __init__(self, ds, batch_size: int, seed: int, shuffle: bool = True,
               shard_index: int | None = None, shard_count: int | None = None,
               prefetch: int = 2, labels: bool = False):
    self.ds = ds
    self.labels = bool(labels)
    if self.labels and not getattr(ds, "has_labels", False):
      raise ValueError(f"labels=True needs a dataset with labels; {ds!r} has none")
    self.batch_size = _check_int(batch_size, "batch_size", 1)
    self.seed = _check_int(seed, "seed", 0)
    self.shuffle = bool(shuffle)
    self.shard_index, self.shard_count = _shards(self.batch_size, shard_index, shard_count)
    self.local_batch_size = self.batch_size // self.shard_count
    self.steps_per_epoch = len(ds) // self.batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f"batch_size {batch_size} exceeds the {len(ds)} examples of the split")
    self._prefetch = _check_int(prefetch, "prefetch", 0)
    self._epoch, self._index = 0, 0
    self._orders: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()
    self._pool = None
    self._pending: collections.deque = collections.deque()

  def order(self, epoch: int) -> np.ndarray:
    """int64 [N]: the order in which epoch ``epoch`` visits the examples."""
    with self._lock:
      if epoch not in self._orders:
        n = len(self.ds)
        if self.shuffle:
          perm = np.random.default_rng([self.seed, epoch]).permutation(n)
        else:
          perm = np.arange(n)
        if len(self._orders) >= 2:
          self._orders.pop(min(self._orders))
        self._orders[epoch] = perm.astype(np.int64)
      return self._orders[epoch]

  def indices(self, epoch: int, index: int) -> np.ndarray:
    """int64 [local_batch_size]: this host's example indices of batch ``index`` of ``epoch``."""
    start = index * self.batch_size + self.shard_index * self.local_batch_size
    return self.order(epoch)[start:start + self.local_batch_size]

  def batch(self, epoch: int, index: int) -> dict[str, np.ndarray]:
    """Batch ``index`` of ``epoch`` (a pure function of them): ``{"image", ["label"]}``."""
    return _read(self.ds, self.indices(epoch, index), self.labels)

  def _advance(self, epoch: int, index: int) -> tuple[int, int]:
    index += 1
    return (epoch + 1, 0) if index == self.steps_per_epoch else (epoch, index)

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    position = (self._epoch, self._index)
    if self._prefetch == 0:
      x = self.batch(*position)
    else:
      if self._pending and self._pending[0][0] != position:
        self._clear()
      if not self._pending:
        self._submit(position)
      x = self._pending.popleft()[1].result()
    self._epoch, self._index = self._advance(*position)
    if self._prefetch:
      nxt = self._pending[-1][0] if self._pending else position
      while len(self._pending) < self._prefetch:
        nxt = self._advance(*nxt)
        self._submit(nxt)
    return x

  def _submit(self, position: tuple[int, int]) -> None:
    if self._pool is None:
      self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dgmjax-data")
    self._pending.append((position, self._pool.submit(self.batch, *position)))

  def _clear(self) -> None:
    for _, future in self._pending:
      future.cancel()
    self._pending.clear()

  def state(self) -> dict[str, int]:
    """The position of the next batch: ``{"epoch": e, "index": k}`` (JSON-able)."""
    return {"epoch": int(self._epoch), "index": int(self._index)}

  def restore(self, state) -> None:
    """Moves to a position saved by ``state()``; the next batch is the one it names."""
    if not hasattr(state, "keys") or set(state.keys()) != {"epoch", "index"}:
      raise ValueError(f"state must be {{'epoch': int, 'index': int}}; got {state!r}")
    epoch = _check_int(_as_int(state["epoch"]), "state['epoch']", 0)
    index = _check_int(_as_int(state["index"]), "state['index']", 0)
    if index >= self.steps_per_epoch:
      raise ValueError(f"state['index'] must be < steps_per_epoch={self.steps_per_epoch} "
                       f"(batch_size {self.batch_size}, {len(self.ds)} examples); got {index}")
    self._clear()
    self._epoch, self._index = epoch, index

  def close(self) -> None:
    """Stops the read-ahead thread (the iterator stays usable, synchronously)."""
    self._clear()
    if self._pool is not None:
      self._pool.shutdown(wait=False, cancel_futures=True)
      self._pool = None
    self._prefetch = 0


def _read(ds, idx: np.ndarray, labels: bool) -> dict[str, np.ndarray]:
  batch = {"image": ds.get(idx)}
  if labels:
    batch["label"] = np.asarray(ds.labels(idx), np.int32)
  return batch


def _as_int(value):
  """Accepts ints and integer-valued 0-d arrays (a restored checkpoint may hold either)."""
  arr = np.asarray(value)
  if arr.ndim == 0 and np.issubdtype(arr.dtype, np.integer):
    return int(arr)
  return value


def eval_batches(ds, batch_size: int, shard_index: int | None = None,
                 shard_count: int | None = None, labels: bool = False) -> Iterator[tuple]:
  """The whole split, in order: yields ``(batch, n_valid)``.

  batch: ``{"image": uint8 [batch_size // shard_count, H, W, C]}`` (with ``labels=True``
  also ``"label"``: int32 of the same rows), this host's rows of a global batch of
  ``batch_size`` consecutive examples. ``n_valid`` (int) counts the valid rows of the
  GLOBAL batch: global rows ``>= n_valid`` (only in the last batch) repeat valid rows
  to keep shapes fixed for ``jit`` and must be masked out, e.g. with
  ``global_row < n_valid``. With one host (the default) the image is [batch_size, H, W, C];
  its first n_valid rows count. Every example appears exactly once among valid rows.
  """
  batch_size = _check_int(batch_size, "batch_size", 1)
  if labels and not getattr(ds, "has_labels", False):
    raise ValueError(f"labels=True needs a dataset with labels; {ds!r} has none")
  shard_index, shard_count = _shards(batch_size, shard_index, shard_count)
  local = batch_size // shard_count
  n = len(ds)
  lo = shard_index * local

  def read(start: int) -> tuple[dict[str, np.ndarray], int]:
    n_valid = min(batch_size, n - start)
    idx = (start + np.arange(batch_size) % n_valid)[lo:lo + local]
    return _read(ds, idx, labels), n_valid

  with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dgmjax-eval") as pool:
    pending: collections.deque = collections.deque()
    starts = iter(range(0, n, batch_size))
    for start in starts:
      pending.append(pool.submit(read, start))
      if len(pending) >= 2:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()
