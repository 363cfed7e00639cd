"""Batches (deterministic, resumable, sharded) and eval_batches (whole split once)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dgmjax import data

N = 50


@pytest.fixture(scope="module")
def ds():
  """Image i is the constant i, so a batch tells which examples it holds."""
  x = np.broadcast_to(np.arange(N, dtype=np.uint8)[:, None, None, None], (N, 2, 2, 1)).copy()
  return data.from_array(x, num_bins=256)


def ids(x):
  if isinstance(x, dict):
    assert set(x) == {"image"}
    x = x["image"]
  assert x.dtype == np.uint8 and x.shape[1:] == (2, 2, 1)
  return x[:, 0, 0, 0].astype(int)


def take(it, k):
  return [ids(next(it)) for _ in range(k)]


def test_epochs_cover_the_data_once_and_reshuffle(ds):
  it = data.Batches(ds, 8, seed=3)
  assert it.steps_per_epoch == N // 8 and it.local_batch_size == 8
  e0, e1 = np.concatenate(take(it, 6)), np.concatenate(take(it, 6))
  assert it.state() == {"epoch": 2, "index": 0}
  for e in (e0, e1):  # drop remainder: 48 distinct examples per epoch
    assert len(e) == 48 and len(set(e)) == 48
  assert not np.array_equal(e0, e1)
  np.testing.assert_array_equal(e0, np.random.default_rng([3, 0]).permutation(N)[:48])
  ordered = np.concatenate(take(data.Batches(ds, 8, seed=3, shuffle=False), 6))
  np.testing.assert_array_equal(ordered, np.arange(48))


def test_same_seed_same_batches_other_seed_other_batches(ds):
  a = take(data.Batches(ds, 8, seed=0), 14)
  b = take(data.Batches(ds, 8, seed=0, prefetch=0), 14)
  c = take(data.Batches(ds, 8, seed=1), 14)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


@pytest.mark.parametrize("prefetch", [0, 3])
@pytest.mark.parametrize("stop", [2, 6, 9])  # mid-epoch, at the boundary, next epoch
def test_restore_continues_exactly_like_the_uninterrupted_iterator(ds, prefetch, stop):
  full = take(data.Batches(ds, 8, seed=5, prefetch=prefetch), 16)
  first = data.Batches(ds, 8, seed=5, prefetch=prefetch)
  take(first, stop)
  saved = json.loads(json.dumps(first.state()))
  assert saved == {"epoch": stop // 6, "index": stop % 6}
  resumed = data.Batches(ds, 8, seed=5, prefetch=prefetch)
  take(resumed, 1)  # a restored iterator discards whatever it read ahead
  resumed.restore(saved)
  np.testing.assert_array_equal(take(resumed, 16 - stop), full[stop:])
  np.testing.assert_array_equal(take(first, 16 - stop), full[stop:])
  first.close()
  resumed.restore({"epoch": np.int64(0), "index": np.int32(1)})  # arrays from a checkpoint
  np.testing.assert_array_equal(ids(next(resumed)), full[1])


def test_shards_split_every_global_batch_exactly(ds):
  full = take(data.Batches(ds, 8, seed=2, shard_index=0, shard_count=1), 8)
  parts = [take(data.Batches(ds, 8, seed=2, shard_index=i, shard_count=2), 8) for i in (0, 1)]
  for k in range(8):
    assert len(parts[0][k]) == 4
    np.testing.assert_array_equal(np.concatenate([parts[0][k], parts[1][k]]), full[k])
  default = data.Batches(ds, 8, seed=2)  # one process: the whole batch
  assert (default.shard_index, default.shard_count) == (0, 1)
  np.testing.assert_array_equal(take(default, 1)[0], full[0])


def test_batches_reject_bad_arguments(ds):
  with pytest.raises(ValueError, match="exceeds"):
    data.Batches(ds, N + 1, seed=0)
  with pytest.raises(ValueError, match="divisible"):
    data.Batches(ds, 9, seed=0, shard_index=0, shard_count=2)
  with pytest.raises(ValueError, match="shard_index"):
    data.Batches(ds, 8, seed=0, shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match="seed"):
    data.Batches(ds, 8, seed=-1)
  it = data.Batches(ds, 8, seed=0)
  for bad in ({"epoch": 0}, {"epoch": 0, "index": 6}, {"epoch": -1, "index": 0}, [0, 0]):
    with pytest.raises(ValueError, match="state"):
      it.restore(bad)


@pytest.mark.parametrize("batch_size", [16, 25, 64])
def test_eval_batches_cover_every_example_once_with_fixed_shapes(ds, batch_size):
  seen = []
  for batch, n_valid in data.eval_batches(ds, batch_size):
    x = batch["image"]
    assert x.shape == (batch_size, 2, 2, 1)
    assert 0 < n_valid <= batch_size
    rows = ids(x)
    seen.extend(rows[:n_valid])
    assert set(rows[n_valid:]) <= set(rows[:n_valid])  # padding repeats valid rows
  np.testing.assert_array_equal(seen, np.arange(N))


def test_eval_batches_sharded(ds):
  whole = list(data.eval_batches(ds, 16, shard_index=0, shard_count=1))
  halves = [list(data.eval_batches(ds, 16, shard_index=i, shard_count=2)) for i in (0, 1)]
  assert len(whole) == len(halves[0]) == len(halves[1]) == 4
  for (x, n), (x0, n0), (x1, n1) in zip(whole, *halves):
    x, x0, x1 = x["image"], x0["image"], x1["image"]
    assert n == n0 == n1 and x0.shape == (8, 2, 2, 1)
    np.testing.assert_array_equal(np.concatenate([x0, x1]), x)
